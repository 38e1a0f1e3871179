"""The LSTM against honest baselines on the same data: one table and one ASD figure.

``run(config, workdir)`` loads the split that ``train.train_and_evaluate`` would use (a mock or a
user's ``--data`` file), trains the LSTM with ``config``, fits the Wiener FIR and the static MLP
(``lstm_jax.baselines``) and the DeepClean-architecture peer (``lstm_jax.deepclean``, offline,
not causal) on the same training records, and judges all of them on the same
held-out stretch with ``lstm_jax.metrics.evaluate``, each after the same lead-in of the witnesses
before it (``train.predict_stretch``). It writes ``workdir/compare.json``,
``workdir/compare.md`` (the table) and ``workdir/compare_asd.png`` (every residual's ASD).
"""
from __future__ import annotations

import json
import os
import time
from typing import Optional, Sequence

from absl import logging
import numpy as np

from lstm_jax import baselines
from lstm_jax import data as data_lib
from lstm_jax import metrics as eval_lib
from lstm_jax import train as train_lib
from lstm_jax.config import Config

METHODS = ('lstm', 'wiener', 'mlp', 'deepclean')
LABELS = {'lstm': 'LSTM', 'wiener': 'Wiener FIR', 'mlp': 'static MLP', 'deepclean': 'DeepClean'}


def _band(config: Config):
  return (config.band_lo, config.band_hi) if config.band_hi > 0 else None


def fit_and_predict(method: str, config: Config, split: train_lib.Split, *, fir_taps: int = 128,
                    mlp_hidden: Sequence[int] = (64, 64), mlp_steps: int = 2000,
                    deepclean_seconds: float = 300.0):
  """Trains one method on ``split.train``; returns (held-out prediction, train seconds, info).

  ``info['latency_s']``: how long an output sample waits for its inputs; one sample for the
  causal methods, one window for DeepClean (offline here: it sees the whole stretch)."""
  from lstm_jax import deepclean  # pylint: disable=g-import-not-at-top

  t0 = time.perf_counter()
  fs = split.train[0].fs
  if method == 'lstm':
    trained, stats = train_lib.train(config, split)
    info = {'loss': config.loss, 'steps': config.num_steps, 'lstm_sizes': list(config.lstm_sizes),
            'compile_s': stats['compile_s'],
            'kept_step': (stats['validation'] or {}).get('kept_step'),  # None: the last
            'linear_path': stats['linear'],  # None: off; else the FIR beside it, and if kept
            'residual_fir': stats.get('residual_fir')}  # None: off; else its gains, and if kept
    model = trained
  elif method == 'wiener':
    model = baselines.WienerFIR.fit(split.train, fir_taps)
    info = {'taps': fir_taps, 'taps_seconds': fir_taps / split.train[0].fs}
  elif method == 'mlp':
    model = baselines.StaticMLP.fit(split.train, mlp_hidden, mlp_steps, seed=config.seed)
    info = {'hidden': list(mlp_hidden), 'steps': mlp_steps}
  elif method == 'deepclean':
    # Its band: the config's where set, else chosen from the coupled noise (mocks) or target.
    model = deepclean.DeepCleanConv.fit(split.train, _band(config), deepclean_seconds,
                                        seed=config.seed)
    info = {k: v for k, v in model.info.items() if k not in ('history', 'train_s')}
  else:
    raise ValueError(f'unknown method {method!r}; choose from {METHODS}')
  train_s = time.perf_counter() - t0
  info.setdefault('latency_s', 1.0 / fs)
  return train_lib.predict_stretch(model, split.heldout, split.heldout_lead), train_s, info


def run(config: Config, workdir: Optional[str] = None, methods: Sequence[str] = METHODS, *,
        fir_taps: int = 128, mlp_hidden: Sequence[int] = (64, 64), mlp_steps: int = 2000,
        deepclean_seconds: float = 300.0, split: Optional[train_lib.Split] = None) -> dict:
  """Trains and judges every method in ``methods`` on one split; writes ``workdir`` if given.

  Returns ``{'rows': [...], 'data': ..., 'band_hz': ..., ...}``, one row per method with
  held-out ``nr_db`` (against the true noise for mocks, else against the target),
  ``band_nr_db``, ``asd_ratio_band_mean``, ``r2``, ``train_s`` (fit wall time, compilation
  included) and ``latency_s``. DeepClean trains for at most ``deepclean_seconds`` (give it at
  least the LSTM's ``train_s``).
  """
  if not methods:
    raise data_lib.DataError(f'no method to compare; choose from {",".join(METHODS)}')
  for m in methods:
    if m not in METHODS:
      raise data_lib.DataError(f'unknown method {m!r}; choose from {",".join(METHODS)}')
  split = split or train_lib.load_split(config)
  heldout = split.heldout
  rows, predictions, skipped = [], {}, {}
  for method in methods:
    logging.info('compare: fitting %s', method)
    try:
      pred, train_s, info = fit_and_predict(method, config, split, fir_taps=fir_taps,
                                            mlp_hidden=mlp_hidden, mlp_steps=mlp_steps,
                                            deepclean_seconds=deepclean_seconds)
    except data_lib.DataError as e:
      if method != 'deepclean':
        raise
      # The peer's windows need more data than some recordings hold: the others still compare.
      logging.warning('compare: %s skipped: %s', method, e)
      skipped[method] = str(e)
      continue
    m = eval_lib.evaluate(heldout, pred, _band(config))
    rows.append({'method': method, 'label': LABELS[method], 'nr_db': m['nr_db'],
                 'nr_reference': m['nr_reference'], 'band_nr_db': m['band_nr_db'],
                 'asd_ratio_band_mean': m['asd_ratio_band_mean'], 'r2': m['r2'],
                 'train_s': train_s, **info})
    predictions[method] = pred
    logging.info('compare: %s held-out NR %.2f dB, band NR %.2f dB, ASD ratio %.4f, %.1f s',
                 method, m['nr_db'], m['band_nr_db'], m['asd_ratio_band_mean'], train_s)
  if not rows:
    raise data_lib.DataError(f'nothing to compare: {"; ".join(skipped.values())}')
  result = {'data': split.source, 'heldout_seconds': len(heldout) / heldout.fs, 'fs': heldout.fs,
            'heldout_lead_in_seconds': split.heldout_lead_in_seconds(),
            'train_seconds_of_data': sum(len(r) for r in split.train) / split.train[0].fs,
            'band_hz': m['band_hz'],
            'rows': rows, 'skipped': skipped}
  if workdir:
    os.makedirs(workdir, exist_ok=True)
    result['config'] = config.to_dict()
    result['figure'] = plot_asds(heldout, predictions, os.path.join(workdir, 'compare_asd.png'),
                                 result['band_hz'])
    with open(os.path.join(workdir, 'compare.json'), 'w') as f:
      json.dump(result, f, indent=1)
    with open(os.path.join(workdir, 'compare.md'), 'w') as f:
      f.write(table_markdown(result))
    logging.info('wrote %s', os.path.join(workdir, 'compare.md'))
  return result


def table_markdown(result: dict) -> str:
  """The comparison as a Markdown table."""
  ref = result['rows'][0]['nr_reference']
  lines = [f"Held out: {result['heldout_seconds']:g} s of {result['data']} "
           f"(fs = {result['fs']:g} Hz), each model first run over the "
           f"{result.get('heldout_lead_in_seconds', 0):g} s of witnesses before it; "
           f"NR against the {'true noise' if ref == 'noise' else ref}; "
           f"band {result['band_hz'][0]:g}-{result['band_hz'][1]:g} Hz.", '',
           '| method | NR [dB] | band NR [dB] | ASD ratio in band (mean) | R2 | train [s] | '
           'latency |', '| --- | ---: | ---: | ---: | ---: | ---: | --- |']
  for r in result['rows']:
    latency = r.get('latency_s', 0.0)
    causal = latency * result['fs'] <= 1.0 + 1e-9
    lines.append(f"| {r['label']} | {r['nr_db']:.2f} | {r['band_nr_db']:.2f} | "
                 f"{r['asd_ratio_band_mean']:.4f} | {r['r2']:.4f} | {r['train_s']:.1f} | "
                 f"{'causal, 1 sample' if causal else f'{latency:g} s (window, offline)'} |")
  return '\n'.join(lines) + '\n'


def plot_asds(rec: data_lib.Recording, predictions: dict, path: str, band) -> str:
  """One figure: the target's ASD, the true noise's (if known) and every method's residual."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt

  f, a_target = eval_lib.asd(rec.target, rec.fs)
  fig, ax = plt.subplots(figsize=(9, 5.5))
  ax.loglog(f[1:], a_target[1:], color='k', lw=1.2, label='target')
  if rec.noise is not None:
    _, a_noise = eval_lib.asd(rec.noise, rec.fs)
    ax.loglog(f[1:], a_noise[1:], '--', color='0.4', lw=1.0, label='true coupled noise')
  for method, pred in predictions.items():
    residual = rec.target - pred
    if rec.noise is not None:  # what is left of the noise, the quantity NR is about
      residual = rec.noise - pred
    _, a_res = eval_lib.asd(residual, rec.fs)
    ax.loglog(f[1:], a_res[1:], lw=1.0, alpha=0.85,
              label=f"{LABELS[method]}: {'noise' if rec.noise is not None else 'target'}"
                    ' - prediction')
  ax.axvspan(*band, color='0.93', zorder=0, label='band')
  ax.set_xlabel('frequency [Hz]')
  ax.set_ylabel('ASD [units/sqrt(Hz)]')
  ax.set_title(f'{rec.name}: held-out residuals')
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path
