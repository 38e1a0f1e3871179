"""Band-limited subtraction: the band-pass's response, zero phase, and streaming = whole record."""
import numpy as np
import pytest
import scipy.signal

from lstm_jax import bandlimit
from lstm_jax.data import DataError


@pytest.mark.parametrize('band,fs', [((20.0, 70.0), 1024.0), ((55.0, 65.0), 4096.0),
                                     ((0.0, 30.0), 256.0), ((40.0, 128.0), 256.0),
                                     ((0.05, 0.25), 1.0)])
def test_response_stops_outside_the_band_and_passes_inside(band, fs):
  taps = bandlimit.design(band, fs)
  assert len(taps) % 2 == 1
  np.testing.assert_allclose(taps, taps[::-1], atol=1e-15)  # linear phase
  f, h = scipy.signal.freqz(taps, worN=1 << 16, fs=fs)
  gain = np.abs(h)
  lo, hi = band
  outside = (f < lo) | (f > hi) if hi < fs / 2 else f < lo
  assert gain[outside].max() <= 10 ** (-(bandlimit.STOP_DB - 0.1) / 20)
  width = min(0.1 * (hi - lo), bandlimit.MAX_TRANSITION_HZ)
  inside = (f >= lo + width * (lo > 0)) & (f <= hi - width * (hi < fs / 2))
  assert np.abs(gain[inside] - 1).max() < 0.01


def test_apply_is_the_centred_convolution_and_streaming_equals_it():
  rng = np.random.default_rng(0)
  x = rng.standard_normal(20000)
  x[5000:5400] = np.nan  # a gap: filtered as zero, NaN at its own place
  band, fs = (20.0, 70.0), 1024.0
  taps = bandlimit.design(band, fs)
  whole = bandlimit.apply(x, band, fs)
  reference = np.convolve(np.nan_to_num(x), taps, mode='same')
  reference[np.isnan(x)] = np.nan
  np.testing.assert_allclose(whole, reference, atol=1e-12)
  aligned = bandlimit.Aligned(band, fs)
  assert aligned.delay == (len(taps) - 1) // 2
  parts = [aligned.push(x[a:a + n], np.arange(a, min(a + n, len(x))))
           for a, n in zip(range(0, len(x), 1234), [1234] * 20)]
  parts.append(aligned.flush())
  y = np.concatenate([p[0] for p in parts])
  times = np.concatenate([p[1] for p in parts])
  np.testing.assert_array_equal(times, np.arange(len(x)))  # each sample with its own column
  np.testing.assert_allclose(y, whole, atol=1e-12)


def test_no_band_passes_through_and_a_short_record_is_whole():
  x = np.arange(10.0)
  np.testing.assert_array_equal(bandlimit.apply(x, None, 100.0), x)
  short = bandlimit.Aligned((10.0, 30.0), 100.0)  # delay longer than the record
  out = [short.push(x, x), short.flush()]
  np.testing.assert_array_equal(np.concatenate([o[1] for o in out]), x)
  assert sum(len(o[0]) for o in out) == 10


def test_bad_bands_are_one_clear_error():
  with pytest.raises(DataError, match='need 0 <= lo < hi'):
    bandlimit.design((70.0, 20.0), 1024.0)
