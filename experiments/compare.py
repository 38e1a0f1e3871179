r"""Train the LSTM and the baselines (Wiener FIR, static MLP, DeepClean) on the same data; one
table, one ASD.

Writes ``workdir/compare.json``, ``workdir/compare.md`` and ``workdir/compare_asd.png``.
Examples::

  python -m experiments.compare --preset=memory --workdir=/tmp/cmp_memory
  python -m experiments.compare --mock=seed --workdir=/tmp/cmp_seed
  python -m experiments.compare --preset=memory --loss=spectral --band=10,60 --workdir=/tmp/s
  python -m experiments.compare --data=rec.npz --holdout_fraction=0.25 --workdir=/tmp/cmp_user

Every ``lstm_jax.Config`` field is a flag of the same name; ``--band=LO,HI`` (Hz) sets
``band_lo`` and ``band_hi`` (the evaluation band, and the spectral loss's band).
"""
import sys

from absl import app
from absl import flags
from absl import logging
import jax

from lstm_jax import cli
from lstm_jax import compare
from lstm_jax import data as data_lib

PRESET = flags.DEFINE_string('preset', 'default', 'Named config (lstm_jax.config.PRESETS).')
WORKDIR = flags.DEFINE_string('workdir', '', 'Writes compare.json, compare.md, compare_asd.png.')
METHODS = flags.DEFINE_list('methods', list(compare.METHODS),
                            'Subset of lstm,wiener,mlp,deepclean.')
BAND = flags.DEFINE_list('band', None, 'LO,HI in Hz: sets band_lo and band_hi.')
FIR_TAPS = flags.DEFINE_integer('fir_taps', 128, 'Wiener FIR taps per witness.')
MLP_HIDDEN = flags.DEFINE_list('mlp_hidden', ['64', '64'], 'Static MLP hidden sizes.')
MLP_STEPS = flags.DEFINE_integer('mlp_steps', 2000, 'Static MLP Adam steps.')
DEEPCLEAN_SECONDS = flags.DEFINE_float('deepclean_seconds', 300.0, 'DeepClean\'s wall-time '
                                       'budget (its own early stopping may end it sooner).')
cli.define_config_flags()


def _band_override():
  if BAND.value is None:
    return {}
  try:
    lo, hi = (float(v) for v in BAND.value)
  except ValueError:
    raise data_lib.DataError(
        f'--band: expected LO,HI in Hz, got {",".join(BAND.value)!r}') from None
  if not 0.0 <= lo < hi:
    raise data_lib.DataError(f'--band: need 0 <= LO < HI, got {lo:g},{hi:g}')
  return {'band_lo': lo, 'band_hi': hi}


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.info('JAX %s on %s', jax.__version__, jax.devices())

  def run():
    config = cli.config_from_flags(PRESET.value).replace(**_band_override())
    try:
      hidden = tuple(int(v) for v in MLP_HIDDEN.value)
    except ValueError:
      raise data_lib.DataError(f'--mlp_hidden: expected integers, got {MLP_HIDDEN.value}') from None
    result = compare.run(config, WORKDIR.value or None, tuple(METHODS.value),
                         fir_taps=FIR_TAPS.value, mlp_hidden=hidden, mlp_steps=MLP_STEPS.value,
                         deepclean_seconds=DEEPCLEAN_SECONDS.value)
    print(compare.table_markdown(result))

  sys.exit(cli.run_user_main(run))


if __name__ == '__main__':
  app.run(main)
