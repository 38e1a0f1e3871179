"""A trained model with its normalizers: saving, loading, and streaming prediction."""
from __future__ import annotations

import dataclasses
import json
import os
from typing import Optional

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import cells as cells_lib
from lstm_jax import data as data_lib
from lstm_jax.config import Config
from lstm_jax.model import LSTMRegressor

MODEL_FILES = ('config.json', 'normalizers.json', 'params.msgpack')


def build_model(config: Config) -> LSTMRegressor:
  # Fail early, in one line, on an unknown cell or option (not inside a jit trace).
  cells_lib.get_cell(config.cell, config.cell_options)
  return LSTMRegressor(lstm_sizes=tuple(config.lstm_sizes), head_sizes=tuple(config.head_sizes),
                       out_size=1, head_activation=config.head_activation,
                       output_activation=config.output_activation, head_inputs=config.head_inputs,
                       unit_forget_bias=config.unit_forget_bias, scan=config.scan_config(),
                       cell=config.cell, cell_options=config.cell_options)


@dataclasses.dataclass
class TrainedModel:
  """Everything needed to clean a new recording: config, params and the two normalizers."""
  config: Config
  params: dict
  input_norm: data_lib.Normalizer
  target_norm: data_lib.Normalizer
  n_inputs: int

  @property
  def model(self) -> LSTMRegressor:
    return build_model(self.config)

  def save(self, model_dir: str) -> None:
    os.makedirs(model_dir, exist_ok=True)
    with open(os.path.join(model_dir, 'config.json'), 'w') as f:
      json.dump(self.config.to_dict(), f, indent=1)
    with open(os.path.join(model_dir, 'normalizers.json'), 'w') as f:
      json.dump({'input': self.input_norm.to_dict(), 'target': self.target_norm.to_dict(),
                 'n_inputs': self.n_inputs}, f, indent=1)
    # Write then rename, so a crash never leaves a half-written params file.
    tmp = os.path.join(model_dir, 'params.msgpack.tmp')
    with open(tmp, 'wb') as f:
      f.write(flax.serialization.msgpack_serialize(jax.device_get(self.params)))
    os.replace(tmp, os.path.join(model_dir, 'params.msgpack'))

  @classmethod
  def load(cls, model_dir: str) -> 'TrainedModel':
    if not os.path.isdir(model_dir):
      raise data_lib.DataError(f'{model_dir}: model directory does not exist')
    for name in MODEL_FILES:
      if not os.path.isfile(os.path.join(model_dir, name)):
        raise data_lib.DataError(f'{model_dir}: missing {name}; is this a directory written '
                                 'by experiments/noise_regression.py --workdir?')
    try:
      with open(os.path.join(model_dir, 'config.json')) as f:
        config = Config.from_dict(json.load(f))
      with open(os.path.join(model_dir, 'normalizers.json')) as f:
        norms = json.load(f)
      with open(os.path.join(model_dir, 'params.msgpack'), 'rb') as f:
        params = flax.serialization.msgpack_restore(f.read())
    except (ValueError, KeyError, TypeError) as e:
      raise data_lib.DataError(f'{model_dir}: corrupt model files ({e})') from None
    return cls(config, params, data_lib.Normalizer.from_dict(norms['input']),
               data_lib.Normalizer.from_dict(norms['target']), int(norms['n_inputs']))

  def stream(self, batch_size: int = 1, chunk_len: Optional[int] = None) -> 'StreamingPredictor':
    return StreamingPredictor(self, batch_size, chunk_len or self.config.eval_chunk_len)

  def predict(self, witnesses_TxC, chunk_len: Optional[int] = None) -> np.ndarray:
    """Prediction (T,) in target units for one whole record, streamed chunk by chunk."""
    return self.stream(1, chunk_len).push(witnesses_TxC)


class StreamingPredictor:
  """Causal prediction over blocks of any length, with the carry kept between calls.

  Blocks are cut into ``chunk_len`` pieces (the last one zero-padded: the model is causal, so
  padding after a sample never changes it), so memory is bounded by the chunk, not the record,
  and the jitted step is compiled once.
  """

  def __init__(self, trained: TrainedModel, batch_size: int, chunk_len: int):
    self.trained = trained
    self.chunk_len = int(chunk_len)
    model = trained.model
    self.carry = model.initialize_carry(batch_size)
    variables = {'params': trained.params}

    @jax.jit
    def step(carry, x_BxTxC):
      new_carry, y = model.apply(variables, carry, x_BxTxC)
      return new_carry, y[..., 0]

    self._step = step
    self._variables = variables
    self._model = model

  def reset(self) -> None:
    self.carry = self._model.initialize_carry(self.carry[0].h.shape[0])

  def push(self, witnesses_TxC) -> np.ndarray:
    """Feeds witnesses (T, C) or (B, T, C) in physical units; returns the prediction."""
    x = np.asarray(witnesses_TxC, np.float32)
    squeeze = x.ndim == 2
    if squeeze:
      x = x[None]
    n_in = self.trained.n_inputs
    if x.ndim != 3 or x.shape[-1] != n_in:
      raise data_lib.DataError(f'witnesses have shape {x.shape[1:] if squeeze else x.shape}; '
                               f'the model was trained on {n_in} witness channels')
    x = self.trained.input_norm.apply(x)
    outs = []
    for start in range(0, x.shape[1], self.chunk_len):
      piece = x[:, start:start + self.chunk_len]
      n = piece.shape[1]
      if n < self.chunk_len:
        # Pad to keep one compiled shape; recompute the carry on the exact piece so the next
        # block continues from the right state.
        padded = np.zeros((x.shape[0], self.chunk_len, n_in), np.float32)
        padded[:, :n] = piece
        _, y = self._step(self.carry, padded)
        self.carry, _ = self._model.apply(self._variables, self.carry, piece)
      else:
        self.carry, y = self._step(self.carry, piece)
      outs.append(np.asarray(y)[:, :n])
    y = np.concatenate(outs, axis=1) if outs else np.zeros((x.shape[0], 0), np.float32)
    y = self.trained.target_norm.invert(y[..., None])[..., 0]
    return y[0] if squeeze else y
