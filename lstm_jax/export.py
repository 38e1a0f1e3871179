"""Export a trained model for serving without the training code (``jax.export``).

The exported function is ``(carry, witnesses_BxTxC) -> (carry, prediction_BxT)`` in physical
units (both normalizers are baked in), with a symbolic time length, so one artifact serves
blocks of any length. The carry is a flat tuple ``(h_0, c_0, h_1, c_1, ...)``. Loading needs
only ``jax`` (and ``flatbuffers``, which ``jax.export`` serialization requires).
"""
from __future__ import annotations

import jax
from jax import export as jax_export
import jax.numpy as jnp
import numpy as np

from lstm_jax.cell import LSTMCarry


def export_trained(trained, batch_size: int = 1) -> jax_export.Exported:
  """Exports ``trained`` (a ``TrainedModel``) for ``batch_size`` parallel streams."""
  model = trained.model
  variables = {'params': trained.params}
  in_off, in_scale = (jnp.asarray(a) for a in (trained.input_norm.offset,
                                                 trained.input_norm.scale))
  out_off, out_scale = (jnp.asarray(a) for a in (trained.target_norm.offset,
                                                   trained.target_norm.scale))

  def serve(carry_flat, witnesses_BxTxC):
    carry = tuple(LSTMCarry(h, c) for h, c in zip(carry_flat[0::2], carry_flat[1::2]))
    x = (witnesses_BxTxC - in_off[None, None, :]) / in_scale[None, None, :]
    carry, y = model.apply(variables, carry, x)
    prediction = y[..., 0] * out_scale[0] + out_off[0]
    return tuple(a for layer in carry for a in layer), prediction

  carry_avals = tuple(jax.ShapeDtypeStruct((batch_size, n), jnp.float32)
                      for n in trained.config.lstm_sizes for _ in range(2))
  t, = jax_export.symbolic_shape('t')
  x_aval = jax.ShapeDtypeStruct((batch_size, t, trained.n_inputs), jnp.float32)
  return jax_export.export(jax.jit(serve))(carry_avals, x_aval)


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
