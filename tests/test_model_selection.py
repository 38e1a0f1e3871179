"""Validation: where the stretch comes from, which update is kept, and that training keeps it."""
import numpy as np
import pytest

import lstm_jax
from lstm_jax import data as data_lib
from lstm_jax import train as train_lib

TINY = lstm_jax.Config(
    mock_fs=128.0, n_train_records=2, train_record_seconds=16.0, eval_seconds=8.0,
    lstm_sizes=(8,), head_sizes=(16,), n_streams=4, chunk_len=64, bptt_len=32,
    num_steps=60, learning_rate=1e-2, warmup_steps=10, log_every_seconds=1e9, val_every=20)


def test_user_data_validation_is_the_end_of_the_training_part(tmp_path):
  n = 1000
  t = np.arange(n, dtype=np.float32)
  path = str(tmp_path / 'rec.npz')
  np.savez(path, witnesses=np.stack([t, -t], 1), target=t, fs=np.float64(10.0))
  split = train_lib.load_split(TINY.replace(data=path, holdout_fraction=0.2, val_fraction=0.1))
  # 800 samples before the held-out cut; the last 80 of them validate.
  assert split.train[0].target[[0, -1]].tolist() == [0, 719]
  assert split.validation.target[[0, -1]].tolist() == [720, 799]
  assert split.heldout.target[[0, -1]].tolist() == [800, 999]
  assert train_lib.load_split(TINY.replace(data=path, val_fraction=0.0)).validation is None


def test_mock_validation_is_its_own_record_before_the_training_ones():
  split = train_lib.load_split(TINY.replace(val_fraction=0.25))
  # A quarter of the 2 x 16 s of training records, with a noise draw of its own.
  assert len(split.validation) == 8 * 128
  assert len(split.train) == 2 and all(len(r) == 16 * 128 for r in split.train)
  same_time = data_lib.MOCKS['seed'](fs=128.0, duration=8.0, start=-8.0, seed=1)
  np.testing.assert_allclose(split.validation.target - split.validation.noise,
                             same_time.target - same_time.noise, atol=1e-6)  # the signal
  assert not np.allclose(split.validation.noise, same_time.noise)  # not the noise


def test_user_data_stretches_come_with_the_witnesses_before_them(tmp_path):
  n = 1000
  t = np.arange(n, dtype=np.float32)
  path = str(tmp_path / 'rec.npz')
  np.savez(path, witnesses=np.stack([t, -t], 1), target=t, fs=np.float64(10.0))
  config = TINY.replace(data=path, holdout_fraction=0.2, val_fraction=0.1, eval_chunk_len=16,
                        residual_taps=8)
  assert train_lib.lead_in_samples(config, 10.0) == 80  # 8 s at 10 Hz
  split = train_lib.load_split(config)
  # The 80 samples before each cut, witnesses only (the targets are not there to be used).
  assert split.heldout_lead[[0, -1], 0].tolist() == [720, 799]
  assert split.validation_lead[[0, -1], 0].tolist() == [640, 719]
  short = train_lib.load_split(config.replace(holdout_fraction=0.95, val_fraction=0.2))
  assert len(short.validation_lead) == 40 and len(short.heldout_lead) == 50  # what there is


def test_mock_stretches_continue_the_witnesses_before_them():
  config = TINY.replace(val_fraction=0.25)
  split = train_lib.load_split(config)
  lead = train_lib.lead_in_samples(config, 128.0)
  assert len(split.heldout_lead) == len(split.validation_lead) == lead == 2048
  assert len(split.heldout) == 8 * 128 and len(split.validation) == 8 * 128
  # Witness 0 of the seed mock is sin(10 t): one draw runs from the lead-in into the stretch.
  for stretch, lead_in, t0 in ((split.heldout, split.heldout_lead, 32.0),
                               (split.validation, split.validation_lead, -8.0)):
    t = t0 + np.arange(-lead, len(stretch)) / 128.0
    np.testing.assert_allclose(np.concatenate([lead_in, stretch.witnesses])[:, 0],
                               np.sin(10 * t), atol=1e-5)


@pytest.mark.parametrize('tolerance,kept', [(0.0, 40), (1e-3, 60), (0.5, 100)])
def test_the_latest_update_within_the_tolerance_of_the_lowest_is_kept(tolerance, kept):
  history = [(20, 0.5), (40, 0.3), (60, 0.3002), (80, np.nan), (100, 0.4)]
  config = TINY.replace(val_tolerance=tolerance)
  validation = data_lib.MOCKS['seed'](fs=128.0, duration=1.0)
  last, best = object(), object()
  params, summary = train_lib._kept_params(last, best, history, config, validation)
  assert summary['kept_step'] == kept and summary['best_step'] == 40
  assert params is (last if kept == 100 else best)
  assert train_lib._kept_params(last, best, [(20, np.nan)], config, validation) == (last, None)


def test_training_reports_validation_and_keeps_a_validated_update():
  config = TINY.replace(linear_taps=0, residual_taps=0)  # the recurrent model alone
  trained, stats = train_lib.train(config, train_lib.load_split(config))
  val = stats['validation']
  assert [s for s, _ in val['history']] == [20, 40, 60]
  assert val['seconds'] == pytest.approx(0.1 * 2 * 16.0, abs=1 / 128)
  assert val['kept_step'] in (20, 40, 60) and np.isfinite(val['best_mse'])
  # The kept parameters give the validation MSE recorded for their update.
  split = train_lib.load_split(config)
  validate = train_lib.make_validator(trained.model, split.validation, trained.input_norm,
                                      trained.target_norm, config.eval_chunk_len,
                                      split.validation_lead)
  recorded = dict(val['history'])[val['kept_step']]
  assert float(validate(trained.params)) == pytest.approx(recorded, rel=1e-6)
  _, no_val = train_lib.train(TINY.replace(val_fraction=0.0), train_lib.load_split(
      TINY.replace(val_fraction=0.0)))
  assert no_val['validation'] is None


def test_doctor_names_an_update_kept_because_validation_rose():
  from lstm_jax import doctor
  summary = {'kept_step': 750, 'last_step': 7000, 'last_mse': 0.1856,
             'history': [[500, 0.16], [750, 0.1534], [7000, 0.1856]]}
  (found,) = doctor.check_validation(summary)
  assert found['severity'] == 'warning' and 'update 750' in found['message']
  assert '+21.0%' in found['message'], found['message']
  assert doctor.check_validation(dict(summary, kept_step=7000)) == []
  assert doctor.check_validation(None) == []
