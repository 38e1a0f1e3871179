r"""Signal safety: add a compact-binary chirp to a recording, clean it, and see what survives.

  python -m experiments.injection --model_dir=runs/gw --input=later.h5 --snr=20 \
      --witness_coupling=H1:OMC-DCPD_SUM_OUT_DQ:0.05 --output=injection.json

The chirp (a leading-order post-Newtonian inspiral, ``lstm_jax.gw.chirp``) is scaled to the
given matched-filter SNR against the target's PSD and added to the target and, at the given
gain, to every witness named in ``--witness_coupling`` (one that senses the target, as a
length-sensing channel sees a real signal). The report gives the share of the SNR that
survives cleaning (``snr_fraction``), the amplitude ratio and the phase change (docs/gw.md).
"""
import sys

from absl import app
from absl import flags

from lstm_jax import channels
from lstm_jax import cli
from lstm_jax import gw

MODEL_DIR = flags.DEFINE_string('model_dir', None, 'Training workdir, or its model/ directory.')
INPUT = flags.DEFINE_string('input', None, 'Recording to inject into (.npz, .gwf, .h5, ...).')
OUTPUT = flags.DEFINE_string('output', '', 'Write the report here (JSON).')
SNR = flags.DEFINE_float('snr', 20.0, 'Optimal matched-filter SNR against the target\'s PSD.')
MASS1 = flags.DEFINE_float('mass1', 1.4, 'Component mass, solar masses.')
MASS2 = flags.DEFINE_float('mass2', 1.4, 'Component mass, solar masses.')
F_LOW = flags.DEFINE_float('f_low', 30.0, 'Frequency the chirp starts at, Hz.')
MERGER = flags.DEFINE_float('merger_seconds', 0.0, 'Merger time after the recording\'s start, '
                            's (0: 80% of the way in).')
COUPLING = flags.DEFINE_string('witness_coupling', '', 'NAME:GAIN,...: witnesses that sense the '
                               'target and the gain they see it at (their units per target '
                               'unit); column indices for files without names.')
FS = flags.DEFINE_float('fs', 0.0, 'Sampling rate in Hz, for files that do not state one.')
CHUNK_LEN = flags.DEFINE_integer('chunk_len', 0, 'Samples per chunk (0: the model\'s default).')
flags.mark_flags_as_required(['model_dir', 'input'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def run():
    injection = gw.Injection(snr=SNR.value, m1=MASS1.value, m2=MASS2.value, f_low=F_LOW.value,
                             merger_seconds=MERGER.value,
                             couplings=gw.parse_couplings(COUPLING.value))
    gw.injection_report(MODEL_DIR.value, INPUT.value, injection, FS.value or None,
                        channels.Selection(), CHUNK_LEN.value or None, OUTPUT.value)

  sys.exit(cli.run_user_main(run))


if __name__ == '__main__':
  app.run(main)
