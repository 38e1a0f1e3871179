"""Signal safety on a LIGO-like recording (docs/gw.md, "Signal safety").

Writes a 128 s training recording and a 64 s later one at 1024 Hz (lstm_jax.gw.ligo_mock with
a witness, H1:OMC-DCPD_SUM_OUT_DQ, that senses the target at 5%, its own noise at 5% of the
background), trains the default recipe (1500 updates) with that witness kept and with it
excluded, injects a 1.4 + 1.4 Msun inspiral from 40 Hz at matched-filter SNR 20 into the later
recording (the target, and the sensing witness at gain 0.05), and writes what survives
cleaning, with the doctor's findings and the figures of merit in the band 20-70 Hz (the mains
line's sidebands and the 30 Hz resonance) on the held-out stretch and on the later recording
cleaned by experiments/clean.py, to --out (results/gw_injection.json)::

  python -m experiments.gw_injection_study --workdir=/tmp/gw_injection
"""
import json
import os
import subprocess
import sys

from absl import app
from absl import flags

from lstm_jax import channels
from lstm_jax import gw


WORKDIR = flags.DEFINE_string('workdir', '/tmp/gw_injection', 'Data, runs and logs go here.')
OUT = flags.DEFINE_string('out', 'results/gw_injection.json', 'The JSON written.')


def main(argv):
  del argv
  work = WORKDIR.value
  os.makedirs(work, exist_ok=True)
  for name, seconds, seed, t0 in (('train', 128.0, 1, 1e9), ('later', 64.0, 2, 1e9 + 128)):
    path = os.path.join(work, f'{name}.h5')
    if not os.path.exists(path):
      channels.save_recording(path, gw.ligo_mock(1024.0, seconds, seed, t0, sensing_gain=0.05,
                                                 sensing_noise=0.05))
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  result = {}
  for case, extra in (('kept', []), ('excluded', [f'--exclude_channels={gw.SENSING_CHANNEL}'])):
    run = os.path.join(work, case)
    if not os.path.exists(os.path.join(run, 'metrics.json')):
      subprocess.run([sys.executable, '-m', 'experiments.noise_regression',
                      f'--data={work}/train.h5', f'--target_channel={gw.LIGO_TARGET}',
                      '--num_steps=1500', '--band_lo=20', '--band_hi=70', f'--workdir={run}',
                      *extra], check=True, env=env)
    with open(os.path.join(run, 'metrics.json')) as f:
      metrics = json.load(f)
    coupling = ([f'--witness_coupling={gw.SENSING_CHANNEL}:0.05'] if case == 'kept' else [])
    report = os.path.join(run, 'injection.json')
    subprocess.run([sys.executable, '-m', 'experiments.injection', f'--model_dir={run}',
                    f'--input={work}/later.h5', '--snr=20', '--f_low=40', f'--output={report}',
                    *coupling], check=True, env=env, capture_output=True)
    with open(report) as f:
      injection = json.load(f)
    # The later recording through the user's path: the figures of merit clean.py prints.
    proc = subprocess.run([sys.executable, '-m', 'experiments.clean', f'--model_dir={run}',
                           f'--input={work}/later.h5', f'--output={run}/later_clean.h5',
                           '--band_lo=20', '--band_hi=70'], check=True, env=env,
                          capture_output=True, text=True)
    cleaned = json.loads(proc.stdout[proc.stdout.index('{'):proc.stdout.rindex('}') + 1])
    result[case] = {
        'later_clean': {'nr_db': cleaned['nr_db'], 'band_nr_db': cleaned['band_nr_db'],
                        'gw': cleaned['gw']},
        'injection': {k: injection[k] for k in ('snr', 'snr_fraction', 'snr_lost_percent',
                                                'amplitude_ratio', 'phase_change_rad',
                                                'optimal_snr_fraction', 'couplings')},
        'doctor_warnings': [d['check'] for d in metrics['doctor'] if d['severity'] == 'warning'
                            and d['stage'] == 'start'],
        'heldout_nr_db': metrics['heldout']['nr_db'], 'gw': metrics['gw']}
  print(json.dumps(result, indent=1))
  with open(OUT.value, 'w') as f:
    json.dump(result, f, indent=1)


if __name__ == '__main__':
  app.run(main)
