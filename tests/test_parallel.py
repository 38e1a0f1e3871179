"""Data parallelism: 4 CPU devices, and 2 processes with jax.distributed, match one device."""
import os
import socket
import subprocess
import sys

import flax.serialization
import jax
import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--mock_fs=128', '--n_train_records=2', '--train_record_seconds=8', '--eval_seconds=4',
        '--lstm_sizes=6', '--head_sizes=8', '--n_streams=4', '--chunk_len=64', '--bptt_len=32',
        '--num_steps=30', '--learning_rate=1e-2', '--warmup_steps=0', '--eval_chunk_len=128']


def launch(workdir, *flags, devices=1):
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}')
  proc = subprocess.Popen([sys.executable, '-m', 'experiments.noise_regression', *TINY,
                           f'--workdir={workdir}', *flags], cwd=ROOT, env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  return proc


def finish(proc):
  out, _ = proc.communicate(timeout=300)
  assert proc.returncode == 0, out[-3000:]
  return out


def load_params(workdir):
  with open(os.path.join(workdir, 'model', 'params.msgpack'), 'rb') as f:
    return flax.serialization.msgpack_restore(f.read())


def assert_params_close(a, b):
  leaves_a, leaves_b = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(leaves_a) == len(leaves_b) > 0
  for x, y in zip(leaves_a, leaves_b):
    np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-5)


@pytest.fixture(scope='module')
def one_device(tmp_path_factory):
  """The reference both tests compare with: the same run on one device, made once and started
  at once, so it runs beside the first test's own run (2 cores)."""
  workdir = tmp_path_factory.mktemp('one')
  proc = launch(workdir, '--num_devices=1')
  params = []

  def get():
    if not params:
      finish(proc)
      params.append(load_params(workdir))
    return params[0]

  yield get
  if proc.poll() is None:
    proc.kill()


def test_four_devices_match_one(tmp_path, one_device):
  out = finish(launch(tmp_path / 'four', '--num_devices=4', devices=4))
  assert '4 device(s)' in out
  assert_params_close(load_params(tmp_path / 'four'), one_device())


def free_port():
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def test_two_processes_match_one(tmp_path, one_device):
  addr = f'127.0.0.1:{free_port()}'
  procs = [launch(tmp_path / 'multi', '--num_devices=0', f'--coordinator_address={addr}',
                  '--num_processes=2', f'--process_id={i}') for i in range(2)]
  outs = [finish(p) for p in procs]
  assert 'process 0 of 2' in outs[0] and 'process 1 of 2' in outs[1]
  assert_params_close(load_params(tmp_path / 'multi'), one_device())
