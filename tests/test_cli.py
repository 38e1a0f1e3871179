"""The two CLIs end to end: bad input stops with one line, and the clean round trip."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import lstm_jax

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_FLAGS = ['--lstm_sizes=6', '--head_sizes=8', '--n_streams=2', '--chunk_len=64',
              '--bptt_len=64', '--num_steps=40', '--eval_chunk_len=128']


def run(module, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=300)


def assert_one_line_error(proc, *needles):
  assert proc.returncode != 0
  assert 'Traceback' not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, proc.stderr
  for needle in needles:
    assert needle in errors[0], errors[0]


def write(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


@pytest.mark.parametrize('arrays, needles', [
    (dict(witnesses=np.ones((5000, 2)), target=np.ones(4999)), ['target has 4999 samples']),
    (dict(witnesses=np.ones((5000,)) * np.nan, target=np.ones(5000)), ['witnesses', 'NaN at channel 0, sample 0']),
    (dict(target=np.ones(5000)), ["missing key 'witnesses'"]),
    (dict(witnesses=np.random.rand(50, 2), target=np.random.rand(50), fs=64.0),
     ["training data too short"]),
])
def test_noise_regression_bad_data_one_line(tmp_path, arrays, needles):
  path = write(tmp_path / 'bad.npz', **arrays)
  proc = run('experiments.noise_regression', f'--data={path}', *TINY_FLAGS)
  assert_one_line_error(proc, *needles)


def test_noise_regression_missing_file_and_bad_flag(tmp_path):
  assert_one_line_error(run('experiments.noise_regression', f'--data={tmp_path}/none.npz'),
                        'none.npz: no such file')
  assert_one_line_error(run('experiments.noise_regression', '--lstm_sizes=4,x'),
                        '--lstm_sizes', 'integers')
  assert_one_line_error(run('experiments.noise_regression', '--preset=nope'), 'unknown preset')


def test_train_on_file_then_clean_another_recording(tmp_path):
  train_rec = lstm_jax.seed_mock(fs=256.0, duration=40.0, seed=1)
  other = lstm_jax.seed_mock(fs=256.0, duration=10.0, start=40.0, seed=2)
  lstm_jax.data.save_npz(str(tmp_path / 'train.npz'), train_rec)
  lstm_jax.data.save_npz(str(tmp_path / 'other.npz'), other)
  work = tmp_path / 'work'
  proc = run('experiments.noise_regression', f'--data={tmp_path}/train.npz',
             '--holdout_fraction=0.25', f'--workdir={work}', *TINY_FLAGS[:-2], '--num_steps=200',
             '--learning_rate=1e-2', '--n_streams=4')
  assert proc.returncode == 0, proc.stderr[-2000:]
  metrics = json.loads((work / 'metrics.json').read_text())
  assert metrics['heldout']['nr_reference'] == 'noise'
  proc = run('experiments.clean', f'--model_dir={work}/model', f'--input={tmp_path}/other.npz',
             f'--output={tmp_path}/out.npz', '--chunk_len=128')
  assert proc.returncode == 0, proc.stderr[-2000:]
  out = np.load(tmp_path / 'out.npz')
  assert out['prediction'].shape == (len(other),)
  np.testing.assert_allclose(out['cleaned'], other.target - out['prediction'], atol=1e-6)
  # Online: the same recording fed in blocks of 37 samples gives the same prediction: the LSTM's
  # bit for bit, a kept residual FIR's to rounding (its FFT convolution sums in another order).
  proc = run('experiments.clean', f'--model_dir={work}/model', f'--input={tmp_path}/other.npz',
             f'--output={tmp_path}/online.npz', '--chunk_len=128', '--block_size=37')
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert '"p99_us"' in proc.stdout
  np.testing.assert_allclose(np.load(tmp_path / 'online.npz')['prediction'], out['prediction'],
                             rtol=0, atol=1e-12)
  nr_clean = lstm_jax.noise_reduction_db(other.noise, out['prediction'])
  assert nr_clean > 3.0
  # Same order as the held-out figure of the training run.
  assert abs(nr_clean - metrics['heldout']['nr_db']) < 6.0
  # The same model refuses a recording with another channel count, in one line.
  write(tmp_path / 'three.npz', witnesses=np.ones((300, 3)), target=np.ones(300), fs=256.0)
  assert_one_line_error(run('experiments.clean', f'--model_dir={work}/model',
                            f'--input={tmp_path}/three.npz', f'--output={tmp_path}/o.npz'),
                        '3 witness channels', 'trained on 2')
  # The rate is the model's: another is refused, --fs never overrides a stated one; the
  # training workdir serves as --model_dir (issue 25).
  write(tmp_path / 'slow.npz', witnesses=other.witnesses[::2], target=other.target[::2], fs=128.0)
  assert_one_line_error(run('experiments.clean', f'--model_dir={work}',
                            f'--input={tmp_path}/slow.npz', f'--output={tmp_path}/o.npz'),
                        'sampled at 128 Hz', 'trained at 256 Hz')
  assert_one_line_error(run('experiments.clean', f'--model_dir={work}',
                            f'--input={tmp_path}/other.npz', f'--output={tmp_path}/o.npz',
                            '--fs=128'), 'states fs = 256 Hz but --fs=128')
  assert not (tmp_path / 'o.npz').exists()
  assert_one_line_error(run('experiments.clean', f'--model_dir={tmp_path}/nomodel',
                            f'--input={tmp_path}/other.npz', f'--output={tmp_path}/o.npz'),
                        'nomodel')
