"""A trained model with its normalizers: saving, loading, and streaming prediction."""
from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from typing import Optional

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import baselines
from lstm_jax import cells as cells_lib
from lstm_jax import data as data_lib
from lstm_jax import parallel
from lstm_jax.config import Config
from lstm_jax.model import LSTMRegressor

MODEL_FILES = ('config.json', 'normalizers.json', 'params.msgpack')
LINEAR_FILE = 'linear.json'  # only where the model has a linear part (linear/residual_taps)


def build_model(config: Config) -> LSTMRegressor:
  # Fail early, in one line, on an unknown cell or option (not inside a jit trace).
  cells_lib.get_cell(config.cell, config.cell_options)
  return LSTMRegressor(lstm_sizes=tuple(config.lstm_sizes), head_sizes=tuple(config.head_sizes),
                       out_size=1, head_activation=config.head_activation,
                       output_activation=config.output_activation, head_inputs=config.head_inputs,
                       head_products=config.head_products,
                       input_products=config.input_products,
                       unit_forget_bias=config.unit_forget_bias, scan=config.scan_config(),
                       cell=config.cell, cell_options=config.cell_options)


@dataclasses.dataclass
class TrainedModel:
  """Everything needed to clean a new recording: config, params and the two normalizers.

  With a linear part (``linear``, a ``baselines.WienerFIR``) the prediction is the sum of the
  recurrent model's and the filter's. The filter is the linear path fitted before training (the
  recurrent model learnt the target minus its output; ``Config.linear_taps``), the residual FIR
  fitted after it on what the model left (``Config.residual_taps``), or both as one filter.
  """
  config: Config
  params: dict
  input_norm: data_lib.Normalizer
  target_norm: data_lib.Normalizer
  n_inputs: int
  linear: Optional[baselines.WienerFIR] = None

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
    linear_path = os.path.join(model_dir, LINEAR_FILE)
    if self.linear is not None:
      with open(linear_path, 'w') as f:
        json.dump(self.linear.to_dict(), f)
    elif os.path.exists(linear_path):  # from an earlier model saved in the same directory
      os.remove(linear_path)

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
      linear = None
      if os.path.isfile(os.path.join(model_dir, LINEAR_FILE)):
        with open(os.path.join(model_dir, LINEAR_FILE)) as f:
          linear = baselines.WienerFIR.from_dict(json.load(f))
    except (ValueError, KeyError, TypeError) as e:
      raise data_lib.DataError(f'{model_dir}: corrupt model files ({e})') from None
    return cls(config, params, data_lib.Normalizer.from_dict(norms['input']),
               data_lib.Normalizer.from_dict(norms['target']), int(norms['n_inputs']), linear)

  def stream(self, batch_size: int = 1, chunk_len: Optional[int] = None) -> 'StreamingPredictor':
    return StreamingPredictor(self, batch_size, chunk_len or self.config.eval_chunk_len)

  def predict(self, witnesses_TxC, chunk_len: Optional[int] = None) -> np.ndarray:
    """Prediction (T,) in target units for one whole record, streamed chunk by chunk."""
    return self.stream(1, chunk_len).push(witnesses_TxC)


@functools.lru_cache(maxsize=None)
def _inference_programs(model: LSTMRegressor, batch_size: int, math_key: tuple = ()):
  """The jitted ``apply`` and carry-only ``apply`` of ``model`` at ``batch_size``: one pair per
  equal model (Flax modules hash by their fields) and cell math (``Cell.math_key``: an edit
  of ``lstm_jax.cell`` makes new programs), so every predictor of a model reuses what an
  earlier one compiled instead of compiling again (about 1 s a program here)."""
  del math_key  # part of the cache key only
  options = model.scan.compiler_options(batch_size)
  step = jax.jit(model.apply, compiler_options=options)
  carry_only = jax.jit(lambda v, c, x: model.apply(v, c, x)[0], compiler_options=options)
  return step, carry_only


class StreamingPredictor:
  """Causal, online prediction over blocks of any length, the carry kept between calls.

  A block is cut into ``chunk_len`` pieces, so memory is bounded by the chunk, not the record.
  A piece shorter than ``chunk_len`` is zero-padded at its end for the output (the model is
  causal: samples after t never change the prediction at t) and run again at its exact length
  for the carry (XLA code for the head differs with the length, in the last bit; the LSTM scan
  does not). So every output comes from the same compiled program as a whole-record pass and
  equals it bit for bit (tests/test_streaming.py) when ``chunk_len`` is a multiple of 16 (with
  another length, XLA's vector remainder loop makes rows differ by ~1 ulp); a linear part's
  output, an FFT convolution per block in float64, agrees to ~1e-15. No look-ahead is ever used.

  Several streams are sharded over this process's devices where that measured faster
  (``parallel.inference_shards``; on a multi-core CPU after ``parallel.set_cpu_devices``); each
  stream's output is the same as on one device.
  """

  def __init__(self, trained: TrainedModel, batch_size: int, chunk_len: int):
    self.trained = trained
    self.chunk_len = int(chunk_len)
    if self.chunk_len < 1:
      raise data_lib.DataError(f'chunk_len must be >= 1, got {chunk_len}')
    self._model = trained.model
    self.batch_size = int(batch_size)
    self.placement = parallel.Placement.for_inference(self.batch_size, self._model.lstm_sizes,
                                                      self._model.scan, self._model.cell)
    self._variables = self.placement.replicated({'params': trained.params})
    key = self._model.get_cell().math_key()
    try:
      self._step, self._carry_only = _inference_programs(self._model, self.batch_size, key)
    except TypeError:  # a field that cannot be hashed (a list): this predictor's own programs
      self._step, self._carry_only = _inference_programs.__wrapped__(self._model, self.batch_size)
    self.reset()

  def reset(self) -> None:
    """Forget the past: the next block starts from a zero carry (and an FIR history of
    zeros, the witnesses' means)."""
    self.carry = self.placement.streams(self._model.initialize_carry(self.batch_size), 0)
    linear = self.trained.linear
    self.fir_history = (None if linear is None else
                        np.zeros((self.batch_size, linear.n_taps - 1, linear.n_channels),
                                 np.float32))
    # The raw witnesses a lagged product needs from before a block (None: their means).
    self.product_history = [None] * self.batch_size

  def push(self, witnesses_TxC) -> np.ndarray:
    """Feeds witnesses (T, C) or (B, T, C) in physical units; returns the prediction in target
    units, (T,) or (B, T)."""
    x = np.asarray(witnesses_TxC)  # as given: the normalizer scales in float64 blocks
    squeeze = x.ndim == 2
    if squeeze:
      x = x[None]
    n_in = self.trained.n_inputs
    if x.ndim != 3 or x.shape[-1] != n_in:
      raise data_lib.DataError(f'witnesses have shape {x.shape[1:] if squeeze else x.shape}; '
                               f'the model was trained on {n_in} witness channels')
    if x.shape[0] != self.batch_size:
      raise data_lib.DataError(f'witnesses hold {x.shape[0]} streams; this predictor was made '
                               f'for {self.batch_size}')
    raw = x
    x = self.trained.input_norm.apply(x)
    outs = []
    for start in range(0, x.shape[1], self.chunk_len):
      piece = x[:, start:start + self.chunk_len]
      n = piece.shape[1]
      if n == self.chunk_len:
        self.carry, y = self._step(self._variables, self.carry, self.placement.streams(piece, 0))
      else:
        padded = np.zeros((x.shape[0], self.chunk_len, n_in), np.float32)
        padded[:, :n] = piece
        _, y = self._step(self._variables, self.carry, self.placement.streams(padded, 0))
        self.carry = self._carry_only(self._variables, self.carry,
                                      self.placement.streams(piece, 0))
      outs.append(np.asarray(y[:, :n, 0]))
    y = np.concatenate(outs, axis=1) if outs else np.zeros((x.shape[0], 0), np.float32)
    y = self.trained.target_norm.invert(y[..., None])[..., 0]
    if self.fir_history is not None:
      y = y + self._linear_part(raw)
    return y[0] if squeeze else y

  def _linear_part(self, witnesses_BxTxC) -> np.ndarray:
    """The linear path's output (target units); its history of the witnesses moves on."""
    linear = self.trained.linear
    x_BxTxC = np.stack([linear.scaled_inputs(w, before) for w, before in
                        zip(witnesses_BxTxC, self.product_history)])
    lag = 0 if linear.products is None else linear.products.max_lag
    if lag:
      self.product_history = [
          np.concatenate([before, w])[-lag:] if before is not None else np.asarray(w)[-lag:]
          for w, before in zip(witnesses_BxTxC, self.product_history)]
    y = np.stack([linear.apply_scaled(x, hist) for x, hist in zip(x_BxTxC, self.fir_history)])
    if linear.n_taps > 1:
      past = np.concatenate([self.fir_history, x_BxTxC], axis=1)
      self.fir_history = past[:, past.shape[1] - (linear.n_taps - 1):]
    return y


def push_blocks(stream: StreamingPredictor, witnesses_TxC, block_size: int,
                warmup_blocks: int = 2) -> tuple[np.ndarray, dict]:
  """Feeds a record block by block as it would arrive online; returns the prediction and the
  per-block latency (µs, p50/p99/max over the blocks after ``warmup_blocks``, which compile)."""
  if block_size < 1:
    raise data_lib.DataError(f'block_size must be >= 1, got {block_size}')
  parts, latency_us = [], []
  for start in range(0, len(witnesses_TxC), block_size):
    t0 = time.perf_counter()
    parts.append(stream.push(witnesses_TxC[start:start + block_size]))  # returns host numpy
    latency_us.append(1e6 * (time.perf_counter() - t0))
  steady = np.asarray(latency_us[warmup_blocks:] or latency_us)
  stats = {'block_size': block_size, 'n_blocks': len(steady),
           'p50_us': float(np.percentile(steady, 50)), 'p99_us': float(np.percentile(steady, 99)),
           'max_us': float(steady.max())}
  return np.concatenate(parts), stats


def online_latency(trained: Optional['TrainedModel'] = None, fs: float = 2048.0,
                   block_seconds: float = 1.0 / 16, seconds: float = 30.0,
                   seed: int = 0) -> list[dict]:
  """Latency of online cleaning per block of ``block_seconds``, on random witnesses.

  ``trained`` defaults to the default recipe's model with random weights (the same compute as
  a trained one). Two layouts are timed: ``chunk_len = block`` (every block is one full chunk)
  and ``chunk_len = eval_chunk_len`` (a block is padded to the chunk for the output).
  """
  if trained is None:
    config = Config()
    model = build_model(config)
    params = model.init(jax.random.key(seed), model.initialize_carry(1),
                        jnp.zeros((1, 8, 2), jnp.float32))['params']
    ident = data_lib.Normalizer(np.zeros(2, np.float32), np.ones(2, np.float32))
    trained = TrainedModel(config, params, ident,
                           data_lib.Normalizer(np.zeros(1, np.float32), np.ones(1, np.float32)), 2)
  block = max(1, int(round(block_seconds * fs)))
  rng = np.random.default_rng(seed)
  witnesses = rng.standard_normal((int(seconds * fs), trained.n_inputs)).astype(np.float32)
  records = []
  for chunk_len in (block, trained.config.eval_chunk_len):
    _, stats = push_blocks(trained.stream(chunk_len=chunk_len), witnesses, block)
    records.append(dict(stats, chunk_len=chunk_len, block_seconds=block / fs, fs=fs,
                        lstm_sizes=list(trained.config.lstm_sizes),
                        realtime_factor=(block / fs) / (stats['p99_us'] * 1e-6),
                        device_kind=jax.devices()[0].device_kind))
  return records
