"""Training and cleaning a DeepClean-sized recording in bounded memory (docs/gw.md, "Memory").

Writes a --seconds long (default 4096 s), 21-witness, 4096 Hz HDF5 recording as float32 block
by block (LIGO channel names, the mock of experiments/gw_clean_stream.py: the mains line
modulated by an angular channel, a linear coupling, a white background; about 1.5 GB), trains
the default recipe on it with experiments/noise_regression.py (read in blocks) under
/usr/bin/time -v, cleans the whole file with experiments/clean.py the same way, and writes
--out (results/gw_train_memory.json): peak RSS, wall times, the seconds trained on, the
held-out NR, the real-time factor of cleaning::

  nice -n 5 python -m experiments.gw_train_memory --workdir=/tmp/gw_train_memory
"""
import json
import os
import re
import subprocess
import sys

from absl import app
from absl import flags
import numpy as np

FS = 4096
NAMES = ['H1:PEM-CS_MAINSMON_EBAY_1_DQ'] + [f'H1:ASC-{d}_{a}_OUT_DQ' for d in (
    'CHARD', 'DHARD', 'CSOFT', 'DSOFT', 'INP1', 'INP2', 'MICH', 'PRC1', 'PRC2', 'SRC1')
    for a in ('P', 'Y')]  # as experiments/gw_clean_stream.py
TARGET = 'H1:GDS-CALIB_STRAIN'

WORKDIR = flags.DEFINE_string('workdir', '/tmp/gw_train_memory', 'Data, runs and logs go here.')
SECONDS = flags.DEFINE_integer('seconds', 4096, 'Length of the recording.')
OUT = flags.DEFINE_string('out', 'results/gw_train_memory.json', 'The JSON written.')


def make(path: str, seconds: int, block_s: int = 16) -> None:
  """The recording in gwpy's HDF5 layout, float32, written block by block."""
  import h5py  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  n = seconds * FS
  with h5py.File(path + '.tmp', 'w') as f:
    datasets = []
    for name in [TARGET] + NAMES:
      ds = f.create_dataset(name, (n,), np.float32, chunks=(min(n, 1 << 16),))
      ds.attrs.update(name=name, channel=name, x0=1e9, dx=1.0 / FS, xunit='s',
                      unit='strain' if name == TARGET else '')
      datasets.append(ds)
    for lo in range(0, n, block_s * FS):
      t = (lo + np.arange(min(block_s * FS, n - lo))) / FS
      mains = np.sin(2 * np.pi * 60 * t)
      wit = [mains] + [rng.standard_normal(len(t)) for _ in NAMES[1:]]
      target = 1e-21 * ((1 + 0.3 * wit[1]) * mains + 0.5 * wit[2] + rng.standard_normal(len(t)))
      for ds, column in zip(datasets, [target] + wit):
        ds[lo:lo + len(t)] = column
  os.replace(path + '.tmp', path)


def timed(args, env, log: str) -> tuple[str, dict]:
  """Runs ``args`` under /usr/bin/time -v, its log (stderr) to ``log``: (stdout,
  {'peak_rss_mb', 'process_wall'})."""
  with open(log, 'w') as err:
    proc = subprocess.run(['/usr/bin/time', '-v', sys.executable, *args], env=env,
                          stdout=subprocess.PIPE, stderr=err, text=True)
  with open(log) as f:
    text = f.read()
  if proc.returncode:
    sys.exit(text[-4000:])
  rss_kb = int(re.search(r'Maximum resident set size \(kbytes\): (\d+)', text).group(1))
  wall = re.search(r'Elapsed \(wall clock\) time.*: (\S+)', text).group(1)
  return proc.stdout, {'peak_rss_mb': rss_kb / 1024, 'process_wall': wall}


def main(argv):
  del argv
  work = WORKDIR.value
  os.makedirs(work, exist_ok=True)
  data = os.path.join(work, f'rec{SECONDS.value}.h5')
  if not os.path.exists(data):
    make(data, SECONDS.value)
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  run = os.path.join(work, 'run')
  _, train_time = timed(['-m', 'experiments.noise_regression', f'--data={data}',
                         f'--target_channel={TARGET}', f'--workdir={run}'], env,
                        os.path.join(work, 'train.log'))
  with open(os.path.join(run, 'metrics.json')) as f:
    metrics = json.load(f)
  out, clean_time = timed(['-m', 'experiments.clean', f'--model_dir={run}', f'--input={data}',
                           f'--output={os.path.join(work, "clean.h5")}'], env,
                          os.path.join(work, 'clean.log'))
  cleaned = json.loads(out[out.index('{'):out.rindex('}') + 1])
  train = metrics['train']
  result = {
      'seconds': SECONDS.value, 'fs': FS, 'witnesses': len(NAMES),
      'input_bytes': os.path.getsize(data),
      'train': dict(train_time, wall_s=metrics['wall_s'], compile_s=train['compile_s'],
                    loop_s=train['train_s'], updates=train['num_steps'],
                    steps_per_s=train['steps_per_s'], epochs=train['epochs'],
                    train_seconds_of_data=metrics['train_seconds_of_data'],
                    read_in_blocks=metrics.get('read_in_blocks'),
                    heldout_seconds=metrics['heldout_seconds'],
                    heldout_nr_db=metrics['heldout']['nr_db'],
                    heldout_band_nr_db=metrics['heldout']['band_nr_db'],
                    linear_path_nr_db=(train['linear'] or {}).get('validation_target_nr_db'),
                    bns_range_mpc=metrics['gw'].get('bns_range_mpc')),
      'clean': dict(clean_time, wall_s=cleaned['wall_s'],
                    realtime_factor=cleaned['realtime_factor'], nr_db=cleaned.get('nr_db')),
      'machine': '2 cores, shared with other jobs'}
  print(json.dumps(result, indent=1))
  with open(OUT.value, 'w') as f:
    json.dump(result, f, indent=1)


if __name__ == '__main__':
  app.run(main)
