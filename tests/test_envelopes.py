"""Envelopes: the screen and fit of a witness band's detected power (``lstm_jax.envelopes``),
its column in the widened witnesses (``volterra.Products.envelopes``), and the linear path that
keeps it."""

import numpy as np
import scipy.signal

import lstm_jax
from lstm_jax import baselines
from lstm_jax import envelopes
from lstm_jax import metrics
from lstm_jax import train as train_lib

FS = 1024.0
BAND = (100.0, 130.0)  # Hz: a fast band of witness 0


def witnesses(rng, n):
  """A broadband witness whose band's loudness swells (0.1-1 Hz), a second broadband witness
  and an idle channel."""
  settle = int(30 * FS)  # the slow filter's start left out
  swell = scipy.signal.sosfilt(scipy.signal.butter(1, [0.1, 1.0], 'bandpass', fs=FS,
                                                   output='sos'),
                               rng.standard_normal(n + settle))[settle:]
  band = scipy.signal.sosfilt(scipy.signal.butter(2, BAND, 'bandpass', fs=FS, output='sos'),
                              rng.standard_normal(n))
  fast = rng.standard_normal(n) + np.exp(0.5 * swell / swell.std()) * band / band.std()
  return np.stack([fast, rng.standard_normal(n), rng.standard_normal(n)], 1)


def envelope_noise(x):
  """The square law on witness 0's band, through a 3 Hz one-pole low-pass (a std of about 1,
  the same scale in every record)."""
  u = scipy.signal.sosfilt(scipy.signal.butter(2, BAND, 'bandpass', fs=FS, output='sos'),
                           x[:, 0])
  return scipy.signal.lfilter(*scipy.signal.butter(1, 3.0, fs=FS), u * u) / 1.8


def test_the_screen_finds_the_band_and_the_witness():
  rng = np.random.default_rng(0)
  x = witnesses(rng, int(60 * FS))
  r = envelope_noise(x) + 0.5 * rng.standard_normal(len(x))
  j, lo, hi, share = envelopes.screen(x, r, FS)[0]
  assert j == 0 and lo < 115.0 < hi and hi - lo < 80.0 and share > 0.5, (j, lo, hi, share)


def test_the_fit_recovers_an_envelope_that_filters_and_squares_miss():
  rng = np.random.default_rng(1)
  x = witnesses(rng, int(120 * FS))
  noise = envelope_noise(x)
  half = len(x) // 2
  found, scores = envelopes.fit_envelopes(x[:half], noise[:half], FS)
  assert len(found) == 1 and found[0].witness == 0 and found[0].shape == 'pair', scores
  np.testing.assert_allclose(found[0].band, BAND, rtol=0.02)
  column = envelopes.column(found[0].filters(FS), found[0].weights, x[:, 0])
  late = slice(half + int(10 * FS), None)
  assert metrics.noise_reduction_db(noise[late], column[late]) > 45.0  # 57.7
  # A filter over the witness and its square (the products stage's): the band's square
  # beside every other band's cross terms.
  widened = np.concatenate([x, x[:, :1] ** 2], 1)
  fir = baselines.WienerFIR.fit([lstm_jax.Recording(widened[:half].astype(np.float32),
                                                    noise[:half].astype(np.float32), FS)], 256)
  assert metrics.noise_reduction_db(noise[late], fir.predict(widened)[late]) < 20.0  # 15.7


def test_no_envelope_is_fitted_where_the_residual_holds_none():
  """A residual of the second witness's linear path and coloured noise: no band's power
  follows it."""
  rng = np.random.default_rng(2)
  x = witnesses(rng, int(60 * FS))
  r = (scipy.signal.lfilter(*scipy.signal.butter(2, 20.0, fs=FS), x[:, 1])
       + scipy.signal.lfilter([1.0], [1.0, -0.99], rng.standard_normal(len(x))))
  found, _ = envelopes.fit_envelopes(x, r, FS)
  assert found == []


def split_of_envelopes(seed: int):
  rng = np.random.default_rng(seed)

  def record(seconds):
    w = witnesses(rng, int(seconds * FS))
    noise = envelope_noise(w) + 0.5 * scipy.signal.lfilter([1.0, 0.5], [1.0], w[:, 1])
    target = noise + 0.1 * noise.std() * rng.standard_normal(len(w))
    return lstm_jax.Recording(w.astype(np.float32), target.astype(np.float32), FS,
                              noise.astype(np.float32))

  return train_lib.Split([record(120)], record(40), 'test', record(40))


def test_the_linear_path_keeps_an_envelope(monkeypatch):
  """A filter over the second witness qualifies; the envelope widens it, and the linear path
  then removes most of the held-out coupling."""
  split = split_of_envelopes(4)
  held, warm = split.heldout, int(10 * FS)
  nr = lambda f: metrics.noise_reduction_db(held.noise[warm:],
                                            f.predict(held.witnesses)[warm:])
  _, path, stats = train_lib.fit_linear_path(split, 32)
  assert stats['kept'] and stats['envelopes'] == [[0]], stats
  assert nr(path) > 40.0, nr(path)  # 52.0
  monkeypatch.setattr(train_lib, 'ENVELOPES', False)
  _, plain, _ = train_lib.fit_linear_path(split, 32)
  assert nr(plain) < 5.0, nr(plain)
