r"""Per-cell timings on this machine: model forward/train step, and min_* parallel vs sequential.

  python -m experiments.cell_speed --what=model --out=runs/cells_speed.json
  python -m experiments.cell_speed --what=scan --out=runs/min_cells_scan.json
"""
import json
import os
import re
import sys

from absl import app
from absl import flags
import jax

from lstm_jax import cell_speed

WHAT = flags.DEFINE_enum('what', 'model', ['model', 'scan'], 'Which timing.')
CELLS = flags.DEFINE_list('cells', ['lstm', 'peephole_lstm', 'cifg_lstm', 'layernorm_lstm', 'gru',
                                    'gru:reset_after=false', 'min_lstm', 'min_gru'],
                          'Cells for --what=model, NAME or NAME:OPTIONS.')
REPS = flags.DEFINE_integer('reps', 20, 'Timed calls per system.')
SHAPES = flags.DEFINE_list('shapes', ['1x2x64', '8x8x128'],
                           'For --what=scan: layer shapes BATCHxINPUTSxHIDDEN.')
LENGTHS = flags.DEFINE_list('lengths', ['2048', '16384'], 'For --what=scan: chunk lengths.')
flags.register_validator('shapes', lambda v: all(re.fullmatch(r'\d+x\d+x\d+', s) for s in v),
                         '--shapes takes BATCHxINPUTSxHIDDEN items, e.g. 1x2x64')
flags.register_validator('lengths', lambda v: all(n.isdigit() and int(n) > 0 for n in v),
                         '--lengths takes positive integers')
OUT = flags.DEFINE_string('out', '', 'Writes the records here as JSON.')


def main(argv):
  del argv
  if WHAT.value == 'model':
    specs = [tuple(c.split(':', 1)) if ':' in c else (c, '') for c in CELLS.value]
    records = cell_speed.model_step_times(specs, reps=REPS.value)
    for r in records:
      print(f'{r["cell"]:<28} {r["mode"]:<6} {r["us_per_step"]:9.2f} us/step  '
            f'(median {r["median_s"] * 1e3:.2f} ms, compile {r["compile_s"]:.1f} s)')
  else:
    shapes = [tuple(int(n) for n in shape.split('x')) for shape in SHAPES.value]
    records = cell_speed.scan_speedups(lengths=[int(n) for n in LENGTHS.value], shapes=shapes,
                                       reps=REPS.value)
    print('cell      mode  B  C   H     T      sequential/parallel  sequential/whole')
    for r in records:
      print(f'{r["cell"]:<9} {r["mode"]:<5} {r["batch"]:<2} {r["inputs"]:<3} {r["hidden"]:<5} '
            f'{r["steps"]:<6} {r["sequential_over_parallel"]:10.2f}x '
            f'{r["sequential_over_whole"]:17.2f}x')
  if OUT.value:
    os.makedirs(os.path.dirname(os.path.abspath(OUT.value)), exist_ok=True)
    with open(OUT.value, 'w') as f:
      json.dump({'jax': jax.__version__, 'devices': str(jax.devices()),
                 'argv': sys.argv, 'records': records}, f, indent=1)


if __name__ == '__main__':
  app.run(main)
