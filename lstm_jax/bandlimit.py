"""Subtracting only inside the cleaning band: a linear-phase band-pass on the prediction.

The field cleans a band (DeepClean's 55-65 Hz) and asks that cleaning leave every other
frequency alone: outside the band the cleaned ASD within 1% of the target's. A model fitted on
the whole spectrum also predicts (and subtracts) outside the band, where what it adds is noise.
Band-passing the prediction before it is subtracted confines the change to the band.

The band-pass is a Kaiser-window FIR whose stop bands begin at the band's edges (gain at most
``STOP_DB`` below one there, so the ASD outside moves by well under 1%) and whose transitions
lie inside the band. A linear-phase FIR of ``L`` taps delays by ``(L - 1) / 2`` samples without
any other change of phase in band; the cleaned output waits that long for the prediction's
later samples (the latency of band-limited cleaning, stated in the metrics), and where the
record ends the prediction is continued by zeros.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from lstm_jax import data as data_lib

STOP_DB = 46.0  # stop-band attenuation: 0.5% in amplitude
# The transitions (inside the band): a tenth of the band, at most this wide. The filter's
# length, and the look-ahead, grow as fs / width.
MAX_TRANSITION_HZ = 5.0


def design(band: Sequence[float], fs: float) -> np.ndarray:
  """The band-pass's taps (odd length, symmetric) for ``band`` = (lo, hi) Hz at ``fs``: pass
  from lo + w to hi - w, stop below lo and above hi, w the transition width (a tenth of
  the band, at most ``MAX_TRANSITION_HZ``). A band from 0
  is a low-pass, one up to Nyquist a high-pass."""
  import scipy.signal  # pylint: disable=g-import-not-at-top
  lo, hi = float(band[0]), min(float(band[1]), fs / 2.0)
  if not 0.0 <= lo < hi:
    raise data_lib.DataError(f'cleaning band {lo:g}-{hi:g} Hz at {fs:g} Hz: need 0 <= lo < hi '
                             '<= Nyquist')
  width = min(0.1 * (hi - lo), MAX_TRANSITION_HZ)
  low_edge, high_edge = lo > 0.0, hi < fs / 2.0
  numtaps, beta = scipy.signal.kaiserord(STOP_DB, width / (0.5 * fs))
  numtaps |= 1  # odd: a whole-sample delay, and a high-pass is allowed
  cutoffs = ([lo + width / 2] if low_edge else []) + ([hi - width / 2] if high_edge else [])
  if not cutoffs:  # the whole spectrum: nothing to limit
    return np.ones(1)
  return scipy.signal.firwin(numtaps, cutoffs, window=('kaiser', beta), pass_zero=not low_edge,
                             fs=fs)


class BandLimiter:
  """Streams a prediction through ``design(band, fs)``: ``push`` returns as many samples as it
  is given, the band-passed prediction ``delay`` samples earlier; ``flush`` the last ``delay``.
  NaN (a gap) is filtered as zero and comes out as NaN at its own place."""

  def __init__(self, band: Optional[Sequence[float]], fs: float):
    self.taps = np.ones(1) if band is None else design(band, fs)
    self.delay = (len(self.taps) - 1) // 2
    self._history = np.zeros(len(self.taps) - 1)
    self._bad = np.zeros(self.delay, bool)  # the NaN marks of the samples still to come out

  def push(self, x: np.ndarray) -> np.ndarray:
    import scipy.signal  # pylint: disable=g-import-not-at-top
    x = np.asarray(x, np.float64)
    bad = ~np.isfinite(x)
    full = np.concatenate([self._history, np.where(bad, 0.0, x)])
    y = scipy.signal.oaconvolve(full, self.taps, mode='valid') if len(self.taps) > 1 else full
    self._history = full[len(full) - len(self._history):]
    marks = np.concatenate([self._bad, bad])
    self._bad = marks[len(x):]
    return np.where(marks[:len(x)], np.nan, y)

  def flush(self) -> np.ndarray:
    return self.push(np.zeros(self.delay))[:self.delay] if self.delay else np.zeros(0)


class Aligned:
  """A ``BandLimiter`` whose output comes with the columns recorded at the same times (the
  target, the true noise): ``push(prediction, *columns)`` returns ``(prediction, *columns)``
  for the samples whose band-passed prediction is ready, ``flush()`` the rest."""

  def __init__(self, band: Optional[Sequence[float]], fs: float):
    self.limiter = BandLimiter(band, fs)
    self.delay = self.limiter.delay
    self._skip = self.delay  # outputs that stand for times before the record
    self._pending = None  # the columns pushed whose prediction is not out yet

  def _emit(self, y: np.ndarray) -> tuple:
    drop = min(self._skip, len(y))
    self._skip -= drop
    y = y[drop:]
    out = [p[:len(y)] for p in self._pending]
    self._pending = [p[len(y):] for p in self._pending]
    return (y, *out)

  def push(self, prediction, *columns) -> tuple:
    cols = [np.asarray(c) for c in columns]
    if self._pending is None:
      self._pending = [c[:0] for c in cols]
    self._pending = [np.concatenate([p, c]) for p, c in zip(self._pending, cols)]
    return self._emit(self.limiter.push(prediction))

  def flush(self) -> tuple:
    if self._pending is None:
      self._pending = []
    return self._emit(self.limiter.flush())


def subtracted_band(config, band: Optional[Sequence[float]] = None,
                    clean_outside_band: Optional[bool] = None):
  """Where a model's prediction is subtracted: ``band`` (None: the config's ``band_lo``..
  ``band_hi``, if named), or everywhere (None) with ``clean_outside_band`` (None: the
  config's)."""
  if band is None and config.band_hi > 0:
    band = (config.band_lo, config.band_hi)
  outside = config.clean_outside_band if clean_outside_band is None else clean_outside_band
  return None if outside else band


def apply(prediction: np.ndarray, band: Optional[Sequence[float]], fs: float) -> np.ndarray:
  """``prediction`` band-passed with no delay (the record continued by zeros at both ends)."""
  limiter = BandLimiter(band, fs)
  y = np.concatenate([limiter.push(prediction), limiter.flush()])
  return y[limiter.delay:]
