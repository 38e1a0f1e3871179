"""Seed 003's ramp regression: an LSTM that predicts a constant until the data are standardized.

The task (a blog post): ``x_i = [10 i] * 16`` read as 16 time steps of 1 feature, ``y_i = i``;
train on ``i = 1..2804``, test on ``i = 3000..3099``. The model is Keras' ``LSTM(50,
return_sequences) -> Dropout(0.2) -> LSTM(100) -> Dropout(0.2) -> Dense(1)`` on the last step,
Adam(5e-4), batch 128, 30 epochs, shuffled.

Raw inputs (10..28040) saturate every gate, so the LSTM's output is the same vector for every
example, and a raw target (mean 1400) is out of the reach of an output layer whose weights move
by at most ``steps x lr`` = 0.33: the prediction is a constant. Standardizing inputs and target
(each with its own training mean and std, unlike the blog, which scaled the target with the
input's statistics) fixes both. The doctor (``lstm_jax.doctor``) names the causes.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import NamedTuple, Optional

from absl import logging
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax import cell as cell_lib
from lstm_jax import data as data_lib
from lstm_jax import doctor
from lstm_jax import metrics as metrics_lib
from lstm_jax import recurrent


@dataclasses.dataclass(frozen=True)
class RampConfig:
  """The blog's setup; ``standardize=False`` is its failing version."""
  standardize: bool = True
  epochs: int = 30
  batch_size: int = 128
  learning_rate: float = 5e-4
  schedule: str = 'constant'  # constant | cosine (decays to 1% of learning_rate)
  adam_eps: float = 1e-7  # Keras' default
  weight_decay: float = 0.0  # decoupled (AdamW); 0 is the blog's Adam
  lstm_sizes: tuple = (50, 100)
  dropout: float = 0.2
  recurrent_activation: str = 'sigmoid'  # Keras >= 2.3 default; old Keras used hard_sigmoid
  time_steps: int = 16
  train_start: int = 1
  n_train: int = 2804
  test_start: int = 3000
  n_test: int = 100
  seed: int = 0

  def validate(self) -> None:
    for name in ('epochs', 'batch_size', 'time_steps', 'n_train', 'n_test'):
      if getattr(self, name) < 1:
        raise data_lib.DataError(f'--{name} must be >= 1, got {getattr(self, name)}')
    if not self.learning_rate > 0:
      raise data_lib.DataError(f'--learning_rate must be > 0, got {self.learning_rate}')
    if not 0.0 <= self.dropout < 1.0:
      raise data_lib.DataError(f'--dropout must be in [0, 1), got {self.dropout}')
    if not self.lstm_sizes or min(self.lstm_sizes) < 1:
      raise data_lib.DataError(f'--lstm_sizes must be positive integers, got {self.lstm_sizes}')
    if self.schedule not in ('constant', 'cosine'):
      raise data_lib.DataError(f"--schedule must be 'constant' or 'cosine', got {self.schedule!r}")
    cell_lib.check_activations(self.recurrent_activation, 'tanh')


def make_data(start: int, n: int, time_steps: int = 16):
  """``x`` (n, time_steps, 1) with every step ``10 i``, and ``y`` (n,) = ``i``."""
  i = np.arange(start, start + n, dtype=np.float64)
  x = np.repeat(10.0 * i[:, None], time_steps, axis=1)[..., None]
  return x.astype(np.float32), i.astype(np.float32)


class RampParams(NamedTuple):
  lstm: tuple  # of cell.LSTMParams
  dense_kernel: jax.Array  # (H, 1)
  dense_bias: jax.Array  # (1,)


def init_params(key, config: RampConfig, in_size: int = 1) -> RampParams:
  keys = jax.random.split(key, len(config.lstm_sizes) + 1)
  layers, n = [], in_size
  for k, size in zip(keys[:-1], config.lstm_sizes):
    layers.append(cell_lib.init_lstm_params(k, n, size))
    n = size
  kernel = jax.nn.initializers.glorot_uniform()(keys[-1], (n, 1), jnp.float32)  # Keras Dense
  return RampParams(tuple(layers), kernel, jnp.zeros((1,), jnp.float32))


def forward(params: RampParams, x_BxTxC, scan_cfg: recurrent.ScanConfig, dropout: float = 0.0,
            key: Optional[jax.Array] = None):
  """LSTM layers with dropout on their outputs, then a Dense on the last step: (B,)."""
  h = x_BxTxC
  for k, layer in enumerate(params.lstm):
    carry = cell_lib.zero_carry(h.shape[0], layer.recurrent.shape[0])
    _, h = recurrent.lstm_layer(layer, carry, h, scan_cfg)
    if k + 1 == len(params.lstm):
      h = h[:, -1]  # return_sequences=False on the last LSTM
    if dropout > 0.0 and key is not None:
      keep = jax.random.bernoulli(jax.random.fold_in(key, k), 1.0 - dropout, h.shape)
      h = jnp.where(keep, h / (1.0 - dropout), 0.0)
  return (h @ params.dense_kernel + params.dense_bias[None, :])[:, 0]


def run(config: RampConfig, workdir: Optional[str] = None) -> dict:
  """Trains the blog's model on the ramp, evaluates it, runs the doctor; returns the metrics."""
  config.validate()
  t_wall = time.perf_counter()
  x_train, y_train = make_data(config.train_start, config.n_train, config.time_steps)
  x_test, y_test = make_data(config.test_start, config.n_test, config.time_steps)
  method = 'standardize' if config.standardize else 'none'
  x_norm = data_lib.Normalizer.fit(x_train.reshape(-1, 1), method, 'input channel')
  y_norm = data_lib.Normalizer.fit(y_train, method, 'target')
  xs_train, xs_test = x_norm.apply(x_train), x_norm.apply(x_test)
  ys_train = y_norm.apply(y_train[:, None])[:, 0]

  scan_cfg = recurrent.ScanConfig(recurrent_activation=config.recurrent_activation)
  key = jax.random.key(config.seed)
  init_key, dropout_key = jax.random.split(key)
  # One compiled program instead of dozens of op-by-op ones (QR of the orthogonal init, ...).
  params = jax.jit(init_params, static_argnums=1)(init_key, config)
  steps_per_epoch = -(-config.n_train // config.batch_size)
  num_steps = config.epochs * steps_per_epoch
  if config.schedule == 'cosine':
    schedule = optax.cosine_decay_schedule(config.learning_rate, num_steps, alpha=0.01)
  else:
    schedule = optax.constant_schedule(config.learning_rate)
  if config.weight_decay > 0:
    optimizer = optax.adamw(schedule, eps=config.adam_eps, weight_decay=config.weight_decay)
  else:
    optimizer = optax.adam(schedule, eps=config.adam_eps)
  opt_state = optimizer.init(params)

  lr_per_step = doctor.schedule_values(schedule, num_steps)
  findings = doctor.sort_findings(
      doctor.check_lr_budget(lr_per_step, params)
      + doctor.check_updates(num_steps, 0.999, steps_per_epoch,
                             change='more epochs (--epochs) or smaller batches (--batch_size)')
      + doctor.check_scaling(xs_train.reshape(-1, 1), ys_train, method, method,
                             float(lr_per_step.sum()), config.lstm_sizes[-1],
                             input_names='input feature', change_inputs='--standardize=true',
                             change_target='--standardize=true (the target with its own mean '
                             'and std, not the input\'s)')
      + doctor.check_data_size(config.n_train, doctor.count_params(params),
                               'independent training examples',
                               change='more examples or a smaller model (the blog\'s 50/100 '
                               'units are far more than a ramp needs)'))
  doctor.log_findings(findings, 'start')
  params0 = jax.device_get(params)

  def loss_fn(p, x, y, step_key):
    pred = forward(p, x, scan_cfg, config.dropout, step_key)
    return jnp.mean(jnp.square(pred - y))

  @jax.jit
  def train_step(p, opt_state, x, y, step):
    loss, grads = jax.value_and_grad(loss_fn)(p, x, y, jax.random.fold_in(dropout_key, step))
    updates, opt_state = optimizer.update(grads, opt_state, p)
    return optax.apply_updates(p, updates), opt_state, loss

  predict = jax.jit(lambda p, x: forward(p, x, scan_cfg))

  logging.info('ramp: %d examples, %d epochs of %d updates (batch %d), %s', config.n_train,
               config.epochs, steps_per_epoch, config.batch_size,
               'standardized' if config.standardize else 'raw (unscaled)')
  t0 = time.perf_counter()
  order_rng = np.random.default_rng(config.seed)
  step = 0
  epoch_losses = []
  for epoch in range(config.epochs):
    order = order_rng.permutation(config.n_train)  # Keras shuffles every epoch
    losses = []
    for start in range(0, config.n_train, config.batch_size):
      idx = order[start:start + config.batch_size]
      params, opt_state, loss = train_step(params, opt_state, xs_train[idx], ys_train[idx], step)
      losses.append(loss)
      step += 1
    epoch_losses.append(float(np.mean(jax.device_get(losses))))
    if not np.isfinite(epoch_losses[-1]):
      raise FloatingPointError(f'non-finite loss ({epoch_losses[-1]}) in epoch {epoch + 1}')
    if (epoch + 1) % max(1, config.epochs // 5) == 0 or epoch + 1 == config.epochs:
      logging.info('epoch %d/%d  loss %.5g', epoch + 1, config.epochs, epoch_losses[-1])
  train_s = time.perf_counter() - t0

  # One call (one compiled shape) for both sets.
  pred = y_norm.invert(np.asarray(predict(params, np.concatenate([xs_train, xs_test])))[:, None])
  pred_train, pred_test = pred[:config.n_train, 0], pred[config.n_train:, 0]
  mae_test = float(np.mean(np.abs(pred_test - y_test)))
  test_range = float(y_test.max() - y_test.min())
  var_train = float(np.var(y_train))
  train_fit = {'r2': metrics_lib.r2_score(y_train, pred_train),
               'prediction_std_over_target_std': float(np.std(pred_train) / np.std(y_train))}
  # The test stretch is a short extrapolation with 1/800 of the training variance: its own R^2
  # would call a small offset memorization. Judge both errors against the training variance.
  test_fit = {'r2': float(1.0 - np.mean(np.square(pred_test - y_test)) / var_train)}
  end = doctor.diagnose_end(train_fit, test_fit, doctor.relative_change(params0, params))
  doctor.log_findings(findings, 'start')
  doctor.log_findings(end, 'end')
  metrics = {
      'config': dataclasses.asdict(config),
      'test_mae': mae_test,
      'test_range': test_range,
      'test_mae_over_range': mae_test / test_range,
      'test_max_abs_error': float(np.max(np.abs(pred_test - y_test))),
      'test_prediction_first_last': [float(pred_test[0]), float(pred_test[-1])],
      'test_prediction_std': float(np.std(pred_test)),
      'train_mae': float(np.mean(np.abs(pred_train - y_train))),
      'train_r2': train_fit['r2'],
      'train_prediction_std_over_target_std': train_fit['prediction_std_over_target_std'],
      'weight_change': doctor.relative_change(params0, params),
      'num_steps': num_steps,
      'loss_first_epoch': epoch_losses[0],
      'loss_last_epoch': epoch_losses[-1],
      'train_s': train_s,
      'wall_s': time.perf_counter() - t_wall,
      'doctor': ([dict(f, stage='start') for f in findings] +
                 [dict(f, stage='end') for f in end]),
  }
  logging.info('ramp (%s): test MAE %.3f = %.4f of the test range %.0f; train R2 %.4f; '
               'test prediction %.1f .. %.1f', 'standardized' if config.standardize else 'raw',
               mae_test, mae_test / test_range, test_range, train_fit['r2'], pred_test[0],
               pred_test[-1])
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'metrics.json'), 'w') as f:
      json.dump(metrics, f, indent=1)
    logging.info('wrote %s', os.path.join(workdir, 'metrics.json'))
  return metrics
