"""``LSTMRegressor``: stacked stateful LSTM layers and a per-time-step dense head."""
from __future__ import annotations

from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from lstm_jax import cell as cell_lib
from lstm_jax import cells as cells_lib
from lstm_jax import recurrent
from lstm_jax.cell import LSTMCarry, LSTMParams

HEAD_ACTIVATIONS = ('leaky_relu', 'tanh', 'relu', 'gelu', 'linear')


def _activation(name: str, leaky_slope: float):
  if name == 'leaky_relu':
    return lambda v: nn.leaky_relu(v, negative_slope=leaky_slope)
  if name == 'linear':
    return lambda v: v
  return {'tanh': jnp.tanh, 'relu': nn.relu, 'gelu': nn.gelu}[name]


def products(module: nn.Module, v, units: int, name: str):
  """``units`` product units of ``v``: ``(v A + a) * (v B + b)``, declared in ``module``."""
  factors = [nn.Dense(units, kernel_init=nn.initializers.glorot_normal(), name=f'{name}_{k}',
                      parent=module)(v) for k in (0, 1)]
  return factors[0] * factors[1]


class LSTMRegressor(nn.Module):
  """Stateful sequence regressor: ``(carry, x_BxTxC) -> (carry, y_BxTxO)``.

  Usage::

    model = LSTMRegressor(lstm_sizes=(64, 16, 8), head_sizes=(128, 16, 8), out_size=1)
    carry = model.initialize_carry(batch_size)          # zeros, one (h, c) per layer
    variables = model.init(jax.random.key(0), carry, x)  # x: (B, T, C) float32
    carry, y = model.apply(variables, carry, x)          # y: (B, T, out_size)

  The LSTM stack runs first (see ``lstm_jax.recurrent``); the head is applied to every time
  step: Dense layers with ``head_activation`` and a Dense output with ``output_activation``
  (``linear`` by default; the seed used a LeakyReLU, which cannot produce negative targets).
  With ``head_inputs=True`` the (already scaled) inputs are concatenated to the last LSTM
  output before the head, so instantaneous couplings need not pass through the recurrence.
  ``head_products=K`` adds K product units beside the head: ``(v A + a) * (v B + b)`` of the
  head's input ``v``, fed with the head's last layer to the output. A product of two witnesses
  (a bilinear coupling, the field's most common nonlinear one) or a square is then one unit,
  exact, where the smooth layers only approximate it. ``input_products=K`` puts K such units
  on the inputs instead, appended to them: the recurrence then sees the products (a product
  that rings through a resonance), and so does the head.

  ``cell`` names a registered cell (``lstm_jax.cells``; default ``lstm``) and ``cell_options``
  its options (``'k=v,...'`` text, a dict or pairs); ``initialize_carry`` returns that cell's
  carry per layer, and layer k's parameters live under ``{cell}_{k}``.
  """
  lstm_sizes: Sequence[int] = (64, 16, 8)
  head_sizes: Sequence[int] = (128, 16, 8)
  out_size: int = 1
  head_activation: str = 'leaky_relu'
  output_activation: str = 'linear'
  leaky_slope: float = 0.01
  head_inputs: bool = False
  head_products: int = 0
  input_products: int = 0
  unit_forget_bias: bool = True
  scan: recurrent.ScanConfig = recurrent.ScanConfig()
  cell: str = 'lstm'
  cell_options: Any = ()

  def get_cell(self) -> cells_lib.Cell:
    return cells_lib.get_cell(self.cell, self.cell_options)

  def initialize_carry(self, batch_size: int) -> tuple[LSTMCarry, ...]:
    cell = self.get_cell()
    return tuple(cell.zero_carry(batch_size, n) for n in self.lstm_sizes)

  @nn.compact
  def __call__(self, carry: Sequence[LSTMCarry], x_BxTxC):
    if x_BxTxC.ndim != 3:
      raise ValueError(f'x must be (batch, time, channels), got shape {x_BxTxC.shape}')
    if len(carry) != len(self.lstm_sizes):
      raise ValueError(f'carry has {len(carry)} layers, the model {len(self.lstm_sizes)}')
    for name in (self.head_activation, self.output_activation):
      if name not in HEAD_ACTIVATIONS:
        raise ValueError(f'unknown head activation {name!r}; choose one of {HEAD_ACTIVATIONS}')
    cell = self.get_cell()
    if self.input_products:
      x_BxTxC = jnp.concatenate([x_BxTxC, products(self, x_BxTxC, self.input_products,
                                                   'input_product')], axis=-1)
    params = []
    in_size = x_BxTxC.shape[-1]
    for k, size in enumerate(self.lstm_sizes):
      params.append(cells_lib.CellWeights(cell, in_size, size, self.unit_forget_bias,
                                          name=f'{cell.name}_{k}')())
      in_size = size
    carry, h = cell.stack(params, tuple(carry), x_BxTxC, self.scan)
    if self.head_inputs:
      h = jnp.concatenate([h, x_BxTxC.astype(h.dtype)], axis=-1)
    v = h
    act = _activation(self.head_activation, self.leaky_slope)
    for k, size in enumerate(self.head_sizes):
      h = act(nn.Dense(size, kernel_init=nn.initializers.glorot_normal(), name=f'head_{k}')(h))
    if self.head_products:
      h = jnp.concatenate([h, products(self, v, self.head_products, 'product')], axis=-1)
    y = nn.Dense(self.out_size, kernel_init=nn.initializers.glorot_normal(), name='out')(h)
    return carry, _activation(self.output_activation, self.leaky_slope)(y)
