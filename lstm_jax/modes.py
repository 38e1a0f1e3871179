"""Modes whose frequency a slow witness moves: a resonance that temperature or a slow load tunes.

A mechanical mode (a suspension fibre's violin mode, a mirror's drum mode, a table's resonance)
driven by a witnessed force reaches the target through its own narrow band; a slow quantity
(a temperature, a static load) moves its frequency, often by more than its width over a
recording. A fixed filter then renders the mode only where the frequency sits on average, and
a product of force and slow witness only its first order. As one complex pole of a standardized
drive ``u`` whose angle follows the standardized slow witness ``v``::

  s[n] = r exp(i (w0 + dw v[n] + dw2 v[n]^2)) s[n-1] + u[n],     mode[n] = Re(c s[n])

(a frequency's dependence on temperature has a quadratic part: a quartz's, a fibre's), ``v``
through a first-order lag (``v[n] <- a v[n-1] + (1 - a) v[n]``: a sensor away from the part
that moves the mode, a thermal lag of seconds).

``fit_modes`` finds such modes in what a filter leaves: a band where the residual holds more
power than its neighbourhood, the band's centroid tracked over short windows and regressed on
each slow witness (the witness whose level moves the centroid, and by how much), the drive and
the decay chosen by least squares, then ``(w0, dw, dw2, log decay, lag)`` refined by Levenberg-Marquardt
with ``c`` solved at each step (variable projection), all weighed by a band-pass around the
mode. ``column`` renders a fitted mode as one input for a filter.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import scipy.ndimage
import scipy.signal

from lstm_jax import fringes as fringes_lib
from lstm_jax import weighed_fit

MAX_SECONDS = 300.0  # the training seconds the fit reads at most
SCAN_SECONDS = 64.0  # the drive and decay are chosen on at most this much
MAX_MODES = 2
# A band is a candidate where its power stands this far above the median of the third of an
# octave around it (the residual's PSD smoothed over a hertz).
BAND_EXCESS = 3.0
BANDS_TRIED = 4
TRACK_SECONDS = 1.0  # the centroid's window (a mode a hertz wide is resolved)
# A band's centroid must follow a slow witness this well (squared correlation over the
# windows) for a moving mode to be fitted there; a fixed resonance or a line tracks nothing.
MIN_TRACK = 0.2
DECAYS = tuple(float(g) for g in np.geomspace(1.0, 100.0, 7))  # 1/s, the starts' decay rates
MAX_DRIVES = 12  # the witnesses most coherent with the band, tried as the drive
# A mode is kept where it explains this share of the weighed residual on the held-out third.
MIN_SHARE = 0.1
MAX_RING_SECONDS = 5.0  # the decay rate stays above 1/this (the history streams carry)
# The slow witness's lag stays within this (a sensor a thermal lag away: seconds; streams carry
# 14 times it).
MAX_LAG_SECONDS = 5.0
LAGS = (0.0, 0.5, 1.0, 2.0, 4.0)  # seconds, tried on the centroid's track
SETTLE_SECONDS = 2.0  # the fit's rows start this late (the recursion from rest), at most 1/10


@dataclasses.dataclass(frozen=True)
class Mode:
  """One fitted mode: ``drive`` and ``slow`` columns of the standardized witnesses, ``theta``
  = (centre Hz, shift Hz per std of ``slow``, Hz per squared std, log decay rate 1/s, the
  slow witness's lag s), ``gain`` = (Re c, Im c)."""
  drive: int
  slow: int
  theta: tuple
  gain: tuple
  share: float  # of the weighed residual explained on the held-out third

  def digital(self, fs: float) -> tuple:
    """``(w0, dw, dw2, r, a, Re c, Im c)`` at ``fs`` (``a`` the lag's pole), for
    ``Products.modes``."""
    return _digital(self.theta, fs) + (float(self.gain[0]), float(self.gain[1]))


def _digital(theta, fs: float) -> tuple:
  f0, shift, curve, log_decay, lag = (float(t) for t in theta)
  return (2 * np.pi * f0 / fs, 2 * np.pi * shift / fs, 2 * np.pi * curve / fs,
          float(np.exp(-np.exp(log_decay) / fs)), float(np.exp(-1.0 / (lag * fs))) if lag > 0
          else 0.0)


def memory(digital) -> int:
  """Samples before an output that a mode reads: until its pole, and its slow witness's lag,
  have decayed below 1e-6 of a sample's push."""
  return max(_ring(digital[3]), _ring(digital[4]))


def lagged(v, a: float, xp=np):
  """``y[n] = a y[n-1] + (1 - a) v[n]`` over the last axis, ``y`` starting at ``v``'s first
  value (as if it had held there)."""
  if not a:
    return v
  if xp is np:
    v = np.asarray(v, np.float64)
    return scipy.signal.lfilter([1.0 - a], [1.0, -a], v, axis=-1, zi=a * v[..., :1])[0]
  b = (1.0 - a) * v
  return _scanned(xp.full_like(v, a),
                  xp.concatenate([b[..., :1] + a * v[..., :1], b[..., 1:]], axis=-1))


def _scanned(a, b):
  """``y[n] = a[n] y[n-1] + b[n]`` from rest over the last axis, in jax: a ``lax.scan``, as
  the exported program's block length is symbolic (an associative scan needs it known)."""
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel

  def step(y, ab):
    y = ab[0] * y + ab[1]
    return y, y

  _, y = jax.lax.scan(step, jnp.zeros(a.shape[:-1], a.dtype),
                      (jnp.moveaxis(a, -1, 0), jnp.moveaxis(b.astype(a.dtype), -1, 0)))
  return jnp.moveaxis(y, 0, -1)


def _ring(r: float, tolerance: float = 1e-6) -> int:
  """Samples until a pole of radius ``r`` has decayed below ``tolerance``."""
  return int(np.ceil(np.log(tolerance) / np.log(min(max(r, 1e-300), 1.0 - 1e-12))))


def recursion(u, v, w0: float, dw: float, dw2: float, r: float, a: float = 0.0, xp=np):
  """``s[n] = r exp(i (w0 + dw l[n] + dw2 l[n]^2)) s[n-1] + u[n]`` from rest, ``l`` = ``v``
  lagged by ``a`` (``lagged``) over the last axis (complex).
  numpy: block by block, each block in closed form (``a``'s running products stay above e^-4
  of a block's start, so the division they need loses nothing); another ``xp`` (``jax.numpy``,
  the exported program): a scan."""
  v = lagged(v, a, xp)
  if xp is not np:
    return _scanned(r * xp.exp(1j * (w0 + (dw + dw2 * v) * v)), u)
  u, v = np.asarray(u, np.float64), np.asarray(v, np.float64)
  lead, n = u.shape[:-1], u.shape[-1]
  block = int(np.clip(4.0 / max(-np.log(r), 1e-12), 1, 4096))
  blocks = -(-n // block)
  pad = blocks * block - n
  angle = np.pad(w0 + (dw + dw2 * v) * v, [(0, 0)] * len(lead) + [(0, pad)]).reshape(lead + (blocks, block))
  drive = np.pad(u, [(0, 0)] * len(lead) + [(0, pad)]).reshape(lead + (blocks, block))
  # Within a block, P[k] = prod_{l<=k} a[l] and s[k] = P[k] (s_before + sum_{m<=k} u[m] / P[m]).
  log_p = np.cumsum(np.log(r) + 1j * angle, axis=-1)
  p = np.exp(log_p)
  z = p * np.cumsum(drive * np.exp(-log_p), axis=-1)
  out = np.empty_like(z)
  before = np.zeros(lead, complex)
  for b in range(blocks):
    out[..., b, :] = z[..., b, :] + p[..., b, :] * before[..., None]
    before = out[..., b, -1]
  return out.reshape(lead + (blocks * block,))[..., :n]


def column(digital, u, v, xp=np):
  """The mode ``Re(c s)`` (``digital`` as ``Mode.digital``) of standardized drive ``u`` and
  slow witness ``v`` (..., T), from rest at the first sample."""
  *poles, c_re, c_im = (float(d) for d in digital)
  s = recursion(u, v, *poles, xp=xp)
  return c_re * xp.real(s) - c_im * xp.imag(s)


def _bands(r, fs: float) -> list:
  """``(centre Hz, half width Hz)`` of the bands where ``r``'s power stands ``BAND_EXCESS``
  above the third of an octave around it, loudest excess first."""
  nper = int(min(len(r), 4 * fs))
  f, p = scipy.signal.welch(r, fs, nperseg=nper)
  df = f[1] - f[0]
  smooth = scipy.ndimage.uniform_filter1d(p, max(1, int(round(1.0 / df))))
  # the third-octave median on a grid of 64 per octave, interpolated (one per bin is slow at
  # high rates)
  grid = np.geomspace(max(f[1], 1e-3), f[-1], int(64 * np.log2(f[-1] / max(f[1], 1e-3))) + 2)
  lo, hi = (np.searchsorted(f, grid * 2 ** (e / 6)) for e in (-1, 1))
  medians = [np.median(smooth[a:max(b, a + 1)]) for a, b in zip(lo, hi)]
  base = np.interp(f, grid, medians)
  base[0] = np.inf
  ratio = smooth / np.maximum(base, 1e-300)
  ok = (f > max(2.0, 8 * df)) & (f < 0.45 * fs) & (ratio > BAND_EXCESS)
  out = []
  for lo, hi in _runs(ok):
    centre = int(lo + np.argmax(smooth[lo:hi]))
    # the band's edges: where the ratio falls under half the excess on either side
    a, b = centre, centre
    while a > 0 and ratio[a - 1] > BAND_EXCESS / 2:
      a -= 1
    while b < len(f) - 1 and ratio[b + 1] > BAND_EXCESS / 2:
      b += 1
    excess = float(np.sum(smooth[a:b + 1] - base[a:b + 1]))
    out.append((excess, float(f[centre]), float(max((b - a + 1) * df / 2, 2 * df))))
  return [(c, h) for _, c, h in sorted(set(out), reverse=True)][:BANDS_TRIED]


def _runs(mask) -> list:
  """``(start, stop)`` of each run of True in ``mask``."""
  edges = np.flatnonzero(np.diff(np.r_[0, mask.astype(int), 0]))
  return list(zip(edges[::2], edges[1::2]))


def _track(r, x, slow: list, fs: float, centre: float, half: float):
  """The band's centroid per ``TRACK_SECONDS`` window, regressed on each slow witness's mean
  over the window (to second order) at each of ``LAGS``: ``(share of the track's variance
  explained, slow column, (centre Hz, Hz per std, Hz per squared std), lag s)`` of the
  best."""
  nper = int(TRACK_SECONDS * fs)
  if len(r) < 8 * nper or not slow:
    return None
  f, t, p = scipy.signal.spectrogram(r, fs, nperseg=nper, noverlap=nper // 2)
  band = (f >= centre - 2 * half) & (f <= centre + 2 * half)
  if band.sum() < 3:
    return None
  power = p[band]
  power = np.maximum(power - np.median(power, axis=0, keepdims=True), 0.0)
  weight = power.sum(0)
  track = (f[band] @ power) / np.maximum(weight, 1e-300)
  ok = weight > 0
  if ok.sum() < 8 or not np.var(track[ok]) > 0:
    return None
  idx = (t * fs).astype(int)
  best = None
  for j in slow:
    for lag in LAGS:
      v = lagged(x[:, j], _digital((0, 0, 0, 0, lag), fs)[4])
      level = np.array([v[max(0, i - nper // 2):i + nper // 2].mean() for i in idx])
      curve, slope, centre = np.polyfit(level[ok], track[ok], 2)
      fitted = np.polyval((curve, slope, centre), level[ok])
      r2 = 1.0 - np.var(track[ok] - fitted) / max(np.var(track[ok]), 1e-300)
      if np.isfinite(r2) and (best is None or r2 > best[0]):
        best = (float(r2), j, (float(centre), float(slope), float(curve)), lag)
  return best


class _Fit(weighed_fit.WeighedFit):
  """Least squares of a residual on one drive's mode, weighed by a band-pass around it."""

  def __init__(self, u, v, r, fs: float, centre: float, half: float):
    self.u, self.v = u, v
    lo, hi = max(0.5, centre - 4 * half - 2.0), min(0.49 * fs, centre + 4 * half + 2.0)
    super().__init__(r, fs, scipy.signal.butter(2, [lo, hi], 'bandpass', fs=fs, output='sos'),
                     SETTLE_SECONDS)

  def design(self, theta):
    s = recursion(self.u, self.v, *_digital(theta, self.fs))
    return self.weigh(np.stack([s.real, -s.imag], 1))

  def bounded(self, theta):
    f0, shift, curve, log_decay, lag = theta
    return np.array([np.clip(f0, 1.0, 0.45 * self.fs), shift, curve,
                     np.clip(log_decay, -np.log(MAX_RING_SECONDS), np.log(0.1 * self.fs)),
                     np.clip(lag, 0.0, MAX_LAG_SECONDS)], np.float64)

  def levenberg_marquardt(self, theta, iterations: int):
    theta = self.bounded(theta)
    self.steps = np.array([1e-4 * max(1.0, abs(theta[0])), 1e-5, 1e-5, 1e-4, 1e-3])
    return super().levenberg_marquardt(theta, iterations)


def _drives(x, r, fs: float, centre: float, half: float, exclude: list) -> list:
  """The witness columns most coherent with ``r`` in the band, at most ``MAX_DRIVES``."""
  nper = int(min(len(r), 2 * fs))
  f, coh = scipy.signal.coherence(x, r[:, None], fs, nperseg=nper, axis=0)
  band = (f >= centre - 2 * half) & (f <= centre + 2 * half)
  score = coh[band].mean(0) if band.any() else np.zeros(x.shape[1])
  order = [int(j) for j in np.argsort(-score) if int(j) not in exclude]
  return order[:MAX_DRIVES]


def fit_modes(x_TxC, residual, fs: float, fit_on=None, max_modes: int = MAX_MODES,
              min_share: float = MIN_SHARE, log=None) -> tuple[list, list]:
  """The moving modes that ``residual`` holds, driven by columns of ``x_TxC`` (standardized
  witnesses, at most ``MAX_SECONDS``) and moved by its slow columns (``fringes.slow_witnesses``):
  per band of excess power (``_bands``) whose centroid follows a slow witness (``_track``), the
  drive and decay that fit best on ``SCAN_SECONDS`` from the tracked centre and shift, refined
  on the first two thirds and judged by the share of the weighed residual explained on the
  last; kept above ``min_share`` and refitted on all, each later band on what the kept modes
  leave. ``fit_on``: what the modes are fitted on where not ``residual`` (the bands are found
  in ``residual``): a filter over the drive and the slow witness's products takes a moving
  mode's average and first order, and what it leaves no mode fits. Returns ``(modes, scores)``: ``Mode`` each, and ``[centre Hz, track r^2, share]``
  per band tracked."""
  t0 = time.perf_counter()
  x, r = np.asarray(x_TxC, np.float64), np.asarray(residual, np.float64)
  y = r if fit_on is None else np.asarray(fit_on, np.float64)
  x, r, y = x[:int(MAX_SECONDS * fs)], r[:int(MAX_SECONDS * fs)], y[:int(MAX_SECONDS * fs)]
  slow = fringes_lib.slow_witnesses(x, fs)
  modes, scores = [], []
  if not slow or len(r) < 16 * TRACK_SECONDS * fs:
    return modes, scores
  for centre, half in _bands(r, fs):
    if len(modes) >= max_modes:
      break
    tracked = _track(r, x, slow, fs, centre, half)
    if tracked is None or tracked[0] < MIN_TRACK:
      scores.append([centre, None if tracked is None else tracked[0], None])
      continue
    r2, k, start, lag_s = tracked
    scan = slice(0, int(SCAN_SECONDS * fs))
    best = None
    for j in _drives(x[scan], y[scan], fs, centre, half, [k]):
      fit = _Fit(x[scan, j], x[scan, k], y[scan], fs, centre, half)
      for decay in DECAYS:
        theta = start + (np.log(decay), lag_s)
        cost = fit.solve(theta)[0]
        if best is None or cost < best[0]:
          best = (cost, j, theta)
    if best is None:
      continue
    _, j, theta = best
    fit = _Fit(x[:, j], x[:, k], y, fs, centre, half)
    theta, _ = fit.levenberg_marquardt(theta, 12)
    share, _ = fit.held_out_share(theta)
    scores.append([centre, r2, share])
    if share > min_share:
      fit.rows = slice(fit.rows.start, None)
      theta, _ = fit.levenberg_marquardt(theta, 4)
      # the band-pass weighs both sides alike, so the gain it gives is the coupling's own
      _, _, g = fit.solve(theta)
      mode = Mode(j, k, tuple(float(t) for t in theta), (float(g[0]), float(g[1])), share)
      modes.append(mode)
      found = column(mode.digital(fs), x[:, j], x[:, k])
      r, y = r - found, y - found
  if log is not None:
    log('modes: bands %s (%.1f s)', ', '.join(
        f'{c:.1f} Hz track {t if t is None else round(t, 2)} share '
        f'{s if s is None else round(s, 3)}' for c, t, s in scores) or 'none',
        time.perf_counter() - t0)
  return modes, scores
