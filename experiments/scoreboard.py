r"""The default recipe on the recording zoo against the baselines and the oracle.

  python -m experiments.scoreboard --split=dev --workdir=runs/scoreboard_dev
  python -m experiments.scoreboard --split=test --workdir=runs/scoreboard_test --jobs=2
  python -m experiments.scoreboard --quick --workdir=runs/scoreboard_quick
  python -m experiments.scoreboard --split=dev --families=mains_sidebands,seed_segments \
      --methods=ours,deepclean,oracle --train_seeds=0 --workdir=runs/deepclean_dev

The DeepClean column (``--deepclean``) is on by default, except in quick mode.

Writes ``scoreboard.md``, ``scoreboard.json`` and ``scoreboard.png``; every task's result is kept
in ``WORKDIR/tasks/`` and skipped on a rerun (``--rerun`` runs them again). ``--rejudge`` runs
the current residual stage on the finished runs' saved models (``scoreboard.rejudge``);
``--linear_path_alone=all_inputs_lowest,default`` fits only the recipe's first stage under
those pick rules (``scoreboard.linear_path_alone``).
"""
import json
import sys

from absl import app
from absl import flags

from lstm_jax import cli
from lstm_jax import scoreboard

SPLIT = flags.DEFINE_enum('split', 'dev', ['dev', 'test', 'quick'],
                          'dev: tune on it; test: report on it, never tune; quick: a few minutes.')
QUICK = flags.DEFINE_boolean('quick', False, 'Same as --split=quick with one training seed.')
WORKDIR = flags.DEFINE_string('workdir', None, 'Where results, tables and the figure go.')
FAMILIES = flags.DEFINE_list('families', [], 'Only these zoo families (default: the split\'s).')
METHODS = flags.DEFINE_list('methods', ['ours', *scoreboard.BASELINES],
                            'ours and any of the baselines.')
DEEPCLEAN = flags.DEFINE_boolean('deepclean', None, 'Run the DeepClean peer (its column; '
                                 'minutes per recording). Default: on, except with --quick.')
DEEPCLEAN_SECONDS = flags.DEFINE_float('deepclean_seconds', scoreboard.DEEPCLEAN_SECONDS,
                                       'DeepClean\'s wall-time budget where ours has no '
                                       'result on the recording (else ours\' time, if more).')
TRAIN_SEEDS = flags.DEFINE_list('train_seeds', [str(s) for s in scoreboard.TRAIN_SEEDS],
                                'Training seeds of ours (the row shows their median).')
JOBS = flags.DEFINE_integer('jobs', 1, 'Tasks run at once (worker processes).')
MAX_SECONDS = flags.DEFINE_float('max_seconds', 0.0, 'Shorten each training file to this '
                                 '(tests, smoke runs); 0: as drawn.')
SET = flags.DEFINE_multi_string('set', [], 'A Config field for ours, NAME=VALUE (a recipe '
                                'variant to judge on dev); default: none, the defaults.')
RERUN = flags.DEFINE_boolean('rerun', False, 'Run tasks again even where results exist.')
LINEAR_PATH_ALONE = flags.DEFINE_list(
    'linear_path_alone', [], 'Only fit the linear path (the recipe\'s first stage, seconds a '
    'recording) under these pick rules (scoreboard.PICK_RULES) on --split, and score it on the '
    'later files (writes linear_path_alone.json).')
REJUDGE = flags.DEFINE_boolean('rejudge', False, 'Only re-judge the finished runs in --workdir '
                               'with the current residual stage (writes rejudged.json).')
flags.mark_flag_as_required('workdir')


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')

  def run():
    if LINEAR_PATH_ALONE.value:
      print(json.dumps(scoreboard.linear_path_alone(
          WORKDIR.value, 'quick' if QUICK.value else SPLIT.value, FAMILIES.value,
          LINEAR_PATH_ALONE.value, MAX_SECONDS.value or None), indent=1, default=str))
      return
    if REJUDGE.value:
      print(json.dumps(scoreboard.rejudge(WORKDIR.value), indent=1))
      return
    seeds = [int(s) for s in TRAIN_SEEDS.value]
    split = 'quick' if QUICK.value else SPLIT.value
    with_deepclean = DEEPCLEAN.value if DEEPCLEAN.value is not None else split != 'quick'
    methods = [m for m in METHODS.value if with_deepclean or m != 'deepclean']
    summary = scoreboard.run(
        WORKDIR.value, split, families=FAMILIES.value,
        methods=methods, train_seeds=seeds[:1] if QUICK.value else seeds,
        overrides=cli.parse_overrides(SET.value), jobs=JOBS.value,
        max_seconds=MAX_SECONDS.value or None, rerun=RERUN.value,
        deepclean_seconds=DEEPCLEAN_SECONDS.value)
    print(scoreboard.table_markdown(summary))

  sys.exit(cli.run_user_main(run))


if __name__ == '__main__':
  app.run(main)
