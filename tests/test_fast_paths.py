"""Every fast path computes the plain reference's function: forward, train-step gradients.

The reference is ``ScanConfig(hoist_input=False, unroll=1, backward='autodiff')`` (JAX
differentiating a plain ``lax.scan`` of the cell) with each gate through its own activation.
"""
import dataclasses
import itertools
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import benchmark as bench
from lstm_jax import cell as cell_lib
from lstm_jax import pallas_loop
from lstm_jax import parallel
from lstm_jax import recurrent
from lstm_jax.model import LSTMRegressor
from lstm_jax.recurrent import ScanConfig

REFERENCE = ScanConfig(hoist_input=False, unroll=1, backward='autodiff')
# Every custom-backward combination; autodiff with the other loop options and with remat.
FAST = [ScanConfig(hoist_input=h, unroll=u) for h, u in itertools.product([False, True], [1, 3])]
FAST += [ScanConfig(hoist_input=True, unroll=3, backward='autodiff'),
         ScanConfig(backward='autodiff', remat=True),
         # One Pallas kernel program per sequence (the interpreter on CPU, Triton on a GPU),
         # per layer and for the whole stack.
         ScanConfig(loop='pallas'), ScanConfig(loop='pallas_stack')]


def _model(scan, rec_act='sigmoid'):
  return LSTMRegressor(lstm_sizes=(8, 4), head_sizes=(4,), out_size=2,
                       scan=dataclasses.replace(scan, recurrent_activation=rec_act))


def _problem(rec_act='sigmoid'):
  model = _model(REFERENCE, rec_act)
  x = jax.random.normal(jax.random.key(0), (2, 7, 3))
  y = jax.random.normal(jax.random.key(1), (2, 7, 2))
  carry = tuple(cell_lib.LSTMCarry(0.3 * jax.random.normal(jax.random.key(2 + k), (2, n)),
                                   0.3 * jax.random.normal(jax.random.key(5 + k), (2, n)))
                for k, n in enumerate((8, 4)))
  params = model.init(jax.random.key(9), carry, x)['params']
  # Non-zero biases, so every gate's derivative is exercised away from its symmetric point.
  params = jax.tree.map(lambda p: p + 0.2 * jax.random.normal(jax.random.key(11), p.shape),
                        params)
  return params, carry, x, y


def _train_grads(scan, params, carry, x, y, rec_act='sigmoid'):
  """Gradient of the training loss (outputs and the carried-out state both used)."""
  model = _model(scan, rec_act)

  def loss(p, c):
    new_c, pred = model.apply({'params': p}, c, x)
    return jnp.mean(jnp.square(pred - y)) + sum(jnp.sum(k.h * k.c) for k in new_c)

  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))(params, carry)


def _plain_gates(z, recurrent_activation='sigmoid', activation='tanh', axis=-1):
  i, f, g, o = jnp.split(z, 4, axis=axis)
  rec = cell_lib.RECURRENT_ACTIVATIONS[recurrent_activation]
  return jnp.concatenate([rec(i), rec(f), jnp.tanh(g), rec(o)], axis=axis)


@pytest.fixture(scope='module')
def reference():
  params, carry, x, y = _problem()
  saved = cell_lib.activate_gates
  cell_lib.activate_gates = _plain_gates  # the reference: no one-tanh gate trick either
  try:
    out = _train_grads(REFERENCE, params, carry, x, y)
  finally:
    cell_lib.activate_gates = saved
  return (params, carry, x, y), out


@pytest.mark.parametrize('scan', FAST, ids=str)
def test_train_step_gradients_match_reference(reference, scan):
  (params, carry, x, y), (ref_loss, ref_grads) = reference
  loss, grads = _train_grads(scan, params, carry, x, y)
  np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
  ref_leaves, ref_tree = jax.tree.flatten(ref_grads)
  leaves, tree = jax.tree.flatten(grads)
  assert tree == ref_tree
  for g, r in zip(leaves, ref_leaves):
    np.testing.assert_allclose(g, r, atol=3e-5, rtol=3e-5)


def test_fused_gate_activation_equals_plain():
  z = jnp.linspace(-12.0, 12.0, 4 * 7 * 3).reshape(3, 28)
  np.testing.assert_allclose(cell_lib.activate_gates(z), _plain_gates(z), atol=2e-7)
  # Feature-major: gates packed along axis -2.
  np.testing.assert_allclose(cell_lib.activate_gates(z.T, axis=-2), _plain_gates(z.T, axis=-2),
                             atol=2e-7)


def test_bfloat16_train_gradients_close_to_f32(reference):
  (params, carry, x, y), (_, ref) = reference
  _, got = _train_grads(ScanConfig(matmul_dtype='bfloat16'), params, carry, x, y)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    assert g.dtype == jnp.float32
    np.testing.assert_allclose(g, r, atol=3e-2, rtol=5e-2)


def test_workload_flops():
  w = bench.Workload(2, 10, 3, (4,), (5,), 1)
  fwd = 2 * 2 * 10 * ((3 + 4) * 16 + 4 * 5 + 5 * 1)
  assert bench.workload_flops(w, 'fwd') == fwd
  assert bench.workload_flops(w, 'train') == 3 * fwd


def test_benchmark_times_our_public_model():
  w = bench.Workload(1, 16, 2, (4, 3), (5,), 1)
  built = bench.build_ours(w, 'train', 'f32', {'unroll': 2})
  built.call()
  built.call()  # donated buffers are threaded through: a second call must work
  assert built.compile_s > 0 and built.info['scan']['unroll'] == 2


def test_measure_pools_several_processes_per_system():
  w = bench.Workload(1, 8, 2, (4,), (), 1)
  rec, = bench.measure([bench.System('ours', 'ours', {})], w, 'fwd', 'f32', reps=3,
                       processes=2, log=lambda _: None, warmup=2, warm_calls=1)
  assert rec['processes'] == 2 and len(rec['process_us_per_step']) == 2
  assert len(rec['times_s']) == 6  # reps calls in each process, pooled
  assert rec['median_s'] == float(np.median(rec['times_s']))
  # Each timed call follows one untimed call of its own: 2 warm-up + 3 x (1 + 1) per process.
  assert rec['warm_calls'] == 1 and rec['process_calls'] == [8, 8]
  with pytest.raises(ValueError, match='processes must be >= 1'):
    bench.measure([], w, 'fwd', 'f32', reps=3, processes=0)
  with pytest.raises(ValueError, match='warm_calls must be >= 0'):
    bench.measure([], w, 'fwd', 'f32', reps=3, warm_calls=-1)


def test_worker_devices_follow_the_inference_rule():
  long, seed = bench.WORKLOADS['long'], bench.WORKLOADS['seed']
  cores = parallel.usable_cores()
  assert bench.worker_devices('ours', long, 'fwd', {}) == parallel.inference_shards(
      8, (128, 128), cores, 'cpu')
  assert bench.worker_devices('ours', seed, 'fwd', {}) == 1   # batch 1: nothing to shard
  assert bench.worker_devices('ours', long, 'train', {}) == 1
  assert bench.worker_devices('ours', long, 'train', {'devices': '2'}) == 2
  assert bench.worker_devices('flax', long, 'fwd', {}) == 1
  assert bench.worker_devices('ours', long, 'fwd', {'loop': 'pallas'}) == 1  # as inference_shards
  assert bench.worker_devices('ours', long, 'fwd', {'platform': 'cuda'}) == 1


def test_cores_are_the_affinity_mask_not_the_host(monkeypatch):
  # Pinned to 2 of 16 cores (taskset, a cpuset), the long forward must shard over 2, not 8.
  monkeypatch.setattr(os, 'cpu_count', lambda: 16)
  monkeypatch.setattr(os, 'sched_getaffinity', lambda pid: {0, 5}, raising=False)
  assert parallel.usable_cores() == 2
  assert bench.worker_devices('ours', bench.WORKLOADS['long'], 'fwd', {}) == 2
  assert bench.cpu_name().endswith(' x2')
  monkeypatch.delattr(os, 'sched_getaffinity')
  assert parallel.usable_cores() == 16


def test_measure_shards_our_inference_over_cpu_devices():
  w = bench.Workload(4, 8, 2, (4,), (), 1)
  rec, = bench.measure([bench.System('ours', 'ours', {})], w, 'fwd', 'f32', reps=2,
                       log=lambda _: None)
  assert rec['info']['devices'] == parallel.inference_shards(4, (4,), parallel.usable_cores(), 'cpu')


def _n_params(tree):
  return sum(int(np.prod(np.shape(v))) for v in jax.tree.leaves(tree))


def test_flax_peer_has_our_sizes():
  w = bench.Workload(1, 8, 2, (6, 4), (5,), 1)
  model = LSTMRegressor(lstm_sizes=w.lstm_sizes, head_sizes=w.head_sizes, out_size=1)
  x = jnp.zeros((1, 8, 2))
  ours = model.init(jax.random.key(0), model.initialize_carry(1), x)['params']
  import flax.linen as nn
  flax_params = 0
  n_in = 2
  for n in w.lstm_sizes:
    cell = nn.OptimizedLSTMCell(n)
    flax_params += _n_params(cell.init(jax.random.key(0), cell.initialize_carry(
        jax.random.key(0), (1, n_in)), jnp.zeros((1, n_in))))
    n_in = n
  head = (4 + 1) * 5 + (5 + 1) * 1
  assert flax_params + head == _n_params(ours)


def test_torch_peer_has_our_sizes():
  torch = pytest.importorskip('torch')
  w = bench.Workload(1, 8, 2, (6, 4), (5,), 1)
  model = LSTMRegressor(lstm_sizes=w.lstm_sizes, head_sizes=w.head_sizes, out_size=1)
  ours = _n_params(model.init(jax.random.key(0), model.initialize_carry(1),
                              jnp.zeros((1, 8, 2)))['params'])
  built = bench.build_torch(w, 'train', 'f32', {'threads': 1})
  built.call()
  del torch
  # PyTorch keeps two bias vectors per layer (b_ih + b_hh): 4H more parameters each.
  assert built.info['n_params'] == ours + sum(4 * n for n in w.lstm_sizes)


def test_cli_rejects_too_few_reps():
  proc = subprocess.run([sys.executable, '-m', 'experiments.benchmark', '--reps=3', '--peers=',
                         '--nopeak'], capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == 'error: --reps must be >= 10, got 3'


def test_pallas_loop_refuses_what_it_cannot_run():
  with pytest.raises(ValueError, match='backward'):
    ScanConfig(loop='pallas', backward='autodiff')
  model = LSTMRegressor(lstm_sizes=(6,), scan=ScanConfig(loop='pallas'))
  with pytest.raises(ValueError, match='power-of-two hidden size.*got 6'):
    model.init(jax.random.key(0), model.initialize_carry(1), jnp.ones((1, 4, 2)))
  model = LSTMRegressor(lstm_sizes=(8,), scan=ScanConfig(loop='pallas', matmul_dtype='bfloat16'))
  with pytest.raises(ValueError, match='float32'):
    model.init(jax.random.key(0), model.initialize_carry(1), jnp.ones((1, 4, 2)))
  model = LSTMRegressor(lstm_sizes=(8, 6), scan=ScanConfig(loop='pallas_stack'))
  with pytest.raises(ValueError, match="loop='pallas_stack': layer 1: needs a power-of-two "
                     'hidden size.*got 6'):
    model.init(jax.random.key(0), model.initialize_carry(1), jnp.ones((1, 4, 2)))
  with pytest.raises(ValueError, match='backward'):
    ScanConfig(loop='pallas_stack', remat=True)


@pytest.mark.parametrize('form', [pallas_loop.KernelForm(True, False),
                                  pallas_loop.KernelForm(False, True),
                                  pallas_loop.KernelForm(True, True)], ids=str)
def test_pallas_kernel_forms_compute_the_same(form):
  """Weights held in registers and inputs loaded a step ahead change only when operands are
  read: forward (with residuals) and reverse kernels give the plain form's outputs (weights
  read at each use, no prefetch)."""
  want, got = pallas_loop.outputs_on_random_inputs([pallas_loop.KernelForm(), form], steps=6,
                                                   batch=2, hidden_size=8, seed=3)
  assert len(got) == 9  # forward: carry, h, carries, z; backward: d carry, dz
  for w, g in zip(want, got):
    np.testing.assert_allclose(g, w, rtol=1e-6, atol=1e-6)


# --------------------------------------------------------------------------- small-loop kernels

SMALL = 'xla_cpu_small_while_loop_byte_threshold=10000000'


@pytest.mark.parametrize('before, after', [
    ('', f'--xla_backend_extra_options={SMALL}'),
    ('--xla_cpu_multi_thread_eigen=false',
     f'--xla_cpu_multi_thread_eigen=false --xla_backend_extra_options={SMALL}'),
    ('--xla_backend_extra_options=xla_llvm_dot_tiling_factor=4',
     f'--xla_backend_extra_options=xla_llvm_dot_tiling_factor=4,{SMALL}'),
    ('--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=5',  # the user's own
     '--xla_backend_extra_options=xla_cpu_small_while_loop_byte_threshold=5'),
])
def test_small_loop_flags(before, after):
  assert recurrent.small_loop_flags(before) == after


def test_small_loop_kernels_after_start_says_when_to_call_it(monkeypatch):
  monkeypatch.setenv('XLA_FLAGS', '')
  jax.devices()  # the backend is running in this process
  with pytest.raises(RuntimeError, match='before any JAX computation'):
    recurrent.use_small_loop_kernels()


SMALL_LOOP_RUN = r'''
import sys
import numpy as np
from lstm_jax import recurrent
if sys.argv[2] == 'small':
  recurrent.use_small_loop_kernels()
import jax, jax.numpy as jnp
from lstm_jax.model import LSTMRegressor
model = LSTMRegressor(lstm_sizes=(64, 16, 8), head_sizes=(16,), out_size=1)
x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 256, 2)), jnp.float32)
carry = model.initialize_carry(1)
params = model.init(jax.random.key(0), carry, x)['params']
fwd = jax.jit(lambda p, c, xx: model.apply({'params': p}, c, xx)[1])
grad = jax.jit(jax.grad(lambda p, c, xx: jnp.mean(model.apply({'params': p}, c, xx)[1] ** 2)))
for f in (fwd, grad):
  text = f.lower(params, carry, x).compile().as_text()
  assert ('xla_cpu_small_call="true"' in text) == (sys.argv[2] == 'small'), sys.argv[2]
out = [fwd(params, carry, x)] + jax.tree.leaves(grad(params, carry, x))
np.savez(sys.argv[1], *[np.asarray(a) for a in out])
'''


def test_small_loop_kernels_compute_the_same(tmp_path):
  """The seed-sized model with every time loop compiled as one function gives XLA's default
  program's outputs and gradients (subprocesses: XLA reads the option at start)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  out = {}
  for kind in ('small', 'default'):
    path = str(tmp_path / f'{kind}.npz')
    proc = subprocess.run([sys.executable, '-c', SMALL_LOOP_RUN, path, kind], capture_output=True,
                          text=True, timeout=300, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert proc.returncode == 0, proc.stderr[-3000:]
    out[kind] = np.load(path)
  assert len(out['small'].files) == len(out['default'].files) == 1 + 3 * 3 + 2 * 2
  for name in out['default'].files:
    np.testing.assert_allclose(out['small'][name], out['default'][name], rtol=1e-5, atol=1e-7)
