r"""The residual FIR's table: per recording, the model, the filter candidate, the rule's call.

For each recording of ``experiments/unlike_recordings.py`` in each ``--recordings`` directory,
then for the seed mock, trains the default recipe without the residual FIR, fits the candidate
filter with its gain (``train.fit_residual_path``: kept or dropped by the rule), and judges on
the held-out stretch, after its lead-in and from cold: the model alone, the candidate, the
decided model and the Wiener FIR alone. One JSON line per run is appended to ``--out``
(docs/quality.md, "Residual FIR")::

  python -m experiments.residual_fir_study --out=residual_fir.jsonl \
      --recordings=recordings7,recordings8:1,recordings9:2
  python -m experiments.residual_fir_study --out=/tmp/r.jsonl --recordings=/tmp/short \
      --names=linear_resonant --num_steps=50 --noseed_mock

``DIR:SEED`` trains on that directory's recordings with training seed SEED (default: the
directory's position in the list, 0, 1, ...).
"""
import json
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
import numpy as np

import lstm_jax
from lstm_jax import baselines
from lstm_jax import cli
from lstm_jax import metrics
from lstm_jax import train

NAMES = ('linear_resonant', 'mixed', 'bilinear', 'lin_lowpass', 'lin_plus_am')

OUT = flags.DEFINE_string('out', 'residual_fir.jsonl', 'JSON lines are appended here.')
RECORDINGS = flags.DEFINE_list('recordings', ['recordings7', 'recordings8'],
                               'Directories of experiments/unlike_recordings.py, DIR or DIR:SEED.')
RECORDING_NAMES = flags.DEFINE_list('names', list(NAMES), 'Which recordings of each directory.')
SEED_MOCK = flags.DEFINE_bool('seed_mock', True, 'Also run the seed mock once per directory.')
NUM_STEPS = flags.DEFINE_integer('num_steps', None, 'Overrides the recipe\'s updates.')
TAPS = flags.DEFINE_integer('taps', 128, 'The candidate filter\'s taps per witness.')


def judge(model, split: train.Split) -> tuple:
  """Held-out NR after the lead-in, and from cold."""
  warm = train.predict_stretch(model, split.heldout, split.heldout_lead)
  cold = model.predict(split.heldout.witnesses)
  return (metrics.evaluate(split.heldout, warm)['nr_db'],
          metrics.evaluate(split.heldout, cold)['nr_db'])


def run(config: lstm_jax.Config, taps: int) -> dict:
  """One recording: train, fit the candidate, judge every model."""
  split = train.load_split(config)
  t0 = time.perf_counter()
  trained, stats = train.train(config, split)
  train_s = time.perf_counter() - t0
  decided, rule = train.fit_residual_path(trained, split, taps)
  predictions = train._predict_records(trained, split.train)  # pylint: disable=protected-access
  n = sum(len(r) for r in split.train)
  d = split.train[0].witnesses.shape[1] * rule['n_taps'] + 2
  # The BIC penalty on the training residual that the t rule replaced, for comparison.
  rule['bic_nr_db'] = float(10 * np.log10(np.e) * d * np.log(n) / n)
  fir, gain = baselines.WienerFIR.fit_beside(split.train, predictions, rule['n_taps'])
  candidate = train._scaled(trained, gain, fir)  # pylint: disable=protected-access
  row = {'data': config.data or f'mock:{config.mock}', 'seed': config.seed, 'train_s': train_s,
         'kept_step': (stats['validation'] or {}).get('kept_step'), 'rule': rule,
         'lead_in_s': split.heldout_lead_in_seconds()}
  for name, model in (('lstm', trained), ('candidate', candidate), ('decided', decided),
                      ('wiener', baselines.WienerFIR.fit(split.train, taps))):
    row[name + '_nr'], row[name + '_nr_cold'] = judge(model, split)
  return row


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def study():
    logging.set_verbosity(logging.WARNING)
    base = lstm_jax.Config(residual_taps=0)
    if NUM_STEPS.value:
      base = base.replace(num_steps=NUM_STEPS.value)
    for k, item in enumerate(RECORDINGS.value):
      directory, _, seed = item.partition(':')
      seed = int(seed) if seed else k
      configs = [base.replace(data=os.path.join(directory, name + '.npz'), seed=seed)
                 for name in RECORDING_NAMES.value]
      if SEED_MOCK.value:
        configs.append(base.replace(seed=seed))
      for config in configs:
        row = run(config, TAPS.value)
        with open(OUT.value, 'a') as f:
          print(json.dumps(row), file=f)
        print(f'{row["data"]} seed {row["seed"]}: LSTM {row["lstm_nr"]:.2f} dB, candidate '
              f'{row["candidate_nr"]:.2f}, kept {row["rule"].get("kept")}, held out '
              f'{row["decided_nr"]:.2f}')

  sys.exit(cli.run_user_main(study))


if __name__ == '__main__':
  app.run(main)
