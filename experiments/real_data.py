r"""A real recording: predict a seismometer's vertical channel from its east channel.

The data is the one-day, 1 Hz, two-channel record of station BALST of the Swiss Seismological
Network (CH.BALST..LHE and ..LHZ, 2025-11-10) that ``obspy`` ships as test data (no download at
run time; ``pip install obspy`` or ``pip install -e '.[real]'``). The ocean microseism
(0.05-0.25 Hz) reaches both components as Rayleigh and Love waves with different phases, so the
east channel predicts part of the vertical one through a coupling with memory. The script
writes the record as ``workdir/balst.npz`` (the ``--data`` format) and runs the comparison of
``experiments/compare.py`` on it (LSTM, Wiener FIR, static MLP; 20% held out). Example::

  python -m experiments.real_data --workdir=/tmp/real

Every ``lstm_jax.Config`` field is a flag (the ``microseism`` preset is the default).
"""
import os
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np

from lstm_jax import cli
from lstm_jax import compare
from lstm_jax import data as data_lib

PRESET = flags.DEFINE_string('preset', 'microseism', 'Named config (lstm_jax.config.PRESETS).')
WORKDIR = flags.DEFINE_string('workdir', '', 'Writes balst.npz and the comparison here.')
FIR_TAPS = flags.DEFINE_integer('fir_taps', 128, 'Wiener FIR taps per witness.')
MLP_STEPS = flags.DEFINE_integer('mlp_steps', 2000, 'Static MLP Adam steps.')
cli.define_config_flags()

BALST = 'io/mseed/tests/data/CH.BALST..LH_two_channels'


def balst_recording(max_samples: int = 0) -> data_lib.Recording:
  """The obspy example record: witness LHE (T, 1), target LHZ (T,), in counts, fs = 1 Hz.

  The two channels are trimmed to their common span and their means removed (the digitizer's
  offsets would otherwise count as "noise removed"); LHZ's samples lie 0.375 s after LHE's (a
  fixed sub-sample offset, part of the coupling). ``max_samples`` > 0 keeps the first ones.
  """
  try:
    import obspy
  except ImportError:
    raise data_lib.DataError('the real-data example needs obspy: pip install obspy '
                             "(or pip install -e '.[real]')") from None
  path = os.path.join(os.path.dirname(obspy.__file__), BALST)
  stream = obspy.read(path)
  start = max(tr.stats.starttime for tr in stream)
  stream.trim(start, min(tr.stats.endtime for tr in stream))
  traces = {tr.stats.channel: tr for tr in stream}
  east, vertical = traces['LHE'], traces['LHZ']
  n = min(east.stats.npts, vertical.stats.npts)
  if max_samples > 0:
    n = min(n, max_samples)
  east_n = east.data[:n].astype(np.float64)
  vertical_n = vertical.data[:n].astype(np.float64)
  return data_lib.validate(data_lib.Recording(
      (east_n - east_n.mean())[:, None], vertical_n - vertical_n.mean(),
      float(east.stats.sampling_rate), None, 'CH.BALST LHE -> LHZ (obspy example, 1 Hz)'))


def run(config, workdir: str, fir_taps: int = 128, mlp_steps: int = 2000,
        max_samples: int = 0, mlp_hidden=(64, 64)) -> dict:
  """Writes ``workdir/balst.npz`` and compares the three methods on it (``compare.run``)."""
  os.makedirs(workdir, exist_ok=True)
  path = os.path.join(workdir, 'balst.npz')
  data_lib.save_npz(path, balst_recording(max_samples))
  return compare.run(config.replace(data=path), workdir, fir_taps=fir_taps,
                     mlp_hidden=mlp_hidden, mlp_steps=mlp_steps)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def go():
    if not WORKDIR.value:
      raise data_lib.DataError('--workdir is required (balst.npz and the comparison go there)')
    result = run(cli.config_from_flags(PRESET.value), WORKDIR.value, FIR_TAPS.value,
                 MLP_STEPS.value)
    logging.info('done')
    print(compare.table_markdown(result))

  sys.exit(cli.run_user_main(go))


if __name__ == '__main__':
  app.run(main)
