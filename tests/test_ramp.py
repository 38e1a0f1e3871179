"""Seed 003's ramp: raw data give a constant prediction the doctor explains; standardized learn."""
import numpy as np
import pytest

from lstm_jax import data as data_lib
from lstm_jax import doctor
from lstm_jax import ramp

# Short runs: 4 updates of 701 examples per epoch (one compiled shape), a higher rate.
FAST = dict(batch_size=701, learning_rate=5e-3)


def test_data_is_the_blogs():
  x, y = ramp.make_data(1, 2804)
  assert x.shape == (2804, 16, 1) and y.shape == (2804,)
  np.testing.assert_array_equal(x[0, :, 0], np.full(16, 10.0))
  np.testing.assert_array_equal(x[-1, :, 0], np.full(16, 28040.0))
  np.testing.assert_array_equal(y[[0, -1]], [1.0, 2804.0])
  x_test, y_test = ramp.make_data(3000, 100)
  assert y_test[0] == 3000.0 and y_test[-1] == 3099.0 and x_test[-1, 0, 0] == 30990.0


def test_raw_predicts_a_constant_and_the_doctor_names_scaling():
  m = ramp.run(ramp.RampConfig(standardize=False, epochs=3, **FAST))
  assert m['train_prediction_std_over_target_std'] < 0.01
  assert m['test_prediction_std'] < 1.0  # the same value for targets 3000..3099
  assert m['test_mae'] > 2000.0
  start = [f for f in m['doctor'] if f['stage'] == 'start' and f['severity'] == 'warning']
  scaling = [f['message'] for f in start if f['check'] == 'scaling']
  assert any('inputs are not standardized' in s and 'mean 1.4e+04' in s for s in scaling)
  assert any('target is not standardized' in s and 'stay near a constant' in s for s in scaling)
  end = [f['check'] for f in m['doctor'] if f['stage'] == 'end']
  assert 'prediction_collapse' in end


def test_standardized_ramp_data_raise_no_scaling_finding():
  # What the standardized run feeds the model (its training is measured by the CLI run in
  # docs/quality.md, "Seed 003's ramp"; a test-sized run would cost another train-step compile).
  x, y = ramp.make_data(1, 2804)
  xs = data_lib.Normalizer.fit(x.reshape(-1, 1)).apply(x.reshape(-1, 1))
  ys = data_lib.Normalizer.fit(y).apply(y[:, None])[:, 0]
  assert doctor.check_scaling(xs, ys, lr_sum=2200 * 5e-4, output_fan_in=100) == []
  assert doctor.check_updates(100 * 22, 0.999) == []


def test_bad_ramp_flags_are_named():
  with pytest.raises(data_lib.DataError, match='--dropout must be in'):
    ramp.run(ramp.RampConfig(dropout=1.0))
  with pytest.raises(data_lib.DataError, match='--epochs must be >= 1'):
    ramp.run(ramp.RampConfig(epochs=0))
