"""Weight import: outputs and final carries equal the peer libraries' within 1e-5 (float32).

Each peer is built with random weights and run from a random initial state over several
lengths; ``lstm_jax.interop`` imports it and runs our cell stack on the same input.
"""
import os

os.environ.setdefault('KERAS_BACKEND', 'jax')  # before any keras import

import flax.linen as nn  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from lstm_jax import interop  # noqa: E402
from lstm_jax import model as model_lib  # noqa: E402

ATOL = 1e-5
LENGTHS = (1, 7, 33)
SHORT_LENGTHS = (1, 33)  # for the variants of a peer already tested at LENGTHS
B, C, H = 3, 4, 5


def assert_close(got, want, what):
  got, want = np.asarray(got), np.asarray(want)
  assert got.shape == want.shape, (what, got.shape, want.shape)
  err = float(np.max(np.abs(got - want))) if got.size else 0.0
  assert err <= ATOL, f'{what}: max |diff| {err:.2e} > {ATOL}'


def inputs(rng, t, layers=2):
  x = rng.normal(size=(B, t, C)).astype(np.float32)
  h0 = (0.5 * rng.normal(size=(layers, B, H))).astype(np.float32)
  c0 = (0.5 * rng.normal(size=(layers, B, H))).astype(np.float32)
  return x, h0, c0


# --------------------------------------------------------------------------- PyTorch


@pytest.fixture(scope='module')
def torch():
  return pytest.importorskip('torch')


@pytest.mark.parametrize('t', LENGTHS)
def test_torch_lstm_two_layers(torch, rng, t):
  torch.manual_seed(t)
  peer = torch.nn.LSTM(C, H, num_layers=2, batch_first=True)
  x, h0, c0 = inputs(rng, t)
  with torch.no_grad():
    y, (h_n, c_n) = peer(torch.from_numpy(x), (torch.from_numpy(h0), torch.from_numpy(c0)))
  imported = interop.from_torch_lstm(peer)
  carries, h = imported.run(interop.torch_state_to_carries(h0, c0), x)
  assert_close(h, y.numpy(), 'outputs')
  got_h, got_c = interop.carries_to_torch_state(carries)
  assert_close(got_h, h_n.numpy(), 'final h')
  assert_close(got_c, c_n.numpy(), 'final c')


@pytest.mark.parametrize('t', LENGTHS)
def test_torch_gru_two_layers(torch, rng, t):
  torch.manual_seed(10 + t)
  peer = torch.nn.GRU(C, H, num_layers=2, batch_first=True)
  x, h0, _ = inputs(rng, t)
  with torch.no_grad():
    y, h_n = peer(torch.from_numpy(x), torch.from_numpy(h0))
  imported = interop.from_torch_gru(peer)
  carries, h = imported.run(interop.torch_state_to_carries(h0), x)
  assert_close(h, y.numpy(), 'outputs')
  assert_close(interop.carries_to_torch_state(carries), h_n.numpy(), 'final h')


def test_torch_bidirectional_is_refused(torch):
  with pytest.raises(ValueError, match='bidirectional'):
    interop.from_torch_lstm(torch.nn.LSTM(C, H, bidirectional=True))


def test_imported_params_load_into_regressor(torch, rng):
  """param_tree() slots into LSTMRegressor(cell=...): its LSTM layers compute the peer's."""
  torch.manual_seed(0)
  peer = torch.nn.LSTM(C, H, num_layers=1, batch_first=True)
  imported = interop.from_torch_lstm(peer)
  model = model_lib.LSTMRegressor(lstm_sizes=(H,), head_sizes=(), out_size=H,
                                  output_activation='linear')
  x = rng.normal(size=(B, 6, C)).astype(np.float32)
  params = jax.jit(model.init)(jax.random.key(0), model.initialize_carry(B), x)['params']
  params = dict(params, **imported.param_tree())
  # An identity head exposes the LSTM output.
  params['out'] = {'kernel': jnp.eye(H), 'bias': jnp.zeros(H)}
  _, y = model.apply({'params': params}, model.initialize_carry(B), x)
  with torch.no_grad():
    want, _ = peer(torch.from_numpy(x))
  assert_close(y, want.numpy(), 'regressor outputs')


# --------------------------------------------------------------------------- Keras 3


@pytest.fixture(scope='module')
def keras():
  keras = pytest.importorskip('keras')
  if keras.backend.backend() != 'jax':
    pytest.skip('keras is not on the JAX backend in this process')
  return keras


def keras_stack(keras, rng, make_layer):
  """Two stacked Keras layers, built, then given random weights."""
  layers = [make_layer() for _ in range(2)]
  x = np.zeros((B, 2, C), np.float32)
  for layer in layers:
    with jax.numpy_rank_promotion('allow'):  # Keras' own code relies on rank promotion
      x = layer(x)[0]
    layer.set_weights([(0.4 * rng.normal(size=w.shape)).astype(np.float32)
                       for w in layer.get_weights()])
  return layers


def run_keras_stack(layers, x, states):
  y, finals = x, []
  for layer, state in zip(layers, states):
    with jax.numpy_rank_promotion('allow'):
      y, *final = layer(y, initial_state=state)
    finals.append(final)
  return np.asarray(y), [[np.asarray(f) for f in final] for final in finals]


@pytest.mark.parametrize('rec_act', ['sigmoid', 'hard_sigmoid'])
def test_keras_lstm_two_layers(keras, rng, rec_act):
  layers = keras_stack(keras, rng, lambda: keras.layers.LSTM(
      H, return_sequences=True, return_state=True, recurrent_activation=rec_act))
  imported = interop.from_keras_lstm(layers)
  want_act = 'hard_sigmoid_keras3' if rec_act == 'hard_sigmoid' else 'sigmoid'
  assert imported.scan.recurrent_activation == want_act
  for t in LENGTHS if rec_act == 'sigmoid' else SHORT_LENGTHS:
    x, h0, c0 = inputs(rng, t)
    states = [[h0[k], c0[k]] for k in range(2)]
    y, finals = run_keras_stack(layers, x, states)
    carries, h = imported.run(interop.keras_state_to_carries(states), x)
    assert_close(h, y, f'outputs T={t}')
    for k in range(2):
      assert_close(carries[k].h, finals[k][0], f'final h, layer {k}, T={t}')
      assert_close(carries[k].c, finals[k][1], f'final c, layer {k}, T={t}')


@pytest.mark.parametrize('reset_after,rec_act', [(True, 'sigmoid'), (False, 'sigmoid'),
                                                 (True, 'hard_sigmoid')])
def test_keras_gru_two_layers(keras, rng, reset_after, rec_act):
  layers = keras_stack(keras, rng, lambda: keras.layers.GRU(
      H, return_sequences=True, return_state=True, reset_after=reset_after,
      recurrent_activation=rec_act))
  imported = interop.from_keras_gru(layers)
  assert imported.cell.reset_after == reset_after
  for t in LENGTHS if reset_after and rec_act == 'sigmoid' else SHORT_LENGTHS:
    x, h0, _ = inputs(rng, t)
    states = [[h0[k]] for k in range(2)]
    y, finals = run_keras_stack(layers, x, states)
    carries, h = imported.run(interop.keras_state_to_carries(states), x)
    assert_close(h, y, f'outputs T={t}')
    for k in range(2):
      assert_close(carries[k].h, finals[k][0], f'final h, layer {k}, T={t}')


# --------------------------------------------------------------------------- Flax linen


def flax_peer(cell, rng, t):
  """A Flax cell with random weights (biases too), run by nn.RNN from a random carry."""
  x, h0, c0 = inputs(rng, t, layers=1)
  rnn = nn.RNN(cell, return_carry=True)
  carry = (jnp.asarray(c0[0]), jnp.asarray(h0[0])) if isinstance(
      cell, (nn.LSTMCell, nn.OptimizedLSTMCell)) else jnp.asarray(h0[0])
  variables = rnn.init(jax.random.key(t), x, initial_carry=carry)
  leaves, tree = jax.tree.flatten(variables)
  keys = jax.random.split(jax.random.key(100 + t), len(leaves))
  variables = jax.tree.unflatten(tree, [0.5 * jax.random.normal(k, v.shape)
                                        for k, v in zip(keys, leaves)])
  final, y = rnn.apply(variables, x, initial_carry=carry)
  return variables['params']['cell'], x, carry, final, y


@pytest.mark.parametrize('cell_cls,t', [(nn.LSTMCell, t) for t in LENGTHS] +
                         [(nn.OptimizedLSTMCell, t) for t in SHORT_LENGTHS])
def test_flax_lstm_cells(rng, t, cell_cls):
  params, x, carry, final, y = flax_peer(cell_cls(H), rng, t)
  imported = interop.from_flax_lstm(params)
  (got,), h = imported.run([interop.flax_carry_to_carry(carry)], x)
  assert_close(h, y, 'outputs')
  want_c, want_h = final
  assert_close(got.h, want_h, 'final h')
  assert_close(got.c, want_c, 'final c')
  assert_close(interop.carry_to_flax_carry(got)[0], want_c, 'carry round trip')


@pytest.mark.parametrize('t', LENGTHS)
def test_flax_gru_cell(rng, t):
  params, x, carry, final, y = flax_peer(nn.GRUCell(H), rng, t)
  imported = interop.from_flax_gru(params)
  (got,), h = imported.run([interop.flax_carry_to_carry(carry)], x)
  assert_close(h, y, 'outputs')
  assert_close(got.h, final, 'final h')
