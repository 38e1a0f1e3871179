"""The doctor: checks a training run for the mistakes that make an LSTM regression fail quietly.

Each check is a pure function of numbers the run already has and returns a list of findings,
``{'check', 'severity', 'message'}``; the message says what is wrong and what to change.
``diagnose_start`` runs before the first update (config, data as the model sees it, initial
parameters), ``diagnose_end`` after training (fit on training and held-out data, how far the
weights moved). ``lstm_jax.train`` prints both through absl logging and stores them under
``metrics.json["doctor"]``.

The thresholds come from how the pieces work, not from one run:

* ``lr_budget``: Adam's step on a weight is about the learning rate (|m / sqrt(v)| <= ~1), so
  the sum of the schedule over the planned steps bounds how far any weight can travel; below
  ``LR_BUDGET_MIN`` (10%) of the typical initial weight, training cannot change the function.
* ``updates``: Adam's second-moment average spans ``1 / (1 - b2)`` steps (1000 for b2 = 0.999);
  a run shorter than that ends while the optimizer is still calibrating its step sizes.
* ``scaling``: LSTM gates and tanh saturate beyond |z| ~ 3 with fan-in-scaled weights, so an
  input channel should have std in [1/3, 3] and |mean| <= 1 as the model sees it; the target
  must be reachable by the output layer: its weights move at most ``sum(lr)`` each, so a linear
  output over ``fan_in`` units of O(1) reaches at most ~``1 + sum(lr) (fan_in + 1)``.
* ``output_activation``: a (leaky) ReLU or tanh output cannot produce the target values outside
  its range; more than 1% of them is a systematic error.
* ``data_size``: fewer than ``MIN_SAMPLES_PER_PARAM`` (10) independent target values per
  parameter lets the model memorize (the usual rule of thumb for regression).
* ``weights_moved``: a relative change of the weights below ``MIN_WEIGHT_CHANGE`` (5%) leaves
  the function close to the random initialization.
* ``prediction_collapse``: on training data, prediction std below 10% of the target's, or
  R^2 below 0.05 (the model explains nothing it was trained on).
* ``memorization``: training R^2 above held-out R^2 by more than 0.1 and held-out residual
  variance more than 1.5x the training one.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import data as data_lib
from lstm_jax import losses as losses_lib
from lstm_jax import volterra
from lstm_jax.model import HEAD_ACTIVATIONS

LR_BUDGET_MIN = 0.1
MIN_SAMPLES_PER_PARAM = 10.0
MIN_WEIGHT_CHANGE = 0.05
INPUT_STD_RANGE = (1.0 / 3.0, 3.0)
MAX_ABS_MEAN = 1.0
OUT_OF_RANGE_MAX = 0.01
COLLAPSE_STD_RATIO = 0.1
COLLAPSE_R2 = 0.05
MEMORIZATION_GAP = 0.1
MEMORIZATION_RESIDUAL_RATIO = 1.5

# Most likely root causes first: what is printed first is what to fix first.
ORDER = ('lr_budget', 'updates', 'output_activation', 'scaling', 'data_size', 'state_reset',
         'stream_alignment', 'weights_moved', 'prediction_collapse', 'memorization',
         'validation_rose', 'linear_left', 'witness_senses_target')
SEVERITIES = ('warning', 'info')


def finding(check: str, severity: str, message: str) -> dict:
  assert severity in SEVERITIES, severity
  return {'check': check, 'severity': severity, 'message': message}


def sort_findings(findings: Sequence[dict]) -> list[dict]:
  """Warnings before infos; within each, likely root causes (``ORDER``) first."""
  rank = {name: k for k, name in enumerate(ORDER)}
  return sorted(findings, key=lambda f: (SEVERITIES.index(f['severity']),
                                         rank.get(f['check'], len(ORDER))))


def log_findings(findings: Sequence[dict], stage: str) -> None:
  if not findings:
    logging.info('doctor (%s): no findings', stage)
  for f in findings:
    log = logging.warning if f['severity'] == 'warning' else logging.info
    log('doctor (%s) %s [%s]: %s', stage, f['severity'].upper(), f['check'], f['message'])


# --------------------------------------------------------------------------- helpers

def count_params(params) -> int:
  return int(sum(np.size(p) for p in jax.tree_util.tree_leaves(params)))


def weight_scale(params) -> float:
  """RMS of the initial weight matrices (biases, which start at 0 or 1, excluded)."""
  mats = [np.asarray(p, np.float64).ravel() for p in jax.tree_util.tree_leaves(params)
          if np.ndim(p) >= 2]
  if not mats:
    return 1.0
  return float(np.sqrt(np.mean(np.square(np.concatenate(mats)))))


def schedule_values(schedule: Callable, num_steps: int) -> np.ndarray:
  """The learning rate at each planned step (vectorized over the step count)."""
  steps = jnp.arange(max(int(num_steps), 0), dtype=jnp.int32)
  return np.asarray(jnp.broadcast_to(schedule(steps), steps.shape), np.float64)


def _fmt(v: float) -> str:
  return f'{v:.3g}'


# --------------------------------------------------------------------------- start checks

def check_lr_budget(lr_per_step: np.ndarray, params, decay: float = 0.0) -> list[dict]:
  """Sum of the learning rate over all planned steps vs the scale of the initial weights."""
  lr = np.asarray(lr_per_step, np.float64)
  if lr.size == 0:
    return []
  total = float(lr.sum())
  scale = weight_scale(params)
  if total >= LR_BUDGET_MIN * scale:
    return []
  detail = ''
  if lr[0] > 0 and lr[-1] < 0.5 * lr[0]:
    detail = (f'; the schedule decays from {_fmt(lr[0])} to {_fmt(lr[-1])} '
              f'(1/{lr[0] / max(lr[-1], 1e-30):.0f} of its start'
              + (f', decay={decay:g}' if decay else '') + ')')
  return [finding(
      'lr_budget', 'warning',
      f'the learning rate summed over the {lr.size} planned steps is {_fmt(total)}: Adam moves '
      f'each weight by about the learning rate per step, so no weight can travel more than '
      f'{_fmt(total)}, {100 * total / scale:.1f}% of the typical initial weight {_fmt(scale)}'
      f'{detail}. The weights stay near their random start. Change: drop the decay '
      '(decay=0, schedule=cosine), raise learning_rate (1e-3 to 3e-3 is usual for Adam) and/or '
      f'num_steps until the sum exceeds {LR_BUDGET_MIN:g} x {_fmt(scale)}.')]


_CHANGE_UPDATES = ('raise num_steps, or make more, smaller updates per pass (shorter chunk_len, '
                   'more n_streams)')


def check_updates(num_steps: int, adam_b2: float, steps_per_epoch: Optional[int] = None,
                  change: str = _CHANGE_UPDATES) -> list[dict]:
  """Fewer updates than Adam's second-moment horizon ``1 / (1 - b2)``."""
  horizon = 1.0 / max(1.0 - adam_b2, 1e-12)
  if num_steps >= horizon:
    return []
  per_epoch = (f' ({steps_per_epoch} per pass over the data, {num_steps / steps_per_epoch:.0f} '
               'passes)' if steps_per_epoch else '')
  return [finding(
      'updates', 'warning',
      f'only {num_steps} parameter updates{per_epoch}: fewer than the {horizon:.0f} steps '
      f'over which Adam (b2={adam_b2:g}) averages its gradient scale, and far fewer than the '
      f'thousands an LSTM regression needs. Change: {change}.')]


def _stats(x_TxC: np.ndarray):
  x = np.asarray(x_TxC, np.float64)
  if x.ndim == 1:
    x = x[:, None]
  return x.mean(0), x.std(0)


def check_scaling(x_scaled_TxC, y_scaled_T, input_scaling: str = 'standardize',
                  target_scaling: str = 'standardize', lr_sum: Optional[float] = None,
                  output_fan_in: Optional[int] = None, input_names: str = 'witness channel',
                  change_inputs: str = 'input_scaling=standardize (mean 0, std 1 fitted on the '
                  'training data)', change_target: str = 'target_scaling=standardize (predict in '
                  'standard units, invert afterwards)') -> list[dict]:
  """Inputs and target as the model sees them (after the run's scaling)."""
  out = []
  mean, std = _stats(x_scaled_TxC)
  bad = [c for c in range(len(mean))
         if not INPUT_STD_RANGE[0] <= std[c] <= INPUT_STD_RANGE[1] or abs(mean[c]) > MAX_ABS_MEAN]
  if bad:
    listed = ', '.join(f'{input_names} {c}: mean {_fmt(mean[c])}, std {_fmt(std[c])}'
                       for c in bad[:4])
    more = f' (and {len(bad) - 4} more)' if len(bad) > 4 else ''
    out.append(finding(
        'scaling', 'warning',
        f'inputs are not standardized (input_scaling={input_scaling!r}); as the model sees '
        f'them, {listed}{more}. LSTM gates saturate for |input| >> 1 and inputs far from '
        f'zero mean act as a fixed bias. Change: {change_inputs}.'))
  elif input_scaling != 'standardize':
    out.append(finding(
        'scaling', 'info',
        f'inputs are not standardized (input_scaling={input_scaling!r}), but happen to have '
        f'|mean| <= {_fmt(float(np.max(np.abs(mean))))} and std in [{_fmt(float(std.min()))}, '
        f'{_fmt(float(std.max()))}]; input_scaling=standardize is safer.'))
  (y_mean,), (y_std,) = _stats(y_scaled_T)
  reach = None
  if lr_sum is not None and output_fan_in:
    reach = 1.0 + lr_sum * (output_fan_in + 1)
  if reach is not None and abs(y_mean) + y_std > reach:
    out.append(finding(
        'scaling', 'warning',
        f'the target is not standardized (target_scaling={target_scaling!r}): as the model sees '
        f'it, mean {_fmt(y_mean)}, std {_fmt(y_std)}, but the output layer ({output_fan_in} '
        f'inputs) can move each weight by at most {_fmt(lr_sum)} over the run and so reach '
        f'about {_fmt(reach)}: the prediction will stay near a constant. Change: '
        f'{change_target}.'))
  elif not INPUT_STD_RANGE[0] <= y_std <= INPUT_STD_RANGE[1] or abs(y_mean) > MAX_ABS_MEAN:
    out.append(finding(
        'scaling', 'warning',
        f'the target is not standardized (target_scaling={target_scaling!r}): as the model sees '
        f'it, mean {_fmt(y_mean)}, std {_fmt(y_std)}; the loss and gradient scales are off by '
        f'{_fmt(max(y_std, abs(y_mean), 1e-30))}x and the output must grow large weights. '
        f'Change: {change_target}.'))
  elif target_scaling != 'standardize':
    out.append(finding(
        'scaling', 'info',
        f'the target is not standardized (target_scaling={target_scaling!r}) but happens to '
        f'have mean {_fmt(y_mean)}, std {_fmt(y_std)}: harmless here; target_scaling='
        'standardize is safer for other data.'))
  return out


# Output activations and the (scaled) target values they can produce without huge inputs.
_OUT_OF_RANGE = {
    'relu': (lambda y: y < 0.0, 'below 0 (ReLU outputs 0 there)'),
    'leaky_relu': (lambda y: y < 0.0, 'below 0 (LeakyReLU reaches them only through a '
                   '1/slope = 100x larger pre-activation)'),
    'tanh': (lambda y: np.abs(y) >= 1.0, 'outside (-1, 1)'),
    'gelu': (lambda y: y < -0.17, 'below -0.17 (the minimum of GELU)'),
}


def check_output_activation(output_activation: str, y_scaled_T) -> list[dict]:
  """An output activation whose range does not cover the (scaled) target."""
  if output_activation not in _OUT_OF_RANGE:
    return []
  outside, what = _OUT_OF_RANGE[output_activation]
  frac = float(np.mean(outside(np.asarray(y_scaled_T, np.float64))))
  if frac <= OUT_OF_RANGE_MAX:
    return []
  return [finding(
      'output_activation', 'warning',
      f'output_activation={output_activation!r} cannot produce the target: {100 * frac:.0f}% '
      f'of the target values (as the model sees them) lie {what}. Change: '
      'output_activation=linear for regression on a signed target.')]


def check_data_size(n_independent: int, n_params: int, what: str = 'training target samples',
                    change: str = 'more independent data (more or longer records, '
                    'n_train_records) or a smaller model (lstm_sizes, head_sizes)') -> list[dict]:
  per_param = n_independent / max(n_params, 1)
  if per_param >= MIN_SAMPLES_PER_PARAM:
    return []
  return [finding(
      'data_size', 'warning',
      f'the model has {n_params} parameters but the training data holds {n_independent} '
      f'{what} ({per_param:.2g} per parameter, fewer than {MIN_SAMPLES_PER_PARAM:g}): it can '
      f'memorize instead of generalize. Change: {change}.')]


def check_state_reset(reset_each_epoch: bool, n_chunks: int, num_steps: int) -> list[dict]:
  """A stateful run that never resets the carry when a pass restarts at the records' start."""
  if reset_each_epoch or num_steps <= n_chunks:
    return []
  return [finding(
      'state_reset', 'warning',
      f'the LSTM state is never reset: each stream has {n_chunks} chunks, so after every pass '
      '(epoch) the state left at the END of the data is carried into its BEGINNING, a jump the '
      f'model sees {num_steps // n_chunks - 1} times. Change: reset_carry_each_epoch=true '
      '(Keras: model.reset_states() after each epoch).')]


def check_stream_alignment(streams_NxBxTxD: np.ndarray, records: Sequence[np.ndarray]
                           ) -> list[dict]:
  """Chunk k of stream b must continue chunk k-1 of stream b inside one record.

  Each stream (its chunks in order) must equal a contiguous stretch of one record; otherwise
  the carry passed from chunk to chunk belongs to other data.
  """
  n_chunks, n_streams, chunk_len, _ = streams_NxBxTxD.shape
  length = n_chunks * chunk_len
  bounds = np.cumsum([0] + [len(r) for r in records])
  everything = np.concatenate([np.asarray(r) for r in records])
  bad = []
  # Each stream costs one pass over all records: on very long data, check a few streams.
  n_check = n_streams if everything.size * n_streams <= 2e8 else min(n_streams, 4)
  for b in range(n_check):
    stream = np.asarray(streams_NxBxTxD[:, b]).reshape(length, -1)
    starts = np.flatnonzero(np.all(everything == stream[0], axis=1))
    ok = False
    for s in starts:
      rec = np.searchsorted(bounds, s, side='right') - 1
      if s + length <= bounds[rec + 1] and np.array_equal(everything[s:s + length], stream):
        ok = True
        break
    if not ok:
      bad.append(b)
  if not bad:
    return []
  return [finding(
      'stream_alignment', 'warning',
      f'stateful streams are misaligned: stream(s) {bad[:8]} of {n_streams} are not one '
      'continuous stretch of a record, so the state carried from chunk to chunk belongs to '
      'other data. Change: lay records out with lstm_jax.data.make_streams (chunk k of stream '
      'b continues chunk k-1 of stream b; no shuffling between chunks).')]


TINY = float(np.finfo(np.float64).tiny)
SENSING_MAX_SEGMENTS = 256  # Welch segments the sensing check averages (spread over the data)
SENSING_COHERENCE_FACTOR = 4.0  # median partial coherence over its value for no relation
SENSING_MIN_ACAUSAL = 0.25  # share of the witness-to-target filter at negative lags


def sensing_statistics(records: Sequence[np.ndarray], n_inputs: int,
                       fs: Optional[float] = None) -> list[dict]:
  """Per witness: does it carry the target's own content, or is it a noise source?

  Both kinds are coherent with the target, and from one witness and the target alone they
  cannot be told apart (any 2 x 2 cross-spectral matrix arises either way). Three things differ:

  * *Breadth*: a witness that senses the target (a length-sensing channel) holds a fixed share
    of the target's content at every frequency where that content lives, including the part no
    other witness explains; a noise source is coherent where its coupling adds noise, and a
    line, a resonance or a bilinear coupling is coherent in few bins. The statistic is the
    median over frequency of the *partial* coherence of the witness and the target given every
    other witness (from the inverse of the (C+1) x (C+1) cross-spectral matrix, per bin), so
    what the other witnesses explain does not count, against its median under no relation
    (``1 - 2^(-1 / (K - C))`` for K non-overlapping segments and C - 1 other witnesses).
  * *Causality*: a noise source acts on the target, so the two-sided filter from the witness
    to the target (the multi-input Wiener solution per bin, ``-G_yk / G_yy``) is causal; a
    witness that senses the target responds to it, so that filter is symmetric (the same
    instant) or lies at negative lags (the witness later). The statistic is the share of the
    filter's energy at negative lags among all lags but 0.

  * *Redundancy*: a witness that senses the target sees all of it, so it also holds the noise
    that the *other* witnesses put into the target: it is coherent with the part of the
    target the others explain (their best linear combination), power-weighted over frequency,
    against ``1 / K`` for no relation. A noise source is independent of the others' couplings.
    This tells an instantaneous, frequency-flat coupling of a white witness (causally
    ambiguous) from sensing.

  A witness is flagged where all three hold. A target whose witnessed noise no witness shows
  linearly (a purely bilinear coupling) leaves the redundancy test blind, and the doctor
  silent; experiments/injection.py is the check that always applies.
  ``records`` are the training records as the model sees them, (T_i, C + 1), target last.
  """
  lengths = [len(r) for r in records]
  nperseg = int(2 ** np.floor(np.log2(np.clip(fs or 256, 64, 2048))))
  while nperseg > 64 and sum(n // nperseg for n in lengths) < 4 * (n_inputs + 8):
    nperseg //= 2
  starts = [(k, a) for k, n in enumerate(lengths) for a in range(0, n - nperseg + 1, nperseg)]
  if len(starts) < n_inputs + 8:
    return []  # too few segments to judge C witnesses at once
  pick = np.linspace(0, len(starts) - 1, min(len(starts), SENSING_MAX_SEGMENTS)).astype(int)
  window = np.hanning(nperseg + 1)[:-1]
  dim = n_inputs + 1
  cross = np.zeros((nperseg // 2 + 1, dim, dim), np.complex128)
  for group in np.array_split(pick, max(1, len(pick) // 32)):
    segs = np.stack([np.asarray(records[starts[i][0]][starts[i][1]:starts[i][1] + nperseg],
                                np.float64) for i in group])
    spectra = np.fft.rfft((segs - segs.mean(1, keepdims=True)) * window[:, None], axis=1)
    cross += np.einsum('sfi,sfj->fij', spectra, np.conj(spectra))
  cross = cross[1:-1]  # DC and Nyquist carry no phase
  power = np.real(np.einsum('fii->fi', cross))
  cross = cross + np.eye(dim) * (1e-6 * power.mean(0))  # a channel silent in a bin stays solvable
  inverse = np.linalg.inv(cross)
  y = n_inputs
  g_yy = np.real(inverse[:, y, y])
  n_seg = len(pick)
  null_median = 1.0 - 0.5 ** (1.0 / max(n_seg - n_inputs, 1))
  # What the other witnesses explain of the target, per witness k: the best linear
  # combination of the others (coefficients ``solve(S_mm^T, S_ym)``, with ``inv(S_mm)`` from
  # the inverse of all witnesses' block by a rank-one downdate), and its coherence with k.
  witness_inverse = np.linalg.inv(cross[:, :n_inputs, :n_inputs])
  out = []
  for k in range(n_inputs):
    others = [j for j in range(n_inputs) if j != k]
    a = witness_inverse
    inv_mm = (a[:, others][:, :, others] - a[:, others, k][:, :, None] * a[:, k, others][:, None, :]
              / a[:, k, k][:, None, None])
    coef = np.einsum('fji,fj->fi', inv_mm, cross[:, y, others])  # inv(S_mm)^T S_ym
    s_kp = np.einsum('fj,fj->f', cross[:, k, others], np.conj(coef))
    s_pp = np.real(np.einsum('fi,fij,fj->f', coef, cross[:, others][:, :, others], np.conj(coef)))
    explained = np.abs(s_kp) ** 2 / np.maximum(power[:, k] * s_pp, TINY)
    explained_share = float(np.sum(explained * s_pp) / max(np.sum(s_pp), TINY))
    partial = np.abs(inverse[:, k, y]) ** 2 / np.maximum(np.real(inverse[:, k, k]) * g_yy,
                                                         TINY)
    transfer = np.concatenate([[0.0], -inverse[:, y, k] / g_yy, [0.0]])
    h = np.fft.irfft(transfer, nperseg) ** 2
    after, before = h[1:nperseg // 2].sum(), h[nperseg // 2 + 1:].sum()
    out.append({'median_partial_coherence': float(np.median(partial)),
                'null_median': float(null_median),
                'acausal_share': float(before / max(before + after, TINY)),
                'explained_coherence': explained_share, 'explained_null': 1.0 / n_seg,
                'segments': int(n_seg), 'nperseg': nperseg})
  return out


def check_sensing_witnesses(records: Sequence[np.ndarray], n_inputs: int,
                            witness_names: Optional[Sequence[str]] = None,
                            fs: Optional[float] = None) -> list[dict]:
  """Warns, naming the channel, where a witness carries the target's own content
  (``sensing_statistics``): a model that uses it subtracts astrophysical signals too."""
  out = []
  for k, stats in enumerate(sensing_statistics(records, n_inputs, fs)):
    broad = stats['median_partial_coherence'] > SENSING_COHERENCE_FACTOR * stats['null_median']
    sees_explained = (stats['explained_coherence']
                      > SENSING_COHERENCE_FACTOR * stats['explained_null'])
    if not (broad and sees_explained and stats['acausal_share'] > SENSING_MIN_ACAUSAL):
      continue
    name = witness_names[k] if witness_names else str(k)
    label = f'witness {name}' if witness_names else f'witness channel {k}'
    out.append(finding(
        'witness_senses_target', 'warning',
        f'{label} carries the target\'s own content: its partial coherence with the target, '
        f'given the other witnesses, has median {_fmt(stats["median_partial_coherence"])} over '
        f'frequency ({_fmt(stats["median_partial_coherence"] / stats["null_median"])}x its value '
        f'for no relation), it also holds the target noise the other witnesses explain '
        f'(coherence {_fmt(stats["explained_coherence"])} where that noise lives), and its '
        f'filter to the target is not causal ({100 * stats["acausal_share"]:.0f}% of it '
        'before lag 0): it senses the target '
        'rather than adding noise to it, so a model that uses it subtracts astrophysical '
        'signals as well; check with experiments/injection.py, and drop it with '
        f'--exclude_channels={name}'))
  return out


def output_fan_in(config, n_inputs: int) -> int:
  """Width of the layer that feeds the output Dense of an ``LSTMRegressor``."""
  products = int(getattr(config, 'head_products', 0))
  if config.head_sizes:
    return int(config.head_sizes[-1]) + products
  return int(config.lstm_sizes[-1]) + (n_inputs if config.head_inputs else 0) + products


def diagnose_start(config, params, records: Sequence[np.ndarray], streams_NxBxTxD: np.ndarray,
                   n_inputs: int, lr_per_step: np.ndarray,
                   witness_names: Optional[Sequence[str]] = None,
                   fs: Optional[float] = None,
                   recorded: Optional[Sequence[np.ndarray]] = None,
                   n_chunks: Optional[int] = None, n_samples: Optional[int] = None
                   ) -> list[dict]:
  """Findings before the first update of a noise-regression run.

  Args:
    config: the run's ``Config``.
    params: initial parameters.
    records: training records as the model sees them, each (T_i, n_inputs + 1), target last.
    streams_NxBxTxD: the stream layout actually trained on (``make_streams`` of ``records``).
    n_inputs: number of witness channels.
    lr_per_step: the learning rate at each planned step.
    witness_names: the witnesses' channel names, where the file names them.
    fs: the sampling rate (Hz).
    recorded: the records with the target as recorded, where ``records`` hold what is left
      after a linear path; the sensing check looks at these.
    n_chunks, n_samples: where ``records`` are a sample of data read in blocks
      (``lstm_jax.blockdata``) and ``streams_NxBxTxD`` is None: the chunks per stream and the
      training samples of the whole (the stream layout is then not checked).
  """
  everything = np.concatenate(records)
  x, y = everything[:, :n_inputs], everything[:, n_inputs]
  lr_sum = float(np.sum(lr_per_step))
  if streams_NxBxTxD is not None:
    n_chunks = streams_NxBxTxD.shape[0]
  out = []
  out += check_lr_budget(lr_per_step, params, config.decay)
  out += check_updates(config.num_steps, config.adam_b2, n_chunks)
  out += check_output_activation(config.output_activation, y)
  out += check_scaling(x, y, config.input_scaling, config.target_scaling, lr_sum,
                       output_fan_in(config, n_inputs))
  out += check_data_size(len(everything) if n_samples is None else n_samples,
                         count_params(params))
  out += check_state_reset(config.reset_carry_each_epoch, n_chunks, config.num_steps)
  if streams_NxBxTxD is not None:
    out += check_stream_alignment(streams_NxBxTxD, records)
  out += check_sensing_witnesses(records if recorded is None else recorded, n_inputs,
                                 witness_names, fs)
  return sort_findings(out)


# --------------------------------------------------------------------------- end checks

def relative_change(params_before, params_after) -> float:
  """||w1 - w0|| / ||w0|| over all parameters."""
  before = np.concatenate([np.asarray(p, np.float64).ravel()
                           for p in jax.tree_util.tree_leaves(params_before)])
  after = np.concatenate([np.asarray(p, np.float64).ravel()
                          for p in jax.tree_util.tree_leaves(params_after)])
  return float(np.linalg.norm(after - before) / max(np.linalg.norm(before), 1e-30))


def check_weights_moved(change: float) -> list[dict]:
  if change >= MIN_WEIGHT_CHANGE:
    return []
  return [finding(
      'weights_moved', 'warning',
      f'the weights moved by {100 * change:.2g}% of their initial norm during training: the '
      'model is still essentially its random initialization. Change: a larger learning-rate '
      'budget (learning_rate, num_steps, no decay); see the lr_budget and updates findings.')]


def check_collapse(std_ratio: float, r2: float, where: str = 'training data',
                   plain_psd_ratio: bool = False) -> list[dict]:
  """``plain_psd_ratio``: the loss was the spectral ratio with no PSD floor, a cause of its own."""
  if std_ratio >= COLLAPSE_STD_RATIO and r2 >= COLLAPSE_R2:
    return []
  loss_hint = (' The loss was the plain PSD ratio (loss_psd_floor 0): where the target is quiet '
               'in part of the band (a low-passed channel), predicting nothing can be its best '
               'fit; set --loss_psd_floor=1 or --loss=mse.' if plain_psd_ratio else '')
  return [finding(
      'prediction_collapse', 'warning',
      f'prediction collapse on {where}: the prediction std is {100 * std_ratio:.2g}% of the '
      f"target's and R^2 = {r2:.3f}: the model outputs a near-constant instead of following "
      'the target. Change: standardize inputs and target, use a linear '
      'output, give the optimizer a sufficient learning-rate budget (see the other findings); '
      'if the witnesses truly cannot predict the target, this is the honest answer.'
      + loss_hint)]


def check_memorization(train_r2: float, heldout_r2: float) -> list[dict]:
  gap = train_r2 - heldout_r2
  ratio = (1.0 - heldout_r2) / max(1.0 - train_r2, 1e-12)
  if gap <= MEMORIZATION_GAP or ratio <= MEMORIZATION_RESIDUAL_RATIO:
    return []
  return [finding(
      'memorization', 'warning',
      f'memorization: R^2 is {train_r2:.3f} on training data but {heldout_r2:.3f} held out '
      f'(held-out residual variance {ratio:.2g}x the training one). Change: more independent '
      'training data, a smaller model, fewer steps, or stop at the best held-out score.')]


VALIDATION_ROSE = 0.01  # the last update's validation MSE this much above the kept one's


def check_validation(validation: Optional[dict]) -> list[dict]:
  """The run kept an earlier update because validation MSE rose later (``train`` summary)."""
  if not validation or validation['kept_step'] == validation['last_step']:
    return []
  kept = dict(map(tuple, validation['history']))[validation['kept_step']]
  rise = validation['last_mse'] / max(kept, 1e-30) - 1.0
  severity = 'warning' if rise > VALIDATION_ROSE else 'info'
  return [finding(
      'validation_rose', severity,
      f"validation: MSE {kept:.4g} at update {validation['kept_step']} but "
      f"{validation['last_mse']:.4g} at the last ({validation['last_step']}, {100 * rise:+.1f}%): "
      f"the later updates fit something that does not carry over to new data; the run keeps "
      f"update {validation['kept_step']}. Change: more independent training data, fewer "
      'num_steps or a lower learning_rate.')]


LINEAR_LEFT_DB = 1.0  # validation residual the residual FIR removed that is worth a word
LINEAR_WINS_GAIN = 0.5  # below this gain on the recurrent model, the filter does most of it


def check_residual_fir(residual: Optional[dict]) -> list[dict]:
  """The residual FIR (``train.fit_residual_path``) took up much of what the model left."""
  if not residual or not residual['kept'] or residual['validation_residual_nr_db'] < LINEAR_LEFT_DB:
    return []
  pairs, shapes = residual.get('products') or [], residual.get('shapes') or []
  named = volterra.named_in(residual)
  removed = (f"a Wiener FIR of {residual['n_taps']} taps per witness"
             + (f' and per {named}' if named else '')
             + f" removed {residual['validation_residual_nr_db']:.1f} dB of the validation "
               'residual')
  bilinear = (' The products point to a bilinear coupling (one witness modulating another, or '
              'a square), seen through linear dynamics; channels are numbered as in the '
              'recording.' if pairs else '') + (
      ' A bent witness points to a coupling that saturates or limits it before linear '
      'dynamics.' if shapes else '')
  if residual['gain'] < LINEAR_WINS_GAIN:
    return [finding(
        'linear_left', 'info',
        f"residual FIR: {removed} and keeps the recurrent model's prediction at gain "
        f"{residual['gain']:.3f}: on this recording a filter predicts the target better "
        'than the recurrent model did ' + ('' if pairs or shapes else '(the coupling looks linear)')
        + ', and the prediction is mostly the filter\'s.' + bilinear)]
  return [finding(
      'linear_left', 'info',
      f'residual FIR: {removed} that the recurrent model left (gain {residual["gain"]:.3f} on its '
      'prediction): structure, such as a delay or a resonance, that it only approximated.'
      + bilinear)]


def diagnose_end(train_fit: dict, heldout: dict, weight_change: Optional[float] = None,
                 config=None, validation: Optional[dict] = None,
                 residual_fir: Optional[dict] = None) -> list[dict]:
  """Findings after training, from ``lstm_jax.metrics.evaluate`` dicts of both stretches
  (``config``, when given, names the loss in the collapse finding; ``validation`` is the
  training run's validation summary; ``residual_fir`` the residual FIR's)."""
  out = []
  if weight_change is not None:
    out += check_weights_moved(weight_change)
  plain_ratio = (config is not None and config.loss == 'spectral'
                 and config.loss_psd_floor == 0.0)
  out += check_collapse(train_fit['prediction_std_over_target_std'], train_fit['r2'],
                        plain_psd_ratio=plain_ratio)
  if not out:  # a model that learned nothing cannot have memorized either
    out += check_memorization(train_fit['r2'], heldout['r2'])
  return sort_findings(out + check_validation(validation) + check_residual_fir(residual_fir))


# --------------------------------------------------------------------------- hard errors

def _require(ok: bool, message: str) -> None:
  if not ok:
    raise data_lib.DataError(message)


def validate_config(config) -> None:
  """Flag values that cannot work: one ``DataError`` naming the flag and the bad value."""
  def finite(name):
    v = getattr(config, name)
    _require(isinstance(v, (int, float)) and math.isfinite(v), f'--{name} must be a finite '
             f'number, got {v!r}')
    return v

  for name in ('n_streams', 'chunk_len', 'bptt_len', 'num_steps', 'eval_chunk_len'):
    _require(getattr(config, name) >= 1, f'--{name} must be >= 1, got {getattr(config, name)}')
  _require(finite('learning_rate') > 0, f'--learning_rate must be > 0, got {config.learning_rate}')
  for name in ('decay', 'clip_norm', 'warmup_steps', 'checkpoint_every', 'fs',
               'log_every_seconds', 'resample_to',
               'gps_start', 'gps_end'):
    _require(finite(name) >= 0, f'--{name} must be >= 0, got {getattr(config, name)}')
  for name in ('linear_products', 'residual_products'):
    _require(getattr(config, name) >= 0, f'--{name} must be >= 0, got {getattr(config, name)}')
  _require(config.linear_taps >= -1, '--linear_taps must be >= 0, or -1 for lengths chosen '
           f'on validation, got {config.linear_taps}')
  _require(config.residual_taps >= -1, '--residual_taps must be >= 0, or -1 for lengths chosen '
           f'on validation, got {config.residual_taps}')
  for name in ('adam_b1', 'adam_b2', 'ema_decay'):
    _require(0.0 <= finite(name) < 1.0, f'--{name} must be in [0, 1), got {getattr(config, name)}')
  _require(finite('adam_eps') > 0, f'--adam_eps must be > 0, got {config.adam_eps}')
  _require(len(config.lstm_sizes) >= 1, '--lstm_sizes must name at least one layer, e.g. 32')
  for name in ('lstm_sizes', 'head_sizes'):
    sizes = tuple(getattr(config, name))
    _require(all(s >= 1 for s in sizes), f'--{name} must be positive integers, got '
             f'{",".join(map(str, sizes))}')
  for name in ('input_scaling', 'target_scaling'):
    v = getattr(config, name)
    _require(v in ('standardize', 'minmax', 'none'),
             f"--{name} must be 'standardize', 'minmax' or 'none', got {v!r}")
  _require(config.read_in_blocks in ('auto', 'always', 'never'),
           "--read_in_blocks must be 'auto', 'always' or 'never', got "
           f'{config.read_in_blocks!r}')
  _require(config.schedule in ('plateau', 'constant', 'cosine', 'inverse_time'),
           "--schedule must be 'plateau', 'constant', 'cosine' or 'inverse_time', got "
           f'{config.schedule!r}')
  _require(config.patience >= 1, f'--patience must be >= 1, got {config.patience}')
  _require(0.0 < finite('plateau_factor') < 1.0,
           f'--plateau_factor must be in (0, 1), got {config.plateau_factor}')
  _require(config.plateau_drops >= 0, f'--plateau_drops must be >= 0, got {config.plateau_drops}')
  _require(finite('plateau_min_delta') >= 0,
           f'--plateau_min_delta must be >= 0, got {config.plateau_min_delta}')
  for name in ('head_activation', 'output_activation'):
    v = getattr(config, name)
    _require(v in HEAD_ACTIVATIONS, f'--{name} must be one of {", ".join(HEAD_ACTIVATIONS)}, '
             f'got {v!r}')
  if not config.data:
    for name in ('mock_fs', 'train_record_seconds', 'eval_seconds'):
      _require(finite(name) > 0, f'--{name} must be > 0, got {getattr(config, name)}')
    _require(config.n_train_records >= 1,
             f'--n_train_records must be >= 1, got {config.n_train_records}')
  _require(0.0 <= finite('val_fraction') <= 0.5,
           f'--val_fraction must be in [0, 0.5], got {config.val_fraction}')
  _require(config.val_every >= 1, f'--val_every must be >= 1, got {config.val_every}')
  _require(finite('val_tolerance') >= 0,
           f'--val_tolerance must be >= 0, got {config.val_tolerance}')
  _require(0.0 < finite('holdout_fraction') < 1.0,
           f'--holdout_fraction must be in (0, 1), got {config.holdout_fraction}')
  _require(config.loss in losses_lib.LOSSES,
           f"--loss must be {' or '.join(map(repr, losses_lib.LOSSES))}, got {config.loss!r}")
  _require(0.0 <= finite('loss_weight') <= 1.0,
           f'--loss_weight must be in [0, 1], got {config.loss_weight}')
  for name in ('loss_psd_floor', 'loss_nperseg'):
    _require(finite(name) >= 0, f'--{name} must be >= 0, got {getattr(config, name)}')
  if config.loss == 'spectral':
    segment = losses_lib.segment_length(config)
    _require(4 <= segment <= config.chunk_len,
             f'the spectral loss needs Welch segments of 4 to chunk_len ({config.chunk_len}) '
             f'samples, got {segment}: set --loss_nperseg, a longer --chunk_len, or --loss=mse')
  if config.gps_start and config.gps_end:
    _require(config.gps_start < config.gps_end, f'--gps_start ({config.gps_start}) must be '
             f'below --gps_end ({config.gps_end})')
  if config.band_hi > 0:
    _require(0 <= finite('band_lo') < finite('band_hi'),
             f'--band_lo ({config.band_lo}) must be >= 0 and below --band_hi ({config.band_hi})')
