r"""Apply a trained model to a new recording, streaming it through block by block.

  python -m experiments.clean --model_dir=/tmp/nr --input=rec.npz --output=clean.npz
  python -m experiments.clean ... --block_size=128   # online: 1/16 s blocks at 2048 Hz
  python -m experiments.clean --model_dir=/tmp/gw --input=H-H1_LLD-1000000000-1024.gwf \
      --output=H-H1_CLEAN-1000000000-1024.gwf   # channels by the names the model learnt

``--model_dir`` is the training workdir or its ``model/``. ``.npz`` output holds ``prediction``
(T,) in target units and, when the input has ``target``, ``cleaned = target - prediction``;
``.gwf``/``.h5`` output holds ``<target>_CLEAN`` and ``<target>_PREDICTION`` at the input's t0
and rate. With a band (the model's or ``--band_lo``/``--band_hi``) only the prediction's part
in that band is subtracted, unless ``--clean_outside_band``. Prints the metrics (with the BNS
range for a strain target; docs/gw.md).
"""
import sys

from absl import app
from absl import flags

from lstm_jax import channels
from lstm_jax import cli
from lstm_jax import cleaning

MODEL_DIR = flags.DEFINE_string('model_dir', None, 'Training workdir, or its model/ directory.')
INPUT = flags.DEFINE_string('input', None, 'Recording to clean (.npz, .csv, a.npy,b.npy, .gwf, '
                            '.h5).')
OUTPUT = flags.DEFINE_string('output', None, 'Output .npz, .gwf or .h5.')
CHUNK_LEN = flags.DEFINE_integer('chunk_len', 0, 'Samples per chunk (0: the model\'s default).')
BLOCK_SIZE = flags.DEFINE_integer('block_size', 0, 'Feed the recording online, this many samples '
                                  'at a time (e.g. fs/16), and report the latency per block.')
FS = flags.DEFINE_float('fs', 0.0, 'Sampling rate in Hz, for files that do not state one.')
TARGET = flags.DEFINE_string('target_channel', '', 'Target channel (default: the model\'s).')
WITNESSES = flags.DEFINE_string('witness_channels', '', 'Witness channels, A,B or @file '
                                '(default: the model\'s).')
GPS_START = flags.DEFINE_float('gps_start', 0.0, 'Clean from this GPS time (0: the file\'s start).')
GPS_END = flags.DEFINE_float('gps_end', 0.0, 'Clean up to this GPS time (0: the file\'s end).')
RESAMPLE_TO = flags.DEFINE_float('resample_to', 0.0, 'Resample every channel to this rate (Hz).')
OUTPUT_CHANNEL = flags.DEFINE_string('output_channel', '', 'Name of the cleaned channel '
                                     '(default: <target>_CLEAN).')
BAND_LO = flags.DEFINE_float('band_lo', 0.0, 'Cleaning band, Hz (0, 0: the model\'s): the '
                             'figures\' band, and where the prediction is subtracted.')
BAND_HI = flags.DEFINE_float('band_hi', 0.0, 'Cleaning band, Hz.')
OUTSIDE = flags.DEFINE_string('clean_outside_band', 'auto', 'true | false | auto: subtract the '
                              'whole prediction, not only its part in the band (auto: as the '
                              'model was trained).')
STRAIN = flags.DEFINE_string('target_strain', 'auto', 'true | false | auto: the target is strain '
                             '(the BNS range is reported); auto: from its unit or name.')
flags.mark_flags_as_required(['model_dir', 'input', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def run():
    selection = channels.Selection(
        target=TARGET.value, witnesses=channels.parse_names(WITNESSES.value, 'witness_channels'),
        gps_start=GPS_START.value or None, gps_end=GPS_END.value or None,
        resample_to=RESAMPLE_TO.value or None)
    band = (BAND_LO.value, BAND_HI.value) if BAND_HI.value > 0 else None
    cleaning.clean_file(MODEL_DIR.value, INPUT.value, OUTPUT.value, CHUNK_LEN.value or None,
                        FS.value or None, BLOCK_SIZE.value or None, selection,
                        OUTPUT_CHANNEL.value, band, cli.parse_auto_bool(STRAIN),
                        cli.parse_auto_bool(OUTSIDE))

  sys.exit(cli.run_user_main(run))


if __name__ == '__main__':
  app.run(main)
