"""``loop='cudnn'``: the packing of our weights into cuDNN's layout, checked on CPU against
``jax.experimental.rnn.lstm_ref`` and our scan, and what the loop refuses."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import cell as cell_lib
from lstm_jax import cells
from lstm_jax import cudnn_loop
from lstm_jax import recurrent
from lstm_jax.cell import LSTMCarry
from lstm_jax.recurrent import ScanConfig


def _problem(batch=3, steps=11, in_size=5, hidden=6):
  cell = cells.get_cell('lstm')
  params, carry, x = cells._random_problem(cell, batch, steps, in_size, hidden, seed=2)  # pylint: disable=protected-access
  return params, carry, x


def test_packing_round_trips():
  params, _, x = _problem()
  packed = cudnn_loop.pack(params)
  from jax.experimental import rnn
  assert packed.shape == (rnn.get_num_params_in_lstm(x.shape[-1], 6, 1, False),)
  back = cudnn_loop.unpack(packed, x.shape[-1], 6)
  for got, want in zip(back, params):
    np.testing.assert_array_equal(got, want)


def test_packed_weights_run_lstm_ref_as_our_scan():
  """lstm_ref on the packed weights == our scan (carry in and out, so chunks continue) ==
  two chunks of lstm_ref with the carry passed on."""
  params, carry, x = _problem()
  want_carry, want_h = jax.jit(recurrent.lstm_layer)(params, carry, x)
  got_carry, got_h = cudnn_loop.reference_layer(params, carry, x)
  np.testing.assert_allclose(got_h, want_h, atol=2e-6)
  np.testing.assert_allclose(got_carry.h, want_carry.h, atol=2e-6)
  np.testing.assert_allclose(got_carry.c, want_carry.c, atol=2e-6)
  c1, h1 = cudnn_loop.reference_layer(params, carry, x[:, :4])
  c2, h2 = cudnn_loop.reference_layer(params, c1, x[:, 4:])
  np.testing.assert_allclose(jnp.concatenate([h1, h2], axis=1), want_h, atol=2e-6)
  np.testing.assert_allclose(c2.c, want_carry.c, atol=2e-6)


def test_gradients_through_the_packing_match_our_backward():
  """Gradients with respect to our parameters through pack + lstm_ref equal our custom
  backward's (on a GPU, cuDNN's own VJP replaces lstm_ref's autodiff)."""
  params, carry, x = _problem(steps=7)

  def loss(layer):
    def f(p, c, xx):
      new, h = layer(p, c, xx)
      return jnp.sum(jnp.sin(h)) + jnp.sum(new.c * new.h)
    return f

  want = jax.jit(jax.grad(loss(recurrent.lstm_layer), argnums=(0, 1, 2)))(params, carry, x)
  got = jax.jit(jax.grad(loss(cudnn_loop.reference_layer), argnums=(0, 1, 2)))(params, carry, x)
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    np.testing.assert_allclose(g, w, atol=2e-5, rtol=2e-5)


def test_cudnn_is_refused_where_it_cannot_follow(monkeypatch):
  params, carry, x = _problem()
  cfg = ScanConfig(loop='cudnn')
  if jax.default_backend() == 'cpu':
    with pytest.raises(ValueError, match="loop='cudnn': needs a CUDA GPU"):
      recurrent.lstm_layer(params, carry, x, cfg)
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')

  def edited(carry, gates, activation='tanh', axis=-1):
    _, f, g, o = jnp.split(gates, 4, axis=axis)
    c = f * carry.c + (1.0 - f) * g
    return LSTMCarry(o * jnp.tanh(c), c)

  with pytest.raises(ValueError, match='hard_sigmoid'):
    recurrent.lstm_layer(params, carry, x, ScanConfig(loop='cudnn',
                                                      recurrent_activation='hard_sigmoid'))
  gru, gparams, gcarry, gx = (cells.get_cell('gru'),) + cells._random_problem(  # pylint: disable=protected-access
      cells.get_cell('gru'), 2, 5, 3, 4, seed=0)
  with pytest.raises(ValueError, match="stock LSTM only, not cell 'gru'"):
    gru.layer(gparams, gcarry, gx, cfg)
  monkeypatch.setattr(cell_lib, 'lstm_update', edited)
  with pytest.raises(ValueError, match='edited'):
    recurrent.lstm_layer(params, carry, x, cfg)
  with pytest.raises(ValueError, match='backward'):
    ScanConfig(loop='cudnn', backward='autodiff')
