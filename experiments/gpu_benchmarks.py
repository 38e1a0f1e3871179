r"""The GPU check in one call: every loop's parity with the scan, then every workload and mode
for ours on each loop (auto, scan, pallas, pallas_stack, cudnn), Flax and PyTorch (cuDNN).

On a lent device (one call of the device tool; on an H200 every loop and peer for seed and long
took about 6.5 minutes, most of it compiling, so give wide its own call)::

  python -m experiments.gpu_benchmarks --out=$OUT

Before spending one, the same program on CPU (the Pallas loops in the interpreter, cuDNN
skipped with its reason)::

  python -m experiments.gpu_benchmarks --platform=cpu --quick --out=/tmp/gpu_dry

Writes ``gpu_parity.json`` (environment, parity, ratios to PyTorch) and ``gpu_bench.jsonl``
(``lstm_jax.gpu_suite``).
"""
import os
import sys

from absl import app
from absl import flags

from lstm_jax import benchmark as bench
from lstm_jax import cli
from lstm_jax import gpu_suite

PLATFORM = flags.DEFINE_enum('platform', 'cuda', ['cuda', 'cpu'], 'Where JAX runs.')
QUICK = flags.DEFINE_boolean('quick', False, 'A dry run: 16 steps per chunk, at most 4 streams.')
OUT = flags.DEFINE_string('out', 'gpu_out', 'Directory for gpu_parity.json and gpu_bench.jsonl.')
WORKLOADS = flags.DEFINE_list('workloads', ['seed', 'long', 'wide'], 'Workloads to time.')
LOOPS = flags.DEFINE_list('loops', list(gpu_suite.LOOPS), 'Our loops to check and time.')
PEERS = flags.DEFINE_list('peers', ['flax', 'torch'], 'Peers to time.')
REPS = flags.DEFINE_integer('reps', 10, 'Timed calls per system.')
MODES = flags.DEFINE_list('modes', ['fwd', 'train'], 'Modes to time: fwd and/or train.')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  # Before JAX starts: this process's platform, and memory taken as needed (workers share it).
  os.environ['JAX_PLATFORMS'] = PLATFORM.value
  os.environ.setdefault('XLA_PYTHON_CLIENT_PREALLOCATE', 'false')

  def run():
    for name, given, known in [('loops', LOOPS.value, gpu_suite.LOOPS),
                               ('modes', MODES.value, ('fwd', 'train')),
                               ('workloads', WORKLOADS.value, sorted(bench.WORKLOADS))]:
      unknown = sorted(set(given) - set(known))
      if unknown:
        raise ValueError(f'--{name}: unknown {unknown}; choose from {list(known)}')
    summary = gpu_suite.run(OUT.value, PLATFORM.value, QUICK.value, WORKLOADS.value,
                            LOOPS.value, PEERS.value, REPS.value, MODES.value)
    failed = [p['loop'] for p in summary['parity'] if p.get('ok') is False]
    print(f"\nwrote {OUT.value}/gpu_parity.json and gpu_bench.jsonl in {summary['wall_s']:.0f} s;"
          f" parity {'FAILED for ' + ', '.join(failed) if failed else 'ok'}")
    for key, ratios in summary['ratios'].items():
      print(f'{key:<12} ' + '  '.join(f'{k} {v:.2f}x' for k, v in ratios.items()))

  sys.exit(cli.run_user_main(run, small_loops=PLATFORM.value == 'cpu'))


if __name__ == '__main__':
  app.run(main)
