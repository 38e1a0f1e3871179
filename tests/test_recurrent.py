"""The time loop: scan vs a Python loop, chunked carry, fast paths vs reference, gradients."""
import dataclasses
import itertools

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

from lstm_jax import cell as cell_lib
from lstm_jax import recurrent
from lstm_jax.recurrent import ScanConfig

SIZES = (6, 5, 3)  # stacked layers of different sizes


def make_stack(key, in_size, sizes=SIZES):
  keys = jax.random.split(key, len(sizes))
  params, n = [], in_size
  for k, s in zip(keys, sizes):
    p = cell_lib.init_lstm_params(k, n, s)
    params.append(p._replace(bias=p.bias + 0.1 * jax.random.normal(k, p.bias.shape)))
    n = s
  return params


def random_carry(key, batch, sizes=SIZES):
  out = []
  for k, s in zip(jax.random.split(key, len(sizes)), sizes):
    kh, kc = jax.random.split(k)
    out.append(cell_lib.LSTMCarry(0.5 * jax.random.normal(kh, (batch, s)),
                                  0.5 * jax.random.normal(kc, (batch, s))))
  return tuple(out)


def python_loop(params, carries, x, rec_act='sigmoid'):
  """Reference: the plain cell stepped in Python, layer by layer."""
  carries = list(carries)
  outs = []
  for t in range(x.shape[1]):
    h = x[:, t]
    for k, p in enumerate(params):
      carries[k], h = cell_lib.lstm_cell(p, carries[k], h, recurrent_activation=rec_act)
    outs.append(h)
  return tuple(carries), jnp.stack(outs, axis=1)


CONFIGS = [ScanConfig(hoist_input=hoist, unroll=unroll, backward=bwd)
           for hoist, unroll, bwd in itertools.product([False, True], [1, 4], ['custom', 'autodiff'])]


@pytest.fixture(scope='module')
def problem():
  key = jax.random.key(0)
  params = make_stack(key, 4)
  carries = random_carry(jax.random.key(1), 2)
  x = jax.random.normal(jax.random.key(2), (2, 13, 4))
  return params, carries, x


@pytest.fixture(scope='module')
def loop_reference(problem):
  return python_loop(*problem)


@pytest.fixture(scope='module')
def autodiff_grads(problem):
  return jax.jit(jax.grad(_loss(ScanConfig(backward='autodiff')), argnums=(0, 1, 2)))(*problem)


@pytest.mark.parametrize('cfg', CONFIGS, ids=str)
def test_scan_matches_python_loop(problem, loop_reference, cfg):
  params, carries, x = problem
  ref_c, ref_h = loop_reference
  got_c, got_h = jax.jit(recurrent.lstm_stack, static_argnums=3)(params, carries, x, cfg)
  np.testing.assert_allclose(got_h, ref_h, atol=1e-5)
  for g, r in zip(got_c, ref_c):
    np.testing.assert_allclose(g.h, r.h, atol=1e-5)
    np.testing.assert_allclose(g.c, r.c, atol=1e-5)


@pytest.mark.parametrize('rec_act', ['hard_sigmoid', 'hard_sigmoid_keras3'])
def test_hard_sigmoid_scan_matches_loop(problem, rec_act):
  params, carries, x = problem
  _, ref_h = python_loop(params, carries, x, rec_act)
  _, got_h = recurrent.lstm_stack(params, carries, x, ScanConfig(recurrent_activation=rec_act))
  np.testing.assert_allclose(got_h, ref_h, atol=1e-5)


def test_two_chunks_equal_one_pass(problem):
  params, carries, x = problem
  cfg = ScanConfig()
  whole_c, whole_h = recurrent.lstm_stack(params, carries, x, cfg)
  c1, h1 = recurrent.lstm_stack(params, carries, x[:, :6], cfg)
  c2, h2 = recurrent.lstm_stack(params, c1, x[:, 6:], cfg)
  np.testing.assert_allclose(jnp.concatenate([h1, h2], 1), whole_h, atol=1e-6)
  for a, b in zip(c2, whole_c):
    np.testing.assert_allclose(a.h, b.h, atol=1e-6)
    np.testing.assert_allclose(a.c, b.c, atol=1e-6)


def _loss(cfg):
  def loss(params, carries, x):
    new_c, h = recurrent.lstm_stack(params, carries, x, cfg)
    # Use the outputs and the final carry, so both cotangent paths are exercised.
    return jnp.sum(jnp.sin(h)) + sum(jnp.sum(c.h * c.c) + jnp.sum(c.c) for c in new_c)
  return loss


@pytest.mark.parametrize('cfg', [c for c in CONFIGS if c.backward == 'custom'], ids=str)
def test_custom_backward_matches_autodiff(problem, autodiff_grads, cfg):
  got = jax.jit(jax.grad(_loss(cfg), argnums=(0, 1, 2)))(*problem)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(autodiff_grads)):
    np.testing.assert_allclose(g, r, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize('rec_act', ['hard_sigmoid', 'hard_sigmoid_keras3'])
def test_custom_backward_hard_sigmoid(problem, rec_act):
  params, carries, x = problem
  ref = jax.jit(jax.grad(_loss(ScanConfig(recurrent_activation=rec_act, backward='autodiff'))))(
      params, carries, x)
  got = jax.jit(jax.grad(_loss(ScanConfig(recurrent_activation=rec_act))))(params, carries, x)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(ref)):
    np.testing.assert_allclose(g, r, atol=2e-5, rtol=2e-5)


@pytest.mark.parametrize('backward', ['custom', 'autodiff'])
def test_check_grads_through_stack(backward):
  # float32 finite differences: small problem, loose tolerance; order 2 on autodiff only
  # (the custom VJP defines first derivatives).
  params = make_stack(jax.random.key(3), 2, (3, 2))
  carries = random_carry(jax.random.key(4), 1, (3, 2))
  x = jax.random.normal(jax.random.key(5), (1, 4, 2))
  f = jax.jit(lambda p, c, xx: _loss(ScanConfig(backward=backward))(p, c, xx))
  check_grads(f, (params, carries, x), order=1, modes=['rev'], atol=5e-2, rtol=5e-2, eps=1e-2)
  if backward == 'autodiff':
    check_grads(f, (params, carries, x), order=2, modes=['rev'], atol=5e-2, rtol=5e-2, eps=1e-2)


def test_no_retrace_on_second_chunk(problem):
  params, carries, x = problem
  traces = []

  @jax.jit
  def run(params, carries, x):
    traces.append(1)
    return recurrent.lstm_stack(params, carries, x)

  c, _ = run(params, carries, x)
  run(params, c, x + 1.0)
  assert len(traces) == 1


def test_bfloat16_matmuls_keep_f32_state(problem):
  params, carries, x = problem
  c, h = recurrent.lstm_stack(params, carries, x, ScanConfig(matmul_dtype='bfloat16'))
  _, ref = recurrent.lstm_stack(params, carries, x)
  assert h.dtype == jnp.float32 and c[0].c.dtype == jnp.float32
  np.testing.assert_allclose(h, ref, atol=5e-2)


def test_remat_matches(problem, autodiff_grads):
  got = jax.jit(jax.grad(_loss(ScanConfig(backward='autodiff', remat=True)), argnums=(0, 1, 2)))(
      *problem)
  for g, r in zip(jax.tree.leaves(got), jax.tree.leaves(autodiff_grads)):
    np.testing.assert_allclose(g, r, atol=1e-5)


def test_bad_options_are_named():
  with pytest.raises(ValueError, match='backward'):
    ScanConfig(backward='magic')
  with pytest.raises(ValueError, match='unroll'):
    ScanConfig(unroll=-1)
  with pytest.raises(ValueError, match='layout'):
    ScanConfig(layout='time')


def test_unroll_zero_picks_per_platform(monkeypatch):
  """0: on CPU, unroll 4 (forward) and 2 (reverse) only for training at batch 1 without small
  loops; on a GPU, 4 everywhere; an explicit value wins."""
  auto = ScanConfig()
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  monkeypatch.setenv('XLA_FLAGS', '--xla_cpu_multi_thread_eigen=false')
  assert auto.unroll_for(1, training=True) == 4
  assert auto.unroll_for(1, training=True, reverse=True) == 2
  assert auto.unroll_for(8, training=True, reverse=True) == 1
  assert ScanConfig(unroll=3).unroll_for(1, training=True, reverse=True) == 3
  assert auto.unroll_for(1, training=False) == 1
  assert auto.unroll_for(8, training=True) == 1
  assert ScanConfig(unroll=2).unroll_for(1, training=True) == 2
  # Small loops compiled as one function: unrolling only lengthens the function.
  monkeypatch.setenv('XLA_FLAGS', recurrent.small_loop_flags(''))
  assert auto.unroll_for(1, training=True) == auto.unroll_for(1, True, reverse=True) == 1
  assert ScanConfig(unroll=4).unroll_for(1, training=True) == 4
  monkeypatch.setenv('XLA_FLAGS', recurrent.small_loop_flags('', byte_threshold=1024))
  assert auto.unroll_for(1, training=True) == 4  # too small a threshold for these loops
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert {auto.unroll_for(b, training=t, reverse=r)
          for b in (1, 64) for t in (False, True) for r in (False, True)} == {4}
  assert ScanConfig(unroll=1).unroll_for(1, training=False) == 1


def test_loop_auto_runs_pallas_only_on_a_gpu_where_it_applies(monkeypatch):
  auto = ScanConfig()
  monkeypatch.setattr(jax, 'default_backend', lambda: 'cpu')
  assert not auto.uses_pallas(1, 64)
  assert ScanConfig(loop='pallas').uses_pallas(1, 64)  # explicit: the interpreter, for tests
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  assert auto.uses_pallas(1, 64) and auto.uses_pallas(128, 8)
  # 128 units: faster than the unrolled scan for inference, slower to train (docs/performance.md)
  assert not auto.uses_pallas(1, 128) and auto.uses_pallas(8, 128, training=False)
  assert not auto.uses_pallas(8, 256, training=False)
  assert not auto.uses_pallas(1, 48)  # Triton block shapes are powers of two
  assert not auto.uses_pallas(129, 64)
  for other in (ScanConfig(backward='autodiff'), ScanConfig(matmul_dtype='bfloat16'),
                ScanConfig(loop='scan'), ScanConfig(backward='autodiff', remat=True)):
    assert not other.uses_pallas(1, 64)
  with pytest.raises(ValueError, match="loop must be one of 'auto', 'scan', 'pallas', "
                     "'pallas_stack', 'cudnn'"):
    ScanConfig(loop='triton')


def test_loop_auto_never_picks_cudnn(monkeypatch):
  """Our cuDNN loop ran 2-17x slower than our best loop on an H200, so ``auto`` keeps the
  Pallas kernel and the scan; cuDNN runs only when asked for, and the log line says which
  loop each layer runs on."""
  from lstm_jax import cells
  auto, lstm = ScanConfig(), cells.get_cell('lstm')
  assert recurrent.describe_loops(lstm, (64, 16, 8), 2, 1, auto, True) == (
      '64 units: scan, 16 units: scan, 8 units: scan (train step, batch 1, cpu)')
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  for batch, units in ((1, 64), (8, 128), (64, 256), (16, 64)):
    for training in (True, False):
      assert 'cudnn' not in recurrent.describe_loops(lstm, (units,), 2, batch, auto, training)
  assert recurrent.describe_loops(lstm, (64,), 2, 1, ScanConfig(loop='cudnn'), True).startswith(
      '64 units: cudnn')
  assert recurrent.describe_loops(lstm, (64, 16, 8), 2, 1, auto, True) == (
      '64 units: pallas, 16 units: pallas, 8 units: pallas (train step, batch 1, gpu)')
  assert recurrent.describe_loops(lstm, (128, 128), 2, 8, auto, True).startswith('128 units: scan')
  assert recurrent.describe_loops(lstm, (128, 128), 2, 8, auto, False).startswith(
      '128 units: pallas')
  # The default job (32 streams x 32 units) stays on the Pallas kernel; wide on the scan.
  assert recurrent.describe_loops(lstm, (32,), 2, 32, auto, True).startswith('32 units: pallas')
  assert recurrent.describe_loops(lstm, (256,), 32, 64, auto, False).startswith('256 units: scan')
  # Another cell or an edited LSTM: never cuDNN; the Pallas kernel where it applies.
  cifg = cells.get_cell('cifg_lstm')
  assert 'cudnn' not in recurrent.describe_loops(cifg, (64,), 2, 1, auto, True)
  monkeypatch.setattr(cell_lib, 'lstm_update', lambda carry, gates, *a, **k: carry)
  assert recurrent.describe_loops(lstm, (64,), 2, 1, auto, True).startswith('64 units: pallas')
  stack = ScanConfig(loop='pallas_stack')
  assert recurrent.describe_loops(lstm, (64, 16), 2, 1, stack, True).startswith(
      '64 units: pallas_stack, 16 units: pallas_stack')
  gru = cells.get_cell('gru', 'reset_after=false')
  assert recurrent.describe_loops(gru, (64,), 2, 1, auto, True).startswith('64 units: scan')


@pytest.mark.parametrize('hoist,rec_act', [(False, 'sigmoid'), (True, 'hard_sigmoid')])
def test_feature_major_matches_loop(problem, hoist, rec_act):
  """The feature-major inference scan computes the reference function, carries included, and
  differentiates (autodiff through it) to the same gradients."""
  params, carries, x = problem
  ref_c, ref_h = python_loop(params, carries, x, rec_act)
  cfg = ScanConfig(layout='feature', hoist_input=hoist, recurrent_activation=rec_act)
  got_c, got_h = jax.jit(recurrent.lstm_stack, static_argnums=3)(params, carries, x, cfg)
  np.testing.assert_allclose(got_h, ref_h, atol=1e-5)
  for g, r in zip(got_c, ref_c):
    np.testing.assert_allclose(g.h, r.h, atol=1e-5)
    np.testing.assert_allclose(g.c, r.c, atol=1e-5)
  ref = jax.grad(_loss(ScanConfig(backward='autodiff', layout='batch', hoist_input=hoist,
                                  recurrent_activation=rec_act)), argnums=(0, 1, 2))
  got = jax.grad(_loss(dataclasses.replace(cfg, backward='autodiff')), argnums=(0, 1, 2))
  got_grads, ref_grads = jax.jit(got)(*problem), jax.jit(ref)(*problem)
  for g, r in zip(jax.tree.leaves(got_grads), jax.tree.leaves(ref_grads)):
    np.testing.assert_allclose(g, r, atol=2e-5, rtol=2e-5)


def test_layout_auto_is_feature_major_only_for_large_cpu_inference():
  auto = ScanConfig()
  on_cpu = jax.default_backend() == 'cpu'
  assert auto.feature_major(64, 256) == on_cpu
  assert auto.feature_major(8, 512) == on_cpu
  assert not auto.feature_major(1, 256)  # batch 1: the matrix-vector form is faster batch-major
  assert not auto.feature_major(64, 128)
  assert auto.feature_major(8, 128) == on_cpu  # the long workload's shape
  assert not auto.feature_major(16, 128)
  assert not auto.feature_major(8, 64)
  assert not ScanConfig(backward='autodiff').feature_major(64, 256)  # its forward trains too
  assert ScanConfig(layout='feature').feature_major(1, 4)
  assert not ScanConfig(layout='batch').feature_major(64, 256)


def test_compiler_options_lower_llvm_opt_only_when_latency_bound():
  on_cpu = jax.default_backend() == 'cpu'
  assert ScanConfig().compiler_options(1) == (
      {'xla_backend_optimization_level': 1} if on_cpu else None)
  assert ScanConfig().compiler_options(8) is None
