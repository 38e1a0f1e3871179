"""The LSTM cell: a pure step over a NamedTuple carry.

Conventions (Keras / PyTorch compatible):

* gate order in every packed weight is ``i, f, g, o`` (input, forget, cell candidate, output);
* one bias vector per layer (Keras); PyTorch's two biases import as their sum;
* ``unit_forget_bias`` initializes the forget-gate bias to 1 (nothing is added in the forward
  pass, unlike Haiku);
* the carry is ordered ``(h, c)`` (Flax orders it ``(c, h)``).
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class LSTMCarry(NamedTuple):
  """State of one LSTM layer: hidden output ``h_BxH`` and cell state ``c_BxH``."""
  h: jax.Array
  c: jax.Array


class LSTMParams(NamedTuple):
  """Weights of one LSTM layer, gates packed ``i, f, g, o`` along the last axis.

  kernel_Cx4H multiplies the input, recurrent_Hx4H the previous hidden state.
  """
  kernel: jax.Array
  recurrent: jax.Array
  bias: jax.Array


def hard_sigmoid_keras2(x):
  """Keras 2 ``hard_sigmoid``: clip(0.2 x + 0.5, 0, 1)."""
  return jnp.clip(0.2 * x + 0.5, 0.0, 1.0)


def hard_sigmoid_keras3(x):
  """Keras 3 ``hard_sigmoid``: relu6(x + 3) / 6 = clip(x / 6 + 0.5, 0, 1)."""
  return jnp.clip(x / 6.0 + 0.5, 0.0, 1.0)


# 'hard_sigmoid' means what the seed's Keras 2 code meant (slope 0.2).
RECURRENT_ACTIVATIONS: dict[str, Callable] = {
    'sigmoid': jax.nn.sigmoid,
    'hard_sigmoid': hard_sigmoid_keras2,
    'hard_sigmoid_keras2': hard_sigmoid_keras2,
    'hard_sigmoid_keras3': hard_sigmoid_keras3,
}
ACTIVATIONS: dict[str, Callable] = {'tanh': jnp.tanh}


def check_activations(recurrent_activation: str, activation: str) -> None:
  if recurrent_activation not in RECURRENT_ACTIVATIONS:
    raise ValueError(f'unknown recurrent_activation {recurrent_activation!r}; '
                     f'choose one of {sorted(RECURRENT_ACTIVATIONS)}')
  if activation not in ACTIVATIONS:
    raise ValueError(f'unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}')


def init_lstm_params(key, in_size: int, hidden_size: int, unit_forget_bias: bool = True,
                     dtype=jnp.float32) -> LSTMParams:
  """Keras defaults: kernel glorot_uniform, recurrent orthogonal, bias zeros (forget 1)."""
  k_key, r_key = jax.random.split(key)
  kernel = jax.nn.initializers.glorot_uniform()(k_key, (in_size, 4 * hidden_size), dtype)
  # Keras draws one orthogonal (H, 4H) matrix for all gates.
  recurrent = jax.nn.initializers.orthogonal()(r_key, (hidden_size, 4 * hidden_size), dtype)
  bias = jnp.zeros((4 * hidden_size,), dtype)
  if unit_forget_bias:
    bias = bias.at[hidden_size:2 * hidden_size].set(1.0)
  return LSTMParams(kernel, recurrent, bias)


def zero_carry(batch_size: int, hidden_size: int, dtype=jnp.float32) -> LSTMCarry:
  # Two buffers, not one shared: a donated carry must not alias itself.
  return LSTMCarry(jnp.zeros((batch_size, hidden_size), dtype),
                   jnp.zeros((batch_size, hidden_size), dtype))


def _gate_affine(hidden_size: int):
  """Scale and shift that turn one tanh over all 4H pre-activations into the four gates.

  sigmoid(z) = 0.5 tanh(z / 2) + 0.5 exactly, so i, f, o use (in, out) scales (0.5, 0.5) and
  offset 0.5, and g uses tanh directly: one transcendental pass instead of two.
  """
  half = np.full(hidden_size, 0.5, np.float32)
  one = np.ones(hidden_size, np.float32)
  zero = np.zeros(hidden_size, np.float32)
  scale = np.concatenate([half, half, one, half])
  shift = np.concatenate([half, half, zero, half])
  return scale, shift


def activate_gates(z_Bx4H, recurrent_activation: str = 'sigmoid', activation: str = 'tanh',
                   axis: int = -1):
  """Pre-activations ``z`` (gates packed i, f, g, o along ``axis``) -> activated gates, same
  packing. ``axis=-2`` serves the feature-major layout, where a step's gates are (4H, B).

  With ``lstm_update`` this is the LSTM's whole math: every time loop (the scan, the Pallas
  kernel, streaming, export) calls both through this module when it traces, and the custom
  backward differentiates them (``jax.vjp``), so editing either (or assigning
  ``lstm_jax.cell.activate_gates = ...``) changes every path, gradients included."""
  hidden_size = z_Bx4H.shape[axis] // 4
  if recurrent_activation == 'sigmoid' and activation == 'tanh':
    scale, shift = _gate_affine(hidden_size)
    shape = [1] * z_Bx4H.ndim
    shape[axis] = -1
    scale = jnp.asarray(scale, z_Bx4H.dtype).reshape(shape)
    shift = jnp.asarray(shift, z_Bx4H.dtype).reshape(shape)
    return jnp.tanh(z_Bx4H * scale) * scale + shift
  return activate_gates_plain(z_Bx4H, recurrent_activation, activation, axis)


def activate_gates_plain(z_Bx4H, recurrent_activation='sigmoid', activation: str = 'tanh',
                         axis: int = -1):
  """``activate_gates`` with every gate through its own activation function
  (``recurrent_activation``: a name in ``RECURRENT_ACTIVATIONS``, or the function itself)."""
  rec = (recurrent_activation if callable(recurrent_activation)
         else RECURRENT_ACTIVATIONS[recurrent_activation])
  act = ACTIVATIONS[activation]
  i, f, g, o = jnp.split(z_Bx4H, 4, axis=axis)
  return jnp.concatenate([rec(i), rec(f), act(g), rec(o)], axis=axis)


def lstm_update(carry: LSTMCarry, gates_Bx4H, activation: str = 'tanh',
                axis: int = -1) -> LSTMCarry:
  """Cell update from activated gates (packed along ``axis``): c' = f*c + i*g, h' = o*act(c')."""
  i, f, g, o = jnp.split(gates_Bx4H, 4, axis=axis)
  c = f * carry.c + i * g
  h = o * ACTIVATIONS[activation](c)
  return LSTMCarry(h.astype(carry.h.dtype), c.astype(carry.c.dtype))


def lstm_cell(params: LSTMParams, carry: LSTMCarry, x_BxC, *,
              recurrent_activation: str = 'sigmoid', activation: str = 'tanh',
              projected: bool = False, matmul_dtype=None):
  r"""One LSTM time step, ``(carry, x) -> (carry, h)``.

  .. math::
     z &= x W + h_{t-1} U + b \quad (\text{gates packed } i, f, g, o)\\
     i &= \sigma(z_i),\ f = \sigma(z_f),\ g = \tanh(z_g),\ o = \sigma(z_o)\\
     c_t &= f \odot c_{t-1} + i \odot g\\
     h_t &= o \odot \tanh(c_t)

  :math:`\sigma` is ``recurrent_activation`` (``sigmoid``, or ``hard_sigmoid`` with the Keras 2
  slope 0.2, or ``hard_sigmoid_keras3`` with slope 1/6).

  Args:
    params: the layer's ``LSTMParams``.
    carry: ``LSTMCarry(h_BxH, c_BxH)``.
    x_BxC: the input at this step, or, with ``projected=True``, the already computed
      ``x W + b`` of shape (B, 4H) (the input projection hoisted out of the time loop).
    matmul_dtype: optional dtype for the matmul operands (e.g. bfloat16); the carry and the
      accumulation stay in the carry's dtype.

  Returns:
    ``(new_carry, h_BxH)``.
  """
  h = carry.h
  dt = matmul_dtype or h.dtype
  if projected:
    z = x_BxC + jnp.dot(h.astype(dt), params.recurrent.astype(dt),
                        preferred_element_type=h.dtype)
  else:
    # [x, h] @ [W; U] is one matmul instead of two.
    xh = jnp.concatenate([x_BxC.astype(dt), h.astype(dt)], axis=-1)
    w = jnp.concatenate([params.kernel, params.recurrent], axis=0).astype(dt)
    z = jnp.dot(xh, w, preferred_element_type=h.dtype) + params.bias[None, :]
  gates = activate_gates(z, recurrent_activation, activation)
  carry = lstm_update(carry, gates, activation)
  return carry, carry.h
