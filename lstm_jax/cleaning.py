"""Cleaning a recording with a trained model: the library side of ``experiments/clean.py``.

The recording is read, predicted and written block by block (``lstm_jax.channels``), so a long
file is cleaned in bounded memory; its metrics accumulate as it goes (``lstm_jax.spectra``).
"""
from __future__ import annotations

import json
import time
from typing import Optional, Sequence

from absl import logging
import numpy as np

from lstm_jax import bandlimit
from lstm_jax import channels
from lstm_jax import data as data_lib
from lstm_jax import gw
from lstm_jax import spectra
from lstm_jax.inference import TrainedModel


def clean_file(model_dir: str, input_path: str, output_path: str,
               chunk_len: Optional[int] = None, fs: Optional[float] = None,
               block_size: Optional[int] = None,
               selection: Optional[channels.Selection] = None, output_channel: str = '',
               band: Optional[Sequence[float]] = None,
               target_strain: Optional[bool] = None,
               clean_outside_band: Optional[bool] = None) -> dict:
  """Streams ``input_path`` through the model in ``model_dir`` (a training workdir or its
  ``model/``); writes ``output_path``.

  ``.npz`` output holds ``prediction`` (T,) in target units and, when the input has a target,
  ``cleaned = target - prediction``; ``.gwf``/``.h5`` output holds the cleaned target as the
  channel ``<target>_CLEAN`` (``output_channel`` overrides) and the prediction as
  ``<target>_PREDICTION``, over the input's whole span at its t0 and rate. A gap (NaN in a
  witness of a frame or HDF5 input) gives NaN there and the carry restarts after it. With
  ``block_size`` the recording is fed as it would arrive online, ``block_size`` samples at a
  time, and the per-block latency is reported. Returns (and prints) the metrics, if any.

  ``band`` (Hz; None: the model's ``band_lo``..``band_hi``, if any) is the band of the figures
  and, unless ``clean_outside_band`` (None: the model's setting), the only band where the
  prediction is subtracted: it is band-passed there first (``lstm_jax.bandlimit``), the cleaned
  output waiting for the band-pass's look-ahead, and ``prediction`` holds what was subtracted.
  """
  if not output_path.lower().endswith(channels.OUTPUT_SUFFIXES):
    raise data_lib.DataError(f'{output_path}: the output must be .npz, .gwf, .h5 or .hdf5')
  trained, reader = open_with_model(model_dir, input_path, selection, fs, require_target=False)
  try:
    return _clean(trained, reader, output_path, chunk_len, block_size, output_channel,
                  band or _config_band(trained.config), target_strain,
                  bandlimit.subtracted_band(trained.config, band, clean_outside_band))
  finally:
    reader.close()


def open_with_model(model_dir: str, input_path: str,
                    selection: Optional[channels.Selection] = None, fs: Optional[float] = None,
                    require_target: bool = True) -> tuple[TrainedModel, channels.Reader]:
  """The model in ``model_dir`` (a training workdir or its ``model/``) and a reader of
  ``input_path``'s channels by the model's names (unless ``selection`` names others), checked
  against the channels and rate the model was trained on."""
  model_dir = channels.resolve_model_dir(model_dir)
  trained = TrainedModel.load(model_dir)
  inputs = channels.ModelInputs.load(model_dir, trained.config, trained.n_inputs)
  selection = selection or channels.Selection()
  if channels.is_channel_file(input_path):
    selection = inputs.selection_for(selection)
  reader = channels.open_reader(input_path, selection, fs, require_target)
  try:
    inputs.check(reader, model_dir)
  except BaseException:
    reader.close()
    raise
  return trained, reader


def _clean(trained, reader, output_path, chunk_len, block_size, output_channel, band,
           target_strain, subtract_band) -> dict:
  first = reader.read(0, min(reader.n_samples, 1))
  has_target = first.target is not None
  with_noise = first.noise is not None
  target = reader.target_name or 'TARGET'
  if output_path.lower().endswith('.npz'):
    names = ['prediction'] + (['cleaned'] if has_target else [])
  else:
    names = [f'{target}_PREDICTION'] + ([output_channel or f'{target}_CLEAN']
                                        if has_target else [])
    if not has_target:
      logging.warning('%s holds no target channel (%s): writing the prediction only',
                      reader.path, reader.target_name)
  # Built first: a band the rate cannot hold is named before anything is written.
  limiter = bandlimit.Aligned(subtract_band, reader.fs)
  writer = channels.open_writer(output_path, names, reader.t0, reader.fs, reader.n_samples,
                                [reader.target_unit] * len(names))
  stream = trained.stream(chunk_len=chunk_len)
  evaluation = None
  if has_target:
    evaluation = spectra.StreamingEvaluation(reader.fs, reader.n_samples, band, with_noise)
  block = block_size or -(-channels.BLOCK_SAMPLES // stream.chunk_len) * stream.chunk_len
  latency_us, gaps, in_gap, t_start = [], [], False, time.perf_counter()

  def emit(prediction, *columns):  # the prediction as subtracted, with its samples' columns
    if not len(prediction):
      return
    if evaluation is not None:
      noise = columns[1] if with_noise else None
      _evaluate_runs(evaluation, columns[0], prediction, noise)
    writer.write([prediction] + ([columns[0] - prediction] if has_target else []))

  try:
    for start, rec in reader.blocks(block):
      bad = ~np.isfinite(rec.witnesses).all(axis=1) if reader.nan_is_gap else np.zeros(len(rec),
                                                                                         bool)
      prediction = np.full(len(rec), np.nan)
      t0 = time.perf_counter()
      for a, b in _runs_and_gaps(bad):
        if bad[a]:  # a gap: nothing predicted; the carry restarts after it
          if not in_gap:
            gaps.append([reader.t0 + (start + a) / reader.fs, None])
          in_gap = True
          continue
        if in_gap:
          gaps[-1][1] = reader.t0 + (start + a) / reader.fs
          stream.reset()
          in_gap = False
        prediction[a:b] = stream.push(rec.witnesses[a:b])
      latency_us.append(1e6 * (time.perf_counter() - t0))
      columns = ([rec.target] if has_target else []) + ([rec.noise] if with_noise else [])
      emit(*limiter.push(prediction, *columns))
    emit(*limiter.flush())
    writer.close()
  except BaseException:
    writer.abort()
    raise
  seconds = time.perf_counter() - t_start
  metrics = {'seconds': reader.n_samples / reader.fs, 'wall_s': seconds,
             'realtime_factor': reader.n_samples / reader.fs / max(seconds, 1e-9)}
  if subtract_band is not None:
    metrics['subtracted_band_hz'] = [float(b) for b in subtract_band]
    metrics['band_limit_delay_s'] = limiter.delay / reader.fs
  for gap in gaps:
    logging.warning('%s: gap (NaN) from GPS %.6f to %s: prediction NaN there, the carry '
                    'restarted after it', reader.path, gap[0],
                    'the end' if gap[1] is None else f'{gap[1]:.6f}')
  if gaps:
    metrics['gaps_gps'] = gaps
  if block_size:
    steady = np.asarray(latency_us[2:] or latency_us)
    metrics['block_latency'] = {
        'block_size': block_size, 'n_blocks': len(steady), 'block_seconds': block_size / reader.fs,
        'p50_us': float(np.percentile(steady, 50)), 'p99_us': float(np.percentile(steady, 99)),
        'max_us': float(steady.max())}
  if evaluation is not None:
    metrics.update(evaluation.result())
    f, psd_target, psd_cleaned = evaluation.psds()
    strain = gw.is_strain(reader.target_unit, reader.target_name, target_strain)
    metrics['gw'] = gw.figures_of_merit(f, psd_target, psd_cleaned, metrics['band_hz'], strain)
  print(json.dumps(metrics, indent=1))
  print(f'wrote {output_path} ({reader.n_samples} samples)')
  return metrics


def _evaluate_runs(evaluation, target, prediction, noise) -> None:
  """Adds the samples where the prediction and the target are finite; at any other sample (a
  gap) no spectrum segment spans it."""
  good = np.isfinite(prediction) & np.isfinite(target)
  for a, b in _runs_and_gaps(~good):
    if good[a]:
      evaluation.add(target[a:b], prediction[a:b], None if noise is None else noise[a:b])
    else:
      evaluation.gap()


def _runs_and_gaps(bad_T: np.ndarray) -> list[tuple[int, int]]:
  """The block cut where ``bad_T`` changes: ``[(start, stop), ...]`` covering it in order."""
  edges = np.flatnonzero(np.diff(bad_T.astype(np.int8))) + 1
  bounds = [0] + edges.tolist() + [len(bad_T)]
  return [(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _config_band(config):
  return (config.band_lo, config.band_hi) if config.band_hi > 0 else None
