"""Channels by name: GWF frames and HDF5 files in, read and written in blocks.

The gravitational-wave field keeps its data in GWF frames and HDF5 files (gwpy's
``TimeSeriesDict`` layout: one dataset per channel, its GPS start ``x0`` and sample spacing ``dx``
as attributes) under channel names such as ``H1:GDS-CALIB_STRAIN``. This module

* picks the target and witness channels by name (``Selection``: ``--target_channel``,
  ``--witness_channels`` as ``A,B`` or ``@file``, ``--exclude_channels``, ``--gps_start`` /
  ``--gps_end``, ``--resample_to``);
* reads them at one rate by sample range (``open_reader``), so a long file is cleaned block by
  block in bounded memory: HDF5 datasets by slices, GWF frames by time span, a pair of ``.npy``
  files memory-mapped; ``.npz`` and ``.csv`` are read whole;
* resamples a channel whose rate differs (``--resample_to``) block by block, equal to
  ``scipy.signal.resample_poly`` on the whole channel;
* treats a NaN stretch inside a frame or HDF5 file as a gap between segments (``finite_runs``):
  training makes each segment its own record, cleaning restarts the carry after it;
* writes the cleaned target and the prediction as channels (``open_writer``: ``.h5`` in gwpy's
  layout, ``.gwf`` a frame per block through LALFrame) that gwpy reads back;
* remembers the channels and rate a model was trained on (``ModelInputs``, ``model/inputs.json``)
  and checks a recording to clean against them.

GWF and HDF5 need the optional ``gw`` extra (``pip install -e '.[gw]'``: gwpy, h5py, and
lalsuite for the frame library); see docs/gw.md.
"""
from __future__ import annotations

import dataclasses
import fractions
import json
import os
from typing import Iterator, NamedTuple, Optional, Sequence

from absl import logging
import numpy as np

from lstm_jax import data as data_lib
from lstm_jax.data import DataError, Recording

CHANNEL_SUFFIXES = ('.gwf', '.h5', '.hdf5')
OUTPUT_SUFFIXES = ('.npz',) + CHANNEL_SUFFIXES
INPUTS_FILE = 'inputs.json'  # in model/: the channels and rate a model was trained on
BLOCK_SAMPLES = 1 << 16  # cleaning reads and writes this many samples at a time (a multiple)


def is_channel_file(path: str) -> bool:
  return path.lower().endswith(CHANNEL_SUFFIXES)


def _need(module: str, what: str):
  """Imports an optional dependency of the ``gw`` extra, or says how to install it."""
  import importlib
  try:
    return importlib.import_module(module)
  except ImportError:
    raise DataError(f"{what} needs the optional package {module.split('.')[0]}: "
                    "pip install -e '.[gw]'") from None


# --------------------------------------------------------------------------- selection

def parse_names(text: str, flag: str = 'channels') -> tuple:
  """``'A,B'`` -> ``('A', 'B')``; ``'@FILE'`` -> the names in FILE, one a line (blank lines
  and ``#`` comments skipped); ``''`` -> ``()``."""
  text = (text or '').strip()
  if text.startswith('@'):
    path = text[1:]
    if not os.path.isfile(path):
      raise DataError(f'--{flag}={text}: no such file {path}')
    with open(path) as f:
      lines = [line.split('#', 1)[0].strip() for line in f]
    return tuple(line for line in lines if line)
  return tuple(name.strip() for name in text.split(',') if name.strip())


@dataclasses.dataclass(frozen=True)
class Selection:
  """Which channels of a file to use, over which GPS span, at which rate."""
  target: str = ''
  witnesses: tuple = ()  # () : every channel but the target and the excluded ones
  exclude: tuple = ()
  gps_start: Optional[float] = None
  gps_end: Optional[float] = None
  resample_to: Optional[float] = None

  @classmethod
  def from_config(cls, config) -> 'Selection':
    return cls(target=config.target_channel.strip(),
               witnesses=parse_names(config.witness_channels, 'witness_channels'),
               exclude=parse_names(config.exclude_channels, 'exclude_channels'),
               gps_start=config.gps_start or None, gps_end=config.gps_end or None,
               resample_to=config.resample_to or None)

  def is_default(self) -> bool:
    return self == Selection()


class ChannelInfo(NamedTuple):
  name: str
  fs: Optional[float]  # None: the file states no rate
  t0: float  # GPS seconds of sample 0
  n_samples: int
  unit: str


# --------------------------------------------------------------------------- files

class _Hdf5File:
  """gwpy's HDF5 layout: a dataset per channel, attributes ``x0`` (GPS start) and ``dx``
  (1 / rate); read by slices (h5py), so only the block asked for is in memory."""

  def __init__(self, path: str):
    h5py = _need('h5py', f'{path}: reading HDF5')
    try:
      self.file = h5py.File(path, 'r')
    except OSError as e:
      raise DataError(f'{path}: cannot read as HDF5 ({e})') from None
    self.datasets, self.infos = {}, {}

    def visit(name, obj):
      if isinstance(obj, h5py.Dataset) and obj.ndim == 1:
        attrs = obj.attrs
        channel = _text(attrs.get('name', attrs.get('channel', name))) or name
        dx = attrs.get('dx', None)
        fs = 1.0 / float(dx) if dx is not None and float(dx) > 0 else (
            float(attrs['sample_rate']) if 'sample_rate' in attrs else None)
        self.datasets[channel] = obj
        self.infos[channel] = ChannelInfo(channel, fs, float(attrs.get('x0', 0.0)),
                                          int(obj.shape[0]), _text(attrs.get('unit', '')))

    self.file.visititems(visit)
    if not self.infos:
      raise DataError(f'{path}: no 1-D datasets (channels) in this HDF5 file')

  def read(self, name: str, start: int, stop: int) -> np.ndarray:
    return self.datasets[name][start:stop]

  def close(self):
    self.file.close()


def _text(value) -> str:
  return value.decode() if isinstance(value, bytes) else str(value)


class _GwfFile:
  """A GWF file through gwpy (LALFrame underneath): channel names from its table of contents,
  data by GPS span. LALFrame decodes the frames a span touches, so a file of many short frames
  (the observatories' 4 to 64 s) streams in bounded memory; one long frame is decoded again for
  each block read from it."""

  def __init__(self, path: str):
    gwf = _need('gwpy.io.gwf', f'{path}: reading GWF frames')
    self.path = path
    self.TimeSeriesDict = _need('gwpy.timeseries', 'reading GWF frames').TimeSeriesDict
    try:
      names = gwf.get_channel_names(path)
    except Exception as e:  # pylint: disable=broad-except  (a corrupt or non-GWF file)
      raise DataError(f'{path}: cannot read as GWF ({type(e).__name__}: {e})') from None
    self.infos = {}
    for name in names:
      span = gwf.data_segments([path], name, warn=False).extent()
      head = self._read(name, float(span[0]), min(float(span[1]), float(span[0]) + 1.0))
      fs = float(head.sample_rate.value)
      self.infos[name] = ChannelInfo(name, fs, float(span[0]),
                                     int(round((float(span[1]) - float(span[0])) * fs)),
                                     str(head.unit) if str(head.unit) != 'dimensionless' else '')

  def _read(self, name, start, end):
    return self.TimeSeriesDict.read(self.path, [name], start=start, end=end)[name]

  def read(self, name: str, start: int, stop: int) -> np.ndarray:
    """Samples ``[start, stop)``. LALFrame (through gwpy) returns no sample for a one-sample
    span and can stop at a frame's end, so each request spans at least two samples and a
    short answer is continued from where it stopped."""
    info = self.infos[name]
    parts, got = [], start
    while got < stop:
      a = max(0, min(got, info.n_samples - 2))
      b = min(info.n_samples, max(stop, a + 2))
      values = self._read(name, info.t0 + a / info.fs, info.t0 + b / info.fs).value[got - a:]
      if not len(values):
        raise DataError(f'{self.path}: channel {name} holds no sample at GPS '
                        f'{info.t0 + got / info.fs:.6f}')
      parts.append(values[:stop - got])
      got += len(parts[-1])
    return np.concatenate(parts) if parts else np.zeros(0)

  def close(self):
    pass


# --------------------------------------------------------------------------- resampling

def _ratio(fs_out: float, fs_in: float, name: str, path: str) -> tuple[int, int]:
  ratio = fractions.Fraction(fs_out / fs_in).limit_denominator(1 << 12)
  if abs(float(ratio) * fs_in - fs_out) > 1e-9 * fs_out:
    raise DataError(f'{path}: cannot resample {name} from {fs_in:g} Hz to {fs_out:g} Hz '
                    '(not a ratio of small integers)')
  return ratio.numerator, ratio.denominator


def _resampled(read, n_in: int, up: int, down: int, start: int, stop: int) -> np.ndarray:
  """Output samples ``[start, stop)`` of ``scipy.signal.resample_poly(x, up, down)`` over the
  whole channel ``x`` (``n_in`` samples; ``read(a, b)`` gives ``x[a:b]``), from a window of
  ``x`` around them: the input is cut on multiples of ``down`` (output sample ``k`` of the
  window is then a whole output sample) with a margin wider than the filter's half length, and
  zeros outside the channel, as ``resample_poly`` pads it."""
  import scipy.signal
  margin = -(-10 * max(up, down) // up) + 1  # resample_poly's half length, in input samples
  lo = (start * down // up - margin) // down * down
  hi = -(-(-(-stop * down // up) + margin) // down) * down
  x = np.zeros(hi - lo)
  a, b = max(lo, 0), min(hi, n_in)
  if b > a:
    x[a - lo:b - lo] = read(a, b)
  y = scipy.signal.resample_poly(x, up, down)
  first = lo * up // down
  return y[start - first:stop - first]


# --------------------------------------------------------------------------- reading

def finite_runs(bad_T: np.ndarray) -> list[tuple[int, int]]:
  """``[(start, stop), ...]``: the runs of ``False`` in ``bad_T`` (the segments between gaps)."""
  bad = np.concatenate([[True], np.asarray(bad_T, bool), [True]])
  edges = np.flatnonzero(np.diff(bad.astype(np.int8)))
  return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2])]


class Reader:
  """A recording's target and witnesses at one rate, read by sample range (``read``).

  ``nan_is_gap``: frame and HDF5 files mark missing data with NaN, a gap between segments;
  elsewhere a non-finite sample is an error naming it.
  """
  fs: float
  t0: float
  n_samples: int
  witness_names: Optional[tuple]
  target_name: Optional[str]
  target_unit: str = ''
  nan_is_gap: bool = False
  path: str

  @property
  def n_witnesses(self) -> int:
    raise NotImplementedError

  def read(self, start: int, stop: int) -> Recording:
    """Samples ``[start, stop)``: witnesses (n, C), target (n,) or None, noise where known."""
    raise NotImplementedError

  def blocks(self, block: int = BLOCK_SAMPLES) -> Iterator[tuple[int, Recording]]:
    for start in range(0, self.n_samples, block):
      yield start, self.read(start, min(self.n_samples, start + block))

  def close(self):
    pass

  def _recording(self, witnesses, target, noise, start) -> Recording:
    return Recording(witnesses, target, self.fs, noise,
                     self.path if start == 0 else f'{self.path}[{start}:]',
                     t0=self.t0 + start / self.fs, witness_names=self.witness_names,
                     target_name=self.target_name, target_unit=self.target_unit)


class ChannelReader(Reader):
  """The selected channels of a ``.gwf`` or ``.h5`` file, over the selected GPS span."""
  nan_is_gap = True

  def __init__(self, path: str, selection: Selection, fs: Optional[float] = None,
               require_target: bool = True):
    self.path = path
    self.file = _GwfFile(path) if path.lower().endswith('.gwf') else _Hdf5File(path)
    infos = self.file.infos
    held = f'the file holds {len(infos)}: {_listing(infos)}'
    if require_target and not selection.target:
      raise DataError(f'{path}: name the target channel with --target_channel; {held}')
    # To clean, the target is optional: without it, the prediction alone is written.
    asked = ((selection.target,) if require_target else ()) + selection.witnesses
    unknown = [n for n in asked + selection.exclude if n and n not in infos]
    if unknown:
      raise DataError(f'{path}: no channel {", ".join(unknown)}; {held}')
    target = selection.target if selection.target in infos else None
    witnesses = selection.witnesses or tuple(n for n in infos if n != target)
    witnesses = tuple(n for n in witnesses if n not in selection.exclude)
    if target in witnesses:
      raise DataError(f'{path}: the target channel {target} is also named a witness')
    if not witnesses:
      raise DataError(f'{path}: no witness channel left to use; {held}')
    names = witnesses + ((target,) if target else ())
    rates = {n: data_lib.sampling_rate(f'{path}: channel {n}', infos[n].fs, fs) for n in names}
    for n, rate in rates.items():
      if rate is None:
        raise DataError(f'{path}: channel {n} states no sampling rate; give it with --fs=HZ')
    if selection.resample_to:
      self.fs = float(selection.resample_to)
    elif len(set(rates.values())) > 1:
      listed = ', '.join(f'{n} {r:g} Hz' for n, r in rates.items())
      raise DataError(f'{path}: channels at different rates ({listed}); give --resample_to=HZ')
    else:
      self.fs = next(iter(rates.values()))
    spans = {n: (infos[n].t0, infos[n].t0 + infos[n].n_samples / rates[n]) for n in names}
    lo, hi = max(s[0] for s in spans.values()), min(s[1] for s in spans.values())
    if hi <= lo:
      raise DataError(f'{path}: the selected channels share no time span')
    start = lo if selection.gps_start is None else float(selection.gps_start)
    end = hi if selection.gps_end is None else float(selection.gps_end)
    if not lo <= start < end <= hi:
      raise DataError(f'{path}: the GPS span [{start:.6f}, {end:.6f}) is outside the file\'s '
                      f'data [{lo:.6f}, {hi:.6f}) (or empty)')
    # The first sample at or after ``start`` on the target's (else the first witness's) grid.
    grid = infos[target or witnesses[0]].t0
    first = int(np.ceil((start - grid) * self.fs - 1e-6))
    self.t0 = grid + first / self.fs
    self.n_samples = int(np.floor((end - self.t0) * self.fs + 1e-6))
    self.witness_names, self.target_name = witnesses, target
    self.target_unit = infos[target].unit if target else ''
    self._plan = {}  # per channel: (offset in its own samples, up, down, its length)
    for n in names:
      offset = (self.t0 - infos[n].t0) * rates[n]
      up, down = _ratio(self.fs, rates[n], n, path) if rates[n] != self.fs else (1, 1)
      if abs(offset - round(offset)) > 1e-6 or (up, down) != (1, 1) and round(offset) % down:
        raise DataError(f'{path}: channel {n} is not sampled on the grid of the others '
                        f'(starts {infos[n].t0:.9f})')
      self._plan[n] = (int(round(offset)), up, down, infos[n].n_samples)
    resampled = [n for n in names if self._plan[n][1:3] != (1, 1)]
    if resampled:
      logging.info('%s: resampling %s to %g Hz', path, ', '.join(
          f'{n} ({rates[n]:g} Hz)' for n in resampled), self.fs)

  @property
  def n_witnesses(self) -> int:
    return len(self.witness_names)

  def _channel(self, name: str, start: int, stop: int) -> np.ndarray:
    offset, up, down, n_in = self._plan[name]
    read = lambda a, b: self.file.read(name, a, b)
    if (up, down) == (1, 1):
      return np.asarray(read(offset + start, offset + stop))
    shifted = lambda a, b: read(offset + a, offset + b)
    return _resampled(shifted, n_in - offset, up, down, start, stop)

  def read(self, start: int, stop: int) -> Recording:
    columns = [self._channel(n, start, stop) for n in self.witness_names]
    dtype = np.result_type(*[c.dtype for c in columns], np.float32)
    witnesses = np.empty((stop - start, len(columns)), dtype)
    for k, c in enumerate(columns):
      witnesses[:, k] = c
    target = self._channel(self.target_name, start, stop) if self.target_name else None
    return self._recording(witnesses, target, None, start)

  def close(self):
    self.file.close()


def _listing(infos, limit: int = 12) -> str:
  names = list(infos)
  return ', '.join(names[:limit]) + (f', ... ({len(names) - limit} more)' if len(names) > limit
                                     else '')


class ArrayReader(Reader):
  """A recording already in memory (``.npz``, ``.csv``), read by slices."""

  def __init__(self, rec: Recording):
    self.rec, self.path = rec, rec.name
    self.fs, self.t0, self.n_samples = rec.fs, rec.t0, len(rec)
    self.witness_names, self.target_name = rec.witness_names, rec.target_name
    self.target_unit = rec.target_unit

  @property
  def n_witnesses(self) -> int:
    return self.rec.witnesses.shape[1]

  def read(self, start: int, stop: int) -> Recording:
    cut = lambda a: None if a is None else a[start:stop]
    return self._recording(self.rec.witnesses[start:stop], cut(self.rec.target),
                           cut(self.rec.noise), start)


class NpyReader(Reader):
  """``WITNESSES.npy,TARGET.npy`` memory-mapped: a block is read from disk when asked for."""

  def __init__(self, path: str, fs: Optional[float]):
    self.path = path
    try:
      self.witnesses, self.target = (np.load(p, mmap_mode='r') for p in path.split(','))
    except Exception as e:  # pylint: disable=broad-except
      raise DataError(f'{path}: cannot read as .npy ({type(e).__name__}: {e})') from None
    if self.witnesses.ndim != 2 or self.target.ndim != 1:
      raise DataError(f'{path}: need witnesses (T, C) and target (T,), got shapes '
                      f'{self.witnesses.shape} and {self.target.shape}')
    if len(self.witnesses) != len(self.target):
      raise DataError(f'{path}: target has {len(self.target)} samples but witnesses have '
                      f'{len(self.witnesses)} (T must match)')
    self.fs = data_lib.sampling_rate(path, None, fs)
    if self.fs is None:
      raise DataError(f'{path}: the file states no sampling rate; give it with --fs=HZ')
    self.t0, self.n_samples = 0.0, len(self.target)
    self.witness_names = self.target_name = None

  @property
  def n_witnesses(self) -> int:
    return self.witnesses.shape[1]

  def read(self, start: int, stop: int) -> Recording:
    rec = data_lib.validate(self._recording(np.array(self.witnesses[start:stop]),
                                            np.array(self.target[start:stop]), None, start), 1)
    return rec


def open_reader(path: str, selection: Optional[Selection] = None, fs: Optional[float] = None,
                require_target: bool = True) -> Reader:
  """A block reader for any input the CLIs take (see ``data.load_recording``)."""
  selection = selection or Selection()
  paths = [p for p in path.split(',') if p]
  for p in paths:
    if not os.path.isfile(p):
      raise DataError(f'{p}: no such file')
  if len(paths) == 1 and is_channel_file(path):
    return ChannelReader(path, selection, fs, require_target)
  if len(paths) == 2 and all(p.endswith('.npy') for p in paths):
    reader = NpyReader(path, fs)
  else:
    reader = ArrayReader(data_lib.load_recording(path, fs, require_target))
  return _unnamed_selection(reader, selection)


def _unnamed_selection(reader: Reader, selection: Selection) -> Reader:
  """Files without channel names (``.npz``, ``.csv``, ``.npy``) pick witnesses by column
  index (``--witness_channels=0,2``, ``--exclude_channels=1``); their target is as given."""
  if selection.target:
    raise DataError(f'{reader.path}: this file names no channels; --target_channel needs a '
                    '.gwf or .h5 file')
  if selection.gps_start or selection.gps_end or selection.resample_to:
    raise DataError(f'{reader.path}: --gps_start, --gps_end and --resample_to need a .gwf or '
                    '.h5 file')
  if not (selection.witnesses or selection.exclude):
    return reader
  n = reader.n_witnesses
  try:
    asked = [int(k) for k in selection.witnesses + selection.exclude]
  except ValueError:
    raise DataError(f'{reader.path}: this file names no channels: pick witnesses by column '
                    f'index (0 to {n - 1})') from None
  if any(not 0 <= k < n for k in asked):
    raise DataError(f'{reader.path}: no witness column {", ".join(str(k) for k in asked if not 0 <= k < n)} '
                    f'(the file has {n}: 0 to {n - 1})')
  excluded = {int(k) for k in selection.exclude}
  keep = [k for k in ([int(k) for k in selection.witnesses] or range(n)) if k not in excluded]
  if not keep:
    raise DataError(f'{reader.path}: no witness column left to use')
  return _Columns(reader, keep)


class _Columns(Reader):
  """Some witness columns of another reader."""

  def __init__(self, inner: Reader, columns: Sequence[int]):
    self.inner, self.columns = inner, list(columns)
    self.path, self.fs, self.t0, self.n_samples = inner.path, inner.fs, inner.t0, inner.n_samples
    self.witness_names, self.target_name = None, inner.target_name
    self.target_unit, self.nan_is_gap = inner.target_unit, inner.nan_is_gap

  @property
  def n_witnesses(self) -> int:
    return len(self.columns)

  def read(self, start: int, stop: int) -> Recording:
    rec = self.inner.read(start, stop)
    return dataclasses.replace(rec, witnesses=rec.witnesses[:, self.columns])

  def close(self):
    self.inner.close()


def load_segments(path: str, selection: Selection, fs: Optional[float] = None,
                  min_len: int = 2) -> list[Recording]:
  """The selected channels in memory, one ``Recording`` per stretch between gaps (NaN in any
  selected channel of a frame or HDF5 file), each with its GPS ``t0``; the log names each gap.
  A non-finite sample that is not NaN (an Inf) is an error."""
  reader = open_reader(path, selection, fs)
  try:
    rec = reader.read(0, reader.n_samples)
  finally:
    reader.close()
  if not reader.nan_is_gap:
    return [data_lib.validate(rec, min_len)]
  columns = np.column_stack([rec.witnesses, rec.target])
  if np.isinf(columns).any():
    row, col = np.argwhere(np.isinf(columns))[0]
    name = (rec.witness_names + (rec.target_name,))[col]
    raise DataError(f'{path}: channel {name} holds Inf at GPS {rec.t0 + row / rec.fs:.6f}')
  runs = finite_runs(np.isnan(columns).any(axis=1))
  for (_, stop), (start, _) in zip(runs[:-1], runs[1:]):
    logging.warning('%s: gap (NaN) from GPS %.6f to %.6f (%d samples): a segment boundary; no '
                    'sample is filled in, the carry restarts after it', path,
                    rec.t0 + stop / rec.fs, rec.t0 + start / rec.fs, start - stop)
  if not runs:
    raise DataError(f'{path}: every sample of the selected channels is NaN')
  return [data_lib.validate(rec.slice(a, b), min_len) for a, b in runs]


def split_segments(segments: Sequence[Recording], holdout_fraction: float, val_fraction: float,
                   lead: int):
  """Training records, validation and held-out stretches from segments in time order (gaps
  between), cut as one recording is: the last ``holdout_fraction`` of the samples is held out
  and the last ``val_fraction`` of the rest validates. No record spans a gap: the training part
  keeps every piece; a validation or held-out stretch that a gap splits keeps its longest piece
  (the log says what is left out). Each stretch's lead-in (``lead`` witness samples before it,
  ``train.lead_in_samples``) stays inside its segment.

  Returns ``(train, heldout, validation, heldout_lead, validation_lead)``; ``validation`` and
  its lead are None when ``val_fraction`` leaves no sample.
  """
  starts = np.cumsum([0] + [len(s) for s in segments])
  total = int(starts[-1])
  cut = int(round(total * (1.0 - holdout_fraction)))
  val_cut = cut - int(round(cut * val_fraction))

  def pieces(lo, hi):  # (segment, start, stop) of the samples [lo, hi) of the whole
    out = []
    for k, seg in enumerate(segments):
      a, b = max(lo - starts[k], 0), min(hi - starts[k], len(seg))
      if b > a:
        out.append((k, int(a), int(b)))
    return out

  def longest(lo, hi, what):
    found = pieces(lo, hi)
    if not found:
      return None, None
    k, a, b = max(found, key=lambda p: p[2] - p[1])
    if len(found) > 1:
      logging.warning('the %s stretch spans %d gaps: keeping its longest piece, GPS %.3f to '
                      '%.3f (%.1f of %.1f s)', what, len(found) - 1, segments[k].t0 + a /
                      segments[k].fs, segments[k].t0 + b / segments[k].fs,
                      (b - a) / segments[k].fs, (hi - lo) / segments[k].fs)
    return segments[k].slice(a, b), segments[k].witnesses[max(0, a - lead):a]

  train = [segments[k].slice(a, b) for k, a, b in pieces(0, val_cut)]
  heldout, heldout_lead = longest(cut, total, 'held-out')
  validation, validation_lead = longest(val_cut, cut, 'validation')
  if not train or heldout is None:
    raise DataError(f'{segments[0].name}: too few samples ({total}) to hold out '
                    f'{holdout_fraction:g} and train on the rest')
  return train, heldout, validation, heldout_lead, validation_lead


def load_recording(path: str, selection: Selection, fs: Optional[float] = None,
                   require_target: bool = True, min_len: int = 2) -> Recording:
  """``data.load_recording`` for ``.gwf``/``.h5``: the selection as one recording; a file with
  a gap (NaN) is an error here (training splits it: ``load_segments``)."""
  reader = open_reader(path, selection, fs, require_target)
  try:
    rec = reader.read(0, reader.n_samples)
  finally:
    reader.close()
  if rec.target is None:
    return data_lib.validate(rec, min_len)
  runs = finite_runs(np.isnan(np.column_stack([rec.witnesses, rec.target])).any(axis=1))
  if runs != [(0, len(rec))]:
    raise DataError(f'{path}: the selected channels hold NaN (gaps) after GPS '
                    f'{rec.t0 + (runs[0][1] if runs and runs[0][0] == 0 else 0) / rec.fs:.6f}'
                    '; training takes each stretch between gaps as its own record')
  return data_lib.validate(rec, min_len)


# --------------------------------------------------------------------------- writing

class Writer:
  """Writes named channels block by block to a temporary file, renamed into place by
  ``close``; ``abort`` removes it, so a failed run never leaves half a file."""

  def __init__(self, path: str, names: Sequence[str], t0: float, fs: float, n_samples: int,
               units: Optional[Sequence[str]] = None):
    if not path.lower().endswith(OUTPUT_SUFFIXES):
      raise DataError(f'{path}: the output must be .npz, .gwf, .h5 or .hdf5')
    out_dir = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(out_dir):
      raise DataError(f'{path}: directory {out_dir} does not exist')
    self.path, self.names, self.t0, self.fs = path, list(names), t0, fs
    self.n_samples, self.units = n_samples, list(units or [''] * len(names))
    self.tmp = f'{path}.tmp{os.getpid()}{os.path.splitext(path)[1]}'
    self.written = 0
    self._open()

  def _open(self):
    raise NotImplementedError

  def write(self, columns: Sequence[np.ndarray]) -> None:
    raise NotImplementedError

  def close(self) -> None:
    self._finish()
    os.replace(self.tmp, self.path)

  def _finish(self):
    pass

  def abort(self) -> None:
    try:
      self._finish()
    finally:
      if os.path.exists(self.tmp):
        os.remove(self.tmp)


class Hdf5Writer(Writer):
  """gwpy's HDF5 layout (``TimeSeriesDict.read(path)`` reads it back, names and all)."""

  def _open(self):
    h5py = _need('h5py', f'{self.path}: writing HDF5')
    self.file = h5py.File(self.tmp, 'w')
    self.datasets = []
    for name, unit in zip(self.names, self.units):
      ds = self.file.create_dataset(name, (self.n_samples,), np.float64,
                                    chunks=(min(self.n_samples, BLOCK_SAMPLES),) or None)
      ds.attrs.update(name=name, channel=name, x0=float(self.t0), dx=1.0 / self.fs,
                      xunit='s', unit=unit)
      self.datasets.append(ds)

  def write(self, columns):
    n = len(columns[0])
    for ds, col in zip(self.datasets, columns):
      ds[self.written:self.written + n] = col
    self.written += n

  def _finish(self):
    if getattr(self, 'file', None) is not None:
      self.file.close()
      self.file = None


class GwfWriter(Writer):
  """A GWF file of one frame per block (LALFrame), REAL8 processed-data channels: gwpy reads
  it back by name (``gwpy.io.gwf.get_channel_names`` lists them)."""

  def _open(self):
    self.lal = _need('lal', f'{self.path}: writing GWF frames')
    self.lalframe = _need('lalframe', f'{self.path}: writing GWF frames')
    self.TimeSeries = _need('gwpy.timeseries', 'writing GWF frames').TimeSeries
    self.stream = self.lalframe.FrameUFrFileOpen(self.tmp, 'w')
    self.frame_number = 0

  def write(self, columns):
    n = len(columns[0])
    start = self.lal.LIGOTimeGPS(self.t0) + self.written / self.fs
    frame = self.lalframe.FrameNew(start, n / self.fs, 'lstm_jax', 0, self.frame_number, 0)
    for name, unit, col in zip(self.names, self.units, columns):
      series = self.TimeSeries(np.asarray(col, np.float64), t0=start, sample_rate=self.fs,
                               name=name, channel=name, unit=unit or None)
      self.lalframe.FrameAddREAL8TimeSeriesProcData(frame, series.to_lal())
    self.lalframe.FrameUFrameHWrite(self.stream, frame)
    self.frame_number += 1
    self.written += n

  def _finish(self):
    if getattr(self, 'stream', None) is not None:
      self.stream = None  # LALFrame closes the file when the stream is released


class NpzWriter(Writer):
  """``.npz`` (the public contract: ``prediction``, and ``cleaned`` where the input has a
  target): its columns are kept in memory and written at ``close``."""

  def _open(self):
    self.parts = [[] for _ in self.names]

  def write(self, columns):
    for part, col in zip(self.parts, columns):
      part.append(np.asarray(col))
    self.written += len(columns[0])

  def _finish(self):
    if self.parts is not None and os.path.exists(os.path.dirname(os.path.abspath(self.tmp))):
      arrays = {name: np.concatenate(p) if p else np.zeros(0)
                for name, p in zip(self.names, self.parts)}
      with open(self.tmp, 'wb') as f:
        np.savez(f, **arrays, fs=np.float64(self.fs), t0=np.float64(self.t0))
      self.parts = None

  def abort(self):
    self.parts = None
    super().abort()


def open_writer(path: str, names: Sequence[str], t0: float, fs: float, n_samples: int,
                units: Optional[Sequence[str]] = None) -> Writer:
  lower = path.lower()
  cls = GwfWriter if lower.endswith('.gwf') else (NpzWriter if lower.endswith('.npz')
                                                   else Hdf5Writer)
  return cls(path, names, t0, fs, n_samples, units)


# --------------------------------------------------------------------------- model inputs

@dataclasses.dataclass(frozen=True)
class ModelInputs:
  """The rate and channels a model was trained on (``model/inputs.json``)."""
  fs: Optional[float]
  n_witnesses: int
  witness_names: Optional[tuple] = None
  target_name: Optional[str] = None
  target_unit: str = ''

  @classmethod
  def of(cls, rec: Recording) -> 'ModelInputs':
    names = None if rec.witness_names is None else tuple(rec.witness_names)
    return cls(float(rec.fs), int(rec.witnesses.shape[1]), names, rec.target_name,
               rec.target_unit)

  def save(self, model_dir: str) -> None:
    with open(os.path.join(model_dir, INPUTS_FILE), 'w') as f:
      json.dump(dataclasses.asdict(self), f, indent=1)

  @classmethod
  def load(cls, model_dir: str, config=None, n_inputs: int = -1) -> 'ModelInputs':
    """From ``inputs.json``; a model saved without one knows its witness count
    (``n_inputs``, from its normalizers) and its rate only if it was trained on a mock
    (``config.mock_fs``)."""
    path = os.path.join(model_dir, INPUTS_FILE)
    if os.path.isfile(path):
      with open(path) as f:
        d = json.load(f)
      names = d.get('witness_names')
      return cls(d.get('fs'), int(d['n_witnesses']), None if names is None else tuple(names),
                 d.get('target_name'), d.get('target_unit', ''))
    fs = float(config.mock_fs) if config is not None and not config.data else None
    return cls(fs, n_inputs)

  def selection_for(self, given: Selection) -> Selection:
    """The channels to read from a file to clean: the model's, unless given."""
    return dataclasses.replace(
        given, target=given.target or (self.target_name or ''),
        witnesses=given.witnesses or (self.witness_names or ()))

  def check(self, reader: Reader, model_dir: str) -> None:
    """The recording must hold the model's channels (by name where both name them) at the
    model's rate."""
    where = reader.path
    if self.n_witnesses >= 0 and reader.n_witnesses != self.n_witnesses:
      raise DataError(f'{where}: {reader.n_witnesses} witness channels, but the model in '
                      f'{model_dir} was trained on {self.n_witnesses}')
    if self.witness_names and reader.witness_names and \
        tuple(reader.witness_names) != tuple(self.witness_names):
      differ = [f'{a} (model: {b})' for a, b in zip(reader.witness_names, self.witness_names)
                if a != b]
      raise DataError(f'{where}: witness channels differ from the model\'s: {", ".join(differ)}')
    if self.fs is None:
      logging.warning('%s does not record the rate it was trained at; cleaning %s at %g Hz '
                      'unchecked', model_dir, where, reader.fs)
    elif abs(reader.fs - self.fs) > 1e-9 * self.fs:
      raise DataError(f'{where}: sampled at {reader.fs:g} Hz, but the model in {model_dir} was '
                      f'trained at {self.fs:g} Hz; resample it (--resample_to={self.fs:g} for '
                      'a .gwf or .h5 file)')


def resolve_model_dir(path: str) -> str:
  """``path`` itself, or its ``model/`` where ``path`` is a training workdir."""
  inner = os.path.join(path, 'model')
  if not os.path.isfile(os.path.join(path, 'config.json')) and \
      os.path.isfile(os.path.join(inner, 'config.json')):
    return inner
  return path


def save_recording(path: str, rec: Recording, block: int = BLOCK_SAMPLES) -> None:
  """Writes a named recording (target and witnesses) as ``.h5`` or ``.gwf`` channels, block by
  block (a mock for the gw workflow, or a recording to share)."""
  if rec.witness_names is None or rec.target_name is None:
    raise DataError(f'{path}: the recording names no channels')
  names = [rec.target_name] + list(rec.witness_names)
  writer = open_writer(path, names, rec.t0, rec.fs, len(rec),
                       [rec.target_unit] + [''] * len(rec.witness_names))
  try:
    for lo in range(0, len(rec), block):
      part = rec.slice(lo, lo + block)
      writer.write([part.target] + [part.witnesses[:, k] for k in range(part.witnesses.shape[1])])
    writer.close()
  except BaseException:
    writer.abort()
    raise
