"""Second-order (Volterra) features: products of witness pairs, found by screening.

A bilinear coupling, the field's commonest nonlinear one (a slow angular motion modulating a
line, a witness squared), is a product of two witnesses, often seen through a filter
afterwards (a resonance, a delay). A linear filter over the witnesses cannot render it; over the
witnesses *and the right products* it can, exactly and in closed form. ``screen_pairs`` finds
the products that a residual correlates with, over a few lags, far above chance; ``Products``
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
GROUP = 32  # candidate products transformed at once (memory: GROUP x SCREEN_SAMPLES floats)


@dataclasses.dataclass
class Products:
  """Products ``x_i x_j`` of standardized witnesses (``i == j``: a square), appended to them."""
  pairs: list  # of (i, j), i <= j
  norm: data_lib.Normalizer  # standardizes the witnesses before the products

  def widen(self, witnesses_TxC) -> np.ndarray:
    """``[witnesses, products]`` (T, C + K), float64; the witnesses as given."""
    w = np.asarray(witnesses_TxC)
    x = self.norm.apply(w).astype(np.float64)
    prods = [x[:, i] * x[:, j] for i, j in self.pairs]
    return np.concatenate([w.astype(np.float64)] + [p[:, None] for p in prods], axis=1)

  def widened(self, rec: data_lib.Recording) -> data_lib.Recording:
    return dataclasses.replace(rec, witnesses=self.widen(rec.witnesses))

  def to_dict(self) -> dict:
    return {'pairs': [list(map(int, p)) for p in self.pairs], 'norm': self.norm.to_dict()}

  @classmethod
  def from_dict(cls, d: dict) -> 'Products':
    return cls([tuple(p) for p in d['pairs']], data_lib.Normalizer.from_dict(d['norm']))


def _screen_stretch(records: Sequence[data_lib.Recording], residuals) -> tuple:
  """Standardized witnesses and the residual over at most ``SCREEN_SAMPLES`` samples."""
  xs, rs, left = [], [], SCREEN_SAMPLES
  for rec, res in zip(records, residuals):
    take = min(left, len(rec))
    xs.append(np.asarray(rec.witnesses[:take]))
    rs.append(np.asarray(res[:take], np.float64))
    left -= take
    if left <= 0:
      break
  return np.concatenate(xs), np.concatenate(rs)


def screen_pairs(records: Sequence[data_lib.Recording], residuals, n_lags: int,
                 max_pairs: int = 8, min_ratio: float = 3.0) -> tuple[list, list]:
  """The witness pairs whose product the residual follows, strongest first.

  A product's score is the share of the residual's variance its lags ``0..n_lags-1`` explain,
  taken one lag at a time (the sum of squared correlations), over the chance level
  ``n_lags / N`` for N samples. The strongest ``max_pairs`` above ``min_ratio`` times chance
  are kept: a coloured product's chance correlations are larger than a white one's, so the
  screen only ranks, and whoever uses the products checks them on data it did not fit (the
  residual FIR's validation blocks). Returns ``(pairs, scores)``; each candidate's score is
  ``[i, j, ratio]``, strongest first.
  """
  from lstm_jax import baselines  # here: baselines imports this module
  w, r = _screen_stretch(records, residuals)
  n, n_ch = w.shape
  norm = data_lib.Normalizer.fit(w, 'standardize', 'witness channel')
  x = norm.apply(w).astype(np.float64)
  r = r - r.mean()
  r_norm = np.sqrt(np.dot(r, r))
  pairs = [(i, j) for i in range(n_ch) for j in range(i, n_ch)]
  scores = []
  for lo in range(0, len(pairs), GROUP):
    group = pairs[lo:lo + GROUP]
    p = np.stack([x[:, i] * x[:, j] for i, j in group], axis=1)
    p -= p.mean(0)
    p_norm = np.sqrt(np.einsum('tk,tk->k', p, p))
    # sums[k, 0, j] = sum_s p_k[s] r[s + j]: product k, j samples before the residual.
    sums = baselines.lag_sums(p, r[:, None], n_lags)[:, 0]
    rho = sums / np.maximum(p_norm[:, None] * r_norm, 1e-300)
    ratio = np.sum(rho * rho, axis=1) / (n_lags / n)
    scores += [[i, j, float(v)] for (i, j), v in zip(group, ratio)]
  ranked = sorted(scores, key=lambda s: -s[2])
  chosen = [(i, j) for i, j, v in ranked[:max_pairs] if v > min_ratio]
  return chosen, ranked
