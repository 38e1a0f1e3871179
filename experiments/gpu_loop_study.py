r"""GPU study of the time loop's forms, in one process: lax.scan unrolls against the Pallas loop
at several warp counts, for the seed and long models (forward; train step for the main forms).

  python -m experiments.gpu_loop_study --out=runs/gpu_loop_study.json
  python -m experiments.gpu_loop_study --study=kernel_forms --out=runs/gpu_kernel_forms.json

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
STUDY = flags.DEFINE_enum('study', 'loops', ['loops', 'kernel_forms'],
                          'loops: scan unrolls against the Pallas loop and its warp counts; '
                          'kernel_forms: the Pallas kernel forms (pallas_loop.KernelForm), with '
                          'each form checked against the plain form on this device first.')

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


def _form(name, batch, steps, inputs, lstm, head, mode, scan, warps, reps, kernel_form=None):
  saved = pallas_loop.num_warps, pallas_loop.FORM
  if warps:
    pallas_loop.num_warps = lambda hidden: warps
  if kernel_form is not None:
    pallas_loop.FORM = kernel_form
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
            'num_warps': warps or 'rule', 'kernel_form': pallas_loop.FORM._asdict(),
            'us_per_step': 1e6 * med / steps, 'compile_s': compile_s,
            'device_kind': jax.devices()[0].device_kind}
  finally:
    pallas_loop.num_warps, pallas_loop.FORM = saved


def _check_kernel_forms(kernel_forms):
  """Each form's forward (with residuals) and reverse kernels against the plain form's
  (``KernelForm()``: weights read at each use, no prefetch), on this device, at the seed's
  first-layer size: the largest absolute difference of any output."""
  plain = pallas_loop.KernelForm()
  out = []
  for kf in kernel_forms:
    want, got = pallas_loop.outputs_on_random_inputs([plain, kf], steps=256, batch=2,
                                                     hidden_size=64, seed=7)
    diff = max(float(jnp.max(jnp.abs(a - b))) for a, b in zip(got, want))
    # The record's name is the one results/h200_pallas_kernel_forms.json holds.
    out.append({'check': 'kernel_form_vs_default', 'kernel_form': kf._asdict(),
                'max_abs_diff': diff})
  return out


def _kernel_form_study():
  kernel_forms = [pallas_loop.KernelForm(w, p) for w in (False, True) for p in (False, True)]
  results = _check_kernel_forms(kernel_forms)
  for r in results:
    print(json.dumps(r), flush=True)
  pallas = ScanConfig(loop='pallas')
  forms = [('seed', mode, pallas, 0, kf) for mode in ('fwd', 'train') for kf in kernel_forms]
  forms += [('seed', 'fwd', pallas, 8, kf) for kf in kernel_forms[1:]]
  forms += [('long', 'fwd', pallas, 0, kf) for kf in kernel_forms]
  forms += [('long', 'fwd', ScanConfig(loop='scan', unroll=4), 0, None)]
  return results, forms


def _loop_study():
  forms = []
  for unroll in (1, 4, 8):
    forms += [('seed', 'fwd', ScanConfig(loop='scan', unroll=unroll), 0, None),
              ('long', 'fwd', ScanConfig(loop='scan', unroll=unroll), 0, None)]
  for warps in (0, 1, 2, 4, 8):
    forms.append(('seed', 'fwd', ScanConfig(loop='pallas'), warps, None))
  for warps in (0, 4, 16):
    forms.append(('long', 'fwd', ScanConfig(loop='pallas'), warps, None))
  forms += [('seed', 'train', ScanConfig(loop='scan', unroll=4), 0, None),
            ('seed', 'train', ScanConfig(loop='pallas'), 0, None),
            ('long', 'train', ScanConfig(loop='scan', unroll=4), 0, None),
            ('long', 'train', ScanConfig(loop='pallas'), 0, None)]
  return [], forms


def main(argv):
  del argv
  results, forms = _kernel_form_study() if STUDY.value == 'kernel_forms' else _loop_study()
  for name, mode, scan, warps, kf in forms:
    try:
      batch, steps, *sizes = MODELS[name]
      steps = min(steps, MAX_STEPS.value or steps)
      r = _form(name, batch, steps, *sizes, mode, scan, warps, REPS.value, kf)
    except Exception as e:  # pylint: disable=broad-except
      r = {'model': name, 'mode': mode, 'loop': scan.loop, 'num_warps': warps,
           'kernel_form': kf._asdict() if kf else None,
           'error': f'{type(e).__name__}: {str(e)[-400:]}'}
    results.append(r)
    print(json.dumps(r), flush=True)
    with open(OUT.value, 'w') as f:
      json.dump(results, f, indent=1)


if __name__ == '__main__':
  app.run(main)
