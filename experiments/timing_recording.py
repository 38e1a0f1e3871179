r"""Writes the recording the default job's wall time is judged on (docs/quality.md):
``gw.ligo_mock`` with idle witnesses added, as a ``.npz`` a user would give::

  python -m experiments.timing_recording --out=/tmp/ligo16_600s.npz
  /usr/bin/time -v python -m experiments.noise_regression --data=/tmp/ligo16_600s.npz \
      --workdir=/tmp/timing
"""
from absl import app
from absl import flags

from lstm_jax import data
from lstm_jax import gw

OUT = flags.DEFINE_string('out', None, 'The .npz file to write.', required=True)
FS = flags.DEFINE_float('fs', 4096.0, 'Sampling rate (Hz).')
SECONDS = flags.DEFINE_float('seconds', 600.0, 'Length (s).')
IDLE = flags.DEFINE_integer('idle', 10, 'Witnesses that nothing couples, added to the six.')
SEED = flags.DEFINE_integer('seed', 5, 'The mock\'s seed.')


def main(argv):
  del argv
  data.save_npz(OUT.value, gw.ligo_mock_with_idle(FS.value, SECONDS.value, IDLE.value,
                                                  SEED.value))


if __name__ == '__main__':
  app.run(main)
