"""Cleaning a recording with a trained model: the library side of ``experiments/clean.py``."""
from __future__ import annotations

import json
import os
from typing import Optional

import numpy as np

from lstm_jax import data as data_lib
from lstm_jax import metrics as metrics_lib
from lstm_jax.inference import TrainedModel, push_blocks


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
    prediction, latency = push_blocks(trained.stream(chunk_len=chunk_len), rec.witnesses,
                                      block_size)
    metrics['block_latency'] = dict(latency, block_seconds=block_size / rec.fs)
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
