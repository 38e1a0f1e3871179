"""Training on recordings too long to hold in memory: read in blocks, never whole.

A ``Stretch`` is a contiguous, gap-free range of a ``channels.Reader``'s samples that reads its
witnesses and target on demand (HDF5 datasets by slices, GWF frames by span, ``.npy`` pairs
memory-mapped). Training on one (``train.train`` when ``train.load_split`` returns stretches,
``Config.read_in_blocks``) keeps in memory only:

* the validation stretch, at most ``VALIDATION_SAMPLES`` samples (the end of the training part,
  right before the held-out part; the rest of the validation fraction is trained on), so the
  cost of each validation does not grow with the recording;
* a fit sample (``fit_sample``): up to ``FIT_SAMPLES`` samples in ``FIT_PIECES`` contiguous
  pieces spread evenly over the training part, on which the linear path's and the residual
  FIR's filters are fitted and the start checks look (a filter of at most
  ``train.MAX_FIR_WEIGHTS`` weights then sees over a hundred samples per weight: its excess
  error is under 1% of what it leaves, and validation still vouches for it);
* the chunks of the current updates (``ChunkFeeder``: a window of chunks per stream, read as
  the loop reaches it).

The normalizers are fitted over every training sample in one streaming pass
(``Normalizer.fit_blocks``), the target's after the linear path's filter, computed block by
block with its history (``target_block``); the held-out stretch is judged streaming
(``evaluate_stretch``, ``spectra.StreamingEvaluation``), its lead-in first.
"""
from __future__ import annotations

import ctypes
import dataclasses
import gc
from typing import Optional, Sequence

from absl import logging
import numpy as np

from lstm_jax import bandlimit
from lstm_jax import channels
from lstm_jax import data as data_lib
from lstm_jax import spectra

BLOCK = 1 << 16  # samples read at a time in a streaming pass
VALIDATION_SAMPLES = 1 << 17  # the most a validation stretch holds (32 s at 4096 Hz)
FIT_SAMPLES = 1 << 19  # the fit sample (128 s at 4096 Hz) ...
FIT_PIECES = 4  # ... in this many pieces
LAG_SEGMENT = 1 << 12  # the filters' ``lag_sums`` segment: a quarter of the memory of 1 << 14
# A recording larger than this (its selected channels as float32) is read in blocks with
# ``read_in_blocks='auto'``.
AUTO_BYTES = 256 << 20


def release_memory() -> None:
  """Returns freed memory to the system between phases (glibc keeps freed blocks below its
  mmap threshold in its heap, so a phase's temporaries would otherwise stay resident)."""
  gc.collect()
  try:
    ctypes.CDLL('libc.so.6').malloc_trim(0)
  except (OSError, AttributeError):  # not glibc: nothing to do
    pass


class _Columns:
  """``stretch.witnesses`` / ``stretch.target``: sliced like an array, read on demand."""

  def __init__(self, stretch: 'Stretch', which: str):
    self.stretch, self.which = stretch, which

  def __len__(self) -> int:
    return len(self.stretch)

  @property
  def shape(self):
    n = len(self.stretch)
    return (n, self.stretch.reader.n_witnesses) if self.which == 'witnesses' else (n,)

  def __getitem__(self, key):
    if not isinstance(key, slice) or key.step not in (None, 1):
      raise TypeError('a Stretch\'s columns take contiguous slices only')
    a, b, _ = key.indices(len(self.stretch))
    return getattr(self.stretch.read(a, max(a, b)), self.which)


@dataclasses.dataclass
class Stretch:
  """Samples ``[start, stop)`` of ``reader``, gap-free; ``read(a, b)`` is relative to ``start``.

  Quacks like a ``data.Recording`` where training needs it (``len``, ``slice``, ``fs``, ``t0``,
  the channel names, ``witnesses[a:b]``); ``load`` gives the ``Recording`` itself.
  """
  reader: channels.Reader
  start: int
  stop: int

  def __len__(self) -> int:
    return self.stop - self.start

  @property
  def fs(self) -> float:
    return self.reader.fs

  @property
  def t0(self) -> float:
    return self.reader.t0 + self.start / self.reader.fs

  @property
  def name(self) -> str:
    return f'{self.reader.path}[{self.start}:{self.stop}]'

  witness_names = property(lambda self: self.reader.witness_names)
  target_name = property(lambda self: self.reader.target_name)
  target_unit = property(lambda self: self.reader.target_unit)
  noise = None

  @property
  def witnesses(self) -> _Columns:
    return _Columns(self, 'witnesses')

  @property
  def target(self) -> _Columns:
    return _Columns(self, 'target')

  def slice(self, a: int, b: int) -> 'Stretch':
    a, b, _ = slice(a, b).indices(len(self))
    return Stretch(self.reader, self.start + a, self.start + max(a, b))

  def read(self, a: int, b: int) -> data_lib.Recording:
    """Samples ``[a, b)`` of the stretch, in memory, as the file holds them (float32 stays)."""
    if not 0 <= a <= b <= len(self):
      raise IndexError(f'[{a}, {b}) is outside the stretch of {len(self)} samples')
    rec = self.reader.read(self.start + a, self.start + b)
    return dataclasses.replace(rec, name=self.name)

  def load(self) -> data_lib.Recording:
    return data_lib.validate(self.read(0, len(self)), 1)

  def blocks(self, block: int = BLOCK):
    for a in range(0, len(self), block):
      yield a, self.read(a, min(len(self), a + block))


def recording_bytes(reader: channels.Reader) -> int:
  """The selected channels' size as float32."""
  return 4 * reader.n_samples * (reader.n_witnesses + 1)


def scan_segments(reader: channels.Reader, min_len: int = 2,
                  block: int = BLOCK) -> list[Stretch]:
  """The reader's gap-free stretches, found in one streaming pass: a NaN in any selected
  channel of a frame or HDF5 file is a gap (the log names each); an Inf, or any non-finite
  sample in a file that has no gaps, is an error naming the channel and where."""
  bad_runs, n = [], reader.n_samples
  for start in range(0, n, block):
    rec = reader.read(start, min(n, start + block))
    columns = np.column_stack([rec.witnesses, rec.target])
    finite = np.isfinite(columns)
    if finite.all():
      continue
    if not reader.nan_is_gap or np.isinf(columns).any():
      row, col = np.argwhere(~finite if not reader.nan_is_gap else np.isinf(columns))[0]
      names = (reader.witness_names or tuple(f'witness {k}' for k in range(columns.shape[1] - 1))
               ) + (reader.target_name or 'target',)
      kind = 'Inf' if np.isinf(columns[row, col]) else 'NaN'
      raise data_lib.DataError(f'{reader.path}: channel {names[col]} holds {kind} at sample '
                               f'{start + row} (GPS {reader.t0 + (start + row) / reader.fs:.6f})')
    bad = ~finite.all(axis=1)
    bad_runs += [(start + a, start + b) for a, b in channels.finite_runs(~bad)]
  # Merge the NaN runs that touch across block edges, then take what lies between.
  merged = []
  for a, b in bad_runs:
    if merged and merged[-1][1] == a:
      merged[-1] = (merged[-1][0], b)
    else:
      merged.append((a, b))
  edges = [0] + [x for run in merged for x in run] + [n]
  runs = [(a, b) for a, b in zip(edges[::2], edges[1::2]) if b > a]
  for (_, stop), (start, _) in zip(runs[:-1], runs[1:]):
    logging.warning('%s: gap (NaN) from GPS %.6f to %.6f (%d samples): a segment boundary; no '
                    'sample is filled in, the carry restarts after it', reader.path,
                    reader.t0 + stop / reader.fs, reader.t0 + start / reader.fs, start - stop)
  if not runs:
    raise data_lib.DataError(f'{reader.path}: every sample of the selected channels is NaN')
  for a, b in runs:
    if b - a < min_len:
      raise data_lib.DataError(f'{reader.path}[{a}:{b}]: {b - a} samples is too short (need '
                               f'at least {min_len})')
  return [Stretch(reader, a, b) for a, b in runs]


def cap_validation(train: list, validation, validation_lead, lead: int,
                   most: int = VALIDATION_SAMPLES):
  """At most ``most`` samples of validation (its end, nearest the held-out part); what is cut
  off its start is trained on (appended to the last training stretch where it continues it).
  Returns ``(train, validation, validation_lead)`` with the validation in memory."""
  if validation is None:
    return train, None, None
  if len(validation) > most:
    cut = len(validation) - most
    head = validation.slice(0, cut)
    last = train[-1] if train else None
    if last is not None and last.reader is head.reader and last.stop == head.start:
      train = train[:-1] + [Stretch(last.reader, last.start, head.stop)]
    else:
      train = train + [head]
    before = [] if validation_lead is None else [np.asarray(validation_lead)]
    new_lead = np.concatenate(before + [validation.witnesses[max(0, cut - lead):cut]])
    validation, validation_lead = validation.slice(cut, len(validation)), new_lead[-lead:]
  return train, validation.load(), validation_lead


def fit_sample(stretches: Sequence[Stretch], n_samples: int = FIT_SAMPLES,
               n_pieces: int = FIT_PIECES) -> list[data_lib.Recording]:
  """Up to ``n_samples`` samples of ``stretches`` (in time order), in memory: all of them if
  they hold no more, else ``n_pieces`` contiguous pieces of equal length at evenly spaced
  places (a piece never crosses from one stretch into the next)."""
  lengths = [len(s) for s in stretches]
  total = sum(lengths)
  if total <= n_samples:
    return [s.load() for s in stretches]
  piece = n_samples // n_pieces
  bounds = np.cumsum([0] + lengths)
  out = []
  for k in range(n_pieces):
    at = int((total - piece) * k / max(n_pieces - 1, 1))  # evenly spaced starts in the whole
    i = int(np.searchsorted(bounds, at, side='right') - 1)
    a = at - int(bounds[i])
    a = max(0, min(a, lengths[i] - piece))
    out.append(stretches[i].slice(a, min(lengths[i], a + piece)).load())
  return out


def target_block(stretch: Stretch, a: int, b: int, linear=None) -> data_lib.Recording:
  """Samples ``[a, b)`` of ``stretch`` with the target less the ``linear`` filter's output
  (``baselines.WienerFIR``; None: the target as recorded), computed from the witnesses before
  ``a`` as well (the filter's history and a lagged product's), as over the whole stretch from
  its start."""
  if linear is None:
    return stretch.read(a, b)
  history = linear.n_taps - 1 + (0 if linear.products is None else linear.products.max_lag)
  lo = max(0, a - history)
  rec = stretch.read(lo, b)
  prediction = linear.predict(rec.witnesses)[a - lo:]
  rec = rec.slice(a - lo, len(rec))
  return dataclasses.replace(rec, target=np.asarray(rec.target, np.float64) - prediction)


def fit_normalizers(stretches: Sequence[Stretch], linear, input_scaling: str,
                    target_scaling: str, block: int = BLOCK):
  """``(input_norm, target_norm)`` over every sample of ``stretches`` in one pass: the
  witnesses as recorded, the target less the ``linear`` filter's output."""
  def pairs():
    for s in stretches:
      for a in range(0, len(s), block):
        rec = target_block(s, a, min(len(s), a + block), linear)
        yield rec.witnesses, rec.target

  wit_moments, tgt_moments = data_lib.Moments(), data_lib.Moments()
  for w, t in pairs():
    wit_moments.add(w)
    tgt_moments.add(t)
  return (data_lib.Normalizer.from_moments(wit_moments, input_scaling, 'witness channel'),
          data_lib.Normalizer.from_moments(tgt_moments, target_scaling, 'target channel'))


class ChunkFeeder:
  """The chunks ``make_streams`` would lay out over the stretches, read as the loop reaches
  them: chunk k of every stream as ``(x (B, chunk_len, C), y (B, chunk_len, 1))`` float32,
  normalized. Each stream's next ``window`` chunks are read at once."""

  def __init__(self, stretches: Sequence[Stretch], n_streams: int, chunk_len: int,
               input_norm, target_norm, linear=None, window: int = 32):
    lengths = [len(s) for s in stretches]
    length = data_lib.stream_length(lengths, n_streams, chunk_len)
    if length == 0:
      raise data_lib.DataError(f'training data too short: {sum(lengths)} samples in '
                               f'{len(lengths)} record(s) cannot fill {n_streams} streams of '
                               f'one {chunk_len}-sample chunk; lower n_streams or chunk_len, '
                               'or give more data')
    self.streams = [(s, k * length) for s in stretches for k in range(len(s) // length)]
    self.streams = self.streams[:n_streams]
    self.n_chunks, self.chunk_len, self.window = length // chunk_len, chunk_len, window
    self.input_norm, self.target_norm, self.linear = input_norm, target_norm, linear
    self._first = None  # the chunk index the held window starts at
    self._x = self._y = None

  def __call__(self, k: int):
    first = k - k % self.window
    if self._first != first:
      self._load(first)
    i = k - first
    return (self._x[:, i * self.chunk_len:(i + 1) * self.chunk_len],
            self._y[:, i * self.chunk_len:(i + 1) * self.chunk_len])

  def _load(self, first: int):
    n = min(self.window, self.n_chunks - first) * self.chunk_len
    xs, ys = [], []
    for stretch, offset in self.streams:
      a = offset + first * self.chunk_len
      rec = target_block(stretch, a, a + n, self.linear)
      xs.append(self.input_norm.apply(rec.witnesses))
      ys.append(self.target_norm.apply(np.asarray(rec.target)[:, None]))
    self._x, self._y, self._first = np.stack(xs), np.stack(ys), first


def evaluate_stretch(trained, stretch: Stretch, lead_TxC, band, keep: int = 0,
                     subtracted_band=None):
  """Streams ``trained`` over ``lead_TxC`` (outputs dropped), then ``stretch``, block by
  block: ``(StreamingEvaluation, first)`` where ``first`` is ``(Recording, prediction)`` of
  the stretch's first ``keep`` samples (for plots). ``subtracted_band``: the prediction is
  band-passed to it before it is subtracted (``lstm_jax.bandlimit``; None: as it is)."""
  stream = trained.stream(1)
  if lead_TxC is not None and len(lead_TxC):
    stream.push(np.asarray(lead_TxC))
  evaluation = spectra.StreamingEvaluation(stretch.fs, len(stretch), band)
  limiter = bandlimit.Aligned(subtracted_band, stretch.fs)
  kept_rec, kept_pred = [], []

  def add(prediction, start, target):  # the prediction as subtracted, from sample start[0]
    if len(prediction):
      evaluation.add(target, prediction)
      if start[0] < keep:
        kept_pred.append(prediction[:keep - start[0]])

  for a, rec in stretch.blocks():
    if a < keep:
      kept_rec.append(rec.slice(0, min(keep - a, len(rec))))
    add(*limiter.push(stream.push(rec.witnesses), a + np.arange(len(rec)), rec.target))
  add(*limiter.flush())
  first = None
  if kept_rec:
    rec = dataclasses.replace(
        kept_rec[0], witnesses=np.concatenate([r.witnesses for r in kept_rec]),
        target=np.concatenate([r.target for r in kept_rec]), name=stretch.name)
    first = (rec, np.concatenate(kept_pred)[:len(rec)])
  return evaluation, first
