"""Training: optax Adam over chunks of parallel streams, truncated BPTT, held-out evaluation."""
from __future__ import annotations

import concurrent.futures
import dataclasses
import functools
import json
import os
import time
from typing import NamedTuple, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax
import scipy.signal

from lstm_jax import bandlimit
from lstm_jax import baselines
from lstm_jax import blockdata
from lstm_jax import channels
from lstm_jax import checkpoint as ckpt_lib
from lstm_jax import data as data_lib
from lstm_jax import losses as losses_lib
from lstm_jax import doctor
from lstm_jax import envelopes as envelopes_lib
from lstm_jax import fringes as fringes_lib
from lstm_jax import modes as modes_lib
from lstm_jax import gw
from lstm_jax import metrics as eval_lib
from lstm_jax import parallel
from lstm_jax import recurrent
from lstm_jax import volterra
from lstm_jax.config import Config
from lstm_jax.inference import TrainedModel, build_model


class TrainState(NamedTuple):
  params: dict
  opt_state: optax.OptState
  carry: tuple
  step: jax.Array
  # A running average of the parameters (``Config.ema_decay``), what validation judges and the
  # run keeps: it averages out the optimizer's last steps' noise. None: the parameters as they
  # are.
  average: Optional[dict] = None

  def kept(self) -> dict:
    """The parameters a run would keep now: the average where there is one."""
    return self.params if self.average is None else self.average


def make_schedule(config: Config) -> optax.Schedule:
  """constant | cosine (linear warm-up, then cosine to 1% of the peak) | inverse_time | plateau.

  ``inverse_time`` is Keras' legacy ``decay``: lr / (1 + decay * step). ``plateau`` is the
  warm-up, then the peak: the rate it starts at, which validation then lowers
  (``plateau_level``); as a schedule it is the most any step can take.
  """
  lr = config.learning_rate
  if config.schedule == 'constant':
    return optax.constant_schedule(lr)
  if config.schedule == 'cosine':
    warmup = min(config.warmup_steps, max(config.num_steps - 1, 0))
    return optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, warmup,
                                              max(config.num_steps, warmup + 1), lr * 0.01)
  if config.schedule == 'inverse_time':
    return lambda step: lr / (1.0 + config.decay * step)
  if config.schedule == 'plateau':
    if not config.warmup_steps:
      return optax.constant_schedule(lr)
    return optax.linear_schedule(0.0, lr, config.warmup_steps)
  raise ValueError(f"schedule must be 'constant', 'cosine', 'inverse_time' or 'plateau', "
                   f'got {config.schedule!r}')


def plateau_level(val_history, config: Config) -> tuple[int, bool]:
  """``(drops, stop)`` of the plateau schedule after the validations in ``val_history``.

  A validation MSE improves when it is below the lowest so far by more than
  ``plateau_min_delta`` (relative). After ``patience`` validations without an improvement the
  learning rate drops by ``plateau_factor``; after ``plateau_drops`` drops, the next
  ``patience`` without one end the run. A pure function of the history, so a resumed run
  takes the same decisions.
  """
  lowest, bad, drops = np.inf, 0, 0
  for _, val in val_history:
    if np.isfinite(val) and val < lowest * (1.0 - config.plateau_min_delta):
      lowest, bad = val, 0
      continue
    lowest = min(lowest, val) if np.isfinite(val) else lowest
    bad += 1
    if bad >= config.patience:
      if drops >= config.plateau_drops:
        return drops, True
      drops, bad = drops + 1, 0
  return drops, False


def learning_rates(config: Config) -> np.ndarray:
  """The planned learning rate of every step (for ``plateau``: before any drop)."""
  return doctor.schedule_values(make_schedule(config), config.num_steps)


def make_optimizer(config: Config) -> optax.GradientTransformation:
  """Adam's scaling (and the global-norm clip); the step multiplies by the learning rate it is
  given (``make_train_step``), so a schedule can follow validation without a recompile."""
  adam = optax.scale_by_adam(b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)
  if config.clip_norm > 0:
    return optax.chain(optax.clip_by_global_norm(config.clip_norm), adam)
  return adam


def loss_fn(model, params, carry, x_BxTxC, y_BxTxO, bptt_len: int, objective=None):
  """A loss over a chunk (MSE by default); the gradient is cut every ``bptt_len`` samples.

  ``objective`` is a ``(pred_BxTxO, y_BxTxO) -> scalar`` (``lstm_jax.losses``) applied to the
  whole chunk's prediction, so a spectral loss sees ``chunk_len`` samples.
  Returns ``(loss, carry)``; the carry continues the chunk and carries no gradient.
  """
  b, t, c = x_BxTxC.shape
  n_seg = t // bptt_len
  xs = x_BxTxC.reshape(b, n_seg, bptt_len, c).swapaxes(0, 1)

  def segment(carry, x):
    carry = jax.lax.stop_gradient(carry)
    return model.apply({'params': params}, carry, x)

  carry, preds = jax.lax.scan(segment, carry, xs)  # (n_seg, B, bptt_len, O)
  pred_BxTxO = preds.swapaxes(0, 1).reshape(b, t, -1)
  value = (objective or losses_lib.mse)(pred_BxTxO, y_BxTxO)
  return value, jax.lax.stop_gradient(carry)


def make_train_step(model, optimizer, bptt_len: int, return_grad_norm: bool = False,
                    objective=None, batch_size: int = 0, ema_decay: float = 0.0):
  """A jitted ``(state, x_chunks, y_chunks, k, lr) -> (state, loss)`` on chunk k (data on
  device), ``lr`` the step's learning rate (``make_optimizer`` leaves it to the step).

  With ``return_grad_norm`` it returns ``(state, loss, grad_norm)`` (the global gradient norm
  before clipping), so the loop can stop on a non-finite gradient as well as a loss.
  ``batch_size`` (the streams per update; 0: unknown) lets the model's scan choose XLA
  options (``ScanConfig.compiler_options``). With a ``state.average``, it moves towards the
  new parameters by ``1 - ema_decay``.
  """

  def step(state: TrainState, x_NxBxTxC, y_NxBxTxO, k, lr):
    x, y = x_NxBxTxC[k], y_NxBxTxO[k]
    (loss, carry), grads = jax.value_and_grad(
        functools.partial(loss_fn, model), has_aux=True)(state.params, state.carry, x, y,
                                                         bptt_len, objective)
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    updates = jax.tree.map(lambda u: (-lr * u).astype(u.dtype), updates)
    params = optax.apply_updates(state.params, updates)
    average = state.average
    if average is not None:
      average = jax.tree.map(lambda a, p: a + (1.0 - ema_decay) * (p - a), average, params)
    new_state = TrainState(params, opt_state, carry, state.step + 1, average)
    if return_grad_norm:
      return new_state, loss, optax.global_norm(grads)
    return new_state, loss

  options = model.scan.compiler_options(batch_size) if batch_size else None
  return jax.jit(step, donate_argnums=(0,), compiler_options=options)


# --------------------------------------------------------------------------- data

class Split(NamedTuple):
  train: list  # of data_lib.Recording
  heldout: data_lib.Recording
  source: str
  validation: Optional[data_lib.Recording] = None  # picks the update kept (Config.val_fraction)
  # The witnesses (L, C) right before each stretch, never its targets: a predictor runs over
  # them first (``predict_stretch``), so the stretch is judged as part of a continuous cleaning
  # run, with the FIR's taps and the LSTM's carry on the recent past instead of zeros.
  heldout_lead: Optional[np.ndarray] = None
  validation_lead: Optional[np.ndarray] = None

  def heldout_lead_in_seconds(self) -> float:
    return (0 if self.heldout_lead is None else len(self.heldout_lead)) / self.heldout.fs


LEAD_IN_SECONDS = 8.0


def lead_in_samples(config: Config, fs: float) -> int:
  """Witness samples a predictor sees before a held-out or validation stretch: several seconds
  for the carry, and at least one evaluation chunk and the longest FIR's history."""
  return max([int(round(LEAD_IN_SECONDS * fs)), config.eval_chunk_len,
              *filter_lengths(config.linear_taps, fs, 1),
              *filter_lengths(config.residual_taps, fs, 1)])


def predict_stretch(model, rec: data_lib.Recording, lead_TxC=None) -> np.ndarray:
  """``model.predict`` on ``rec``'s witnesses after a run over ``lead_TxC`` (its outputs
  dropped). Any causal model with ``predict(witnesses_TxC)`` (T,) serves: the LSTM, the
  baselines."""
  y = np.asarray(model.predict(_after_lead(rec, lead_TxC)))
  return y[len(y) - len(rec):]


def _after_lead(rec: data_lib.Recording, lead_TxC) -> np.ndarray:
  """``rec``'s witnesses with ``lead_TxC`` (None: nothing) before them."""
  if lead_TxC is None or not len(lead_TxC):
    return rec.witnesses
  return np.concatenate([np.asarray(lead_TxC, rec.witnesses.dtype), rec.witnesses])


def load_split(config: Config) -> Split:
  """Training records, a validation stretch and a held-out stretch, none sharing a sample."""
  if config.data:
    if not 0.0 < config.holdout_fraction < 1.0:
      raise data_lib.DataError(f'holdout_fraction must be in (0, 1), got {config.holdout_fraction}')
    in_blocks = _split_in_blocks(config)
    if in_blocks is not None:
      return in_blocks
    # One record, or one per stretch between gaps (NaN) of a frame or HDF5 file.
    segments = channels.load_segments(config.data, channels.Selection.from_config(config),
                                      config.fs or None)
    # The validation stretch is the end of the training part: the nearest in time to the
    # held-out stretch without touching it.
    train, heldout, validation, heldout_lead, validation_lead = channels.split_segments(
        segments, config.holdout_fraction, config.val_fraction,
        lead_in_samples(config, segments[0].fs))
    return Split(train, heldout, config.data, validation, heldout_lead, validation_lead)
  if config.mock not in data_lib.MOCKS:
    raise data_lib.DataError(f'unknown mock {config.mock!r}; choose one of {sorted(data_lib.MOCKS)}')
  mock = data_lib.MOCKS[config.mock]
  span = config.train_record_seconds
  # Record k covers [k span, (k+1) span) with its own noise draw; the held-out stretch continues
  # the time axis after the last one, with a noise seed no training record uses.
  train = [mock(fs=config.mock_fs, duration=span, start=k * span, seed=1000 * config.seed + k + 1)
           for k in range(config.n_train_records)]
  lead = lead_in_samples(config, config.mock_fs)

  def with_lead(duration, start, seed):  # one draw: the lead-in's witnesses, then the stretch
    rec = mock(fs=config.mock_fs, duration=duration + lead / config.mock_fs,
               start=start - lead / config.mock_fs, seed=seed)
    return rec.slice(lead, len(rec)), rec.witnesses[:lead]

  heldout, heldout_lead = with_lead(config.eval_seconds, config.n_train_records * span,
                                    1000 * config.seed + 999)
  validation = validation_lead = None
  val_seconds = config.val_fraction * config.n_train_records * span
  if val_seconds > 0:  # before the first training record, with a seed of its own
    validation, validation_lead = with_lead(val_seconds, -val_seconds, 1000 * config.seed + 998)
  return Split(train, heldout, f'mock:{config.mock}', validation, heldout_lead, validation_lead)


def _split_in_blocks(config: Config) -> Optional[Split]:
  """The split of a recording read in blocks (``Config.read_in_blocks``): training and
  held-out stretches that read on demand (``blockdata.Stretch``), the validation stretch in
  memory and at most ``blockdata.VALIDATION_SAMPLES`` long. None: the recording is loaded
  whole instead (an ``.npz`` or ``.csv`` file, or one below ``blockdata.AUTO_BYTES`` with
  'auto')."""
  if config.read_in_blocks == 'never':
    return None
  reader = channels.open_reader(config.data, channels.Selection.from_config(config),
                                config.fs or None)
  in_memory = isinstance(getattr(reader, 'inner', reader), channels.ArrayReader)
  if config.read_in_blocks == 'auto' and (
      in_memory or blockdata.recording_bytes(reader) <= blockdata.AUTO_BYTES):
    reader.close()
    return None
  segments = blockdata.scan_segments(reader)
  lead = lead_in_samples(config, reader.fs)
  train, heldout, validation, heldout_lead, validation_lead = channels.split_segments(
      segments, config.holdout_fraction, config.val_fraction, lead)
  given = 0 if validation is None else len(validation)
  train, validation, validation_lead = blockdata.cap_validation(train, validation,
                                                                validation_lead, lead)
  logging.info('%s: read in blocks (%.0f MB as float32): %d training stretch(es), %.1f s; '
               'validation %.1f s%s; held out %.1f s', config.data,
               blockdata.recording_bytes(reader) / 2 ** 20, len(train),
               sum(len(r) for r in train) / reader.fs,
               0 if validation is None else len(validation) / reader.fs,
               f' (the first {(given - len(validation)) / reader.fs:.1f} s of the validation '
               'fraction are trained on)' if validation is not None and given > len(validation)
               else '', len(heldout) / reader.fs)
  return Split(train, heldout, config.data, validation, heldout_lead, validation_lead)


def in_blocks(split: Split) -> bool:
  """Whether ``split`` reads its training and held-out data in blocks."""
  return isinstance(split.train[0], blockdata.Stretch)


def check_layout(config: Config) -> None:
  doctor.validate_config(config)  # every flag value that cannot work, named
  for name in ('n_streams', 'chunk_len', 'bptt_len', 'num_steps', 'eval_chunk_len'):
    if getattr(config, name) < 1:
      raise data_lib.DataError(f'{name} must be >= 1, got {getattr(config, name)}')
  if config.chunk_len % config.bptt_len:
    raise data_lib.DataError(f'chunk_len ({config.chunk_len}) must be a multiple of bptt_len '
                             f'({config.bptt_len})')


# --------------------------------------------------------------------------- training

def _log_progress(step, num_steps, loss, t_start, t_last_step, step_last):
  now = time.perf_counter()
  rate = (step - step_last) / max(now - t_last_step, 1e-9)
  left = (num_steps - step) / max(rate, 1e-9)
  logging.info('step %d/%d  loss %.5f  %.1f steps/s  %.0f s elapsed  ~%.0f s left',
               step, num_steps, loss, rate, now - t_start, left)


def _check_finite(step: int, loss, grad_norm, ckpt_dir: Optional[str]) -> None:
  """Stops the run at the first non-finite loss or gradient, naming the step and quantity."""
  for what, value in (('loss', float(loss)), ('gradient norm', float(grad_norm))):
    if not np.isfinite(value):
      found = ckpt_lib.list_checkpoints(ckpt_dir) if ckpt_dir else []
      last = (f'; the last good checkpoint (step {found[-1][0]}) is {found[-1][1]}' if found
              else '; no checkpoint was written (set --checkpoint_every to keep one)')
      raise FloatingPointError(f'non-finite {what} ({value}) at step {step}{last}')


def _restore_or_clear(ckpt_dir: str, config: Config, saved, meta: dict):
  """``(saved, start_step, restored meta)``: the newest checkpoint with ``resume``, else a clean
  slate. ``saved`` is what a checkpoint holds: the train state and the best parameters so far."""
  if not config.resume:
    removed = ckpt_lib.clear(ckpt_dir)
    if removed:
      logging.warning('removed %d checkpoint(s) of an earlier run in %s (--resume continues '
                      'one instead)', removed, ckpt_dir)
    return saved, 0, {}
  restored = ckpt_lib.restore_latest(ckpt_dir, saved)
  if restored is None:
    logging.info('resume: no checkpoint in %s yet; starting at step 0', ckpt_dir)
    return saved, 0, {}
  ckpt_lib.check_same_run(restored.meta, meta['config'], restored.path)
  for name in ('n_chunks', 'input_norm', 'target_norm', 'rng_key_data'):
    if restored.meta.get(name) != meta[name]:
      raise data_lib.DataError(f'{restored.path}: the checkpoint\'s {name} differs from this '
                               'run\'s (the training data changed?); start anew without --resume')
  logging.info('resumed from %s at step %d', restored.path, restored.step)
  return jax.tree_util.tree_map(jnp.asarray, restored.state), restored.step, restored.meta


def _host_copy(tree):
  """A host copy that outlives the device buffers (the train step donates them)."""
  return jax.tree.map(np.array, parallel.to_host(tree))


def _becomes_kept(val: float, history, tolerance: float) -> bool:
  """Whether the update just validated (MSE ``val``, after ``history``) is the one to keep so
  far: the latest update within ``tolerance`` (relative) of the lowest MSE."""
  lowest = min([v for _, v in history if np.isfinite(v)], default=np.inf)
  return bool(np.isfinite(val) and val <= (1.0 + tolerance) * min(lowest, val))


def _kept_params(last_params, best_params, val_history, config: Config, validation):
  """The parameters the run ends with, and the validation summary for the metrics."""
  finite = [(s, v) for s, v in val_history if np.isfinite(v)]
  if not finite:
    return last_params, None
  best_step, best_mse = min(finite, key=lambda sv: sv[1])  # the first of equal ones
  kept_step = [s for k, (s, v) in enumerate(val_history)  # what the loop kept, by its rule
               if _becomes_kept(v, val_history[:k], config.val_tolerance)][-1]
  summary = {'seconds': len(validation) / validation.fs, 'every': config.val_every,
             'tolerance': config.val_tolerance, 'kept_step': int(kept_step),
             'best_step': int(best_step), 'best_mse': float(best_mse),
             'last_step': int(val_history[-1][0]), 'last_mse': float(val_history[-1][1]),
             'history': [[int(s), float(v)] for s, v in val_history]}
  logging.info('validation (%.0f s): MSE %.5f at update %d, lowest %.5f at update %d; keeping '
               'update %d (the latest within %g%% of the lowest)', summary['seconds'],
               summary['last_mse'], summary['last_step'], best_mse, best_step, kept_step,
               100 * config.val_tolerance)
  return (last_params if kept_step == summary['last_step'] else best_params), summary


def make_validator(model, validation: data_lib.Recording, input_norm, target_norm,
                   chunk_len: int, lead_TxC=None, max_streams: int = 8, piece: int = 0):
  """``params -> MSE`` of the scaled target on the validation stretch.

  The stretch is cut into up to ``max_streams`` parallel streams of at least ``chunk_len``
  samples: one short program instead of a long serial scan. Each stream first runs over the
  ``chunk_len`` witness samples before it (from ``lead_TxC`` for the first, where given), whose
  outputs are not scored, so the score is not the zero carry's transient. With ``piece`` the
  streams are run ``piece`` samples at a time, the carry passed on (the program's buffers are
  a piece's, not the whole stretch's: a 64 s stretch at 4096 Hz otherwise takes about 280 MB).
  """
  n = len(validation)
  n_streams = max(1, min(max_streams, n // max(chunk_len, 1)))
  length = n // n_streams
  x_all = input_norm.apply(_after_lead(validation, lead_TxC))
  lead = len(x_all) - n
  warm = min(chunk_len, length)
  starts = [lead + s * length for s in range(n_streams)]
  x = np.zeros((n_streams, warm + length, x_all.shape[1]), np.float32)
  for s, start in enumerate(starts):
    got = x_all[max(0, start - warm):start + length]
    x[s, x.shape[1] - len(got):] = got
  y = target_norm.apply(validation.target[:, None])[:n_streams * length]
  del x_all
  carry0 = model.initialize_carry(n_streams)
  if piece:
    total = x.shape[1]
    n_pieces = -(-total // piece)
    xs = np.zeros((n_streams, n_pieces * piece, x.shape[2]), np.float32)
    xs[:, :total] = x
    ys = np.zeros((n_streams, n_pieces * piece, 1), np.float32)
    ys[:, warm:total] = y.reshape(n_streams, length, 1)
    mask = np.zeros(n_pieces * piece, np.float32)
    mask[warm:total] = 1.0
    as_pieces = lambda a: jnp.asarray(a.reshape(n_streams, n_pieces, piece, -1).swapaxes(0, 1))
    xs, ys, mask = as_pieces(xs), as_pieces(ys), jnp.asarray(mask.reshape(n_pieces, piece))
    count = n_streams * length

    @jax.jit
    def mse_by_pieces(params):
      def body(carry, inputs):
        x_k, y_k, mask_k = inputs
        carry, pred = model.apply({'params': params}, carry, x_k)
        return carry, jnp.sum(jnp.square(pred - y_k) * mask_k[None, :, None])
      _, sums = jax.lax.scan(body, carry0, (xs, ys, mask))
      return jnp.sum(sums) / count

    return mse_by_pieces
  x = jnp.asarray(x)
  y = jnp.asarray(y.reshape(n_streams, length, -1))

  @jax.jit
  def mse(params):
    _, pred = model.apply({'params': params}, carry0, x)
    return jnp.mean(jnp.square(pred[:, warm:] - y))

  return mse


def _removed_db(before, after) -> float:
  """How much less target variance the records ``after`` hold than ``before``, in dB."""
  power = lambda recs: sum(float(np.var(r.target, dtype=np.float64)) * len(r) for r in recs)
  return float(10 * np.log10(power(before) / max(power(after), eval_lib.TINY)))


def fit_linear_path(split: Split, lengths, max_products: int = 0, segment: int = 1 << 14
                    ) -> tuple[Split, Optional[baselines.WienerFIR], dict]:
  """The Wiener FIR of the training records, and ``split`` with the filter's output taken off
  every target the recurrent model learns from (training and validation; held out as is).

  ``lengths`` (taps; one or several) are tried over the witnesses, and with ``max_products``
  also over the witnesses widened by the products of witness pairs that the training targets
  are coherent with (``lstm_jax.volterra``): a bilinear coupling, then linear dynamics. The
  filter kept lowers the validation stretch's target the most among those that lower it by
  more than ``MIN_T`` standard errors over its blocks (``_pick_filter``): on a short recording
  a filter's weights can fit the training noise and add it back on new data. None qualifying,
  it returns ``(split, None, stats)``.
  """
  t0 = time.perf_counter()
  lengths = _as_lengths(lengths)
  stats = {'lengths_tried': lengths, 'kept': False}
  if split.validation is None or not len(split.validation):
    logging.info('linear path skipped: no validation stretch to check it on (--val_fraction=0)')
    return split, None, dict(stats, skipped='no validation stretch')
  candidates = _filter_candidates(split.train, None, lengths, max_products, stats,
                                  segment=segment)
  val = split.validation
  best, stats['tried'] = _pick_filter(candidates, val, split.validation_lead, val.target,
                                      np.zeros(len(val)), WHITENED_CHECK)
  if best is not None:
    entry, fir, _ = best
    fir, entry = _regularized_unless_worse(fir, entry, split.train, val, split.validation_lead,
                                           WHITENED_CHECK)
    fir, entry = _with_fringes(fir, entry, split, entry['n_taps'], segment, lengths)
    fir, entry = _with_envelopes(fir, entry, split, entry['n_taps'], segment)
  else:  # fringes and envelopes, where nothing linear qualified
    n_taps = lengths[len(lengths) // 2]
    fir, entry = _with_fringes(None, {}, split, n_taps, segment)
    fir, entry = _with_envelopes(fir, entry, split, n_taps, segment)
    best = None if fir is None else (entry, fir, 0.0)
  if best is not None:
    fir, entry = _with_modulated_paths(fir, entry, split, segment)
    fir, entry = _with_modes(fir, entry, split, segment)
    fir, entry = _poles_and_bent_paths(fir, entry, split, segment)
  else:  # the nearest miss, for the record
    entry = max(stats['tried'], key=lambda e: e['validation_t'])
    fir = candidates[stats['tried'].index(entry)][0]
  stats.update(entry, kept=best is not None)

  def residual(rec, lead=None):
    return dataclasses.replace(rec, target=rec.target - predict_stretch(fir, rec, lead))

  train = [residual(r) for r in split.train]
  stats['train_target_nr_db'] = _removed_db(split.train, train)
  stats['validation_target_nr_db'] = entry['validation_residual_nr_db']
  stats['fit_s'] = time.perf_counter() - t0
  if best is None:
    logging.info('linear path dropped: no filter of %s taps lowers the validation stretch\'s '
                 'target by more than %g standard errors over its blocks (at best %.2f, %.2f dB; '
                 'no linear or bilinear coupling, or too few samples for the weights); the '
                 'recurrent model learns the whole target', lengths, MIN_T,
                 entry['validation_t'], stats['validation_target_nr_db'])
    return split, None, stats
  logging.info('linear path: a Wiener FIR of %d taps per witness%s removes %.2f dB of the '
               'training target and %.2f dB of the validation stretch (%.1f standard errors); '
               'the recurrent model learns the rest (%.1f s)', entry['n_taps'],
               _products_text(entry), stats['train_target_nr_db'],
               stats['validation_target_nr_db'], entry['validation_t'], stats['fit_s'])
  return split._replace(train=train, validation=residual(val, split.validation_lead)), fir, stats


def _with_modulated_paths(fir: baselines.WienerFIR, entry: dict, split: Split,
                          segment: int = 1 << 14) -> tuple[baselines.WienerFIR, dict]:
  """``fir`` (the linear path, with products) or, where validation proves it better, a filter
  of its length over its inputs widened by modulated paths (``volterra.Products.modulated``):
  each factor of its products times the path ``fir`` has fitted to the other factor
  (``x_i (h_j * x_j)``; the strongest pairs' first, as many as ``MAX_FIR_WEIGHTS`` allows),
  with and without the products themselves (``_widened_unless_worse``). A slow witness that
  modulates a resonant coupling reaches the target as ``x_i (h * x_j)``; a filter over
  ``x_i x_j`` renders ``h * (x_i x_j)``, as near as ``x_i`` holds still over ``h``, and least
  squares would need ``h``'s every tap again for it."""
  products = fir.products
  if not MODULATED_PATHS or products is None or not products.pairs:
    return fir, entry
  weights = np.asarray(fir.weights, np.float64).reshape(-1, fir.n_taps)
  paths = []
  for i, j, _ in products.pairs:
    for m, p in ((i, j), (j, i)):
      if m != p and np.any(weights[p]) and (m, p) not in [q[:2] for q in paths]:
        paths.append((m, p, tuple(weights[p] / np.abs(weights[p]).max())))  # its shape
  used = fir.inputs_used()
  paths = paths[:max(0, MAX_FIR_WEIGHTS // fir.n_taps - len(used))]  # the strongest pairs'
  if not paths:
    return fir, entry
  n_ch = split.train[0].witnesses.shape[1]
  widened = dataclasses.replace(products, modulated=paths)
  new_columns = widened.added('modulated', products, n_ch)
  return _widened_unless_worse(
      fir, entry, split, widened, [widened.moved(used, products, n_ch) + new_columns,
                                   [c for c in used if c < n_ch] + new_columns],
      'modulated', segment)


def _products_of(fir: Optional[baselines.WienerFIR], records) -> volterra.Products:
  """``fir``'s widening, or (None, or a filter over the witnesses alone) none yet, its
  normalizer the training ``records``' witnesses'."""
  return (None if fir is None else fir.products) or volterra.Products([], (
      data_lib.Normalizer.fit(np.concatenate([r.witnesses for r in records]), 'standardize',
                              'witness channel')))


def _fit_stretch(records, norm: data_lib.Normalizer, seconds: float,
                 fir: Optional[baselines.WienerFIR]) -> tuple:
  """The first ``seconds`` of the training ``records``, joined: the witnesses standardized by
  ``norm``, the target, and what ``fir`` leaves of it (the target where None), float64."""
  xs, ys, rs, left = [], [], [], int(seconds * records[0].fs)
  for rec in records:
    take = min(len(rec), left)
    if take > 0:
      w = rec.witnesses[:take]
      xs.append(norm.apply(w).astype(np.float64))
      ys.append(np.asarray(rec.target[:take], np.float64))
      rs.append(ys[-1] - (0.0 if fir is None else fir.predict(w)))
      left -= take
  return np.concatenate(xs), np.concatenate(ys), np.concatenate(rs)


def _refitted_over(fir: baselines.WienerFIR, products: volterra.Products, records,
                   columns: list, segment: int) -> Optional[baselines.WienerFIR]:
  """A filter of ``fir``'s length over ``columns`` alone of the ``records`` widened by
  ``products`` (None: no columns): what a later stage fits on where some of ``fir``'s inputs
  render its coupling crudely."""
  if not columns:
    return None
  [[(refitted, _)]] = baselines.WienerFIR.fit_beside_sets(
      [products.widened(r) for r in records], None, [fir.n_taps], [columns], segment=segment)
  return dataclasses.replace(refitted, products=products)


def _fitted_and_widened(kind: str, fit, fitted_on: Optional[baselines.WienerFIR],
                        products: volterra.Products, train, max_seconds: float, entry: dict):
  """``fit(x, residual, fs, log=)`` (a stage's fit of ``kind``'s columns, found as ``(found,
  scores)``, each found with ``entry()`` the widening's item) on the first ``max_seconds`` of
  what ``fitted_on`` leaves of the training records; returns ``(widened, new columns, entry)``
  (``widened`` None where it found none)."""
  n_ch, fs = train[0].witnesses.shape[1], train[0].fs
  x, _, residual = _fit_stretch(train, products.norm, max_seconds, fitted_on)
  found, scores = fit(x, residual, fs, log=logging.info)
  entry = dict(entry, **{f'{kind}_screened': scores})
  if not found:
    return None, [], entry
  return (*_widened_by(kind, products, [f.entry(fs) for f in found], n_ch), entry)


def _widened_by(kind: str, products: volterra.Products, items: list, n_ch: int) -> tuple:
  """``products`` with ``items`` appended to its ``kind``, and where the widening puts them
  after ``n_ch`` witness columns."""
  widened = dataclasses.replace(products, **{kind: getattr(products, kind) + items})
  return widened, widened.added(kind, products, n_ch)


def _stage_inputs(fir: Optional[baselines.WienerFIR], split: Split) -> tuple:
  """What a stage that may run without a filter starts from: the training records, their
  witness count, ``fir``'s widening (``_products_of``) and its inputs (every witness where
  there is no ``fir``)."""
  train = split.train
  n_ch = train[0].witnesses.shape[1]
  return (train, n_ch, _products_of(fir, train),
          list(range(n_ch)) if fir is None else fir.inputs_used())


def _alone_too(fir: Optional[baselines.WienerFIR], used: list, new_columns: list) -> list:
  """The column sets a stage tries: ``fir``'s inputs and the new columns, and the new columns
  alone (where there is no ``fir``, those first, then with every witness)."""
  return ([used + new_columns, new_columns] if fir is not None
          else [new_columns, used + new_columns])


def _with_fringes(fir: Optional[baselines.WienerFIR], entry: dict, split: Split, n_taps: int,
                  segment: int = 1 << 14, lengths: Sequence[int] = ()
                  ) -> tuple[Optional[baselines.WienerFIR], dict]:
  """``fir`` (the linear path; None: no filter qualified) or, where validation proves it
  better, a filter over its inputs widened by fringes (``volterra.Products.fringes``): the
  light a slow witness's motion scatters, fitted on what ``fir`` (less its bent witnesses)
  leaves of the training records (``fringes.fit_fringes``). Tried over ``fir``'s inputs and
  the fringes, over those less the bent witnesses and the fringes, and over the fringes alone
  (with ``fir``'s witnesses where there is no ``fir``); of ``fir``'s length, else of
  ``n_taps``, and without the bent witnesses of each of ``lengths`` up to it too. A fringe's
  linear part nearly vanishes, so no filter over its witness finds it, and the filters before
  this stage may have found nothing at all."""
  if not FRINGES:
    return fir, entry
  train, n_ch, products, used = _stage_inputs(fir, split)
  unbent = [c for c in used if c not in products.columns_of('shapes', n_ch)]
  bent_factors = {i for i, _, _ in products.shapes}
  unbent_alone = [c for c in unbent if c not in bent_factors]
  fitted_on = fir
  if fir is not None and len(unbent) < len(used):
    # A static shape of a slow witness (and the witness itself, its factor) renders a fringe's
    # slow part crudely, and what it leaves no phase path fits (fresh scattered_light/3: 0.20
    # of the residual explained after tanh shapes of the witness, 0.87 after a filter without
    # them): fitted on what a filter over fir's other inputs leaves.
    fitted_on = _refitted_over(fir, products, train, unbent_alone, segment)
  widened, new_columns, entry = _fitted_and_widened(
      'fringes', fringes_lib.fit_fringes, fitted_on, products, train, fringes_lib.MAX_SECONDS,
      entry)
  if widened is None:
    return fir, entry
  sets = _alone_too(fir, used, new_columns)
  set_lengths = [None] * len(sets)
  if unbent != used:
    # fir's length served its bent witnesses' slow dynamics; without them a shorter one may do
    shorter = [n for n in lengths if n <= fir.n_taps] or None
    without = [unbent] + ([unbent_alone] if unbent_alone != unbent else [])
    sets[1:1] = [c + new_columns for c in without]
    set_lengths[1:1] = [shorter] * len(without)
  return _widened_unless_worse(fir, entry, split, widened, sets, 'fringes', segment, n_taps,
                               set_lengths)


def _with_modes(fir: baselines.WienerFIR, entry: dict, split: Split,
                segment: int = 1 << 14) -> tuple[baselines.WienerFIR, dict]:
  """``fir`` (the linear path) or, where validation proves it better, a filter of its length
  over its inputs widened by moving modes (``volterra.Products.modes``): resonances whose
  frequency a slow witness moves, fitted on what ``fir`` leaves of the training records
  (``modes.fit_modes``). Tried over ``fir``'s inputs and the modes, and over its witnesses
  alone and the modes: a mode that moves by more than its width leaves a fixed filter only
  its average, and products of its drive and the slow witness only its first order."""
  if not MODES:
    return fir, entry
  train = split.train
  n_ch, fs = train[0].witnesses.shape[1], train[0].fs
  products = _products_of(fir, train)
  x, y, residual = _fit_stretch(train, products.norm, modes_lib.MAX_SECONDS, fir)
  # Found in what fir leaves, fitted on the target: fir has taken a moving mode's average
  # (and with products its first order), and what it leaves of the mode no mode fits (dev
  # thermal_modes/1: 0.04 of the band explained on the held-out third, 0.51 on the target).
  found, scores = modes_lib.fit_modes(x, residual, fs, fit_on=y, log=logging.info)
  entry = dict(entry, modes_screened=scores)
  if not found:
    return fir, entry
  widened, new_columns = _widened_by(
      'modes', products, [(m.drive, m.slow, m.digital(fs)) for m in found], n_ch)
  used = fir.inputs_used()
  sets = [used + new_columns]
  if any(c >= n_ch for c in used):
    sets.append([c for c in used if c < n_ch] + new_columns)
  return _widened_unless_worse(fir, entry, split, widened, sets, 'modes', segment)


def _with_envelopes(fir: Optional[baselines.WienerFIR], entry: dict, split: Split,
                    n_taps: int, segment: int = 1 << 14
                    ) -> tuple[Optional[baselines.WienerFIR], dict]:
  """``fir`` (the linear path; None: no filter qualified) or, where validation proves it
  better, a filter over its inputs widened by envelopes (``volterra.Products.envelopes``): the
  power in a band of a witness, detected and low-passed, fitted on what ``fir`` leaves of the
  training records (``envelopes.fit_envelopes``). Tried over ``fir``'s inputs and the
  envelopes and over the envelopes alone (with every witness where there is no ``fir``), of
  ``fir``'s length, else of ``n_taps``. A band's power holds none of the band's waveform, so
  no filter over the witness, nor over its square, renders it."""
  if not ENVELOPES:
    return fir, entry
  train, n_ch, products, used = _stage_inputs(fir, split)
  witnesses = [c for c in used if c < n_ch]
  fitted_on = fir
  if fir is not None and len(witnesses) < len(used):
    # A witness's square renders a band's power crudely, and what it leaves no band fits
    # (fresh machine_power/2: no band found after w^2): fitted on what fir's witnesses leave.
    fitted_on = _refitted_over(fir, products, train, witnesses, segment)
  widened, new_columns, entry = _fitted_and_widened(
      'envelopes', envelopes_lib.fit_envelopes, fitted_on, products, train,
      envelopes_lib.MAX_SECONDS, entry)
  if widened is None:
    return fir, entry
  sets = _alone_too(fir, widened.moved(used, products, n_ch), new_columns)
  if fir is not None and len(witnesses) < len(used):
    sets.insert(1, witnesses + new_columns)
  return _widened_unless_worse(fir, entry, split, widened, sets, 'envelopes', segment, n_taps)


def _with_bent_paths(fir: baselines.WienerFIR, entry: dict, split: Split,
                     segment: int = 1 << 14) -> tuple[baselines.WienerFIR, dict]:
  """``fir`` (the linear path) or, where validation proves it better, a filter of its length
  over its inputs widened by bent paths (``volterra.Products.bent_paths``): the path ``fir``
  has fitted to a witness, through the static nonlinearity that best renders what ``fir``
  leaves (``volterra.fit_bends``), as fitted on it raw and whitened, one set each
  (``_widened_unless_worse``). A witness that saturates after a filter (a Wiener model)
  reaches the target as ``f(h * x)``; its best linear estimate is ``h`` itself up to a gain
  (Bussgang, for a Gaussian ``h * x``), so the path the filter found is the one to bend."""
  if not BENT_PATHS:
    return fir, entry
  n_ch = split.train[0].witnesses.shape[1]
  weights = np.asarray(fir.weights, np.float64).reshape(-1, fir.n_taps)
  used = fir.inputs_used()
  witnesses = [j for j in used if j < n_ch]
  if not witnesses:
    return fir, entry
  products = _products_of(fir, split.train)
  taps = {j: weights[j] / np.abs(weights[j]).max() for j in witnesses}
  norm = products.norm.take(witnesses)
  path_of = lambda rec: np.stack([scipy.signal.lfilter(taps[j], 1.0, x) for j, x in zip(
      witnesses, norm.apply(rec.witnesses[:, witnesses]).astype(np.float64).T)], 1)
  paths = [path_of(r) for r in split.train]
  scale = np.std(np.concatenate(paths), axis=0)
  paths = [dataclasses.replace(r, witnesses=p / scale) for r, p in zip(split.train, paths)]
  left = [r.target - fir.predict(r.witnesses) for r in split.train]
  # Each witness's bend is fitted on what the filter leaves with that witness's own static
  # bent forms' part added back: they took some of the bend, and what they left is their
  # misfit, not the bend (a saturation after a low-pass: 21 against 47 dB, noiseless).
  shape_columns = products.columns_of('shapes', n_ch)
  forms_of = [[c for c in used if c in shape_columns
               and products.shapes[c - shape_columns.start][0] == j] for j in witnesses]

  forms = sorted({c for columns in forms_of for c in columns})

  def forms_part(rec):  # (T, K): each bent witness's static forms' part of ``fir``'s output
    x, out = fir.scaled_inputs(rec.witnesses, columns=forms), np.zeros((len(rec), len(witnesses)))
    for k, columns in enumerate(forms_of):  # the witnesses widened once, each part from them
      if columns:
        out[:, k] = fir.apply_scaled(x[:, [forms.index(c) for c in columns]],
                                     columns=columns) - float(fir.bias)
    return out

  beside = [forms_part(r) for r in split.train] if any(forms_of) else None
  bends, scores = volterra.fit_bends(paths, left, MAX_BENT_PATHS, beside=beside)
  entry = dict(entry, bent_paths_screened=[[witnesses[k], *v] for k, *v in scores])
  room, base = MAX_FIR_WEIGHTS // fir.n_taps, used
  if bends and len(used) + 1 > room:
    # No room for a column: a bent path stands in for its witness's static bent forms (a
    # filter over them renders a bend before a filter; the bent path, one after it).
    bent_witnesses = {witnesses[k] for k, *_ in bends}
    base = [c for c in used if not (c in shape_columns and products.shapes[
        c - shape_columns.start][0] in bent_witnesses)]
    logging.info('bent paths: no room beside the filter\'s %d inputs of %d taps; the bent '
                 'witnesses\' static forms make way (%d inputs)', len(used), fir.n_taps,
                 len(base))
  bends = bends[:max(0, room - len(base))]  # each set's columns
  if not bends:
    return fir, entry
  bent = [(witnesses[k], float(scale[k]), tuple(taps[witnesses[k]]), fit[w])
          for w in (0, 1) for k, *fit in bends]  # fitted raw, then whitened
  widened = dataclasses.replace(products, bent_paths=bent)
  new_columns, base = widened.added('bent_paths', products, n_ch), widened.moved(base, products,
                                                                                 n_ch)
  half = len(bends)
  sets = [base + new_columns[:half], base + new_columns[half:]]
  return _widened_unless_worse(fir, entry, split, widened, sets, 'bent_paths', segment)


def _poles_and_bent_paths(fir: baselines.WienerFIR, entry: dict, split: Split,
                          segment: int = 1 << 14) -> tuple[baselines.WienerFIR, dict]:
  """``fir`` refitted with poles (``_with_poles``) or, where validation proves it better,
  widened by bent paths (``_with_bent_paths``) and then refitted with the poles the filter
  without them kept: a bent path that barely clears its check can cost the rational refit
  that follows it far more than it gains (the refit's inputs are then the bent column's too),
  so the two finished filters are compared, the bent one needing ``MIN_T`` standard errors
  over the other (``_pick_filter``). The bent filter tries only the plain one's order and
  numerator (a bent column brings no resonance of its own; on all 13 recordings where bent
  paths were kept, none kept poles of any order), and none where the plain one kept none:
  then the plain filter is ``fir`` and the bent one has already beaten it."""
  bent, bent_entry = _with_bent_paths(fir, entry, split, segment)
  plain, entry = _with_poles(fir, dict(entry, **{k: v for k, v in bent_entry.items()
                                                 if k.startswith('bent_paths_')}), split,
                             segment)
  if bent is fir:
    return plain, entry
  if plain is fir:
    return bent, dict(bent_entry, bent_paths_after_poles_t=bent_entry['bent_paths_t'])
  kept = entry['pole_zero']
  bent, bent_entry = _with_poles(bent, bent_entry, split, segment,
                                 only=[(kept['order'], kept['n_zeros'])])
  val, lead = split.validation, split.validation_lead
  before = np.asarray(val.target, np.float64) - predict_stretch(plain, val, lead)
  best, [tried] = _pick_filter([(bent, 0.0, bent.n_taps)], val, lead, before,
                               np.zeros(len(val)), WHITENED_CHECK)
  if best is None:
    logging.info('bent paths dropped: after the poles they lower what the filter without '
                 'them leaves by %.2f standard errors on validation', tried['validation_t'])
    return plain, dict(entry, bent_paths_after_poles_t=tried['validation_t'])
  return bent, dict(bent_entry, bent_paths_after_poles_t=tried['validation_t'])


def _widened_unless_worse(fir: Optional[baselines.WienerFIR], entry: dict, split: Split,
                          widened: volterra.Products, column_sets: list, kind: str,
                          segment: int, n_taps: Optional[int] = None,
                          set_lengths: Optional[list] = None
                          ) -> tuple[Optional[baselines.WienerFIR], dict]:
  """``fir`` or, where validation proves one better, a filter of its length (None: of
  ``n_taps``) over each of ``column_sets`` of the witnesses ``widened`` (``fir``'s columns
  first, then the new ``kind`` of column), each under the prior as ``fir`` was: it must lower
  what ``fir`` leaves (None: the target) on the validation stretch by ``MIN_T`` standard
  errors (``_pick_filter``). ``set_lengths``: per set, the lengths to try instead (None:
  that one)."""
  n_taps = fir.n_taps if fir is not None else n_taps
  wanted = [list(w) if w else [n_taps]
            for w in (set_lengths or [None] * len(column_sets))]
  lengths = sorted({n for w in wanted for n in w})
  records = [widened.widened(r) for r in split.train]
  candidates, priors = [], []
  fitted = baselines.WienerFIR.fit_beside_sets(records, None, lengths, column_sets,
                                               segment=segment)
  for per_length, want in zip(fitted, wanted):
    for (new, _), length in zip(per_length, lengths):
      if length not in want:
        continue
      new = dataclasses.replace(new, products=widened)
      found = baselines.regularized(new, split.train, segment) if PRIOR_FIT else None
      candidates.append((new if found is None else found[0], 0.0, length))
      priors.append(None if found is None else found[1])
  val, lead = split.validation, split.validation_lead
  target = np.asarray(val.target, np.float64)
  before = target - (0.0 if fir is None else predict_stretch(fir, val, lead))
  best, tried = _pick_filter(candidates, val, lead, before, np.zeros(len(val)), WHITENED_CHECK)
  entry = dict(entry, **{f'{kind}_tried': tried})
  text = lambda p: volterra.describe((), **{kind: getattr(p, kind)})
  if best is None:
    logging.info('%s %s: none lowers what the linear path leaves on validation (at best %.2f '
                 'standard errors)', kind.replace('_', ' '), text(widened),
                 max(e['validation_t'] for e in tried))
    return fir, entry
  new_entry, new_fir, _ = best
  prior = priors[next(k for k, c in enumerate(candidates) if c[0] is new_fir)]
  as_rec = lambda v: [dataclasses.replace(val, target=v)]
  after = target - predict_stretch(new_fir, val, lead)
  logging.info('linear path widened by %s %s: %.2f dB more of the validation stretch judged '
               'whitened (%.1f standard errors)', kind.replace('_', ' '),
               text(new_fir.products), new_entry['judged_nr_db'], new_entry['validation_t'])
  if fir is None:  # the new filter's own check stands as the linear path's
    entry = dict(entry, **new_entry)
  return new_fir, dict(entry, **{k: new_entry[k] for k in ('products', 'shapes', 'modulated',
                                                          'bent_paths', 'fringes', 'modes',
                                                          'envelopes',
                                                          'n_taps',
                                                          'inputs_used', 'n_inputs')},
                       validation_residual_nr_db=_removed_db(as_rec(target), as_rec(after)),
                       regularized=prior is not None, prior=prior,
                       **{f'{kind}_t': new_entry['validation_t']})


def _with_poles(fir: baselines.WienerFIR, entry: dict, split: Split,
                segment: int = 1 << 14, only: Optional[list] = None
                ) -> tuple[baselines.WienerFIR, dict]:
  """``fir`` (the linear path) or, where validation proves it better, its inputs refitted as
  one rational filter (``baselines.pole_zero``) with each of ``POLE_ORDERS`` poles and
  numerators of each of ``POLE_ZERO_SECONDS`` (a delay is a numerator's leading zeros; at
  least one tap more than the poles), its length where
  the slowest pole has decayed, up to ``MAX_RENDERED_WEIGHTS`` weights (with ``POLE_TAIL_SHARE``,
  only the inputs that ring past the numerator, ``_ringing``, the others' responses kept): it
  must lower what ``fir`` leaves on the validation stretch by ``MIN_T`` standard errors
  (``_pick_filter``). ``only``: the ``(order, n_zeros)`` pairs to try instead."""
  if not POLE_ORDERS:
    return fir, entry
  fs, n_in = float(split.train[0].fs), len(fir.inputs_used())
  # Its weights are not fitted, only rendered, so they are not held to the solve's cap.
  max_taps = max(fir.n_taps, MAX_RENDERED_WEIGHTS // max(n_in, 1))
  pairs = [(o, min(max_taps, z)) for o, z in only] if only is not None else [
      (order, n_zeros) for order in POLE_ORDERS
      for n_zeros in sorted({min(max_taps, max(order + 1, int(round(seconds * fs))))
                             for seconds in POLE_ZERO_SECONDS})]
  tasks = [(pair, kept) for pair in pairs for kept in _kept_responses(fir, pair[1])]
  candidates, infos = [], []
  # The fits are independent and mostly filtering and transforms that let go of the GIL:
  # threads run them on every core (the results are the same as one after another).
  with concurrent.futures.ThreadPoolExecutor(max(1, min(len(tasks), os.cpu_count() or 1))) as pool:
    fits = list(pool.map(lambda t: baselines.pole_zero(fir, split.train, *t[0], max_taps,
                                                       segment, fir_columns=t[1]), tasks))
  for found in fits:
    if found is not None:
      candidates.append((found[0], 0.0, found[0].n_taps))
      infos.append(found[1])
  if not candidates:
    return fir, entry
  val, lead = split.validation, split.validation_lead
  target = np.asarray(val.target, np.float64)
  before = target - predict_stretch(fir, val, lead)
  best, tried = _pick_filter(candidates, val, lead, before, np.zeros(len(val)), WHITENED_CHECK)
  for e, info in zip(tried, infos):
    e['pole_zero'] = info
  entry = dict(entry, pole_zero_tried=tried)
  if best is None and POLES_UNLESS_WORSE:
    best = _fewer_numbers_unless_worse(fir, candidates, infos, tried)
  if best is None:
    logging.info('poles: no rational refit of the linear path (%s poles) lowers what it leaves '
                 'on validation (at best %.2f standard errors)', list(POLE_ORDERS),
                 max(e['validation_t'] for e in tried))
    return fir, entry
  new_entry, new_fir, _ = best
  info = infos[next(k for k, c in enumerate(candidates) if c[0] is new_fir)]
  after = target - predict_stretch(new_fir, val, lead)
  as_rec = lambda v: [dataclasses.replace(val, target=v)]
  kept = (f' (inputs {info["fir_columns"]} keep their responses)' if info['fir_columns']
          else '')
  logging.info('linear path refitted with %d poles (at %s Hz, slowest decay %.3f s) and '
               'numerators of %d taps%s, as a FIR of %d taps: %.2f dB more of the validation '
               'stretch judged whitened (%.1f standard errors)%s', info['order'],
               info['poles_hz'], info['decay_s'], info['n_zeros'], kept, new_fir.n_taps,
               new_entry['judged_nr_db'], new_entry['validation_t'],
               '; kept for its fewer numbers, not shown worse' if new_entry.get('unproven')
               else '')
  return new_fir, dict(entry, n_taps=new_fir.n_taps, pole_zero=info, regularized=False,
                       prior=None, poles_t=new_entry['validation_t'],
                       poles_unproven=bool(new_entry.get('unproven')),
                       validation_residual_nr_db=_removed_db(as_rec(target), as_rec(after)))


def _fewer_numbers_unless_worse(fir: baselines.WienerFIR, candidates, infos, tried):
  """The rational refit that validation judges best among those with fewer free numbers than
  ``fir`` (its poles and numerators against its taps) and not clearly worse than it
  (``_clearly_below``, as ``_pick_filter``'s entries record it): None where there is none.
  Where the background is as loud as the coupling, a rendering at 48 dB and one at 39 differ
  on the validation stretch by about 1e-4 of its power, half a standard error (dev
  ``drifting_gain/1``'s resonance alone: 2 poles and 16-tap numerators 48.4 dB on the later
  file, the prior's 246-tap FIR 39.0; t = 0.57); fewer numbers then carry less estimation
  noise to new data, as the prior is kept over least squares unless shown worse."""
  n_in = len(fir.inputs_used())
  numbers = lambda info: info['order'] + (n_in - len(info['fir_columns'])) * info['n_zeros']
  fewer = [k for k, (e, info) in enumerate(zip(tried, infos))
           if numbers(info) < (n_in - len(info['fir_columns'])) * fir.n_taps
           and not e['clearly_worse']]
  if not fewer:
    return None
  k = max(fewer, key=lambda k: tried[k]['judged_nr_db'])
  return dict(tried[k], unproven=True), candidates[k][0], 0.0


def _kept_responses(fir: baselines.WienerFIR, n_zeros: int) -> list[tuple]:
  """The sets of ``fir``'s inputs whose responses a rational refit with numerators of
  ``n_zeros`` keeps, one refit each: none (every input refitted), and the inputs that do not
  ring past the numerator (``_ringing``) where some do; only those with
  ``POLE_EVERY_INPUT_TOO`` False. A set holding every input is no refit and left out."""
  used = fir.inputs_used()
  ringing = _ringing(fir, n_zeros)
  sets = ((),) * POLE_EVERY_INPUT_TOO + (tuple(c for c in used if c not in ringing),)
  return [kept for kept in dict.fromkeys(sets) if len(kept) < len(used)]


def _ringing(fir: baselines.WienerFIR, n_zeros: int) -> list[int]:
  """The inputs of ``fir`` whose responses hold ``POLE_TAIL_SHARE`` of their energy or more
  past their first ``n_zeros`` taps: those a rational refit with numerators of ``n_zeros``
  needs poles for. A resonance on one input beside inputs whose responses the prior has cut
  short (dev ``ligo_like/1``: poles on the resonant input alone 31.3 dB, on all three 29.9):
  one shared denominator bends the short ones, and their numerators refitted by least
  squares bring back estimation noise the prior had kept out. A response the prior has cut
  short holds 1e-8 of its energy or less there; a slow real pole's, 0.5% (fresh
  ``linear_paths/5``)."""
  weights = np.square(np.asarray(fir.weights, np.float64).reshape(-1, fir.n_taps))
  return [c for c in fir.inputs_used()
          if np.sum(weights[c, n_zeros:]) >= POLE_TAIL_SHARE * np.sum(weights[c])]


def _as_lengths(lengths) -> list[int]:
  return [int(lengths)] if np.isscalar(lengths) else sorted(int(n) for n in lengths)


def _products_text(entry: dict) -> str:
  named = volterra.named_in(entry)
  text = ' and per ' + named if named else ''
  used, n_in = entry.get('inputs_used'), entry.get('n_inputs')
  if used is not None and n_in and len(used) < n_in:  # inputs: witnesses, then products
    text += f' (over {len(used)} of its {n_in} inputs, {used}: those the target is coherent with)'
  return text


def _screened_again(records, pairs: list, shapes: list, norm, n_taps: int, max_shapes: int,
                    stats: dict) -> list:
  """``shapes`` (screened on what a filter over the witnesses leaves) with the bent forms
  screened again on what a filter of ``n_taps`` over the witnesses and ``pairs`` and
  ``shapes`` leaves, up to ``max_shapes``: a product that dominates the residual holds the
  share of its power a weaker bent form must be coherent with (a mild saturation beside a
  square)."""
  found = volterra.Products(pairs, norm, shapes)
  widened = [found.widened(r) for r in records]
  fir = baselines.WienerFIR.fit(widened, n_taps)
  left = [r.target - fir.predict(w.witnesses) for r, w in zip(records, widened)]
  more, scores = volterra.screen_shapes(records, left, max_shapes)
  stats['shapes_screened_again'] = scores[:2 * max_shapes]
  new = [f for f in more if f[:2] not in {g[:2] for g in shapes}]
  if new:
    logging.info('bent witnesses screened again on what %s leave: %s more',
                 volterra.describe(pairs, shapes), volterra.describe([], new))
  return (shapes + new)[:max_shapes]


def _filter_candidates(records, predictions, lengths, max_products: int, stats: dict,
                       input_norm=None, products=None, left=None,
                       segment: int = 1 << 14, alone_too: bool = False) -> list:
  """``(fir, gain, n_taps)`` for each length: the Wiener FIR of ``records``' targets, fitted
  beside ``predictions`` (one per record, with a gain; None: none), over the witnesses alone,
  and over the witnesses widened by products of witness pairs: ``products`` where given
  (then only those), else up to ``max_products`` pairs that what is left is coherent with
  (``left``: the targets the predictions leave, one per record; None: the targets).
  ``input_norm`` is the witnesses' normalizer to share (a filter ``plus`` must match). Each
  set of inputs is also tried with only its columns that the targets are coherent with
  (``SELECT_RATIO``; a coherent witness's bent forms with it, ``FORMS_WITH_WITNESS``), the
  others' weights zero: a filter's estimation noise grows with its weights, and most
  witnesses of a recording may carry nothing; and with the factors of the coherent products
  and bent witnesses added (``WITH_FACTORS``). ``alone_too``: after those,
  each filter fitted without the predictions too (gain 0), from the same lag sums."""
  n_ch = records[0].witnesses.shape[1]

  def fits(recs, lengths_, norm, column_sets, factors=None, forms=None):
    """Per set of columns, ``(fir, gain, n_taps)`` over it, over those of its columns the
    targets are coherent with (and the bent ``forms`` of those witnesses: column: its
    witness), and over those with their ``factors`` (column: the witness columns it is made
    of); then the same without the predictions (``alone_too``, else empty): one pass of lag
    sums for all (``fit_beside_sets``)."""
    keep, _ = volterra.coherent_columns(recs, [r.target for r in recs], SELECT_RATIO)
    forms = forms or {}
    sets, owner = [], []
    for k, columns in enumerate(column_sets):
      # A bent form is what its witness's coupling adds to the linear part, so its own
      # coherence is a fraction of its witness's: the screen that let it in judged it on
      # what a filter over the witnesses leaves, and its witness's coherence vouches for it.
      coherent = [c for c in columns
                  if c in keep or (FORMS_WITH_WITNESS and forms.get(c) in keep)]
      choices = [columns] + ([coherent] if coherent and len(coherent) < len(columns) else [])
      if factors and coherent and WITH_FACTORS:
        more = sorted(set(coherent) | {f for c in coherent for f in factors.get(c, ())})
        if more not in choices:
          choices.append(more)
      for chosen in choices:
        sets.append(chosen)
        owner.append(k)
    beside, without = [[] for _ in column_sets], [[] for _ in column_sets]
    for i, fitted in enumerate(baselines.WienerFIR.fit_beside_sets(
        recs, predictions, lengths_, sets, input_norm=norm, segment=segment,
        alone_too=alone_too)):
      (beside if i < len(sets) else without)[owner[i % len(sets)]].extend(
          (fir, gain, n) for (fir, gain), n in zip(fitted, lengths_))
    return beside, without

  candidates, alone = [], []
  if products is None:
    [candidates], [alone] = fits(records, lengths, input_norm, [list(range(n_ch))])
  widened_sets = [] if products is None else [products]
  if products is None and max_products > 0:
    if left is None:  # what the middle-length filter over the witnesses leaves
      fir, gain, _ = candidates[len(lengths) // 2]
      left = [r.target - fir.predict(r.witnesses) for r in records]
    pairs, scores = volterra.screen_pairs(records, left, max_products)
    shapes, shape_scores = volterra.screen_shapes(records, left, max_products)
    stats['products_screened'] = scores[:2 * max_products]
    stats['shapes_screened'] = shape_scores[:2 * max_products]
    if pairs or shapes:
      norm = data_lib.Normalizer.fit(np.concatenate([r.witnesses for r in records]),
                                     'standardize', 'witness channel')
      if SCREEN_AGAIN and pairs:
        shapes = _screened_again(records, pairs, shapes, norm, lengths[len(lengths) // 2],
                                 max_products, stats)
      pair_sets = [pairs]
      # A pair's lag may be the whole product's delay, which a filter over the product at
      # lag 0 renders too, with every shorter delay that the lag cuts off (a slow factor
      # times a fast one seen through a resonance). Coherence cannot tell the two apart
      # (it ignores a filter on the product): validation does.
      if UNLAGGED_TOO and any(k for _, _, k in pairs):
        pair_sets.append([(i, j, 0) for i, j, _ in pairs])
      # Bent witnesses with every set of pairs, and the pairs without them: a bent form the
      # screen let in by chance costs each filter weights; validation tells.
      widened_sets = [volterra.Products(p, norm, shapes) for p in pair_sets]
      if shapes and pairs:
        widened_sets += [volterra.Products(p, norm) for p in pair_sets]
      input_norm = None
  if widened_sets:  # fitted over the witnesses and every set's columns at once
    together = []
    for widened in widened_sets:
      together += [p for p in widened.pairs if p not in together]
    # Every set's bent witnesses and modulated paths, where it has any (the first's).
    union = dataclasses.replace(widened_sets[0], pairs=together)
    bends, paths = union.shapes, union.modulated
    most = max(1, MAX_FIR_WEIGHTS // (n_ch + widened_sets[0].n_columns))
    wide_lengths = sorted({min(n, most) for n in lengths})
    pair_columns, bend_columns, path_columns = (union.columns_of(kind, n_ch)
                                                for kind in ('pairs', 'shapes', 'modulated'))
    column_sets = [list(range(n_ch)) + [pair_columns[together.index(p)] for p in widened.pairs]
                   + list(bend_columns[:len(widened.shapes)])
                   + list(path_columns[:len(widened.modulated)])
                   for widened in widened_sets]
    factors = {c: [i, j] for c, (i, j, _) in zip(pair_columns, together)}
    forms = {c: i for c, (i, _, _) in zip(bend_columns, bends)}  # a bent form's witness
    factors.update({c: [i] for c, i in forms.items()})
    factors.update({c: [i, j] for c, (i, j, _) in zip(path_columns, paths)})
    for out, fitted in zip((candidates, alone), fits(
        [union.widened(r) for r in records], wide_lengths, input_norm, column_sets, factors,
        forms)):
      for widened, columns, per_set in zip(widened_sets, column_sets, fitted):
        out += [(_restricted(fir, columns, widened), gain, n) for fir, gain, n in per_set]
  return candidates + alone


def _improved_after_first_check(summary: Optional[dict]) -> bool:
  """Whether training's validation error (``_kept_params``' summary; None: none) was lowest
  after its first check: what the later updates learnt carried over to new data."""
  if not summary:
    return False
  history = summary.get('history')
  first = history[0][0] if history else summary['every']
  return bool(summary['best_step'] > first)


def _same_shape(a: Optional[baselines.WienerFIR], b: Optional[baselines.WienerFIR]) -> bool:
  """Whether two filters have the same length, widened inputs and inputs in use."""
  return (a is not None and b is not None and a.n_taps == b.n_taps
          and a.same_inputs(b, norm=False) and a.inputs_used() == b.inputs_used())


def _restricted(fir: baselines.WienerFIR, columns, products) -> baselines.WienerFIR:
  """``fir``, whose weights are zero outside its inputs' ``columns``, as a filter over those
  columns alone in their order: the witnesses widened by ``products``."""
  weights = np.asarray(fir.weights).reshape(-1, fir.n_taps)[columns]
  return dataclasses.replace(fir, weights=weights.reshape(-1),
                             input_norm=fir.input_norm.take(columns), products=products)


def _pick_filter(candidates, validation: data_lib.Recording, lead, before, base_prediction,
                 whitened: bool = False):
  """The candidate ``(fir, gain, n_taps)`` whose residual on the validation stretch,
  ``target - (gain * base_prediction + fir)``, is lowest beside ``before`` (the residual
  without it), among those whose drop clears ``MIN_T`` standard errors over the stretch's
  blocks: ``((entry, fir, gain) or None, entries)``.

  The check is the validation stretch, judged after its lead-in: its residual must fall in
  the mean over VALIDATION_BLOCKS blocks by MIN_T standard errors of that mean. A chance fit
  adds its own noise to every prediction, which costs most where the model is already good,
  and there the blocks disagree. The training residual is no check: it is mostly target
  content no witness explains, so what the filter removes of the noise is a sliver of it
  (docs/quality.md, "Residual FIR").

  Of the qualifying candidates, one with fewer weights (and the network's gain as zero or not
  as the lowest's) is preferred where the lowest residual is not below its own by
  ``PARSIMONY_T`` standard errors over the blocks and by ``PARSIMONY_DROP`` of its variance:
  among many candidates the lowest is partly the luckiest, and a filter's weights cost
  estimation noise on new data that the validation stretch can hardly resolve.

  ``whitened``: residuals are judged through the whitening filter of the lowest residual
  (``_judged_as``: nearest to the background alone), every frequency weighed by how little
  background it has, so what the loudest unwitnessed background (a slow line, microseism)
  does to a filter's error does not rank the filters.
  """
  before = np.asarray(before, np.float64)
  residuals = [np.asarray(validation.target, np.float64) - (
      gain * base_prediction + predict_stretch(fir, validation, lead))
               for fir, gain, _ in candidates]
  judged = _judged_as(min(residuals + [before], key=np.var) if whitened else None, whitened)
  as_rec = lambda v: [dataclasses.replace(validation, target=v)]
  before_judged = judged(before)
  tried, best = [], None
  for i, (fir, gain, n_taps) in enumerate(candidates):
    entry = dict(fir.summary(), n_taps=n_taps, gain=gain,
                 validation_residual_nr_db=_removed_db(as_rec(before), as_rec(residuals[i])))
    residuals[i] = after = judged(residuals[i])  # the raw residual is not needed again
    entry.update(judged_nr_db=_removed_db(as_rec(before_judged), as_rec(after)),
                 validation_t=_drop_t(before_judged, after),
                 clearly_worse=_clearly_below(before_judged, after))
    tried.append(entry)
    # Both: the blocks' drops must agree, and the stretch's total must fall (a few loud
    # blocks can rise while most fall a little).
    if entry['validation_t'] > MIN_T and entry['judged_nr_db'] > 0 and (
        best is None or entry['judged_nr_db'] > best[0]['judged_nr_db']):
      best = (entry, fir, gain)
  if best is not None:
    weights = lambda e: len(e['inputs_used']) * e['n_taps']
    lowest = residuals[tried.index(best[0])]
    for i in sorted(range(len(tried)), key=lambda i: weights(tried[i])):
      e = tried[i]
      if weights(e) >= weights(best[0]):
        break
      # Filters against filters: whether the network stays is not a matter of weights here.
      if ((e['gain'] == 0.0) == (best[0]['gain'] == 0.0) and e['validation_t'] > MIN_T
          and e['judged_nr_db'] > 0 and not _clearly_below(lowest, residuals[i])):
        best = (dict(e, preferred_over=best[0]['validation_residual_nr_db']), candidates[i][0],
                candidates[i][1])
        break
  return best, tried


def _predict_records(trained: TrainedModel, records, leads=None) -> list:
  """The model's prediction on each record after its lead-in (``predict_stretch``; none: from
  a zero carry); records of equal length with equal lead-ins share one batch."""
  leads = [None] * len(records) if leads is None else leads
  inputs = [_after_lead(rec, lead) for rec, lead in zip(records, leads)]
  by_length = {}
  for i, x in enumerate(inputs):
    by_length.setdefault(len(x), []).append(i)
  out = [None] * len(records)
  for indices in by_length.values():
    batch = trained.stream(len(indices)).push(np.stack([inputs[i] for i in indices]))
    for i, y in zip(indices, batch):
      out[i] = y[len(y) - len(records[i]):]
  return out


VALIDATION_BLOCKS = 16  # the residual FIR's check: blocks of the validation stretch
MIN_T = 2.0  # ... and how many standard errors its mean drop must clear
# Fewer weights win unless the lowest residual is below theirs by this many standard errors
# over the blocks, and by this share of their variance: where the target is mostly what no
# witness explains, validation ranks filters by differences that small (0.0001 dB on the seed
# mock) while their estimation noise on new data decides tens of dB against the coupled noise.
PARSIMONY_T, PARSIMONY_DROP = 1.0, 1e-3


def _judged_as(reference, whitened: bool):
  """How a check sees residuals: as they are (``reference`` unused), or (``whitened``) through
  the AR whitening filter of ``reference`` (``baselines.whitening_filter``, means removed), a
  residual that is mostly background: a residual's variance then weighs each frequency by how little
  background it has there, as the likelihood of a filter's weights does, instead of by the
  background's loudest band."""
  if not whitened:
    return lambda v: np.asarray(v, np.float64)
  reference = np.asarray(reference, np.float64)
  mean = float(np.mean(reference))
  white = baselines.whitening_filter(reference - mean, floor=WHITENING_FLOOR)
  return lambda v: white(np.asarray(v, np.float64) - mean)


def _clearly_below(lower, higher) -> bool:
  """Whether the residual ``lower`` is below ``higher`` by ``PARSIMONY_T`` standard errors over
  the blocks and by ``PARSIMONY_DROP`` of its variance: what a model with more weights must show
  on validation to be kept over one with fewer."""
  higher = np.asarray(higher, np.float64)
  return bool(_drop_t(higher, lower) > PARSIMONY_T and 1.0 - np.var(lower, dtype=np.float64)
              / max(float(np.var(higher)), eval_lib.TINY) > PARSIMONY_DROP)


# A fractional drop in variance below this in every block is no drop (a network of zero
# weights moved a validation residual by 2e-16 per block, at 2.9 standard errors).
ROUNDING_DROP = 1e-12


def _drop_t(before, after, n_blocks: int = VALIDATION_BLOCKS) -> float:
  """The mean over ``n_blocks`` contiguous blocks of the residual's fractional drop in variance
  (``before`` -> ``after``), in standard errors of that mean: a one-sample t statistic."""
  n = len(before) // n_blocks * n_blocks
  if n < 2 * n_blocks:
    return float('-inf')  # too short to tell
  var = lambda x: np.var(np.asarray(x[:n], np.float64).reshape(n_blocks, -1), axis=1)
  drops = 1.0 - var(after) / np.maximum(var(before), eval_lib.TINY)
  if np.max(np.abs(drops)) < ROUNDING_DROP:  # rounding, whose sign may agree by chance
    return 0.0
  spread = np.std(drops, ddof=1) / np.sqrt(n_blocks)
  if spread == 0.0:  # every block alike: no drop at all, or the same drop everywhere
    return 0.0 if np.mean(drops) == 0.0 else float(np.sign(np.mean(drops)) * np.inf)
  return float(np.mean(drops) / spread)


MAX_FIR_WEIGHTS = 4096  # a filter's C x n_taps: a 4096^2 solve takes seconds
# A rational filter's C x n_taps as a FIR, cut where its slowest pole has decayed by 60 dB:
# rendered, not solved for (filtering in the frequency domain, whatever the length); a ring
# cut at -44 dB caps what the filter can take at about that (dev nonlinear_memory/1).
MAX_RENDERED_WEIGHTS = 4 * MAX_FIR_WEIGHTS
# Filters are also fitted over only the inputs whose coherent share of the target's power is
# above this many times chance (``volterra.coherent_columns``); validation picks.
SELECT_RATIO = 3.0
# And over those with the factors of each coherent product or bent witness: a line's direct
# coupling beside its modulation is below the screen (the line's own power is small next to
# the sidebands and the background), yet a filter over the product alone misses it.
WITH_FACTORS = True
# And a coherent witness's bent forms with it (``_filter_candidates``).
FORMS_WITH_WITNESS = True
# The linear path's products are also tried as modulated paths (``_with_modulated_paths``).
MODULATED_PATHS = True
# And bent: a witness's path through the static nonlinearity that best renders what the
# filter leaves (``_with_bent_paths``), at most this many witnesses'.
BENT_PATHS = True
MAX_BENT_PATHS = 4
# And the linear path refitted as a rational filter with these many poles shared by its
# inputs, numerators of these many seconds (``_with_poles``; () for none).
POLE_ORDERS = (2, 4, 8)
POLE_ZERO_SECONDS = (0.008, 0.03)
# Above 0, the rational refit is also tried over only the inputs whose responses hold at
# least this share of their energy past the numerator's taps, the others keeping the
# filter's responses (``_ringing``), and with ``POLE_EVERY_INPUT_TOO`` False over those alone
# (``scoreboard`` rules ``poles_on_ringing_inputs_too`` and ``poles_on_ringing_inputs``: 1e-3).
# Off: both gained on dev and fresh draws and lost on test (quality.md, "Poles for the
# inputs that ring").
POLE_TAIL_SHARE = 0.0
POLE_EVERY_INPUT_TOO = True
# A rational refit with fewer free numbers than the filter is kept unless validation shows it
# clearly worse (``_fewer_numbers_unless_worse``); False: only where it proves itself better.
POLES_UNLESS_WORSE = True
# Fringes (``_with_fringes``): light scattered off a surface that a slow witness moves.
FRINGES = True
# Moving modes (``_with_modes``): a resonance whose frequency a slow witness moves.
MODES = True
# Envelopes: the power in a witness's band, detected and low-passed (``_with_envelopes``).
ENVELOPES = True
# Bent witnesses are screened again on what a filter over the screened products leaves
# (``_screened_again``).
SCREEN_AGAIN = True
# A screened pair with a lag is also tried at lag 0 (``_filter_candidates``), and the filter
# chosen is refitted under a decaying-response prior where validation allows
# (``_regularized_unless_worse``); False: as before either (``scoreboard.PICK_RULES``).
UNLAGGED_TOO = True
PRIOR_FIT = True
# Filters and the network are judged on the validation stretch whitened (``_judged_as``),
# the whitening filter's gain bounded by a white floor at this share of the residual's power.
WHITENED_CHECK = True
WHITENING_FLOOR = 0.1
# ``residual_taps``/``linear_taps`` = -1: the lengths tried, in seconds; validation picks one.
FILTER_SECONDS = (0.008, 0.03, 0.12, 0.5)


def filter_lengths(taps: int, fs: float, n_ch: int) -> list[int]:
  """The FIR lengths (taps) to try for a ``residual_taps`` or ``linear_taps`` value: that one,
  or with -1 each of ``FILTER_SECONDS`` at ``fs``; at most ``MAX_FIR_WEIGHTS`` weights over
  ``n_ch`` witnesses (the normal equations grow as (C n_taps)^2, their solve as its cube)."""
  if taps == 0:
    return []
  wanted = [taps] if taps > 0 else [int(round(s * fs)) for s in FILTER_SECONDS]
  most = max(1, MAX_FIR_WEIGHTS // max(n_ch, 1))
  return sorted({max(1, min(n, most)) for n in wanted})


def fit_residual_path(trained: TrainedModel, split: Split, lengths, segment: int = 1 << 14,
                      linear_stats: Optional[dict] = None,
                      validation_summary: Optional[dict] = None) -> tuple[TrainedModel, dict]:
  """After training: the Wiener FIR of what ``trained`` leaves of the training targets, fitted
  together with a gain on its prediction, for each filter length in ``lengths`` (one or
  several), over the witnesses and, with ``Config.residual_products``, over the witnesses
  widened by witness-pair products the residual is coherent with. The one kept lowers the
  validation residual the most among those that clear ``_pick_filter``'s test; none
  qualifying, the model is returned as it was.

  The filter takes up linear structure that the recurrent model only approximated (a delay, a
  resonance); the gain lets it stand in for a model that learnt the coupling worse than the
  filter does (gain near 0) or scale one that is right but off in size. With a linear path
  fitted first, it refits that path beside the trained model (one backfitting pass), over the
  same inputs (products included). Only a linear output layer can carry a gain
  (``output_activation='linear'``, the default); with another one the gain stays 1. Without a
  validation stretch nothing can vouch for the filter, and it is skipped.

  ``linear_stats``: ``fit_linear_path``'s, where ``trained.linear`` came from it on the same
  records; a filter kept alone that is that path's (inputs, products and length) takes the
  prior's verdict it had there instead of fitting the prior again on the same data.
  ``validation_summary``: training's (``stats['validation']``), for whether the network's
  validation error fell after its first check (None: not known, taken as not).
  """
  lengths = _as_lengths(lengths)
  stats = {'n_taps': max(lengths), 'lengths_tried': lengths, 'kept': False}
  if split.validation is None or not len(split.validation):
    logging.info('residual FIR skipped: no validation stretch to check it on (--val_fraction=0)')
    return trained, dict(stats, skipped='no validation stretch')
  t0 = time.perf_counter()
  records = list(split.train) + [split.validation]
  leads = [None] * len(split.train) + [split.validation_lead]
  predictions = _predict_records(trained, records, leads)
  # What the model leaves of each record's target: training records, then validation.
  left = [r.target - y for r, y in zip(records, predictions)]
  linear = trained.linear
  if trained.config.output_activation == 'linear':
    train_records, beside = split.train, predictions[:-1]
  else:  # the gain stays 1: the filter is fitted on what the model leaves
    train_records = [dataclasses.replace(r, target=l) for r, l in zip(split.train, left)]
    beside = None
  # Beside the model, and (with a gain) without it: validation keeps a filter alone only
  # where the trained network does worse on new data than none (it fitted what no witness
  # explains). With a linear path the filter takes its inputs (``plus`` must match): its
  # products, or none.
  candidates = _filter_candidates(
      train_records, beside, lengths,
      trained.config.residual_products if linear is None else 0, stats,
      input_norm=None if linear is None else linear.input_norm,
      products=None if linear is None else linear.products, left=left[:-1], segment=segment,
      alone_too=beside is not None)
  if beside is None:
    candidates = [(fir, 1.0, n) for fir, _, n in candidates]
  # The network must earn its place: on validation (whitened, as filters are judged), below
  # what the linear path alone leaves (nothing, without one), in total and in the mean over
  # the blocks, and either by PARSIMONY_T standard errors or with its validation error having
  # fallen after the first check during training. A network that fitted what no witness explains (slow background a
  # short file aligns by chance) does not; nor one whose help the blocks do not agree on and
  # whose training after its first updates only fitted the training part: on new data its
  # output adds its own error. Then only filters without it (gain 0) are candidates. No share
  # of the variance is asked, unlike filters against filters: the coupling the network takes
  # up may be a sliver of a target that is mostly unwitnessed background (docs/quality.md).
  val = split.validation
  without = np.asarray(val.target, np.float64) - (
      0.0 if linear is None else predict_stretch(linear, val, leads[-1]))
  judged = _judged_as(min((without, left[-1]), key=np.var) if WHITENED_CHECK else None,
                      WHITENED_CHECK)
  stats['network_t'] = _drop_t(judged(without), judged(left[-1]))
  stats['network_db'] = _removed_db([dataclasses.replace(val, target=judged(without))],
                                    [dataclasses.replace(val, target=judged(left[-1]))])
  stats['network_learnt'] = _improved_after_first_check(validation_summary)
  unproven = beside is not None and not (
      stats['network_db'] > 0 and stats['network_t'] > 0
      and (stats['network_t'] > PARSIMONY_T or stats['network_learnt']))
  if unproven:
    candidates = [c for c in candidates if c[1] == 0.0]
  best, stats['tried'] = _pick_filter(candidates, val, leads[-1],
                                      without if unproven else left[-1], predictions[-1],
                                      WHITENED_CHECK)
  if unproven and best is None and linear is not None:  # the linear path alone, as it was
    entry = dict(linear.summary(), gain=0.0, validation_residual_nr_db=0.0, validation_t=0.0)
    best = (entry, linear, 0.0)  # gain 0 on the model (network and path), plus the path
  if best is not None and best[2] == 0.0:  # without the network the model is one filter
    entry, fir, _ = best
    if _same_shape(fir, linear) and 'regularized' in (linear_stats or {}):
      entry = dict(entry, regularized=linear_stats['regularized'], prior=linear_stats['prior'],
                   pole_zero=linear_stats.get('pole_zero'))
      fir = linear if entry['regularized'] or entry['pole_zero'] else fir  # as the path's own
      # test decided
    else:
      fir, entry = _regularized_unless_worse(fir, entry, split.train, val, leads[-1],
                                             WHITENED_CHECK)
    best = (dict(entry, refit_with_validation=True),
            refit_with_validation(split, fir, entry['n_taps'], segment,
                                  entry.get('regularized', False), entry.get('pole_zero')), 0.0)
  chosen = best[0] if best else max(stats['tried'], key=lambda e: e['validation_t'])
  fir, gain = (best[1], best[2]) if best else candidates[stats['tried'].index(chosen)][:2]
  stats.update(chosen, kept=best is not None)
  stats['train_residual_nr_db'] = _removed_db(
      [dataclasses.replace(r, target=l) for r, l in zip(records[:-1], left[:-1])],
      [dataclasses.replace(r, target=r.target - (gain * y + fir.predict(r.witnesses)))
       for r, y in zip(records[:-1], predictions[:-1])])
  stats['fit_s'] = time.perf_counter() - t0
  stats['network_dropped'] = bool(stats['kept'] and gain == 0.0)
  if stats['network_dropped']:
    logging.warning('the recurrent model is dropped: on the validation stretch it removes '
                    '%.4f dB of what %s leaves (%.2f standard errors over %d blocks; must be '
                    '> %g, or > 0 with validation improving after its first check, which it '
                    '%s): it learnt what the witnesses do not explain, or too little to show. '
                    'What is kept: a Wiener FIR of %d taps per witness%s', stats['network_db'],
                    'nothing' if linear is None else 'the linear path', stats['network_t'],
                    VALIDATION_BLOCKS, PARSIMONY_T,
                    'did' if stats['network_learnt'] else 'did not', stats['n_taps'],
                    _products_text(stats))
  if not stats['kept']:
    logging.info('residual FIR dropped: at best (%d taps%s, gain %.3f on the prediction) it '
                 'removes %.4f dB of the validation residual, %.2f standard errors over %d '
                 'blocks (must be > %g), and %.4f dB of the training residual', stats['n_taps'],
                 _products_text(stats), gain, stats['validation_residual_nr_db'],
                 stats['validation_t'], VALIDATION_BLOCKS, MIN_T, stats['train_residual_nr_db'])
    return trained, stats
  logging.info('residual FIR kept: a Wiener FIR of %d taps per witness%s (of %s tried), with '
               'the gain %.3f on the trained model, removes %.3f dB of the validation residual '
               '(%.1f standard errors over %d blocks) and %.3f dB of the training residual '
               '(%.1f s)', stats['n_taps'], _products_text(stats), lengths, gain,
               stats['validation_residual_nr_db'], stats['validation_t'], VALIDATION_BLOCKS,
               stats['train_residual_nr_db'], stats['fit_s'])
  return _scaled(trained, gain, fir), stats


def refit_with_validation(split: Split, fir: baselines.WienerFIR, n_taps: int,
                          segment: int = 1 << 14, regularized: bool = False,
                          pole_zero: Optional[dict] = None) -> baselines.WienerFIR:
  """A filter of ``n_taps`` over ``fir``'s inputs (products included, and only the columns it
  uses) fitted on the training and the validation records, with ``fir``'s normalizer (for
  ``plus``); ``regularized``: under its prior (``baselines.regularized``, hyperparameters
  fitted again); ``pole_zero`` (``baselines.pole_zero``'s info): as a rational filter of that
  order and numerator over the same inputs (the others' responses kept). Once validation has
  chosen a filter's length and inputs, its samples serve the fit too, as the Wiener baseline
  is refitted on all of its data: a tenth more samples, a tenth less of the weights'
  estimation noise."""
  records = list(split.train) + [split.validation]
  if pole_zero:
    found = baselines.pole_zero(fir, records, pole_zero['order'], pole_zero['n_zeros'], n_taps,
                                segment, fir_columns=pole_zero.get('fir_columns', ()))
    if found is not None:
      # The iterations, started again on more samples, can settle elsewhere: a refit that
      # leaves more of the very records it was fitted on than ``fir`` (judged as checks are)
      # is no refit (test ``ligo_like/100``, 4 poles kept unproven: 20.0 dB on the later
      # file, 3.0 refitted).
      before = [np.asarray(r.target, np.float64) - predict_stretch(fir, r) for r in records]
      after = [np.asarray(r.target, np.float64) - predict_stretch(found[0], r)
               for r in records]
      judged = _judged_as(np.concatenate(before), WHITENED_CHECK)
      power = lambda xs: sum(float(np.var(judged(x))) * len(x) for x in xs)
      more_db = 10 * np.log10(power(after) / max(power(before), eval_lib.TINY))
      if more_db <= 0.0:
        return found[0]
      logging.warning('the rational refit on the training and validation records leaves %.3f '
                      'dB more of them than the filter validation chose: that filter is kept',
                      more_db)
      return fir
  found = baselines.regularized(fir, records, segment) if regularized else None
  if found is not None:
    return found[0]
  if fir.products is not None:
    records = [fir.products.widened(r) for r in records]
  [[(new, _)]] = baselines.WienerFIR.fit_beside_sets(
      records, None, [n_taps], [fir.inputs_used()], input_norm=fir.input_norm, segment=segment)
  return dataclasses.replace(new, products=fir.products)


def _regularized_unless_worse(fir: baselines.WienerFIR, entry: dict, records, validation,
                              lead, whitened: bool = False
                              ) -> tuple[baselines.WienerFIR, dict]:
  """``fir`` refitted on ``records`` under ``baselines.regularized``'s prior, unless the
  validation stretch (``fir``'s target there) shows the least-squares filter better by
  ``PARSIMONY_T`` standard errors over its blocks and ``PARSIMONY_DROP`` of its variance: the
  prior spends fewer effective weights, which validation can hardly resolve and new data
  rewards (the rule by which fewer weights win in ``_pick_filter``; ``whitened``: as there)."""
  found = baselines.regularized(fir, records) if PRIOR_FIT else None
  if found is None:
    return fir, entry
  prior_fir, info = found
  target = np.asarray(validation.target, np.float64)
  plain = target - predict_stretch(fir, validation, lead)
  prior = target - predict_stretch(prior_fir, validation, lead)
  judged = _judged_as(plain, whitened)
  worse = _clearly_below(judged(plain), judged(prior))
  as_rec = lambda v: [dataclasses.replace(validation, target=v)]
  prior_db = _removed_db(as_rec(target), as_rec(prior))
  entry = dict(entry, regularized=not worse, prior=info,
               least_squares_validation_nr_db=entry['validation_residual_nr_db'])
  if not worse:
    entry['validation_residual_nr_db'] = prior_db
  logging.info('filter of %d taps over %d inputs: %s (decay times %s ms); validation %.3f dB '
               'with the prior, %.3f dB by least squares', fir.n_taps, len(fir.inputs_used()),
               'refitted under a decaying-response prior' if not worse
               else 'kept as least squares', [round(1e3 * t, 2) for t in info['tau_s']],
               prior_db, _removed_db(as_rec(target), as_rec(plain)))
  return (fir if worse else prior_fir), entry


def _scaled(trained: TrainedModel, gain: float, fir: baselines.WienerFIR) -> TrainedModel:
  """The model predicting ``gain * trained's prediction + fir``: the output layer's weights
  and any linear path scaled by ``gain``, the filters summed into one."""
  if gain == 1.0:
    params = trained.params
  else:
    params = dict(trained.params)
    params['out'] = jax.tree.map(lambda w: w * np.asarray(gain, w.dtype), params['out'])
    # gain * (offset + scale z) = offset + scale (gain z) + (gain - 1) offset
    offset = float(np.asarray(trained.target_norm.offset, np.float64).reshape(-1)[0])
    fir = dataclasses.replace(fir, bias=fir.bias + (gain - 1.0) * offset)
  linear = fir
  if trained.linear is not None:
    old = trained.linear
    linear = dataclasses.replace(old, weights=gain * np.asarray(old.weights),
                                 bias=gain * old.bias).plus(fir)
  return dataclasses.replace(trained, params=params, linear=linear)


def train(config: Config, split: Split, checkpoint_dir: Optional[str] = None
          ) -> tuple[TrainedModel, dict]:
  """Fits normalizers on the training records, trains, returns the model and train stats.

  With ``checkpoint_dir`` and ``config.checkpoint_every > 0`` the full training state is
  written there every ``checkpoint_every`` updates and at the end; ``config.resume`` continues
  from the newest checkpoint and ends with the same parameters as an uninterrupted run.
  """
  check_layout(config)
  stretches = None
  if in_blocks(split):
    # Read in blocks: the filters are fitted, and the start checks look, on a sample of the
    # training part held in memory; the normalizers and the updates see all of it.
    stretches = split.train
    split = split._replace(train=blockdata.fit_sample(stretches))
  segment = 1 << 14 if stretches is None else blockdata.LAG_SEGMENT  # lag_sums' memory
  given_split = split  # the targets as recorded, for the residual FIR at the end
  linear = linear_stats = None
  placement = parallel.Placement.for_streams(config.num_devices, config.n_streams)
  # Judged first, so data too short to train on is named before any fit uses it.
  n_streams = data_lib.streams_that_fit([len(r) for r in stretches or split.train],
                                        config.n_streams, config.chunk_len, placement.n_devices)
  first = split.train[0]
  linear_lengths = filter_lengths(config.linear_taps, first.fs, first.witnesses.shape[1])
  if linear_lengths:
    split, linear, linear_stats = fit_linear_path(split, linear_lengths, config.linear_products,
                                                  segment)
  if n_streams < config.n_streams:
    logging.warning('the training data holds only %d chunks of %d samples: training %d parallel '
                    'streams instead of %d', n_streams, config.chunk_len, n_streams,
                    config.n_streams)
    config = config.replace(n_streams=n_streams)
  n_inputs = split.train[0].witnesses.shape[1]
  if stretches is None:
    all_wit = np.concatenate([r.witnesses for r in split.train])
    all_tgt = np.concatenate([r.target for r in split.train])
    input_norm = data_lib.Normalizer.fit(all_wit, config.input_scaling, 'witness channel')
    target_norm = data_lib.Normalizer.fit(all_tgt, config.target_scaling, 'target channel')
    del all_wit, all_tgt
  else:
    blockdata.release_memory()  # the filters' temporaries
    input_norm, target_norm = blockdata.fit_normalizers(
        stretches, linear, config.input_scaling, config.target_scaling)
  records = [np.concatenate([input_norm.apply(r.witnesses), target_norm.apply(r.target[:, None])],
                            axis=1) for r in split.train]
  feeder = streams = None
  if stretches is None:
    streams = data_lib.make_streams(records, config.n_streams, config.chunk_len)
    x_chunks, y_chunks = placement.streams((streams[..., :n_inputs], streams[..., n_inputs:]),
                                           1)
    n_chunks = streams.shape[0]
    chunk = lambda k: (x_chunks, y_chunks, k)
  else:  # chunk k of every stream, read when the loop reaches it
    feeder = blockdata.ChunkFeeder(stretches, config.n_streams, config.chunk_len, input_norm,
                                   target_norm, linear)
    n_chunks = feeder.n_chunks
    chunk = lambda k: (*placement.streams(tuple(a[None] for a in feeder(k)), 1), 0)
    x_chunks, y_chunks, _ = chunk(0)

  model = build_model(config)
  optimizer = make_optimizer(config)
  key = jax.random.key(config.seed)
  carry0 = model.initialize_carry(config.n_streams)
  params = model.init(key, carry0, x_chunks[0, :, :config.bptt_len])['params']
  state = TrainState(params, optimizer.init(params), carry0, jnp.zeros((), jnp.int32),
                     jax.tree.map(jnp.copy, params) if config.ema_decay > 0 else None)
  params0 = _host_copy(params)  # the first step donates the device buffers
  validate = None
  if split.validation is not None and len(split.validation) > 0:
    validate = make_validator(model, split.validation, input_norm, target_norm,
                              config.eval_chunk_len, split.validation_lead,
                              piece=0 if stretches is None else config.eval_chunk_len)
  # The plateau schedule needs validation to follow; without it, a cosine decay.
  plateau = config.schedule == 'plateau' and validate is not None
  lr_plan = learning_rates(config if plateau or config.schedule != 'plateau'
                           else config.replace(schedule='cosine'))
  # The sensing check needs the target as recorded: a copy only where a linear path changed it.
  recorded = None if linear is None else [
      np.concatenate([r.witnesses, r.target[:, None]], axis=1) for r in given_split.train]
  findings = doctor.diagnose_start(
      config, params0, records, streams, n_inputs, lr_plan, split.train[0].witness_names,
      split.train[0].fs, recorded, n_chunks=n_chunks,
      n_samples=None if stretches is None else sum(len(r) for r in stretches))
  doctor.log_findings(findings, 'start')
  del recorded
  if stretches is not None:
    del records
  # Everything besides the state that an exact continuation needs, or must agree with. The data
  # position is the step: chunk k = step % n_chunks of a layout fixed by the config.
  meta = {'config': config.to_dict(), 'n_chunks': int(n_chunks),
          'input_norm': input_norm.to_dict(), 'target_norm': target_norm.to_dict(),
          'rng_key_data': np.asarray(jax.random.key_data(key)).tolist()}
  meta = json.loads(json.dumps(meta))  # the form it takes after a round trip through a file
  # The parameters of the update kept so far (_becomes_kept); checkpoints hold them with the state.
  best_params, val_history = params0, []
  start_step, losses = 0, []
  if checkpoint_dir and (config.checkpoint_every > 0 or config.resume):
    (state, best_params), start_step, restored_meta = _restore_or_clear(
        checkpoint_dir, config, (state, best_params), meta)
    losses = [np.float32(v) for v in restored_meta.get('losses', [])]
    val_history = [tuple(v) for v in restored_meta.get('val_history', [])]
  else:
    checkpoint_dir = None
  state = TrainState(placement.replicated(state.params), placement.replicated(state.opt_state),
                     placement.streams(state.carry, 0), placement.replicated(state.step),
                     placement.replicated(state.average))
  objective = losses_lib.loss_from_config(config, split.train[0].fs)
  train_step = make_train_step(model, optimizer, config.bptt_len, return_grad_norm=True,
                               objective=objective,
                               batch_size=config.n_streams // placement.n_devices,
                               ema_decay=config.ema_decay)

  logging.info('training on %s: %d streams x %d chunks of %d samples, %s %d updates, %d '
               'device(s)', split.source, config.n_streams, n_chunks, config.chunk_len,
               'until validation stops improving, at most' if plateau else '', config.num_steps,
               placement.n_devices)
  logging.info('time loop: %s', recurrent.describe_loops(
      model.get_cell(), model.lstm_sizes, x_chunks.shape[-1] + model.input_products,
      config.n_streams // placement.n_devices, model.scan, training=True))
  t0 = time.perf_counter()
  compiled = train_step.lower(state, x_chunks, y_chunks, 0, np.float32(0)).compile()
  compile_s = time.perf_counter() - t0
  logging.info('train step compiled in %.2f s', compile_s)

  t_start = t_last = time.perf_counter()
  step_last = start_step
  pending = None  # the previous step's (step, loss, grad norm), checked once the next is queued
  drops, stop = plateau_level(val_history, config) if plateau else (0, False)
  step = start_step - 1
  for step in range(start_step, start_step if stop else config.num_steps):
    k = step % n_chunks
    if k == 0 and step > 0 and config.reset_carry_each_epoch:
      # A new pass starts each stream from its beginning: the old state does not belong there.
      state = state._replace(carry=placement.streams(model.initialize_carry(config.n_streams), 0))
    lr = np.float32(lr_plan[step] * config.plateau_factor ** drops)
    state, loss, grad_norm = compiled(state, *chunk(k), lr)
    if pending:
      _check_finite(*pending, checkpoint_dir)
    pending = (step + 1, loss, grad_norm)
    losses.append(loss)
    if validate is not None and ((step + 1) % config.val_every == 0
                                 or step + 1 == config.num_steps):
      params_now = _host_copy(state.kept())
      val = float(validate(params_now))
      if _becomes_kept(val, val_history, config.val_tolerance):
        best_params = params_now
      val_history.append((step + 1, val))
      if plateau:
        was = drops
        drops, stop = plateau_level(val_history, config)
        if stop:
          logging.info('validation stopped improving at the lowest learning rate: training ends '
                       'at update %d', step + 1)
        elif drops > was:
          logging.info('validation stopped improving: learning rate x%g from update %d',
                       config.plateau_factor ** drops, step + 1)
    last = stop or step + 1 == config.num_steps
    if checkpoint_dir and (last or (
        config.checkpoint_every > 0 and (step + 1) % config.checkpoint_every == 0)):
      _check_finite(*pending, checkpoint_dir)  # never save a state that is already broken
      losses = [np.float32(v) for v in jax.device_get(losses)]
      ckpt_lib.save(checkpoint_dir, (state, best_params), step + 1,
                    dict(meta, losses=[float(v) for v in losses],
                         val_history=[list(v) for v in val_history]))
    if time.perf_counter() - t_last > config.log_every_seconds or last:
      _check_finite(*pending, checkpoint_dir)
      _log_progress(step + 1, config.num_steps, float(loss), t_start, t_last, step_last)
      t_last, step_last = time.perf_counter(), step + 1
    if stop:
      break
  if pending:
    _check_finite(*pending, checkpoint_dir)
  jax.block_until_ready(state.params)
  train_s = time.perf_counter() - t_start
  steps_done = step + 1
  steps_run = steps_done - start_step
  losses = np.asarray(jax.device_get(losses), np.float64)
  params, validation = _kept_params(_host_copy(state.kept()), best_params, val_history, config,
                                    split.validation)
  stats = {
      'compile_s': compile_s,
      'train_s': train_s,
      'steps_per_s': steps_run / max(train_s, 1e-9),
      'samples_per_s': steps_run * config.n_streams * config.chunk_len / max(train_s, 1e-9),
      'num_steps': steps_done,
      'max_steps': config.num_steps,
      'stopped_early': steps_done < config.num_steps,
      'lr_drops': int(drops),
      'resumed_at_step': start_step,
      'epochs': steps_done / n_chunks,
      'loss_first': float(losses[: max(1, len(losses) // 20)].mean()),
      'loss_last': float(losses[-max(1, len(losses) // 20):].mean()),
      'weight_change': doctor.relative_change(params0, params),
      'validation': validation,
      'linear': linear_stats,
      'doctor_start': findings,
  }
  trained = TrainedModel(config, params, input_norm, target_norm, n_inputs, linear)
  if stretches is not None:  # the training programs and data are done with
    del compiled, train_step, x_chunks, y_chunks, chunk, feeder, validate, state
    jax.clear_caches()
    blockdata.release_memory()
  lengths = filter_lengths(config.residual_taps, split.train[0].fs, n_inputs)
  if lengths:
    trained, stats['residual_fir'] = fit_residual_path(trained, given_split, lengths, segment,
                                                       linear_stats, validation)
  return trained, stats


# Read in blocks, the time-domain and ASD plots show the held-out stretch's first this many
# samples (the figures of merit and their plots are over all of it).
PLOT_SAMPLES = 1 << 18


def _band(config: Config):
  return (config.band_lo, config.band_hi) if config.band_hi > 0 else None


def train_and_evaluate(config: Config, workdir: Optional[str] = None) -> dict:
  """Trains on ``config``'s data, evaluates on the held-out stretch, writes ``workdir``.

  ``workdir`` receives ``metrics.json``, the PNG plots and ``model/`` (params, normalizers,
  config) for ``experiments/clean.py``. Returns the metrics.
  """
  t_wall = time.perf_counter()
  doctor.validate_config(config)  # before any data is made or loaded
  parallel.initialize_distributed(config.coordinator_address, config.num_processes,
                                  config.process_id)
  logging.info('JAX %s, process %d of %d, devices %s', jax.__version__, jax.process_index(),
               jax.process_count(), jax.devices())
  if jax.process_count() > 1 and (config.checkpoint_every > 0 or config.resume):
    raise data_lib.DataError('--checkpoint_every/--resume are single-process only for now')
  if jax.process_index() > 0:
    workdir = None  # process 0 writes the results
  if (config.checkpoint_every > 0 or config.resume) and not workdir:
    raise data_lib.DataError('--checkpoint_every and --resume need --workdir (checkpoints are '
                             'kept in WORKDIR/checkpoints)')
  split = load_split(config)
  subtracted = bandlimit.subtracted_band(config)  # where the prediction is subtracted
  if subtracted is not None:  # a band its band-pass cannot hold: named now, before training
    bandlimit.design(subtracted, split.train[0].fs)
  trained, stats = train(config, split,
                         os.path.join(workdir, 'checkpoints') if workdir else None)
  metrics = {'train': stats, 'data': split.source,
             'heldout_seconds': len(split.heldout) / split.heldout.fs,
             'heldout_lead_in_seconds': split.heldout_lead_in_seconds(),
             'train_seconds_of_data': sum(len(r) for r in split.train) / split.train[0].fs}
  # Training fit on a stretch of the first record, to compare with the held-out one.
  first = split.train[0]
  fit = first.slice(0, min(len(first), len(split.heldout)))
  if in_blocks(split):  # streamed: the held-out stretch is never whole in memory
    metrics['read_in_blocks'] = {
        'validation_seconds': (0 if split.validation is None
                               else len(split.validation) / split.validation.fs),
        'fit_sample_seconds': min(blockdata.FIT_SAMPLES, sum(len(r) for r in split.train)) /
                              split.train[0].fs}
    evaluation, shown = blockdata.evaluate_stretch(trained, split.heldout, split.heldout_lead,
                                                   _band(config), PLOT_SAMPLES, subtracted)
    metrics['heldout'] = evaluation.result()
    psds = evaluation.psds()
    metrics['train_fit'] = blockdata.evaluate_stretch(trained, fit, None, _band(config), 0,
                                                      subtracted)[0].result()
  else:
    limit = lambda y: bandlimit.apply(y, subtracted, first.fs)
    prediction = limit(predict_stretch(trained, split.heldout, split.heldout_lead))
    metrics['heldout'] = eval_lib.evaluate(split.heldout, prediction, _band(config))
    metrics['train_fit'] = eval_lib.evaluate(fit, limit(trained.predict(fit.witnesses)),
                                             _band(config))
    shown = (split.heldout, prediction)
    psds = gw.psds(split.heldout, prediction)
  metrics['gw'] = gw.figures_of_merit(*psds, metrics['heldout']['band_hz'], gw.is_strain(
      split.heldout.target_unit, split.heldout.target_name, config.target_strain))
  end_findings = doctor.diagnose_end(metrics['train_fit'], metrics['heldout'],
                                     stats['weight_change'], config, stats['validation'],
                                     stats.get('residual_fir'))
  doctor.log_findings(stats['doctor_start'], 'start')  # again, next to the outcome
  doctor.log_findings(end_findings, 'end')
  metrics['doctor'] = ([dict(f, stage='start') for f in stats.pop('doctor_start')] +
                       [dict(f, stage='end') for f in end_findings])
  metrics['wall_s'] = time.perf_counter() - t_wall
  h = metrics['heldout']
  logging.info('held out: NR %.2f dB (vs %s), band NR %.2f dB, ASD ratio %.4f, R2 %.4f',
               h['nr_db'], h['nr_reference'], h['band_nr_db'], h['asd_ratio_band_mean'], h['r2'])
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    trained.save(os.path.join(workdir, 'model'))
    channels.ModelInputs.of(split.train[0]).save(os.path.join(workdir, 'model'))
    metrics['plots'] = eval_lib.plot(*shown, workdir, band=_band(config))
    metrics['plots'] += gw.plot_figures(*psds, metrics['heldout']['band_hz'], workdir,
                                        'bns_range_mpc' in metrics['gw'])
    metrics['config'] = config.to_dict()
    with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
      json.dump(metrics, f, indent=1)
    logging.info('wrote %s', os.path.join(workdir, 'metrics.json'))
  return metrics
