"""Losses: the JAX Welch PSD, the band-limited spectral loss, its gradient, and the train hook."""
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.signal

from lstm_jax import config as config_lib
from lstm_jax import losses
from lstm_jax import train
from lstm_jax.inference import build_model


def test_welch_psd_matches_scipy_up_to_a_constant(rng):
  x = rng.standard_normal((3, 1024)).astype(np.float32)
  x[1] += np.sin(np.arange(1024) * 0.3).astype(np.float32) + 2.0  # a line and an offset
  ours = np.asarray(losses.welch_psd(jnp.asarray(x), 128))
  _, ref = scipy.signal.welch(x, nperseg=128, axis=-1)  # Hann, 50%, constant detrend
  ratio = ours[:, 1:-1] / ref[:, 1:-1]  # scipy doubles all but DC and Nyquist
  np.testing.assert_allclose(ratio, ratio[0, 0], rtol=1e-4)
  with pytest.raises(ValueError, match='Welch segment'):
    losses.welch_psd(jnp.asarray(x), 2048)


def test_spectral_ratio_limits(rng):
  y = jnp.asarray(rng.standard_normal((4, 512)), jnp.float32)
  bins = losses.band_bins(100.0, 128, (10.0, 30.0))
  np.testing.assert_array_equal(np.fft.rfftfreq(128, 0.01)[bins][[0, -1]], [10.15625, 29.6875])
  assert float(losses.spectral_ratio(jnp.zeros_like(y), y, bins, 128)) == pytest.approx(1.0)
  assert float(losses.spectral_ratio(y, y, bins, 128)) == pytest.approx(0.0, abs=1e-9)
  assert float(losses.spectral_ratio(0.5 * y, y, bins, 128)) == pytest.approx(0.25, rel=1e-5)


def test_band_and_names_are_checked():
  with pytest.raises(ValueError, match='holds no frequency bin'):
    losses.band_bins(100.0, 16, (1.0, 2.0))
  with pytest.raises(ValueError, match='loss must be one of'):
    losses.make_loss('l1')
  with pytest.raises(ValueError, match='loss_weight'):
    losses.make_loss('spectral', 100.0, None, 1.5, 64)
  assert losses.make_loss('mse') is losses.mse


def test_spectral_loss_gradient_is_finite_and_lowers_the_in_band_ratio(rng):
  # An FIR that must learn to predict y's 20-40 Hz content from x; out of band y has a
  # component no FIR of x can produce (it comes from another noise), which MSE would chase.
  fs, n_taps = 200.0, 16
  x = rng.standard_normal((8, 1024))
  b = scipy.signal.firwin(n_taps, [20.0, 40.0], pass_zero=False, fs=fs)
  other = scipy.signal.lfilter(*scipy.signal.butter(4, 10.0, fs=fs), rng.standard_normal((8, 1024)))
  y = jnp.asarray(scipy.signal.lfilter(b, [1.0], x) + 3.0 * other, jnp.float32)
  frames = np.stack([np.pad(x, ((0, 0), (k, 0)))[:, :1024] for k in range(n_taps)], -1)
  frames = jnp.asarray(frames, jnp.float32)  # (B, T, taps): x delayed by 0..taps-1
  loss = losses.make_loss('spectral', fs, (20.0, 40.0), 1.0, 128)
  bins = losses.band_bins(fs, 128, (20.0, 40.0))

  def objective(w):
    return loss(frames @ w[:, None], y[..., None])

  w = jnp.zeros((n_taps,), jnp.float32)
  g = jax.grad(objective)(w)
  assert np.all(np.isfinite(np.asarray(g))) and float(jnp.linalg.norm(g)) > 0
  before = float(losses.spectral_ratio(frames @ w, y, bins, 128))
  opt = optax.adam(0.02)

  @jax.jit
  def fit(w):
    def step(carry, _):
      w, state = carry
      updates, state = opt.update(jax.grad(objective)(w), state)
      return (optax.apply_updates(w, updates), state), None
    return jax.lax.scan(step, (w, opt.init(w)), None, length=150)[0][0]

  w = fit(w)
  after = float(losses.spectral_ratio(frames @ w, y, bins, 128))
  assert before == pytest.approx(1.0)
  assert after < 0.1 * before


def test_loss_fn_default_is_mse_and_spectral_hook_runs(rng):
  config = config_lib.Config(lstm_sizes=(4,), head_sizes=(4,), chunk_len=64, bptt_len=32)
  model = build_model(config)
  x = jnp.asarray(rng.standard_normal((2, 64, 2)), jnp.float32)
  y = jnp.asarray(rng.standard_normal((2, 64, 1)), jnp.float32)
  carry = model.initialize_carry(2)
  params = model.init(jax.random.key(0), carry, x[:, :32])['params']
  value, _ = jax.jit(functools.partial(train.loss_fn, model, bptt_len=32))(params, carry, x, y)
  _, pred = jax.jit(model.apply)({'params': params}, carry, x)
  assert float(value) == pytest.approx(float(jnp.mean(jnp.square(pred - y))), rel=1e-5)
  spectral = losses.loss_from_config(config.replace(loss='spectral', loss_weight=1.0,
                                                    loss_nperseg=32), fs=64.0)
  value_and_grad = jax.jit(jax.value_and_grad(
      lambda p: train.loss_fn(model, p, carry, x, y, 32, spectral)[0]))
  value_s, grads = value_and_grad(params)
  assert all(np.all(np.isfinite(np.asarray(g))) for g in jax.tree_util.tree_leaves(grads))
  expected = losses.spectral_ratio(pred[..., 0], y[..., 0], losses.band_bins(64.0, 32, None), 32,
                                   config.loss_psd_floor)
  assert float(value_s) == pytest.approx(float(expected), rel=1e-4)


def test_psd_floor_bounds_the_weight_of_quiet_bins(rng):
  # A loud line over a quiet floor, and a prediction that gets the line right: the residual
  # (the quiet floor) is tiny next to the target. The plain ratio (floor 0) calls that "nothing
  # removed" in every quiet bin; with floor 1 those bins weigh like the band mean.
  t = np.arange(4 * 128)
  line = np.sin(2 * np.pi * 10 * t / 128)
  quiet = 1e-3 * rng.standard_normal((2, t.size))
  y = jnp.asarray(line + quiet, jnp.float32)
  pred = jnp.asarray(np.broadcast_to(line, y.shape), jnp.float32)
  bins = losses.band_bins(128.0, 128, None)
  plain = float(losses.spectral_ratio(pred, y, bins, 128, psd_floor=0.0))
  floored = float(losses.spectral_ratio(pred, y, bins, 128, psd_floor=1.0))
  assert plain > 0.9
  assert floored < 1e-3
  # The floor only lowers weights: never a larger loss than the plain ratio, for any prediction.
  other = jnp.asarray(rng.standard_normal(y.shape), jnp.float32)
  assert (float(losses.spectral_ratio(other, y, bins, 128, psd_floor=1.0))
          <= float(losses.spectral_ratio(other, y, bins, 128, psd_floor=0.0)))
  with pytest.raises(ValueError, match='loss_psd_floor'):
    losses.make_loss('spectral', 128.0, None, 0.5, 128, psd_floor=-1.0)


def test_band_bins_cover_a_band_narrower_than_a_bin():
  # 256-sample segments at 2048 Hz: bins every 8 Hz. 59-61 Hz lies across the 56 and 64 Hz bins.
  f = np.fft.rfftfreq(256, 1 / 2048.0)
  assert f[losses.band_bins(2048.0, 256, (59.0, 61.0))].tolist() == [56.0, 64.0]
  assert f[losses.band_bins(2048.0, 256, (62.0, 63.0))].tolist() == [64.0]
  assert losses.band_bins(2048.0, 256, None).tolist() == list(range(1, 129))
  with pytest.raises(ValueError, match='holds no frequency bin'):
    losses.band_bins(2048.0, 256, (1100.0, 1200.0))
