r"""Throughput of our LSTMRegressor against Flax, Keras 3 and PyTorch, alternated in one run.

Examples::

  python -m experiments.benchmark --workload=seed --mode=fwd,train
  python -m experiments.benchmark --workload=wide --mode=train --peers=torch --reps=10
  python -m experiments.benchmark --workload=seed --mode=train --peers= \
      --variants=backward=autodiff,unroll=4,gates=plain

Each system runs in its own process (``lstm_jax.benchmark``); JSON lines go to ``--out`` and a
table with each system's time relative to ours is printed last.
"""
import dataclasses
import sys

from absl import app
from absl import flags

from lstm_jax import benchmark as bench
from lstm_jax import cli
from lstm_jax import inference

WORKLOAD = flags.DEFINE_enum('workload', 'seed', sorted(bench.WORKLOADS), 'Preset sizes.')
MODE = flags.DEFINE_list('mode', ['fwd', 'train'], 'fwd and/or train.')
DTYPE = flags.DEFINE_enum('dtype', 'f32', ['f32', 'bf16'], 'bf16: bf16 matmuls, f32 state.')
UNROLL = flags.DEFINE_integer('unroll', 0, 'Our lax.scan unroll (0: the library picks per '
                             'platform, lstm_jax.recurrent.ScanConfig).')
HOIST = flags.DEFINE_enum('hoist', 'auto', ['auto', 'true', 'false'], 'Our input projection.')
CELL = flags.DEFINE_string('cell', 'lstm', 'Our recurrent cell (lstm_jax.cells registry).')
CELL_OPTIONS = flags.DEFINE_string('cell_options', '', "Our cell's options, 'key=value,...'.")
PLATFORM = flags.DEFINE_string('platform', '', 'JAX_PLATFORMS for the workers: cpu, cuda (gpu '
                               'is read as cuda; torch then runs on CUDA too), tpu.')
PEERS = flags.DEFINE_list('peers', list(bench.PEERS), 'Peers to time: flax,keras,torch.')
VARIANTS = flags.DEFINE_list('variants', [], 'Extra variants of ours, each key=value[+key=value] '
                             '(unroll, hoist, backward, loop, remat, donate, gates=plain, eigen=multi, '
                             'devices=N).')
TORCH_THREADS = flags.DEFINE_list('torch_threads', ['1', '2'], 'One torch worker per count.')
EIGEN = flags.DEFINE_enum('eigen', 'auto', ['auto', 'single', 'multi'],
                          'XLA CPU Eigen threading for every JAX system alike; auto: single '
                          'thread at batch 1 on CPU.')
SMALL_LOOPS = flags.DEFINE_boolean(
    'small_loops', True, 'XLA CPU compiles small while loops as one function '
    '(lstm_jax.recurrent.use_small_loop_kernels, as every lstm_jax main does), for every JAX '
    'system alike; false: XLA\'s default, one runtime kernel per op per step.')
LATENCY = flags.DEFINE_boolean('latency', False, 'Instead of throughput: online-cleaning latency '
                                'per block (p50/p99), for the default model or --model_dir.')
MODEL_DIR = flags.DEFINE_string('model_dir', '', 'With --latency: a trained model/ directory.')
BLOCK_SECONDS = flags.DEFINE_float('block_seconds', 1.0 / 16, 'With --latency: block duration.')
LATENCY_FS = flags.DEFINE_float('latency_fs', 2048.0, 'With --latency: sampling rate in Hz.')
PEAK = flags.DEFINE_boolean('peak', True, 'Also time a square matmul (the GFLOP/s peak).')
PEAK_N = flags.DEFINE_integer('peak_n', 2048, 'Size of the peak matmul (8192 fills a GPU).')
CONCURRENT_START = flags.DEFINE_boolean(
    'concurrent_start', False, 'Start and compile all workers at once (a many-core host); '
    'timing stays one call at a time.')
REPS = flags.DEFINE_integer('reps', 15, 'Timed calls per system and process (>= 10).')
PROCESSES = flags.DEFINE_integer(
    'processes', 1, 'Worker processes per system, their calls pooled (one program can run '
    'faster in one process than in another on a shared CPU).')
WARM_CALLS = flags.DEFINE_integer(
    'warm_calls', 1, 'Untimed calls each worker makes right before each timed call, so that a '
    'timed call runs as in a loop of back-to-back calls (training), not after idling while '
    'the other workers ran (0: docs/performance.md, "How it is measured").')
PRECISION = flags.DEFINE_enum('precision', 'float32', list(bench.PRECISIONS),
                              "Every system's f32 products: float32 in full, or tf32 where the "
                              'GPU offers it (lstm_jax.benchmark.PRECISIONS).')
OUT = flags.DEFINE_string('out', 'results/bench_runs.jsonl', 'JSON lines are appended here.')
BATCH = flags.DEFINE_integer('batch', None, 'Overrides the workload batch.')
STEPS = flags.DEFINE_integer('steps', None, 'Overrides the time steps per chunk.')
INPUTS = flags.DEFINE_integer('inputs', None, 'Overrides the input channels.')
LSTM_SIZES = flags.DEFINE_list('lstm_sizes', None, 'Overrides the LSTM sizes.')
HEAD_SIZES = flags.DEFINE_list('head_sizes', None, 'Overrides the head sizes ("" for none).')


def _systems(w):
  eigen = EIGEN.value
  if eigen == 'auto':
    eigen = 'single' if w.batch == 1 and PLATFORM.value in ('', 'cpu') else 'multi'
  jax_flags = bench.EIGEN_SINGLE_THREAD if eigen == 'single' else ''
  ours = {'unroll': UNROLL.value, 'hoist': HOIST.value, 'precision': PRECISION.value}
  if CELL.value != 'lstm' or CELL_OPTIONS.value:
    ours.update(cell=CELL.value, cell_options=CELL_OPTIONS.value)
  systems = [bench.System('ours', 'ours', ours, jax_flags)]
  for text in VARIANTS.value:
    opts = dict(ours, **dict(kv.split('=', 1) for kv in text.split('+')))
    flags_ = {'multi': '', 'single': bench.EIGEN_SINGLE_THREAD}.get(opts.pop('eigen', eigen))
    systems.append(bench.System(f'ours[{text}]', 'ours', opts, flags_))
  for peer in PEERS.value:
    if peer not in bench.PEERS:
      raise ValueError(f'--peers: unknown peer {peer!r}; choose from {bench.PEERS}')
    if not bench.peer_available(peer):
      print(f'peer {peer} is not installed: skipped', file=sys.stderr)
    elif peer == 'torch':
      systems += [bench.System(f'torch[{n} thr]', 'torch',
                               {'threads': int(n), 'precision': PRECISION.value})
                  for n in TORCH_THREADS.value]
    else:
      systems.append(bench.System(peer, peer, {'precision': PRECISION.value}, jax_flags))
  return systems


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def run():
    if LATENCY.value:
      trained = inference.TrainedModel.load(MODEL_DIR.value) if MODEL_DIR.value else None
      records = inference.online_latency(trained, LATENCY_FS.value, BLOCK_SECONDS.value)
      bench.write_jsonl(OUT.value, [dict(r, workload_name='online_latency') for r in records])
      for r in records:
        print(f"block {r['block_size']} samples ({r['block_seconds'] * 1e3:.1f} ms), chunk_len "
              f"{r['chunk_len']}: p50 {r['p50_us']:.0f} us, p99 {r['p99_us']:.0f} us, "
              f"{r['realtime_factor']:.0f}x faster than real time at p99 ({r['device_kind']})")
      return
    if REPS.value < 10:
      raise ValueError(f'--reps must be >= 10, got {REPS.value}')
    if PROCESSES.value < 1:
      raise ValueError(f'--processes must be >= 1, got {PROCESSES.value}')
    if WARM_CALLS.value < 0:
      raise ValueError(f'--warm_calls must be >= 0, got {WARM_CALLS.value}')
    sizes = {k: f.value for k, f in (('batch', BATCH), ('steps', STEPS), ('inputs', INPUTS))
             if f.value is not None}
    for k, f in (('lstm_sizes', LSTM_SIZES), ('head_sizes', HEAD_SIZES)):
      if f.value is not None:
        sizes[k] = tuple(int(v) for v in f.value if v)
    w = dataclasses.replace(bench.WORKLOADS[WORKLOAD.value], **sizes)
    peak = None
    if PEAK.value:
      n = PEAK_N.value
      rec, = bench.measure([bench.System(f'matmul {n}^2', 'matmul', {'n': n})], w, 'fwd',
                           DTYPE.value, 10, PLATFORM.value)
      peak = rec['gflop_per_s']
      bench.write_jsonl(OUT.value, [dict(rec, workload_name='matmul_peak')])
    for mode in MODE.value:
      if mode not in ('fwd', 'train'):
        raise ValueError(f'--mode: expected fwd or train, got {mode!r}')
      records = bench.measure(_systems(w), w, mode, DTYPE.value, REPS.value, PLATFORM.value,
                              concurrent_start=CONCURRENT_START.value,
                              processes=PROCESSES.value, warm_calls=WARM_CALLS.value)
      for r in records:
        r['workload_name'] = WORKLOAD.value
      bench.write_jsonl(OUT.value, records)
      print(f'\n== {WORKLOAD.value} {mode} {DTYPE.value}: {dataclasses.asdict(w)} on '
            f'{bench.cpu_name()} ({records[0]["device_kind"]})')
      print(bench.format_table(records, peak))

  sys.exit(cli.run_user_main(run, small_loops=SMALL_LOOPS.value))


if __name__ == '__main__':
  app.run(main)
