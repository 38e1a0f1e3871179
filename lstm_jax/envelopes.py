"""Envelopes: the power in a band of a witness, detected and low-passed.

A fast witness's band that reaches a square-law or rectifying detector (a photodiode's
nonlinearity, a demodulator's leakage, a part that the band's sound heats) couples its power,
not its waveform: ``L * g(h * x)``, ``h`` a band-pass, ``g`` even (``u^2``, ``|u|``), ``L`` a
low-pass. A filter over ``x`` holds none of it, and one over ``x^2`` little: the square of
the whole witness adds every other band's cross terms to the band's own.

``screen`` reads every band of every witness at once from a short-time spectrum: the power
of a band's bins is its detected power at the frame rate, and a band is scored by the share
of the residual (averaged over the same frames) that a few smoothings of that power explain
on held-out frames. ``fit_envelopes`` fits the best bands: a band-pass of the standardized
witness (``SHAPES``), three detectors (the square law, the rectifier, and an RMS detector that
averages the power and reads its root), each through the identity and first-order low-passes
(``CORNERS_HZ``), whose least-squares mix renders ``L``; the band's edges and the RMS
detector's averaging are refined by Levenberg-Marquardt (``weighed_fit``). ``column`` renders
the fitted coupling as one input for a filter, in numpy and in ``jax.numpy`` alike.
"""
from __future__ import annotations

import dataclasses
import time

import numpy as np
import scipy.signal

from lstm_jax import fringes as fringes_lib
from lstm_jax import weighed_fit

MAX_SECONDS = 128.0  # the training seconds the fit reads at most
SCREEN_BINS = 64  # the short-time spectrum's bins below Nyquist (its resolution fs / 128)
MAX_FRAMES = 4096  # the screen's frames at most (its hop grows past a quarter window)
BAND_BINS = (1, 2, 3, 4, 6, 8, 12, 16)  # the screened bands' widths, in bins
# The screen's smoothings of a band's power (one-pole, in frames): a low-pass after the
# detector delays and smooths what reaches the target.
SMOOTHING_FRAMES = (2.0, 8.0, 32.0)
MIN_SCREEN = 0.05  # share of the held-out frames a band must explain to be fitted at full rate
TRIED = 3  # bands fitted at most
MAX_ENVELOPES = 2
MIN_SHARE = 0.1  # share of the residual explained on the held-out third, to keep an envelope
# The low-passes after each law (first order, Hz; the identity too): a mix of one-pole
# low-passes renders a detector's low-pass of real poles exactly, a Butterworth's closely.
CORNERS_HZ = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0)
RATE_HZ = 1024.0  # the band's edges are fitted at about this rate (its laws decimated)
SOLVE_SAMPLES = 1 << 20  # the kept band's weights are solved at full rate on at most these
# The band's shapes tried: a Butterworth band-pass pair, one band-pass resonance (a mode read
# as a velocity: zeros at DC and Nyquist), and one all-pole resonance (read as a displacement).
SHAPES = ('pair', 'bandpass', 'resonance')
RMS_HZ = (0.5, 4.0, 32.0)  # the RMS detector's averaging corners started from (and its bounds)
LM_STEPS = 6  # accepted steps of the refinement, per shape
SETTLE_SECONDS = 4.0  # the fit's rows start this late (the low-passes from rest), at most 1/10
MIN_BAND_HZ = 1.0  # a band's lower edge at least this
MIN_WIDTH = 0.01  # a band's width at least this share of its lower edge (a Q of 100)


@dataclasses.dataclass
class Envelope:
  """One fitted envelope coupling of witness ``witness`` (a column of the standardized
  witnesses): the band ``(lo, hi)`` Hz, the band-passed witness's std ``scale`` and the
  detectors' means ``offsets`` on the fit's stretch, and a weight per detector column
  (``detectors``)."""
  witness: int
  band: tuple
  shape: str  # of the band-pass, one of ``SHAPES``
  rms_hz: float  # the RMS detector's averaging corner
  scale: float
  offsets: tuple
  weights: tuple
  share: float  # of the residual explained on the held-out third

  def entry(self, fs: float) -> tuple:
    """``(witness, filters, weights)`` at ``fs``: the item of ``Products.envelopes``."""
    return self.witness, self.filters(fs), self.weights

  def filters(self, fs: float) -> dict:
    """The digital filters at ``fs``: ``band`` (b, a) per section, ``post`` a (b, a) per
    readout filter (identity first), ``rms`` the RMS detector's averaging (b, a), and
    ``scale``, ``offsets``, for ``Products.envelopes``."""
    return {'band': _band_sections(self.band, self.shape, fs),
            'post': [((1.0,), (1.0,))] + [tuple(tuple(float(v) for v in c) for c in ba)
                                          for ba in _low_passes(fs)],
            'rms': _one_pole(self.rms_hz, fs),
            'scale': float(self.scale), 'offsets': tuple(float(v) for v in self.offsets)}


def _band_pass(band, shape: str, fs: float):
  """The band ``(lo, hi)`` Hz of ``shape`` (``SHAPES``) as second-order sections; an all-pole
  resonance at the band's geometric centre, as wide as the band."""
  if shape == 'resonance':
    r = np.exp(-np.pi * (band[1] - band[0]) / fs)
    w = 2 * np.pi * np.sqrt(band[0] * band[1]) / fs
    return np.array([[1.0 - r, 0.0, 0.0, 1.0, -2 * r * np.cos(w), r * r]])
  return scipy.signal.butter({'pair': 2, 'bandpass': 1}[shape], [band[0], band[1]], 'bandpass',
                             fs=fs, output='sos')


def _band_sections(band, shape: str, fs: float) -> list:
  return [(tuple(float(v) for v in s[:3]), tuple(float(v) for v in s[3:]))
          for s in _band_pass(band, shape, fs)]


def _one_pole(corner: float, fs: float) -> tuple:
  return tuple(tuple(float(v) for v in c) for c in scipy.signal.butter(1, corner, fs=fs))


def _low_passes(fs: float) -> list:
  return [_one_pole(f, fs) for f in CORNERS_HZ if f < 0.2 * fs]


def memory(filters: dict) -> int:
  """Samples before an output that an envelope reads (``fringes.memory`` of its filters)."""
  return (sum(fringes_lib.memory(*ba) for ba in filters['band'])
          + fringes_lib.memory(*filters['rms'])
          + max(fringes_lib.memory(*ba) for ba in filters['post']))


def laws(u, rms, xp=np) -> list:
  """What detects the standardized band ``u`` (..., T): the square law ``u^2``, the rectifier
  ``|u|``, and an RMS detector ``sqrt(L(u^2))``, ``L`` its averaging, the one-pole ``rms`` =
  (b, a) (a sensor that averages power and reads its root)."""
  square = u * u
  return [square, xp.abs(u), xp.sqrt(xp.maximum(fringes_lib.filtered(rms, square, xp), 0.0))]


def detectors(detected: list, post: list, offsets=None, xp=np) -> tuple[list, list]:
  """The ``detected`` laws (each (..., T)), each less its mean on the fit's stretch,
  ``offsets`` (None: its own mean here; a constant through a slow low-pass would otherwise
  ring in from rest), read through every ``post`` filter (the identity first). Returns
  ``(columns, offsets)``."""
  if offsets is None:
    offsets = [float(np.mean(v)) for v in detected]
  return fringes_lib.filtered_each(post * len(detected), [
      v - m for v, m in zip(detected, offsets) for _ in post], xp), offsets


def column(filters: dict, weights, x, xp=np):
  """The envelope coupling of the standardized witness ``x`` (..., T), from rest at its first
  sample: ``detectors`` of the ``laws`` of its band (``band(x) / scale``) weighed by
  ``weights``."""
  u = x
  for ba in filters['band']:
    u = fringes_lib.filtered(ba, u, xp)
  columns, _ = detectors(laws(u / filters['scale'], filters['rms'], xp), filters['post'],
                         filters['offsets'], xp)
  return sum(float(w) * c for w, c in zip(weights, columns))


def _powers(x, r, fs: float) -> tuple:
  """The short-time spectrum's power of ``x`` (frames, bins) and ``r`` averaged over the same
  Hann-weighted frames, and the frame rate."""
  nperseg = 2 * SCREEN_BINS
  hop = max(nperseg // 4, -(-len(x) // MAX_FRAMES))
  window = scipy.signal.get_window('hann', nperseg)
  starts = np.arange(0, len(x) - nperseg + 1, hop)
  index = starts[:, None] + np.arange(nperseg)[None, :]
  power = np.abs(np.fft.rfft(x[index] * window, axis=1)) ** 2
  return power, r[index] @ (window / window.sum()), fs / hop


def screen(x_TxC, residual, fs: float) -> list:
  """Every band of every column of ``x_TxC`` (starts on the bins past the first, widths
  ``BAND_BINS``), scored as the share of the frame-averaged residual that the band's power
  and its smoothings (``SMOOTHING_FRAMES``) explain on the last third of the frames, fitted by
  least squares on the first two. Returns ``[column, lo Hz, hi Hz, share]`` each, best
  first."""
  bin_hz = fs / (2 * SCREEN_BINS)
  scores = []
  for j in range(x_TxC.shape[1]):
    power, r, rate = _powers(x_TxC[:, j], residual, fs)
    if len(r) < 64:
      return []
    r = r - r.mean()
    total = np.concatenate([np.zeros((len(power), 1)), np.cumsum(power, axis=1)], 1)
    bands = [(a, a + w) for w in BAND_BINS for a in range(1, SCREEN_BINS + 1 - w)]
    e = np.stack([total[:, b] - total[:, a] for a, b in bands])  # (bands, frames)
    e = e / np.maximum(e.std(1, keepdims=True), 1e-300)
    design = [e] + [scipy.signal.lfilter([1.0 - np.exp(-1 / k)], [1.0, -np.exp(-1 / k)], e,
                                         axis=1) for k in SMOOTHING_FRAMES]
    design = np.stack(design + [np.ones_like(e)], -1)  # (bands, frames, columns)
    cut = 2 * len(r) // 3
    gram = np.einsum('bfc,bfd->bcd', design[:, :cut], design[:, :cut])
    gram[:, np.arange(gram.shape[1]), np.arange(gram.shape[1])] += 1e-9 * len(r)
    w = np.linalg.solve(gram, np.einsum('bfc,f->bc', design[:, :cut], r[:cut])[..., None])
    left = r[cut:][None] - np.einsum('bfc,bc->bf', design[:, cut:], w[..., 0])
    share = 1.0 - left.var(1) / max(float(r[cut:].var()), 1e-300)
    scores += [[j, (a - 0.5) * bin_hz, (b - 0.5) * bin_hz, float(s)]
               for (a, b), s in zip(bands, share)]
  return sorted(scores, key=lambda c: -c[3])


class _Fit(weighed_fit.WeighedFit):
  """Least squares of a residual on the detectors of one witness's band, ``theta`` = (log lo
  Hz, log hi Hz, log RMS corner Hz), at ``fs / q``: the band and its laws at ``fs``,
  decimated before they are read (unweighed: a detector's output reaches from its
  low-pass's corner to twice the band)."""

  def __init__(self, x, r, fs: float, shape: str, q: int = 1):
    self.x, self.shape, self.q, self.band_fs = x, shape, q, fs
    self.post = [((1.0,), (1.0,))] + _low_passes(fs / q)
    super().__init__(fringes_lib._decimated(r, q), fs / q, None, SETTLE_SECONDS)
    self.steps = np.array([1e-4, 1e-4, 1e-3])
    self.cached = None

  def detected(self, theta) -> tuple:
    """The detectors of the witness band-passed (``theta``) and standardized, with its std
    and the detectors' means (the band's cached: a step in the RMS corner alone keeps it)."""
    lo, hi, corner = np.exp(self.bounded(theta))
    if self.cached is None or self.cached[0] != (lo, hi):
      u = scipy.signal.sosfilt(_band_pass((lo, hi), self.shape, self.band_fs), self.x)
      scale = max(float(np.std(u)), 1e-300)
      self.cached = (lo, hi), u / scale, scale
    _, u, scale = self.cached
    detected = laws(u, _one_pole(corner, self.band_fs))
    columns, offsets = detectors([fringes_lib._decimated(v, self.q) for v in detected],
                                 self.post)
    return columns, scale, offsets

  def design(self, theta):
    return self.weigh(np.stack(self.detected(theta)[0]).T)  # (T, K), each column contiguous

  def bounded(self, theta):
    lo, hi = np.clip(theta[:2], np.log(MIN_BAND_HZ), np.log(0.49 * self.band_fs))
    lo = min(lo, np.log(0.45 * self.band_fs))
    corner = np.clip(theta[2], np.log(RMS_HZ[0]), np.log(min(RMS_HZ[-1], 0.2 * self.fs)))
    return np.array([lo, max(hi, lo + np.log(1.0 + MIN_WIDTH)), corner], np.float64)

  def envelope(self, j: int, theta, share: float) -> Envelope:
    _, _, w = self.solve(theta)
    _, scale, offsets = self.detected(theta)
    lo, hi, corner = (float(v) for v in np.exp(self.bounded(theta)))
    return Envelope(j, (lo, hi), self.shape, corner, scale, tuple(offsets),
                    tuple(float(v) for v in w), share)


def _starts(lo: float, hi: float) -> list:
  """``theta`` about a screened band: as screened, half as wide and twice as wide (the
  screen's bins are coarse, and a resonance's skirts hold much of its power), each with the
  RMS corners ``RMS_HZ``."""
  centre, half = (lo + hi) / 2, (hi - lo) / 2
  return [np.log([max(centre - k * half, MIN_BAND_HZ), centre + k * half, c])
          for k in (1.0, 0.5, 2.0) for c in RMS_HZ]


def fit_envelopes(x_TxC, residual, fs: float, max_envelopes: int = MAX_ENVELOPES,
                  min_share: float = MIN_SHARE, log=None) -> tuple[list, list]:
  """The envelope couplings of columns of ``x_TxC`` (standardized witnesses, at most
  ``MAX_SECONDS``) that ``residual`` holds, strongest first: the bands ``screen`` scores above
  ``MIN_SCREEN`` (the best per witness, at most ``TRIED``), each from the best of its
  ``_starts`` per band shape (``SHAPES``), refined at about ``RATE_HZ`` on the first two
  thirds and judged by the share of the residual it explains on the last (a band that
  explains under a quarter of ``min_share`` as screened, or under half from its best start, is
  not refined); the best kept above ``min_share``, its weights solved at ``fs`` on at most
  ``SOLVE_SAMPLES``, each later band fitted on what the kept ones leave. Returns
  ``(envelopes, scores)``: ``Envelope`` each, and
  ``[witness, lo, hi, shape, screened share, share]`` per band fitted."""
  t0 = time.perf_counter()
  x, r = np.asarray(x_TxC, np.float64), np.asarray(residual, np.float64)
  x, r = x[:int(MAX_SECONDS * fs)], r[:int(MAX_SECONDS * fs)]
  envelopes, scores, seen = [], [], set()
  if len(r) < 4 * SETTLE_SECONDS * fs:
    return envelopes, scores
  q = max(1, int(fs // RATE_HZ))
  for j, lo, hi, screened in screen(x, r, fs):
    if screened < MIN_SCREEN or len(scores) >= TRIED or len(envelopes) >= max_envelopes:
      break
    if j in seen:
      continue
    seen.add(j)
    tried = []  # (share, shape, theta)
    for shape in SHAPES:
      fit = _Fit(x[:, j], r, fs, shape, q)
      starts = _starts(lo, hi)
      share, theta = fit.held_out_share(starts[0])[0], starts[0]
      if share > min_share / 4:  # else, as screened, the band holds chance alone
        share, theta = max(((fit.held_out_share(t)[0], t) for t in starts), key=lambda t: t[0])
        if share > min_share / 2:
          theta, _ = fit.levenberg_marquardt(theta, LM_STEPS)
          share = fit.held_out_share(theta)[0]
      tried.append((share, shape, fit.bounded(theta)))
    share, shape, theta = max(tried, key=lambda t: t[0])
    scores.append([j, *np.exp(theta[:2]).tolist(), shape, screened, share])
    if share > min_share:
      whole = _Fit(x[:SOLVE_SAMPLES, j], r[:SOLVE_SAMPLES], fs, shape)
      whole.rows = slice(whole.rows.start, None)
      found = whole.envelope(j, theta, share)
      envelopes.append(found)
      r = r - column(found.filters(fs), found.weights, x[:, j])
  if log is not None:
    log('envelopes: bands %s (%.1f s)', ', '.join(
        f'w{j} {lo:.1f}-{hi:.1f} Hz {shape} screened {s0:.3f} share {s:.3f}'
        for j, lo, hi, shape, s0, s in scores) or 'none', time.perf_counter() - t0)
  return sorted(envelopes, key=lambda e: -e.share), scores
