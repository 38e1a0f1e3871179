"""The LSTMRegressor contract."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lstm_jax
from lstm_jax import recurrent


def test_contract_shapes_and_carry_continuity():
  model = lstm_jax.LSTMRegressor(lstm_sizes=(8, 4, 3), head_sizes=(16, 4), out_size=2)
  carry = model.initialize_carry(3)
  assert [(c.h.shape, c.c.shape) for c in carry] == [((3, n), (3, n)) for n in (8, 4, 3)]
  assert all(float(jnp.abs(c.h).sum() + jnp.abs(c.c).sum()) == 0 for c in carry)
  x = jax.random.normal(jax.random.key(1), (3, 20, 5))
  variables = model.init(jax.random.key(0), carry, x)
  apply = jax.jit(model.apply)
  new_carry, y = apply(variables, carry, x)
  assert y.shape == (3, 20, 2) and y.dtype == jnp.float32
  c1, y1 = apply(variables, carry, x[:, :8])
  c2, y2 = apply(variables, c1, x[:, 8:])
  np.testing.assert_allclose(jnp.concatenate([y1, y2], 1), y, atol=1e-5)
  np.testing.assert_allclose(c2[-1].h, new_carry[-1].h, atol=1e-6)


def test_param_tree_is_plain_arrays():
  model = lstm_jax.LSTMRegressor(lstm_sizes=(4,), head_sizes=(3,))
  variables = model.init(jax.random.key(0), model.initialize_carry(1), jnp.zeros((1, 2, 2)))
  p = variables['params']
  assert set(p) == {'lstm_0', 'head_0', 'out'}
  assert p['lstm_0']['kernel'].shape == (2, 16) and p['lstm_0']['recurrent'].shape == (4, 16)
  np.testing.assert_array_equal(p['lstm_0']['bias'], [0] * 4 + [1] * 4 + [0] * 8)


def test_head_inputs_see_the_witnesses():
  # With head_inputs the head is fed the input directly: the output changes with x at t even
  # when the LSTM weights are zero.
  model = lstm_jax.LSTMRegressor(lstm_sizes=(4,), head_sizes=(), head_inputs=True)
  carry = model.initialize_carry(1)
  x = jnp.ones((1, 3, 2))
  v = model.init(jax.random.key(0), carry, x)
  v = jax.tree_util.tree_map_with_path(
      lambda path, a: jnp.zeros_like(a) if 'lstm_0' in str(path) else a, v)
  _, y1 = model.apply(v, carry, x)
  _, y2 = model.apply(v, carry, 2 * x)
  assert not np.allclose(y1, y2)
  assert v['params']['out']['kernel'].shape == (4 + 2, 1)


def test_leaky_relu_output_cannot_go_negative():
  # The seed's output LeakyReLU: negative targets are reachable only at slope 0.01.
  model = lstm_jax.LSTMRegressor(lstm_sizes=(4,), head_sizes=(4,), output_activation='leaky_relu')
  carry = model.initialize_carry(1)
  x = jax.random.normal(jax.random.key(3), (1, 50, 2))
  v = model.init(jax.random.key(0), carry, x)
  v['params']['out']['bias'] = jnp.full_like(v['params']['out']['bias'], -10.0)
  _, y = model.apply(v, carry, x)
  assert float(y.max()) < 0 and float(y.min()) > -0.2


def test_autodiff_and_custom_backward_models_agree():
  x = jax.random.normal(jax.random.key(1), (2, 16, 3))
  grads = []
  for backward in ('custom', 'autodiff'):
    model = lstm_jax.LSTMRegressor(lstm_sizes=(5, 3), head_sizes=(4,),
                                   scan=recurrent.ScanConfig(backward=backward))
    carry = model.initialize_carry(2)
    v = model.init(jax.random.key(0), carry, x)
    grads.append(jax.grad(lambda v: jnp.sum(model.apply(v, carry, x)[1] ** 2))(v))
  for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1])):
    np.testing.assert_allclose(a, b, atol=1e-5, rtol=1e-5)


def test_bad_carry_and_input_are_named():
  model = lstm_jax.LSTMRegressor(lstm_sizes=(4, 2), head_sizes=())
  x = jnp.zeros((1, 3, 2))
  with pytest.raises(ValueError, match='carry has 1 layers, the model 2'):
    model.init(jax.random.key(0), model.initialize_carry(1)[:1], x)
  with pytest.raises(ValueError, match=r'x must be \(batch, time, channels\)'):
    model.init(jax.random.key(0), model.initialize_carry(1), x[0])
