r"""Seed 003's ramp regression: constant prediction without standardization, fixed with it.

  python -m experiments.ramp_regression --standardize=false --workdir=runs/ramp_raw
  python -m experiments.ramp_regression --workdir=runs/ramp_std

Trains ``LSTM(50) -> Dropout(0.2) -> LSTM(100) -> Dropout(0.2) -> Dense(1)`` on
``x_i = [10 i] * 16`` (16 steps of 1 feature), ``y_i = i``, i = 1..2804, tests on 3000..3099,
prints the test MAE (and as a fraction of the test range) and the doctor's findings.
"""
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from lstm_jax import cli
from lstm_jax import ramp

_D = ramp.RampConfig()
STANDARDIZE = flags.DEFINE_boolean('standardize', _D.standardize,
                                   'Standardize inputs and target (false: the blog\'s failure).')
EPOCHS = flags.DEFINE_integer('epochs', _D.epochs, 'Passes over the 2804 training examples.')
BATCH_SIZE = flags.DEFINE_integer('batch_size', _D.batch_size, 'Examples per update.')
LEARNING_RATE = flags.DEFINE_float('learning_rate', _D.learning_rate, 'Adam learning rate.')
SCHEDULE = flags.DEFINE_string('schedule', _D.schedule, 'constant | cosine (to 1% of the rate).')
DROPOUT = flags.DEFINE_float('dropout', _D.dropout, 'Dropout after each LSTM layer.')
RECURRENT_ACTIVATION = flags.DEFINE_string('recurrent_activation', _D.recurrent_activation,
                                           'sigmoid | hard_sigmoid (old Keras default).')
SEED = flags.DEFINE_integer('seed', _D.seed, 'Initialization, dropout and shuffling seed.')
WORKDIR = flags.DEFINE_string('workdir', '', 'Writes metrics.json here.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.info('JAX %s on %s', jax.__version__, jax.devices())
  config = ramp.RampConfig(standardize=STANDARDIZE.value, epochs=EPOCHS.value,
                           batch_size=BATCH_SIZE.value, learning_rate=LEARNING_RATE.value,
                           schedule=SCHEDULE.value,
                           dropout=DROPOUT.value, recurrent_activation=RECURRENT_ACTIVATION.value,
                           seed=SEED.value)
  sys.exit(cli.run_user_main(lambda: ramp.run(config, WORKDIR.value or None) and None))


if __name__ == '__main__':
  app.run(main)
