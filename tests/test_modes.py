"""Moving modes: the fit of a resonance whose frequency a slow witness moves
(``lstm_jax.modes``), its column in the widened witnesses (``volterra.Products.modes``), and
the linear path that keeps it."""
import dataclasses

import jax.numpy as jnp
import numpy as np
import scipy.signal

import lstm_jax
from lstm_jax import baselines
from lstm_jax import data as data_lib
from lstm_jax import metrics
from lstm_jax import modes
from lstm_jax import train as train_lib
from lstm_jax import volterra

FS = 512.0
# 60 Hz, 1.5 Hz per std and -0.3 Hz per squared std of a temperature read through a 1 s lag,
# ringing for 0.25 s (a width of 1.3 Hz): the mode moves by more than its width.
THETA = (60.0, 1.5, -0.3, np.log(4.0), 1.0)


def witnesses(rng, n):
  """A broadband force, a slow temperature (0.005-0.05 Hz) and an idle channel."""
  force = rng.standard_normal(n)
  slow = scipy.signal.sosfiltfilt(scipy.signal.butter(1, [0.005, 0.05], 'bandpass', fs=FS,
                                                      output='sos'), rng.standard_normal(n))
  return np.stack([force, slow / slow.std(), rng.standard_normal(n)], 1)


def mode_noise(x, theta=THETA, gain=(1.0, 0.5)):
  """The mode of standardized columns 0 (drive) and 1 (temperature)."""
  return modes.column(modes.Mode(0, 1, theta, gain, 1.0).digital(FS), x[:, 0], x[:, 1])


def test_the_recursion_is_the_per_sample_loop():
  """Block by block in closed form (numpy) and as an associative scan (jax): both the plain
  recursion, the lag and the quadratic included."""
  rng = np.random.default_rng(0)
  u, v = rng.standard_normal(3000), np.cumsum(rng.standard_normal(3000)) / 30
  w0, dw, dw2, r, a = modes.Mode(0, 1, THETA, (1.0, 0.0), 1.0).digital(FS)[:5]
  level, s, want = v[0], 0j, np.empty(3000, complex)
  for n in range(3000):
    level = a * level + (1 - a) * v[n]
    s = r * np.exp(1j * (w0 + dw * level + dw2 * level * level)) * s + u[n]
    want[n] = s
  np.testing.assert_allclose(modes.recursion(u, v, w0, dw, dw2, r, a), want, rtol=0,
                             atol=1e-9 * np.abs(want).max())
  from_jax = np.asarray(modes.recursion(jnp.asarray(u[None]), jnp.asarray(v[None]), w0, dw, dw2,
                                        r, a, xp=jnp))[0]
  np.testing.assert_allclose(from_jax, want, rtol=0, atol=1e-3 * np.abs(want).max())


def test_the_fit_recovers_a_moving_mode_that_a_fixed_filter_averages_away():
  rng = np.random.default_rng(1)
  x = witnesses(rng, int(240 * FS))
  noise = mode_noise(x)
  half = len(x) // 2
  found, scores = modes.fit_modes(x[:half], noise[:half], FS)
  assert len(found) == 1 and (found[0].drive, found[0].slow) == (0, 1), scores
  np.testing.assert_allclose(found[0].theta, THETA, rtol=1e-4, atol=1e-4)
  np.testing.assert_allclose(found[0].gain, (1.0, 0.5), rtol=1e-4)
  column = modes.column(found[0].digital(FS), x[:, 0], x[:, 1])
  late = slice(half + int(10 * FS), None)
  assert metrics.noise_reduction_db(noise[late], column[late]) > 100.0  # exact: 290 dB
  # A filter over the drive renders the mode where it sits on average.
  fir = baselines.WienerFIR.fit([lstm_jax.Recording(x[:half].astype(np.float32),
                                                    noise[:half].astype(np.float32), FS)], 512)
  assert metrics.noise_reduction_db(noise[late], fir.predict(x)[late]) < 6.0  # 3.6


def test_no_mode_is_fitted_where_the_slow_witness_moves_none():
  """A fixed resonance of the force: its band tracks no slow witness."""
  rng = np.random.default_rng(2)
  x = witnesses(rng, int(120 * FS))
  fixed = mode_noise(x, (60.0, 0.0, 0.0, np.log(4.0), 0.0))
  found, scores = modes.fit_modes(x, fixed + 0.1 * fixed.std() * rng.standard_normal(len(x)), FS)
  assert found == [] and scores and all(s[2] is None for s in scores), scores


def mode_products():
  rng = np.random.default_rng(3)
  w = witnesses(rng, int(60 * FS)) * [2.0, 5.0, 1.0] + [1.0, -3.0, 0.0]
  norm = data_lib.Normalizer.fit(w, 'standardize', 'witness channel')
  digital = modes.Mode(0, 1, THETA, (1.0, 0.5), 1.0).digital(FS)
  return volterra.Products([], norm, modes=[(0, 1, digital)]), w


def test_columns_inserted_before_a_kind_move_its_columns_on():
  """Bent paths come before fringes and modes in the widening: a filter's mode column is
  found where the widened products put it."""
  products, _ = mode_products()
  bent = dataclasses.replace(products, bent_paths=[(2, 1.0, (1.0,), ((1.0, 0.0, 1.0),))])
  assert list(products.columns_of('modes', 3)) == [3]
  assert bent.moved([0, 2, 3], products, 3) == [0, 2, 4]
  assert bent.added('bent_paths', products, 3) == [3]


def split_of_modes(seed: int):
  rng = np.random.default_rng(seed)

  def record(seconds):
    w = witnesses(rng, int(seconds * FS))
    noise = mode_noise(w)  # the processes are standardized as drawn, the same in every record
    target = noise + 0.1 * noise.std() * rng.standard_normal(len(w))
    return lstm_jax.Recording(w.astype(np.float32), target.astype(np.float32), FS,
                              noise.astype(np.float32))

  return train_lib.Split([record(120)], record(40), 'test', record(40))


def test_the_linear_path_keeps_a_moving_mode(monkeypatch):
  """A filter over the force qualifies (the mode's average); the mode widens it, and the
  linear path then removes most of the held-out coupling."""
  split = split_of_modes(4)
  held, warm = split.heldout, int(20 * FS)
  nr = lambda f: metrics.noise_reduction_db(held.noise[warm:],
                                            f.predict(held.witnesses)[warm:])
  _, path, stats = train_lib.fit_linear_path(split, 64)
  assert stats['kept'] and stats['modes'] == [[0, 1]], stats
  assert nr(path) > 40.0, nr(path)  # 54.2
  monkeypatch.setattr(train_lib, 'MODES', False)
  _, plain, _ = train_lib.fit_linear_path(split, 64)
  assert nr(plain) < 3.0, nr(plain)  # 0.4
