"""Export a trained model for serving without the training code (``jax.export``).

The exported function is ``(carry, witnesses_BxTxC) -> (carry, prediction_BxT)`` in physical
units (both normalizers are baked in), with a symbolic time length, so one artifact serves
blocks of any length. The carry is a flat tuple: the leaves of the model's carry layer by layer
(``(h_0, c_0, h_1, c_1, ...)`` for LSTM layers, ``(h_0, h_1, ...)`` for a GRU), then, where the
model has a linear path, the FIR's history: the last ``n_taps - 1`` standardized samples of
its inputs, (B, n_taps - 1, C + K) (the witnesses and any products or bent witnesses,
``volterra.Products``), and where a product has a lagged factor, the factors' last
``max_lag`` standardized samples, (B, max_lag, F). Loading needs only ``jax`` (and ``flatbuffers``, which
``jax.export`` serialization requires).
"""
from __future__ import annotations

import dataclasses

import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np


def fir_filter(weights_CxK, bias, history_BxHxC, x_BxTxC):
  """Causal FIR ``y[t] = bias + sum_c sum_k w[c, k] x[t - k, c]``, the ``H = K - 1`` samples
  before ``x`` taken from ``history``: ``-> (y_BxT, history for the next block)``."""
  n_taps = weights_CxK.shape[1]
  full = jnp.concatenate([history_BxHxC, x_BxTxC], axis=1)  # (B, K - 1 + T, C)
  # conv_general_dilated correlates: kernel position m meets x[t - (K - 1) + m], lag K - 1 - m.
  kernel = jnp.flip(weights_CxK, axis=1)[None]  # (1, C, K)
  y = jax.lax.conv_general_dilated(jnp.swapaxes(full, 1, 2), kernel, (1,), 'VALID',
                                   precision=jax.lax.Precision.HIGHEST)
  return y[:, 0] + bias, full[:, full.shape[1] - (n_taps - 1):]


def export_trained(trained, batch_size: int = 1) -> jax_export.Exported:
  """Exports ``trained`` (a ``TrainedModel``) for ``batch_size`` parallel streams."""
  # A lax.scan, rolled: the artifact stays portable and symbolic in time (a Pallas kernel is
  # neither, and the GPU's unroll would need a static length).
  model = trained.model.clone(scan=dataclasses.replace(
      trained.model.scan, loop='scan', unroll=trained.model.scan.unroll or 1))
  variables = {'params': trained.params}
  # The exported program takes float32 witnesses, so it scales in float32: a channel far from
  # zero (relative variation below ~1e-5) loses resolution here that TrainedModel.predict keeps.
  f32 = lambda a: jnp.asarray(a, jnp.float32)
  in_off, in_scale = f32(trained.input_norm.offset), f32(trained.input_norm.scale)
  out_off, out_scale = f32(trained.target_norm.offset), f32(trained.target_norm.scale)
  carry_leaves, carry_tree = jax.tree.flatten(model.initialize_carry(batch_size))
  n_leaves = len(carry_leaves)
  linear = trained.linear
  carry_avals = [jax.ShapeDtypeStruct(a.shape, a.dtype) for a in carry_leaves]
  widening = None if linear is None else linear.products
  if linear is not None:
    n_in = linear.n_channels  # the witnesses, then any appended columns
    fir_w = jnp.asarray(np.reshape(linear.weights, (n_in, linear.n_taps)), jnp.float32)
    fir_off, fir_scale = f32(linear.input_norm.offset), f32(linear.input_norm.scale)
    carry_avals.append(jax.ShapeDtypeStruct((batch_size, linear.n_taps - 1, n_in), jnp.float32))
  if widening is not None:
    factors, lag = widening.factors, widening.max_lag
    factor_norm = widening.norm.take(factors)
    factor_off, factor_scale = f32(factor_norm.offset), f32(factor_norm.scale)
    if lag:
      carry_avals.append(jax.ShapeDtypeStruct((batch_size, lag, len(factors)), jnp.float32))

  def widened(carry_flat, witnesses_BxTxC):
    """The FIR's inputs: the witnesses and the columns ``widening`` appends (its own math,
    ``Products.appended``); the factors' history for the next block (or None)."""
    x = (witnesses_BxTxC[..., factors] - factor_off[None, None, :]) / factor_scale[None, None, :]
    full = jnp.concatenate([carry_flat[n_leaves + 1], x], axis=1) if lag else x
    columns = jnp.stack(widening.appended(full, jnp), -1)
    return (jnp.concatenate([witnesses_BxTxC, columns], -1),
            full[:, full.shape[1] - lag:] if lag else None)

  def serve(carry_flat, witnesses_BxTxC):
    carry = jax.tree.unflatten(carry_tree, carry_flat[:n_leaves])
    x = (witnesses_BxTxC - in_off[None, None, :]) / in_scale[None, None, :]
    carry, y = model.apply(variables, carry, x)
    prediction = y[..., 0] * out_scale[0] + out_off[0]
    carry_out = jax.tree.leaves(carry)
    if linear is not None:
      inputs, factor_history = (witnesses_BxTxC, None) if widening is None else widened(
          carry_flat, witnesses_BxTxC)
      x_fir = (inputs - fir_off[None, None, :]) / fir_scale[None, None, :]
      y_fir, history = fir_filter(fir_w, linear.bias, carry_flat[n_leaves], x_fir)
      prediction = prediction + y_fir
      carry_out.append(history)
      if factor_history is not None:
        carry_out.append(factor_history)
    return tuple(carry_out), prediction

  t, = jax_export.symbolic_shape('t')
  x_aval = jax.ShapeDtypeStruct((batch_size, t, trained.n_inputs), jnp.float32)
  return jax_export.export(jax.jit(serve))(tuple(carry_avals), x_aval)


def save_exported(trained, path: str, batch_size: int = 1) -> None:
  with open(path, 'wb') as f:
    f.write(export_trained(trained, batch_size).serialize())


class ExportedCleaner:
  """A deserialized model: streaming prediction with the carry kept between ``push`` calls."""

  def __init__(self, serialized: bytes):
    self.exported = jax_export.deserialize(bytearray(serialized))
    carry_avals = self.exported.in_avals[:-1]
    self.batch_size = carry_avals[0].shape[0]
    self.n_inputs = self.exported.in_avals[-1].shape[-1]
    self._zeros = [np.zeros(a.shape, np.float32) for a in carry_avals]
    self.reset()

  @classmethod
  def load(cls, path: str) -> 'ExportedCleaner':
    with open(path, 'rb') as f:
      return cls(f.read())

  def reset(self) -> None:
    self.carry = tuple(jnp.asarray(z) for z in self._zeros)

  def push(self, witnesses) -> np.ndarray:
    """Witnesses (T, C) for batch 1 or (B, T, C) -> prediction (T,) or (B, T)."""
    x = np.asarray(witnesses, np.float32)
    squeeze = x.ndim == 2
    x = x[None] if squeeze else x
    self.carry, y = self.exported.call(self.carry, x)
    y = np.asarray(y)
    return y[0] if squeeze else y
