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


def test_a_dc_offset_is_not_noise():
  # A target at 2e6 +- 1 and the prediction that carries the offset score as without it
  # (with rms instead of std, nr_db against the noise read -129 dB here).
  rec = data_lib.seed_mock(fs=256.0, duration=64.0)
  rng = np.random.default_rng(0)
  prediction = rec.noise + 0.05 * rng.standard_normal(len(rec.noise))
  target = rec.target.astype(np.float64)
  shifted = data_lib.Recording(rec.witnesses, target + 2e6, rec.fs, rec.noise, rec.name)
  want = metrics.evaluate(data_lib.Recording(rec.witnesses, target, rec.fs, rec.noise, rec.name),
                          prediction)
  got = metrics.evaluate(shifted, prediction + 2e6)
  for key in ('nr_db', 'band_nr_db', 'r2', 'nrmse_noise'):
    np.testing.assert_allclose(got[key], want[key], rtol=1e-6, err_msg=key)
  # Against the target (no noise known) the offset is not counted as removed noise either.
  bare = data_lib.Recording(rec.witnesses, target + 2e6, rec.fs, None, rec.name)
  assert metrics.evaluate(bare, prediction + 2e6)['nr_db'] < 20
