"""The scoreboard: the default recipe on the recording zoo, through the user's own path,
against the baselines and the oracle.

For each recording (``lstm_jax.zoo``: a family and a seed) the training file and the later file
are written as a user gives them (``.npz``). *Ours* is ``train.train_and_evaluate`` on the
training file (what ``experiments/noise_regression.py --data`` runs) and then
``cleaning.clean_file`` on the later file (what ``experiments/clean.py`` runs), once per
training seed, with the config's defaults and nothing else. The Wiener FIR, the static MLP and
the oracle are fitted on the same training part ours sees (the file minus its held-out
fraction) and predict the later file the same way, causally from its first sample. The
DeepClean-architecture peer (``lstm_jax.deepclean``) is fitted on that part too, with its own
recipe and at least the wall time ours took on the recording (``deepclean_seconds`` where ours
has not run), and cleans the later file offline (not causal: each output sees its 8 s window).
Every method is scored on the later file after the same warm-up, against the true coupled
noise: broadband, in the default band, and in DeepClean's band (``dc_band_nr_db``: the band
its configuration names, from the training part's coupled noise, ``deepclean.choose_band``).

Splits: ``dev`` (seeds 0 and 1 of the families used for tuning) is where recipe changes are
judged; ``test`` (seeds 100 and 101 of every family, three of which no tuning ever ran) is where
they are confirmed and reported, never tuned on.

Each task (recording x method x seed) writes its result to ``workdir/tasks/*.json`` and is
skipped when that file exists, so an interrupted scoreboard continues where it stopped.
"""
from __future__ import annotations

import concurrent.futures
import dataclasses
import json
import multiprocessing
import os
import time
from typing import Optional, Sequence

from absl import logging
import numpy as np

from lstm_jax import baselines
from lstm_jax import data as data_lib
from lstm_jax import metrics as eval_lib
from lstm_jax import volterra
from lstm_jax import zoo
from lstm_jax.config import Config

DEV_SEEDS = (0, 1)
TEST_SEEDS = (100, 101)
TRAIN_SEEDS = (0, 1, 2)
BASELINES = ('wiener', 'mlp', 'deepclean', 'oracle')
# DeepClean's wall-time budget where ours has no result on the recording yet (seconds).
DEEPCLEAN_SECONDS = 300.0
# Each method is scored after this much of the later file, the same for all: a causal cleaner
# starts it cold (the FIR's taps, the LSTM's carry), as clean.py does on a new file.
WARMUP_SECONDS = 2.0
WARMUP_FRACTION = 0.1
# The Wiener baseline's length is chosen on the training part's last tenth among these (in
# seconds, at most WIENER_MAX_WEIGHTS weights): a fair peer has the filter length it needs.
WIENER_SECONDS = (0.008, 0.03, 0.12, 0.5)
WIENER_MAX_WEIGHTS = 8192
OUR_BAR_DB = 40.0  # where the oracle exceeds this, ours is judged against this instead


def recordings(split: str, families: Optional[Sequence[str]] = None) -> list[tuple[str, int]]:
  """``(family, seed)`` pairs of a split: ``dev``, ``test`` or ``quick`` (a few minutes)."""
  if split == 'dev':
    names = [f.name for f in zoo.FAMILIES.values() if f.tuning]
    pairs = [(n, s) for n in names for s in DEV_SEEDS]
  elif split == 'test':
    pairs = [(n, s) for n in zoo.FAMILIES for s in TEST_SEEDS]
  elif split == 'quick':
    pairs = [('seed_segments', 0), ('high_rate', 0)]
  else:
    raise data_lib.DataError(f"split must be 'dev', 'test' or 'quick', got {split!r}")
  if families:
    unknown = sorted(set(families) - set(zoo.FAMILIES))
    if unknown:
      raise data_lib.DataError(f'unknown zoo families {unknown}; choose from {sorted(zoo.FAMILIES)}')
    pairs = [p for p in pairs if p[0] in families]
  return pairs


def warmup_samples(n: int, fs: float) -> int:
  return int(min(WARMUP_SECONDS * fs, WARMUP_FRACTION * n))


def score(rec: data_lib.Recording, prediction, dc_band=None) -> dict:
  """NR (dB) of a prediction of ``rec``'s true noise after the warm-up, and in the default band;
  with ``dc_band`` (Hz) also the NR of the true noise in that band (``dc_band_nr_db``)."""
  k = warmup_samples(len(rec), rec.fs)
  tail = rec.slice(k, len(rec))
  prediction = np.asarray(prediction, np.float64)[k:]
  m = eval_lib.evaluate(tail, prediction)
  out = {'nr_db': m['nr_db'], 'band_nr_db': m['band_nr_db'], 'warmup_s': k / rec.fs}
  if dc_band is not None:
    noise = np.asarray(tail.noise, np.float64)
    f, a_noise = eval_lib.asd(noise, rec.fs)
    _, a_left = eval_lib.asd(noise - prediction, rec.fs)
    mask = eval_lib.band_mask(f, dc_band)
    out.update(dc_band_hz=[float(b) for b in dc_band],
               dc_band_nr_db=float(10 * np.log10(np.sum(a_noise[mask] ** 2) /
                                                 max(np.sum(a_left[mask] ** 2), 1e-300))))
  return out


@dataclasses.dataclass(frozen=True)
class Task:
  family: str
  seed: int
  method: str  # 'ours' or one of BASELINES
  train_seed: int = 0

  @property
  def key(self) -> str:
    return f'{self.family}_{self.seed}_{self.method}_{self.train_seed}'


def _draw(task: Task, max_seconds: Optional[float]) -> zoo.Draw:
  return zoo.make(task.family, task.seed, max_seconds=max_seconds)


def training_part(draw: zoo.Draw, config: Config) -> int:
  """Samples of the training file that ours trains and validates on (the rest it holds out)."""
  return int(round(len(draw.train) * (1.0 - config.holdout_fraction)))


def ours_train_seconds(workdir: str, family: str, seed: int) -> Optional[float]:
  """The median wall time ours took to train on a recording, from its task files (None: none
  yet)."""
  times = []
  tasks = os.path.join(workdir, 'tasks')
  prefix = f'{family}_{seed}_ours_'
  for name in sorted(os.listdir(tasks)) if os.path.isdir(tasks) else ():
    if name.startswith(prefix) and name.endswith('.json'):
      with open(os.path.join(tasks, name)) as f:
        t = json.load(f).get('train_s')
      if t is not None:
        times.append(float(t))
  return float(np.median(times)) if times else None


def _saved(draw: zoo.Draw, workdir: str) -> tuple[str, str]:
  """The draw's training and later files under ``workdir/recordings/`` (written once)."""
  rec_dir = os.path.join(workdir, 'recordings', f'{draw.family}_{draw.seed}')
  paths = tuple(os.path.join(rec_dir, f'{p}.npz') for p in ('train', 'later'))
  if not all(os.path.isfile(p) for p in paths):
    tmp = rec_dir + f'.tmp{os.getpid()}'
    zoo.save(draw, tmp)
    os.makedirs(os.path.dirname(rec_dir), exist_ok=True)
    try:
      os.rename(tmp, rec_dir)
    except OSError:  # another worker wrote it first: the same draw
      pass
  return paths


# The linear path's pick rules, by name, for ``linear_path_alone``: module settings of
# ``lstm_jax.train`` (``volterra.NAME``, ``baselines.NAME``: of those modules; 'default': as
# they are).
_AS_SCREENED = {'PRIOR_FIT': False, 'volterra.SEARCH_LAGS': False, 'UNLAGGED_TOO': False}
# The rational refit with numerators of 8 ms only; bent forms scored by power share, once.
_SHORT_NUMERATORS = {'POLE_ZERO_SECONDS': (0.008,)}
_SHAPES_BY_POWER_ONCE = {'SCREEN_AGAIN': False, 'volterra.SHAPES_WHITENED': False}
PICK_RULES = {
    'default': {},
    'all_inputs_lowest': dict(_AS_SCREENED, SELECT_RATIO=float('inf'),
                              PARSIMONY_T=float('-inf'), PARSIMONY_DROP=float('-inf')),
    'all_inputs': dict(_AS_SCREENED, SELECT_RATIO=float('inf')),
    # The steps of the pair lags and the prior, undone from the last:
    'least_squares': {'PRIOR_FIT': False},
    'grid_lags': {'PRIOR_FIT': False, 'volterra.SEARCH_LAGS': False},
    'lags_as_screened': _AS_SCREENED,
    'no_bent_witnesses': {'volterra.SHAPE_GAINS': ()},
    'raw_pick': {'WHITENED_CHECK': False},
    'raw_pick_no_bent': {'WHITENED_CHECK': False, 'volterra.SHAPE_GAINS': ()},
    'floor_1e-2': {'WHITENING_FLOOR': 1e-2},
    'prior_1024': {'baselines.MAX_REGULARIZED_WEIGHTS': 1024},
    # The prior from every input's first tap, and its decay times from half a sample:
    'prior_undelayed': {'baselines.ONSET_Z': float('inf')},
    'prior_undelayed_half_sample': {'baselines.ONSET_Z': float('inf'),
                                    'baselines.TAU_FLOOR': 0.5},
    'no_factors': {'WITH_FACTORS': False},
    'no_modulated': {'MODULATED_PATHS': False},
    'no_poles': {'POLE_ORDERS': ()},
    'poles_from_none': {'baselines.POLE_ZERO_FROM_RESPONSES': False},
    'poles_on_ringing_inputs': {'POLE_TAIL_SHARE': 1e-3, 'POLE_EVERY_INPUT_TOO': False},
    'poles_on_ringing_inputs_too': {'POLE_TAIL_SHARE': 1e-3},
    'poles_proven': {'POLES_UNLESS_WORSE': False},
    'no_fringes': {'FRINGES': False},
    'no_modes': {'MODES': False},
    'no_envelopes': {'ENVELOPES': False},
    'no_bent_paths': {'BENT_PATHS': False},
    'short_numerators': _SHORT_NUMERATORS,
    'shapes_screened_once': {'SCREEN_AGAIN': False},
    'shapes_by_power_once': _SHAPES_BY_POWER_ONCE,
    'shapes_by_power_once_short_numerators': dict(_SHAPES_BY_POWER_ONCE, **_SHORT_NUMERATORS),
}


def linear_path_alone(workdir: str, split: str = 'dev', families: Optional[Sequence[str]] = None,
                      rules: Sequence[str] = ('all_inputs_lowest', 'default'),
                      max_seconds: Optional[float] = None) -> dict:
  """The first stage of the recipe alone, in seconds a recording: ``train.fit_linear_path``
  with the default lengths and products on each recording of ``split``, under each of
  ``rules`` (``PICK_RULES``), its filter scored on the later file like every method. Writes
  and returns ``workdir/linear_path_alone.json``."""
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  unknown = [r for r in rules if r not in PICK_RULES]
  if unknown:
    raise data_lib.DataError(f'unknown pick rule(s) {unknown}; choose from {sorted(PICK_RULES)}')
  modules = {'volterra': volterra, 'baselines': baselines}
  where = lambda k: ((modules[k.split('.')[0]], k.split('.')[1]) if '.' in k  # module, name
                     else (train_lib, k))
  rows = []
  for family, seed in recordings(split, families):
    draw = _draw(Task(family, seed, 'ours'), max_seconds)
    config = Config().replace(data=_saved(draw, workdir)[0])
    split_ = train_lib.load_split(config)
    first = split_.train[0]
    lengths = train_lib.filter_lengths(config.linear_taps, first.fs, first.witnesses.shape[1])
    row = {'recording': draw.name, 'n_witnesses': int(first.witnesses.shape[1])}
    for rule in rules:
      saved = {k: getattr(*where(k)) for k in PICK_RULES[rule]}
      try:
        for k, v in PICK_RULES[rule].items():
          setattr(*where(k), v)
        _, fir, stats = train_lib.fit_linear_path(split_, lengths, config.linear_products)
      finally:
        for k, v in saved.items():
          setattr(*where(k), v)
      row[rule] = {'nr_db': (score(draw.later, train_lib.predict_stretch(fir, draw.later))['nr_db']
                             if fir is not None else 0.0),
                   'n_taps': stats.get('n_taps'), 'inputs_used': stats.get('inputs_used'),
                   'products': stats.get('products'), 'shapes': stats.get('shapes'),
                   'modulated': stats.get('modulated'), 'bent_paths': stats.get('bent_paths'),
                   'fringes': stats.get('fringes'),
                   'modes': stats.get('modes'), 'envelopes': stats.get('envelopes'),
                   'pole_zero': stats.get('pole_zero'),
                   'poles_unproven': stats.get('poles_unproven'),
                   'regularized': stats.get('regularized'),
                   'prior': stats.get('prior')}
    logging.info('linear path alone, %s: %s', draw.name,
                 ', '.join(f"{r} {row[r]['nr_db']:.2f} dB" for r in rules))
    rows.append(row)
  out = {'split': split, 'rules': {r: PICK_RULES[r] for r in rules}, 'rows': rows}
  with open(os.path.join(workdir, 'linear_path_alone.json'), 'w') as f:
    json.dump(out, f, indent=1, default=str)
  return out


def run_task(task: Task, workdir: str, overrides: dict, max_seconds: Optional[float],
             mlp_steps: int = 3000, deepclean_seconds: float = DEEPCLEAN_SECONDS) -> dict:
  """One task's result (the JSON it writes)."""
  from lstm_jax import cleaning  # here: the worker processes import JAX only when they run
  from lstm_jax import train as train_lib

  draw = _draw(task, max_seconds)
  config = Config(**overrides)
  train_path, later_path = _saved(draw, workdir)
  from lstm_jax import deepclean  # pylint: disable=g-import-not-at-top

  part = training_part(draw, config)
  fit_rec = draw.train.slice(0, part)
  dc_band = deepclean.choose_band(fit_rec.noise, fit_rec.fs)
  t0 = time.perf_counter()
  info = {}
  if task.method == 'ours':
    run_dir = os.path.join(workdir, 'runs', task.key)
    metrics = train_lib.train_and_evaluate(config.replace(data=train_path, seed=task.train_seed),
                                           run_dir)
    train_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    out = os.path.join(run_dir, 'later_cleaned.npz')
    cleaning.clean_file(os.path.join(run_dir, 'model'), later_path, out)
    with np.load(out) as z:
      prediction = z['prediction']
    info = {'clean_s': time.perf_counter() - t1, 'heldout_nr_db': metrics['heldout']['nr_db'],
            'train_summary': _summary(metrics)}
  else:
    if task.method == 'oracle':
      oracle = zoo.fit_oracle(draw, part)
      prediction = oracle.predict(draw.features_later)
    elif task.method == 'wiener':
      fir, info = fit_wiener(fit_rec)
      prediction = fir.predict(draw.later.witnesses)
    elif task.method == 'mlp':
      mlp = baselines.StaticMLP.fit([fit_rec], num_steps=mlp_steps, seed=task.train_seed)
      prediction = mlp.predict(draw.later.witnesses)
    elif task.method == 'deepclean':
      ours_s = ours_train_seconds(workdir, task.family, task.seed)
      budget = max(deepclean_seconds, ours_s or 0.0)
      model = deepclean.DeepCleanConv.fit([fit_rec], dc_band, budget, seed=task.train_seed)
      prediction = model.predict(draw.later.witnesses)
      info = {k: v for k, v in model.info.items() if k not in ('history', 'train_s')}
      info['val_history'] = [h['val_loss'] for h in model.info['history']]
      info['ours_train_s'] = ours_s
    else:
      raise ValueError(f'unknown method {task.method!r}')
    train_s = time.perf_counter() - t0
  result = dict(dataclasses.asdict(task), **score(draw.later, prediction, dc_band),
                train_s=train_s,
                fs=draw.train.fs, train_seconds=len(draw.train) / draw.train.fs,
                n_witnesses=int(draw.train.witnesses.shape[1]), **info)
  return result


def _summary(metrics: dict) -> dict:
  """What a scoreboard row keeps of a training run's metrics.json."""
  train = metrics['train']
  out = {'wall_s': metrics['wall_s'], 'steps': train.get('num_steps'),
         'compile_s': train.get('compile_s')}
  for key in ('validation', 'residual_fir', 'recipe'):
    value = train.get(key)
    if isinstance(value, dict):
      out[key] = {k: v for k, v in value.items() if k != 'history'}
  return out


def rejudge(workdir: str) -> dict:
  """The current residual stage (``train.fit_residual_path``) on the finished runs of
  ``workdir``, their training as it was: where a run kept no residual filter its saved model is
  the trained network (and linear path), and the stage runs on it again; where it dropped the
  network its model is one filter, fitted again as the stage now does
  (``train.refit_with_validation``); other runs are skipped (their filter was fitted beside the
  network). Writes and returns ``rejudged.json``: the NR of the later file as run and now."""
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  from lstm_jax.inference import TrainedModel  # pylint: disable=g-import-not-at-top
  rows = []
  tasks = os.path.join(workdir, 'tasks')
  if not os.path.isdir(tasks):
    raise data_lib.DataError(f'{workdir}: no scoreboard runs to re-judge (no tasks/ directory)')
  for name in sorted(os.listdir(tasks)):
    if '_ours_' not in name or not name.endswith('.json'):
      continue
    with open(os.path.join(tasks, name)) as f:
      result = json.load(f)
    if 'nr_db' not in result:
      continue
    task = Task(result['family'], result['seed'], 'ours', result['train_seed'])
    residual = result['train_summary'].get('residual_fir') or {}
    row = {'recording': f'{task.family}/{task.seed}', 'train_seed': task.train_seed,
           'run_nr_db': result['nr_db']}
    trained = TrainedModel.load(os.path.join(workdir, 'runs', task.key, 'model'))
    split = train_lib.load_split(trained.config)
    if not residual.get('kept'):
      lengths = train_lib.filter_lengths(trained.config.residual_taps, split.train[0].fs,
                                         trained.n_inputs)
      trained, stats = train_lib.fit_residual_path(
          trained, split, lengths, validation_summary=result['train_summary'].get('validation'))
      row.update(how='residual stage', network_dropped=stats.get('network_dropped'))
    elif residual.get('network_dropped'):
      fir = train_lib.refit_with_validation(split, trained.linear, residual['n_taps'],
                                            regularized=residual.get('regularized', False),
                                            pole_zero=residual.get('pole_zero'))
      trained = dataclasses.replace(trained, linear=fir)
      row.update(how='filter refitted', network_dropped=True)
    else:
      rows.append(dict(row, how='skipped: a filter fitted beside the network'))
      continue
    later = data_lib.load_recording(os.path.join(workdir, 'recordings',
                                                 f'{task.family}_{task.seed}', 'later.npz'))
    row['nr_db'] = score(later, train_lib.predict_stretch(trained, later))['nr_db']
    logging.info('rejudged %s: %.2f dB as run, %.2f dB now (%s)', task.key, row['run_nr_db'],
                 row['nr_db'], row['how'])
    rows.append(row)
  out = {'what': 'the current residual stage on finished runs: NR of the later file (dB)',
         'rows': rows}
  with open(os.path.join(workdir, 'rejudged.json'), 'w') as f:
    json.dump(out, f, indent=1)
  return out


def fit_wiener(rec: data_lib.Recording) -> tuple[baselines.WienerFIR, dict]:
  """The Wiener FIR with the length (``WIENER_SECONDS``) that does best on the last tenth of
  ``rec`` when fitted on the rest, refitted on all of ``rec``."""
  n_ch = rec.witnesses.shape[1]
  cut = int(0.9 * len(rec))
  fit, check = rec.slice(0, cut), rec.slice(cut, len(rec))
  lengths = sorted({max(2, min(int(round(s * rec.fs)), WIENER_MAX_WEIGHTS // n_ch))
                    for s in WIENER_SECONDS})
  best = None
  for taps in lengths:
    fir = baselines.WienerFIR.fit([fit], taps)
    prediction = fir.apply_scaled(fir.input_norm.apply(check.witnesses),
                                  fir.input_norm.apply(fit.witnesses))
    residual = float(np.var(np.asarray(check.target, np.float64) - prediction))
    if best is None or residual < best[1]:
      best = (taps, residual)
  return baselines.WienerFIR.fit([rec], best[0]), {'taps': best[0],
                                                   'taps_seconds': best[0] / rec.fs}


def _worker(args):
  task, workdir, overrides, max_seconds, mlp_steps, deepclean_seconds = args
  path = os.path.join(workdir, 'tasks', task.key + '.json')
  try:
    result = run_task(task, workdir, overrides, max_seconds, mlp_steps, deepclean_seconds)
  except Exception as e:  # pylint: disable=broad-except
    logging.exception('task %s failed', task.key)
    result = dict(dataclasses.asdict(task), error=f'{type(e).__name__}: {e}')
  tmp = path + '.tmp'
  with open(tmp, 'w') as f:
    json.dump(result, f, indent=1)
  os.replace(tmp, path)
  return result


def run(workdir: str, split: str = 'dev', *, families: Optional[Sequence[str]] = None,
        methods: Sequence[str] = ('ours',) + BASELINES, train_seeds: Sequence[int] = TRAIN_SEEDS,
        overrides: Optional[dict] = None, jobs: int = 1, max_seconds: Optional[float] = None,
        rerun: bool = False, mlp_steps: int = 3000,
        deepclean_seconds: float = DEEPCLEAN_SECONDS) -> dict:
  """Runs every task of ``split`` not already in ``workdir/tasks``; writes the tables and the
  figure; returns the summary. Ours runs before DeepClean on each recording, so DeepClean's
  budget is at least ours' wall time (in a pool: where ours has finished first)."""
  overrides = dict(overrides or {})
  pairs = recordings(split, families)
  tasks = []
  for family, seed in pairs:
    for method in methods:
      for s in (train_seeds if method in ('ours', 'mlp') else (0,)):
        tasks.append(Task(family, seed, method, s))
  os.makedirs(os.path.join(workdir, 'tasks'), exist_ok=True)
  todo = [t for t in tasks if rerun or not os.path.isfile(
      os.path.join(workdir, 'tasks', t.key + '.json'))]
  logging.info('scoreboard %s: %d recordings, %d tasks, %d to run', split, len(pairs),
               len(tasks), len(todo))
  args = [(t, workdir, overrides, max_seconds, mlp_steps, deepclean_seconds) for t in todo]
  if jobs > 1 and len(todo) > 1:
    # Ours first: the longest tasks, so the pool ends together.
    args.sort(key=lambda a: a[0].method != 'ours')
    ctx = multiprocessing.get_context('spawn')
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
      for r in pool.map(_worker, args):
        logging.info('done %s: %s', Task(r['family'], r['seed'], r['method'],
                                         r['train_seed']).key, r.get('nr_db', r.get('error')))
  else:
    for a in args:
      r = _worker(a)
      logging.info('done %s: %s', a[0].key, r.get('nr_db', r.get('error')))
  results = []
  for t in tasks:
    with open(os.path.join(workdir, 'tasks', t.key + '.json')) as f:
      results.append(json.load(f))
  summary = summarize(results, pairs)
  summary.update(split=split, overrides=overrides, max_seconds=max_seconds)
  with open(os.path.join(workdir, 'scoreboard.json'), 'w') as f:
    json.dump(summary, f, indent=1)
  with open(os.path.join(workdir, 'scoreboard.md'), 'w') as f:
    f.write(table_markdown(summary))
  summary['figure'] = plot(summary, os.path.join(workdir, 'scoreboard.png'))
  return summary


def summarize(results: list[dict], pairs) -> dict:
  """One row per recording: ours (median over training seeds, and the range), each baseline,
  the oracle, the gaps; and the summary lines."""
  rows = []
  for family, seed in pairs:
    mine = [r for r in results if r['family'] == family and r['seed'] == seed]
    errors = [f"{r['method']}/{r['train_seed']}: {r['error']}" for r in mine if 'error' in r]
    row = {'family': family, 'seed': seed, 'tuning': zoo.FAMILIES[family].tuning,
           'errors': errors}
    for method in {r['method'] for r in mine}:
      ok = [r for r in mine if r['method'] == method and 'nr_db' in r]
      if not ok:
        continue
      nrs = [r['nr_db'] for r in ok]
      row[method] = float(np.median(nrs))
      row[f'{method}_band'] = float(np.median([r['band_nr_db'] for r in ok]))
      row[f'{method}_train_s'] = float(np.median([r['train_s'] for r in ok]))
      if all('dc_band_nr_db' in r for r in ok):
        row[f'{method}_dc_band'] = float(np.median([r['dc_band_nr_db'] for r in ok]))
        row['dc_band_hz'] = ok[0]['dc_band_hz']
      if method == 'deepclean':
        row.update(deepclean_latency_s=ok[0]['latency_s'], deepclean_epochs=ok[0]['epochs_run'],
                   deepclean_stop=ok[0]['stop'])
      if method == 'ours':
        row['ours_range'] = [float(min(nrs)), float(max(nrs))]
        row['ours_heldout'] = float(np.median([r['heldout_nr_db'] for r in ok]))
      first = ok[0]
      row.update(fs=first['fs'], train_seconds=first['train_seconds'],
                 n_witnesses=first['n_witnesses'])
    rows.append(compared(row))
  return summary_of(rows)


def compared(row: dict) -> dict:
  """``row`` (one recording's figures) with ours' margins over the baselines and DeepClean
  and its gaps to the oracle, where it has them."""
  if 'ours' in row:
    peers = [row[m] for m in ('wiener', 'mlp') if m in row]
    if peers:
      row['best_baseline'] = max(peers)
      row['ours_minus_best_baseline'] = row['ours'] - max(peers)
    if 'deepclean' in row:
      row['ours_minus_deepclean'] = row['ours'] - row['deepclean']
      if 'ours_dc_band' in row and 'deepclean_dc_band' in row:
        row['ours_minus_deepclean_dc_band'] = row['ours_dc_band'] - row['deepclean_dc_band']
    if 'oracle' in row:
      row['gap_to_oracle'] = row['oracle'] - row['ours']
      row['gap_capped'] = min(row['oracle'], OUR_BAR_DB) - row['ours']
  return row


def summary_of(rows: list[dict]) -> dict:
  """The rows (``compared``) and the summary lines over those with a gap to the oracle."""
  judged = [r for r in rows if 'gap_capped' in r]
  summary = {'rows': rows}
  if judged:
    gaps = [r['gap_capped'] for r in judged]
    worst = max(judged, key=lambda r: r['gap_capped'])
    summary.update(
        median_gap_db=float(np.median(gaps)), worst_gap_db=float(max(gaps)),
        worst_gap_recording=f"{worst['family']}/{worst['seed']}",
        median_raw_gap_db=float(np.median([r['gap_to_oracle'] for r in judged])),
        below_best_baseline=[f"{r['family']}/{r['seed']}" for r in judged
                             if r.get('ours_minus_best_baseline', 0.0) < -0.5],
        below_bar=[f"{r['family']}/{r['seed']}" for r in judged
                   if r['oracle'] > OUR_BAR_DB and r['ours'] < OUR_BAR_DB],
        ours_median_db=float(np.median([r['ours'] for r in judged])),
        ours_train_s_median=float(np.median([r['ours_train_s'] for r in judged])),
        ours_train_s_max=float(max(r['ours_train_s'] for r in judged)),
        below_deepclean=[f"{r['family']}/{r['seed']}" for r in judged
                         if min(r.get('ours_minus_deepclean', 0.0),
                                r.get('ours_minus_deepclean_dc_band', 0.0)) < -0.5])
  return summary


def table_markdown(summary: dict) -> str:
  cols = [('wiener', 'Wiener'), ('mlp', 'MLP'), ('deepclean', 'DeepClean'), ('oracle', 'oracle')]
  present = [c for c in cols if any(c[0] in r for r in summary['rows'])]
  head = ['recording', 'fs [Hz]', 'train [s]', 'C', 'ours [dB] (range)',
          *[label + ' [dB]' for _, label in present], 'gap (capped)', 'ours train [s]']
  lines = [f"Scoreboard, split {summary.get('split')}: NR on the later file against the true "
           f'coupled noise (dB, after a warm-up of min({WARMUP_SECONDS:g} s, '
           f'{100 * WARMUP_FRACTION:g}%)); ours: median over training seeds; gap: '
           f'min(oracle, {OUR_BAR_DB:g}) - ours. * marks families no tuning saw.', '',
           '| ' + ' | '.join(head) + ' |', '|' + ' --- |' * len(head)]
  for r in summary['rows']:
    name = f"{r['family']}/{r['seed']}" + ('' if r['tuning'] else ' *')
    ours = (f"{r['ours']:.1f} ({r['ours_range'][0]:.1f}-{r['ours_range'][1]:.1f})"
            if 'ours' in r else '-')
    cells = [name, f"{r.get('fs', 0):g}", f"{r.get('train_seconds', 0):.0f}",
             str(r.get('n_witnesses', '')), ours,
             *[f'{r[m]:.1f}' if m in r else '-' for m, _ in present],
             f"{r['gap_capped']:.1f}" if 'gap_capped' in r else '-',
             f"{r['ours_train_s']:.0f}" if 'ours_train_s' in r else '-']
    lines.append('| ' + ' | '.join(cells) + ' |')
    if r['errors']:
      lines.append(f"| {name}: errors: {'; '.join(r['errors'])} |")
  if 'median_gap_db' in summary:
    lines += ['', f"Median gap to the oracle (capped at {OUR_BAR_DB:g} dB): "
                  f"{summary['median_gap_db']:.2f} dB; worst {summary['worst_gap_db']:.2f} dB "
                  f"({summary['worst_gap_recording']}); raw median gap "
                  f"{summary['median_raw_gap_db']:.2f} dB.",
              f"Ours below the best of Wiener and MLP by more than 0.5 dB: "
              f"{', '.join(summary['below_best_baseline']) or 'none'}.",
              f"Ours under {OUR_BAR_DB:g} dB where the oracle is above: "
              f"{', '.join(summary['below_bar']) or 'none'}.",
              f"Ours: median {summary['ours_median_db']:.1f} dB; train wall time median "
              f"{summary['ours_train_s_median']:.0f} s, max {summary['ours_train_s_max']:.0f} s."]
    if any('deepclean' in r for r in summary['rows']):
      lines.append(f"Ours below DeepClean by more than 0.5 dB (broadband or in its band): "
                   f"{', '.join(summary.get('below_deepclean', [])) or 'none'}.")
  lines += _deepclean_table(summary['rows'])
  return '\n'.join(lines) + '\n'


def _deepclean_table(rows) -> list:
  """Ours, DeepClean and the oracle in DeepClean's band, with train times and latencies."""
  rows = [r for r in rows if 'deepclean' in r]
  if not rows:
    return []
  fmt = lambda r, k: f'{r[k]:.1f}' if k in r else '-'
  out = ['', 'DeepClean as a peer: NR of the true noise in its band (the band its configuration '
             'names, from the training part\'s coupled noise) and broadband; latency: ours is '
             'causal (one sample), DeepClean cleans offline by windows (one window online).', '',
         '| recording | band [Hz] | ours in band [dB] | DeepClean in band [dB] | oracle in band '
         '[dB] | ours [dB] | DeepClean [dB] | ours train [s] | DeepClean train [s] (epochs, '
         'stop) | DeepClean latency [s] |', '|' + ' --- |' * 10]
  for r in rows:
    band = r.get('dc_band_hz', [0, 0])
    out.append(
        f"| {r['family']}/{r['seed']} | {band[0]:.0f}-{band[1]:.0f} | {fmt(r, 'ours_dc_band')} | "
        f"{fmt(r, 'deepclean_dc_band')} | {fmt(r, 'oracle_dc_band')} | {fmt(r, 'ours')} | "
        f"{fmt(r, 'deepclean')} | {r['ours_train_s']:.0f} | " if 'ours_train_s' in r else
        f"| {r['family']}/{r['seed']} | {band[0]:.0f}-{band[1]:.0f} | - | "
        f"{fmt(r, 'deepclean_dc_band')} | {fmt(r, 'oracle_dc_band')} | - | {fmt(r, 'deepclean')} "
        f"| - | ")
    out[-1] += (f"{r['deepclean_train_s']:.0f} ({r['deepclean_epochs']}, {r['deepclean_stop']}) | "
                f"{r['deepclean_latency_s']:g} |")
  return out


def plot(summary: dict, path: str) -> str:
  """Ours (median and range), the baselines and the oracle per recording, in dB."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  rows = summary['rows']
  x = np.arange(len(rows))
  fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(rows) + 3), 5))
  styles = {'oracle': ('k', '_', 'oracle'), 'wiener': ('tab:blue', 'v', 'Wiener FIR'),
            'mlp': ('tab:green', '^', 'static MLP'), 'deepclean': ('tab:purple', 's', 'DeepClean')}
  for method, (color, marker, label) in styles.items():
    ys = [r.get(method, np.nan) for r in rows]
    if not np.all(np.isnan(ys)):
      ax.scatter(x, ys, color=color, marker=marker, s=60 if method == 'oracle' else 30,
                 label=label, zorder=3)
  ours = np.array([r.get('ours', np.nan) for r in rows])
  lo = np.array([r.get('ours_range', [np.nan] * 2)[0] for r in rows])
  hi = np.array([r.get('ours_range', [np.nan] * 2)[1] for r in rows])
  ax.errorbar(x, ours, yerr=[ours - lo, hi - ours], fmt='o', color='tab:red',
              label='ours (median, range over seeds)', zorder=4)
  ax.axhline(OUR_BAR_DB, color='0.7', lw=0.8, ls='--')
  ax.set_xticks(x)
  ax.set_xticklabels([f"{r['family']}/{r['seed']}" + ('' if r['tuning'] else '*')
                      for r in rows], rotation=60, ha='right', fontsize=8)
  ax.set_ylabel('NR on the later file [dB]')
  ax.set_title(f"scoreboard ({summary.get('split')}): * = families no tuning saw")
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
