"""The cell math lives in one place: an edit of ``lstm_jax.cell.lstm_update`` or
``activate_gates`` reaches the forward, the derived custom backward, the Pallas loop and
streaming, and an edit made after a first compile takes effect in a new model."""
import functools

import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import optax
import pytest

from lstm_jax import cell as cell_lib
from lstm_jax import cells
from lstm_jax import recurrent
from lstm_jax import train
from lstm_jax.cell import LSTMCarry
from lstm_jax.model import LSTMRegressor
from lstm_jax.recurrent import ScanConfig

SIZES = (8, 4)
LOOPS = ['scan', 'pallas', 'pallas_stack']  # the Pallas loops: the interpreter off a GPU


def coupled_forget(carry, gates, activation='tanh', axis=-1):
  """c = f c + (1 - f) g: the input gate is not used."""
  _, f, g, o = jnp.split(gates, 4, axis=axis)
  c = f * carry.c + (1.0 - f) * g
  h = o * cell_lib.ACTIVATIONS[activation](c)
  return LSTMCarry(h.astype(carry.h.dtype), c.astype(carry.c.dtype))


def steep_gates(z, recurrent_activation='sigmoid', activation='tanh', axis=-1):
  """Gates through sigmoid(2 z), another slope."""
  del recurrent_activation
  i, f, g, o = jnp.split(z, 4, axis=axis)
  sig = lambda v: jax.nn.sigmoid(2.0 * v)
  return jnp.concatenate([sig(i), sig(f), cell_lib.ACTIVATIONS[activation](g), sig(o)], axis)


EDITS = {'coupled_forget': ('lstm_update', coupled_forget),
         'steep_gates': ('activate_gates', steep_gates)}


def edited_step(edit, params, carry, x_t):
  """The edited LSTM step written out here, apart from the library."""
  z = x_t @ params.kernel + carry.h @ params.recurrent + params.bias[None]
  zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
  slope = 2.0 if edit == 'steep_gates' else 1.0
  i, f, o = (jax.nn.sigmoid(slope * v) for v in (zi, zf, zo))
  g = jnp.tanh(zg)
  c = f * carry.c + ((1.0 - f) if edit == 'coupled_forget' else i) * g
  h = o * jnp.tanh(c)
  return LSTMCarry(h, c)


def _model(scan):
  return LSTMRegressor(lstm_sizes=SIZES, head_sizes=(4,), out_size=1, scan=scan)


@pytest.fixture(scope='module')
def problem():
  x = jax.random.normal(jax.random.key(0), (2, 8, 3))
  y = jax.random.normal(jax.random.key(1), (2, 8, 1))
  carry = tuple(LSTMCarry(0.3 * jax.random.normal(jax.random.key(2 + k), (2, n)),
                          0.3 * jax.random.normal(jax.random.key(5 + k), (2, n)))
                for k, n in enumerate(SIZES))
  params = jax.jit(_model(ScanConfig()).init)(jax.random.key(9), carry, x)['params']
  params = jax.tree.map(lambda p: p + 0.2 * jax.random.normal(jax.random.key(11), p.shape),
                        params)
  return params, carry, x, y


def _loss_and_grads(scan, params, carry, x, y):
  """The default training path's loss and gradient (``train.loss_fn``, two BPTT segments)."""
  loss = functools.partial(train.loss_fn, _model(scan))
  (value, _), grads = jax.jit(jax.value_and_grad(loss, has_aux=True), static_argnums=4)(
      params, carry, x, y, 4)
  return value, grads


def _relative(got, want):
  return cells._relative_error(got, want)  # pylint: disable=protected-access


@pytest.mark.parametrize('loop', LOOPS)
@pytest.mark.parametrize('edit', sorted(EDITS))
def test_edit_reaches_the_training_gradient(problem, monkeypatch, edit, loop):
  """Loss and gradients of the default training path (custom backward) equal JAX's autodiff
  of the edited forward, on the scan and the Pallas loop (interpreter off a GPU)."""
  params, carry, x, y = problem
  before = _loss_and_grads(ScanConfig(loop=loop), params, carry, x, y)
  monkeypatch.setattr(cell_lib, *EDITS[edit])
  got = _loss_and_grads(ScanConfig(loop=loop), params, carry, x, y)
  want = _loss_and_grads(ScanConfig(backward='autodiff', loop='scan'), params, carry, x, y)
  assert _relative(before, want) > 1e-3  # the edit changed the function
  assert _relative(got, want) <= 1e-5


@pytest.mark.parametrize('loop', ['scan', 'pallas'])  # one layer: pallas_stack is pallas
@pytest.mark.parametrize('edit', sorted(EDITS))
def test_edited_layer_is_the_edited_math(monkeypatch, edit, loop):
  """The layer computes the equations as written out in this file, and its derived backward
  passes float64 ``check_grads``."""
  monkeypatch.setattr(cell_lib, *EDITS[edit])
  cell = cells.get_cell('lstm')
  with jax.enable_x64(True):
    params, carry, x = jax.tree.map(
        lambda a: jnp.asarray(a, jnp.float64),
        cells._random_problem(cell, 2, 5, 3, 4, seed=1))  # pylint: disable=protected-access
    scan = ScanConfig(loop=loop)
    layer = jax.jit(lambda p, c, xx: recurrent.lstm_layer(p, c, xx, scan))
    got_carry, got_h = layer(params, carry, x)
    want_carry, outs = carry, []
    for t in range(x.shape[1]):
      want_carry = edited_step(edit, params, want_carry, x[:, t])
      outs.append(want_carry.h)
    np.testing.assert_allclose(got_h, jnp.stack(outs, axis=1), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_carry.c, want_carry.c, rtol=1e-12, atol=1e-12)
    check_grads(layer, (params, carry, x), order=1, modes=('rev',), atol=1e-6, rtol=1e-6)


def test_edit_after_a_first_compile_takes_effect_in_a_new_model(problem, monkeypatch):
  """A train step compiled before the edit; the same configuration built again after it
  trains the edited cell (nothing traced before the edit is reused), and so do streaming
  predictions."""
  params, carry, x, y = problem
  optimizer = optax.identity()  # the step scales by -lr itself

  def one_step():
    model = _model(ScanConfig())
    state = train.TrainState(jax.tree.map(jnp.array, params), optimizer.init(params),
                             jax.tree.map(jnp.array, carry), jnp.zeros((), jnp.int32))
    step = train.make_train_step(model, optimizer, 4)
    new_state, loss = step(state, x[None], y[None], 0, 0.1)
    return loss, new_state.params

  def predict():
    model = _model(ScanConfig())
    return jax.jit(model.apply)({'params': params}, carry, x)[1]

  before = one_step(), predict()
  monkeypatch.setattr(cell_lib, *EDITS['coupled_forget'])
  after = one_step(), predict()
  want_loss, want_grads = _loss_and_grads(ScanConfig(backward='autodiff'), params, carry, x, y)
  want_params = jax.tree.map(lambda p, g: p - 0.1 * g, params, want_grads)
  assert _relative(before[0], after[0]) > 1e-3
  assert _relative(after[0], (want_loss, want_params)) <= 1e-5
  assert _relative(before[1], after[1]) > 1e-3


def test_streaming_programs_follow_an_edit(problem, monkeypatch):
  """The predictor's compile cache is keyed on the cell math too."""
  from lstm_jax import inference
  model = _model(ScanConfig())
  key = model.get_cell().math_key()
  first = inference._inference_programs(model, 2, key)  # pylint: disable=protected-access
  monkeypatch.setattr(cell_lib, *EDITS['steep_gates'])
  edited_key = model.get_cell().math_key()
  assert edited_key != key
  assert inference._inference_programs(model, 2, edited_key) is not first  # pylint: disable=protected-access


@pytest.mark.parametrize('edit', ['none'] + sorted(EDITS))
def test_kernels_lower_to_triton(monkeypatch, edit):
  """The Pallas kernels, tracing the (edited) update and its ``jax.vjp``, lower to Triton for
  a CUDA target on this CPU machine: the check that runs without a GPU."""
  from lstm_jax import pallas_loop
  if edit != 'none':
    monkeypatch.setattr(cell_lib, *EDITS[edit])
  monkeypatch.setattr(pallas_loop, 'on_gpu', lambda: True)
  cell, n, steps = cells.get_cell('lstm'), 16, 8
  fp = recurrent.Fused(jnp.ones((2, 4 * n)), jnp.ones((n, 4 * n)), jnp.ones(4 * n), ())
  carry = LSTMCarry(jnp.ones((1, n)), jnp.ones((1, n)))
  stacked = LSTMCarry(jnp.ones((steps, 1, n)), jnp.ones((steps, 1, n)))
  scan = ScanConfig(loop='pallas')

  def forward(fp, carry, x):
    return pallas_loop.forward(cell, fp, carry, x, scan, True)

  def backward(fp, dh, prev, zs, d_carry):
    return pallas_loop.backward(cell, fp, scan, dh, prev, zs, d_carry)

  for f, args in [(forward, (fp, carry, jnp.ones((steps, 1, 2)))),
                  (backward, (fp, jnp.ones((steps, 1, n)), stacked,
                              jnp.ones((steps, 1, 4 * n)), carry))]:
    text = jax.jit(f).trace(*args).lower(lowering_platforms=('cuda',)).as_text()
    assert 'triton' in text.lower()


def test_whole_stack_train_step_lowers_to_triton(monkeypatch):
  """The seed's 64/16/8 stack on ``loop='pallas_stack'``, its cell math edited: the gradient
  of a loss through the model lowers for a CUDA target with one Triton kernel forward and one
  backward (the per-layer kernels' lowering is checked under every edit above)."""
  from lstm_jax import pallas_loop
  monkeypatch.setattr(cell_lib, *EDITS['coupled_forget'])
  x, y = jnp.ones((1, 16, 2)), jnp.ones((1, 16, 1))
  model = LSTMRegressor(lstm_sizes=(64, 16, 8), scan=ScanConfig(loop='pallas_stack'))
  carry = model.initialize_carry(1)
  params = model.init(jax.random.key(3), carry, x)['params']  # on CPU: the interpreter
  monkeypatch.setattr(pallas_loop, 'on_gpu', lambda: True)
  loss = lambda p, c: jnp.mean((model.apply({'params': p}, c, x)[1] - y) ** 2)
  text = jax.jit(jax.grad(loss)).trace(params, carry).lower(lowering_platforms=('cuda',))
  assert text.as_text().count('custom_call @__gpu$xla.gpu.triton') == 2
