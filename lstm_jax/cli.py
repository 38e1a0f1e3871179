"""Glue for the ``experiments/`` mains: config fields as absl flags, and user errors as one line."""
from __future__ import annotations

import dataclasses
import sys
import typing
from typing import Callable

from absl import flags
from absl import logging

from lstm_jax import data as data_lib
from lstm_jax import parallel
from lstm_jax import recurrent
from lstm_jax.config import Config, get_config


def _parse_tuple(text: str) -> tuple:
  text = text.strip().strip('()[]')
  return tuple(int(v) for v in text.replace(' ', '').split(',') if v)


def define_config_flags(flag_values=flags.FLAGS, skip: tuple = ()) -> None:
  """Defines one flag per ``Config`` field (same name, same default, same type)."""
  hints = typing.get_type_hints(Config)
  defaults = Config()
  for field in dataclasses.fields(Config):
    if field.name in skip:
      continue
    name, default, hint = field.name, getattr(defaults, field.name), hints[field.name]
    help_ = f'Config.{name} (default {default!r}; a --preset may change it).'
    if hint is bool:
      flags.DEFINE_boolean(name, None, help_, flag_values=flag_values)
    elif hint is int:
      flags.DEFINE_integer(name, None, help_, flag_values=flag_values)
    elif hint is float:
      flags.DEFINE_float(name, None, help_, flag_values=flag_values)
    elif hint is tuple:
      flags.DEFINE_list(name, None, help_ + ' Comma-separated integers.', flag_values=flag_values)
    else:  # str and Optional[bool] (hoist_input: true | false | auto)
      flags.DEFINE_string(name, None, help_, flag_values=flag_values)


def config_from_flags(preset: str, flag_values=flags.FLAGS) -> Config:
  """The preset, with every flag the user gave on the command line applied on top."""
  config = get_config(preset)
  hints = typing.get_type_hints(Config)
  changes = {}
  for field in dataclasses.fields(Config):
    if field.name not in flag_values or flag_values[field.name].value is None:
      continue
    value, hint = flag_values[field.name].value, hints[field.name]
    if hint is tuple:
      try:
        value = tuple(int(v) for v in value)
      except ValueError:
        raise data_lib.DataError(f'--{field.name}: expected comma-separated integers, '
                                 f'got {",".join(value)!r}') from None
    elif hint == typing.Optional[bool]:
      value = parse_auto_bool(flag_values[field.name])
    changes[field.name] = value
  return config.replace(**changes)


def parse_auto_bool(flag) -> typing.Optional[bool]:
  """A string flag's ``true | false | auto`` (``none``: auto) as True, False or None."""
  choices = {'true': True, 'false': False, 'auto': None, 'none': None}
  if flag.value.lower() not in choices:
    raise data_lib.DataError(f'--{flag.name}: expected true, false or auto, got {flag.value!r}')
  return choices[flag.value.lower()]


def parse_overrides(items) -> dict:
  """``['name=value', ...]`` -> ``Config`` fields, each value converted to the field's type."""
  hints = typing.get_type_hints(Config)
  out = {}
  for item in items:
    if '=' not in item:
      raise data_lib.DataError(f'--set {item!r}: expected NAME=VALUE')
    name, value = (v.strip() for v in item.split('=', 1))
    if name not in hints:
      raise data_lib.DataError(f'--set {name}: no such Config field')
    hint = hints[name]
    try:
      if hint is bool or hint == typing.Optional[bool]:
        value = {'true': True, 'false': False, 'auto': None, 'none': None}[value.lower()]
      elif hint is tuple:
        value = _parse_tuple(value)
      elif hint in (int, float):
        value = hint(value)
    except (KeyError, ValueError):
      raise data_lib.DataError(f'--set {name}={value!r}: not a valid {hint}') from None
    out[name] = value
  return out


USER_ERRORS = (data_lib.DataError, FileNotFoundError, ValueError)


def show_cpu_devices_for(config: Config) -> None:
  """``--num_devices=N`` (N > 1, one process): JAX shows one CPU device unless told before it
  starts, so it is shown N (one time loop per core; harmless where the streams go to GPUs).
  On the 2-core CPU, the default training job split over 2 ran 1.26x the updates per second
  of one device (docs/performance.md, "The default training job")."""
  if config.num_devices > 1 and config.num_processes <= 1:
    try:
      parallel.set_cpu_devices(config.num_devices)
    except RuntimeError as e:  # JAX already running: the devices it has
      logging.warning('%s', e)


def run_user_main(fn: Callable[[], object], small_loops: bool = True) -> int:
  """Runs ``fn`` (its result is ignored); returns the exit code.

  First, before any JAX computation, XLA CPU is told to compile small time loops as one function
  (``recurrent.use_small_loop_kernels``; ``small_loops=False`` leaves XLA's default). A user's
  mistake ends in one line on stderr and exit code 2, a diverged training in exit 3.
  """
  if small_loops:
    try:
      recurrent.use_small_loop_kernels()
    except RuntimeError as e:  # JAX already running: XLA's default loops, still correct
      logging.warning('%s', e)
  try:
    fn()
    return 0
  except USER_ERRORS as e:
    logging.debug('user error', exc_info=True)
    print(f'error: {e}', file=sys.stderr)
    return 2
  except FloatingPointError as e:
    print(f'error: training diverged: {e}', file=sys.stderr)
    return 3
