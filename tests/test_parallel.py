"""Data parallelism: 4 CPU devices, and 2 processes with jax.distributed, match one device;
streaming inference sharded over CPU devices matches one device."""
import os
import socket
import subprocess
import sys

import flax.serialization
import jax
import numpy as np
import pytest

from lstm_jax import parallel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--mock_fs=128', '--n_train_records=2', '--train_record_seconds=8', '--eval_seconds=4',
        '--lstm_sizes=6', '--head_sizes=8', '--n_streams=4', '--chunk_len=64', '--bptt_len=32',
        '--num_steps=30', '--learning_rate=1e-2', '--warmup_steps=0', '--eval_chunk_len=128']


def launch(workdir, *flags, devices=1):
  """``devices``: CPU devices forced through XLA_FLAGS (0: none; the CLI shows JAX as many CPU
  devices as ``--num_devices`` asks)."""
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}' if devices else '')
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
  out = finish(launch(tmp_path / 'four', '--num_devices=4', devices=0))
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


@pytest.mark.parametrize('batch, sizes, n_devices, platform, shards', [
    (8, (128, 128), 2, 'cpu', 2),   # the long workload's inference: one loop per core
    (8, (256,), 2, 'cpu', 1),       # a 256-unit matmul already keeps both cores busy
    (8, (256,), 2, 'gpu', 2),
    (3, (64,), 2, 'cpu', 1),        # streams must split evenly
    (6, (64,), 4, 'cpu', 3),        # the most devices that split them evenly
    (1, (64, 16, 8), 2, 'cpu', 1),
    (8, (64,), 1, 'cpu', 1),
])
def test_inference_shards(batch, sizes, n_devices, platform, shards):
  assert parallel.inference_shards(batch, sizes, n_devices, platform) == shards


def test_inference_keeps_streams_on_one_device_for_the_kernel_loop(monkeypatch):
  """One GPU runs up to 128 streams of the Pallas loop as parallel programs; its split over
  several devices was never timed."""
  from lstm_jax.recurrent import ScanConfig
  assert parallel.inference_shards(8, (64,), 2, 'gpu', kernel_loop=True) == 1
  asked = []
  monkeypatch.setattr(parallel, 'inference_shards', lambda *args: asked.append(args[-1]) or 1)
  parallel.Placement.for_inference(8, (64,), ScanConfig(loop='pallas'))
  parallel.Placement.for_inference(8, (64,), ScanConfig(loop='pallas'), cell='gru')
  parallel.Placement.for_inference(8, (64,), ScanConfig())  # CPU: the scan
  parallel.Placement.for_inference(8, (64,))
  monkeypatch.setattr(jax, 'default_backend', lambda: 'gpu')
  parallel.Placement.for_inference(8, (64, 128), ScanConfig())  # auto: both on the kernel
  parallel.Placement.for_inference(8, (256,), ScanConfig())     # too large for it
  assert asked == [True, False, False, False, True, False]


def test_set_cpu_devices_after_start_says_when_to_call_it():
  jax.devices()  # the backend is running in this process
  with pytest.raises(RuntimeError, match='first thing after import jax'):
    parallel.set_cpu_devices(2)


SPLIT_GRADIENTS = r'''
import sys
import jax
jax.config.update('jax_num_cpu_devices', 2)
import numpy as np
from lstm_jax import parallel
sys.path.insert(0, sys.argv[2])
from test_parallel import layer_gradients
out = {}
for loop in ('scan', 'pallas'):
  step, args = layer_gradients(loop)
  placement = parallel.Placement.for_streams(2, 4)
  params, (carry, x) = placement.replicated(args[0]), placement.streams(args[1:], 0)
  hlo = step.lower(params, carry, x).compile().as_text()
  assert 'all-gather' not in hlo, loop  # each device works on its own streams
  assert 'all-reduce' in hlo, loop      # and the weight gradients are summed
  for k, leaf in enumerate(jax.tree.leaves(step(params, carry, x))):
    out[f'{loop}_{k}'] = np.asarray(leaf)
np.savez(sys.argv[1], **out)
'''


def layer_gradients(loop: str):
  """A jitted loss-and-gradients of one LSTM layer over 4 streams, and its arguments."""
  import jax.numpy as jnp
  from lstm_jax import cell as cell_lib, recurrent
  cfg = recurrent.ScanConfig(loop=loop)  # pallas: in the interpreter off a GPU
  key = jax.random.key(0)
  params = cell_lib.init_lstm_params(key, 3, 4)
  carry = cell_lib.LSTMCarry(*(0.1 * jax.random.normal(jax.random.fold_in(key, i), (4, 4))
                               for i in (1, 2)))
  x = jax.random.normal(jax.random.fold_in(key, 3), (4, 8, 3))

  def loss(p, c, xx):
    c, h = recurrent.lstm_layer(p, c, xx, cfg)
    return jnp.sum(h * jnp.sin(h)) + jnp.sum(c.h * c.c)
  return jax.jit(jax.value_and_grad(loss, argnums=(0, 1, 2))), (params, carry, x)


def test_gradients_with_streams_split_over_devices_gather_nothing(tmp_path):
  """Training with the streams split over 2 CPU devices: the scan and the Pallas kernel (whose
  call has no sharding rule of its own) each run on their device's streams, the weight
  gradients are all-reduced, and every gradient equals one device's."""
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  proc = subprocess.run([sys.executable, '-c', SPLIT_GRADIENTS, str(tmp_path / 'g.npz'),
                         os.path.dirname(os.path.abspath(__file__))],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  split = np.load(tmp_path / 'g.npz')
  for loop in ('scan', 'pallas'):
    step, args = layer_gradients(loop)
    for k, leaf in enumerate(jax.tree.leaves(step(*args))):
      np.testing.assert_allclose(split[f'{loop}_{k}'], leaf, rtol=1e-5, atol=1e-6)


SHARDED_STREAMS = r'''
import sys
import numpy as np
from lstm_jax import parallel
parallel.set_cpu_devices(2)
from lstm_jax.inference import TrainedModel
stream = TrainedModel.load(sys.argv[1]).stream(4, chunk_len=64)
x = np.load(sys.argv[2])
y = np.concatenate([stream.push(x[:, :100]), stream.push(x[:, 100:])], axis=1)
assert stream.placement.n_devices == 2, stream.placement.n_devices
assert len(stream.carry[0].h.sharding.device_set) == 2
np.save(sys.argv[3], y)
'''


def test_streams_sharded_over_cpu_devices_match_one_device(tmp_path):
  """StreamingPredictor over 2 CPU devices (a subprocess: the device count is fixed at JAX's
  start) gives every stream what one device gives, across pushes and a partial chunk."""
  import lstm_jax
  from lstm_jax import data as data_lib
  from lstm_jax.inference import TrainedModel
  config = lstm_jax.Config(lstm_sizes=(12, 6), head_sizes=(16,), eval_chunk_len=64)
  model = lstm_jax.build_model(config)
  params = model.init(jax.random.key(0), model.initialize_carry(1),
                      np.zeros((1, 4, 2), np.float32))['params']
  norm_in = data_lib.Normalizer(np.array([0.1, -0.2], np.float32),
                                np.array([0.7, 1.3], np.float32))
  norm_out = data_lib.Normalizer(np.array([0.5], np.float32), np.array([2.0], np.float32))
  trained = TrainedModel(config, params, norm_in, norm_out, 2)
  trained.save(str(tmp_path / 'model'))
  x = np.random.default_rng(0).normal(size=(4, 230, 2)).astype(np.float32)
  np.save(tmp_path / 'x.npy', x)
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  env.pop('XLA_FLAGS', None)
  proc = subprocess.run([sys.executable, '-c', SHARDED_STREAMS, str(tmp_path / 'model'),
                         str(tmp_path / 'x.npy'), str(tmp_path / 'y.npy')],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  stream = trained.stream(4, chunk_len=64)
  assert stream.placement.n_devices == 1  # this process has one CPU device
  one = np.concatenate([stream.push(x[:, :100]), stream.push(x[:, 100:])], axis=1)
  np.testing.assert_allclose(np.load(tmp_path / 'y.npy'), one, rtol=1e-5, atol=1e-6)
