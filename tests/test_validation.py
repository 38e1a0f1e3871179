"""User mistakes in flag values, model directories and checkpoints end in one clear line.

(Bad data files are covered by tests/test_data.py and tests/test_cli.py.)
"""
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import checkpoint as ckpt_lib
from lstm_jax import cleaning
from lstm_jax import cli
from lstm_jax import data as data_lib
from lstm_jax import doctor
from lstm_jax import train as train_lib
from lstm_jax.config import Config
from lstm_jax.inference import TrainedModel, build_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = Config(lstm_sizes=(4,), head_sizes=(4,), n_streams=2, chunk_len=64, bptt_len=64,
              train_record_seconds=2.0, n_train_records=1, eval_seconds=1.0, mock_fs=256.0,
              num_steps=10)


def one_line_error(capsys, fn):
  """Runs ``fn`` the way the CLIs do; returns the single error line (and checks the code)."""
  code = cli.run_user_main(fn, small_loops=False)
  err = capsys.readouterr().err
  lines = [l for l in err.splitlines() if l.strip()]
  assert code != 0 and len(lines) == 1 and lines[0].startswith('error: '), err
  assert 'Traceback' not in err
  return lines[0]


@pytest.mark.parametrize('change, needle', [
    (dict(num_steps=0), '--num_steps must be >= 1, got 0'),
    (dict(learning_rate=-1e-3), '--learning_rate must be > 0'),
    (dict(learning_rate=float('nan')), '--learning_rate must be a finite number'),
    (dict(decay=-0.05), '--decay must be >= 0'),
    (dict(adam_b2=1.0), '--adam_b2 must be in [0, 1)'),
    (dict(adam_eps=0.0), '--adam_eps must be > 0'),
    (dict(clip_norm=float('inf')), '--clip_norm must be a finite number'),
    (dict(checkpoint_every=-5), '--checkpoint_every must be >= 0'),
    (dict(lstm_sizes=()), '--lstm_sizes must name at least one layer'),
    (dict(head_sizes=(8, 0)), '--head_sizes must be positive integers, got 8,0'),
    (dict(input_scaling='zscore'), "--input_scaling must be 'standardize', 'minmax' or 'none'"),
    (dict(schedule='linear'), "--schedule must be 'plateau', 'constant', 'cosine' or 'inverse_time'"),
    (dict(output_activation='softplus'), '--output_activation must be one of'),
    (dict(mock_fs=-256.0), '--mock_fs must be > 0'),
    (dict(eval_seconds=0.0), '--eval_seconds must be > 0'),
    (dict(n_train_records=0), '--n_train_records must be >= 1'),
    (dict(holdout_fraction=1.0), '--holdout_fraction must be in (0, 1)'),
    (dict(val_fraction=0.7), '--val_fraction must be in [0, 0.5], got 0.7'),
    (dict(val_every=0), '--val_every must be >= 1, got 0'),
    (dict(val_tolerance=-0.1), '--val_tolerance must be >= 0, got -0.1'),
    (dict(band_lo=100.0, band_hi=50.0), '--band_lo (100.0) must be >= 0 and below --band_hi'),
    (dict(loss='l1'), "--loss must be 'mse' or 'spectral', got 'l1'"),
    (dict(loss_weight=1.5), '--loss_weight must be in [0, 1], got 1.5'),
    (dict(loss_psd_floor=-1.0), '--loss_psd_floor must be >= 0, got -1.0'),
    (dict(chunk_len=2, bptt_len=2), 'the spectral loss needs Welch segments of 4 to chunk_len (2)'),
    (dict(loss_nperseg=512), 'the spectral loss needs Welch segments of 4 to chunk_len'),
    (dict(chunk_len=100, bptt_len=64), 'chunk_len (100) must be a multiple of bptt_len (64)'),
    (dict(resume=True), '--resume need --workdir'),
])
def test_bad_flag_values_are_named(capsys, change, needle):
  line = one_line_error(capsys, lambda: train_lib.train_and_evaluate(TINY.replace(**change)))
  assert needle in line, line


def test_good_config_passes_validation():
  doctor.validate_config(Config())
  doctor.validate_config(TINY)


@pytest.fixture
def model_dir(tmp_path):
  """A model directory as noise_regression writes it (2 witness channels), untrained."""
  model = build_model(TINY)
  carry = model.initialize_carry(1)
  params = model.init(jax.random.key(0), carry, jnp.zeros((1, 8, 2)))['params']
  norm = data_lib.Normalizer(np.zeros(2, np.float32), np.ones(2, np.float32))
  target = data_lib.Normalizer(np.zeros(1, np.float32), np.ones(1, np.float32))
  path = str(tmp_path / 'model')
  TrainedModel(TINY, jax.device_get(params), norm, target, 2).save(path)
  return path


def recording(path, n_channels, n=300):
  rng = np.random.default_rng(0)
  np.savez(path, witnesses=rng.standard_normal((n, n_channels)), target=rng.standard_normal(n),
           fs=TINY.mock_fs)  # a model trained on a mock knows its rate: mock_fs
  return str(path)


def test_model_dir_mistakes(capsys, tmp_path, model_dir):
  good = recording(tmp_path / 'two.npz', 2)
  out = str(tmp_path / 'out.npz')
  line = one_line_error(capsys, lambda: cleaning.clean_file(str(tmp_path / 'nope'), good, out))
  assert 'nope: model directory does not exist' in line
  os.rename(os.path.join(model_dir, 'normalizers.json'), str(tmp_path / 'aside.json'))
  line = one_line_error(capsys, lambda: cleaning.clean_file(model_dir, good, out))
  assert 'missing normalizers.json' in line
  os.rename(str(tmp_path / 'aside.json'), os.path.join(model_dir, 'normalizers.json'))
  with open(os.path.join(model_dir, 'params.msgpack'), 'wb') as f:
    f.write(b'\x00not msgpack')
  line = one_line_error(capsys, lambda: cleaning.clean_file(model_dir, good, out))
  assert 'corrupt model files' in line and model_dir in line, line


def test_clean_cli_channel_count_mismatch_is_one_line(tmp_path, model_dir):
  three = recording(tmp_path / 'three.npz', 3)
  env = dict(os.environ, PYTHONPATH=REPO, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-m', 'experiments.clean', f'--model_dir={model_dir}',
                         f'--input={three}', f'--output={tmp_path}/out.npz'], cwd=REPO, env=env,
                        capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2
  assert 'Traceback' not in proc.stderr
  errors = [l for l in proc.stderr.splitlines() if l.startswith('error:')]
  assert len(errors) == 1, proc.stderr
  assert '3 witness channels' in errors[0] and 'trained on 2' in errors[0], errors[0]
  assert not os.path.exists(tmp_path / 'out.npz')


def test_resume_with_other_flags_names_the_field(capsys, tmp_path):
  workdir = str(tmp_path / 'work')
  config = TINY.replace(checkpoint_every=5)
  split = train_lib.load_split(config)
  train_lib.train(config, split, os.path.join(workdir, 'checkpoints'))
  changed = config.replace(resume=True, learning_rate=0.01)
  line = one_line_error(capsys, lambda: train_lib.train_and_evaluate(changed, workdir))
  assert 'learning_rate=0.003' in line and 'learning_rate=0.01' in line, line
  assert 'resume with the same flags' in line
  # Another model's checkpoint (other layer sizes): named, not a shape error deep in jit.
  bigger = config.replace(resume=True, lstm_sizes=(6,))
  line = one_line_error(capsys, lambda: train_lib.train_and_evaluate(bigger, workdir))
  assert 'other shapes' in line or 'lstm_sizes' in line, line
  # The checkpoints are untouched by the refused resumes.
  assert [s for s, _ in ckpt_lib.list_checkpoints(os.path.join(workdir, 'checkpoints'))] == [5, 10]
