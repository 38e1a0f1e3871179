"""Training: schedules, truncated BPTT, a short run lowers the loss, the model round trip."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lstm_jax
from lstm_jax import train as train_lib

TINY = lstm_jax.Config(
    mock_fs=128.0, n_train_records=2, train_record_seconds=16.0, eval_seconds=8.0,
    lstm_sizes=(8,), head_sizes=(16,), n_streams=4, chunk_len=64, bptt_len=32,
    num_steps=150, learning_rate=1e-2, warmup_steps=10, log_every_seconds=1e9)


def test_inverse_time_schedule_is_keras_decay():
  cfg = lstm_jax.get_config('seed_keras')
  sched = train_lib.make_schedule(cfg)
  np.testing.assert_allclose(sched(0), 3.9e-5)
  np.testing.assert_allclose(sched(300), 3.9e-5 / 16.0, rtol=1e-6)


def test_cosine_and_constant_schedules():
  cfg = lstm_jax.Config(num_steps=100, warmup_steps=10, learning_rate=1e-3, schedule='cosine')
  sched = train_lib.make_schedule(cfg)
  assert float(sched(0)) == 0.0 and np.isclose(float(sched(10)), 1e-3)
  np.testing.assert_allclose(sched(100), 1e-5, rtol=1e-3)
  assert float(train_lib.make_schedule(cfg.replace(schedule='constant'))(77)) == 1e-3
  with pytest.raises(ValueError, match='schedule'):
    train_lib.make_schedule(cfg.replace(schedule='step'))


def test_plateau_drops_then_stops_on_the_validation_history():
  cfg = lstm_jax.Config(patience=2, plateau_drops=1, plateau_min_delta=0.01)
  improving = [(k, 1.0 / k) for k in range(1, 6)]
  assert train_lib.plateau_level(improving, cfg) == (0, False)
  # Two validations within 1% of the lowest: one drop; two more: the run ends.
  flat = improving + [(6, 0.2 * 0.995), (7, 0.3)]
  assert train_lib.plateau_level(flat, cfg) == (1, False)
  assert train_lib.plateau_level(flat + [(8, 0.25)], cfg) == (1, False)
  assert train_lib.plateau_level(flat + [(8, 0.25), (9, float('nan'))], cfg) == (1, True)
  # An improvement resets the count.
  assert train_lib.plateau_level(flat + [(8, 0.1), (9, 0.2)], cfg) == (1, False)


def test_plateau_run_stops_early_and_keeps_the_best_update():
  cfg = TINY.replace(schedule='plateau', num_steps=3000, val_every=20, patience=2,
                     plateau_drops=1, val_fraction=0.2)
  model, stats = train_lib.train(cfg, train_lib.load_split(cfg))
  assert stats['stopped_early'] and stats['num_steps'] < 3000
  assert stats['num_steps'] == stats['validation']['last_step']
  history = dict(map(tuple, stats['validation']['history']))
  assert history[stats['validation']['kept_step']] <= 1.001 * min(history.values())


def test_bptt_truncation_changes_gradient_not_loss():
  model = lstm_jax.build_model(TINY)
  x = jax.random.normal(jax.random.key(0), (2, 64, 2))
  y = jax.random.normal(jax.random.key(1), (2, 64, 1))
  carry = model.initialize_carry(2)
  params = model.init(jax.random.key(2), carry, x)['params']
  out = {}
  for bptt in (64, 16):
    (loss, new_carry), g = jax.value_and_grad(train_lib.loss_fn, argnums=1, has_aux=True)(
        model, params, carry, x, y, bptt)
    out[bptt] = loss, new_carry, g
  np.testing.assert_allclose(out[64][0], out[16][0], rtol=1e-6)
  np.testing.assert_allclose(out[64][1][0].h, out[16][1][0].h, atol=1e-6)
  g64, g16 = (out[b][2]['lstm_0']['recurrent'] for b in (64, 16))
  assert not np.allclose(g64, g16)


def test_short_training_lowers_loss_and_round_trips(tmp_path):
  metrics = lstm_jax.train_and_evaluate(TINY, str(tmp_path))
  stats = metrics['train']
  assert stats['loss_last'] < 0.75 * stats['loss_first']
  assert metrics['heldout']['nr_db'] > 3.0  # learnt some of the coupling, held out
  for name in ('metrics.json', 'heldout_time.png', 'heldout_asd.png', 'heldout_asd_ratio.png'):
    assert (tmp_path / name).is_file()
  trained = lstm_jax.TrainedModel.load(str(tmp_path / 'model'))
  assert trained.config == TINY
  rec = lstm_jax.seed_mock(fs=128.0, duration=8.0, start=32.0, seed=999)
  whole = trained.predict(rec.witnesses)
  # Streaming in odd blocks gives the same prediction as one pass.
  stream = trained.stream(chunk_len=64)
  parts = [stream.push(rec.witnesses[a:a + 100]) for a in range(0, len(rec), 100)]
  np.testing.assert_allclose(np.concatenate(parts), whole, atol=1e-5)


def test_same_seed_same_result():
  cfg = TINY.replace(num_steps=5, eval_seconds=2.0)
  a = lstm_jax.train_and_evaluate(cfg)
  b = lstm_jax.train_and_evaluate(cfg)
  assert a['heldout']['nr_db'] == b['heldout']['nr_db']


def test_layout_errors_are_named():
  with pytest.raises(lstm_jax.DataError, match=r'chunk_len \(64\) must be a multiple of bptt_len \(48\)'):
    lstm_jax.train_and_evaluate(TINY.replace(bptt_len=48))
  with pytest.raises(lstm_jax.DataError, match='training data too short'):
    lstm_jax.train_and_evaluate(TINY.replace(chunk_len=4096, bptt_len=4096))
