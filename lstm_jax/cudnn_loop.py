"""The stock LSTM on cuDNN: ``ScanConfig(loop='cudnn')``, through ``jax.experimental.rnn``.

cuDNN runs its own LSTM, so this loop applies only to the stock math (``lstm_jax.cell`` as
shipped: sigmoid gates, tanh, c' = f c + i g) and is refused for any other cell, activation or
an edited ``activate_gates`` / ``lstm_update`` (``unsupported``); ``loop='auto'`` never picks it:
on an H200 it ran 2-17x slower than our best loop, host-bound (``recurrent.layer_loop``). Each layer is one
cuDNN call per chunk with the carry passed in and out (so chunks continue), its gradients
cuDNN's own backward (``jax.experimental.rnn.lstm``'s VJP).

Weights: cuDNN's flat layout per layer is ``W_ih (4H, C)``, ``W_hh (4H, H)``, then ``b_ih``,
``b_hh`` (4H each), gates ``i, f, g, o`` as ours; ``pack`` puts ``kernel^T``, ``recurrent^T``,
our one bias as ``b_ih`` and zeros as ``b_hh``. Precision: the call passes none, so it follows
JAX's matmul precision setting as every ``dot`` does: TF32 allowed by default, none under
``jax_default_matmul_precision='float32'`` (what the benchmark sets unless ``--precision=tf32``).

Off a GPU there is no cuDNN: ``reference_layer`` runs ``jax.experimental.rnn.lstm_ref`` on the
packed weights, which is how the tests check the packing on CPU.
"""
from __future__ import annotations

from typing import Optional

import jax
import jax.numpy as jnp

from lstm_jax import cell as cell_lib
from lstm_jax.cell import LSTMCarry, LSTMParams

# The stock math as shipped, captured at import: an edit of lstm_jax.cell is not cuDNN's.
_STOCK = (cell_lib.activate_gates, cell_lib.lstm_update)


def pack(params: LSTMParams) -> jax.Array:
  """One layer's ``LSTMParams`` as cuDNN's flat weight vector (``num_layers=1``)."""
  return jnp.concatenate([params.kernel.T.ravel(), params.recurrent.T.ravel(), params.bias,
                          jnp.zeros_like(params.bias)])


def unpack(weights, in_size: int, hidden_size: int) -> LSTMParams:
  """The inverse of ``pack`` (the two biases summed, as PyTorch's import does)."""
  from jax.experimental import rnn  # pylint: disable=g-import-not-at-top
  w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(weights, in_size, hidden_size, 1, False)
  return LSTMParams(w_ih[0].T, w_hh[0].T, b_ih[0] + b_hh[0])


def unsupported(cell, scan, math_key: tuple) -> Optional[str]:
  """Why cuDNN cannot run this layer (``None``: it can)."""
  if cell.name != 'lstm':
    return f"cuDNN runs the stock LSTM only, not cell {cell.name!r}"
  if tuple(math_key[-2:]) != _STOCK:
    return ('lstm_jax.cell.activate_gates or lstm_update was edited; cuDNN runs the stock '
            'LSTM math only')
  if scan.recurrent_activation != 'sigmoid' or scan.activation != 'tanh':
    return (f'cuDNN runs sigmoid gates and tanh, got recurrent_activation='
            f'{scan.recurrent_activation!r}')
  if scan.matmul_dtype != 'float32':
    return f'runs in float32 here, got matmul_dtype={scan.matmul_dtype!r}'
  if jax.default_backend() not in ('gpu', 'cuda'):
    return f'needs a CUDA GPU (cuDNN), the backend is {jax.default_backend()!r}'
  return None


def _seq_lengths(x_BxTxC):
  return jnp.full((x_BxTxC.shape[0],), x_BxTxC.shape[1], jnp.int32)


def layer(params: LSTMParams, carry: LSTMCarry, x_BxTxC):
  """One layer over a chunk on cuDNN: ``-> (carry, h_BxTxH)``."""
  from jax.experimental import rnn  # pylint: disable=g-import-not-at-top
  in_size, hidden = x_BxTxC.shape[-1], carry.h.shape[-1]
  y, h_n, c_n = rnn.lstm(x_BxTxC, carry.h[None], carry.c[None], pack(params),
                         _seq_lengths(x_BxTxC), input_size=in_size, hidden_size=hidden,
                         num_layers=1, dropout=0.0, bidirectional=False)
  return LSTMCarry(h_n[0], c_n[0]), y


def reference_layer(params: LSTMParams, carry: LSTMCarry, x_BxTxC):
  """``layer`` with ``jax.experimental.rnn.lstm_ref`` (any platform) on the packed weights."""
  from jax.experimental import rnn  # pylint: disable=g-import-not-at-top
  in_size, hidden = x_BxTxC.shape[-1], carry.h.shape[-1]
  w_ih, w_hh, b_ih, b_hh = rnn.unpack_lstm_weights(pack(params), in_size, hidden, 1, False)
  y, h_n, c_n = rnn.lstm_ref(x_BxTxC, carry.h[None], carry.c[None], w_ih, w_hh, b_ih, b_hh,
                             _seq_lengths(x_BxTxC), in_size, hidden, 1, 0.0, False)
  return LSTMCarry(h_n[0], c_n[0]), y
