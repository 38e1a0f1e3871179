"""Per-cell timings: the model's forward and train step, and parallel vs sequential scans.

All systems are compiled first, then timed in turns (one call of each per round), so a busy
machine slows them alike; medians after warm-up, ``block_until_ready`` on every call.
"""
from __future__ import annotations

import statistics
import time
from typing import Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax import cells
from lstm_jax.model import LSTMRegressor
from lstm_jax.recurrent import ScanConfig


def _timed(fn: Callable, args: tuple, warmup: int = 2) -> Callable[[], float]:
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(warmup):
    jax.block_until_ready(compiled(*args))

  def once() -> float:
    t = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    return time.perf_counter() - t

  once.compile_s = compile_s
  return once


def _round_robin(systems: dict, reps: int) -> dict:
  times = {k: [] for k in systems}
  for r in range(reps):
    keys = list(systems)
    keys = keys[r % len(keys):] + keys[:r % len(keys)]
    for k in keys:
      times[k].append(systems[k]())
  return {k: {'median_s': statistics.median(v), 'min_s': min(v), 'max_s': max(v), 'reps': reps,
              'compile_s': systems[k].compile_s} for k, v in times.items()}


def model_step_times(cell_specs: Sequence[tuple], batch: int = 1, steps: int = 2048,
                     inputs: int = 2, lstm_sizes=(64, 16, 8), head_sizes=(128, 16, 8),
                     reps: int = 20) -> list:
  """``LSTMRegressor`` forward and Adam train step per (cell, options), µs per time step."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.normal(size=(batch, steps, inputs)).astype(np.float32))
  y = jnp.asarray(rng.normal(size=(batch, steps, 1)).astype(np.float32))
  optimizer = optax.adam(1e-3)
  systems = {}
  for name, options in cell_specs:
    model = LSTMRegressor(lstm_sizes=tuple(lstm_sizes), head_sizes=tuple(head_sizes),
                          cell=name, cell_options=options, scan=ScanConfig())
    carry = model.initialize_carry(batch)
    params = model.init(jax.random.key(0), carry, x)['params']
    opt_state = optimizer.init(params)

    def fwd(params, carry, x, model=model):
      return model.apply({'params': params}, carry, x)

    def train_step(params, opt_state, carry, x, y, model=model):
      def loss(p):
        new_carry, pred = model.apply({'params': p}, carry, x)
        return jnp.mean(jnp.square(pred - y)), new_carry
      (value, new_carry), grads = jax.value_and_grad(loss, has_aux=True)(params)
      updates, opt_state = optimizer.update(grads, opt_state, params)
      return optax.apply_updates(params, updates), opt_state, new_carry, value

    label = f'{name}[{options}]' if options else name
    systems[(label, 'fwd')] = _timed(fwd, (params, carry, x))
    systems[(label, 'train')] = _timed(train_step, (params, opt_state, carry, x, y))
  out = []
  for (label, mode), r in _round_robin(systems, reps).items():
    out.append(dict(r, cell=label, mode=mode, us_per_step=1e6 * r['median_s'] / steps,
                    batch=batch, steps=steps, inputs=inputs, lstm_sizes=list(lstm_sizes),
                    head_sizes=list(head_sizes)))
  return out


def scan_speedups(names=('min_lstm', 'min_gru'), lengths=(2048, 16384),
                  shapes=((1, 2, 64), (8, 8, 128)), reps: int = 10) -> list:
  """One layer per (batch, inputs, hidden) shape, forward and grad of a sum of squares.

  Three ways of running it, timed in turns: ``parallel`` (the default blocked associative
  scan), ``whole`` (``block=0``: one associative scan over the chunk) and ``sequential``
  (``parallel=false``: ``lax.scan`` over the step). Ratios are sequential time / other time.
  """
  variants = {'parallel': {}, 'whole': {'block': 0}, 'sequential': {'parallel': False}}
  rng = np.random.default_rng(0)
  out = []
  for batch, inputs, hidden in shapes:
    for steps in lengths:
      x = jnp.asarray(rng.normal(size=(batch, steps, inputs)).astype(np.float32))
      systems = {}
      for name in names:
        for variant, options in variants.items():
          cell = cells.get_cell(name, options)
          params = cell.init(jax.random.key(0), inputs, hidden)
          carry = cell.zero_carry(batch, hidden)

          def fwd(params, carry, x, cell=cell):
            return cell.layer(params, carry, x)

          def grad(params, carry, x, cell=cell):
            return jax.grad(lambda p: jnp.sum(jnp.square(cell.layer(p, carry, x)[1])))(params)

          systems[(name, variant, 'fwd')] = _timed(fwd, (params, carry, x))
          systems[(name, variant, 'grad')] = _timed(grad, (params, carry, x))
      res = _round_robin(systems, reps)
      for name in names:
        for mode in ('fwd', 'grad'):
          seq = res[(name, 'sequential', mode)]['median_s']
          record = {'cell': name, 'mode': mode, 'steps': steps, 'batch': batch,
                    'inputs': inputs, 'hidden': hidden, 'reps': reps,
                    'block': cells.get_cell(name).block}
          for variant in variants:
            record[f'{variant}_median_s'] = res[(name, variant, mode)]['median_s']
            record[f'sequential_over_{variant}'] = seq / record[f'{variant}_median_s']
          out.append(record)
  return out
