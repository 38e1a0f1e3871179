"""The mocks with memory: signature, the coupling they document, and what a linear filter sees."""
import numpy as np
import pytest
import scipy.signal

from lstm_jax import config as config_lib
from lstm_jax import data
from lstm_jax import train


@pytest.mark.parametrize('name', ['memory', 'memory_random', 'memory_linear'])
def test_mock_contract(name):
  rec = data.MOCKS[name](fs=256.0, duration=4.0, start=8.0, seed=3)
  assert isinstance(rec, data.Recording)
  assert rec.witnesses.shape == (1024, 2) and rec.target.shape == (1024,)
  assert rec.noise.shape == (1024,) and rec.fs == 256.0
  t = 8.0 + np.arange(1024) / 256.0
  np.testing.assert_allclose(rec.target, np.sin(t) + rec.noise, atol=1e-5)
  again = data.MOCKS[name](fs=256.0, duration=4.0, start=8.0, seed=3)
  np.testing.assert_array_equal(rec.target, again.target)
  other = data.MOCKS[name](fs=256.0, duration=4.0, start=8.0, seed=4)
  assert not np.allclose(rec.witnesses[:, 1], other.witnesses[:, 1])


def test_memory_mock_is_the_documented_coupling():
  fs, delay_s = 512.0, 0.02
  rec = data.memory_mock(fs=fs, duration=8.0, start=2.0, seed=5, delay_s=delay_s)
  t = 2.0 + np.arange(len(rec)) / fs
  m, n = rec.witnesses[:, 0].astype(np.float64), rec.witnesses[:, 1].astype(np.float64)
  np.testing.assert_allclose(m, np.sin(10.0 * t), atol=1e-6)
  b, a = data.resonator_coefficients(fs, 30.0, 0.03)
  lag_s = round(delay_s * fs) / fs  # the delay is a whole number of samples
  expected = scipy.signal.lfilter(b, a, np.sin(10.0 * (t - lag_s)) * n)
  np.testing.assert_allclose(rec.noise, expected, atol=1e-5)


def test_resonator_rings_at_its_frequency_and_decays_in_ringdown():
  fs = 2048.0
  b, a = data.resonator_coefficients(fs, 30.0, 0.03)
  impulse = np.zeros(8192)
  impulse[0] = 1.0
  h = scipy.signal.lfilter(b, a, impulse)
  assert np.sum(h * h) == pytest.approx(1.0, rel=1e-6)  # unit power gain on white noise
  f, resp = scipy.signal.freqz(b, a, worN=1 << 15, fs=fs)
  assert f[np.argmax(np.abs(resp))] == pytest.approx(30.0, abs=1.0)
  # The envelope falls by e in 0.03 s: both poles have radius exp(-1 / (0.03 fs)), and the
  # energy left after one ring-down is e^-2 of the total.
  np.testing.assert_allclose(np.abs(np.roots(a)), np.exp(-1.0 / (0.03 * fs)), rtol=1e-9)
  k = int(round(0.03 * fs))
  assert np.sum(h[k:] ** 2) == pytest.approx(np.exp(-2.0), rel=0.2)
  with pytest.raises(ValueError, match='resonance_hz'):
    data.resonator_coefficients(fs, 2000.0, 0.03)


def test_bilinear_coupling_is_invisible_to_lagged_witnesses():
  # The reason a Wiener filter gets ~0 dB: noise is uncorrelated with every lag of each witness.
  rec = data.memory_mock(fs=512.0, duration=64.0, seed=1)
  noise = rec.noise.astype(np.float64)
  for ch in range(2):
    w = rec.witnesses[:, ch].astype(np.float64)
    w = (w - w.mean()) / w.std()
    corr = [np.mean(noise[k:] * w[:len(w) - k]) / noise.std() for k in range(0, 64)]
    assert np.max(np.abs(corr)) < 0.03, ch


def test_linear_variant_adds_a_delayed_witness():
  fs = 1024.0
  base = data.memory_mock(fs=fs, duration=2.0, seed=2)
  lin = data.MOCKS['memory_linear'](fs=fs, duration=2.0, seed=2)
  k = int(round(0.005 * fs))
  n = base.witnesses[:, 1]
  np.testing.assert_allclose(lin.noise[k:] - base.noise[k:], 0.5 * n[:-k], atol=1e-5)
  np.testing.assert_allclose(lin.noise[:k], base.noise[:k], atol=1e-6)


def test_random_modulator_is_slow_and_unit_variance():
  rec = data.MOCKS['memory_random'](fs=256.0, duration=64.0, seed=1)
  m = rec.witnesses[:, 0].astype(np.float64)
  assert m.std() == pytest.approx(1.0, rel=0.05)
  f, p = scipy.signal.welch(m, fs=256.0, nperseg=4096)
  assert p[f <= 5.0].sum() / p.sum() > 0.9
  with pytest.raises(ValueError, match='modulator'):
    data.memory_mock(fs=256.0, duration=1.0, modulator='square')


def test_load_split_uses_registered_mock():
  config = config_lib.Config(mock='memory', mock_fs=256.0, n_train_records=2,
                             train_record_seconds=2.0, eval_seconds=1.0)
  split = train.load_split(config)
  assert len(split.train) == 2 and len(split.heldout) == 256
  assert split.heldout.name.startswith('memory_mock') and split.source == 'mock:memory'
  assert config_lib.get_config('memory').mock == 'memory'
