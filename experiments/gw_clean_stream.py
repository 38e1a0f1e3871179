"""Cleaning a long many-channel HDF5 file in bounded memory (docs/gw.md, "Memory").

Writes a 1024 s, 21-witness, 4096 Hz recording block by block (LIGO channel names: the mains
monitor and 20 ASC channels onto H1:GDS-CALIB_STRAIN; about 0.9 GB), trains the default model
for a few updates on its first 32 s (the cleaning cost depends on the model's size, not its
training), then cleans the whole file with experiments/clean.py under /usr/bin/time -v and
writes --out (results/gw_clean_stream.json) (wall time, real-time factor, peak RSS)::

  python -m experiments.gw_clean_stream --workdir=/tmp/gw_stream
"""
import json
import os
import re
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np

from lstm_jax import channels

FS, SECONDS, BLOCK_S = 4096, 1024, 16
NAMES = ['H1:PEM-CS_MAINSMON_EBAY_1_DQ'] + [f'H1:ASC-{d}_{a}_OUT_DQ' for d in (
    'CHARD', 'DHARD', 'CSOFT', 'DSOFT', 'INP1', 'INP2', 'MICH', 'PRC1', 'PRC2', 'SRC1')
    for a in ('P', 'Y')]
TARGET = 'H1:GDS-CALIB_STRAIN'


MODEL_ALONE = """
import sys, time
from lstm_jax import channels, recurrent
recurrent.use_small_loop_kernels()
from lstm_jax.inference import TrainedModel
run, big = sys.argv[1], sys.argv[2]
model = TrainedModel.load(run + '/model')
inputs = channels.ModelInputs.load(run + '/model')
reader = channels.open_reader(big, inputs.selection_for(channels.Selection(gps_end=1e9 + 64)))
x = reader.read(0, reader.n_samples).witnesses
model.predict(x[:8192])
times = []
for _ in range(3):
  t0 = time.perf_counter()
  model.predict(x)
  times.append(time.perf_counter() - t0)
print(64.0 / min(times))
"""


def make(path, seconds):
  rng = np.random.default_rng(0)
  n = seconds * FS
  writer = channels.open_writer(path, [TARGET] + NAMES, 1e9, FS, n, ['strain'] + [''] * 21)
  for lo in range(0, n, BLOCK_S * FS):
    t = (lo + np.arange(min(BLOCK_S * FS, n - lo))) / FS
    mains = np.sin(2 * np.pi * 60 * t)
    wit = [mains] + [rng.standard_normal(len(t)) for _ in NAMES[1:]]
    target = 1e-21 * ((1 + 0.3 * wit[1]) * mains + 0.5 * wit[2] + rng.standard_normal(len(t)))
    writer.write([target] + wit)
  writer.close()


WORKDIR = flags.DEFINE_string('workdir', '/tmp/gw_stream', 'Data, runs and logs go here.')
OUT = flags.DEFINE_string('out', 'results/gw_clean_stream.json', 'The JSON written.')


def main(argv):
  del argv
  work = WORKDIR.value
  os.makedirs(work, exist_ok=True)
  big, small = os.path.join(work, 'big.h5'), os.path.join(work, 'train.h5')
  if not os.path.exists(big):
    make(big, SECONDS)
  if not os.path.exists(small):
    make(small, 32)
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  run = os.path.join(work, 'run')
  if not os.path.exists(os.path.join(run, 'model', 'inputs.json')):
    subprocess.run([sys.executable, '-m', 'experiments.noise_regression', f'--data={small}',
                    f'--target_channel={TARGET}', '--num_steps=20', f'--workdir={run}'],
                   check=True, env=env)
  out = os.path.join(work, 'big_clean.h5')
  proc = subprocess.run(['/usr/bin/time', '-v', sys.executable, '-m', 'experiments.clean',
                         f'--model_dir={run}', f'--input={big}', f'--output={out}'],
                        env=env, capture_output=True, text=True)
  if proc.returncode:
    sys.exit(proc.stderr[-3000:])
  metrics = json.loads(proc.stdout[proc.stdout.index('{'):proc.stdout.rindex('}') + 1])
  rss_kb = int(re.search(r'Maximum resident set size \(kbytes\): (\d+)', proc.stderr).group(1))
  wall = re.search(r'Elapsed \(wall clock\) time.*: (\S+)', proc.stderr).group(1)
  # The model alone on 64 s held in memory (warm, best of 3), in its own process just after:
  # the rate the time loop allows on this machine at this moment.
  alone = subprocess.run([sys.executable, '-c', MODEL_ALONE, run, big], env=env, check=True,
                         capture_output=True, text=True).stdout.strip().splitlines()[-1]
  result = {'seconds': SECONDS, 'fs': FS, 'witnesses': 21, 'input_bytes': os.path.getsize(big),
            'model_alone_realtime_factor_64s_in_memory': float(alone),
            'clean_wall_s': metrics['wall_s'], 'realtime_factor': metrics['realtime_factor'],
            'process_wall': wall, 'peak_rss_mb': rss_kb / 1024,
            'nr_db': metrics.get('nr_db'), 'machine': '2 cores, shared with other jobs'}
  print(json.dumps(result, indent=1))
  with open(OUT.value, 'w') as f:
    json.dump(result, f, indent=1)


if __name__ == '__main__':
  app.run(main)
