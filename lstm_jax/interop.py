"""Weight import from PyTorch, Keras 3 and Flax recurrent layers, with their states.

Each ``from_*`` function returns an ``Imported``: the cell (``lstm`` or ``gru``), one parameter
NamedTuple per layer, and the ``ScanConfig`` holding the peer's activations. Run it with
``imported.run(carries, x_BxTxC)`` or put its layers in an ``LSTMRegressor``'s parameter tree
with ``imported.param_tree()``. State converters map the peer's initial/final states to our
carries (one per layer; LSTM ``(h, c)``, GRU ``(h,)``) and back.

Conventions of the peers (checked against them in tests/test_interop.py):

* PyTorch ``nn.LSTM``: ``weight_ih_l{k}`` (4H, C), gates i, f, g, o, two biases (imported as
  their sum); state ``(h_LxBxH, c_LxBxH)``.
* PyTorch ``nn.GRU``: gates r, z, n (our order), ``b_hh`` is the recurrent bias (reset after).
* Keras 3 ``LSTM``: ``kernel`` (C, 4H) gates i, f, c, o, one bias; ``hard_sigmoid`` is Keras 3's
  ``relu6(x + 3) / 6`` (``hard_sigmoid_keras3`` here); state ``[h, c]``.
* Keras 3 ``GRU``: gates z, r, h (reordered to r, z, n); ``reset_after=True`` has a bias of shape
  (2, 3H): input and recurrent.
* Flax ``LSTMCell`` / ``OptimizedLSTMCell``: dense ``ii, if, ig, io`` (no bias) and ``hi, hf,
  hg, ho`` (with bias); carry ``(c, h)``.
* Flax ``GRUCell``: dense ``ir, iz, in`` (with bias), ``hr, hz`` (no bias), ``hn`` (with bias).

No peer library is imported here: the functions read arrays from the objects given.
"""
from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import cells as cells_lib
from lstm_jax.cell import LSTMCarry, LSTMParams
from lstm_jax.recurrent import ScanConfig


class Imported(NamedTuple):
  """A stack of imported recurrent layers."""
  cell: cells_lib.Cell
  params: tuple  # one cell.Params per layer
  scan: ScanConfig

  def run(self, carries: Sequence, x_BxTxC):
    """``-> (carries, h_BxTxH)`` of the last layer (jitted; compiled once per shape)."""
    return _run_stack(self.cell, self.params, tuple(carries),
                      jnp.asarray(x_BxTxC, jnp.float32), self.scan)

  def zero_carries(self, batch_size: int) -> tuple:
    return tuple(self.cell.zero_carry(batch_size, p.recurrent.shape[0]) for p in self.params)

  def param_tree(self) -> dict:
    """The layers as ``LSTMRegressor(cell=...)`` names them: ``{'{cell}_{k}': {name: array}}``."""
    return {f'{self.cell.name}_{k}': {n: v for n, v in p._asdict().items() if v is not None}
            for k, p in enumerate(self.params)}


@functools.partial(jax.jit, static_argnums=(0, 4))
def _run_stack(cell, params, carries, x_BxTxC, scan):
  return cell.stack(params, carries, x_BxTxC, scan)


def _f32(a) -> jnp.ndarray:
  if hasattr(a, 'detach'):  # a torch tensor
    a = a.detach().cpu().numpy()
  return jnp.asarray(np.asarray(a, np.float32))


def _check_layers(layers: Sequence, hidden_sizes: Sequence[int], in_sizes: Sequence[int]):
  for k in range(1, len(layers)):
    if in_sizes[k] != hidden_sizes[k - 1]:
      raise ValueError(f'layer {k} takes {in_sizes[k]} inputs but layer {k - 1} gives '
                       f'{hidden_sizes[k - 1]}')


# --------------------------------------------------------------------------- PyTorch


def _torch_layers(module, kind: str):
  if getattr(module, 'bidirectional', False):
    raise ValueError(f'{kind}: bidirectional layers are not supported')
  if getattr(module, 'proj_size', 0):
    raise ValueError(f'{kind}: proj_size > 0 is not supported')
  out = []
  for k in range(module.num_layers):
    w_ih = _f32(getattr(module, f'weight_ih_l{k}'))
    w_hh = _f32(getattr(module, f'weight_hh_l{k}'))
    if module.bias:
      b_ih = _f32(getattr(module, f'bias_ih_l{k}'))
      b_hh = _f32(getattr(module, f'bias_hh_l{k}'))
    else:
      b_ih = b_hh = jnp.zeros((w_ih.shape[0],), jnp.float32)
    out.append((w_ih.T, w_hh.T, b_ih, b_hh))
  return out


def from_torch_lstm(module) -> Imported:
  """A PyTorch ``nn.LSTM`` (any ``num_layers``; the two biases are summed)."""
  layers = _torch_layers(module, 'nn.LSTM')
  params = tuple(LSTMParams(k, r, b_ih + b_hh) for k, r, b_ih, b_hh in layers)
  return Imported(cells_lib.get_cell('lstm'), params, ScanConfig())


def from_torch_gru(module) -> Imported:
  """A PyTorch ``nn.GRU`` (gates r, z, n; reset gate after the recurrent matmul)."""
  layers = _torch_layers(module, 'nn.GRU')
  params = tuple(cells_lib.GRUParams(k, r, b_ih, b_hh) for k, r, b_ih, b_hh in layers)
  return Imported(cells_lib.get_cell('gru', {'reset_after': True}), params, ScanConfig())


def torch_state_to_carries(h_LxBxH, c_LxBxH=None) -> tuple:
  """PyTorch's ``h_0`` (and ``c_0`` for an LSTM) -> our carries, one per layer."""
  h = _f32(h_LxBxH)
  if c_LxBxH is None:
    return tuple(cells_lib.HCarry(h[k]) for k in range(h.shape[0]))
  c = _f32(c_LxBxH)
  return tuple(LSTMCarry(h[k], c[k]) for k in range(h.shape[0]))


def carries_to_torch_state(carries: Sequence):
  """Our carries -> numpy ``h_LxBxH`` (GRU) or ``(h_LxBxH, c_LxBxH)`` (LSTM)."""
  h = np.stack([np.asarray(c.h) for c in carries])
  if hasattr(carries[0], 'c'):
    return h, np.stack([np.asarray(c.c) for c in carries])
  return h


# --------------------------------------------------------------------------- Keras 3

# Keras 3's 'hard_sigmoid' is relu6(x + 3) / 6, not Keras 2's clip(0.2 x + 0.5).
_KERAS_RECURRENT_ACTIVATIONS = {'sigmoid': 'sigmoid', 'hard_sigmoid': 'hard_sigmoid_keras3'}


def _keras_activations(layers) -> ScanConfig:
  names = set()
  for layer in layers:
    cfg = layer.get_config()
    act, rec = cfg['activation'], cfg['recurrent_activation']
    if act != 'tanh' or rec not in _KERAS_RECURRENT_ACTIVATIONS:
      raise ValueError(f'Keras layer {layer.name}: activation {act!r} / recurrent_activation '
                       f'{rec!r} not supported (tanh with sigmoid or hard_sigmoid)')
    names.add(rec)
  if len(names) > 1:
    raise ValueError(f'the layers use different recurrent activations {sorted(names)}')
  return ScanConfig(recurrent_activation=_KERAS_RECURRENT_ACTIVATIONS[names.pop()])


def _as_list(layers) -> list:
  return list(layers) if isinstance(layers, (list, tuple)) else [layers]


def from_keras_lstm(layers) -> Imported:
  """Keras 3 ``keras.layers.LSTM`` layer(s), stacked in the order given."""
  layers = _as_list(layers)
  params = []
  for layer in layers:
    weights = [_f32(w) for w in layer.get_weights()]
    kernel, recurrent = weights[0], weights[1]
    bias = weights[2] if len(weights) > 2 else jnp.zeros((kernel.shape[1],), jnp.float32)
    params.append(LSTMParams(kernel, recurrent, bias))
  _check_layers(layers, [p.recurrent.shape[0] for p in params], [p.kernel.shape[0] for p in params])
  return Imported(cells_lib.get_cell('lstm'), tuple(params), _keras_activations(layers))


def _zrh_to_rzn(w):
  """Keras GRU packing z, r, h -> ours r, z, n (last axis)."""
  z, r, h = jnp.split(w, 3, axis=-1)
  return jnp.concatenate([r, z, h], axis=-1)


def from_keras_gru(layers) -> Imported:
  """Keras 3 ``keras.layers.GRU`` layer(s) (``reset_after`` True or False, all the same)."""
  layers = _as_list(layers)
  reset_after = {bool(layer.get_config()['reset_after']) for layer in layers}
  if len(reset_after) > 1:
    raise ValueError('the GRU layers mix reset_after=True and False')
  reset_after = reset_after.pop()
  params = []
  for layer in layers:
    weights = [_f32(w) for w in layer.get_weights()]
    kernel, recurrent = _zrh_to_rzn(weights[0]), _zrh_to_rzn(weights[1])
    n3 = kernel.shape[1]
    if len(weights) > 2:
      bias = weights[2].reshape(-1, n3)
    else:
      bias = jnp.zeros((2 if reset_after else 1, n3), jnp.float32)
    rec_bias = _zrh_to_rzn(bias[1]) if reset_after else None
    params.append(cells_lib.GRUParams(kernel, recurrent, _zrh_to_rzn(bias[0]), rec_bias))
  _check_layers(layers, [p.recurrent.shape[0] for p in params], [p.kernel.shape[0] for p in params])
  cell = cells_lib.get_cell('gru', {'reset_after': reset_after})
  return Imported(cell, tuple(params), _keras_activations(layers))


def keras_state_to_carries(states: Sequence[Any]) -> tuple:
  """Per layer, Keras' ``initial_state`` (``[h, c]`` for LSTM, ``[h]`` or ``h`` for GRU)."""
  out = []
  for s in states:
    s = _as_list(s)
    out.append(LSTMCarry(_f32(s[0]), _f32(s[1])) if len(s) == 2 else cells_lib.HCarry(_f32(s[0])))
  return tuple(out)


# --------------------------------------------------------------------------- Flax linen


def _flax_inner(variables) -> dict:
  return variables['params'] if 'params' in variables else variables


def _flax_packed_kernels(p, gates: str):
  """Flax keeps one Dense per gate (``i<g>`` on the input, ``h<g>`` on h): pack them."""
  kernel = jnp.concatenate([_f32(p[f'i{g}']['kernel']) for g in gates], axis=1)
  recurrent = jnp.concatenate([_f32(p[f'h{g}']['kernel']) for g in gates], axis=1)
  return kernel, recurrent


def from_flax_lstm(variables) -> Imported:
  """Flax ``nn.LSTMCell`` or ``nn.OptimizedLSTMCell`` variables (one, or a list to stack)."""
  params = []
  for v in _as_list(variables):
    p = _flax_inner(v)
    kernel, recurrent = _flax_packed_kernels(p, 'ifgo')
    bias = jnp.concatenate([_f32(p[f'h{g}']['bias']) for g in 'ifgo'])
    params.append(LSTMParams(kernel, recurrent, bias))
  return Imported(cells_lib.get_cell('lstm'), tuple(params), ScanConfig())


def from_flax_gru(variables) -> Imported:
  """Flax ``nn.GRUCell`` variables (one, or a list to stack)."""
  params = []
  for v in _as_list(variables):
    p = _flax_inner(v)
    kernel, recurrent = _flax_packed_kernels(p, 'rzn')
    bias = jnp.concatenate([_f32(p[f'i{g}']['bias']) for g in 'rzn'])
    hn_bias = _f32(p['hn']['bias'])
    rec_bias = jnp.concatenate([jnp.zeros_like(hn_bias), jnp.zeros_like(hn_bias), hn_bias])
    params.append(cells_lib.GRUParams(kernel, recurrent, bias, rec_bias))
  return Imported(cells_lib.get_cell('gru', {'reset_after': True}), tuple(params), ScanConfig())


def flax_carry_to_carry(carry):
  """A Flax cell's carry (LSTM ``(c, h)``, GRU ``h``) -> ours (``LSTMCarry(h, c)``, ``(h,)``)."""
  if isinstance(carry, (tuple, list)):
    c, h = carry
    return LSTMCarry(_f32(h), _f32(c))
  return cells_lib.HCarry(_f32(carry))


def carry_to_flax_carry(carry):
  """Ours -> Flax's carry layout."""
  if hasattr(carry, 'c'):
    return (carry.c, carry.h)
  return carry.h
