"""Nonlinear features of the witnesses, found by screening: products of witness pairs
(second-order Volterra terms) and bent witnesses (a static nonlinearity).

A bilinear coupling, the field's commonest nonlinear one (a slow angular motion modulating a
line, a witness squared), is a product of two witnesses, often seen through a filter
afterwards (a resonance, a delay). A linear filter over the witnesses cannot render it; over the
witnesses *and the right products* it can, exactly and in closed form. ``screen_pairs`` finds
the products that a residual is coherent with far above chance; ``Products``
appends them to the witnesses, so any filter fitted on the widened witnesses
(``lstm_jax.baselines.WienerFIR``) renders "product, then linear dynamics".

A witness bent before it couples (a sensor or actuator that saturates, a soft limit) is the
other common static nonlinearity. ``screen_shapes`` finds the witnesses whose bent forms,
``tanh(a x)`` at a few gains ``a`` of the standardized witness, the residual follows beyond
their linear part; a filter over them renders "static nonlinearity, then linear dynamics"
(a Hammerstein model), and several gains together approximate a clip, a soft knee or a tanh
of any gain far better than a cube would.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np
import scipy.signal

from lstm_jax import data as data_lib
from lstm_jax import envelopes as envelopes_lib
from lstm_jax import fringes as fringes_lib
from lstm_jax import modes as modes_lib

# The screen looks at no more samples than this (a contiguous stretch from each record, in
# turn): its cost stays bounded on hour-long recordings; a coupling worth a product is plain
# in far fewer samples.
SCREEN_SAMPLES = 1 << 18
GROUP = 16  # candidate products transformed at once (memory: GROUP x SCREEN_SAMPLES complex)
# A coupling may see one factor later than the other (a slow modulation reaching the target
# through a delay): pairs the screen finds are tried with one factor up to this much earlier.
MAX_LAG_SECONDS = 0.05
SEARCH_LAGS = True  # and searched between the grid's lags around the best (``_refined``)
# The bent forms tried per witness: tanh(a x) at these gains on the standardized witness,
# each less its linear part (``Products.shapes``).
SHAPE_GAINS = (0.5, 1.0, 2.0, 4.0)
# A bent path's nonlinearity is fitted as a sum of these sigmoids, tanh(a (u - c)) at each gain
# a and offset c of the standardized path u (``fit_bends``): offsets give the even and
# asymmetric shapes (a one-sided knee, a rectifier) an odd tanh cannot; on a Gaussian u they
# render a clip, a soft knee or a cubic to 43-66 dB below it, four gains of tanh to 12-34.
BEND_GAINS = (0.5, 1.0, 2.0, 4.0)
BEND_OFFSETS = (-1.5, -0.75, 0.0, 0.75, 1.5)
# Bent forms are also scored against the residual whitened (``_Coherence.ratios``), the
# larger share counting: a coloured background holds most of a residual's power in a few
# bands, where a broadband bend is buried (and by that share alone unrelated forms score
# up to 2.5x chance; whitened, 1-1.2x).
SHAPES_WHITENED = True

# The kinds of appended column, in the order ``Products.widen`` appends them.
COLUMN_KINDS = ('pairs', 'shapes', 'modulated', 'bent_paths', 'fringes', 'modes', 'envelopes')


@dataclasses.dataclass
class Products:
  """Products ``x_i(t - lag) x_j(t)`` of standardized witnesses (``i == j``, lag 0: a square),
  then bent witnesses ``tanh(a x_i) - b x_i``, then modulated paths ``x_i(t) (h * x_j)(t)``,
  appended to them."""
  pairs: list  # of (i, j, lag), lag >= 0 samples
  norm: data_lib.Normalizer  # standardizes the witnesses before the products
  # of (i, a, b): the bent form less its linear part, b = E[tanh(a x) x] on the training part
  # (Bussgang's gain: for a Gaussian x the column is then uncorrelated with x at every lag)
  shapes: list = dataclasses.field(default_factory=list)
  # of (i, j, taps): witness i's gain on witness j's path, the causal FIR ``taps`` (h, on the
  # standardized x_j): a slow witness modulating a resonant coupling, which a filter over the
  # product x_i x_j renders only as far as x_i holds still over h's length.
  modulated: list = dataclasses.field(default_factory=list)
  # of (j, s, taps, units): witness j's path bent, ``sum_k w_k tanh(a_k (u - c_k))`` over the
  # ``units`` (a, c, w), u = (h * x_j) / s, h the causal FIR ``taps`` (on the standardized
  # x_j), s the path's std on the training part (``fit_bends``): a sensor or actuator that
  # saturates after a filter (a Wiener model), which bent witnesses render only where the
  # filter is short.
  bent_paths: list = dataclasses.field(default_factory=list)
  # of (j, filters, weights): witness j's fringes (``lstm_jax.fringes``), one column each:
  # ``filters`` the phase path's and the readout's digital filters (``Fringe.filters``),
  # ``weights`` (harmonics, 2, readout filters). Light scattered off a surface the slow witness
  # moves, a periodic function of a filtered witness.
  fringes: list = dataclasses.field(default_factory=list)
  # of (j, k, digital): a mode driven by witness j whose frequency witness k moves
  # (``lstm_jax.modes``; ``digital`` = (w0, dw, r, Re c, Im c), ``Mode.digital``), one column
  # each: a resonance that a slow quantity (a temperature) tunes.
  modes: list = dataclasses.field(default_factory=list)
  # of (j, filters, weights): the power in a band of witness j, detected and low-passed
  # (``lstm_jax.envelopes``; ``filters`` as ``Envelope.filters``, ``weights`` (2 laws, readout
  # filters)), one column each: a fast band that a square-law or rectifying detector brings
  # down to slow frequencies.
  envelopes: list = dataclasses.field(default_factory=list)

  @property
  def max_lag(self) -> int:
    """How many samples before each output the appended columns read (a fringe's filters
    are IIR: until their impulse responses have decayed, ``fringes.memory``)."""
    return max([p[2] for p in self.pairs] + [len(h) - 1 for _, _, h in self.modulated]
               + [len(p[2]) - 1 for p in self.bent_paths]
               + [fringes_lib.memory(*f['phase']) + max(fringes_lib.memory(*ba)
                                                        for ba in f['post'])
                  for _, f, _ in self.fringes]
               + [modes_lib.memory(d) for _, _, d in self.modes]
               + [envelopes_lib.memory(f) for _, f, _ in self.envelopes], default=0)

  @property
  def n_columns(self) -> int:
    """How many columns ``widen`` appends to the witnesses."""
    return sum(len(getattr(self, kind)) for kind in COLUMN_KINDS)

  def columns_of(self, kind: str, n_witnesses: int) -> range:
    """Where ``widen`` puts ``kind``'s columns (one of ``COLUMN_KINDS``) after ``n_witnesses``
    witness columns."""
    first = n_witnesses + sum(len(getattr(self, k))
                              for k in COLUMN_KINDS[:COLUMN_KINDS.index(kind)])
    return range(first, first + len(getattr(self, kind)))

  def moved(self, columns, before: 'Products', n_witnesses: int) -> list:
    """``columns`` of ``before``'s widening (the same entries of each kind, some kinds with
    more after them) where this widening puts them: a kind that comes earlier in
    ``COLUMN_KINDS`` than one already there moves that one's columns on."""
    out = []
    for c in columns:
      kind = next((k for k in COLUMN_KINDS if c in before.columns_of(k, n_witnesses)), None)
      out.append(c if kind is None else self.columns_of(kind, n_witnesses).start + c
                 - before.columns_of(kind, n_witnesses).start)
    return out

  def added(self, kind: str, before: 'Products', n_witnesses: int) -> list:
    """The columns of ``kind`` this widening has past ``before``'s (appended to its list)."""
    return list(self.columns_of(kind, n_witnesses))[len(getattr(before, kind)):]

  @property
  def factors(self) -> list[int]:
    """The witness columns the appended columns read (standardized), in order."""
    return sorted({c for i, j, _ in self.pairs + self.modulated for c in (i, j)}
                  | {i for i, _, _ in self.shapes} | {p[0] for p in self.bent_paths}
                  | {f[0] for f in self.fringes} | {c for m in self.modes for c in m[:2]}
                  | {e[0] for e in self.envelopes})

  def appended(self, factors, xp=np) -> list:
    """The appended columns, each ``(..., T)``, from ``factors``: the standardized factors
    (``self.factors``' order) with ``max_lag`` samples before the ``T`` wanted,
    ``(..., max_lag + T, F)``; ``xp``: numpy, or ``jax.numpy`` for the exported program."""
    lag, at = self.max_lag, {c: k for k, c in enumerate(self.factors)}
    end = factors.shape[-2]
    now = lambda i: factors[..., lag:, at[i]]
    earlier = lambda i, k: factors[..., lag - k:end - k, at[i]]

    def path(j, taps):  # (h * x_j)(t): every tap reads within the max_lag samples before
      if xp is np:
        return scipy.signal.lfilter(np.asarray(taps, np.float64), 1.0, factors[..., at[j]],
                                    axis=-1)[..., lag:]
      return sum(float(h) * earlier(j, k) for k, h in enumerate(taps) if h)

    return ([earlier(i, lag_i) * now(j) for i, j, lag_i in self.pairs]
            + [xp.tanh(a * now(i)) - b * now(i) for i, a, b in self.shapes]
            + [now(i) * path(j, taps) for i, j, taps in self.modulated]
            + [sum(w * xp.tanh(a * (path(j, taps) / s - c)) for a, c, w in units)
               for j, s, taps, units in self.bent_paths]
            + [fringes_lib.column(filters, w, factors[..., at[j]], xp)[..., lag:]
               for j, filters, w in self.fringes]
            + [modes_lib.column(d, factors[..., at[j]], factors[..., at[k]], xp)[..., lag:]
               for j, k, d in self.modes]
            + [envelopes_lib.column(filters, w, factors[..., at[j]], xp)[..., lag:]
               for j, filters, w in self.envelopes])

  def widen(self, witnesses_TxC, before_TxC=None) -> np.ndarray:
    """``[witnesses, products, bent witnesses]`` (T, C + K), float64; the witnesses as given.
    ``before_TxC``: the witnesses just before (at least ``max_lag`` rows, for a lagged factor;
    None or fewer: the witnesses' means, as a filter's history of zeros)."""
    w = np.asarray(witnesses_TxC)
    lag, (t, n_ch), factors = self.max_lag, w.shape, self.factors  # only these standardized
    norm = self.norm.take(factors)
    x = np.zeros((lag + t, len(factors)))
    x[lag:] = norm.apply(w[:, factors])
    if lag and before_TxC is not None and len(before_TxC):
      b = norm.apply(np.asarray(before_TxC)[-lag:, factors])
      x[lag - len(b):lag] = b
    out = np.empty((t, n_ch + self.n_columns))
    out[:, :n_ch] = w
    for k, column in enumerate(self.appended(x), n_ch):
      out[:, k] = column
    return out

  def widened(self, rec: data_lib.Recording) -> data_lib.Recording:
    return dataclasses.replace(rec, witnesses=self.widen(rec.witnesses))

  def to_dict(self) -> dict:
    out = {'pairs': [list(map(int, p)) for p in self.pairs], 'norm': self.norm.to_dict()}
    if self.shapes:
      out['shapes'] = [[int(i), float(a), float(b)] for i, a, b in self.shapes]
    if self.modulated:
      out['modulated'] = [[int(i), int(j), [float(h) for h in taps]]
                          for i, j, taps in self.modulated]
    if self.bent_paths:
      out['bent_paths'] = [[int(j), float(s), [float(h) for h in taps],
                            [[float(v) for v in unit] for unit in units]]
                           for j, s, taps, units in self.bent_paths]
    if self.fringes:
      out['fringes'] = [[int(j), {'phase': [list(c) for c in f['phase']],
                                  'post': [[list(c) for c in ba] for ba in f['post']]},
                         np.asarray(w, np.float64).tolist()] for j, f, w in self.fringes]
    if self.modes:
      out['modes'] = [[int(j), int(k), [float(v) for v in d]] for j, k, d in self.modes]
    if self.envelopes:
      out['envelopes'] = [[int(j), {'band': [list(c) for c in f['band']],
                                    'post': [[list(c) for c in ba] for ba in f['post']],
                                    'rms': [list(c) for c in f['rms']],
                                    'scale': float(f['scale']),
                                    'offsets': [float(v) for v in f['offsets']]},
                           np.asarray(w, np.float64).tolist()] for j, f, w in self.envelopes]
    return out

  @classmethod
  def from_dict(cls, d: dict) -> 'Products':
    return cls([tuple(p) for p in d['pairs']], data_lib.Normalizer.from_dict(d['norm']),
               [(int(i), float(a), float(b)) for i, a, b in d.get('shapes', [])],
               [(int(i), int(j), tuple(float(h) for h in taps))
                for i, j, taps in d.get('modulated', [])],
               [(int(j), float(s), tuple(float(h) for h in taps),
                 tuple(tuple(float(v) for v in unit) for unit in units))
                for j, s, taps, units in d.get('bent_paths', [])],
               [(int(j), {'phase': tuple(tuple(float(v) for v in c) for c in f['phase']),
                          'post': [tuple(tuple(float(v) for v in c) for c in ba)
                                   for ba in f['post']]},
                 fringes_lib.nested(w)) for j, f, w in d.get('fringes', [])],
               [(int(j), int(k), tuple(float(v) for v in m)) for j, k, m in d.get('modes', [])],
               [(int(j), {'band': [tuple(tuple(float(v) for v in c) for c in ba)
                                   for ba in f['band']],
                          'post': [tuple(tuple(float(v) for v in c) for c in ba)
                                   for ba in f['post']],
                          'rms': tuple(tuple(float(v) for v in c) for c in f['rms']),
                          'scale': float(f['scale']),
                          'offsets': tuple(float(v) for v in f['offsets'])},
                 fringes_lib.nested(w)) for j, f, w in d.get('envelopes', [])])


def bent(x, a: float, b: float) -> np.ndarray:
  """``tanh(a x) - b x``: a standardized witness bent at gain ``a``, less its linear part."""
  return np.tanh(a * x) - b * x


def named(pairs, shapes=(), modulated=(), bent_paths=(), fringes=(), modes=(),
          envelopes=()) -> str:
  """What a filter's appended inputs are, for a log line: ``product of witnesses w0*w2``,
  ``bent witness tanh(2*w1)``, ``modulated path w0*(h*w1)``, ``bent path f(h*w1)``,
  ``fringes fringe(h*w3)``, ``moving mode mode(w0; w2)``, ``envelope env(h*w4)``, or several
  kinds; '' for none."""
  kinds = [k for k, there in (('product of witnesses', pairs), ('bent witness', shapes),
                              ('modulated path', modulated), ('bent path', bent_paths),
                              ('fringes', fringes), ('moving mode', modes),
                              ('envelope', envelopes))
           if there]
  return (f"{' or '.join(kinds)} "
          f"{describe(pairs, shapes, modulated, bent_paths, fringes, modes, envelopes)}"
          if kinds else '')


def named_in(stats: dict) -> str:
  """``named`` of a filter's stats or summary (``WienerFIR.summary``: its appended inputs
  under ``products``, ``shapes``, ``modulated``, ``bent_paths``, ``fringes`` and ``modes``)."""
  return named(*(stats.get(k) or [] for k in ('products', 'shapes', 'modulated',
                                                'bent_paths', 'fringes', 'modes', 'envelopes')))


def describe(pairs, shapes=(), modulated=(), bent_paths=(), fringes=(), modes=(),
             envelopes=()) -> str:
  """``[(i, j, lag), ...]``, ``[(i, a, b), ...]``, ``[(i, j, ...), ...]`` and
  ``[(j, ...), ...]`` (twice) as text: ``w1(t-5)*w3``, ``w0^2``, ``w0*w2``, ``tanh(2*w4)``,
  ``w0*(h*w1)``, ``f(h*w1)``, ``fringe(h*w3)``, ``mode(w0; w2)`` (driven by w0, moved by w2),
  ``env(h*w4)``."""
  def one(p):
    i, j, lag = (tuple(p) + (0,))[:3]
    if i == j and not lag:
      return f'w{i}^2'
    return f'w{i}(t-{lag})*w{j}' if lag else f'w{i}*w{j}'
  return ', '.join([one(p) for p in pairs] + [f'tanh({a:g}*w{int(i)})' for i, a, *_ in shapes]
                   + [f'w{int(i)}*(h*w{int(j)})' for i, j, *_ in modulated]
                   + list(dict.fromkeys(f'f(h*w{int(j)})' for j, *_ in bent_paths))
                   + [f'fringe(h*w{int(j)})' for j, *_ in fringes]
                   + [f'mode(w{int(j)}; w{int(k)})' for j, k, *_ in modes]
                   + [f'env(h*w{int(j)})' for j, *_ in envelopes])


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

  def ratios(self, v_TxK, flat: bool = False) -> np.ndarray:
    """Per column of ``v_TxK``; ``flat``: also the share of the residual whitened (every
    frequency weighed alike), and the larger of the two."""
    fp = self.spectra(v_TxK)
    p_pp = np.sum(np.abs(fp) ** 2, axis=0)  # (F, K)
    p_pr = np.einsum('sfk,sf->fk', np.conj(fp), self.fr)
    msc = np.abs(p_pr) ** 2 / np.maximum(p_pp * self.p_rr[:, None], 1e-300)
    share = np.sum(msc[1:] * self.p_rr[1:, None], axis=0) / self.total
    if flat:
      share = np.maximum(share, np.mean(msc[1:], axis=0))
    return share * len(self.starts)


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


def screen_shapes(records: Sequence[data_lib.Recording], residuals, max_shapes: int = 8,
                  min_ratio: float = 3.0, nperseg: int = 0) -> tuple[list, list]:
  """The witnesses bent at a gain (``SHAPE_GAINS``) that the residual follows, strongest first.

  Each bent form ``tanh(a x)`` of a standardized witness is scored less its linear part
  ``b x`` (``b = E[tanh(a x) x]``), as ``screen_pairs`` scores a product: a residual a linear
  filter left (a resonance longer than its taps) is coherent with ``x``, and so with
  ``tanh(a x)``, but not with what bending adds. Bent forms above ``min_ratio`` times chance
  are kept, at most ``max_shapes`` (several gains of one witness may be: together they shape
  the knee). ``min_ratio`` is lower than the pairs': a few bent forms per witness are
  screened, not every pair, so chance reaches it far more rarely (unrelated forms score
  about 1 +- 0.3 on a long stretch). With ``SHAPES_WHITENED`` a form's score is the larger
  of that share and the share of the residual whitened (every frequency weighed alike).
  Returns ``(shapes, scores)``: ``(i, a, b)`` each, and every scored form as
  ``[i, a, b, ratio]``, strongest first.
  """
  w, r = _screen_stretch(records, residuals)
  n, n_ch = w.shape
  x = data_lib.Normalizer.fit(w, 'standardize', 'witness channel').apply(w).astype(np.float64)
  coherence = _Coherence(r, n, nperseg or _nperseg(n), 0)
  if not coherence.usable or max_shapes < 1:
    return [], []
  forms = [(i, a, float(np.mean(np.tanh(a * x[:, i]) * x[:, i])))
           for i in range(n_ch) for a in SHAPE_GAINS if np.std(x[:, i]) > 0]
  if not forms:
    return [], []
  scores = []
  for lo in range(0, len(forms), GROUP):
    group = forms[lo:lo + GROUP]
    ratios = coherence.ratios(np.stack([bent(x[:, i], a, b) for i, a, b in group], 1),
                              flat=SHAPES_WHITENED)
    scores += [[i, a, b, float(v)] for (i, a, b), v in zip(group, ratios)]
  ranked = sorted(scores, key=lambda c: -c[3])
  return [(i, a, b) for i, a, b, v in ranked[:max_shapes] if v > min_ratio], ranked


def fit_bends(records: Sequence[data_lib.Recording], residuals, max_bends: int = 4,
              min_share: float = 0.0, beside=None) -> tuple[list, list]:
  """The witness columns of ``records`` (each a path, standardized) whose bent form the
  residuals follow, strongest first, each bent twice: per column, the least-squares sum of
  sigmoids ``tanh(a (u - c))`` (``BEND_GAINS`` x ``BEND_OFFSETS``) beside ``u`` itself and a
  constant, fitted over at most ``SCREEN_SAMPLES`` samples, on the residual as it is and on
  it whitened (``whitening``; the design through the same filter). Least squares on a
  coloured residual weighs its loud bands alone, where a background may bury the bend; yet
  where the bend itself is most of the residual, whitening flattens the bend's own band
  (fresh ``filtered_bend`` draws: either fit ahead by 0.5-5.5 dB), so both go on to
  validation. A column is kept where either fit on its first two thirds explains more than
  ``min_share`` of the last third's residual power (as weighed), as many as ``max_bends``;
  both are then fitted on the whole stretch, their linear and constant parts dropped (a
  filter over the witness holds them). ``beside``: per record, ``(T, K)``, what each column's
  own other forms took of the target, added back to the residual that column's bend is
  fitted on (a bend fitted on what a filter over static bent forms of the same witness left
  renders only that filter's misfit, not the bend). Returns ``(bends, scores)``:
  ``(k, units, units)``, the ``(a, c, w)`` of each sigmoid as fitted raw and whitened, and
  every column's ``[k, share raw, share whitened]``."""
  x, r = _screen_stretch(records, residuals)
  x, r = np.asarray(x, np.float64), r - r.mean()
  if beside is not None:
    added, _ = _screen_stretch([dataclasses.replace(rec, witnesses=b)
                                for rec, b in zip(records, beside)], residuals)
  cut = 2 * len(r) // 3
  grid = [(a, c) for a in BEND_GAINS for c in BEND_OFFSETS]

  def weighed(rk):  # a residual, its whitening filter and it whitened
    white = whitening(rk[:cut])
    return rk, white, scipy.signal.lfilter(white, 1.0, rk)

  common, own = weighed(r), {}

  def residual_of(k):  # what column k's bend is fitted on (each weighed once)
    if beside is None or not np.any(added[:, k]):
      return common
    if k not in own:
      own[k] = weighed(r + added[:, k] - added[:, k].mean())
    return own[k]

  def fitted(design, target, rows=slice(None)):
    w, *_ = np.linalg.lstsq(design[rows], target[rows], rcond=None)
    return w

  def held_out_share(design, target):
    left = target[cut:] - design[cut:] @ fitted(design, target, slice(cut))
    return 1.0 - float(np.var(left) / max(np.var(target[cut:]), 1e-300))

  def designs(k):  # [1, u, sigmoids] of column k, and its residual: as they are and whitened
    u, (rk, white, rk_white) = x[:, k], residual_of(k)
    raw = np.stack([np.ones_like(u), u] + [np.tanh(a * (u - c)) for a, c in grid], 1)
    return (raw, rk), (scipy.signal.lfilter(white, 1.0, raw, axis=0), rk_white)

  # Scored one column at a time and rebuilt for those kept: every column's designs at once
  # would hold 2 x 22 x SCREEN_SAMPLES floats per witness.
  scores = []
  for k in range(x.shape[1]):
    if np.std(x[:, k]) > 0:
      raw, whitened = designs(k)
      scores.append([k, held_out_share(*raw), held_out_share(*whitened)])
  ranked = sorted(scores, key=lambda c: -max(c[1:]))
  as_units = lambda w: tuple((a, c, float(v)) for (a, c), v in zip(grid, w[2:]))
  kept = []
  for k, *shares in ranked[:max_bends]:
    if max(shares) > min_share:
      raw, whitened = designs(k)
      kept.append((k, as_units(fitted(*raw)), as_units(fitted(*whitened))))
  return kept, ranked


def whitening(r, order: int = 32) -> np.ndarray:
  """The prediction-error filter ``[1, -phi]`` of ``r``'s autoregressive fit of ``order``
  (Yule-Walker): ``lfilter`` with it leaves ``r`` about white."""
  import scipy.linalg  # pylint: disable=g-import-not-at-top
  r = np.asarray(r, np.float64) - np.mean(r)
  n = len(r)
  spectrum = np.fft.rfft(r, 2 * n)
  acf = np.fft.irfft(np.abs(spectrum) ** 2)[:order + 1] / n
  if not acf[0] > 0:
    return np.ones(1)
  acf[1:] *= 1.0 - 1e-9  # a whisker of white noise keeps the Toeplitz system definite
  phi = scipy.linalg.solve_toeplitz(acf[:order], acf[1:order + 1])
  return np.concatenate([[1.0], -phi])
