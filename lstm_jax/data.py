"""Recordings: the seed mock, loading user files with validation, standardization, streams.

A ``Recording`` is a target channel and C witness channels sampled at ``fs``; mocks also carry
the true coupled ``noise`` so the noise reduction can be measured against it.
"""
from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional, Sequence

import numpy as np


class DataError(ValueError):
  """A user's data cannot be used; the message names the file, key, channel or index."""


@dataclasses.dataclass
class Recording:
  """witnesses (T, C), target (T,), fs in Hz; noise (T,) is the true coupled noise if known.

  ``target`` is None only for a recording given to a trained model to clean. Files that name
  their channels (GWF frames, HDF5; ``lstm_jax.channels``) fill in ``witness_names``,
  ``target_name``, ``target_unit`` and ``t0`` (GPS seconds of the first sample).
  """
  witnesses: np.ndarray
  target: Optional[np.ndarray]
  fs: Optional[float]  # None only until ``validate``: a file that states no rate
  noise: Optional[np.ndarray] = None
  name: str = 'recording'
  t0: float = 0.0
  witness_names: Optional[tuple] = None
  target_name: Optional[str] = None
  target_unit: str = ''

  def __len__(self) -> int:
    return len(self.witnesses)

  def slice(self, start: int, stop: int) -> 'Recording':
    cut = lambda a: None if a is None else a[start:stop]
    first = slice(start, stop).indices(len(self))[0]
    return dataclasses.replace(self, witnesses=self.witnesses[start:stop],
                               target=cut(self.target), noise=cut(self.noise),
                               name=f'{self.name}[{start}:{stop}]',
                               t0=self.t0 + (first / self.fs if self.fs else 0.0))


# --------------------------------------------------------------------------- mocks

def seed_mock(fs: float = 2048.0, duration: float = 10.0, start: float = 0.0,
              seed: int = 0) -> Recording:
  """The seed's mock: target = sin(t) + sin(10 t) * n, witnesses [sin(10 t), n], n ~ N(0, 1).

  ``start`` (seconds) places the record on the time axis so that a held-out stretch can
  continue it; ``seed`` draws the white noise ``n``.
  """
  n_samples = int(round(duration * fs))
  t = start + np.arange(n_samples) / fs
  rng = np.random.default_rng(seed)
  n = rng.standard_normal(n_samples)
  sine = np.sin(10.0 * t)
  noise = sine * n
  target = np.sin(t) + noise
  return Recording(np.stack([sine, n], axis=1).astype(np.float32), target.astype(np.float32),
                   float(fs), noise.astype(np.float32), f'seed_mock(start={start:g}s, seed={seed})')


def resonator_coefficients(fs: float, resonance_hz: float, ringdown_s: float):
  """A causal two-pole resonator (IIR ``b``, ``a``) normalized to unit power gain on white noise.

  The poles sit at ``r exp(+-2 pi i f0 / fs)`` with ``r = exp(-1 / (ringdown_s fs))``: the
  impulse response rings at ``resonance_hz`` and its envelope decays by e in ``ringdown_s``.
  """
  import scipy.signal
  if not 0.0 < resonance_hz < fs / 2.0:
    raise ValueError(f'resonance_hz must be in (0, fs/2 = {fs / 2.0:g}), got {resonance_hz}')
  if ringdown_s <= 0.0:
    raise ValueError(f'ringdown_s must be > 0, got {ringdown_s}')
  r = np.exp(-1.0 / (ringdown_s * fs))
  a = np.array([1.0, -2.0 * r * np.cos(2.0 * np.pi * resonance_hz / fs), r * r])
  impulse = np.zeros(int(40 * ringdown_s * fs) + 16)
  impulse[0] = 1.0
  h = scipy.signal.lfilter([1.0], a, impulse)
  return np.array([1.0 / np.sqrt(np.sum(h * h))]), a


def slow_random_modulator(n_samples: int, fs: float, seed: int, band_hz=(0.5, 3.0)):
  """Unit-variance Gaussian noise band-passed to ``band_hz``: a random, slowly varying gain."""
  import scipy.signal
  rng = np.random.default_rng([seed, 7])  # its own stream: independent of the white witness
  margin = int(4 * fs / band_hz[0])  # lets the filter settle before the record starts
  sos = scipy.signal.butter(2, band_hz, btype='bandpass', fs=fs, output='sos')
  m = scipy.signal.sosfilt(sos, rng.standard_normal(n_samples + margin))[margin:]
  return m / m.std()


def memory_mock(fs: float = 2048.0, duration: float = 10.0, start: float = 0.0, seed: int = 0, *,
                modulator: str = 'sine', modulator_rad_s: float = 10.0, delay_s: float = 0.02,
                resonance_hz: float = 30.0, ringdown_s: float = 0.03,
                linear_coupling: float = 0.0, linear_delay_s: float = 0.005) -> Recording:
  """A bilinear coupling with memory: modulated noise that rings through a resonator.

  Witnesses are ``[m(t), n(t)]`` as recorded (n ~ N(0, 1) white); the coupled noise is::

    noise(t) = R * [ m(t - delay_s) n(t) ] + linear_coupling * n(t - linear_delay_s)

  where ``R`` is a causal resonator at ``resonance_hz`` whose ring-down time is ``ringdown_s``
  (unit power gain, see ``resonator_coefficients``) and ``*`` is convolution. The target is
  ``sin(t) + noise``, like the seed. ``modulator='sine'`` makes ``m = sin(modulator_rad_s t)``
  (the seed's slow witness, seen ``delay_s`` late by the coupling); ``modulator='random'`` makes it
  band-limited Gaussian noise (0.5 to 3 Hz, unit variance, drawn from ``seed``).

  Because the coupling is a product of two witnesses, it is uncorrelated with every lag of
  either witness: a linear (Wiener) filter removes nothing of it. Because it rings for about
  ``ringdown_s * fs`` samples, a model that sees only the present sample removes little. The
  optional ``linear_coupling`` term (off by default) is what a linear filter can remove.
  """
  import scipy.signal
  n_samples = int(round(duration * fs))
  t = start + np.arange(n_samples) / fs
  rng = np.random.default_rng(seed)
  n = rng.standard_normal(n_samples)
  lag = int(round(delay_s * fs))
  if modulator == 'sine':
    m = np.sin(modulator_rad_s * t)
    m_late = np.sin(modulator_rad_s * (t - lag / fs))
  elif modulator == 'random':
    m_full = slow_random_modulator(n_samples + lag, fs, seed)
    m, m_late = m_full[lag:], m_full[:n_samples]
  else:
    raise ValueError(f"modulator must be 'sine' or 'random', got {modulator!r}")
  b, a = resonator_coefficients(fs, resonance_hz, ringdown_s)
  noise = scipy.signal.lfilter(b, a, m_late * n)
  if linear_coupling:
    k = int(round(linear_delay_s * fs))
    noise = noise + linear_coupling * np.concatenate([np.zeros(k), n[:n_samples - k]])
  target = np.sin(t) + noise
  return Recording(np.stack([m, n], axis=1).astype(np.float32), target.astype(np.float32),
                   float(fs), noise.astype(np.float32),
                   f'memory_mock({modulator}, start={start:g}s, seed={seed})')


MOCKS = {
    'seed': seed_mock,
    'memory': memory_mock,
    'memory_random': functools.partial(memory_mock, modulator='random'),
    'memory_linear': functools.partial(memory_mock, linear_coupling=0.5),
    # The same coupling seen without the delay: isolates what the delayed slow witness costs.
    'memory_nodelay': functools.partial(memory_mock, delay_s=0.0),
}


def save_npz(path: str, rec: Recording) -> None:
  arrays = dict(witnesses=rec.witnesses, target=rec.target, fs=np.float64(rec.fs))
  if rec.noise is not None:
    arrays['noise'] = rec.noise
  np.savez(path, **arrays)


# --------------------------------------------------------------------------- loading

def _as_float(name: str, arr, what: str) -> np.ndarray:
  try:
    out = np.asarray(arr, dtype=np.float64)
  except (TypeError, ValueError) as e:
    raise DataError(f'{name}: {what} is not numeric ({e})') from None
  return out


def _kept_dtype(arr) -> type:
  """float32 for samples stored as float32 or narrower (a wider copy adds memory, no detail);
  float64 for everything else (float64, integers, text)."""
  dtype = getattr(arr, 'dtype', None)
  if dtype is not None and dtype.kind == 'f' and dtype.itemsize <= 4:
    return np.float32
  return np.float64


def validate(rec: Recording, min_len: int = 2) -> Recording:
  """Checks shapes, lengths and finiteness; returns the recording as float arrays.

  A channel keeps its file's precision until ``Normalizer.apply`` removes its offset: a float64
  channel far from zero (a DC-coupled sensor, 1e4 +- 1e-3) keeps its variation, which a float32
  copy would round to a few levels; float32 samples stay float32.
  """
  name = rec.name
  wit = _as_float(name, rec.witnesses, 'witnesses')
  has_target = rec.target is not None
  tgt = _as_float(name, rec.target, 'target') if has_target else np.zeros(wit.shape[:1])
  if wit.ndim == 1:
    wit = wit[:, None]
  if wit.ndim != 2:
    raise DataError(f'{name}: witnesses must be (T, C), got shape {wit.shape}')
  if tgt.ndim == 2 and tgt.shape[1] == 1:
    tgt = tgt[:, 0]
  if tgt.ndim != 1:
    raise DataError(f'{name}: target must be (T,), got shape {tgt.shape}')
  if wit.shape[1] == 0:
    raise DataError(f'{name}: witnesses have no channels')
  if wit.shape[0] != tgt.shape[0]:
    raise DataError(f'{name}: target has {tgt.shape[0]} samples but witnesses have '
                    f'{wit.shape[0]} (T must match)')
  if tgt.shape[0] < min_len:
    raise DataError(f'{name}: {tgt.shape[0]} samples is too short (need at least {min_len})')
  for label, arr in (('target', tgt[:, None]), ('witnesses', wit))[0 if has_target else 1:]:
    bad = ~np.isfinite(arr)
    if bad.any():
      idx, ch = np.argwhere(bad)[0]
      kind = 'NaN' if np.isnan(arr[idx, ch]) else 'Inf'
      where = f'sample {idx}' if label == 'target' else f'channel {ch}, sample {idx}'
      raise DataError(f'{name}: {label} has {int(bad.sum())} non-finite values; '
                      f'first {kind} at {where}')
  if rec.fs is None:
    raise DataError(f'{name}: the file states no sampling rate; give it with --fs=HZ')
  if not np.isfinite(rec.fs) or rec.fs <= 0:
    raise DataError(f'{name}: sampling rate fs must be positive, got {rec.fs}')
  noise = None
  if rec.noise is not None:
    noise = _as_float(name, rec.noise, 'noise').reshape(-1)
    noise = noise.astype(_kept_dtype(rec.noise), copy=False)
    if noise.shape[0] != tgt.shape[0] or not np.all(np.isfinite(noise)):
      raise DataError(f'{name}: noise must be finite and as long as target ({tgt.shape[0]})')
  return dataclasses.replace(
      rec, witnesses=wit.astype(_kept_dtype(rec.witnesses), copy=False),
      target=tgt.astype(_kept_dtype(rec.target), copy=False) if has_target else None,
      fs=float(rec.fs), noise=noise)


def _load_npz(path: str, fs: Optional[float], require_target: bool) -> Recording:
  try:
    z = np.load(path, allow_pickle=False)
  except Exception as e:  # a corrupt or non-npz file
    raise DataError(f'{path}: cannot read as .npz ({type(e).__name__}: {e})') from None
  with z:
    for key in ('witnesses', 'target') if require_target else ('witnesses',):
      if key not in z.files:
        raise DataError(f'{path}: missing key {key!r} (has {sorted(z.files)}); expected '
                        "'witnesses' (T, C), 'target' (T,), optional 'fs', 'noise'")
    file_fs = None
    if 'fs' in z.files:
      try:
        file_fs = float(np.asarray(z['fs'], np.float64).reshape(()))
      except (TypeError, ValueError):
        raise DataError(f"{path}: 'fs' must be one number (Hz), got shape "
                        f"{np.shape(z['fs'])}") from None
    noise = z['noise'] if 'noise' in z.files else None
    target = z['target'] if 'target' in z.files else None
    return Recording(z['witnesses'], target, sampling_rate(path, file_fs, fs), noise, path)


def _load_npy(path: str) -> np.ndarray:
  try:
    return np.load(path, allow_pickle=False)
  except Exception as e:
    raise DataError(f'{path}: cannot read as .npy ({type(e).__name__}: {e})') from None


def _load_csv(path: str, fs: Optional[float]) -> Recording:
  with open(path) as f:
    first = f.readline()
  cols = [c.strip() for c in first.split(',')]
  has_header = any(c and not _is_number(c) for c in cols)
  try:
    table = np.loadtxt(path, delimiter=',', skiprows=1 if has_header else 0, ndmin=2)
  except ValueError as e:
    raise DataError(f'{path}: cannot parse as numeric CSV ({e})') from None
  if table.shape[1] < 2:
    raise DataError(f'{path}: need at least 2 columns (witnesses..., target), got {table.shape[1]}')
  names = cols if has_header else [f'col{k}' for k in range(table.shape[1])]
  target_col = names.index('target') if 'target' in names else table.shape[1] - 1
  keep = [k for k, n in enumerate(names) if k != target_col and n.lower() not in ('time', 't')]
  return Recording(table[:, keep], table[:, target_col], sampling_rate(path, None, fs), None,
                   path)


def sampling_rate(name: str, stated: Optional[float], given: Optional[float]) -> Optional[float]:
  """The rate a recording is sampled at: the one its file states; ``given`` (``--fs``) only
  fills in a rate the file lacks (or states as 0 or non-finite) and never overrides one.
  None where neither has one: ``validate`` then names the file (after its arrays' checks)."""
  if given is not None and not (np.isfinite(given) and given > 0):
    raise DataError(f'--fs must be a positive number of Hz, got {given}')
  if stated is not None and np.isfinite(stated) and stated > 0:
    if given is not None and float(given) != float(stated):
      raise DataError(f'{name}: the file states fs = {stated:g} Hz but --fs={given:g}; --fs '
                      'only fills in a rate that a file lacks')
    return float(stated)
  if given is not None:
    return float(given)
  if stated is not None:
    raise DataError(f'{name}: the file states the sampling rate fs = {stated}; give the true '
                    'one with --fs=HZ')
  return None


def _is_number(s: str) -> bool:
  try:
    float(s)
    return True
  except ValueError:
    return False


def load_recording(path: str, fs: Optional[float] = None, require_target: bool = True,
                   min_len: int = 2, selection=None) -> Recording:
  """Loads and validates a user's recording.

  Formats:
    * ``FILE.npz`` with ``witnesses`` (T, C), ``target`` (T,), optional ``fs`` and ``noise``;
    * ``WITNESSES.npy,TARGET.npy``: a pair of ``.npy`` files, comma separated;
    * ``FILE.csv``: one column per channel, the one headed ``target`` (else the last) is the
      target; a ``time`` column is ignored;
    * ``FILE.gwf``, ``FILE.h5``/``.hdf5``: channels by name (gwpy's ``TimeSeriesDict`` files;
      the optional ``gw`` extra), picked by ``selection`` (a ``lstm_jax.channels.Selection``).
  ``fs`` (``--fs``) fills in a rate the file does not state and never overrides one it does: a
  file without a rate and no ``fs`` is an error, never a default. With
  ``require_target=False`` an ``.npz`` may hold witnesses only (a recording to clean).
  """
  from lstm_jax import channels  # pylint: disable=g-import-not-at-top (it imports this module)
  paths = [p for p in path.split(',') if p]
  for p in paths:
    if not os.path.isfile(p):
      raise DataError(f'{p}: no such file')
  if len(paths) == 1 and channels.is_channel_file(path):
    return channels.load_recording(path, selection or channels.Selection(), fs,
                                   require_target, min_len)
  if len(paths) == 2 and all(p.endswith('.npy') for p in paths):
    rec = Recording(_load_npy(paths[0]), _load_npy(paths[1]), sampling_rate(path, None, fs),
                    None, path)
  elif len(paths) == 1 and path.endswith('.npz'):
    rec = _load_npz(path, fs, require_target)
  elif len(paths) == 1 and path.endswith('.csv'):
    rec = _load_csv(path, fs)
  else:
    raise DataError(f'{path}: unsupported data path; give FILE.npz, FILE.csv, '
                    'WITNESSES.npy,TARGET.npy, FILE.gwf or FILE.h5')
  return validate(rec, min_len)


# --------------------------------------------------------------------------- scaling

class Moments:
  """Count, mean, variance, min and max per column, accumulated block by block in float64.

  Blocks merge by Chan, Golub and LeVeque's pairwise update of the mean and the sum of squared
  deviations, so a long recording read in pieces gives the statistics of the whole to rounding.
  """

  def __init__(self):
    self.count, self.mean, self.m2, self.min, self.max = 0, None, None, None, None

  def add(self, block) -> 'Moments':
    x = np.asarray(block, np.float64)
    x = x[:, None] if x.ndim == 1 else x
    if not len(x):
      return self
    n, mean = len(x), x.mean(0)
    m2 = np.square(x - mean).sum(0)
    if self.mean is None:
      self.count, self.mean, self.m2, self.min, self.max = n, mean, m2, x.min(0), x.max(0)
      return self
    delta, total = mean - self.mean, self.count + n
    self.mean = self.mean + delta * (n / total)
    self.m2 = self.m2 + m2 + np.square(delta) * (self.count * n / total)
    self.min, self.max = np.minimum(self.min, x.min(0)), np.maximum(self.max, x.max(0))
    self.count = total
    return self

  @property
  def var(self) -> np.ndarray:
    """Population variance (``np.var``'s)."""
    return self.m2 / self.count


# The smallest std, relative to |mean|, that float64 still resolves (a few ulps).
RESOLUTION = 4 * float(np.finfo(np.float64).eps)


@dataclasses.dataclass
class Normalizer:
  """Per-channel affine scaling ``(x - offset) / scale``, fitted on training data only.

  Offset and scale are float64 and so is the arithmetic: ``apply`` rounds to float32 (the
  model's dtype) only after the offset is removed, and ``invert`` returns float64, so a channel
  far from zero keeps its resolution both ways.
  """
  offset: np.ndarray
  scale: np.ndarray

  @classmethod
  def fit(cls, x_TxC: np.ndarray, method: str = 'standardize', what: str = 'channel'):
    """Offset and scale per channel of ``x`` (T, C) or (T,): mean and std, min and range, or
    0 and 1; a channel that does not vary is an error naming it."""
    return cls.fit_blocks([x_TxC], method, what)

  @classmethod
  def fit_blocks(cls, blocks, method: str = 'standardize', what: str = 'channel'):
    """``fit`` in one pass over ``blocks`` ((n_i, C) or (n_i,) arrays, e.g. read from a file
    piece by piece): memory is one block, and the result equals ``fit`` on the whole to
    rounding (``Moments``)."""
    if method not in ('standardize', 'minmax', 'none'):
      raise ValueError(f"scaling must be 'standardize', 'minmax' or 'none', got {method!r}")
    moments = Moments()
    for block in blocks:
      moments.add(block)
    return cls.from_moments(moments, method, what)

  @classmethod
  def from_moments(cls, moments: 'Moments', method: str = 'standardize',
                   what: str = 'channel'):
    """The scaling ``method`` from a column's accumulated ``Moments``."""
    if method not in ('standardize', 'minmax', 'none'):
      raise ValueError(f"scaling must be 'standardize', 'minmax' or 'none', got {method!r}")
    if not moments.count:
      raise DataError(f'no samples to fit the {what} scaling on')
    if method == 'standardize':
      offset, scale = moments.mean, np.sqrt(moments.var)
    elif method == 'minmax':
      offset, scale = moments.min, moments.max - moments.min
    else:
      offset, scale = np.zeros_like(moments.mean), np.ones_like(moments.mean)
    return cls._checked(offset, scale, what)

  @classmethod
  def _checked(cls, offset, scale, what: str):
    # Constant means relative to the channel itself, never to 1: a strain channel (std 1e-21)
    # varies; one whose variation float64 cannot resolve beside its mean does not.
    flat = np.flatnonzero(~(scale > RESOLUTION * np.abs(offset)))
    if flat.size:
      c = int(flat[0])
      if not np.isfinite(scale[c]):
        raise DataError(f'{what} {c} holds non-finite values (NaN or Inf)')
      if scale[c] > 0:
        raise DataError(f'{what} {c} varies by {scale[c]:.3g} (std) around {offset[c]:.6g}, '
                        'below float64 resolution: it is constant as stored; remove the '
                        'channel')
      raise DataError(f'{what} {c} is constant in the training data; it carries no '
                      'information: remove it')
    return cls(offset, scale)

  def __post_init__(self):
    self.offset = np.asarray(self.offset, np.float64)
    self.scale = np.asarray(self.scale, np.float64)

  def apply(self, x, block: int = 1 << 20):
    """Physical units -> the model's float32 inputs (float64 arithmetic, ``block`` rows at a
    time, so a long float32 recording never has a whole float64 copy)."""
    x = np.asarray(x)
    rows = x.reshape(-1, x.shape[-1]) if x.ndim > 1 else x[:, None]
    out = np.empty(rows.shape, np.float32)
    for lo in range(0, len(rows), block):
      piece = rows[lo:lo + block].astype(np.float64)  # one float64 copy, worked in place
      piece -= self.offset
      piece /= self.scale
      out[lo:lo + block] = piece
    return out.reshape(x.shape)

  def take(self, columns) -> 'Normalizer':
    """The scaling of ``columns`` alone, in their order."""
    return Normalizer(self.offset[columns], self.scale[columns])

  def invert(self, x):
    """The model's outputs -> physical units, float64."""
    return np.asarray(x, np.float64) * self.scale + self.offset

  def to_dict(self):
    return {'offset': self.offset.tolist(), 'scale': self.scale.tolist()}

  @classmethod
  def from_dict(cls, d):
    return cls(d['offset'], d['scale'])  # __post_init__ makes them float64 arrays


# --------------------------------------------------------------------------- streams

def stream_length(record_lengths: Sequence[int], n_streams: int, chunk_len: int) -> int:
  """Longest stream length (a multiple of ``chunk_len``) that gives ``n_streams`` streams,
  each lying inside one record. 0 if even one chunk per stream does not fit."""
  lo, hi = 0, max(record_lengths) // chunk_len
  while lo < hi:  # largest n_chunks with sum(len // (n_chunks * chunk)) >= n_streams
    mid = (lo + hi + 1) // 2
    if sum(n // (mid * chunk_len) for n in record_lengths) >= n_streams:
      lo = mid
    else:
      hi = mid - 1
  return lo * chunk_len


def streams_that_fit(record_lengths: Sequence[int], n_streams: int, chunk_len: int,
                     multiple_of: int = 1) -> int:
  """``n_streams``, or fewer (a multiple of ``multiple_of``) when the records are too short to
  give every stream one chunk. Raises ``DataError`` when not even ``multiple_of`` fit."""
  fit = min(n_streams, sum(n // chunk_len for n in record_lengths))
  fit -= fit % multiple_of
  if fit < 1:
    raise DataError(f'training data too short: {sum(record_lengths)} samples in '
                    f'{len(record_lengths)} record(s) cannot fill {max(multiple_of, 1)} stream(s) '
                    f'of one {chunk_len}-sample chunk; lower chunk_len or give more data')
  return fit


def make_streams(records: Sequence[np.ndarray], n_streams: int, chunk_len: int) -> np.ndarray:
  """Lays records (each (T_i, D)) out as ``n_streams`` parallel continuous streams.

  Returns (n_chunks, B, chunk_len, D): chunk k of stream b continues chunk k-1 of stream b,
  and no stream crosses the boundary between two records.
  """
  lengths = [len(r) for r in records]
  length = stream_length(lengths, n_streams, chunk_len)
  if length == 0:
    raise DataError(f'training data too short: {sum(lengths)} samples in {len(records)} '
                    f'record(s) cannot fill {n_streams} streams of one {chunk_len}-sample chunk; '
                    'lower n_streams or chunk_len, or give more data')
  pieces = []
  for r in records:
    for k in range(len(r) // length):
      pieces.append(r[k * length:(k + 1) * length])
  streams = np.stack(pieces[:n_streams])  # (B, L, D)
  n_chunks = length // chunk_len
  return streams.reshape(n_streams, n_chunks, chunk_len, -1).swapaxes(0, 1)
