"""The GPU check in one call (``experiments/gpu_benchmarks.py``): every loop's parity with the
scan on the device, then every workload and mode for ours on each loop, Flax and PyTorch.

A lent GPU session is short (a machine's start costs minutes of it, and a rerun must fit), so
the suite is one prepared program with JSON out, and it runs on CPU too
(``--platform=cpu --quick``: the Pallas loops in the interpreter, cuDNN skipped with its reason)
so that a device is not spent on a bug.

Precision: every system computes its f32 products in full (``benchmark.PRECISIONS``:
JAX's matmul precision ``float32``, which our cuDNN loop follows; PyTorch with TF32 off); the
Pallas kernels compute in f32 anyway. Each record says which precision it ran at.
"""
from __future__ import annotations

import dataclasses
import json
import os
import platform as platform_lib
import time
from typing import Callable, Optional, Sequence

from lstm_jax import benchmark as bench

LOOPS = ('auto', 'scan', 'pallas', 'pallas_stack', 'cudnn')
# The stacks the parity check runs: the seed's and the long workload's.
PARITY_SIZES = ((64, 16, 8), (128, 128))


def environment() -> dict:
  """What ran the suite: device, library versions, cuDNN."""
  import flax
  import jax
  import optax
  env = {'jax': jax.__version__, 'flax': flax.__version__, 'optax': optax.__version__,
         'backend': jax.default_backend(), 'devices': [d.device_kind for d in jax.devices()],
         'cpu': bench.cpu_name(), 'python': platform_lib.python_version()}
  try:
    import torch
    env.update(torch=torch.__version__,
               cudnn=torch.backends.cudnn.version() if torch.cuda.is_available() else None)
  except ImportError:
    env['torch'] = None
  return env


def loop_parity(loops: Sequence[str] = LOOPS, sizes=PARITY_SIZES, batch: int = 2,
                steps: int = 32, tolerance: float = 1e-4) -> list:
  """Each loop's outputs, carries and training gradients against JAX's autodiff of the plain
  scan, with f32 products in full: one record per loop and stack (``ok``, the largest error
  relative to the reference's largest magnitude, which loop each layer ran on), or
  ``skipped`` with the reason where a loop does not run here (cuDNN off a CUDA GPU)."""
  import jax
  import jax.numpy as jnp
  from lstm_jax import cells
  from lstm_jax import recurrent
  from lstm_jax.model import LSTMRegressor
  records = []
  with jax.default_matmul_precision('float32'):
    for lstm_sizes in sizes:
      keys = jax.random.split(jax.random.key(0), 3)
      x = jax.random.normal(keys[0], (batch, steps, 3))
      y = jax.random.normal(keys[1], (batch, steps, 1))

      def outputs_and_grads(scan):
        model = LSTMRegressor(lstm_sizes=lstm_sizes, head_sizes=(8,), scan=scan)
        carry = model.initialize_carry(batch)
        params = LSTMRegressor(lstm_sizes=lstm_sizes, head_sizes=(8,)).init(
            keys[2], carry, x)['params']

        def loss(p, c):
          new_carry, pred = model.apply({'params': p}, c, x)
          return jnp.mean((pred - y) ** 2) + sum(jnp.sum(k.h * k.c) for k in new_carry)

        forward = jax.jit(model.apply)({'params': params}, carry, x)
        return forward, jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, carry)

      reference = outputs_and_grads(recurrent.ScanConfig(loop='scan', backward='autodiff'))
      for loop in loops:
        scan = recurrent.ScanConfig(loop=loop)
        record = {'loop': loop, 'lstm_sizes': list(lstm_sizes), 'batch': batch, 'steps': steps}
        try:
          record['layers'] = recurrent.describe_loops(cells.get_cell('lstm'), lstm_sizes, 3,
                                                      batch, scan, training=True)
          got = outputs_and_grads(scan)
        except ValueError as e:
          records.append(dict(record, skipped=str(e).splitlines()[0]))
          continue
        errors = [cells._relative_error(g, r)  # pylint: disable=protected-access
                  for g, r in zip(got, reference)]
        records.append(dict(record, forward_error=errors[0], gradient_error=errors[1],
                            ok=max(errors) <= tolerance))
  return records


def run(out_dir: str, platform: str = 'cuda', quick: bool = False,
        workloads: Sequence[str] = ('seed', 'long', 'wide'), loops: Sequence[str] = LOOPS,
        peers: Sequence[str] = ('flax', 'torch'), reps: int = 10,
        modes: Sequence[str] = ('fwd', 'train'),
        log: Callable[[str], None] = print) -> dict:
  """Parity, then every workload in each mode; writes ``gpu_parity.json`` and
  ``gpu_bench.jsonl`` (one line per system and workload-mode, written as each finishes) under
  ``out_dir`` and returns ``{'environment', 'parity', 'ratios'}`` (``ratios``: per
  workload-mode, each of our loops' time over PyTorch's; > 1 means ours is faster).
  ``quick``: the parity on the seed's stack only, 16 time steps per chunk and at most 4
  streams, for a dry run."""
  os.makedirs(out_dir, exist_ok=True)
  started = time.perf_counter()
  summary = {'environment': environment(),
             'parity': loop_parity(loops, PARITY_SIZES[:1] if quick else PARITY_SIZES)}
  # Written now and again at the end: a device run cut short still keeps its parity.
  with open(os.path.join(out_dir, 'gpu_parity.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  for p in summary['parity']:
    verdict = (f"skipped: {p['skipped']}" if 'skipped' in p else
               f"{'ok' if p['ok'] else 'FAIL'}  forward {p['forward_error']:.1e}, gradients "
               f"{p['gradient_error']:.1e}  [{p['layers']}]")
    log(f"parity {p['loop']:<12} {'/'.join(map(str, p['lstm_sizes'])):<9} {verdict}")
  # A loop the parity check found cannot run here (cuDNN off a CUDA GPU) is not timed either.
  runs = [loop for loop in loops
          if not any(p['loop'] == loop and 'skipped' in p for p in summary['parity'])]
  systems = [bench.System(f'ours[loop={loop}]', 'ours', {'loop': loop, 'precision': 'float32'})
             for loop in runs]
  for peer in peers:
    if not bench.peer_available(peer):
      log(f'peer {peer} is not installed: skipped')
      continue
    options = {'precision': 'float32'}
    systems.append(bench.System('torch[1 thr]', 'torch', dict(options, threads=1))
                   if peer == 'torch' else bench.System(peer, peer, options))
  jsonl = os.path.join(out_dir, 'gpu_bench.jsonl')
  summary['ratios'] = {}
  for name in workloads:
    w = bench.WORKLOADS[name]
    if quick:
      w = dataclasses.replace(w, steps=16, batch=min(w.batch, 4))
    for mode in modes:
      records = bench.measure(systems, w, mode, 'f32', reps, platform, log=log,
                              concurrent_start=platform not in ('', 'cpu'), warm_calls=1)
      for r in records:
        r['workload_name'] = name
      bench.write_jsonl(jsonl, records)
      log(f'\n== {name} {mode} ({records[0]["device_kind"] if records else "no system ran"})')
      log(bench.format_table(records))
      summary['ratios'][f'{name} {mode}'] = _ratios(records)
  summary['wall_s'] = time.perf_counter() - started
  with open(os.path.join(out_dir, 'gpu_parity.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  return summary


def _ratios(records: list) -> dict:
  """Each of our systems' speed against PyTorch's (its time over ours), where both ran."""
  torch_rec: Optional[dict] = next((r for r in records if r['builder'] == 'torch'), None)
  if torch_rec is None:
    return {}
  return {r['system']: torch_rec['median_s'] / r['median_s'] for r in records
          if r['builder'] == 'ours'}
