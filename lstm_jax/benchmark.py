"""Throughput benchmark: our ``LSTMRegressor`` against Flax, Keras 3 and PyTorch LSTMs.

Every system (ours included) runs in its own worker process, so each gets the same XLA flags,
thread settings and a clean allocator; the parent only orchestrates and never runs JAX. A
worker builds its model, compiles (timed apart) and warms up, then times one call per request
(``block_until_ready`` / ``torch`` is synchronous on CPU). The parent asks the workers in turn,
rotating the order each round, so slow drifts of this shared machine hit every system alike.

A *call* is one chunk: ``fwd`` = inference with the carry in and out; ``train`` = forward,
backward and an Adam update, the carry continuing the chunk (what training does).
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Callable, NamedTuple, Optional

EIGEN_SINGLE_THREAD = '--xla_cpu_multi_thread_eigen=false'


@dataclasses.dataclass(frozen=True)
class Workload:
  batch: int
  steps: int  # time steps per chunk
  inputs: int
  lstm_sizes: tuple
  head_sizes: tuple
  out_size: int = 1


WORKLOADS = {
    'seed': Workload(1, 2048, 2, (64, 16, 8), (128, 16, 8)),
    'wide': Workload(64, 512, 32, (256,), ()),
    'long': Workload(8, 16384, 8, (128, 128), ()),
}

PEERS = ('flax', 'keras', 'torch')


def workload_flops(w: Workload, mode: str) -> float:
  """Matmul FLOPs of one call (a train step counts forward + two backward matmuls)."""
  fwd, n_in = 0, w.inputs
  for n in w.lstm_sizes:
    fwd += 2 * w.batch * w.steps * (n_in + n) * 4 * n
    n_in = n
  for n in tuple(w.head_sizes) + (w.out_size,):
    fwd += 2 * w.batch * w.steps * n_in * n
    n_in = n
  return float(fwd if mode == 'fwd' else 3 * fwd)


def cpu_name() -> str:
  from lstm_jax.parallel import usable_cores  # the cores this process may use, not the host's
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return f'{line.split(":", 1)[1].strip()} x{usable_cores()}'
  except OSError:
    pass
  return f'{platform.processor() or "cpu"} x{usable_cores()}'


# --------------------------------------------------------------------------- data (numpy)

def _data(w: Workload, seed: int = 0):
  import numpy as np
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((w.batch, w.steps, w.inputs)).astype(np.float32)
  y = rng.standard_normal((w.batch, w.steps, w.out_size)).astype(np.float32)
  return x, y


LR = 1e-3


class Built(NamedTuple):
  call: Callable[[], None]  # one timed call, blocking until the result is ready
  compile_s: float
  info: dict


# --------------------------------------------------------------------------- ours

def _compile(fn, *args):
  t0, cpu0 = time.perf_counter(), time.process_time()
  compiled = fn.lower(*args).compile()
  compile_s = time.perf_counter() - t0
  info = {'compile_cpu_s': time.process_time() - cpu0}  # trace + compile, robust to load
  try:
    mem = compiled.memory_analysis()
    info['temp_mb'] = round(mem.temp_size_in_bytes / 2**20, 2)
  except Exception:  # pylint: disable=broad-except
    pass
  return compiled, compile_s, info


def _jax_runner(apply_fn, params, carry, x, y, mode, optimizer, donate=True,
                compiler_options=None):
  """Jitted fwd or train call over a ``(carry, x) -> (carry, y)`` model; returns Built.

  ``compiler_options`` go to both programs (ours: ``ScanConfig.compiler_options``, what the
  library's own training and streaming inference pass)."""
  import jax
  import jax.numpy as jnp
  import optax

  if mode == 'fwd':
    fn = jax.jit(apply_fn, donate_argnums=(1,) if donate else (),
                 compiler_options=compiler_options)
    compiled, compile_s, info = _compile(fn, params, carry, x)
    state = {'carry': carry}

    def call():
      state['carry'], out = compiled(params, state['carry'], x)
      jax.block_until_ready(out)
  else:
    def loss_fn(p, c, xx, yy):
      c, pred = apply_fn(p, c, xx)
      return jnp.mean(jnp.square(pred - yy)), jax.lax.stop_gradient(c)

    def step(train_state, xx, yy):
      p, opt_state, c = train_state
      (loss, c), grads = jax.value_and_grad(loss_fn, has_aux=True)(p, c, xx, yy)
      updates, opt_state = optimizer.update(grads, opt_state, p)
      return (optax.apply_updates(p, updates), opt_state, c), loss

    fn = jax.jit(step, donate_argnums=(0,) if donate else (),
                 compiler_options=compiler_options)
    init = (params, optimizer.init(params), carry)
    compiled, compile_s, info = _compile(fn, init, x, y)
    state = {'s': init}

    def call():
      state['s'], loss = compiled(state['s'], x, y)
      jax.block_until_ready(loss)
  return Built(call, compile_s, info)


# ``pallas_form`` option values: (resident_weights, prefetch) of ``pallas_loop.KernelForm``
# (plain: the weight re-read from cache each step; the library's default is resident).
PALLAS_FORMS = {'plain': (False, False), 'resident': (True, False), 'prefetch': (False, True),
                'both': (True, True)}


def build_ours(w: Workload, mode: str, dtype: str, options: dict) -> Built:
  """Our public ``LSTMRegressor`` + optax Adam, as training runs it.

  ``options`` (all optional): unroll, hoist (true|false), backward, layout,
  loop (auto|scan|pallas), remat, donate, xla_options
  (auto|none: ``ScanConfig.compiler_options``, as the library's training and streaming pass
  them, or XLA's defaults), gates (fused|plain: the one-tanh gate activation or one function
  per gate), pallas_form (plain|resident|prefetch|both:
  ``pallas_loop.KernelForm``, resident weights and/or prefetched inputs, for the layers that run
  on the Pallas loop), cell and cell_options (``lstm_jax.cells``;
  default lstm), devices (auto|N: the batch sharded over N devices; auto: as
  ``StreamingPredictor`` shards inference, ``parallel.inference_shards``, and one device for
  training; on CPU the worker shows JAX one device per core, ``worker_devices``).
  """
  import jax
  import jax.numpy as jnp
  import optax
  from lstm_jax import cell as cell_lib
  from lstm_jax import pallas_loop
  from lstm_jax import parallel
  from lstm_jax import recurrent
  from lstm_jax.model import LSTMRegressor

  hoist = options.get('hoist')
  scan = recurrent.ScanConfig(
      hoist_input=None if hoist in (None, 'auto') else str(hoist).lower() == 'true',
      unroll=int(options.get('unroll', 0)), backward=options.get('backward', 'custom'),
      matmul_dtype='bfloat16' if dtype == 'bf16' else 'float32',
      remat=str(options.get('remat', 'false')).lower() == 'true',
      layout=options.get('layout', 'auto'), loop=options.get('loop', 'auto'))
  if options.get('gates', 'fused') == 'plain':
    # Ablation of the one-tanh trick, in this worker process only.
    cell_lib.activate_gates = cell_lib.activate_gates_plain
  if 'pallas_form' in options:  # this worker's kernel form, as the gates ablation above
    if options['pallas_form'] not in PALLAS_FORMS:
      raise ValueError(f'pallas_form must be one of {sorted(PALLAS_FORMS)}, got '
                       f'{options["pallas_form"]!r}')
    pallas_loop.FORM = pallas_loop.KernelForm(*PALLAS_FORMS[options['pallas_form']])
  model = LSTMRegressor(lstm_sizes=w.lstm_sizes, head_sizes=w.head_sizes, out_size=w.out_size,
                        head_activation='leaky_relu', output_activation='linear', scan=scan,
                        cell=options.get('cell', 'lstm'),
                        cell_options=options.get('cell_options', ''))
  x, y = (jnp.asarray(a) for a in _data(w))
  carry = model.initialize_carry(w.batch)
  params = model.init(jax.random.key(0), carry, x)['params']
  devices = options.get('devices', 'auto')
  if devices == 'auto' and mode == 'fwd':
    placement = parallel.Placement.for_inference(w.batch, w.lstm_sizes, scan, model.cell)
  else:
    placement = parallel.Placement.for_streams(1 if devices == 'auto' else int(devices), w.batch)
  params = placement.replicated(params)
  carry, x, y = placement.streams((carry, x, y), 0)
  apply_fn = lambda p, c, xx: model.apply({'params': p}, c, xx)
  donate = str(options.get('donate', 'true')).lower() == 'true'
  # The XLA options the library uses (train.make_train_step, inference.StreamingPredictor).
  xla_options = (scan.compiler_options(w.batch)
                 if options.get('xla_options', 'auto') == 'auto' else None)
  built = _jax_runner(apply_fn, params, carry, x, y, mode, optax.adam(LR), donate,
                      compiler_options=xla_options)
  built.info.update(scan=dataclasses.asdict(scan), hoisted=scan.hoisted(),
                    devices=placement.n_devices)
  return built


def worker_devices(system: str, w: Workload, mode: str, options: dict) -> int:
  """How many CPU devices a worker shows JAX before its backend starts (1: JAX's default).

  Ours with ``devices=auto`` gets as many as ``parallel.inference_shards`` shards its inference
  over with one device per core (the rule ``StreamingPredictor`` follows); an explicit
  ``devices=N`` gets N. Peers and training keep JAX's one CPU device.
  """
  if system != 'ours' or options.get('platform', '') not in ('', 'cpu'):
    return 1
  devices = options.get('devices', 'auto')
  if devices != 'auto':
    return int(devices)
  if mode != 'fwd':
    return 1
  from lstm_jax import parallel
  # JAX must not start here, so the Pallas rule is read from the option: on CPU only an
  # explicit loop=pallas runs a layer on the kernel loop.
  return parallel.inference_shards(w.batch, w.lstm_sizes, parallel.usable_cores(), 'cpu',
                                   kernel_loop=options.get('loop') in ('pallas', 'pallas_stack'))


# --------------------------------------------------------------------------- peers

def build_flax(w: Workload, mode: str, dtype: str, options: dict) -> Built:
  """``nn.RNN(nn.OptimizedLSTMCell)`` layers, the same head, optax Adam."""
  del options
  import flax.linen as nn
  import jax
  import jax.numpy as jnp
  import optax

  compute = jnp.bfloat16 if dtype == 'bf16' else jnp.float32

  class FlaxStack(nn.Module):

    @nn.compact
    def __call__(self, carries, x):
      new, h = [], x
      for n, c in zip(w.lstm_sizes, carries):
        c, h = nn.RNN(nn.OptimizedLSTMCell(n, dtype=compute), return_carry=True)(
            h, initial_carry=c)
        new.append(c)
      for n in w.head_sizes:
        h = nn.leaky_relu(nn.Dense(n)(h), 0.01)
      return tuple(new), nn.Dense(w.out_size)(h).astype(jnp.float32)

  model = FlaxStack()
  x, y = (jnp.asarray(a) for a in _data(w))
  carry = tuple((jnp.zeros((w.batch, n)), jnp.zeros((w.batch, n))) for n in w.lstm_sizes)
  params = model.init(jax.random.key(0), carry, x)['params']
  apply_fn = lambda p, c, xx: model.apply({'params': p}, c, xx)
  return _jax_runner(apply_fn, params, carry, x, y, mode, optax.adam(LR))


def build_keras(w: Workload, mode: str, dtype: str, options: dict) -> Built:
  """Keras 3 ``LSTM`` layers on the JAX backend, run through ``stateless_call`` under jit.

  That is Keras' documented path for a JAX training loop (no per-call Python overhead of
  ``train_on_batch``); the optimizer is the same optax Adam as ours.
  """
  del options
  os.environ['KERAS_BACKEND'] = 'jax'
  import keras
  import jax.numpy as jnp

  if dtype == 'bf16':
    keras.mixed_precision.set_dtype_policy('mixed_bfloat16')
  x_in = keras.Input(shape=(w.steps, w.inputs), batch_size=w.batch)
  state_in, state_out, h = [], [], x_in
  for n in w.lstm_sizes:
    s = [keras.Input(shape=(n,), batch_size=w.batch), keras.Input(shape=(n,), batch_size=w.batch)]
    h, sh, sc = keras.layers.LSTM(n, return_sequences=True, return_state=True,
                                  recurrent_activation='sigmoid')(h, initial_state=s)
    state_in += s
    state_out += [sh, sc]
  for n in w.head_sizes:
    h = keras.layers.LeakyReLU(negative_slope=0.01)(keras.layers.Dense(n)(h))
  out = keras.layers.Dense(w.out_size, dtype='float32')(h)
  model = keras.Model([x_in] + state_in, [out] + state_out)
  trainable = [v.value for v in model.trainable_variables]
  non_trainable = [v.value for v in model.non_trainable_variables]
  x, y = (jnp.asarray(a) for a in _data(w))
  carry = [jnp.zeros((w.batch, n)) for n in w.lstm_sizes for _ in range(2)]

  def apply_fn(p, c, xx):
    outs, _ = model.stateless_call(p, non_trainable, [xx] + list(c))
    return list(outs[1:]), outs[0]

  import optax
  return _jax_runner(apply_fn, trainable, carry, x, y, mode, optax.adam(LR))


def build_torch(w: Workload, mode: str, dtype: str, options: dict) -> Built:
  """PyTorch ``nn.LSTM`` layers (MKL/oneDNN on CPU, cuDNN on GPU), the same head, Adam."""
  import torch

  torch.set_num_threads(int(options.get('threads', 1)))
  # Like with like: TF32 in cuDNN's RNN and in matmuls only where every system may use it.
  tf32 = options.get('precision', 'float32') == 'tf32'
  torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = tf32
  torch.manual_seed(0)
  device = ('cuda' if options.get('platform') in ('gpu', 'cuda') and torch.cuda.is_available()
            else 'cpu')

  class TorchStack(torch.nn.Module):

    def __init__(self):
      super().__init__()
      sizes = (w.inputs,) + tuple(w.lstm_sizes)
      self.lstms = torch.nn.ModuleList(torch.nn.LSTM(a, b, batch_first=True)
                                       for a, b in zip(sizes[:-1], sizes[1:]))
      head, n_in = [], sizes[-1]
      for n in w.head_sizes:
        head += [torch.nn.Linear(n_in, n), torch.nn.LeakyReLU(0.01)]
        n_in = n
      self.head = torch.nn.Sequential(*head, torch.nn.Linear(n_in, w.out_size))

    def forward(self, states, x):
      new = []
      for lstm, s in zip(self.lstms, states):
        x, s = lstm(x, s)
        new.append(s)
      return new, self.head(x)

  model = TorchStack().to(device)
  x, y = (torch.from_numpy(a).to(device) for a in _data(w))
  zeros = lambda n: torch.zeros(1, w.batch, n, device=device)
  state = {'c': [(zeros(n), zeros(n)) for n in w.lstm_sizes]}
  autocast = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == 'bf16')
  sync = torch.cuda.synchronize if device == 'cuda' else (lambda: None)
  if mode == 'fwd':
    def call():
      with torch.inference_mode(), autocast():
        state['c'], out = model(state['c'], x)
      sync()
  else:
    opt = torch.optim.Adam(model.parameters(), lr=LR)

    def call():
      opt.zero_grad(set_to_none=True)
      with autocast():
        carry, pred = model(state['c'], x)
        loss = torch.mean(torch.square(pred.float() - y))
      loss.backward()
      opt.step()
      state['c'] = [(h.detach(), c.detach()) for h, c in carry]
      sync()
  return Built(call, 0.0, {'threads': torch.get_num_threads(), 'device': device,
                           'device_kind': (torch.cuda.get_device_name() if device == 'cuda'
                                           else 'cpu'),
                           'torch': torch.__version__,
                           'cudnn': (torch.backends.cudnn.version() if device == 'cuda'
                                     else None),
                           'n_params': sum(p.numel() for p in model.parameters())})


def build_matmul(w: Workload, mode: str, dtype: str, options: dict) -> Built:
  """The machine's matmul peak: a large f32 (or bf16) ``jnp.dot``."""
  del w, mode
  import jax
  import jax.numpy as jnp
  n = int(options.get('n', 2048))
  dt = jnp.bfloat16 if dtype == 'bf16' else jnp.float32
  a = jax.random.normal(jax.random.key(0), (n, n), dt)
  fn = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.float32))
  compiled, compile_s, info = _compile(fn, a, a)

  def call():
    compiled(a, a).block_until_ready()
  info['flops'] = 2.0 * n**3
  return Built(call, compile_s, info)


# The f32 products every system computes: ``float32`` in full (JAX's matmul precision setting,
# which our cuDNN loop follows too, and PyTorch's allow_tf32 switches off), or ``tf32`` where
# the GPU offers it (JAX's default, PyTorch's cuDNN default). The Pallas kernels compute in f32
# either way.
PRECISIONS = ('float32', 'tf32')

BUILDERS = {'ours': build_ours, 'flax': build_flax, 'keras': build_keras, 'torch': build_torch,
            'matmul': build_matmul}


def worker_main(spec_json: str) -> None:
  """A worker process: build, compile, warm up, then one timed call per line on stdin."""
  spec = json.loads(spec_json)
  out = sys.stdout
  sys.stdout = sys.stderr  # libraries' chatter must not corrupt the protocol
  w = Workload(**{k: tuple(v) if isinstance(v, list) else v for k, v in spec['workload'].items()})
  n_cpu = worker_devices(spec['system'], w, spec['mode'], spec.get('options', {}))
  if n_cpu > 1:
    from lstm_jax import parallel
    parallel.set_cpu_devices(n_cpu)
  precision = spec.get('options', {}).get('precision', 'float32')
  if precision not in PRECISIONS:
    raise ValueError(f'precision must be one of {PRECISIONS}, got {precision!r}')
  if precision == 'float32' and spec['system'] != 'torch':
    import jax  # f32 products in full (on a GPU JAX's default f32 dot is TF32-class)
    jax.config.update('jax_default_matmul_precision', 'float32')
  built = BUILDERS[spec['system']](w, spec['mode'], spec['dtype'], spec.get('options', {}))
  calls = spec.get('warmup', 2)
  for _ in range(calls):
    built.call()
  info = dict(built.info, xla_flags_env=os.environ.get('XLA_FLAGS', ''), precision=precision)
  if spec['system'] != 'torch':
    import jax
    info['device_kind'] = jax.devices()[0].device_kind
    info['jax'] = jax.__version__
  out.write(json.dumps({'ready': True, 'compile_s': built.compile_s, 'info': info}) + '\n')
  out.flush()
  warm_calls = spec.get('warm_calls', 0)
  for line in sys.stdin:
    if line.strip() != 'run':
      break
    for _ in range(warm_calls):  # untimed, right before the timed call
      built.call()
    t0, cpu0 = time.perf_counter(), time.process_time()
    built.call()
    wall = time.perf_counter() - t0
    calls += 1 + warm_calls
    out.write(json.dumps({'t': wall, 'cpu': time.process_time() - cpu0, 'calls': calls}) + '\n')
    out.flush()


# --------------------------------------------------------------------------- orchestration

class System(NamedTuple):
  """One process to time: a label, a builder name, its options and extra XLA flags."""
  label: str
  system: str
  options: dict
  xla_flags: str = ''


class Worker:
  """A persistent worker subprocess speaking one JSON line per request."""

  def __init__(self, sys_: System, w: Workload, mode: str, dtype: str, platform_: str,
               warmup: int, replica: int = 0, warm_calls: int = 0):
    self.sys = sys_
    self.replica = replica  # which of a system's worker processes (measure's ``processes``)
    spec = {'system': sys_.system, 'workload': dataclasses.asdict(w), 'mode': mode,
            'dtype': dtype, 'options': dict(sys_.options, platform=platform_), 'warmup': warmup,
            'warm_calls': warm_calls}
    env = dict(os.environ, XLA_FLAGS=(os.environ.get('XLA_FLAGS', '') + ' ' + sys_.xla_flags).strip(),
               KERAS_BACKEND='jax', PYTHONPATH=os.pathsep.join(
                   [os.path.dirname(os.path.dirname(os.path.abspath(__file__)))] + sys.path))
    if platform_:
      # Under JAX_PLATFORMS=gpu every JAX worker failed on jax 0.11.2 (H200); cuda ran.
      env['JAX_PLATFORMS'] = 'cuda' if platform_ == 'gpu' else platform_
    if platform_ not in ('', 'cpu'):
      # Several JAX workers share one accelerator: each takes memory as it needs it instead
      # of the default 75% of the device at start.
      env.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')
    self.log = tempfile.TemporaryFile(mode='w+')
    self.proc = subprocess.Popen(
        [sys.executable, '-c', 'import sys; from lstm_jax import benchmark; '
         'benchmark.worker_main(sys.argv[1])', json.dumps(spec)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log, text=True, env=env)
    self.ready: Optional[dict] = None
    self.wall_s: list = []  # every timed call's wall-clock and process CPU seconds
    self.cpu_s: list = []
    self.calls = 0  # every call the worker has made, warm-up and untimed ones included

  def _read(self) -> dict:
    line = self.proc.stdout.readline()
    if not line:
      self.proc.wait()
      self.log.seek(0)
      tail = self.log.read()[-3000:]
      raise RuntimeError(f'worker {self.sys.label} died (exit {self.proc.returncode}):\n{tail}')
    return json.loads(line)

  def wait_ready(self) -> dict:
    self.ready = self._read()
    return self.ready

  def time_once(self) -> None:
    """One timed call; its wall-clock and process CPU seconds go to ``wall_s``/``cpu_s``."""
    self.proc.stdin.write('run\n')
    self.proc.stdin.flush()
    reply = self._read()
    self.wall_s.append(reply['t'])
    self.cpu_s.append(reply['cpu'])
    self.calls = reply['calls']

  def close(self):
    if self.proc.poll() is None:
      try:
        self.proc.stdin.write('quit\n')
        self.proc.stdin.flush()
      except BrokenPipeError:
        pass
      self.proc.wait(timeout=30)


def peer_available(name: str) -> bool:
  module = {'flax': 'flax', 'keras': 'keras', 'torch': 'torch', 'ours': 'jax',
            'matmul': 'jax'}[name]
  return importlib.util.find_spec(module) is not None


def measure(systems: list, w: Workload, mode: str, dtype: str, reps: int, platform_: str = '',
            warmup: int = 2, log: Callable[[str], None] = print,
            concurrent_start: bool = False, processes: int = 1, warm_calls: int = 0) -> list:
  """Times every system ``reps`` times, alternating them; returns one record per system.

  Workers start one after another (compiling alone, so compile times are not inflated by a
  neighbour), or all at once with ``concurrent_start`` (for a many-core host, where the
  start-ups would otherwise dominate a run), then idle on stdin while the others run.
  Timing is always one call at a time.

  ``processes`` > 1 starts that many workers per system and gives each ``reps`` calls; a
  system's figures pool its workers' calls. On a shared CPU one program's median moved by up
  to 23% from one process to another (docs/performance.md, "How it is measured"), a bias that
  alternation within a run cannot remove; the record keeps each worker's median
  (``process_us_per_step``).

  ``warm_calls``: untimed calls a worker makes right before each timed one, in the same turn,
  so that the timed call runs as in a training loop's back-to-back calls. With 0 it starts
  after its process idled while the others ran: on the 2-core VM, our seed train step took
  about 9% longer so (Flax: within noise), and 1.4x longer after a 0.1 s sleep in one process
  (docs/performance.md, "How it is measured").
  """
  if processes < 1:
    raise ValueError(f'processes must be >= 1, got {processes}')
  if warm_calls < 0:
    raise ValueError(f'warm_calls must be >= 0, got {warm_calls}')
  workers = []

  def admit(wk: Worker):
    try:
      wk.wait_ready()
    except RuntimeError as e:
      # The error's own line, not JAX's closing note about filtered frames.
      lines = [l for l in str(e).splitlines() if l.strip() and not l.startswith(
          ('For simplicity', '----'))]
      log(f'skipping {wk.sys.label}: {lines[-1] if lines else e}')
      return
    log(f'{wk.sys.label}{f" (process {wk.replica + 1})" if processes > 1 else ""}: '
        f'compiled in {wk.ready["compile_s"]:.2f} s '
        f'({wk.ready["info"].get("compile_cpu_s", 0.0):.2f} s CPU)')
    workers.append(wk)

  try:
    started = (Worker(s, w, mode, dtype, platform_, warmup, k, warm_calls)
               for s in systems for k in range(processes))
    # list(): every process starts before the first is waited for.
    for wk in (list(started) if concurrent_start else started):
      admit(wk)
    for r in range(reps):
      order = workers[r % len(workers):] + workers[:r % len(workers)] if workers else []
      for wk in order:
        wk.time_once()
  finally:
    for wk in workers:
      wk.close()
  records = []
  for label in dict.fromkeys(wk.sys.label for wk in workers):
    group = [wk for wk in workers if wk.sys.label == label]
    wk = group[0]
    wall_s = [t for g in group for t in g.wall_s]
    cpu_s = [c for g in group for c in g.cpu_s]
    ts = sorted(wall_s)
    med = statistics.median(ts)
    q1, q3 = ts[len(ts) // 4], ts[(3 * len(ts)) // 4]
    info = wk.ready['info']
    flops = info.pop('flops', None) or workload_flops(w, mode)
    records.append({
        'system': wk.sys.label, 'builder': wk.sys.system, 'options': wk.sys.options,
        'xla_flags': wk.sys.xla_flags, 'workload': dataclasses.asdict(w), 'mode': mode,
        'dtype': dtype, 'reps': len(ts), 'median_s': med, 'min_s': ts[0], 'max_s': ts[-1],
        'iqr_s': q3 - q1, 'spread_pct': 100.0 * (q3 - q1) / med,
        'us_per_step': 1e6 * med / w.steps, 'steps_per_s': w.steps / med,
        'samples_per_s': w.batch * w.steps / med, 'gflop_per_s': flops / med / 1e9,
        'cpu_us_per_step': 1e6 * statistics.median(cpu_s) / w.steps,
        'compile_s': statistics.median(g.ready['compile_s'] for g in group),
        'device_kind': info.get('device_kind', 'cpu'),
        'cpu': cpu_name(), 'info': info, 'times_s': wall_s,
        'cpu_times_s': cpu_s, 'load_avg': os.getloadavg(),
        'unix_time': time.time(), 'processes': len(group), 'warm_calls': warm_calls,
        'process_us_per_step': [1e6 * statistics.median(g.wall_s) / w.steps for g in group],
        'process_calls': [g.calls for g in group],
    })
  return records


def format_table(records: list, peak_gflops: Optional[float] = None) -> str:
  """One line per system; ``x ours`` is the peer's median over ours (> 1: we are faster).

  ``us/step`` is the wall-clock median per time step (``x ours`` compares those), ``spread%`` the interquartile range over
  it, ``cpu us`` the median process CPU time per step (all threads: robust to a loaded machine
  for single-threaded systems, larger than wall time for multi-threaded ones; ``cpu x ours``
  compares those).
  """
  ours = next((r for r in records if r['builder'] == 'ours'), None)
  head = f'{"system":<28} {"us/step":>9} {"spread%":>8} {"cpu us":>7} {"steps/s":>10} ' \
         f'{"GFLOP/s":>8} {"compile s":>9} {"x ours":>7} {"cpu x ours":>10}'
  lines = [head, '-' * len(head)]
  for r in records:
    ratio = r['median_s'] / ours['median_s'] if ours else float('nan')
    cpu_ratio = r['cpu_us_per_step'] / ours['cpu_us_per_step'] if ours else float('nan')
    lines.append(f'{r["system"]:<28} {r["us_per_step"]:>9.2f} {r["spread_pct"]:>8.1f} '
                 f'{r["cpu_us_per_step"]:>7.2f} {r["steps_per_s"]:>10.0f} {r["gflop_per_s"]:>8.2f} {r["compile_s"]:>9.2f} '
                 f'{ratio:>7.2f} {cpu_ratio:>10.2f}')
  if ours:
    peers = [r for r in records if r['builder'] in PEERS]
    if peers:
      best = min(peers, key=lambda r: r['median_s'])
      best_cpu = min(peers, key=lambda r: r['cpu_us_per_step'])
      lines.append(f'ours vs fastest peer: {best["median_s"] / ours["median_s"]:.2f}x wall '
                   f'({best["system"]}), {best_cpu["cpu_us_per_step"] / ours["cpu_us_per_step"]:.2f}x '
                   f'CPU time ({best_cpu["system"]})')
    if peak_gflops:
      lines.append(f'ours reaches {ours["gflop_per_s"]:.2f} GFLOP/s = '
                   f'{100 * ours["gflop_per_s"] / peak_gflops:.1f}% of the measured matmul peak '
                   f'({peak_gflops:.1f} GFLOP/s)')
  if any(len(r.get('process_us_per_step', ())) > 1 for r in records):
    lines.append('us/step median of each worker process: ' + '; '.join(
        f'{r["system"]} ' + ', '.join(f'{v:.2f}' for v in r['process_us_per_step'])
        for r in records))
  return '\n'.join(lines)


def write_jsonl(path: str, records: list) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, 'a') as f:
    for r in records:
      f.write(json.dumps(r) + '\n')


def tables_from_jsonl(path: str) -> str:
  """The tables of a results file again, one per (workload, mode, dtype, run)."""
  groups, peak = {}, None
  with open(path) as f:
    for line in f:
      r = json.loads(line)
      if r.get('workload_name') == 'matmul_peak':
        peak = r['gflop_per_s']
        continue
      key = (r.get('workload_name'), r['mode'], r['dtype'])
      groups.setdefault(key, []).append(r)
  return '\n\n'.join(f'== {k[0]} {k[1]} {k[2]}\n' + format_table(v, peak) for k, v in groups.items())
