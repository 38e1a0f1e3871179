"""How the field judges a subtraction: held out, in the time and the frequency domain."""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from lstm_jax.data import Recording

# Floors that only keep 0 / 0 away: data in physical units (strain ~1e-21, its power 1e-42)
# must never reach them, so they sit at the smallest normal float64.
TINY = float(np.finfo(np.float64).tiny)


def _std(x) -> float:
  return float(np.std(np.asarray(x, np.float64)))


def noise_reduction_db(noise, prediction) -> float:
  """NR = 20 log10(std(noise) / std(noise - prediction)); 0 dB means nothing removed.

  Means are removed (std, not rms): a target's DC offset is neither noise nor in any band the
  field judges, and with rms a recording at 2e6 +- 1 would score its offset (docs/quality.md,
  "Scaling, physical units and offsets").
  """
  return float(20.0 * np.log10(_std(noise) / max(_std(np.asarray(noise) - prediction), TINY)))


def r2_score(y, prediction) -> float:
  y = np.asarray(y, np.float64)
  ss_res = np.sum(np.square(y - prediction))
  ss_tot = np.sum(np.square(y - y.mean()))
  return float(1.0 - ss_res / max(ss_tot, TINY))


def nperseg_for(n_samples: int, fs: float) -> int:
  """Welch segment: 4 s where the record allows (>= 8 segments), a power of two."""
  want = min(int(4 * fs), n_samples // 8) if fs > 1 else n_samples // 8
  return int(2 ** np.floor(np.log2(max(want, 16))))


def asd(x, fs: float, nperseg: Optional[int] = None):
  """Amplitude spectral density (Welch, Hann, 50% overlap), in units / sqrt(Hz)."""
  import scipy.signal  # here, not at the top: it adds ~1.2 s to every command's start

  x = np.asarray(x, np.float64)
  nperseg = min(nperseg or nperseg_for(len(x), fs), len(x))
  f, psd = scipy.signal.welch(x, fs=fs, nperseg=nperseg)
  return f, np.sqrt(psd)


def default_band(fs: float, n_samples: int) -> tuple[float, float]:
  """Everything but the lowest 4 Welch bins (DC and window leakage) up to Nyquist."""
  return 4.0 * fs / nperseg_for(n_samples, fs), fs / 2.0


def band_mask(f, band: Sequence[float]):
  return (f >= band[0]) & (f <= band[1])


def evaluate(rec: Recording, prediction, band: Optional[Sequence[float]] = None) -> dict:
  """Metrics of ``cleaned = target - prediction`` on ``rec``.

  ``nr_db`` is against the true noise where the recording knows it (mocks), else against the
  target (how much of the target's power the subtraction removed).
  """
  prediction = np.asarray(prediction, np.float64).reshape(-1)
  target = rec.target.astype(np.float64)
  cleaned = target - prediction
  band = tuple(band) if band else default_band(rec.fs, len(target))
  f, asd_target = asd(target, rec.fs)
  _, asd_cleaned = asd(cleaned, rec.fs)
  mask = band_mask(f, band)
  if not mask.any():
    raise ValueError(f'band {band} Hz holds no frequency bin (fs={rec.fs})')
  ratio = asd_cleaned[mask] / np.maximum(asd_target[mask], TINY)
  metrics = {
      'band_hz': [float(band[0]), float(band[1])],
      'band_nr_db': float(10 * np.log10(np.sum(asd_target[mask] ** 2) /
                                        max(np.sum(asd_cleaned[mask] ** 2), TINY))),
      'asd_ratio_band_mean': float(np.mean(ratio)),
      'asd_ratio_band_median': float(np.median(ratio)),
      'r2': r2_score(target, prediction),
      'prediction_std_over_target_std': float(np.std(prediction) / max(np.std(target), TINY)),
      'n_samples': int(len(target)),
  }
  if rec.noise is not None:
    noise = rec.noise.astype(np.float64)
    metrics.update(nr_db=noise_reduction_db(noise, prediction), nr_reference='noise',
                   r2_noise=r2_score(noise, prediction),
                   nrmse_noise=_std(noise - prediction) / max(_std(noise), TINY))
  else:
    metrics.update(nr_db=noise_reduction_db(target, prediction), nr_reference='target')
  return metrics


def plot(rec: Recording, prediction, out_dir: str, prefix: str = 'heldout',
         band: Optional[Sequence[float]] = None, zoom_seconds: float = 4.0) -> list[str]:
  """Writes the time-domain zoom, the ASDs and the ASD ratio as PNG; returns the paths."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  os.makedirs(out_dir, exist_ok=True)
  prediction = np.asarray(prediction).reshape(-1)
  cleaned = rec.target - prediction
  paths = []

  n = min(len(rec.target), max(int(zoom_seconds * rec.fs), 16))
  t = np.arange(n) / rec.fs
  fig, ax = plt.subplots(figsize=(10, 4))
  ax.plot(t, rec.target[:n], lw=0.8, label='target')
  ax.plot(t, prediction[:n], lw=0.8, label='prediction')
  ax.plot(t, cleaned[:n], lw=0.8, label='residual (target - prediction)')
  if rec.noise is not None:
    ax.plot(t, rec.noise[:n] - prediction[:n], lw=0.8, label='noise - prediction')
  ax.set_xlabel('time since start of held-out stretch [s]')
  ax.set_title(f'{rec.name}: time domain (held out)')
  ax.legend(loc='upper right', fontsize=8)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, f'{prefix}_time.png'))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)

  f, a_target = asd(rec.target, rec.fs)
  _, a_cleaned = asd(cleaned, rec.fs)
  _, a_pred = asd(prediction, rec.fs)
  band = tuple(band) if band else default_band(rec.fs, len(rec.target))
  fig, ax = plt.subplots(figsize=(8, 5))
  ax.loglog(f[1:], a_target[1:], label='target')
  ax.loglog(f[1:], a_pred[1:], label='prediction', alpha=0.7)
  ax.loglog(f[1:], a_cleaned[1:], label='residual')
  if rec.noise is not None:
    _, a_noise = asd(rec.noise, rec.fs)
    ax.loglog(f[1:], a_noise[1:], '--', label='true noise', alpha=0.7)
  ax.axvspan(*band, color='0.9', zorder=0, label='band')
  ax.set_xlabel('frequency [Hz]')
  ax.set_ylabel('ASD [1/sqrt(Hz)]')
  ax.set_title('amplitude spectral density (held out)')
  ax.legend(fontsize=8)
  fig.tight_layout()
  paths.append(os.path.join(out_dir, f'{prefix}_asd.png'))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)

  fig, ax = plt.subplots(figsize=(8, 4))
  ax.semilogx(f[1:], a_cleaned[1:] / np.maximum(a_target[1:], TINY))
  ax.set_yscale('log')
  ax.axhline(1.0, color='k', lw=0.5)
  ax.axvspan(*band, color='0.9', zorder=0)
  ax.set_xlabel('frequency [Hz]')
  ax.set_ylabel('ASD(residual) / ASD(target)')
  ax.set_title('ASD ratio (held out): below 1 = noise removed')
  fig.tight_layout()
  paths.append(os.path.join(out_dir, f'{prefix}_asd_ratio.png'))
  fig.savefig(paths[-1], dpi=110)
  plt.close(fig)
  return paths
