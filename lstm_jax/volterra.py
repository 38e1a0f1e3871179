"""Second-order (Volterra) features: products of witness pairs, found by screening.

A bilinear coupling, the field's commonest nonlinear one (a slow angular motion modulating a
line, a witness squared), is a product of two witnesses, often seen through a filter
afterwards (a resonance, a delay). A linear filter over the witnesses cannot render it; over the
witnesses *and the right products* it can, exactly and in closed form. ``screen_pairs`` finds
the products that a residual is coherent with far above chance; ``Products``
appends them to the witnesses, so any filter fitted on the widened witnesses
(``lstm_jax.baselines.WienerFIR``) renders "product, then linear dynamics".
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from lstm_jax import data as data_lib

# The screen looks at no more samples than this (a contiguous stretch from each record, in
# turn): its cost stays bounded on hour-long recordings; a coupling worth a product is plain
# in far fewer samples.
SCREEN_SAMPLES = 1 << 18
GROUP = 16  # candidate products transformed at once (memory: GROUP x SCREEN_SAMPLES complex)
# A coupling may see one factor later than the other (a slow modulation reaching the target
# through a delay): pairs the screen finds are tried with one factor up to this much earlier.
MAX_LAG_SECONDS = 0.05
SEARCH_LAGS = True  # and searched between the grid's lags around the best (``_refined``)


@dataclasses.dataclass
class Products:
  """Products ``x_i(t - lag) x_j(t)`` of standardized witnesses (``i == j``, lag 0: a square),
  appended to them."""
  pairs: list  # of (i, j, lag), lag >= 0 samples
  norm: data_lib.Normalizer  # standardizes the witnesses before the products

  @property
  def max_lag(self) -> int:
    return max([p[2] for p in self.pairs], default=0)

  def widen(self, witnesses_TxC, before_TxC=None) -> np.ndarray:
    """``[witnesses, products]`` (T, C + K), float64; the witnesses as given. ``before_TxC``:
    the witnesses just before (at least ``max_lag`` rows, for a lagged factor; None or fewer:
    the witnesses' means, as a filter's history of zeros)."""
    w = np.asarray(witnesses_TxC)
    lag, (t, n_ch) = self.max_lag, w.shape
    factors = sorted({c for i, j, _ in self.pairs for c in (i, j)})  # only these standardized
    at = {c: k for k, c in enumerate(factors)}
    norm = self.norm.take(factors)
    x = np.zeros((lag + t, len(factors)))
    x[lag:] = norm.apply(w[:, factors])
    if lag and before_TxC is not None and len(before_TxC):
      b = norm.apply(np.asarray(before_TxC)[-lag:, factors])
      x[lag - len(b):lag] = b
    out = np.empty((t, n_ch + len(self.pairs)))
    out[:, :n_ch] = w
    for k, (i, j, lag_i) in enumerate(self.pairs):
      np.multiply(x[lag - lag_i:lag - lag_i + t, at[i]], x[lag:, at[j]], out=out[:, n_ch + k])
    return out

  def widened(self, rec: data_lib.Recording) -> data_lib.Recording:
    return dataclasses.replace(rec, witnesses=self.widen(rec.witnesses))

  def to_dict(self) -> dict:
    return {'pairs': [list(map(int, p)) for p in self.pairs], 'norm': self.norm.to_dict()}

  @classmethod
  def from_dict(cls, d: dict) -> 'Products':
    return cls([tuple(p) for p in d['pairs']], data_lib.Normalizer.from_dict(d['norm']))


def describe(pairs) -> str:
  """``[(i, j, lag), ...]`` as text: ``w1(t-5)*w3``, ``w0^2``, ``w0*w2``."""
  def one(p):
    i, j, lag = (tuple(p) + (0,))[:3]
    if i == j and not lag:
      return f'w{i}^2'
    return f'w{i}(t-{lag})*w{j}' if lag else f'w{i}*w{j}'
  return ', '.join(one(p) for p in pairs)


def _screen_stretch(records: Sequence[data_lib.Recording], residuals) -> tuple:
  """The witnesses and the residual over at most ``SCREEN_SAMPLES`` samples."""
  xs, rs, left = [], [], SCREEN_SAMPLES
  for rec, res in zip(records, residuals):
    take = min(left, len(rec))
    xs.append(np.asarray(rec.witnesses[:take]))
    rs.append(np.asarray(res[:take], np.float64))
    left -= take
    if left <= 0:
      break
  return np.concatenate(xs), np.concatenate(rs)


def lag_grid(max_lag: int) -> list[int]:
  """0 and roughly geometric lags up to ``max_lag`` samples."""
  return sorted({0, *(int(round(1.5 ** k)) for k in range(40) if 1.5 ** k <= max_lag)})


class _Coherence:
  """The coherent share of a residual's power, per candidate series, over its share by chance:
  ``sum_f MSC(f) P_rr(f) / sum_f P_rr(f)`` (Welch estimates over K segments) times K."""

  def __init__(self, r, n: int, nperseg: int, first: int):
    import scipy.signal  # pylint: disable=g-import-not-at-top
    self.nperseg = nperseg
    self.window = scipy.signal.get_window('hann', nperseg)
    self.starts = np.arange(first, n - nperseg + 1, nperseg // 2)
    if len(self.starts) >= 2:
      self.fr = self.spectra((r - r.mean())[:, None])[..., 0]  # (S, F)
      self.p_rr = np.sum(np.abs(self.fr) ** 2, axis=0)
      self.total = max(float(np.sum(self.p_rr[1:])), 1e-300)

  @property
  def usable(self) -> bool:
    return len(self.starts) >= 2

  def spectra(self, v_TxK):  # (S, F, K)
    segs = np.stack([v_TxK[a:a + self.nperseg] for a in self.starts])
    segs = segs - segs.mean(axis=1, keepdims=True)
    return np.fft.rfft(segs * self.window[None, :, None], axis=1)

  def ratios(self, v_TxK) -> np.ndarray:
    fp = self.spectra(v_TxK)
    p_pp = np.sum(np.abs(fp) ** 2, axis=0)  # (F, K)
    p_pr = np.einsum('sfk,sf->fk', np.conj(fp), self.fr)
    msc = np.abs(p_pr) ** 2 / np.maximum(p_pp * self.p_rr[:, None], 1e-300)
    return np.sum(msc[1:] * self.p_rr[1:, None], axis=0) / self.total * len(self.starts)


def _refined(scores, i: int, j: int, max_lag: int, scores_of, points: int = 6) -> list:
  """The pair ``(i, j)``'s best lag so far, searched between its scored neighbours until
  they are adjacent lags: the geometric grid leaves gaps of a third of the lag, and for a
  slow factor at a high rate a lag 10 samples off is the difference between 40 dB and 20."""
  out = []
  while True:
    # lags of either factor on one axis: x_i lagged by k is +k, x_j lagged by k is -k
    axis = sorted({(k if a == i else -k): v for a, b, k, v in scores + out
                   if {a, b} == {i, j} and (k or a == i)}.items())
    at = max(range(len(axis)), key=lambda n: axis[n][1])
    lo = axis[at - 1][0] if at > 0 else axis[at][0]
    hi = axis[at + 1][0] if at + 1 < len(axis) else axis[at][0]
    inside = sorted({int(round(x)) for x in np.linspace(lo, hi, 2 * points + 1)} - {lo, hi}
                    - {a for a, _ in axis})
    inside = [x for x in inside if abs(x) <= max_lag]
    if not inside:
      return out
    out += scores_of([(i, j, x) if x >= 0 else (j, i, -x) for x in inside])


def _nperseg(n: int) -> int:
  return int(min(4096, max(64, 2 ** np.floor(np.log2(n / 64)))))


def coherent_columns(records: Sequence[data_lib.Recording], residuals,
                     min_ratio: float) -> tuple[list, list]:
  """The witness columns whose coherent share of the residuals' power is above ``min_ratio``
  times chance (scored as ``screen_pairs`` scores products, over at most ``SCREEN_SAMPLES``),
  and every column's ratio."""
  x, r = _screen_stretch(records, residuals)
  x = np.asarray(x, np.float64)
  x = (x - x.mean(0)) / np.maximum(x.std(0), 1e-300)
  coherence = _Coherence(r, len(x), _nperseg(len(x)), 0)
  if not coherence.usable:
    return list(range(x.shape[1])), []
  ratios = np.concatenate([coherence.ratios(x[:, lo:lo + GROUP])
                           for lo in range(0, x.shape[1], GROUP)])
  return [c for c, v in enumerate(ratios) if v > min_ratio], ratios.tolist()


def screen_pairs(records: Sequence[data_lib.Recording], residuals, max_pairs: int = 8,
                 min_ratio: float = 5.0, nperseg: int = 0) -> tuple[list, list]:
  """The witness pairs whose product the residual follows, strongest first.

  A product's score is the residual's power that is coherent with it, as a share of all its
  power (``sum_f MSC(f) P_rr(f) / sum_f P_rr(f)``, Welch estimates over K segments), over the
  share a product unrelated to the residual shows by chance, ``1 / K``. Coherence is judged
  frequency by frequency, so a slow or coloured product is not favoured for its colour (a
  lagged correlation would be). Every pair is scored with both factors at the same time;
  those above half ``min_ratio`` are scored again with either factor up to
  ``MAX_LAG_SECONDS`` earlier, and keep their best lag. Pairs above ``min_ratio`` are kept, at
  most ``max_pairs``; whoever uses them still checks them on data it did not fit. Returns
  ``(pairs, scores)``: ``(i, j, lag)`` for ``x_i(t - lag) x_j(t)``, and each scored candidate
  as ``[i, j, lag, ratio]``, strongest first.
  """
  w, r = _screen_stretch(records, residuals)
  n, n_ch = w.shape
  max_lag = int(MAX_LAG_SECONDS * records[0].fs)
  x = data_lib.Normalizer.fit(w, 'standardize', 'witness channel').apply(w).astype(np.float64)
  coherence = _Coherence(r, n, nperseg or _nperseg(n), max_lag)  # room for a lagged factor
  if not coherence.usable:  # too short to estimate a coherence: no pair is screened in
    return [], []

  def scores_of(candidates):
    out = []
    for lo in range(0, len(candidates), GROUP):
      group = candidates[lo:lo + GROUP]
      ratios = coherence.ratios(np.stack([np.roll(x[:, i], k) * x[:, j] for i, j, k in group],
                                         1))
      out += [[i, j, k, float(v)] for (i, j, k), v in zip(group, ratios)]
    return out

  scores = scores_of([(i, j, 0) for i in range(n_ch) for j in range(i, n_ch)])
  best = {}
  for i, j, k, v in sorted(scores, key=lambda c: -c[3])[:2 * max_pairs]:
    if v <= min_ratio / 2 or max_lag < 1:
      continue
    lagged = [(a, b, k) for k in lag_grid(max_lag)[1:] for a, b in {(i, j), (j, i)}]
    scores += scores_of(lagged)
    if SEARCH_LAGS:
      scores += _refined(scores, i, j, max_lag, scores_of)
  for i, j, k, v in scores:  # each pair's best lag
    key = (min(i, j), max(i, j))
    if key not in best or v > best[key][3]:
      best[key] = [i, j, k, v]
  ranked = sorted(best.values(), key=lambda c: -c[3])
  chosen = [(i, j, k) for i, j, k, v in ranked[:max_pairs] if v > min_ratio]
  return chosen, ranked
