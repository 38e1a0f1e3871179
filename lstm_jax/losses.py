"""Training losses: mean squared error, and a DeepClean-style band-limited spectral loss.

The spectral loss judges a prediction the way the field judges a subtraction: by how much of the
target's power spectral density is left in the residual, in a frequency band. For a chunk of
``B`` streams it is the band mean over frequency bins of ``PSD(target - prediction) / PSD(target)``
with both PSDs Welch estimates (Hann window, 50% overlap, constant detrend) averaged over the
streams. It is differentiable (an rFFT of a windowed, reshaped signal) and blind to what lies
outside the band, so it is mixed with the MSE by a weight:
``(1 - loss_weight) * MSE + loss_weight * spectral``.

``psd_floor`` bounds the per-bin weights: each bin's ``PSD(target)`` is raised to at least
``psd_floor`` times its band mean before dividing. 0 is the plain ratio, which weighs a bin where
the target is quiet as much as a loud one: on a low-passed target it made a model predict
nothing (docs/quality.md, "Loss"). 1 only takes weight off the bins louder than the
band mean, where unexplainable target content (a drift, a line no witness sees) would otherwise
dominate the gradient.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax.numpy as jnp
import numpy as np

LOSSES = ('mse', 'spectral')

LossFn = Callable[[jnp.ndarray, jnp.ndarray], jnp.ndarray]


def mse(pred_BxTxO, y_BxTxO):
  return jnp.mean(jnp.square(pred_BxTxO - y_BxTxO))


def welch_psd(x_BxT, nperseg: int):
  """One-sided Welch periodograms (B, nperseg // 2 + 1), up to a constant factor.

  Hann window, hop ``nperseg // 2``, each segment's mean removed; the constant scaling of
  ``scipy.signal.welch`` is left out (it cancels in a ratio of two PSDs).
  """
  t = x_BxT.shape[-1]
  if nperseg < 4 or nperseg > t:
    raise ValueError(f'Welch segment of {nperseg} samples does not fit a {t}-sample chunk '
                     '(need 4 <= loss_nperseg <= chunk_len)')
  hop = nperseg // 2
  n_seg = (t - nperseg) // hop + 1
  idx = hop * np.arange(n_seg)[:, None] + np.arange(nperseg)[None, :]  # (S, N), static
  frames = x_BxT[:, idx]  # (B, S, N)
  frames = frames - jnp.mean(frames, axis=-1, keepdims=True)
  window = jnp.asarray(np.hanning(nperseg + 1)[:-1], x_BxT.dtype)  # periodic Hann, as scipy
  spec = jnp.fft.rfft(frames * window[None, None, :], axis=-1)
  return jnp.mean(jnp.square(jnp.abs(spec)), axis=1)


def band_bins(fs: float, nperseg: int, band: Optional[Sequence[float]]) -> np.ndarray:
  """Indices of the rFFT bins but DC (each segment's mean is removed) that overlap ``band`` (Hz),
  a bin spanning its frequency +- half a bin; all of them when ``band`` is None. A band narrower
  than a bin (a line at 60 Hz with bins every 8 Hz) gets the bins that cover it."""
  f = np.fft.rfftfreq(nperseg, 1.0 / fs)
  if band is None:
    return np.arange(1, f.size)
  lo, hi = band
  half = 0.5 * fs / nperseg
  bins = 1 + np.flatnonzero((f[1:] + half > lo) & (f[1:] - half < hi))
  if bins.size == 0:
    raise ValueError(f'band [{lo:g}, {hi:g}] Hz holds no frequency bin of a {nperseg}-sample '
                     f'Welch segment at fs = {fs:g} Hz (bins every {fs / nperseg:g} Hz)')
  return bins


def spectral_ratio(pred_BxT, y_BxT, bins: np.ndarray, nperseg: int, psd_floor: float = 0.0,
                   eps: float = 1e-12):
  """Band mean of PSD(y - pred) / max(PSD(y), psd_floor * band mean of PSD(y)), PSDs averaged
  over the batch: 1 = nothing removed, at ``psd_floor`` 0."""
  psd_res = jnp.mean(welch_psd(y_BxT - pred_BxT, nperseg), axis=0)[bins]
  psd_y = jnp.mean(welch_psd(y_BxT, nperseg), axis=0)[bins]
  return jnp.mean(psd_res / (jnp.maximum(psd_y, psd_floor * jnp.mean(psd_y)) + eps))


def window_psd_ratio(pred_BxT, y_BxT, bins: np.ndarray, nperseg: int, eps: float = 1e-12):
  """DeepClean's loss, one value per window (B,): the band mean over bins of
  PSD(y - pred) / PSD(y), each window's own Welch PSDs (``welch_psd``: Hann, hop
  ``nperseg // 2``). ``spectral_ratio`` averages the PSDs over the batch first; this keeps each
  window's ratio, as DeepClean's ``PsdRatio`` does (with a Welch mean, not its median)."""
  psd_res = welch_psd(y_BxT - pred_BxT, nperseg)[:, bins]
  psd_y = welch_psd(y_BxT, nperseg)[:, bins]
  return jnp.mean(psd_res / (psd_y + eps), axis=-1)


def make_loss(name: str = 'mse', fs: float = 1.0, band: Optional[Sequence[float]] = None,
              weight: float = 0.5, nperseg: int = 256, psd_floor: float = 0.0) -> LossFn:
  """A ``(pred_BxTxO, y_BxTxO) -> scalar`` loss.

  Args:
    name: 'mse' or 'spectral' (``(1 - weight) * MSE + weight * spectral ratio``).
    fs: sampling rate in Hz, to place ``band``.
    band: (lo, hi) Hz of the spectral term; None: every bin but DC.
    weight: the spectral term's share, in [0, 1].
    nperseg: Welch segment length in samples (at most the chunk the loss sees).
    psd_floor: the target PSD's floor, as a fraction of its band mean (see the module doc).
  """
  if name == 'mse':
    return mse
  if name != 'spectral':
    raise ValueError(f'loss must be one of {LOSSES}, got {name!r}')
  if not 0.0 <= weight <= 1.0:
    raise ValueError(f'loss_weight must be in [0, 1], got {weight}')
  if psd_floor < 0.0:
    raise ValueError(f'loss_psd_floor must be >= 0, got {psd_floor}')
  bins = band_bins(fs, nperseg, band)

  def loss(pred_BxTxO, y_BxTxO):
    spectral = spectral_ratio(pred_BxTxO[..., 0], y_BxTxO[..., 0], bins, nperseg, psd_floor)
    return (1.0 - weight) * mse(pred_BxTxO, y_BxTxO) + weight * spectral

  return loss


def segment_length(config) -> int:
  """The spectral loss's Welch segment: ``loss_nperseg``, or min(chunk_len, 256) when 0."""
  return config.loss_nperseg or min(config.chunk_len, 256)


def loss_from_config(config, fs: float) -> LossFn:
  """The loss a ``Config`` asks for: ``loss``, ``loss_weight``, ``loss_nperseg``,
  ``loss_psd_floor`` and the band ``band_lo``..``band_hi`` (Hz; 0 and 0: every bin but DC)."""
  band = (config.band_lo, config.band_hi) if config.band_hi > 0 else None
  return make_loss(config.loss, fs, band, config.loss_weight, segment_length(config),
                   config.loss_psd_floor)
