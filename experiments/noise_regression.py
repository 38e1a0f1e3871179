r"""Train a stateful LSTM to predict a target channel from witnesses; judge it held out.

Default: the seed's mock (target = sin(t) + sin(10 t) n, witnesses sin(10 t) and n) with a
recipe that works. Examples::

  python -m experiments.noise_regression --workdir=/tmp/nr
  python -m experiments.noise_regression --preset=seed_keras --workdir=/tmp/seed
  python -m experiments.noise_regression --data=rec.npz --holdout_fraction=0.25 --workdir=/tmp/u

Every ``lstm_jax.Config`` field is a flag of the same name.
"""
import sys

from absl import app
from absl import flags

from lstm_jax import cli
from lstm_jax import train

PRESET = flags.DEFINE_string('preset', 'default', 'Named config: default | seed_keras.')
WORKDIR = flags.DEFINE_string('workdir', '', 'Writes metrics.json, PNG plots and model/ here.')
cli.define_config_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def run():
    config = cli.config_from_flags(PRESET.value)
    cli.show_cpu_devices_for(config)
    train.train_and_evaluate(config, WORKDIR.value or None)

  sys.exit(cli.run_user_main(run))


if __name__ == '__main__':
  app.run(main)
