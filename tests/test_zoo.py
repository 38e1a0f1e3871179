"""The recording zoo: each family's target holds its true noise, the oracle reaches its floor
without background, the files are what a user gives, and the scoreboard runs on a tiny subset."""
import json
import os

import numpy as np
import pytest

import lstm_jax
from lstm_jax import metrics
from lstm_jax import scoreboard
from lstm_jax import zoo

FAMILIES = sorted(zoo.FAMILIES)
SHORT = 12.0  # seconds of training file: enough for the checks, fast to draw


@pytest.mark.parametrize('family', FAMILIES)
def test_target_is_true_noise_plus_background(family):
  draw = zoo.make(family, 3, max_seconds=SHORT)
  quiet = zoo.make(family, 3, with_background=False, max_seconds=SHORT)
  for d in (draw, quiet):
    for rec, feats in ((d.train, d.features_train), (d.later, d.features_later)):
      assert rec.witnesses.dtype == np.float32 and np.all(np.isfinite(rec.witnesses))
      # The coupled noise is the sum of the true features (coefficients folded in).
      scale = np.std(rec.noise)
      assert scale > 0
      np.testing.assert_allclose(rec.noise, feats.sum(axis=1), atol=1e-5 * scale)
  # Without background the target is the coupled noise; with it, something else is there too.
  np.testing.assert_array_equal(quiet.train.target, quiet.train.noise)
  assert np.std(draw.train.target - draw.train.noise) > 1e-3 * np.std(draw.train.noise)
  # The same seed draws the same coupling; another seed another recording.
  np.testing.assert_array_equal(draw.train.noise, zoo.make(family, 3, max_seconds=SHORT).train.noise)
  assert not np.array_equal(draw.later.noise[:100], zoo.make(family, 4, max_seconds=SHORT).later.noise[:100])


@pytest.mark.parametrize('family', FAMILIES)
def test_oracle_reaches_its_floor_without_background(family):
  draw = zoo.make(family, 5, with_background=False, max_seconds=SHORT)
  oracle = zoo.fit_oracle(draw)
  nr = metrics.noise_reduction_db(draw.later.noise, oracle.predict(draw.features_later))
  assert nr > 100.0, nr  # float32 storage of the noise is the only error left
  # With background it still removes most of the noise.
  noisy = zoo.make(family, 5, max_seconds=SHORT)
  nr = metrics.noise_reduction_db(noisy.later.noise,
                                  zoo.fit_oracle(noisy).predict(noisy.features_later))
  assert nr > 20.0, nr


def test_families_span_what_users_bring():
  draws = [zoo.make(f, s) for f in FAMILIES for s in (0, 1, 2)]
  rates = {d.train.fs for d in draws}
  assert min(rates) == 256 and max(rates) >= 8192
  seconds = [len(d.train) / d.train.fs for d in draws]
  assert min(seconds) <= 15 and max(seconds) >= 600
  channels = [d.train.witnesses.shape[1] for d in draws]
  assert min(channels) == 2 and max(channels) >= 32
  assert {f.tuning for f in zoo.FAMILIES.values()} == {True, False}


def test_saved_files_load_as_a_users_recording(tmp_path):
  draw = zoo.make('mains_sidebands', 0, max_seconds=SHORT)
  train_path, later_path = zoo.save(draw, str(tmp_path))
  rec = lstm_jax.load_recording(train_path)
  np.testing.assert_array_equal(rec.witnesses, draw.train.witnesses)
  assert rec.fs == draw.train.fs and rec.noise is not None
  assert lstm_jax.load_recording(later_path).witnesses.shape[1] == rec.witnesses.shape[1]


def test_unknown_family_is_one_clear_error():
  with pytest.raises(lstm_jax.DataError, match="unknown zoo family 'nope'"):
    zoo.make('nope', 0)


def test_scoreboard_on_a_tiny_subset(tmp_path):
  tiny = dict(lstm_sizes=(4,), head_sizes=(8,), n_streams=4, chunk_len=64, bptt_len=64,
              num_steps=30, val_every=10, warmup_steps=5, eval_chunk_len=256,
              log_every_seconds=1e9)
  methods = ('ours', 'wiener', 'mlp', 'oracle')  # DeepClean: tests/test_deepclean.py
  summary = scoreboard.run(str(tmp_path), 'quick', families=['seed_segments'], methods=methods,
                           train_seeds=(0, 1), overrides=tiny, max_seconds=8.0, mlp_steps=100)
  (row,) = summary['rows']
  assert not row['errors']
  for key in ('ours', 'wiener', 'mlp', 'oracle', 'gap_capped', 'best_baseline'):
    assert np.isfinite(row[key]), key
  assert row['oracle'] > 30.0  # the seed's product coupling, fitted on its true feature
  assert row['ours_range'][0] <= row['ours'] <= row['ours_range'][1]
  for name in ('scoreboard.md', 'scoreboard.json', 'scoreboard.png'):
    assert (tmp_path / name).is_file()
  assert 'seed_segments/0' in (tmp_path / 'scoreboard.md').read_text()
  # Ours went through the user's path: a model directory and the cleaned later file.
  run = tmp_path / 'runs' / 'seed_segments_0_ours_0'
  assert (run / 'model' / 'params.msgpack').is_file() and (run / 'later_cleaned.npz').is_file()
  with open(tmp_path / 'tasks' / 'seed_segments_0_ours_1.json') as f:
    assert json.load(f)['train_seed'] == 1
  # A rerun finds every task done and recomputes nothing.
  stamp = {p: os.path.getmtime(tmp_path / 'tasks' / p) for p in os.listdir(tmp_path / 'tasks')}
  again = scoreboard.run(str(tmp_path), 'quick', families=['seed_segments'], methods=methods,
                         train_seeds=(0, 1), overrides=tiny, max_seconds=8.0, mlp_steps=100)
  assert again['rows'][0]['ours'] == row['ours']
  assert stamp == {p: os.path.getmtime(tmp_path / 'tasks' / p) for p in stamp}
  # Re-judged by the residual stage that ran them, the runs keep their figures.
  rejudged = scoreboard.rejudge(str(tmp_path))['rows']
  assert len(rejudged) == 2 and (tmp_path / 'rejudged.json').is_file()
  assert any('nr_db' in r for r in rejudged)
  for r in rejudged:
    if 'nr_db' in r:
      assert r['nr_db'] == pytest.approx(r['run_nr_db'], abs=0.01), r


def test_linear_path_alone_under_two_pick_rules(tmp_path):
  out = scoreboard.linear_path_alone(str(tmp_path), 'quick', ['seed_segments'],
                                     ('all_inputs_lowest', 'default'), max_seconds=20.0)
  (row,) = out['rows']
  for rule in ('all_inputs_lowest', 'default'):
    assert row[rule]['nr_db'] > 20.0  # the product of the two witnesses, found and filtered
  assert row['all_inputs_lowest']['inputs_used'] == [0, 1, 2]  # both witnesses and the product
  assert (tmp_path / 'linear_path_alone.json').is_file()
  with pytest.raises(lstm_jax.DataError, match='no scoreboard runs to re-judge'):
    scoreboard.rejudge(str(tmp_path / 'empty'))
  with pytest.raises(lstm_jax.DataError, match='unknown pick rule'):
    scoreboard.linear_path_alone(str(tmp_path), 'quick', ['seed_segments'], ('nope',))
