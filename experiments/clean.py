r"""Apply a trained model to a new recording, streaming it through chunk by chunk.

  python -m experiments.clean --model_dir=/tmp/nr/model --input=rec.npz --output=clean.npz
  python -m experiments.clean ... --block_size=128   # online: 1/16 s blocks at 2048 Hz

Writes ``prediction`` (T,) in target units and, when the input has ``target``,
``cleaned = target - prediction``, and prints the metrics.
"""
import sys

from absl import app
from absl import flags

from lstm_jax import cli
from lstm_jax import cleaning

MODEL_DIR = flags.DEFINE_string('model_dir', None, 'model/ directory written by noise_regression.')
INPUT = flags.DEFINE_string('input', None, 'Recording to clean (.npz, .csv or a.npy,b.npy).')
OUTPUT = flags.DEFINE_string('output', None, 'Output .npz.')
CHUNK_LEN = flags.DEFINE_integer('chunk_len', 0, 'Samples per chunk (0: the model\'s default).')
BLOCK_SIZE = flags.DEFINE_integer('block_size', 0, 'Feed the recording online, this many samples '
                                  'at a time (e.g. fs/16), and report the latency per block.')
FS = flags.DEFINE_float('fs', 0.0, 'Sampling rate in Hz, for files that do not store one.')
flags.mark_flags_as_required(['model_dir', 'input', 'output'])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  sys.exit(cli.run_user_main(lambda: cleaning.clean_file(
      MODEL_DIR.value, INPUT.value, OUTPUT.value, CHUNK_LEN.value or None, FS.value or None,
      BLOCK_SIZE.value or None)))


if __name__ == '__main__':
  app.run(main)
