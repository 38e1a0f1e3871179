"""Honest baselines for noise regression: a multi-input Wiener FIR and a static per-sample MLP.

Both fit on the same training records as the LSTM (witnesses in, target out) and predict in
target units, so ``lstm_jax.metrics.evaluate`` judges them the same way.

* ``WienerFIR``: the least-squares causal FIR filter on ``n_taps`` lags of every witness (the
  discrete Wiener filter), solved in closed form from normal equations accumulated block by block
  on standardized witnesses. It is the best *linear* time-invariant subtraction.
* ``StaticMLP``: a small Flax MLP on the witnesses at the present sample only, trained with optax.
  It can learn any *memoryless* nonlinear coupling, and nothing that needs the past.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.linalg
import scipy.signal

from lstm_jax import data as data_lib
from lstm_jax import volterra


def lagged(x_TxC: np.ndarray, n_taps: int, history=None) -> np.ndarray:
  """(T, C * n_taps) with column ``c * n_taps + k`` = ``x[t - k, c]``: the FIR's design matrix,
  the plain reference its FFT paths are tested against.

  Samples before the start are the last rows of ``history`` ((H, C), the samples just before
  ``x``) where given, else zeros.
  """
  x = np.asarray(x_TxC, np.float64)
  t, c = x.shape
  pad = np.zeros((n_taps - 1, c))
  if history is not None and n_taps > 1 and len(history):
    h = np.asarray(history, np.float64)[-(n_taps - 1):]
    pad[len(pad) - len(h):] = h
  padded = np.concatenate([pad, x])
  # windows[t, c, k] = padded[t + k, c]; reverse k so lag 0 comes first.
  windows = np.lib.stride_tricks.sliding_window_view(padded, n_taps, axis=0)[:t]
  return windows[:, :, ::-1].reshape(t, c * n_taps)


def lag_sums(x_TxC: np.ndarray, later_TxD: np.ndarray, n_taps: int,
              segment: int = 1 << 14, group: int = 16, bins: int = 1024) -> np.ndarray:
  """``out[c, e, j] = sum_s x[s, c] later[s + j, e]`` for lags ``0 <= j < n_taps`` (zeros
  past the end), exact.

  The record is cut into segments (``segment`` samples at least, as many as the transform
  that holds them with the lags allows); each segment of ``x`` meets the same stretch of ``later``
  extended by ``n_taps - 1`` samples, so no product is lost at a seam. Cross-spectra are summed
  over segments and turned into lags once at the end: C x D short inverse FFTs, not one
  record-long FFT per channel pair. Memory: the summed cross-spectra, ``group`` segments'
  spectra, and ``bins`` frequencies' products at a time (the numbers do not depend on
  ``bins``).
  """
  t, n_ch = x_TxC.shape
  n_later = later_TxD.shape[1]
  n_fft = 1 << int(np.ceil(np.log2(max(segment, n_taps) + n_taps - 1)))
  segment = n_fft - n_taps + 1  # the transform's length filled: fewer segments, same memory
  n_freq = n_fft // 2 + 1
  spectra = np.zeros((n_freq, n_ch, n_later), np.complex128)
  starts = range(0, t, segment)
  fx = np.empty((n_freq, n_ch, min(group, len(starts))), np.complex128)
  fl = np.empty((n_freq, min(group, len(starts)), n_later), np.complex128)
  for g in range(0, len(starts), group):  # `group` segments a time: one batched matmul
    chunk = starts[g:g + group]
    for i, lo in enumerate(chunk):
      fx[:, :, i] = np.fft.rfft(x_TxC[lo:lo + segment], n_fft, axis=0)
      fl[:, i, :] = np.fft.rfft(later_TxD[lo:lo + segment + n_taps - 1], n_fft, axis=0)
    n = len(chunk)
    # sum_s a[s] b[s + j] is irfft(conj(A) B)[j]; no wrap for j < n_taps with this n_fft.
    for f in range(0, n_freq, bins):
      spectra[f:f + bins] += np.matmul(np.conj(fx[f:f + bins, :, :n]), fl[f:f + bins, :n])
  del fx, fl
  out = np.empty((n_ch, n_later, n_taps))
  for c in range(n_ch):
    out[c] = np.fft.irfft(spectra[:, c].T, n_fft, axis=-1)[..., :n_taps]
  return out


def _add_lag_sums(corr, cross, x_TxC, series_TxS, segment: int) -> None:
  """Adds one record's sums to the normal equations' parts: ``corr[c, e, L-1+j] += sum_s
  x_c[s] x_e[s+j]`` over lags ``|j| < L`` and ``cross[i, c, k] += sum_t x_c[t-k]
  series_i[t]`` (``L``: the taps of ``cross``), from one ``lag_sums`` pass."""
  n_ch, longest = x_TxC.shape[1], cross.shape[2]
  sums = lag_sums(x_TxC, np.concatenate([x_TxC, series_TxS], axis=1), longest, segment)
  corr[:, :, longest - 1:] += sums[:, :n_ch]
  corr[:, :, :longest - 1] += np.transpose(sums[:, :n_ch, :0:-1], (1, 0, 2))  # negative lags
  cross += np.transpose(sums[:, n_ch:], (1, 0, 2))


def _fill_gram(gram, corr, n_taps: int) -> None:
  """``gram[(c, k), (e, m)] = sum_t x_c[t-k] x_e[t-m] = corr[c, e, L-1 + k - m]`` (the block
  Toeplitz normal matrix of a multi-input FIR of ``n_taps``) from ``corr[c, e, L-1+j] = sum_s
  x_c[s] x_e[s+j]`` over lags ``|j| < L``, in place, symmetrized."""
  n_ch, longest = corr.shape[0], (corr.shape[2] + 1) // 2
  k = np.arange(n_taps)
  lag = (longest - 1) + k[:, None] - k[None, :]
  blocks = gram.reshape(n_ch, n_taps, n_ch, n_taps)
  for c in range(n_ch):
    blocks[c] = corr[c][:, lag].transpose(1, 0, 2)
  gram += gram.T
  gram *= 0.5


def _end_terms(x_TxC: np.ndarray, n_taps: int) -> np.ndarray:
  """What ``_fill_gram``'s block-Toeplitz matrix holds beyond the lagged design's own normal
  matrix (``lagged``: zeros before the record; rows to its last sample), from the record's
  last ``n_taps`` samples: for ``k >= m``, ``sum_t x_c[t - k] x_e[t - m]`` over the design's
  rows stops ``k`` samples before the end where the lag sum at ``k - m`` stops ``k - m``
  before it, so the Toeplitz entry has ``m`` products more, ``sum_{j <= u < k} a_c[u]
  a_e[u - j]`` with ``a[u] = x[T - 1 - u]`` and ``j = k - m``. Same layout as the Gram
  matrix, (C n_taps, C n_taps); the record at least ``n_taps`` long."""
  a = np.asarray(x_TxC, np.float64)[-n_taps:][::-1]  # a[u] = x[T - 1 - u]
  n_ch = a.shape[1]
  ends = np.zeros((n_ch, n_taps, n_ch, n_taps))
  for j in range(n_taps - 1):
    ks = np.arange(j + 1, n_taps)
    # sums[u - j] = sum_{j <= u' <= u} a[u'] a[u' - j]^T: the entry at k takes u = k - 1
    sums = np.cumsum(a[j:, :, None] * a[:n_taps - j, None, :], axis=0)
    ends[:, ks, :, ks - j] = sums[ks - 1 - j]
  below = np.arange(n_taps)[:, None] >= np.arange(n_taps)[None, :]  # k >= m
  ends = np.where(below[None, :, None, :], ends, ends.transpose(2, 3, 0, 1))
  return ends.reshape(n_ch * n_taps, n_ch * n_taps)


def _solve_normal(system, rhs) -> np.ndarray:
  """``system^-1 rhs`` for normal equations (symmetric, positive definite with the ridge): by
  Cholesky, half of LU's work; by LU where rounding leaves the system not quite definite (a
  prediction beside that is itself nearly a filter of the inputs)."""
  try:
    return scipy.linalg.cho_solve(scipy.linalg.cho_factor(system, check_finite=False),
                                  rhs, check_finite=False)
  except np.linalg.LinAlgError:
    return np.linalg.solve(system, rhs)


def _filter_sum(x_TxC: np.ndarray, weights_CxK: np.ndarray) -> np.ndarray:
  """``sum_c sum_k w[c, k] x[t + K - 1 - k, c]`` for ``t < T - K + 1`` (each channel's
  'valid' convolution, summed), by overlap-save: every piece's channels are transformed once,
  weighted and summed as spectra, and one inverse transform per piece gives the sum (one FFT
  per channel and one for all, instead of a forward and an inverse per channel)."""
  n_taps = weights_CxK.shape[1]
  n_out = len(x_TxC) - n_taps + 1
  n_fft = 1 << int(np.ceil(np.log2(max(8 * n_taps, 1024))))
  step = n_fft - n_taps + 1
  n_pieces = -(-n_out // step)
  padded = np.zeros((n_pieces * step + n_taps - 1, x_TxC.shape[1]))
  padded[:len(x_TxC)] = x_TxC
  pieces = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=0)[::step][:n_pieces]
  spectra = np.fft.rfft(pieces, n_fft, axis=-1)  # (P, C, F); windows past the end are zeros
  summed = np.einsum('pcf,cf->pf', spectra, np.fft.rfft(weights_CxK, n_fft, axis=-1))
  out = np.fft.irfft(summed, n_fft, axis=-1)[:, n_taps - 1:n_taps - 1 + step]
  return out.reshape(-1)[:n_out]


@dataclasses.dataclass
class WienerFIR:
  """Causal multi-input FIR: ``y[t] = b + sum_c sum_k w[c, k] x_c[t - k]``, least squares."""
  n_taps: int
  weights: np.ndarray  # (C * n_taps,) on standardized witnesses
  bias: float
  input_norm: data_lib.Normalizer
  name: str = 'wiener_fir'
  # Products of witness pairs appended to the witnesses before the filter (lstm_jax.volterra):
  # the filter's inputs are then [witnesses, products], and ``input_norm`` is over both.
  products: Optional[volterra.Products] = None

  @classmethod
  def fit(cls, records: Sequence[data_lib.Recording], n_taps: int = 128,
          ridge: float = 1e-6, input_norm: Optional[data_lib.Normalizer] = None
          ) -> 'WienerFIR':
    """Solves the Wiener-Hopf equations ``(R + ridge tr(R)/d I) w = p`` over all records.

    ``p[c, k] = sum_t x_c[t - k] y[t]`` (exact, zeros before each record's start) and ``R`` is
    the block-Toeplitz matrix of the witnesses' auto- and cross-correlations at lags up to
    ``n_taps - 1``, all from segment-wise FFTs (``lag_sums``): the lagged design matrix is
    never formed (its edge terms, a fraction ``n_taps / T`` of each sum, are dropped). The bias
    is the target's mean: the witnesses are standardized, so their means are zero.
    ``input_norm`` (default: fitted here) is given where the filter must share another's, so
    that ``plus`` can add them.
    """
    fir, _ = cls.fit_beside(records, None, n_taps, ridge, input_norm)
    return fir

  @classmethod
  def fit_frequency(cls, records: Sequence[data_lib.Recording], n_taps: int = 128,
                    ridge: float = 1e-6, input_norm: Optional[data_lib.Normalizer] = None,
                    nfft: Optional[int] = None) -> 'WienerFIR':
    """The same filter solved per frequency bin, for many witnesses: ``H(f) = S_xx(f)^-1
    S_xy(f)``, a C x C solve per bin instead of one (C n_taps)^2 system.

    Cross-spectra are Welch averages (Hann, ``nfft`` samples, 50% overlap; default 8 n_taps);
    the filter's first ``n_taps`` lags (the causal part) are kept, each divided by the Hann
    window's own lag correlation, which the averaging multiplied it by. The ridge is ``ridge``
    times the mean witness power per bin. Where the best filter is causal and shorter than
    ``n_taps`` this is ``fit``'s filter up to estimation noise (tests/test_gw.py); the time
    domain's cost grows as (C n_taps)^3, this one's as nfft C^3 / 2 (C = 200 witnesses at 128
    taps: a 25600^2 system against 513 solves of 200^2; memory nfft C^2 complex numbers).
    """
    if n_taps < 1:
      raise ValueError(f'n_taps must be >= 1, got {n_taps}')
    norm = input_norm if input_norm is not None else data_lib.Normalizer.fit(
        np.concatenate([r.witnesses for r in records]), 'standardize', 'witness channel')
    nfft = int(nfft or max(8 * n_taps, 256))
    y_mean = float(np.mean(np.concatenate([r.target for r in records]), dtype=np.float64))
    window = scipy.signal.get_window('hann', nfft)
    n_ch = records[0].witnesses.shape[1]
    s_xx = np.zeros((nfft // 2 + 1, n_ch, n_ch), np.complex128)
    s_xy = np.zeros((nfft // 2 + 1, n_ch), np.complex128)
    for rec in records:
      xy = np.concatenate([norm.apply(rec.witnesses).astype(np.float64),
                           np.asarray(rec.target, np.float64)[:, None] - y_mean], axis=1)
      starts = np.arange(0, len(xy) - nfft + 1, nfft // 2)
      for group in np.array_split(starts, max(1, len(starts) // 64)):
        if not len(group):
          continue
        spectra = np.fft.rfft(np.stack([xy[a:a + nfft] for a in group]) * window[:, None],
                              axis=1)  # (S, F, C + 1)
        x_spec = spectra[..., :n_ch]
        s_xx += np.einsum('sfc,sfe->fce', np.conj(x_spec), x_spec)
        s_xy += np.einsum('sfc,sf->fc', np.conj(x_spec), spectra[..., n_ch])
    if not np.any(s_xx):
      raise data_lib.DataError(f'the Wiener filter needs records of at least nfft = {nfft} '
                               'samples')
    power = np.real(np.einsum('fcc->f', s_xx)).mean() / n_ch
    transfer = np.linalg.solve(s_xx + ridge * power * np.eye(n_ch), s_xy[..., None])[..., 0]
    impulse = np.fft.irfft(transfer, nfft, axis=0)[:n_taps]  # (n_taps, C)
    lag_window = np.correlate(window, window, 'full')[nfft - 1:nfft - 1 + n_taps]
    impulse = impulse / (lag_window / lag_window[0])[:, None]
    return cls(n_taps, impulse.T.reshape(-1), y_mean, norm)

  @classmethod
  def fit_beside(cls, records: Sequence[data_lib.Recording], predictions, n_taps: int = 128,
                 ridge: float = 1e-6, input_norm: Optional[data_lib.Normalizer] = None
                 ) -> tuple['WienerFIR', float]:
    """The FIR and a gain ``g`` that fit ``y ~ g p + FIR(x)`` together, least squares, where
    ``p`` is another model's prediction (``predictions``: one array per record; None: no
    ``p``, ``g = 0``; a constant ``p``: ``g = 1``, the FIR fitted on ``y - p``). The ridge (as in
    ``fit``) acts on the FIR's weights only.
    """
    return cls.fit_beside_each(records, predictions, (n_taps,), ridge, input_norm)[0]

  @classmethod
  def fit_beside_each(cls, records: Sequence[data_lib.Recording], predictions,
                      lengths: Sequence[int], ridge: float = 1e-6,
                      input_norm: Optional[data_lib.Normalizer] = None,
                      segment: int = 1 << 14) -> list[tuple['WienerFIR', float]]:
    """``fit_beside`` for each filter length in ``lengths``, from one pass over the records:
    a shorter filter's normal equations are a part of the longest one's. ``segment``: the
    segment ``lag_sums`` transforms (memory grows with it, the numbers only by rounding)."""
    return cls.fit_beside_sets(records, predictions, lengths, [None], ridge, input_norm,
                               segment)[0]

  @classmethod
  def fit_beside_sets(cls, records: Sequence[data_lib.Recording], predictions,
                      lengths: Sequence[int], column_sets, ridge: float = 1e-6,
                      input_norm: Optional[data_lib.Normalizer] = None,
                      segment: int = 1 << 14, alone_too: bool = False
                      ) -> list[list[tuple['WienerFIR', float]]]:
    """``fit_beside_each`` over each set of the inputs' columns in ``column_sets`` (None: all
    of them), one list per set; a set's filter weighs the other columns zero, and all share
    one normalizer (``input_norm``, else fitted on every column), so their filters add. One
    pass of lag sums over the columns the sets use serves every set and length: a set's
    normal equations are a part of theirs. ``alone_too``: after those lists, one per set of
    the filters fitted without the predictions (gain 0; the same equations less their
    border)."""
    if min(lengths) < 1:
      raise ValueError(f'n_taps must be >= 1, got {min(lengths)}')
    norm = input_norm if input_norm is not None else data_lib.Normalizer.fit(
        np.concatenate([r.witnesses for r in records]), 'standardize', 'witness channel')

    def centred(arrays):
      mean = float(np.mean(np.concatenate(arrays), dtype=np.float64))
      return [np.asarray(a, np.float64) - mean for a in arrays], mean

    ys, y_mean = centred([r.target for r in records])
    series = [ys]
    if predictions is not None:
      ps, p_mean = centred(predictions)
      if sum(float(np.dot(p, p)) for p in ps) <= 1e-12 * sum(float(np.dot(y, y)) for y in ys):
        # A constant prediction leaves its gain undetermined: keep it as it is (gain 1).
        left = [dataclasses.replace(r, target=r.target - p) for r, p in zip(records, predictions)]
        return [[(fir, 1.0) for fir, _ in fits] for fits in cls.fit_beside_sets(
            left, None, lengths, column_sets, ridge, norm, segment)] + (cls.fit_beside_sets(
                records, None, lengths, column_sets, ridge, norm, segment) if alone_too else [])
      series.append(ps)
    n_ch = records[0].witnesses.shape[1]
    sets = [np.arange(n_ch) if c is None else np.asarray(c, int) for c in column_sets]
    used = np.unique(np.concatenate(sets))
    at = np.searchsorted(used, np.arange(n_ch))  # a column's place among those used
    part = norm.take(used)
    longest = max(lengths)
    corr = np.zeros((len(used), len(used), 2 * longest - 1))  # [c, e, L-1+j]: sum x_c[s] x_e[s+j]
    cross = np.zeros((len(series), len(used), longest))  # [i, c, k]: sum_t x_c[t-k] series_i[t]
    for r, rec in enumerate(records):
      x = part.apply(np.asarray(rec.witnesses)[:, used]).astype(np.float64)
      _add_lag_sums(corr, cross, x, np.stack([values[r] for values in series], 1), segment)
    p_dot = ((lambda a: sum(float(np.dot(p, b)) for p, b in zip(ps, a)))
             if predictions is not None else None)
    def filter_of(columns, n_taps, solution, bias):
      weights = np.zeros((n_ch, n_taps))
      weights[columns] = solution.reshape(len(columns), n_taps)
      return cls(n_taps, weights.reshape(-1), bias, norm)

    beside, alone = [], []
    for columns in sets:
      inner = at[columns]
      corr_set = corr[np.ix_(inner, inner)]
      beside.append([])
      alone.append([])
      for n_taps in lengths:
        d = len(columns) * n_taps
        # The normal equations, built in place (memory: the system and the solver's copy).
        # With a prediction beside, its row and column border the witnesses' block.
        size = d + (predictions is not None)
        system = np.empty((size, size))
        gram = system[:d, :d]
        _fill_gram(gram, corr_set, n_taps)
        gram[np.diag_indices(d)] += ridge * np.trace(gram) / d
        xy = cross[:, inner, :n_taps].reshape(len(series), d)
        if predictions is None or alone_too:
          (alone if predictions is not None else beside)[-1].append(
              (filter_of(columns, n_taps, _solve_normal(gram, xy[0]), y_mean), 0.0))
        if predictions is not None:
          system[:d, d] = system[d, :d] = xy[1]
          system[d, d] = p_dot(ps)
          solution = _solve_normal(system, np.r_[xy[0], p_dot(ys)])
          gain = float(solution[d])
          beside[-1].append((filter_of(columns, n_taps, solution[:d], y_mean - gain * p_mean),
                             gain))
        del system, gram
    if not alone_too:
      return beside
    return beside + (alone if predictions is not None else beside)

  def predict(self, witnesses_TxC, block: int = 1 << 15) -> np.ndarray:
    """(T,) in target units for one record; zeros (the witnesses' means) before its start."""
    used = self.inputs_used()  # the others weigh zero: neither scaled nor filtered
    return self.apply_scaled(self.scaled_inputs(witnesses_TxC, columns=used), None, block,
                             columns=used)

  def scaled_inputs(self, witnesses_TxC, before_TxC=None, columns=None) -> np.ndarray:
    """The filter's standardized inputs: the witnesses, widened by any products (a lagged
    factor reads ``before_TxC``, the witnesses just before; None: their means); ``columns``:
    only those inputs (None: all)."""
    w = (witnesses_TxC if self.products is None
         else self.products.widen(witnesses_TxC, before_TxC))
    if columns is None:
      return self.input_norm.apply(w)
    return self.input_norm.take(columns).apply(np.asarray(w)[:, columns])

  @property
  def n_channels(self) -> int:
    return int(np.size(self.weights) // self.n_taps)

  def apply_scaled(self, x_TxC, history=None, block: int = 1 << 15,
                   columns=None) -> np.ndarray:
    """The filter on standardized witnesses ``x`` whose ``n_taps - 1`` predecessors are
    ``history`` (standardized too; None: zeros); ``columns``: the inputs ``x`` holds (None:
    all), the others' weights taken as zero. Streaming passes each block's tail on.
    The channels are filtered and summed in the frequency domain (``_filter_sum``), ``block``
    samples at a time (memory: the block, never a lagged design matrix)."""
    x = np.asarray(x_TxC, np.float64)
    t, n_ch = x.shape
    weights = np.asarray(self.weights, np.float64).reshape(-1, self.n_taps)
    weights = weights if columns is None else weights[columns]
    used = np.flatnonzero(np.any(weights != 0, axis=1))
    out = np.full(t, float(self.bias))
    if not len(used):
      return out
    # Columns weighed zero (those a selection left out) would cost their transforms for nothing.
    x, weights, n_ch = x[:, used], weights[used], len(used)
    pad = np.zeros((self.n_taps - 1, n_ch))
    if history is not None and self.n_taps > 1 and len(history):
      h = np.asarray(history, np.float64)[-(self.n_taps - 1):, used]
      pad[len(pad) - len(h):] = h
    padded = np.concatenate([pad, x])
    for lo in range(0, t, block):
      hi = min(t, lo + block)
      piece = padded[lo:hi + self.n_taps - 1]  # the block and the n_taps - 1 samples before it
      out[lo:hi] += _filter_sum(piece, weights)
    return out

  def inputs_used(self) -> list[int]:
    """The input columns (witnesses, then products) with any nonzero weight."""
    w = np.asarray(self.weights).reshape(-1, self.n_taps)
    return np.flatnonzero(np.any(w != 0, axis=1)).tolist()

  def summary(self) -> dict:
    """What the filter is, for logs and stats: taps, the product pairs and bent witnesses it
    widens the witnesses with, and which of its input columns it uses."""
    extra = self.products
    return {'n_taps': self.n_taps,
            'products': [] if extra is None else [list(p) for p in extra.pairs],
            'shapes': [] if extra is None else [list(q) for q in extra.shapes],
            'modulated': [] if extra is None else [[i, j, len(h)] for i, j, h in extra.modulated],
            'bent_paths': [] if extra is None else [[j, len(h)]
                                                    for j, _, h, _ in extra.bent_paths],
            'fringes': [] if extra is None else [[j] for j, _, _ in extra.fringes],
            'modes': [] if extra is None else [[j, k] for j, k, _ in extra.modes],
            'envelopes': [] if extra is None else [[j] for j, _, _ in extra.envelopes],
            'inputs_used': self.inputs_used(), 'n_inputs': len(self.weights) // self.n_taps}

  def plus(self, other: 'WienerFIR') -> 'WienerFIR':
    """One filter whose output is the sum of both outputs (the shorter one's weights padded
    with zero lags); both must standardize the witnesses alike."""
    if not self.same_inputs(other):
      raise ValueError('the two filters standardize the witnesses differently; fit one with '
                       'input_norm=the other\'s input_norm')
    n_taps = max(self.n_taps, other.n_taps)

    def padded(fir):
      w = np.asarray(fir.weights, np.float64).reshape(-1, fir.n_taps)  # (C, n_taps)
      return np.pad(w, ((0, 0), (0, n_taps - fir.n_taps))).reshape(-1)

    return WienerFIR(n_taps, padded(self) + padded(other), self.bias + other.bias,
                     self.input_norm, self.name, self.products)

  def same_inputs(self, other: 'WienerFIR', norm: bool = True) -> bool:
    """Whether both filters widen the witnesses alike (products, bent witnesses) and, with
    ``norm``, standardize them alike."""
    widening = lambda f: None if f.products is None else f.products.to_dict()
    return widening(self) == widening(other) and (
        not norm or self.input_norm.to_dict() == other.input_norm.to_dict())

  def to_dict(self) -> dict:
    out = {'n_taps': self.n_taps, 'weights': np.asarray(self.weights).tolist(),
           'bias': self.bias, 'input_norm': self.input_norm.to_dict()}
    if self.products is not None:
      out['products'] = self.products.to_dict()
    return out

  @classmethod
  def from_dict(cls, d: dict) -> 'WienerFIR':
    products = volterra.Products.from_dict(d['products']) if 'products' in d else None
    return cls(int(d['n_taps']), np.asarray(d['weights'], np.float64), float(d['bias']),
               data_lib.Normalizer.from_dict(d['input_norm']), products=products)


# ``regularized``: the residual's whitening filter's order, and the largest filter (inputs x
# taps) it refits (each likelihood evaluation factors a matrix of that size).
WHITENING_ORDER = 32
MAX_REGULARIZED_WEIGHTS = 2048


def whitening_filter(residual, order: int = WHITENING_ORDER, floor: float = 0.0):
  """The AR(``order``) prediction-error filter of ``residual`` (Yule-Walker), as a function
  that whitens a series along its first axis and drops its first ``order`` samples (means
  are the caller's: ``residual``'s is not removed). ``floor``: white noise at this share of
  the residual's power added to it first, which bounds the filter's gain where the residual
  has almost no power (a residual that is one pure line)."""
  r = np.asarray(residual, np.float64)
  acf = np.array([r[k:] @ r[:len(r) - k] for k in range(order + 1)])
  acf[0] *= 1.0 + floor
  ar = scipy.linalg.solve_toeplitz(acf[:order], acf[1:order + 1])
  return lambda v: scipy.signal.lfilter(np.r_[1.0, -ar], 1.0, v, axis=0)[order:]


def _unit_scaled(gram: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Normal equations with each unknown scaled to unit power and a ridge of 1e-9 relative to
  that, and the scales ``unit``: the solve is the same in any units of the unknowns (a
  target's own lags in a strain's units, 1e-21, beside standardized inputs). Solve the
  scaled system for ``b / unit``; the weights are its solution ``/ unit``."""
  unit = np.sqrt(np.maximum(np.diag(gram), 1e-300))
  scaled = gram / np.outer(unit, unit)
  scaled[np.diag_indices(len(unit))] += 1e-9
  return scaled, unit


def _inverse_diagonal(upper: np.ndarray) -> np.ndarray:
  """The diagonal of ``A^-1`` from ``A``'s upper Cholesky factor ``R`` (``A = R'R``): the
  squared rows of ``R^-1``."""
  r_inv = np.triu(scipy.linalg.lapack.dtrtri(upper, lower=0)[0])  # below: not R's
  return np.einsum('ij,ij->i', r_inv, r_inv)


def regularized(fir: WienerFIR, records: Sequence[data_lib.Recording],
                segment: int = 1 << 14) -> Optional[tuple[WienerFIR, dict]]:
  """``fir``'s inputs (the columns it uses, products included) and length refitted under a
  stable-spline (TC) prior, ``w_c ~ N(0, s_c K(tau_c))`` with ``K[j, k] = lam^max(j, k)``,
  ``lam = exp(-1 / (tau_c fs))``: each input's impulse response decays, smoothly, at a rate of
  its own. Where least squares shows an input's response starting late (``_onsets``), the
  prior shifted to start there or a few taps before, ``K[j, k] = lam^(max(j, k) - d_c)`` past
  the delay ``d_c`` and zero before, is fitted too and kept if its marginal likelihood is
  higher: the plain prior gives the first taps the most variance, and a delayed response pays
  for every tap before it. Least squares spends the same estimation noise on every tap (on
  new data about taps / samples of the residual's power, per input), though a resonance needs
  a few numbers and a product seen at once one; the prior leaves a short or unused response
  few effective weights. The scales and decay times maximize the marginal likelihood of the
  targets after both sides are whitened by the AR(``WHITENING_ORDER``) filter of ``fir``'s
  residual (the likelihood takes the noise as white; a filter applied to inputs and target
  alike leaves the FIR between them unchanged). None where ``fir`` has more than
  ``MAX_REGULARIZED_WEIGHTS`` weights in use. Returns the filter (``fir``'s normalizer,
  products and bias) and the fitted ``{'tau_s': [...], 'scale': [...], 'delay_s': [...]}``."""
  columns, n_taps, fs = fir.inputs_used(), fir.n_taps, float(records[0].fs)
  n_in = len(columns)
  if not n_in or n_in * n_taps > MAX_REGULARIZED_WEIGHTS:
    return None
  xs = [fir.scaled_inputs(r.witnesses, columns=columns).astype(np.float64) for r in records]
  y_mean = float(fir.bias)
  ys = [np.asarray(r.target, np.float64) - y_mean for r in records]
  residual = np.concatenate([y - (fir.apply_scaled(x, columns=columns) - y_mean)
                             for y, x in zip(ys, xs)])
  order = WHITENING_ORDER
  whiten = whitening_filter(residual, order)
  corr = np.zeros((n_in, n_in, 2 * n_taps - 1))
  cross, yy, n = np.zeros((1, n_in, n_taps)), 0.0, 0
  for x, y in zip(xs, ys):
    if len(y) <= order + n_taps:
      continue
    yw = whiten(y)
    _add_lag_sums(corr, cross, whiten(x), yw[:, None], segment)
    yy, n = yy + float(yw @ yw), n + len(yw)
  if not n:
    return None
  gram = np.empty((n_in * n_taps,) * 2)
  _fill_gram(gram, corr, n_taps)
  cross = cross.reshape(-1)
  found = [_prior_fit(gram, cross, yy, n, n_in, n_taps, fs, np.zeros(n_in, int))]
  onsets = _onsets(gram, cross, yy, n, n_in, n_taps)
  # The first tap that stands out can be a response's second, where it starts small (a
  # low-pass): the delays start at the onsets and step back a tap at a time while the
  # marginal likelihood rises (test linear_paths/100: 48.9, 58.1, 57.7 dB at 0, 1, 2).
  for margin in range(MAX_ONSET_MARGIN + 1):
    delays = np.maximum(onsets - margin, 0)
    if not delays.any():
      break
    fit = _prior_fit(gram, cross, yy, n, n_in, n_taps, fs, delays, found[-1]['theta'])
    if margin and fit['value'] >= found[-1]['value']:
      break
    found.append(fit)
  best = min(found, key=lambda f: f['value'])
  weights = np.zeros((fir.n_channels, n_taps))
  weights[columns] = best['weights']
  info = {'tau_s': np.exp(best['theta'][1::2]).tolist(),
          'scale': np.exp(best['theta'][::2]).tolist(),
          'delay_s': (best['delays'] / fs).tolist()}
  return dataclasses.replace(fir, weights=weights.reshape(-1)), info


ONSET_Z = 4.0  # standard errors by which a least-squares tap stands out of its estimation noise
MAX_ONSET_MARGIN = 3  # taps the delays may step back from the onsets
# The shortest decay time a prior may take, in samples: at 0.05 a tap's successor has e^-20 of
# its variance, so the prior can render one tap (a pure delay: 44 -> 54 dB at 0.5 -> 0.05).
TAU_FLOOR = 0.05


def _onsets(gram, cross, yy: float, n: int, n_in: int, n_taps: int) -> np.ndarray:
  """Each input's first tap whose least-squares weight stands ``ONSET_Z`` standard errors
  out of the estimation noise (0 where none does or the system is not definite): the delay
  before which a response shows nothing the data can resolve (``_unit_scaled``)."""
  scaled, unit = _unit_scaled(gram)
  try:
    chol = scipy.linalg.cho_factor(scaled, lower=False, check_finite=False)
  except np.linalg.LinAlgError:
    return np.zeros(n_in, int)
  b = cross / unit
  w = scipy.linalg.cho_solve(chol, b, check_finite=False)
  noise = max(yy - b @ w, 0.0) / max(n - len(w), 1)
  se = np.sqrt(noise * _inverse_diagonal(chol[0]))
  stands = (np.abs(w) > ONSET_Z * se).reshape(n_in, n_taps)
  return np.where(stands.any(axis=1), stands.argmax(axis=1), 0)


def _prior_fit(gram, cross, yy: float, n: int, n_in: int, n_taps: int, fs: float,
               delays: np.ndarray, start=None) -> dict:
  """``regularized``'s empirical-Bayes fit for given per-input ``delays`` (taps): the
  hyperparameters ``theta`` (log scale, log decay time per input) that minimize -2 log
  marginal likelihood ``value`` from ``start`` or a coarse grid, and the posterior-mean
  ``weights`` (inputs, taps)."""
  import scipy.optimize  # pylint: disable=g-import-not-at-top
  # The prior's square root is block diagonal, T_c = s_c U_c diag(sqrt(v_c)) with U_c the
  # upper triangle of ones from the input's delay d_c on (w_j = sum_{k >= j} of independent
  # steps for j >= d_c, zero before): U^T G U and U^T b are formed once per set of delays,
  # and each hyperparameter's likelihood scales them by an outer product.
  live = (np.arange(n_taps)[None, :] >= delays[:, None])  # taps past each input's delay

  def cumulated(a):  # U^T a over each input's taps (the rows): sums from the delay on
    rows = a.reshape(n_in, n_taps, -1) * live[:, :, None]
    return np.cumsum(rows, axis=1).reshape(a.shape)
  gram_u = cumulated(cumulated(gram).T).T
  cross_u = cumulated(cross[:, None])[:, 0]
  last = np.arange(n_taps) == n_taps - 1
  steps = np.where(live, np.arange(n_taps)[None, :] - delays[:, None], 0)  # var(w_d) = s^2

  def root_diag(theta):  # g = s_c sqrt(v_c) over each input's taps, and d log g / d log tau_c
    lam = np.exp(-1.0 / (np.exp(theta[1::2]) * fs))[:, None]
    v = lam ** steps * np.where(last, 1.0, 1.0 - lam)
    g = np.where(live, np.exp(theta[::2])[:, None] * np.sqrt(v), 0.0)
    # d log sqrt(v_j) / d log tau = -log(lam) / 2 (j - lam / (1 - lam)); the last tap: j
    slopes = (steps - np.where(last, 0.0, lam / (1.0 - lam))) * (-np.log(lam) / 2)
    return g.reshape(-1), np.where(live, slopes, 0.0).reshape(-1)

  diagonal = np.diag_indices(len(gram_u))

  def solve(theta, with_grad: bool = False):
    """-2 log likelihood with the noise variance profiled out (and its gradient in theta),
    with A = I + D U^T G U D, D = diag(g), q = D U^T b:
    n log((y'y - q'A^-1 q) / n) + log det A."""
    g, slopes = root_diag(theta)
    a = gram_u * np.outer(g, g)
    a[diagonal] += 1.0
    chol = scipy.linalg.cho_factor(a, lower=False)
    q = g * cross_u
    alpha = scipy.linalg.cho_solve(chol, q)
    fit = max(yy - q @ alpha, 1e-300 * n)
    value = n * np.log(fit / n) + 2.0 * np.sum(np.log(np.diag(chol[0])))
    if not with_grad:
      return value, g, chol, q
    # d log det A / d g_i = 2 (A^-1 D U^T G U)_ii = 2 (1 - (A^-1)_ii) / g_i, as A^-1 (A - I)
    # = I - A^-1: only the inverse's diagonal, the squared rows of R^-1 (A = R'R), is needed.
    inverse_diag = _inverse_diagonal(chol[0])
    d_fit = -2.0 * (cross_u * alpha - alpha * (gram_u @ (g * alpha)))
    g_d_g = (n / fit) * d_fit * g + 2.0 * (1.0 - inverse_diag)  # g_i d(-2 log L)/d g_i
    by_input = lambda v: v.reshape(n_in, n_taps).sum(axis=1)
    return value, np.ravel(np.stack([by_input(g_d_g), by_input(g_d_g * slopes)], 1))

  bounds = [(-12.0, 6.0), (np.log(TAU_FLOOR / fs), np.log(2.0 * n_taps / fs))] * n_in
  if start is None:  # the best of a coarse grid (one decay time and scale for all inputs),
    # its decay times from half a sample up (from the floor up, dev mains_sidebands/0 ended
    # at a worse optimum of the likelihood: 15 dB less on the later file)
    grid = [np.ravel([[log_s, log_tau]] * n_in) for log_s in (-3.0, 0.0, 3.0)
            for log_tau in np.linspace(np.log(0.5 / fs), bounds[1][1], 5)]
    start = min(grid, key=lambda th: solve(th)[0])
  theta = scipy.optimize.minimize(lambda th: solve(th, True), start, jac=True,
                                  method='L-BFGS-B', bounds=bounds, options={'maxiter': 100}).x
  value, g, chol, q = solve(theta)
  steps_taken = (g * scipy.linalg.cho_solve(chol, q)).reshape(n_in, n_taps)
  weights = np.cumsum(steps_taken[:, ::-1], axis=1)[:, ::-1] * live  # U: w_j = sum_{k>=j}
  return {'theta': theta, 'value': value, 'weights': weights, 'delays': delays}


def _shared_poles(fir: WienerFIR, columns, order: int, skip: int) -> Optional[np.ndarray]:
  """A denominator of ``order`` poles that ``fir``'s impulse responses (the ``columns``) all
  follow past their first ``skip`` taps (fewer where the responses are short): least squares
  on ``h_c(t) = -sum_k a_k h_c(t - k)`` over every column, poles reflected inside 0.999 of the
  unit circle. None where the responses are too short for it."""
  if not order:
    return None
  h = np.asarray(fir.weights, np.float64).reshape(fir.n_channels, fir.n_taps)[columns]
  first = max(order, min(skip, fir.n_taps - 4 * order))
  if fir.n_taps - first < 2 * order:
    return None
  lagged = np.stack([h[:, first - k:fir.n_taps - k] for k in range(1, order + 1)], -1)
  a, *_ = np.linalg.lstsq(lagged.reshape(-1, order), -h[:, first:].reshape(-1), rcond=None)
  return np.real(np.poly(_reflected(np.roots(np.r_[1.0, a]))))


def _reflected(poles: np.ndarray) -> np.ndarray:
  """``poles`` outside 0.999 of the unit circle moved onto it (a stable filter)."""
  return np.where(np.abs(poles) > 0.999, 0.999 * poles / np.maximum(np.abs(poles), 1e-300),
                  poles)


# ``pole_zero``: Steiglitz-McBride iterations, the samples they read (the first ones), and
# whether they start from the filter's own responses' poles too (beside no poles).
POLE_ZERO_ITERATIONS = 8
POLE_ZERO_SAMPLES = 1 << 18
POLE_ZERO_FROM_RESPONSES = True


def pole_zero(fir: WienerFIR, records: Sequence[data_lib.Recording], order: int,
              n_zeros: int, max_taps: int, segment: int = 1 << 14, fir_columns=()
              ) -> Optional[tuple[WienerFIR, dict]]:
  """``fir``'s inputs (the columns it uses, products included) refitted as one rational
  filter, ``B_c(z) / A(z)`` per input: a denominator of ``order`` poles shared by every input
  and numerators of ``n_zeros`` taps (a delay and the zeros). A resonance that rings for
  longer than a FIR's taps costs that FIR its tail, or the tail's estimation noise; a pole
  pair holds it in two numbers. Steiglitz-McBride: both sides filtered by ``1 / A`` of the
  previous pass, then ``A`` and the ``B_c`` by least squares (from one pass of lag sums),
  ``POLE_ZERO_ITERATIONS`` times,
  on inputs and targets whitened as ``regularized`` whitens them (by the AR filter of
  ``fir``'s residual, then of the first pass's: the iterations take the noise as white);
  poles outside 0.999 of the unit circle are reflected in. The iterations start from no poles
  (their first pass is the equation-error fit, biased where the noise is coloured and loud)
  and, with ``POLE_ZERO_FROM_RESPONSES``, again from the poles ``fir``'s own responses follow
  (``_shared_poles``); the first pass whose filter leaves less of the whitened training
  target goes on to the second (from no poles alone, a resonance under a loud background can
  end on poles that decay in a ms). Returned as a FIR (``fir``'s normalizer, products and
  bias) of the impulse responses cut where the slowest pole has decayed by 60 dB, at least
  ``fir``'s length and at most ``max_taps``; and ``{'order', 'n_zeros', 'fir_columns',
  'poles_hz', 'decay_s'}``. None where there are too few samples.

  ``fir_columns``: inputs that keep ``fir``'s responses as they are, the others refitted on
  what those leave (a resonance on one input beside inputs that need none, which one shared
  denominator would bend; least squares on their taps again would add the estimation noise
  ``fir``'s prior kept out)."""
  kept = [c for c in fir.inputs_used() if c in set(fir_columns)]
  columns, fs = [c for c in fir.inputs_used() if c not in kept], float(records[0].fs)
  n_in = len(columns)
  if not n_in:
    return None
  xs, ys, left = [], [], POLE_ZERO_SAMPLES
  for r in records:
    take = min(left, len(r))
    if take > n_zeros + order:
      # The inputs widened and scaled once; the kept ones' part is taken off the target.
      x = fir.scaled_inputs(r.witnesses[:take], columns=columns + kept).astype(np.float64)
      xs.append(x[:, :n_in])
      ys.append(np.asarray(r.target[:take], np.float64) - float(fir.bias))
      if kept:
        ys[-1] -= fir.apply_scaled(x[:, n_in:], columns=kept) - float(fir.bias)
      left -= take
  width = n_in * n_zeros + order
  if sum(len(y) for y in ys) <= 10 * width + WHITENING_ORDER:
    return None
  # The unknowns among the lags of [inputs, target] (``longest`` each): x_c(t - k) for
  # k < n_zeros, then y(t - k) for 1 <= k <= order; the target y(t) is lag 0 of the last.
  longest = max(n_zeros, order + 1)
  unknowns = np.concatenate([c * longest + np.arange(n_zeros) for c in range(n_in)]
                            + [n_in * longest + np.arange(1, order + 1)])
  # Transforms a few times the lags long: the cross-spectra's inverse transforms, (C + 1)^2
  # of the transform's length each pass, cost more than the segments' for long ones.
  lag_segment = min(segment, max(1024, 8 * longest))

  def iterated(xws, yws, denominator):  # Steiglitz-McBride on whitened data from ``denominator``
    for _ in range(POLE_ZERO_ITERATIONS):
      corr = np.zeros((n_in + 1, n_in + 1, 2 * longest - 1))
      cross = np.zeros((1, n_in + 1, longest))
      ends = np.zeros(((n_in + 1) * longest,) * 2)
      for x, y in zip(xws, yws):
        both = scipy.signal.lfilter([1.0], denominator, np.c_[x, y], axis=0)
        _add_lag_sums(corr, cross, both, both[:, -1:], lag_segment)
        ends += _end_terms(both, longest)
      gram = np.empty(((n_in + 1) * longest,) * 2)
      _fill_gram(gram, corr, longest)
      gram -= ends  # the lagged design's own sums, to the rounding: 8 poles need them
      gram = gram[np.ix_(unknowns, unknowns)]
      # Solved scaled per unknown: the target's lags are in its units (a zoo target of 1e-4)
      # and, whitened by a residual that is the ring a FIR cut off, may hold ~1e-9 of the
      # inputs' power; a ridge scaled to the mean diagonal zeroed their weights (poles at 0
      # and fs/2).
      gram, unit = _unit_scaled(gram)
      # y(t) = sum_c (b_c * x_c)(t) - sum_k a_k y(t - k): the target's lags enter as -a_k
      solution = scipy.linalg.solve(gram, cross[0].reshape(-1)[unknowns] / unit,
                                    assume_a='pos') / unit
      poles = _reflected(np.roots(np.r_[1.0, -solution[width - order:]]))
      denominator = np.real(np.poly(poles))
    return denominator, solution[:width - order].reshape(n_in, n_zeros), poles

  def as_fir(denominator, numerators, n_taps):  # the impulse responses, cut at n_taps
    impulse = np.zeros(n_taps)
    impulse[0] = 1.0
    weights = np.zeros((fir.n_channels, n_taps))
    weights[columns] = [scipy.signal.lfilter(b, denominator, impulse) for b in numerators]
    weights[kept, :fir.n_taps] = np.asarray(fir.weights).reshape(-1, fir.n_taps)[kept]
    return dataclasses.replace(fir, weights=weights.reshape(-1), n_taps=n_taps)

  def residuals(f):  # what ``f`` leaves of each target
    return [y - (f.apply_scaled(x, columns=columns) - float(f.bias)) for y, x in zip(ys, xs)]

  def whitened(whiten):  # inputs and targets through ``whiten``
    return [whiten(x) for x in xs], [whiten(y) for y in ys]

  # Twice: the first pass is whitened by ``fir``'s residual, which holds the tail ``fir``
  # cut off (a spectral peak at the resonance the whitening would flatten); the second by
  # the first pass's own, from the first pass's start that leaves less.
  whiten = whitening_filter(np.concatenate(residuals(fir)))

  def left_over(found):  # the whitened training target's power that ``found`` leaves
    return sum(float(np.sum(np.square(whiten(r))))
               for r in residuals(as_fir(found[0], found[1], max_taps)))

  from_responses = _shared_poles(fir, columns, order, n_zeros) if POLE_ZERO_FROM_RESPONSES else None
  starts = [np.ones(1)] + ([from_responses] if from_responses is not None else [])
  first_data = whitened(whiten)
  denominator, numerators, _ = min((iterated(*first_data, a) for a in starts), key=left_over)
  second = whitening_filter(np.concatenate(residuals(as_fir(denominator, numerators, max_taps))))
  denominator, numerators, poles = iterated(*whitened(second), denominator)
  slowest = float(np.max(np.abs(poles))) if order else 0.0
  ring = np.log(1e3) / -np.log(slowest) if slowest > 0 else 0.0  # samples to fall 60 dB
  n_taps = int(min(max_taps, max(fir.n_taps, n_zeros + int(np.ceil(ring)))))
  info = {'order': order, 'n_zeros': n_zeros, 'fir_columns': kept,
          'poles_hz': sorted({round(abs(float(np.angle(z))) * fs / (2 * np.pi), 2)
                              for z in poles}),
          'decay_s': float(ring / fs / np.log(1e3))}
  return as_fir(denominator, numerators, n_taps), info


class _MLP(nn.Module):
  hidden: Sequence[int]

  @nn.compact
  def __call__(self, x_NxC):
    h = x_NxC
    for k, size in enumerate(self.hidden):
      h = nn.gelu(nn.Dense(size, name=f'hidden_{k}')(h))
    return nn.Dense(1, name='out')(h)[..., 0]


@dataclasses.dataclass
class StaticMLP:
  """Per-sample MLP: ``y[t] = f(x[t])``, no memory. Trained with Adam on random minibatches."""
  hidden: tuple
  params: dict
  input_norm: data_lib.Normalizer
  target_norm: data_lib.Normalizer
  name: str = 'static_mlp'

  @classmethod
  def fit(cls, records: Sequence[data_lib.Recording], hidden: Sequence[int] = (64, 64),
          num_steps: int = 3000, batch_size: int = 4096, learning_rate: float = 3e-3,
          seed: int = 0) -> 'StaticMLP':
    x_all = np.concatenate([r.witnesses for r in records])
    y_all = np.concatenate([r.target for r in records])
    input_norm = data_lib.Normalizer.fit(x_all, 'standardize', 'witness channel')
    target_norm = data_lib.Normalizer.fit(y_all, 'standardize', 'target channel')
    x = jnp.asarray(input_norm.apply(x_all))
    y = jnp.asarray(target_norm.apply(y_all[:, None])[:, 0])
    model = _MLP(tuple(hidden))
    key_init, key_data = jax.random.split(jax.random.key(seed))
    params = model.init(key_init, x[:1])['params']
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, 0.01))

    def loss(p, xb, yb):
      return jnp.mean(jnp.square(model.apply({'params': p}, xb) - yb))

    @jax.jit
    def run(params):
      def step(carry, key):
        p, opt_state = carry
        idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        value, grads = jax.value_and_grad(loss)(p, x[idx], y[idx])
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), value
      (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)),
                                         jax.random.split(key_data, num_steps))
      return params, losses

    params, _ = run(params)
    return cls(tuple(hidden), jax.device_get(params), input_norm, target_norm)

  def predict(self, witnesses_TxC) -> np.ndarray:
    y = _MLP(self.hidden).apply({'params': self.params},
                                jnp.asarray(self.input_norm.apply(witnesses_TxC)))
    return self.target_norm.invert(np.asarray(y)[:, None])[:, 0]


def fit_timed(fit, *args, **kwargs):
  """``(fitted, seconds)``: wall time of a fit, with JAX work finished."""
  t0 = time.perf_counter()
  fitted = fit(*args, **kwargs)
  jax.block_until_ready(getattr(fitted, 'params', 0))
  return fitted, time.perf_counter() - t0
