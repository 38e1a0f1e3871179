"""Cleaning a recording with a trained model: the library side of ``experiments/clean.py``."""
from __future__ import annotations

import json
import os
import time
from typing import Optional

import numpy as np

from lstm_jax import data as data_lib
from lstm_jax import metrics as metrics_lib
from lstm_jax.inference import TrainedModel


def clean_file(model_dir: str, input_path: str, output_path: str,
               chunk_len: Optional[int] = None, fs: Optional[float] = None,
               block_size: Optional[int] = None) -> dict:
  """Streams ``input_path`` through the model in ``model_dir``; writes ``output_path``.

  The output ``.npz`` holds ``prediction`` (T,) in target units and, when the input has a
  target, ``cleaned = target - prediction``. With ``block_size`` the recording is fed as it
  would arrive online, ``block_size`` samples at a time, and the per-block latency is reported.
  Returns (and prints) the metrics, if any.
  """
  trained = TrainedModel.load(model_dir)
  rec = data_lib.load_recording(input_path, fs, require_target=False)
  if rec.witnesses.shape[1] != trained.n_inputs:
    raise data_lib.DataError(f'{input_path}: {rec.witnesses.shape[1]} witness channels, but the '
                             f'model in {model_dir} was trained on {trained.n_inputs}')
  if not output_path.endswith('.npz'):
    raise data_lib.DataError(f'{output_path}: the output must be an .npz file')
  out_dir = os.path.dirname(os.path.abspath(output_path))
  if not os.path.isdir(out_dir):
    raise data_lib.DataError(f'{output_path}: directory {out_dir} does not exist')
  metrics = {}
  if block_size:
    if block_size < 1:
      raise data_lib.DataError(f'--block_size must be >= 1, got {block_size}')
    stream = trained.stream(chunk_len=chunk_len)
    parts, latency_us = [], []
    for start in range(0, len(rec), block_size):
      t0 = time.perf_counter()
      parts.append(stream.push(rec.witnesses[start:start + block_size]))
      latency_us.append(1e6 * (time.perf_counter() - t0))
    prediction = np.concatenate(parts)
    steady = np.asarray(latency_us[2:] or latency_us)  # the first blocks compile
    metrics['block_latency_us'] = {'block_size': block_size, 'p50': float(np.percentile(steady, 50)),
                                   'p99': float(np.percentile(steady, 99)),
                                   'block_seconds': block_size / rec.fs}
  else:
    prediction = trained.predict(rec.witnesses, chunk_len)
  arrays = {'prediction': prediction, 'fs': np.float64(rec.fs)}
  if rec.target is not None:
    arrays['cleaned'] = rec.target - prediction
    metrics.update(metrics_lib.evaluate(rec, prediction))
  if metrics:
    print(json.dumps(metrics, indent=1))
  np.savez(output_path, **arrays)
  print(f'wrote {output_path} ({len(prediction)} samples)')
  return metrics
