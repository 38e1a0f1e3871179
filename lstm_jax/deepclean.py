"""A DeepClean-architecture peer: the gravitational-wave field's reference nonlinear cleaner,
written in Flax, with its own recipe scaled to the recording.

DeepClean (Ormiston et al. 2020; Saleem et al. 2024; ML4GW) is a 1-D convolutional autoencoder
over the witness channels: an input convolution, four stride-2 convolutions of 8, 16, 32 and 64
channels (kernel 7, batch norm, tanh), a mirrored stack of stride-2 transposed convolutions back
to the input's length, and a convolution to one output channel. It is trained on windows of
8 s taken every 0.25 s (the last 25% of the data held out for validation), batch 32, Adam under
a one-cycle schedule peaking at 3.2e-2, with early stopping, on the band mean of
PSD(target - prediction) / PSD(target) (Welch, 2 s FFTs, 1 s overlap) inside the cleaning band.

Preprocessing follows ML4GW's code: the witnesses are standardized (not band-passed: band-passing
them to a 55-65 Hz band would delete the slow angular witnesses whose product with the mains
makes the sidebands), the target is standardized and band-passed (Butterworth, order 8,
forward-backward); the prediction is band-passed the same way and scaled back.

Scaled to the recording: the window is 8 s or, where the validation part is shorter, that part
(a multiple of 16 samples, what the four stride-2 layers need), the FFT 2 s or 2/5 of the window,
its overlap half of it. The band is given, or chosen from the training target's spectrum
(``choose_band``). Epochs: as many as the wall-time budget allows (at most 500), the one-cycle
schedule spread over them, early stopping (patience in epochs) on the validation loss of the
offline-cleaned validation part; the parameters kept are those of the best validation.

It is not causal: every output sample sees the witnesses of its whole window, before and after
it. ``predict`` cleans offline: windows with a hop of a quarter window, each output weighted by
a Hann window and the overlaps summed and divided by the summed weights (Hann overlap-add), the
record padded by half a window of the witnesses' mean at both ends. Its latency, run online, is
one window (``latency_seconds``); ours (the LSTM) is causal, one sample.
"""
from __future__ import annotations

import dataclasses
import math
import time
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.signal

from lstm_jax import data as data_lib
from lstm_jax import losses
from lstm_jax import metrics as metrics_lib

FEATURES = (8, 16, 32, 64)
KERNEL = 7
WINDOW_SECONDS = 8.0
STRIDE_SECONDS = 0.25
FFT_SECONDS = 2.0
VAL_FRACTION = 0.25
BATCH_SIZE = 32
LEARNING_RATE = 3.2e-2
MAX_EPOCHS = 500
FILTER_ORDER = 8
_MULTIPLE = 2 ** len(FEATURES)  # the window's length is a multiple of this
MIN_WINDOW = 256  # samples: a Welch FFT of 2/5 of it still resolves a band


class DeepCleanNet(nn.Module):
  """(B, T, C) standardized witnesses -> (B, T) prediction; T a multiple of 16."""
  n_witnesses: int
  features: Sequence[int] = FEATURES
  kernel: int = KERNEL

  polyphase: bool = True

  @nn.compact
  def __call__(self, x_BxTxC, train: bool = False):
    k2 = (self.kernel + 1) // 2  # taps per phase

    def block(h, features, stride, transpose=False):
      b, t, c = h.shape
      if stride == 1:
        h = nn.Conv(features, (self.kernel,), padding='SAME')(h)
      elif not self.polyphase:
        conv = nn.ConvTranspose if transpose else nn.Conv
        h = conv(features, (self.kernel,), strides=(stride,), padding='SAME')(h)
      elif transpose:  # both output phases from one stride-1 convolution, interleaved
        h = nn.Conv(2 * features, (k2,), padding='SAME')(h)
        h = h.reshape(b, t, 2, features).reshape(b, 2 * t, features)
      else:  # the input's sample pairs as channels, then a stride-1 convolution
        h = nn.Conv(features, (k2,), padding='SAME')(h.reshape(b, t // 2, 2 * c))
      h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
      return jnp.tanh(h)

    h = block(x_BxTxC, self.n_witnesses, 1)
    for f in self.features:
      h = block(h, f, 2)
    for f in (*reversed(self.features[:-1]), self.n_witnesses):
      h = block(h, f, 2, transpose=True)
    return nn.Conv(1, (self.kernel,), padding='SAME')(h)[..., 0]


def choose_band(series, fs: float, share: float = 0.99) -> tuple[float, float]:
  """A cleaning band from a series: the span of the loudest Welch bins (2 s FFTs) that hold
  ``share`` of its power within ``metrics.default_band`` (the scoreboard's band: no DC, no
  window leakage), widened by 10% (at least 1 Hz) each side; its top is Nyquist where the span
  reaches 0.45 fs. Given the coupled noise (a mock's, or an operator's reading of where the
  coupling is), it is the band DeepClean's configuration names; given the target, unwitnessed
  lines widen it."""
  y = np.asarray(series, np.float64)
  floor, nyquist = metrics_lib.default_band(fs, len(y))
  nperseg = min(int(FFT_SECONDS * fs), max(16, len(y) // 4))
  f, psd = scipy.signal.welch(y - y.mean(), fs, nperseg=nperseg)
  keep = (f >= floor) & (f <= nyquist)
  if not keep.any() or not np.any(psd[keep] > 0):
    return float(floor), float(nyquist)
  f, psd = f[keep], psd[keep]
  order = np.argsort(psd)[::-1]
  n = int(np.searchsorted(np.cumsum(psd[order]), share * psd.sum())) + 1
  lo, hi = float(f[order[:n]].min()), float(f[order[:n]].max())
  lo = max(float(floor), lo - max(1.0, 0.1 * lo))
  hi = hi + max(1.0, 0.1 * hi)
  return lo, (float(nyquist) if hi >= 0.45 * fs else hi)


def bandpass_sos(fs: float, band: Sequence[float], order: int = FILTER_ORDER):
  """Butterworth second-order sections for ``band``: a high-pass where it reaches Nyquist."""
  lo, hi = band
  if hi >= 0.49 * fs:
    return scipy.signal.butter(order, lo, btype='highpass', fs=fs, output='sos')
  if lo <= 0:
    return scipy.signal.butter(order, hi, btype='lowpass', fs=fs, output='sos')
  return scipy.signal.butter(order, [lo, hi], btype='bandpass', fs=fs, output='sos')


def _filtfilt(sos, x):
  x = np.asarray(x, np.float64)
  pad = min(3 * (2 * len(sos) + 1), len(x) - 1)
  return scipy.signal.sosfiltfilt(sos, x, axis=0, padlen=max(pad, 0)) if len(x) > 1 else x


def plan(n_train_samples: int, fs: float, val_fraction: float = VAL_FRACTION,
         window_seconds: float = WINDOW_SECONDS, fft_seconds: float = FFT_SECONDS) -> dict:
  """The window, FFT and validation sizes (samples) DeepClean's recipe takes on a record of
  ``n_train_samples``: the window at most ``window_seconds`` and at most the validation part,
  a multiple of 16; the FFT at most ``fft_seconds`` and 2/5 of the window, even."""
  n_val = int(round(val_fraction * n_train_samples))
  window = min(int(window_seconds * fs), n_val) // _MULTIPLE * _MULTIPLE
  nperseg = min(int(fft_seconds * fs), int(0.4 * window)) // 2 * 2
  return {'window': window, 'nperseg': nperseg, 'n_val': n_val,
          'stride': max(1, int(round(STRIDE_SECONDS * fs)))}


def _one_cycle(step, total, peak):
  """torch's OneCycleLR (cosine; 30% up from peak/25, then down to peak/25/1e4)."""
  p = jnp.minimum(step / jnp.maximum(total, 1.0), 1.0)
  start, end = peak / 25.0, peak / 25.0 / 1e4
  up = start + (peak - start) * 0.5 * (1.0 - jnp.cos(jnp.pi * p / 0.3))
  down = end + (peak - end) * 0.5 * (1.0 + jnp.cos(jnp.pi * (p - 0.3) / 0.7))
  return jnp.where(p < 0.3, up, down)


@dataclasses.dataclass
class DeepCleanConv:
  """The fitted peer: ``predict(witnesses_TxC)`` -> (T,) in target units, offline."""
  params: dict
  batch_stats: dict
  input_norm: data_lib.Normalizer
  target_norm: data_lib.Normalizer
  fs: float
  band: tuple
  window: int  # samples
  nperseg: int
  info: dict
  name: str = 'deepclean'

  @property
  def n_witnesses(self) -> int:
    return int(self.input_norm.offset.shape[0])

  @property
  def latency_seconds(self) -> float:
    """Online, an output sample waits for the end of its window: one window."""
    return self.window / self.fs

  @classmethod
  def fit(cls, records: Sequence[data_lib.Recording], band: Optional[Sequence[float]] = None,
          budget_seconds: float = 300.0, *, max_epochs: int = MAX_EPOCHS, patience: int = 10,
          batch_size: int = BATCH_SIZE, learning_rate: float = LEARNING_RATE,
          window_seconds: float = WINDOW_SECONDS, val_fraction: float = VAL_FRACTION,
          seed: int = 0) -> 'DeepCleanConv':
    """Trains on ``records`` (the last ``val_fraction`` of each validates) for at most
    ``budget_seconds`` of wall time (compilation included) and ``max_epochs`` epochs.
    ``band`` None: ``choose_band`` on the training part's coupled noise where the records know
    it, else on its target."""
    t_start = time.perf_counter()
    records = [data_lib.validate(r) for r in records]
    if not records:
      raise data_lib.DataError('DeepClean: no training records')
    fs = records[0].fs
    n_ch = records[0].witnesses.shape[1]
    for r in records:
      if r.fs != fs:
        raise data_lib.DataError(f'{r.name}: sampling rate {r.fs:g} Hz, but the first record '
                                 f'has {fs:g} Hz')
      if r.witnesses.shape[1] != n_ch:
        raise data_lib.DataError(f'{r.name}: {r.witnesses.shape[1]} witness channels, but the '
                                 f'first record has {n_ch}')
    if not 0.0 < val_fraction < 1.0:
      raise data_lib.DataError(f'DeepClean: val_fraction must be in (0, 1), got {val_fraction}')
    sizes = [plan(len(r), fs, val_fraction, window_seconds) for r in records]
    shortest = min(range(len(records)), key=lambda k: sizes[k]['window'])
    sz = sizes[shortest]
    window, nperseg, stride = sz['window'], sz['nperseg'], sz['stride']
    if window < MIN_WINDOW or any(len(r) - s['n_val'] < window for r, s in zip(records, sizes)):
      r = records[shortest]
      raise data_lib.DataError(
          f'{r.name}: {len(r)} samples at {fs:g} Hz is too short for DeepClean: its '
          f'validation part ({val_fraction:g}) must hold a window of at least '
          f'{MIN_WINDOW} samples, and the rest that window again')
    fit_parts = [r.slice(0, len(r) - s['n_val']) for r, s in zip(records, sizes)]
    val_parts = [r.slice(len(r) - s['n_val'], len(r)) for r, s in zip(records, sizes)]
    y_fit = np.concatenate([p.target for p in fit_parts])
    if band is None:
      known = all(p.noise is not None for p in fit_parts)
      band = choose_band(np.concatenate([p.noise for p in fit_parts]) if known else y_fit, fs)
    band = (float(band[0]), float(band[1]))
    if not (0.0 <= band[0] < band[1] <= fs / 2):
      raise data_lib.DataError(f'DeepClean: band {band[0]:g}-{band[1]:g} Hz must lie in '
                               f'[0, {fs / 2:g}] Hz (fs = {fs:g} Hz) with LO < HI')
    bins = losses.band_bins(fs, nperseg, band)
    sos = bandpass_sos(fs, band)
    input_norm = data_lib.Normalizer.fit(np.concatenate([p.witnesses for p in fit_parts]),
                                         'standardize', 'witness channel')
    target_norm = data_lib.Normalizer.fit(y_fit, 'standardize', 'target channel')

    def prepared(parts):
      x = np.concatenate([input_norm.apply(p.witnesses) for p in parts]).astype(np.float32)
      y = np.concatenate([_filtfilt(sos, target_norm.apply(p.target[:, None])[:, 0])
                          for p in parts]).astype(np.float32)
      return x, y

    x_fit, y_fit_bp = prepared(fit_parts)
    starts, offset = [], 0
    for p in fit_parts:
      starts.append(offset + np.arange(0, len(p) - window + 1, stride))
      offset += len(p)
    starts = np.concatenate(starts)
    steps_per_epoch = max(1, len(starts) // batch_size)
    batch = min(batch_size, len(starts))

    model = DeepCleanNet(n_ch)
    key = jax.random.key(seed)
    variables = model.init(key, jnp.zeros((1, window, n_ch)), train=False)
    params, stats = variables['params'], variables['batch_stats']
    adam = optax.scale_by_adam()
    opt_state = adam.init(params)
    x_dev, y_dev = jnp.asarray(x_fit), jnp.asarray(y_fit_bp)

    def loss_fn(p, s, idx):
      xb = jax.vmap(lambda a: jax.lax.dynamic_slice_in_dim(x_dev, a, window, 0))(idx)
      yb = jax.vmap(lambda a: jax.lax.dynamic_slice_in_dim(y_dev, a, window, 0))(idx)
      pred, updates = model.apply({'params': p, 'batch_stats': s}, xb, train=True,
                                  mutable=['batch_stats'])
      return jnp.mean(losses.window_psd_ratio(pred, yb, bins, nperseg)), updates['batch_stats']

    @jax.jit
    def train_step(p, s, o, idx, step, total):
      (value, s), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, s, idx)
      updates, o = adam.update(grads, o, p)
      lr = _one_cycle(step, total, learning_rate)
      p = jax.tree_util.tree_map(lambda a, u: a - lr * u, p, updates)
      return p, s, o, value

    fitted = cls(params, stats, input_norm, target_norm, fs, band, window, nperseg, {})
    val_y = [np.asarray(p.target, np.float64) for p in val_parts]

    def validation_loss(fitted_now) -> float:
      """The offline-cleaned validation parts, judged by the same loss (numpy, float64)."""
      values = []
      for part, y in zip(val_parts, val_y):
        pred = fitted_now.predict(part.witnesses)
        values.append(psd_ratio_reference(pred, y, fs, nperseg, band))
      return float(np.mean(values))

    rng = np.random.default_rng(seed)
    total = np.float32(max_epochs * steps_per_epoch)
    history, best, epochs_run, step, since_best = [], None, 0, 0, 0
    t_first = None
    stop_reason = 'max_epochs'
    for epoch in range(max_epochs):
      order = rng.permutation(len(starts))
      for b in range(steps_per_epoch):
        idx = starts[order[b * batch:(b + 1) * batch]]
        params, stats, opt_state, value = train_step(params, stats, opt_state,
                                                     jnp.asarray(idx, jnp.int32),
                                                     np.float32(step), total)
        step += 1
        if step == 2 and t_first is None:
          # The schedule is spread over the epochs the budget allows, judged from the first
          # steps after compilation (validation included at an epoch's share).
          jax.block_until_ready(value)
          t_first = time.perf_counter()
        elif step == 4 and t_first is not None:
          jax.block_until_ready(value)
          per_step = (time.perf_counter() - t_first) / 2
          left = budget_seconds - (time.perf_counter() - t_start)
          per_epoch = per_step * steps_per_epoch * 1.15
          epochs = int(np.clip(left / max(per_epoch, 1e-9), 1, max_epochs))
          total = np.float32(epochs * steps_per_epoch)
      epochs_run += 1
      fitted = dataclasses.replace(fitted, params=params, batch_stats=stats)
      val = validation_loss(fitted)
      history.append({'epoch': epoch + 1, 'train_loss': float(value), 'val_loss': val,
                      'seconds': time.perf_counter() - t_start})
      if epochs_run in (2, 3):
        # Re-planned from whole epochs (validation included, compilation not), while the
        # one-cycle is still rising: the schedule fills the budget, no more.
        per_epoch = history[-1]['seconds'] - history[-2]['seconds']
        left = budget_seconds - history[-1]['seconds']
        epochs = int(np.clip(epochs_run + left // max(per_epoch, 1e-9), epochs_run, max_epochs))
        total = np.float32(epochs * steps_per_epoch)
      if not math.isfinite(val):
        stop_reason = 'non-finite validation loss'
        break
      if best is None or val < best[0]:
        best, since_best = (val, epoch + 1, jax.device_get(params), jax.device_get(stats)), 0
      elif step >= 0.3 * total:  # patience counts once the one-cycle is past its peak
        since_best += 1
      if since_best >= patience:
        stop_reason = 'early stopping'
        break
      if step >= total:
        stop_reason = 'schedule done'
        break
      elapsed = time.perf_counter() - t_start
      last = elapsed - (history[-2]['seconds'] if len(history) > 1 else 0.0)
      if elapsed + last > budget_seconds:  # the first epoch's time includes compilation
        stop_reason = 'budget'
        break
    if best is None:
      raise data_lib.DataError('DeepClean: the validation loss was not finite after the first '
                               f'epoch (learning rate {learning_rate:g}); lower it')
    info = {'band_hz': list(band), 'window_s': window / fs, 'fft_s': nperseg / fs,
            'stride_s': stride / fs, 'n_windows': int(len(starts)), 'batch_size': batch,
            'epochs_run': epochs_run, 'best_epoch': best[1], 'best_val_loss': best[0],
            'planned_epochs': int(total // steps_per_epoch), 'stop': stop_reason,
            'learning_rate': learning_rate, 'budget_s': budget_seconds,
            'train_s': time.perf_counter() - t_start, 'latency_s': window / fs,
            'history': history}
    return dataclasses.replace(fitted, params=best[2], batch_stats=best[3], info=info)

  def predict(self, witnesses_TxC, batch: int = 16) -> np.ndarray:
    """(T,) in target units: Hann-weighted overlap-add of windows a quarter window apart, the
    sum band-passed as the target was and scaled back. Offline (sees every window whole)."""
    w = np.asarray(witnesses_TxC)
    if w.ndim != 2 or w.shape[1] != self.n_witnesses:
      raise data_lib.DataError(f'DeepClean: witnesses must be (T, {self.n_witnesses}), got '
                               f'shape {w.shape}')
    if not len(w):
      raise data_lib.DataError('DeepClean: no samples to clean')
    bad = ~np.isfinite(w)
    if bad.any():
      t, c = np.argwhere(bad)[0]
      raise data_lib.DataError(f'DeepClean: witness channel {c} is not finite at sample {t}')
    n, win = len(w), self.window
    hop = win // 4
    half = win // 2
    x = self.input_norm.apply(w)
    n_win = -(-(n + 2 * half - win) // hop) + 1
    padded = np.zeros((half + n + win + hop, x.shape[1]), np.float32)
    padded[half:half + n] = x
    weight = np.hanning(win + 1)[:-1]  # periodic: four at a quarter hop sum to a constant
    out = np.zeros(len(padded))
    norm = np.zeros(len(padded))
    apply = _apply_fn(self.n_witnesses)
    starts = np.arange(n_win) * hop
    for lo in range(0, n_win, batch):
      s = starts[lo:lo + batch]
      xb = np.stack([padded[a:a + win] for a in s])
      pred = np.asarray(apply(self.params, self.batch_stats, jnp.asarray(xb)), np.float64)
      for a, p in zip(s, pred):
        out[a:a + win] += weight * p
        norm[a:a + win] += weight
    y = out[half:half + n] / np.maximum(norm[half:half + n], 1e-12)
    y = _filtfilt(bandpass_sos(self.fs, self.band), y)
    scale, offset = float(self.target_norm.scale[0]), float(self.target_norm.offset[0])
    return y * scale + (offset if self.band[0] <= 0 else 0.0)


_APPLY = {}


def _apply_fn(n_witnesses: int):
  if n_witnesses not in _APPLY:
    model = DeepCleanNet(n_witnesses)
    _APPLY[n_witnesses] = jax.jit(
        lambda p, s, x: model.apply({'params': p, 'batch_stats': s}, x, train=False))
  return _APPLY[n_witnesses]


def psd_ratio_reference(pred, target, fs: float, nperseg: int, band) -> float:
  """The loss on whole series in plain numpy/scipy (float64): the band mean, over the bins
  ``losses.band_bins`` picks, of Welch PSD(target - pred) / Welch PSD(target) (Hann, 50%
  overlap, mean removed per segment)."""
  pred, target = np.asarray(pred, np.float64), np.asarray(target, np.float64)
  _, p_res = scipy.signal.welch(target - pred, fs, nperseg=nperseg)
  _, p_y = scipy.signal.welch(target, fs, nperseg=nperseg)
  bins = losses.band_bins(fs, nperseg, band)
  return float(np.mean(p_res[bins] / np.maximum(p_y[bins], 1e-300)))
