"""Stop 23: the residual FIR's table again, every stretch judged after the witnesses before it
(BUILD_NOTES.md, "Stop 23"). python results/residual_fir_s23.py OUT.jsonl [DIR[:SEED] ...]

Each run trains the default recipe without the residual FIR, then fits the candidate filter
(kept or not by the rule in train.fit_residual_path; stop 22's BIC figure recorded beside
it), and judges on the held-out stretch: the LSTM, the candidate and the Wiener FIR alone, each
after the lead-in and from cold."""
import json, os, sys, time
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from absl import logging
import lstm_jax
from lstm_jax import baselines, metrics, train as T

def judge(model, split):
  cold = model.predict(split.heldout.witnesses)
  warm = T.predict_stretch(model, split.heldout, split.heldout_lead)
  return (metrics.evaluate(split.heldout, warm)['nr_db'],
          metrics.evaluate(split.heldout, cold)['nr_db'])

def run(data, seed, out):
  config = lstm_jax.Config(data=data, seed=seed, residual_taps=0)
  split = T.load_split(config)
  t0 = time.perf_counter()
  trained, stats = T.train(config, split)
  train_s = time.perf_counter() - t0
  decided, rule = T.fit_residual_path(trained, split, 128)
  preds = T._predict_records(trained, split.train)
  n = sum(len(r) for r in split.train)
  d = split.train[0].witnesses.shape[1] * rule['n_taps'] + 2
  rule['bic_nr_db'] = float(10 * np.log10(np.e) * d * np.log(n) / n)  # stop 22's rule
  fir, gain = baselines.WienerFIR.fit_beside(split.train, preds, rule['n_taps'])
  candidate = T._scaled(trained, gain, fir)
  row = {'data': data or 'mock:seed', 'seed': seed, 'train_s': train_s,
         'kept_step': (stats['validation'] or {}).get('kept_step'), 'rule': rule,
         'lead_in_s': split.heldout_lead_in_seconds()}
  for name, model in (('lstm', trained), ('candidate', candidate), ('decided', decided),
                      ('wiener', baselines.WienerFIR.fit(split.train, 128))):
    row[name + '_nr'], row[name + '_nr_cold'] = judge(model, split)
  with open(out, 'a') as f:
    print(json.dumps(row), file=f)

if __name__ == '__main__':
  logging.set_verbosity(logging.WARNING)
  out = sys.argv[1]
  # DIR or DIR:SEED (default seeds 0, 1, ... in order), e.g. recordings7 recordings8:1
  pairs = [(a.split(':')[0], int(a.split(':')[1]) if ':' in a else k)
           for k, a in enumerate(sys.argv[2:] or ['recordings7', 'recordings8'])]
  names = ['linear_resonant', 'mixed', 'bilinear', 'lin_lowpass', 'lin_plus_am']
  for d, seed in pairs:
    for name in names:
      run(os.path.join(d, name + '.npz'), seed, out)
    run('', seed, out)
