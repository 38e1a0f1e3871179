"""The DeepClean-architecture peer: its loss against plain scipy, a tiny fit, offline
prediction over the whole input, and errors on bad input."""
import numpy as np
import pytest
import scipy.signal

from lstm_jax import data
from lstm_jax import deepclean
from lstm_jax import losses


def test_window_psd_ratio_matches_scipy_welch(rng):
  fs, nperseg, band = 256.0, 64, (20.0, 60.0)
  y = rng.standard_normal((3, 512))
  pred = 0.7 * y + 0.3 * rng.standard_normal((3, 512))
  bins = losses.band_bins(fs, nperseg, band)
  got = np.asarray(losses.window_psd_ratio(pred.astype(np.float32), y.astype(np.float32), bins,
                                           nperseg))
  for b in range(3):
    _, p_res = scipy.signal.welch(y[b] - pred[b], fs, nperseg=nperseg, noverlap=nperseg // 2)
    _, p_y = scipy.signal.welch(y[b], fs, nperseg=nperseg, noverlap=nperseg // 2)
    want = np.mean(p_res[bins] / p_y[bins])
    np.testing.assert_allclose(got[b], want, rtol=2e-4)
    np.testing.assert_allclose(deepclean.psd_ratio_reference(pred[b], y[b], fs, nperseg, band),
                               want, rtol=1e-10)
  assert 0.0 < got.min() and got.max() < 1.0


def _sideband_recording(n, fs, seed):
  """A witness coupled linearly and through a slow witness's modulation: the coupled noise fills
  the band, where DeepClean's per-bin ratio is a well-posed objective."""
  r = np.random.default_rng(seed)
  slow = np.convolve(r.standard_normal(n + 64), np.hanning(64) / 8, 'valid')[:n]
  fast = r.standard_normal(n)
  noise = (0.8 + 0.5 * slow) * fast
  target = noise + 0.05 * r.standard_normal(n)
  return data.Recording(np.stack([fast, slow, r.standard_normal(n)], 1).astype(np.float32),
                        target.astype(np.float32), fs, noise.astype(np.float32), 'modulated')


def test_tiny_fit_lowers_the_loss_and_predicts_every_sample():
  fs = 128.0
  rec = _sideband_recording(int(40 * fs), fs, 0)
  model = deepclean.DeepCleanConv.fit([rec], band=(15.0, 25.0), budget_seconds=200.0,
                                      max_epochs=20, patience=100, window_seconds=4.0)
  info = model.info
  assert info['window_s'] == 4.0 and info['fft_s'] == 204 / fs and info['batch_size'] == 32
  assert model.latency_seconds == 4.0
  first = info['history'][0]['val_loss']
  assert info['best_val_loss'] < first < 1.5, info['history']
  later = _sideband_recording(1000, fs, 1)  # not a multiple of the window or its hop
  pred = model.predict(later.witnesses)
  assert pred.shape == (1000,) and np.all(np.isfinite(pred))
  assert deepclean.psd_ratio_reference(pred, later.noise, fs, model.nperseg, model.band) < 0.95


def test_bad_input_is_one_clear_error():
  fs = 64.0
  short = _sideband_recording(200, fs, 0)
  with pytest.raises(data.DataError, match='too short for DeepClean'):
    deepclean.DeepCleanConv.fit([short])
  rec = _sideband_recording(int(40 * fs), fs, 0)
  with pytest.raises(data.DataError, match='band 10-40 Hz must lie in'):
    deepclean.DeepCleanConv.fit([rec], band=(10.0, 40.0))
  other = data.Recording(rec.witnesses[:, :1], rec.target, fs)
  with pytest.raises(data.DataError, match='1 witness channels, but the first record has 3'):
    deepclean.DeepCleanConv.fit([rec, other])
  with pytest.raises(data.DataError, match='no training records'):
    deepclean.DeepCleanConv.fit([])


def test_band_is_chosen_around_a_loud_line(rng):
  fs = 512.0
  t = np.arange(int(60 * fs)) / fs
  y = np.sin(2 * np.pi * 60 * t) * (1 + 0.5 * np.sin(2 * np.pi * 2 * t)) * 10
  y = y + 0.01 * rng.standard_normal(len(t))  # the coupled noise, as the scoreboard gives it
  lo, hi = deepclean.choose_band(y, fs)
  assert 50.0 < lo < 58.0 and 62.0 < hi < 70.0


def test_scoreboard_task_scores_deepclean_in_its_band(tmp_path):
  from lstm_jax import scoreboard
  task = scoreboard.Task('mains_sidebands', 0, 'deepclean')
  r = scoreboard.run_task(task, str(tmp_path), {}, max_seconds=12.0, deepclean_seconds=5.0)
  lo, hi = r['dc_band_hz']
  assert lo < 60.0 < hi and hi - lo < 40.0  # the sidebands of its 60 Hz line
  assert np.isfinite(r['nr_db']) and np.isfinite(r['dc_band_nr_db'])
  assert r['latency_s'] == r['window_s'] and r['ours_train_s'] is None and r['budget_s'] == 5.0
