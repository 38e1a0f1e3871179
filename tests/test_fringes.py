"""Fringes: the fit of scattered light's coupling (``lstm_jax.fringes``), its column in the
widened witnesses (``volterra.Products.fringes``), and the linear path that keeps it."""
import dataclasses

import numpy as np
import scipy.signal

import lstm_jax
from lstm_jax import baselines
from lstm_jax import data as data_lib
from lstm_jax import fringes
from lstm_jax import metrics
from lstm_jax import train as train_lib
from lstm_jax import volterra
from lstm_jax import zoo

FS = 128.0
# A pendulum-like phase path (0.9 Hz, Q 1.5, 3 rad per std, a slight lead), two harmonics,
# read through a first-order high-pass at 4 Hz (one of the readout's filters).
THETA = (np.log(0.9), np.log(1.5), 3.0, -0.2, 0.0)


def fringe_noise(x):
  """The coupling of the standardized slow witness ``x``."""
  b, a = fringes._biquad(THETA, FS)  # pylint: disable=protected-access
  phi = scipy.signal.lfilter(b, a, x)
  light = 0.8 * np.cos(phi) + 0.5 * np.sin(phi) + 0.25 * np.cos(2 * phi + 1.0)
  return scipy.signal.lfilter(*scipy.signal.butter(1, 4.0, 'highpass', fs=FS), light)


def witnesses(rng, n):
  """(n, 3): the slow witness, another slow one that carries nothing, a fast idle one."""
  return np.stack([zoo.coloured(rng, n, FS, 0.1, 2.0), zoo.coloured(rng, n, FS, 0.1, 2.0),
                   zoo.coloured(rng, n, FS, 5.0, 50.0)], 1)


def test_the_fit_recovers_a_fringe_coupling_that_no_filter_over_its_witness_finds():
  """Noiseless: the fitted coupling of the right witness (of two slow ones) renders fresh
  data to 40 dB, where a least-squares filter over the witnesses renders almost nothing."""
  rng = np.random.default_rng(0)
  w = witnesses(rng, int(400 * FS))
  x = (w - w.mean(0)) / w.std(0)
  noise = fringe_noise(x[:, 0])
  half = len(x) // 2
  found, scores = fringes.fit_fringes(x[:half], noise[:half], FS)
  assert [f.witness for f in found] == [0], scores
  column = fringes.column(found[0].filters(FS), found[0].weights, x[:, 0])
  later = slice(half + int(10 * FS), None)
  gain = np.dot(column[later], noise[later]) / np.dot(column[later], column[later])
  assert 0.9 < gain < 1.1
  assert metrics.noise_reduction_db(noise[later], column[later]) > 40.0
  taps = 32
  design = np.stack([np.roll(x[:, c], k) for c in range(3) for k in range(taps)], 1)
  weights, *_ = np.linalg.lstsq(design[taps:half], noise[taps:half], rcond=None)
  assert metrics.noise_reduction_db(noise[later], design[later] @ weights) < 3.0


def test_no_fringe_is_kept_where_the_slow_witnesses_carry_none():
  rng = np.random.default_rng(1)
  w = witnesses(rng, int(200 * FS))
  x = (w - w.mean(0)) / w.std(0)
  target = scipy.signal.lfilter([0.5, 0.3], [1.0], x[:, 2]) + rng.standard_normal(len(x))
  found, _ = fringes.fit_fringes(x, target, FS)
  assert not found


def test_no_fringe_is_fitted_at_a_rate_too_low_to_hold_one():
  rng = np.random.default_rng(4)
  x = rng.standard_normal((4096, 2))
  assert fringes.fit_fringes(x, np.cos(3 * x[:, 0]), 1.0) == ([], [])


def test_a_fringe_fitted_at_a_lower_rate_renders_at_the_files():
  """At 1024 Hz the path is fitted decimated to 256 Hz, and the readout (here a second-order
  high-pass, which its first-order filters render only by large weights that nearly cancel)
  is solved again at 1024 Hz: the weights solved at 256 Hz rendered this fringe under a red
  background to 22.6 dB."""
  fs = 1024.0
  rng = np.random.default_rng(0)
  n = int(200 * fs)
  x = zoo.coloured(rng, n, fs, 0.1, 3.0)
  x = (x - x.mean()) / x.std()
  phi = scipy.signal.lfilter(*fringes._biquad((np.log(1.5), np.log(0.7), 3.0, 0.0, 0.0), fs), x)  # pylint: disable=protected-access
  noise = scipy.signal.lfilter(*scipy.signal.butter(2, 9.0, 'highpass', fs=fs), np.cos(phi + 0.5))
  red = zoo.highpass(zoo.coloured(rng, n, fs, 0.5, 0.4 * fs, order=1), fs, 0.1)
  half = n // 2
  found, scores = fringes.fit_fringes(x[:half, None], (noise + noise.std() * red)[:half], fs)
  assert [f.witness for f in found] == [0], scores
  column = fringes.column(found[0].filters(fs), found[0].weights, x)
  later = slice(half + int(10 * fs), None)
  assert metrics.noise_reduction_db(noise[later], column[later]) > 25.0


def split_of_fringes(seed: int):
  rng = np.random.default_rng(seed)

  def record(seconds):
    w = witnesses(rng, int(seconds * FS))
    noise = fringe_noise((w[:, 0] - w[:, 0].mean()) / w[:, 0].std())
    target = noise + 0.3 * noise.std() * rng.standard_normal(len(w))
    return lstm_jax.Recording(w.astype(np.float32), target.astype(np.float32), FS,
                              noise.astype(np.float32))

  return train_lib.Split([record(240)], record(60), 'test', record(60))


def test_the_linear_path_keeps_a_fringe_where_nothing_linear_qualifies(monkeypatch):
  """No filter over the witnesses lowers the validation stretch; the fringe does, and the
  linear path it starts removes most of the held-out coupling."""
  split = split_of_fringes(3)
  held = split.heldout
  warm = int(10 * FS)
  nr = lambda f: metrics.noise_reduction_db(held.noise[warm:],
                                            f.predict(held.witnesses)[warm:])
  _, path, stats = train_lib.fit_linear_path(split, 16)
  assert stats['kept'] and stats['fringes'] == [[0]], stats
  assert nr(path) > 20.0, nr(path)
  monkeypatch.setattr(train_lib, 'FRINGES', False)
  _, plain, plain_stats = train_lib.fit_linear_path(split, 16)
  assert plain is None or nr(plain) < 3.0


def test_a_fringe_takes_the_place_of_bent_forms_of_its_witness():
  """A linear path that bent the slow witness (tanh shapes, as the products stage screens
  them) leaves what no phase path fits: the fringe is fitted on what a filter without the
  shapes leaves, and the filter kept drops them (with them: 15.7 dB held out)."""
  theta = (np.log(0.9), np.log(0.7), 2.0, 0.0, 0.0)
  rng = np.random.default_rng(3)

  def record(seconds):
    w = witnesses(rng, int(seconds * FS))
    x = (w - w.mean(0)) / w.std(0)
    phi = scipy.signal.lfilter(*fringes._biquad(theta, FS), x[:, 0])  # pylint: disable=protected-access
    light = scipy.signal.lfilter(*scipy.signal.butter(2, 3.0, 'highpass', fs=FS),
                                 np.cos(phi + 0.7))
    noise = light / light.std() + 0.7 * scipy.signal.lfilter([0.6, 0.3, -0.2], [1.0], x[:, 2])
    target = noise + 0.3 * noise.std() * rng.standard_normal(len(w))
    return lstm_jax.Recording(w.astype(np.float32), target.astype(np.float32), FS,
                              noise.astype(np.float32))

  split = train_lib.Split([record(150)], record(40), 'test', record(40))
  held, warm = split.heldout, int(10 * FS)
  nr = lambda f: metrics.noise_reduction_db(held.noise[warm:],
                                            f.predict(held.witnesses)[warm:])
  norm = data_lib.Normalizer.fit(split.train[0].witnesses, 'standardize', 'witness channel')
  x0 = norm.apply(split.train[0].witnesses)[:, 0].astype(np.float64)
  bent = volterra.Products([], norm, [(0, a, float(np.mean(np.tanh(a * x0) * x0)))
                                      for a in (0.5, 1.0, 2.0, 4.0)])
  [[(fir, _)]] = baselines.WienerFIR.fit_beside_sets(
      [bent.widened(r) for r in split.train], None, [64], [[0, 2, 3, 4, 5, 6]])
  fir = dataclasses.replace(fir, products=bent)
  assert nr(fir) < 5.0
  new, entry = train_lib._with_fringes(fir, {}, split, 64, lengths=[4, 16, 64])  # pylint: disable=protected-access
  assert entry['fringes_screened'][0][0] == 0 and entry['fringes_screened'][0][1] > 0.8
  assert not set(new.inputs_used()) & set(bent.columns_of('shapes', 3))
  assert nr(new) > 19.0, nr(new)
