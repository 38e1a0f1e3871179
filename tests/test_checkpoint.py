"""Checkpoint and resume: atomic files, SIGKILL + resume == uninterrupted, non-finite stops."""
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import checkpoint as ckpt_lib
from lstm_jax import data as data_lib
from lstm_jax import train as train_lib
from lstm_jax.cell import LSTMCarry
from lstm_jax.config import Config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TINY = Config(lstm_sizes=(4,), head_sizes=(4,), n_streams=2, chunk_len=64, bptt_len=64,
              train_record_seconds=2.0, n_train_records=1, eval_seconds=1.0, mock_fs=256.0,
              num_steps=20, log_every_seconds=1e9)


def _state(value: float):
  params = {'w': jnp.full((3, 2), value, jnp.float32)}
  carry = (LSTMCarry(jnp.full((2, 4), value), jnp.full((2, 4), -value)),)
  opt = train_lib.make_optimizer(Config(num_steps=10))
  return train_lib.TrainState(params, opt.init(params), carry, jnp.asarray(7, jnp.int32))


def test_save_restore_round_trip_keeps_last_two(tmp_path):
  d = str(tmp_path / 'ckpt')
  for step in (5, 10, 15):
    ckpt_lib.save(d, _state(step), step, {'config': {'a': 1}})
  assert [s for s, _ in ckpt_lib.list_checkpoints(d)] == [10, 15]
  restored = ckpt_lib.restore_latest(d, _state(0.0))
  assert restored.step == 15 and restored.meta['config'] == {'a': 1}
  assert isinstance(restored.state, train_lib.TrainState)
  assert isinstance(restored.state.carry[0], LSTMCarry)
  np.testing.assert_array_equal(restored.state.params['w'], np.full((3, 2), 15.0, np.float32))
  np.testing.assert_array_equal(restored.state.carry[0].c, np.full((2, 4), -15.0, np.float32))
  assert jax.tree_util.tree_structure(restored.state) == jax.tree_util.tree_structure(_state(0))


def test_torn_write_and_corrupt_newest_fall_back(tmp_path):
  d = str(tmp_path / 'ckpt')
  ckpt_lib.save(d, _state(1.0), 1, {})
  ckpt_lib.save(d, _state(2.0), 2, {})
  # A writer killed mid-write leaves only a temporary file: never listed, never read.
  with open(ckpt_lib.checkpoint_path(d, 3) + '.tmp999', 'wb') as f:
    f.write(b'\x85half')
  assert [s for s, _ in ckpt_lib.list_checkpoints(d)] == [1, 2]
  # A corrupt newest file (not something save() writes) falls back to the one before.
  with open(ckpt_lib.checkpoint_path(d, 2), 'wb') as f:
    f.write(b'garbage')
  assert ckpt_lib.restore_latest(d, _state(0.0)).step == 1
  ckpt_lib.save(d, _state(4.0), 4, {})  # and the next save sweeps the torn temporary file
  assert not [n for n in os.listdir(d) if '.tmp' in n]


def test_restore_rejects_other_shapes_and_other_runs(tmp_path):
  d = str(tmp_path / 'ckpt')
  ckpt_lib.save(d, _state(1.0), 3, {'config': TINY.to_dict()})
  other = _state(0.0)
  other = other._replace(params={'w': jnp.zeros((5, 2))})
  with pytest.raises(data_lib.DataError, match='other shapes'):
    ckpt_lib.restore_latest(d, other)
  meta = ckpt_lib.restore_latest(d, _state(0.0)).meta
  ckpt_lib.check_same_run(meta, TINY.replace(log_every_seconds=1.0, resume=True).to_dict(), d)
  with pytest.raises(data_lib.DataError, match=r'learning_rate=0\.003.*learning_rate=0\.1'):
    ckpt_lib.check_same_run(meta, TINY.replace(learning_rate=0.1).to_dict(), d)


def test_nan_mid_run_stops_with_step_and_keeps_last_good_checkpoint(tmp_path):
  # One stream of 32 chunks of 16 samples; a NaN planted in chunk 22 is first met by update 23.
  config = TINY.replace(n_streams=1, chunk_len=16, bptt_len=16, num_steps=40, checkpoint_every=5,
                        input_scaling='none', target_scaling='none', linear_taps=0)
  split = train_lib.load_split(config)
  rec = split.train[0]
  witnesses = rec.witnesses.copy()
  witnesses[22 * 16 + 5, 1] = np.nan
  split = split._replace(train=[data_lib.Recording(witnesses, rec.target, rec.fs, rec.noise)])
  d = str(tmp_path / 'checkpoints')
  with pytest.raises(FloatingPointError) as err:
    train_lib.train(config, split, d)
  message = str(err.value)
  assert re.search(r'non-finite loss \(nan\) at step 23; the last good checkpoint \(step 20\)',
                   message), message
  assert '\n' not in message
  assert [s for s, _ in ckpt_lib.list_checkpoints(d)] == [15, 20]
  fresh = _fresh_state(config)
  restored = ckpt_lib.restore_latest(d, (fresh, fresh.params))  # the state, the kept params
  assert restored.step == 20 and int(restored.state[0].step) == 20
  assert all(np.all(np.isfinite(x)) for x in jax.tree_util.tree_leaves(restored.state))
  assert np.all(np.isfinite(restored.meta['losses'])) and len(restored.meta['losses']) == 20


def _fresh_state(config):
  model = train_lib.build_model(config)
  opt = train_lib.make_optimizer(config)
  carry = model.initialize_carry(config.n_streams)
  x = jnp.zeros((config.n_streams, config.bptt_len, 2))
  params = model.init(jax.random.key(0), carry, x)['params']
  return train_lib.TrainState(params, opt.init(params), carry, jnp.zeros((), jnp.int32))


def test_non_finite_gradient_is_named():
  with pytest.raises(FloatingPointError, match=r'non-finite gradient norm \(inf\) at step 7'):
    train_lib._check_finite(7, 0.5, float('inf'), None)


# --------------------------------------------------------------------------- kill and resume

FLAGS = ['--lstm_sizes=4', '--head_sizes=4', '--n_streams=2', '--chunk_len=64', '--bptt_len=64',
         '--train_record_seconds=2', '--n_train_records=1', '--eval_seconds=1', '--mock_fs=256',
         '--num_steps=300', '--checkpoint_every=7', '--log_every_seconds=0']


def _cli(workdir, *extra):
  return [sys.executable, '-m', 'experiments.noise_regression', f'--workdir={workdir}',
          *FLAGS, *extra]


def _snapshot(dest):
  """A frozen copy of the code: every process of the test must run the same program."""
  for package in ('lstm_jax', 'experiments'):
    shutil.copytree(os.path.join(REPO, package), os.path.join(dest, package),
                    ignore=shutil.ignore_patterns('__pycache__'))
  return dest


def _env(cache_dir, code_dir=REPO):
  env = dict(os.environ, PYTHONPATH=code_dir, JAX_PLATFORMS='cpu',
             # Later processes load the compiled step instead of compiling it again.
             JAX_COMPILATION_CACHE_DIR=cache_dir, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  return env


def _run_and_kill(cmd, env, kill_at):
  """Starts ``cmd``, SIGKILLs it once it logs step ``kill_at``; returns (resumed_at, last_step)."""
  proc = subprocess.Popen(cmd, cwd=env['PYTHONPATH'], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
  resumed_at, last = 0, None
  for line in proc.stderr:
    m = re.search(r'resumed from .* at step (\d+)', line)
    if m:
      resumed_at = int(m.group(1))
    m = re.search(r'step (\d+)/300', line)
    if m:
      last = int(m.group(1))
      if last >= kill_at:
        proc.send_signal(signal.SIGKILL)
        break
  proc.stderr.close()
  rc = proc.wait()
  assert rc == -signal.SIGKILL, f'run meant to be killed at step {kill_at} exited with {rc}'
  return resumed_at, last


def _final_state(workdir):
  with open(os.path.join(workdir, 'checkpoints', 'ckpt_00000300.msgpack'), 'rb') as f:
    return flax.serialization.msgpack_restore(f.read())


def test_sigkill_at_random_steps_then_resume_equals_uninterrupted(tmp_path):
  # A snapshot of the code: the shared tree may be edited while this test runs.
  code = _snapshot(str(tmp_path / 'code'))
  env = _env(str(tmp_path / 'jax_cache'), code)
  whole, pieces = str(tmp_path / 'whole'), str(tmp_path / 'pieces')
  # The uninterrupted run goes beside the killed ones (2 cores); it is awaited before comparing.
  log = open(tmp_path / 'whole.log', 'w+')  # a file, not a pipe: its logs never block it
  uninterrupted = subprocess.Popen(_cli(whole), cwd=code, env=env, stdout=subprocess.DEVNULL,
                                   stderr=log)

  rng = random.Random()
  kill_points = [rng.randrange(3, 120), rng.randrange(120, 240)]
  history = []
  for k, kill_at in enumerate(kill_points):
    resumed_at, killed_at = _run_and_kill(_cli(pieces, *(['--resume'] if k else [])), env,
                                          kill_at)
    history.append((kill_at, resumed_at, killed_at))
    saved = [s for s, _ in ckpt_lib.list_checkpoints(os.path.join(pieces, 'checkpoints'))]
    # Killed mid-run: the newest checkpoint is one of the periodic ones, and no results exist.
    assert len(saved) <= 2 and all(s % 7 == 0 and s < 300 for s in saved), (history, saved)
    assert (killed_at < 7 or saved) and resumed_at <= killed_at, (history, saved)
    assert not os.path.exists(os.path.join(pieces, 'metrics.json'))
  last = subprocess.run(_cli(pieces, '--resume'), cwd=code, env=env, capture_output=True,
                        text=True)
  assert last.returncode == 0, last.stderr[-2000:]
  resumed_at = int(re.search(r'resumed from .* at step (\d+)', last.stderr).group(1))
  assert kill_points[-1] - 7 <= resumed_at < 300, (history, resumed_at)

  rc = uninterrupted.wait(timeout=600)
  log.seek(0)
  assert rc == 0, log.read()[-2000:]
  log.close()
  # The final parameters, bitwise, and the whole final state (optimizer moments, carries, step)
  # and loss history.
  with open(os.path.join(whole, 'model', 'params.msgpack'), 'rb') as f:
    params_whole = f.read()
  with open(os.path.join(pieces, 'model', 'params.msgpack'), 'rb') as f:
    assert f.read() == params_whole, f'kill/resume history {history}'
  a, b = _final_state(whole), _final_state(pieces)
  for x, y in zip(jax.tree_util.tree_leaves(a['state']), jax.tree_util.tree_leaves(b['state'])):
    np.testing.assert_array_equal(x, y)
  meta_a, meta_b = json.loads(a['meta_json']), json.loads(b['meta_json'])
  assert meta_b['config'].pop('resume') and not meta_a['config'].pop('resume')
  assert meta_a == meta_b  # config, normalizers, loss history of every step
