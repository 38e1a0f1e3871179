r"""GPU study of the time loop's forms, in one process: lax.scan unrolls against the Pallas loop
at several warp counts, for the seed and long models (forward; train step for the main forms).

  python -m experiments.gpu_loop_study --out=results/gpu_loop_study.json

Each form is compiled apart (timed), warmed up, then called ``--reps`` times with
``block_until_ready``; the median is reported in microseconds per time step. The benchmark
(``experiments.benchmark``) is the reference against peers; this script ranks our own forms.
"""
import json
import statistics
import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax import pallas_loop
from lstm_jax.model import LSTMRegressor
from lstm_jax.recurrent import ScanConfig

OUT = flags.DEFINE_string('out', 'results/gpu_loop_study.json', 'JSON results.')
REPS = flags.DEFINE_integer('reps', 20, 'Timed calls per form.')
MAX_STEPS = flags.DEFINE_integer('max_steps', 0, 'Caps the time steps (a dry run on CPU).')

MODELS = {'seed': (1, 2048, 2, (64, 16, 8), (128, 16, 8)), 'long': (8, 16384, 8, (128, 128), ())}


def _time(fn, args, reps):
  t0 = time.perf_counter()
  compiled = jax.jit(fn).lower(*args).compile()
  compile_s = time.perf_counter() - t0
  for _ in range(2):
    jax.block_until_ready(compiled(*args))
  times = []
  for _ in range(reps):
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(*args))
    times.append(time.perf_counter() - t0)
  return statistics.median(times), compile_s


def _form(name, batch, steps, inputs, lstm, head, mode, scan, warps, reps):
  saved = pallas_loop.num_warps
  if warps:
    pallas_loop.num_warps = lambda hidden: warps
  try:
    model = LSTMRegressor(lstm_sizes=lstm, head_sizes=head, scan=scan)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((batch, steps, inputs)), jnp.float32)
    y = jnp.asarray(rng.standard_normal((batch, steps, 1)), jnp.float32)
    carry = model.initialize_carry(batch)
    params = LSTMRegressor(lstm_sizes=lstm, head_sizes=head).init(
        jax.random.key(0), carry, x[:, :8])['params']
    if mode == 'fwd':
      fn, args = (lambda p, c, xx: model.apply({'params': p}, c, xx)), (params, carry, x)
    else:
      opt = optax.adam(1e-3)

      def fn(p, s, c, xx, yy):
        loss = lambda q: jnp.mean(jnp.square(model.apply({'params': q}, c, xx)[1] - yy))
        g = jax.grad(loss)(p)
        u, s = opt.update(g, s, p)
        return optax.apply_updates(p, u), s
      args = (params, opt.init(params), carry, x, y)
    med, compile_s = _time(fn, args, reps)
    return {'model': name, 'mode': mode, 'loop': scan.loop, 'unroll': scan.unroll,
            'num_warps': warps or 'rule', 'us_per_step': 1e6 * med / steps,
            'compile_s': compile_s, 'device_kind': jax.devices()[0].device_kind}
  finally:
    pallas_loop.num_warps = saved


def main(argv):
  del argv
  forms = []
  for unroll in (1, 4, 8):
    forms += [('seed', 'fwd', ScanConfig(loop='scan', unroll=unroll), 0),
              ('long', 'fwd', ScanConfig(loop='scan', unroll=unroll), 0)]
  for warps in (0, 1, 2, 4, 8):
    forms.append(('seed', 'fwd', ScanConfig(loop='pallas'), warps))
  for warps in (0, 4, 16):
    forms.append(('long', 'fwd', ScanConfig(loop='pallas'), warps))
  forms += [('seed', 'train', ScanConfig(loop='scan', unroll=4), 0),
            ('seed', 'train', ScanConfig(loop='pallas'), 0),
            ('long', 'train', ScanConfig(loop='scan', unroll=4), 0),
            ('long', 'train', ScanConfig(loop='pallas'), 0)]
  results = []
  for name, mode, scan, warps in forms:
    try:
      batch, steps, *sizes = MODELS[name]
      steps = min(steps, MAX_STEPS.value or steps)
      r = _form(name, batch, steps, *sizes, mode, scan, warps, REPS.value)
    except Exception as e:  # pylint: disable=broad-except
      r = {'model': name, 'mode': mode, 'loop': scan.loop, 'num_warps': warps,
           'error': f'{type(e).__name__}: {str(e)[-400:]}'}
    results.append(r)
    print(json.dumps(r), flush=True)
    with open(OUT.value, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main)
