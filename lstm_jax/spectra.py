"""Spectra and metrics accumulated block by block, for recordings too long to hold in memory.

``WelchAccumulator`` is ``scipy.signal.welch`` (Hann, 50% overlap, mean removed per segment,
density scaling, mean over segments) fed in pieces; ``StreamingEvaluation`` gives the same
numbers as ``lstm_jax.metrics.evaluate`` on the whole recording. Both take ``gap()``: after it,
segments start afresh (no Welch segment spans a gap).
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from lstm_jax import data as data_lib
from lstm_jax import metrics as metrics_lib


class WelchAccumulator:
  """Welch PSDs of K series at once, fed as (n, K) blocks; ``psd()`` -> (f, (F, K))."""

  def __init__(self, fs: float, nperseg: int, n_series: int):
    import scipy.signal
    self.fs, self.nperseg, self.step = float(fs), int(nperseg), int(nperseg) - int(nperseg) // 2
    self.window = scipy.signal.get_window('hann', self.nperseg)
    self.sum = np.zeros((self.nperseg // 2 + 1, n_series))
    self.n_segments = 0
    self.tail = np.zeros((0, n_series))

  def add(self, x_TxK) -> None:
    x = np.concatenate([self.tail, np.asarray(x_TxK, np.float64).reshape(len(x_TxK), -1)])
    n_seg = 0 if len(x) < self.nperseg else (len(x) - self.nperseg) // self.step + 1
    if n_seg:
      segments = np.lib.stride_tricks.sliding_window_view(x, self.nperseg, axis=0)[::self.step]
      segments = segments[:n_seg]  # (S, K, nperseg)
      segments = segments - segments.mean(-1, keepdims=True)
      spectra = np.fft.rfft(segments * self.window, axis=-1)
      self.sum += np.sum(np.abs(spectra) ** 2, axis=0).T
      self.n_segments += n_seg
    self.tail = x[n_seg * self.step:]

  def gap(self) -> None:
    """The next sample does not continue the last: no segment joins the two."""
    self.tail = self.tail[:0]

  def psd(self) -> tuple[np.ndarray, np.ndarray]:
    if not self.n_segments:
      raise data_lib.DataError(f'fewer than {self.nperseg} contiguous samples: no spectrum')
    psd = self.sum / (self.n_segments * self.fs * np.sum(self.window ** 2))
    psd[1:len(psd) - (0 if self.nperseg % 2 else 1)] *= 2.0  # one-sided
    return np.fft.rfftfreq(self.nperseg, 1.0 / self.fs), psd


class StreamingEvaluation:
  """``metrics.evaluate`` of ``target - prediction`` over a recording fed in pieces.

  ``n_samples`` (the whole recording's length) fixes the Welch segment as ``evaluate`` picks
  it; ``band`` None: ``metrics.default_band``. ``noise`` (the true coupled noise, mocks only)
  is given with every piece or never.
  """

  def __init__(self, fs: float, n_samples: int, band: Optional[Sequence[float]] = None,
               with_noise: bool = False):
    self.fs, self.with_noise = float(fs), with_noise
    self.band = tuple(band) if band else metrics_lib.default_band(fs, n_samples)
    nperseg = min(metrics_lib.nperseg_for(n_samples, fs), n_samples)
    self.welch = WelchAccumulator(fs, nperseg, 2)  # target, cleaned
    self.moments = data_lib.Moments()

  def add(self, target, prediction, noise=None) -> None:
    target, prediction = np.asarray(target, np.float64), np.asarray(prediction, np.float64)
    cleaned = target - prediction
    self.welch.add(np.stack([target, cleaned], axis=1))
    columns = [target, prediction, cleaned]
    if self.with_noise:
      noise = np.asarray(noise, np.float64)
      columns += [noise, noise - prediction]
    self.moments.add(np.stack(columns, axis=1))

  def gap(self) -> None:
    self.welch.gap()

  def psds(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(f, PSD of the target, PSD of the cleaned target)."""
    f, psd = self.welch.psd()
    return f, psd[:, 0], psd[:, 1]

  def result(self) -> dict:
    tiny = metrics_lib.TINY
    f, psd_target, psd_cleaned = self.psds()
    mask = metrics_lib.band_mask(f, self.band)
    if not mask.any():
      raise ValueError(f'band {self.band} Hz holds no frequency bin (fs={self.fs})')
    ratio = np.sqrt(psd_cleaned[mask]) / np.maximum(np.sqrt(psd_target[mask]), tiny)
    m = self.moments
    std = np.sqrt(m.var)
    mean_square = lambda k: m.var[k] + m.mean[k] ** 2  # of column k, about zero
    r2 = lambda ref, res: float(1.0 - mean_square(res) / max(m.var[ref], tiny))
    nr_db = lambda ref, res: float(20.0 * np.log10(std[ref] / max(std[res], tiny)))
    out = {
        'band_hz': [float(self.band[0]), float(self.band[1])],
        'band_nr_db': float(10 * np.log10(np.sum(psd_target[mask]) /
                                          max(np.sum(psd_cleaned[mask]), tiny))),
        'asd_ratio_band_mean': float(np.mean(ratio)),
        'asd_ratio_band_median': float(np.median(ratio)),
        'r2': r2(0, 2),
        'prediction_std_over_target_std': float(std[1] / max(std[0], tiny)),
        'n_samples': int(m.count),
    }
    if self.with_noise:
      out.update(nr_db=nr_db(3, 4), nr_reference='noise', r2_noise=r2(3, 4),
                 nrmse_noise=float(std[4] / max(std[3], tiny)))
    else:
      out.update(nr_db=nr_db(0, 2), nr_reference='target')
    return out
