"""Checkpoints of a training run: everything needed to continue it exactly, written atomically.

A checkpoint is one msgpack file ``workdir/checkpoints/ckpt_<step>.msgpack`` holding

* the whole ``TrainState`` (params, optimizer state, the stateful carries, the step) and the
  parameters that validation keeps so far (``lstm_jax.train`` saves the pair), and
* metadata: the config, the normalizers fitted on the training data, the number of chunks per
  pass (the data position is ``step % n_chunks``: the stream layout is a pure function of the
  config), the PRNG key data, the per-step loss history and the validation history.

Writes go to a temporary file in the same directory, are flushed and fsync'ed, then
``os.replace``-d onto the final name: a reader (or a resumed run) sees the old checkpoint or
the new one, never half of one, whatever moment the writer is killed at. The newest ``keep``
checkpoints are kept. This needs nothing beyond flax's msgpack serializer (orbax would add a
heavy dependency and asynchronous writers that a 2-core CPU run does not need).
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, NamedTuple, Optional

from absl import logging
import flax.serialization
import jax
import numpy as np

from lstm_jax import data as data_lib

FORMAT_VERSION = 2  # 2: the state saved with the kept parameters
_NAME = re.compile(r'^ckpt_(\d{8,})\.msgpack$')
# Fields that change neither the data nor the arithmetic of a run: a resumed run may differ here.
RESUME_MAY_CHANGE = frozenset({'log_every_seconds', 'checkpoint_every', 'resume'})


class Checkpoint(NamedTuple):
  """A restored checkpoint: the state (shaped like the template) and its metadata."""
  state: Any
  step: int
  meta: dict
  path: str


def checkpoint_path(ckpt_dir: str, step: int) -> str:
  return os.path.join(ckpt_dir, f'ckpt_{step:08d}.msgpack')


def list_checkpoints(ckpt_dir: str) -> list[tuple[int, str]]:
  """``(step, path)`` of every complete checkpoint in ``ckpt_dir``, oldest first."""
  if not os.path.isdir(ckpt_dir):
    return []
  found = []
  for name in os.listdir(ckpt_dir):
    m = _NAME.match(name)
    if m:
      found.append((int(m.group(1)), os.path.join(ckpt_dir, name)))
  return sorted(found)


def _atomic_write(path: str, payload: bytes) -> None:
  tmp = f'{path}.tmp{os.getpid()}'
  with open(tmp, 'wb') as f:
    f.write(payload)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)
  # Make the rename itself durable (a power cut after it must not bring the old name back).
  dir_fd = os.open(os.path.dirname(path) or '.', os.O_RDONLY)
  try:
    os.fsync(dir_fd)
  finally:
    os.close(dir_fd)


def save(ckpt_dir: str, state, step: int, meta: dict, keep: int = 2) -> str:
  """Writes the checkpoint of ``state`` after ``step`` updates; keeps the newest ``keep``."""
  os.makedirs(ckpt_dir, exist_ok=True)
  state_dict = flax.serialization.to_state_dict(jax.device_get(state))
  meta = dict(meta, step=int(step), format_version=FORMAT_VERSION)
  payload = flax.serialization.msgpack_serialize(
      {'state': state_dict, 'meta_json': json.dumps(meta)})
  path = checkpoint_path(ckpt_dir, step)
  _atomic_write(path, payload)
  found = list_checkpoints(ckpt_dir)
  for _, old_path in found[:max(len(found) - keep, 0)]:
    os.remove(old_path)
  # Temporary files of a writer that was killed mid-write.
  for name in os.listdir(ckpt_dir):
    if '.msgpack.tmp' in name and not name.endswith(f'.tmp{os.getpid()}'):
      os.remove(os.path.join(ckpt_dir, name))
  return path


def _read(path: str, template) -> Checkpoint:
  try:
    with open(path, 'rb') as f:
      raw = flax.serialization.msgpack_restore(f.read())
    meta = json.loads(raw['meta_json'])
  except Exception as e:  # a truncated or foreign file: name it, never a traceback
    raise data_lib.DataError(f'{path}: not a readable checkpoint ({type(e).__name__}: {e})'
                             ) from None
  if meta.get('format_version') != FORMAT_VERSION:
    raise data_lib.DataError(f"{path}: checkpoint format {meta.get('format_version')}, this "
                             f'version of lstm_jax reads format {FORMAT_VERSION}; start anew '
                             'without --resume')
  try:
    state = flax.serialization.from_state_dict(template, raw['state'])
  except Exception as e:
    raise data_lib.DataError(f'{path}: not a readable checkpoint ({type(e).__name__}: {e})'
                             ) from None
  # from_state_dict does not check shapes: a checkpoint of another model must not slip through.
  got = jax.tree_util.tree_map(np.shape, state)
  want = jax.tree_util.tree_map(np.shape, template)
  if got != want:
    raise data_lib.DataError(f'{path}: the checkpoint holds arrays of other shapes than this '
                             'model (was it written with other lstm_sizes, head_sizes or '
                             'n_streams?)')
  return Checkpoint(state, int(meta['step']), meta, path)


def restore_latest(ckpt_dir: str, template) -> Optional[Checkpoint]:
  """The newest readable checkpoint in ``ckpt_dir`` (``None`` if there is none).

  ``template`` is a state of the right structure (e.g. the freshly initialized one); the
  restored arrays take its pytree structure. An unreadable newest file (which atomic writes
  never produce, but a full disk or a hand copy can) falls back to the one before it.
  """
  found = list_checkpoints(ckpt_dir)
  for k, (_, path) in enumerate(reversed(found)):
    try:
      return _read(path, template)
    except data_lib.DataError as e:
      if k + 1 == len(found):
        raise
      logging.warning('%s; trying the previous checkpoint', e)
  return None


def check_same_run(meta: dict, config_dict: dict, path: str) -> None:
  """Raises ``DataError`` naming the first field where ``config_dict`` differs from the run."""
  saved = meta.get('config', {})
  for name in sorted(set(saved) | set(config_dict)):
    if name in RESUME_MAY_CHANGE:
      continue
    a, b = saved.get(name), config_dict.get(name)
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
      a, b = list(a), list(b)
    if a != b:
      raise data_lib.DataError(
          f'{path}: the checkpoint was written with {name}={a!r}, this run has {name}={b!r}; '
          'resume with the same flags, or drop --resume (or use another --workdir) to start anew')


def clear(ckpt_dir: str) -> int:
  """Removes every checkpoint in ``ckpt_dir`` (a fresh run must not mix with an old one)."""
  found = list_checkpoints(ckpt_dir)
  for _, path in found:
    os.remove(path)
  return len(found)
