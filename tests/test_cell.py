"""The cell against a plain NumPy reference, for every activation option."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import cell as cell_lib


def numpy_lstm_step(kernel, recurrent, bias, h, c, x, rec_act):
  """Textbook LSTM, gates i, f, g, o, written independently of the library."""
  z = x @ kernel + h @ recurrent + bias[None]
  n = h.shape[-1]
  i, f, g, o = z[:, :n], z[:, n:2 * n], z[:, 2 * n:3 * n], z[:, 3 * n:]
  c = rec_act(f) * c + rec_act(i) * np.tanh(g)
  h = rec_act(o) * np.tanh(c)
  return h, c


NP_ACTS = {
    'sigmoid': lambda v: 1.0 / (1.0 + np.exp(-v)),
    'hard_sigmoid': lambda v: np.clip(0.2 * v + 0.5, 0, 1),
    'hard_sigmoid_keras2': lambda v: np.clip(0.2 * v + 0.5, 0, 1),
    'hard_sigmoid_keras3': lambda v: np.clip(v / 6 + 0.5, 0, 1),
}


@pytest.mark.parametrize('rec_act', sorted(NP_ACTS))
@pytest.mark.parametrize('projected', [False, True])
def test_cell_matches_numpy(rec_act, projected, rng):
  b, c_in, hid = 3, 5, 7
  params = cell_lib.init_lstm_params(jax.random.key(1), c_in, hid)
  params = params._replace(bias=jnp.asarray(rng.normal(size=4 * hid), jnp.float32))
  h = rng.normal(size=(b, hid)).astype(np.float32)
  c = rng.normal(size=(b, hid)).astype(np.float32)
  x = 3 * rng.normal(size=(b, c_in)).astype(np.float32)
  inp = x @ np.asarray(params.kernel) + np.asarray(params.bias)[None] if projected else x
  carry, out = cell_lib.lstm_cell(params, cell_lib.LSTMCarry(jnp.asarray(h), jnp.asarray(c)),
                                  jnp.asarray(inp), recurrent_activation=rec_act,
                                  projected=projected)
  h_ref, c_ref = numpy_lstm_step(*map(np.asarray, params), h, c, x, NP_ACTS[rec_act])
  np.testing.assert_allclose(carry.h, h_ref, atol=2e-6)
  np.testing.assert_allclose(carry.c, c_ref, atol=2e-6)
  np.testing.assert_array_equal(out, carry.h)


def test_hard_sigmoid_slopes():
  x = jnp.asarray([-10.0, -1.0, 0.0, 1.0, 10.0])
  np.testing.assert_allclose(cell_lib.hard_sigmoid_keras2(x), [0, 0.3, 0.5, 0.7, 1], atol=1e-7)
  np.testing.assert_allclose(cell_lib.hard_sigmoid_keras3(x), [0, 1 / 3, 0.5, 2 / 3, 1],
                             atol=1e-7)


def test_sigmoid_through_tanh_is_exact():
  z = jnp.linspace(-30, 30, 4 * 101).reshape(1, -1)
  gates = cell_lib.activate_gates(z)
  i, f, g, o = jnp.split(z, 4, axis=-1)
  ref = jnp.concatenate([jax.nn.sigmoid(i), jax.nn.sigmoid(f), jnp.tanh(g), jax.nn.sigmoid(o)], -1)
  np.testing.assert_allclose(gates, ref, atol=1e-6)


def test_init_conventions():
  p = cell_lib.init_lstm_params(jax.random.key(0), 3, 4, unit_forget_bias=True)
  assert p.kernel.shape == (3, 16) and p.recurrent.shape == (4, 16) and p.bias.shape == (16,)
  np.testing.assert_array_equal(p.bias, [0] * 4 + [1] * 4 + [0] * 8)
  # Keras' orthogonal (H, 4H): rows orthonormal.
  np.testing.assert_allclose(p.recurrent @ p.recurrent.T, np.eye(4), atol=1e-5)
  p0 = cell_lib.init_lstm_params(jax.random.key(0), 3, 4, unit_forget_bias=False)
  np.testing.assert_array_equal(p0.bias, np.zeros(16))


def test_unknown_activation_is_named():
  with pytest.raises(ValueError, match='hard_tanh'):
    cell_lib.check_activations('hard_tanh', 'tanh')
