"""The metrics are dimensionless: the same numbers for data in any physical unit."""
import numpy as np
import pytest

from lstm_jax import data as data_lib
from lstm_jax import metrics


@pytest.mark.parametrize('unit', [1e-21, 1e18])
def test_evaluate_is_the_same_in_any_unit(unit):
  rec = data_lib.seed_mock(fs=256.0, duration=64.0)
  rng = np.random.default_rng(0)
  prediction = rec.noise + 0.05 * rng.standard_normal(len(rec.noise))
  scaled = data_lib.Recording(rec.witnesses, rec.target * np.float32(unit), rec.fs,
                              rec.noise * np.float32(unit), rec.name)
  want, got = metrics.evaluate(rec, prediction), metrics.evaluate(scaled, prediction * unit)
  assert want['nr_db'] > 20 and want['band_nr_db'] > 1  # not a trivial case
  for key in ('nr_db', 'band_nr_db', 'asd_ratio_band_mean', 'asd_ratio_band_median', 'r2',
              'r2_noise', 'nrmse_noise', 'prediction_std_over_target_std'):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=key)
