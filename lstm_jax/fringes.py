"""Fringes: light scattered off a surface that a slow witness moves.

Scattered light returns with the optical phase ``phi`` of the path it travelled, and ``phi``
follows the scatterer's motion relative to the optic: a linear filter of a slow witness (a
seismometer on the ground, a suspension's sensor), in radians, often several. It couples as a
periodic function of ``phi``, ``sum_n a_n cos(n phi) + b_n sin(n phi)`` (the harmonics of
several bounces), read through the readout's filter. Its linear part nearly vanishes once the
motion spans a few radians (``k exp(-k^2 / 2)`` of ``sin(k x)`` for a Gaussian ``x``), so a
filter over the witness finds nothing to bend, and a static function of the witness misses
the phase path's lag: a fringe at 5 rad per standard deviation turns a 2% error in the path's
gain into 14 dB of residual.

``fit_fringes`` fits the whole chain on what a filter leaves: the phase path as one analog
biquad ``(n2 s^2 + n1 w s + n0 w^2) / (s^2 + (w / Q) s + w^2)`` of the standardized witness
(a pendulum's response, a low-pass, motion relative to the ground, a short delay in its
numerator's slope), ``FRINGE_HARMONICS`` harmonics, and the readout as a sum of first-order
high-passes (``POST_HZ``) per harmonic and quadrature, in closed form. The path's five numbers
are fitted by Levenberg-Marquardt from a grid of starts; the rest is least squares at each step
(variable projection). ``column`` renders the fitted coupling as one input for a filter.
"""
from __future__ import annotations

import dataclasses
import functools
import time
from typing import Optional

import numpy as np
import scipy.signal

from lstm_jax import weighed_fit

HARMONICS = 3
# A witness is tried where most of its power lies below SLOW_HZ: a fringe needs a motion of
# radians, and only slow motion (microseism, a suspension's swing) is that large.
SLOW_HZ = 10.0
SLOW_SHARE = 0.5
# Below this rate a recording holds no fringe band above the weighing's corner (1 Hz
# microseism records, say): no fringe is fitted.
MIN_RATE_HZ = 16.0
RATE_HZ = 256.0  # the path is fitted at about this rate (decimated), its starts scanned at 1/8
MAX_SECONDS = 300.0  # the training seconds the fit reads at most
# Least squares weighs both sides high-passed (order 4): a coloured background's slow part
# (microseism, tilt, a slow signal) is collinear with a fringe's slow part over the few
# cycles a recording holds (fresh ``fringes`` draws: 23.6 dB weighed so, 14.7 at 0.1 Hz).
WEIGHT_HZ = 1.0
POST_HZ = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)  # the readout: identity and these high-passes
# The starts: the path's corner, Q, a low-pass (the motion) or the rest of it (the motion
# relative to where the suspension hangs), and its gain in rad per standard deviation of the
# witness (relative motion may be a small part of the witness's). Near a lightly damped
# corner a start must be close: fresh ``fringes/3`` (0.43 Hz, Q 3.5) explains 0.83 of the
# weighed residual at the truth, 0.01 with Q 2 and 0.001 at 0.5 Hz.
START_HZ = tuple(float(f) for f in np.geomspace(0.2, 6.0, 12))
START_Q = (0.7, 1.5, 3.0, 6.0)
START_GAINS = tuple(float(g) for g in np.geomspace(0.5, 24.0, 17))
SCAN_SECONDS = 128.0  # the scan reads at most this much of the stretch
STARTS_KEPT = 3
# A witness's best start must explain this much of the weighed residual (on the scan's first
# two thirds, one harmonic) to be refined: fringes' witnesses score 0.3-0.8, other slow
# witnesses (angular channels, modulators, microseism of other families) at most 0.002.
SCAN_SHARE = 0.01
MAX_FRINGES = 2  # witnesses fitted at most (the slow ones whose best start explains most)
# A fringe is kept where it explains this share of the weighed residual on the held-out
# third: scattered light is what a filter leaves where it is there at all (``fringes``
# draws: 0.84-0.98), while a periodic function of a slow path also imitates a bend a little
# (dev ``filtered_bend/1``: 0.026, kept by validation and 3.4 dB worse on the later file).
MIN_SHARE = 0.1
# The phase path's corner and Q stay within these (the steps are clipped to them): its poles
# decay by e in at most MAX_RING_SECONDS (a damped suspension's; its history is carried, for
# ``memory``, 14 times as long, in every stream and exported program).
CORNER_HZ = (0.1, 20.0)
Q_RANGE = (0.2, 10.0)
MAX_RING_SECONDS = 5.0
SETTLE_SECONDS = 10.0  # the fit's rows start this late (filters from rest), at most 1/10


@dataclasses.dataclass(frozen=True)
class Fringe:
  """One fitted fringe coupling of witness ``witness`` (a column of the standardized
  witnesses): the phase path ``theta`` = (log corner Hz, log Q, n0, n1, n2) and the readout's
  weights ``(HARMONICS, 2, 1 + len(POST_HZ))`` (cos, sin per harmonic, per readout filter)."""
  witness: int
  theta: tuple
  weights: tuple
  share: float  # of the weighed residual explained on the held-out third

  def entry(self, fs: float) -> tuple:
    """``(witness, filters, weights)`` at ``fs``: the item of ``Products.fringes``."""
    return self.witness, self.filters(fs), self.weights

  def filters(self, fs: float) -> dict:
    """The digital filters at ``fs``: ``phase`` (b, a) and ``post``, a (b, a) per readout
    filter (identity first), for ``Products.fringes``."""
    return {'phase': _biquad(self.theta, fs),
            'post': [((1.0,), (1.0,)) if ba is None else tuple(tuple(float(v) for v in c)
                                                               for c in ba)
                     for ba in _readout(fs)]}


def _readout(fs: float) -> list:
  """The readout's filters at ``fs``: None (the identity), then the first-order high-passes
  at ``POST_HZ`` that ``fs`` holds, (b, a) each."""
  return [None] + [scipy.signal.butter(1, f, 'highpass', fs=fs) for f in POST_HZ
                   if f < 0.45 * fs]


def _biquad(theta, fs: float) -> tuple:
  """The phase path's (b, a) at ``fs``: the analog biquad by the bilinear transform."""
  lf, lq, n0, n1, n2 = (float(v) for v in theta)
  w, k = 2 * np.pi * np.exp(lf), 2.0 * fs
  top, bottom = (n2 * k * k, n1 * w * k, n0 * w * w), (k * k, w / np.exp(lq) * k, w * w)
  b, a = ((u + v + x, 2 * (x - u), u - v + x) for u, v, x in (top, bottom))
  return tuple(c / a[0] for c in b), tuple(c / a[0] for c in a)


@functools.lru_cache(maxsize=1024)
def memory(b: tuple, a: tuple, tolerance: float = 1e-6) -> int:
  """Samples until an IIR filter's impulse response has decayed below ``tolerance`` of its
  start (its poles' radius; 0 for a FIR). Cached: ``Products.max_lag`` asks on every block a
  stream pushes."""
  poles = np.roots(np.asarray(a, np.float64)) if len(a) > 1 else np.zeros(0)
  radius = float(np.max(np.abs(poles))) if len(poles) else 0.0
  if radius <= 0.0:
    return len(b) - 1
  return int(np.ceil(np.log(tolerance) / np.log(min(radius, 1.0 - 1e-12)))) + len(b)


def filtered(ba, v, xp=np):
  """``v`` (..., T) through the digital filter ``ba`` = (b, a), from rest at its first
  sample (``filtered_each``)."""
  return filtered_each([ba], [v], xp)[0]


def filtered_each(bas, vs, xp=np) -> list:
  """Each of ``vs`` (K series, (..., T) each) through its filter in ``bas`` ((b, a) each, of
  order 2 at most), from rest at the first sample: numpy's ``lfilter``, or in jax (the
  exported program) one scan for all of them, in transposed direct form II: its length is
  symbolic (an FFT or an associative scan needs it known)."""
  if xp is np:
    return [v * float(b[0] / a[0]) if len(b) == len(a) == 1
            else scipy.signal.lfilter(b, a, v, axis=-1) for (b, a), v in zip(bas, vs)]
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  v = xp.stack(vs, -2)  # (..., K, T)
  coefficients = np.zeros((2, len(bas), 3))
  for k, (b, a) in enumerate(bas):
    coefficients[0, k, :len(b)] = np.asarray(b, np.float64) / a[0]
    coefficients[1, k, :len(a)] = np.asarray(a, np.float64) / a[0]
  # (2, 3, 1, ..., 1, K): b and a, per tap, shaped as a sample of v
  b, a = jnp.asarray(np.moveaxis(coefficients, 1, -1).reshape(
      (2, 3) + (1,) * (v.ndim - 2) + (len(bas),)), v.dtype)

  def step(z, x):  # z: (..., K, 2)
    y = b[0] * x + z[..., 0]
    return jnp.stack([b[1] * x - a[1] * y + z[..., 1], b[2] * x - a[2] * y], -1), y

  _, y = jax.lax.scan(step, jnp.zeros(v.shape[:-1] + (2,), v.dtype), jnp.moveaxis(v, -1, 0))
  return list(jnp.moveaxis(y, 0, -1)[..., k, :] for k in range(len(bas)))


def column(filters: dict, weights, x, xp=np):
  """The fringe coupling of the standardized witness ``x`` (..., T), from rest at its first
  sample: ``sum_p post_p[sum_n w[n, 0, p] cos(n phi) + w[n, 1, p] sin(n phi)]``, ``phi`` =
  phase(x), each filter as ``filtered_each`` applies it."""
  w = np.asarray(weights, np.float64)
  phi = filtered(filters['phase'], x, xp)
  trig = [(xp.cos(n * phi), xp.sin(n * phi)) for n in range(1, w.shape[0] + 1)]
  read = [sum(float(w[n, 0, p]) * c + float(w[n, 1, p]) * s for n, (c, s) in enumerate(trig))
          for p in range(len(filters['post']))]
  return sum(filtered_each(filters['post'], read, xp))


def _bounded(theta, fs: float) -> np.ndarray:
  """``theta`` with its corner within ``CORNER_HZ`` (and under a fifth of ``fs``) and its Q
  within ``Q_RANGE`` and what ``MAX_RING_SECONDS`` allows: a resonance rings for Q / (pi f)
  seconds, an overdamped pair's slow pole for about 1 / (2 pi f Q)."""
  theta = np.array(theta, np.float64)
  theta[0] = np.clip(theta[0], np.log(CORNER_HZ[0]), np.log(min(CORNER_HZ[1], fs / 5)))
  f = np.exp(theta[0])
  lowest = max(Q_RANGE[0], 1.0 / (2 * np.pi * f * MAX_RING_SECONDS))
  highest = min(Q_RANGE[1], np.pi * f * MAX_RING_SECONDS)
  theta[1] = np.clip(theta[1], np.log(lowest), np.log(highest))
  return theta


def _least_squares(design, target):
  """By the normal equations, a whisker of ridge for the readout's near-collinear filters
  (an SVD per step costs most of the fit)."""
  gram = design.T @ design
  gram[np.diag_indices_from(gram)] += 1e-10 * np.trace(gram) / len(gram) + 1e-300
  return np.linalg.solve(gram, design.T @ target)


def _decimated(v, q: int):
  return scipy.signal.decimate(v, q, ftype='fir', zero_phase=True, axis=0) if q > 1 else v


class _Fit(weighed_fit.WeighedFit):
  """Weighed least squares of a residual on one witness's fringes, at one rate."""

  def __init__(self, x, r, fs: float, harmonics: int):
    self.x, self.harmonics = x, harmonics
    self.post = _readout(fs)
    super().__init__(r, fs, scipy.signal.butter(4, WEIGHT_HZ, 'highpass', fs=fs, output='sos'),
                     SETTLE_SECONDS)

  def bounded(self, theta):
    return _bounded(theta, self.fs)

  def phase(self, theta):
    b, a = _biquad(theta, self.fs)
    return scipy.signal.lfilter(b, a, self.x)

  def design(self, phi, harmonics):
    columns = []
    for n in range(1, harmonics + 1):
      for f in (np.cos(n * phi), np.sin(n * phi)):
        columns += [f if p is None else scipy.signal.lfilter(*p, f) for p in self.post]
    return self.weigh(np.stack(columns, 1))

  def solve(self, theta, harmonics=None):
    """(cost, design, weights, phi) on ``rows``."""
    phi = self.phase(theta)
    d = self.design(phi, harmonics or self.harmonics)
    w = _least_squares(d[self.rows], self.r[self.rows])
    e = self.r[self.rows] - d[self.rows] @ w
    return float(e @ e), d, w, phi

  def jacobian(self, theta, d, w, phi):
    """d residual / d theta on ``rows``, less what the weights would take of it (variable
    projection, Golub and Pereyra): the phase's derivatives by differences, through each
    harmonic's derivative and the readout. Without the projection the readout's weights
    absorb much of a step in the numerator and the steps crawl along that valley."""
    eps = 1e-6
    d_phi = np.stack([(self.phase(np.asarray(theta) + eps * np.eye(5)[i]) - phi) / eps
                      for i in range(5)], 1)
    w = w.reshape(self.harmonics, 2, len(self.post))
    j = np.zeros_like(d_phi)
    for k, p in enumerate(self.post):
      g = sum(n * (w[n - 1, 1, k] * np.cos(n * phi) - w[n - 1, 0, k] * np.sin(n * phi))
              for n in range(1, self.harmonics + 1))
      j += g[:, None] * d_phi if p is None else scipy.signal.lfilter(*p, g[:, None] * d_phi,
                                                                     axis=0)
    j = self.weigh(j)[self.rows]
    return j - d[self.rows] @ _least_squares(d[self.rows], j)

  def scan(self) -> tuple[list, np.ndarray]:
    """Every start (``START_HZ`` x ``START_Q`` x the two numerators x ``START_GAINS``) and
    its cost with one harmonic, on ``rows``. Per corner and Q the phase is a sum of three
    filtered witnesses weighed by the numerator, so every numerator and gain of it is filtered,
    weighed and solved at once."""
    starts, costs = [], []
    rows, r = self.rows, self.r[self.rows]
    for f in START_HZ:
      for q in START_Q:
        parts = np.stack([self.phase((np.log(f), np.log(q)) + tuple(np.eye(3)[k]))
                          for k in range(3)], 1)
        thetas = [(np.log(f), np.log(q), k, 0.0, 0.0) for k in START_GAINS] + [
            (np.log(f), np.log(q), 0.0, -k / q, -k) for k in START_GAINS]
        phi = parts @ np.array([t[2:] for t in thetas]).T  # (T, starts)
        d = self.weigh(np.stack([c if p is None else scipy.signal.lfilter(*p, c, axis=0)
                                 for c in (np.cos(phi), np.sin(phi)) for p in self.post], -1))
        d = d[rows]  # (rows, starts, columns)
        gram = np.einsum('tsc,tsd->scd', d, d)
        gram[:, np.arange(d.shape[2]), np.arange(d.shape[2])] += (
            1e-10 * np.trace(gram, axis1=1, axis2=2)[:, None] / d.shape[2] + 1e-300)
        w = np.linalg.solve(gram, np.einsum('tsc,t->sc', d, r)[..., None])[..., 0]
        left = r[:, None] - np.einsum('tsc,sc->ts', d, w)
        starts += [np.asarray(t) for t in thetas]
        costs += list(np.sum(left ** 2, axis=0))
    return starts, np.asarray(costs)


def slow_witnesses(x_TxC, fs: float) -> list[int]:
  """The columns of standardized witnesses whose power lies mostly below ``SLOW_HZ``."""
  f, p = scipy.signal.welch(x_TxC, fs, nperseg=min(len(x_TxC), int(8 * fs)), axis=0)
  share = p[f < SLOW_HZ].sum(0) / np.maximum(p.sum(0), 1e-300)
  return [int(j) for j in np.flatnonzero(share > SLOW_SHARE)]


def fit_fringes(x_TxC, residual, fs: float, max_fringes: int = MAX_FRINGES,
                min_share: float = MIN_SHARE, log=None) -> tuple[list, list]:
  """The fringe couplings of the slow columns of ``x_TxC`` (standardized witnesses, at most
  ``MAX_SECONDS``) that ``residual`` holds, strongest first: per slow witness, a scan of the
  phase path's starts with one harmonic at an eighth of ``RATE_HZ``; the best witnesses'
  (``max_fringes``) best ``STARTS_KEPT`` starts refined, then again at ``RATE_HZ`` on the
  first two thirds, judged by the share of the weighed residual they explain on the last
  third; kept above ``min_share`` and refitted on all of it, its readout's weights at ``fs``
  (none below ``MIN_RATE_HZ``).
  Returns ``(fringes, scores)``:
  ``Fringe`` each, and ``[witness, share]`` per witness refined."""
  t0 = time.perf_counter()
  if fs < MIN_RATE_HZ:
    return [], []
  x, r = np.asarray(x_TxC, np.float64), np.asarray(residual, np.float64)
  q = max(1, int(fs // RATE_HZ))
  coarse_q = max(1, int(fs / q // (RATE_HZ / 8)))
  fine_fs, coarse_fs = fs / q, fs / q / coarse_q
  r_fine = _decimated(r, q)
  r_coarse = _decimated(r_fine, coarse_q)
  scanned = []
  for j in slow_witnesses(x, fs):
    xj = _decimated(x[:, j], q)
    scan_rows = int(SCAN_SECONDS * coarse_fs)
    fit = _Fit(_decimated(xj, coarse_q)[:scan_rows], r_coarse[:scan_rows], coarse_fs, 1)
    starts, costs = fit.scan()
    order = np.argsort(costs)
    total = float(np.sum(fit.r[fit.rows] ** 2))
    scanned.append((costs[order[0]] / max(total, 1e-300), j, xj,
                    [starts[k] for k in order[:STARTS_KEPT]]))
  fringes, scores = [], []
  if log is not None:
    log('fringes: scanned %s', ', '.join(f'w{j} {1 - c:.3f}' for c, j, *_ in scanned))
  for left, j, xj, starts in sorted(scanned, key=lambda s: s[0])[:max_fringes]:
    if 1.0 - left < SCAN_SHARE:
      continue
    coarse = _Fit(_decimated(xj, coarse_q), r_coarse, coarse_fs, HARMONICS)
    best = min((coarse.levenberg_marquardt(t, 15) for t in starts[:STARTS_KEPT]),
               key=lambda tc: tc[1])[0]
    fine = _Fit(xj, r_fine, fine_fs, HARMONICS)
    theta, _ = fine.levenberg_marquardt(best, 12)
    share, _ = fine.held_out_share(theta)
    scores.append([j, share])
    if share > min_share:
      fine.rows = slice(fine.rows.start, None)
      theta, _ = fine.levenberg_marquardt(theta, 4)
      # The readout's columns are nearly collinear, so weights solved at the fit's rate do not
      # carry over to the file's, where its filters differ a little near the fit's Nyquist
      # (fresh scattered_light/3 at 1024 Hz: 6.7 dB rendered so, 34.8 solved at 1024 Hz).
      full = fine if q == 1 else _Fit(x[:, j], r, fs, HARMONICS)
      full.rows = slice(full.rows.start, None)
      _, _, w, _ = full.solve(theta)
      fringes.append(Fringe(j, tuple(float(v) for v in theta),
                            nested(w.reshape(HARMONICS, 2, len(fine.post))), float(share)))
  if log is not None:
    log('fringes: %d slow witnesses scanned, shares %s (%.1f s)', len(scanned),
        ', '.join(f'w{j} {s:.3f}' for j, s in scores), time.perf_counter() - t0)
  return sorted(fringes, key=lambda f: -f.share), scores


def nested(a) -> tuple:
  """An array as nested tuples of floats (hashable, and as JSON gives it back)."""
  return tuple(nested(v) for v in a) if np.ndim(a) else float(a)

