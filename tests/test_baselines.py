"""Baselines (Wiener FIR, static MLP) and the comparison that puts them beside the LSTM."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.optimize
import scipy.signal

from lstm_jax import baselines
from lstm_jax import compare
from lstm_jax import config as config_lib
from lstm_jax import data
from lstm_jax import metrics
from lstm_jax import train
from lstm_jax import volterra
from lstm_jax import zoo

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_lagged_columns_and_history():
  x = np.arange(12, dtype=np.float64).reshape(6, 2)  # channel 0: 0,2,4..., channel 1: 1,3,5...
  out = baselines.lagged(x, 3)
  np.testing.assert_array_equal(out[3], [6, 4, 2, 7, 5, 3])  # lags 0,1,2 of each channel
  np.testing.assert_array_equal(out[0], [0, 0, 0, 1, 0, 0])
  out_h = baselines.lagged(x[2:], 3, history=x[:2])
  np.testing.assert_array_equal(out_h, out[2:])


def test_lag_sums_are_exact_across_segment_seams(rng):
  x, later = rng.standard_normal((1000, 2)), rng.standard_normal((1000, 3))
  n_taps = 7
  direct = np.zeros((2, 3, n_taps))
  for j in range(n_taps):  # sum_s x[s, c] later[s + j, e], zero past the end
    direct[:, :, j] = x[:1000 - j].T @ later[j:]
  for segment, group in ((64, 3), (1000, 16), (4096, 1)):  # many seams, one segment, padding
    np.testing.assert_allclose(baselines.lag_sums(x, later, n_taps, segment, group), direct,
                               atol=1e-10)


def test_wiener_recovers_a_known_multi_input_fir(rng):
  x = rng.standard_normal((40000, 2))
  y = (scipy.signal.lfilter([0.5, 0.3, -0.2], [1.0], x[:, 0]) + np.r_[0, 0, 0, x[:-3, 1]] + 0.3)
  rec = data.Recording(x.astype(np.float32), y.astype(np.float32), 100.0)
  fir = baselines.WienerFIR.fit([rec], n_taps=8)
  w = fir.weights.reshape(2, 8) / fir.input_norm.scale[:, None]  # back to raw witness units
  np.testing.assert_allclose(w[0, :3], [0.5, 0.3, -0.2], atol=2e-3)
  np.testing.assert_allclose(w[1, 3], 1.0, atol=2e-3)
  assert np.max(np.abs(np.delete(w.ravel(), [0, 1, 2, 11]))) < 2e-3
  pred = fir.predict(x, block=1000)
  np.testing.assert_allclose(pred, fir.predict(x, block=1 << 20), atol=1e-5)  # block seams
  plain = baselines.lagged(fir.input_norm.apply(x), 8) @ fir.weights + fir.bias
  np.testing.assert_allclose(pred, plain, atol=1e-9)  # the FFT convolution is the FIR
  assert metrics.noise_reduction_db(y, pred) > 40.0


def test_wiener_and_mlp_remove_nothing_of_the_memory_coupling():
  train = [data.memory_mock(fs=256.0, duration=64.0, start=64.0 * k, seed=k + 1) for k in range(2)]
  held = data.memory_mock(fs=256.0, duration=32.0, start=128.0, seed=99)
  fir = baselines.WienerFIR.fit(train, n_taps=32)
  assert abs(metrics.noise_reduction_db(held.noise, fir.predict(held.witnesses))) < 0.3
  mlp = baselines.StaticMLP.fit(train, (32, 32), num_steps=300, batch_size=1024)
  # Only the instantaneous share of the resonator's response (about a fifth of the power at
  # 256 Hz) is within reach of a memoryless model.
  assert metrics.noise_reduction_db(held.noise, mlp.predict(held.witnesses)) < 1.5


def test_static_mlp_learns_the_seed_instantaneous_product():
  train = [data.seed_mock(fs=256.0, duration=64.0, start=64.0 * k, seed=k + 1) for k in range(2)]
  held = data.seed_mock(fs=256.0, duration=32.0, start=128.0, seed=99)
  mlp = baselines.StaticMLP.fit(train, (32, 32), num_steps=300, batch_size=1024)
  assert metrics.noise_reduction_db(held.noise, mlp.predict(held.witnesses)) > 10.0
  fir = baselines.WienerFIR.fit(train, n_taps=16)  # a product: nothing linear to find
  assert abs(metrics.noise_reduction_db(held.noise, fir.predict(held.witnesses))) < 0.3


def test_compare_run_writes_table_json_and_figure(tmp_path):
  config = config_lib.Config(mock='memory', mock_fs=256.0, n_train_records=2,
                             train_record_seconds=8.0, eval_seconds=8.0, lstm_sizes=(4,),
                             head_sizes=(4,), n_streams=4, chunk_len=64, bptt_len=64,
                             num_steps=4, warmup_steps=0)
  result = compare.run(config, str(tmp_path), fir_taps=8, mlp_hidden=(8,), mlp_steps=20,
                       deepclean_seconds=3.0)
  assert [r['method'] for r in result['rows']] == ['lstm', 'wiener', 'mlp', 'deepclean']
  assert result['rows'][3]['latency_s'] == result['rows'][3]['window_s'] == 2.0
  for name in ('compare.json', 'compare.md', 'compare_asd.png'):
    assert os.path.getsize(tmp_path / name) > 100
  saved = json.loads((tmp_path / 'compare.json').read_text())
  assert saved['rows'][1]['taps'] == 8 and saved['data'] == 'mock:memory'
  assert all(np.isfinite(r['nr_db']) and r['nr_reference'] == 'noise' for r in saved['rows'])
  table = (tmp_path / 'compare.md').read_text()
  assert '| Wiener FIR |' in table and '| LSTM |' in table and '| static MLP |' in table
  assert '| DeepClean |' in table and '2 s (window, offline)' in table
  with pytest.raises(data.DataError, match='unknown method'):
    compare.run(config, None, ('lstm', 'kalman'))


def test_compare_cli_rejects_a_bad_band_in_one_line(tmp_path):
  proc = subprocess.run([sys.executable, '-m', 'experiments.compare', '--band=5',
                         f'--workdir={tmp_path}'], cwd=ROOT, capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == "error: --band: expected LO,HI in Hz, got '5'"
  assert 'Traceback' not in proc.stderr


def test_regularized_fir_spends_fewer_weights_on_a_short_response(rng):
  """A resonance (20 ms ring-down) on one witness and a plain gain on another, under a
  loud coloured background, 16 s at 500 Hz: least squares over 128 taps per input adds
  estimation noise from every tap; the decaying-response prior (hyperparameters by the
  whitened marginal likelihood) keeps what the responses need, a decay time near the
  resonance's for the first input and none for the gain."""
  n, fs, n_fit = 40000, 500.0, 8000
  w = np.stack([zoo.coloured(rng, n, fs, 1.0, 200.0) for _ in range(2)], 1)
  noise = zoo.resonance(w[:, 0], fs, 40.0, 0.02) + 0.5 * w[:, 1] / w[:, 1].std()
  background = noise.std() * zoo.coloured(rng, n, fs, 0.5, 100.0)
  rec = data.Recording(w.astype(np.float32), (noise + background).astype(np.float32), fs,
                           noise.astype(np.float32))
  fit, later = rec.slice(0, n_fit), rec.slice(n_fit, n)
  plain = baselines.WienerFIR.fit([fit], 128)
  prior, info = baselines.regularized(plain, [fit])
  nr = lambda f: metrics.noise_reduction_db(later.noise[128:], f.predict(later.witnesses)[128:])
  assert nr(prior) > nr(plain) + 3.0, (nr(prior), nr(plain))
  assert 0.005 < info['tau_s'][0] < 0.08 and info['tau_s'][1] < 0.003, info
  assert prior.n_taps == 128 and prior.input_norm is plain.input_norm
  # Too many weights for the likelihood's factorizations: not refitted.
  too_long = baselines.MAX_REGULARIZED_WEIGHTS // 2 + 1  # per input, two inputs
  assert baselines.regularized(baselines.WienerFIR.fit([fit], too_long), [fit]) is None


def test_a_delayed_response_gets_a_prior_that_starts_at_its_delay(rng, monkeypatch):
  """The same resonance reached after 60 ms (30 samples) and the gain after 10 ms (5): the
  plain prior gives the first taps the most variance and spends weights on every tap before
  a delay. Least squares shows where each response starts, the prior shifted there wins the
  marginal likelihood and the later data, and the weights before each delay are zero."""
  n, fs, n_fit = 40000, 500.0, 8000
  w = np.stack([zoo.coloured(rng, n, fs, 1.0, 200.0) for _ in range(2)], 1)
  noise = (zoo.resonance(zoo.delayed(w[:, 0], 30), fs, 40.0, 0.02)
           + 0.5 * zoo.delayed(w[:, 1], 5) / w[:, 1].std())
  background = noise.std() * zoo.coloured(rng, n, fs, 0.5, 100.0)
  fit, later, nr = _fit_and_later(w, noise, background, fs, n_fit)
  plain = baselines.WienerFIR.fit([fit], 128)
  delayed, info = baselines.regularized(plain, [fit])
  np.testing.assert_allclose(np.asarray(info['delay_s']) * fs, [30, 5])
  weights = delayed.weights.reshape(2, 128)
  assert not weights[0, :30].any() and not weights[1, :5].any()
  assert abs(weights[1, 5]) > 20 * np.abs(weights[1, 6:]).max()  # one tap: the gain
  monkeypatch.setattr(baselines, 'ONSET_Z', np.inf)  # no response stands out: no delay
  undelayed, info = baselines.regularized(plain, [fit])
  assert info['delay_s'] == [0.0, 0.0]
  # 22.2, 19.7 and 14.6 dB
  assert nr(delayed) > nr(undelayed) + 1.5 and nr(undelayed) > nr(plain) + 4.0, (
      nr(delayed), nr(undelayed), nr(plain))


def test_normal_equations_are_solved_by_cholesky_or_else_by_lu(rng):
  a = rng.standard_normal((50, 6))
  spd, rhs = a.T @ a, rng.standard_normal(6)
  np.testing.assert_allclose(baselines._solve_normal(spd, rhs), np.linalg.solve(spd, rhs),
                             rtol=1e-10)
  indefinite = np.array([[1.0, 2.0], [2.0, 1.0]])  # Cholesky fails; the answer still exact
  np.testing.assert_allclose(baselines._solve_normal(indefinite, np.ones(2)), [1 / 3, 1 / 3])


def test_filters_over_sets_of_columns_are_those_fitted_on_the_columns_alone(rng):
  # One pass of lag sums serves every set of columns, beside a prediction and without it.
  w = rng.standard_normal((6000, 4))
  other = np.tanh(w[:, 0] * w[:, 3])
  target = 0.7 * other + np.roll(w[:, 1], 2) - 0.5 * w[:, 2] + 0.1 * rng.standard_normal(6000)
  rec = data.Recording(w.astype(np.float32), target.astype(np.float32), 100.0)
  sets = [None, [1, 2], [2]]
  beside = baselines.WienerFIR.fit_beside_sets([rec], [other], (3, 5), sets, segment=512,
                                               alone_too=True)
  assert len(beside) == 2 * len(sets)
  norm = beside[0][0][0].input_norm
  for k, columns in enumerate(sets):
    part = columns if columns is not None else list(range(4))
    alone_rec = dataclasses.replace(rec, witnesses=rec.witnesses[:, part])
    with_p = baselines.WienerFIR.fit_beside_each([alone_rec], [other], (3, 5),
                                                 input_norm=norm.take(part))
    without = baselines.WienerFIR.fit_beside_each([alone_rec], None, (3, 5),
                                                  input_norm=norm.take(part))
    for (fir, gain), (ref, ref_gain), (lone, lone_gain), (ref_lone, _) in zip(
        beside[k], with_p, beside[len(sets) + k], without):
      weights = fir.weights.reshape(4, -1)
      np.testing.assert_allclose(weights[part].ravel(), ref.weights, atol=1e-9)
      assert not np.delete(weights, part, axis=0).any()  # the others weigh zero
      assert gain == pytest.approx(ref_gain, abs=1e-9) and fir.bias == pytest.approx(ref.bias)
      assert lone_gain == 0.0
      np.testing.assert_allclose(lone.weights.reshape(4, -1)[part].ravel(), ref_lone.weights,
                                 atol=1e-9)
      x = w[:500].astype(np.float32)
      np.testing.assert_allclose(fir.predict(x), ref.predict(x[:, part]), atol=1e-9)


def test_the_priors_likelihood_gradient_matches_differences(rng, monkeypatch):
  # The analytic gradient L-BFGS-B is given (the log det's through the inverse's diagonal),
  # against central differences of the likelihood itself, away from the optimum: for the
  # plain prior and for the one shifted to the delayed resonance's onset.
  n, fs = 20000, 500.0
  w = np.stack([zoo.coloured(rng, n, fs, 1.0, 200.0) for _ in range(2)], 1)
  noise = zoo.resonance(zoo.delayed(w[:, 0], 6), fs, 40.0, 0.02) + 0.5 * w[:, 1]
  target = noise + 0.5 * noise.std() * zoo.coloured(rng, n, fs, 0.5, 100.0)
  rec = data.Recording(w.astype(np.float32), target.astype(np.float32), fs)
  captured = []
  minimize = scipy.optimize.minimize

  def spy(fun, x0, **kwargs):
    captured.append((fun, x0))
    return minimize(fun, x0, **kwargs)

  monkeypatch.setattr(scipy.optimize, 'minimize', spy)
  _, info = baselines.regularized(baselines.WienerFIR.fit([rec], 64), [rec])
  assert len(captured) >= 2 and info['delay_s'][0] > 0  # plain, then delayed
  for fun, x0 in captured:
    x = x0 + 0.3 * rng.standard_normal(len(x0))
    _, analytic = fun(x)
    step = 1e-5
    numeric = [(fun(x + e)[0] - fun(x - e)[0]) / (2 * step) for e in np.eye(len(x)) * step]
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-4)


def _fit_and_later(w, noise, background, fs, n_fit):
  """A recording of witnesses ``w`` and target ``noise + background`` cut at ``n_fit`` into
  the part a filter is fitted on and a later part, and the later part's NR of a filter
  (after 2048 samples, where every filter here has settled)."""
  rec = data.Recording(np.asarray(w, np.float32), (noise + background).astype(np.float32), fs,
                       noise.astype(np.float32))
  fit, later = rec.slice(0, n_fit), rec.slice(n_fit, len(noise))
  return fit, later, lambda f: metrics.noise_reduction_db(later.noise[2048:],
                                                          f.predict(later.witnesses)[2048:])


def test_pole_zero_refit_holds_a_ring_longer_than_the_filter(rng):
  """A resonance at 60 Hz ringing down by e in 0.2 s (500 Hz, 40 s of it under a coloured
  background) seen by a 64-tap FIR: the filter cuts the ring off after 0.13 s. Refitted as a
  rational filter of two poles shared with a plain-gain input, it finds the resonance, runs
  to where the ring has died (a longer FIR) and removes far more on later data."""
  n, fs, n_fit = 40000, 500.0, 20000
  w = np.stack([zoo.coloured(rng, n, fs, 1.0, 200.0) for _ in range(2)], 1)
  noise = zoo.resonance(w[:, 0], fs, 60.0, 0.2) + 0.5 * w[:, 1] / w[:, 1].std()
  background = 0.3 * noise.std() * zoo.coloured(rng, n, fs, 0.5, 100.0)
  fit, _, nr = _fit_and_later(w, noise, background, fs, n_fit)
  plain = baselines.WienerFIR.fit([fit], 64)
  poles, info = baselines.pole_zero(plain, [fit], order=2, n_zeros=4, max_taps=2048)
  assert info['order'] == 2 and abs(info['poles_hz'][0] - 60.0) < 0.2, info
  assert 0.17 < info['decay_s'] < 0.23 and poles.n_taps > 5 * 64, (info, poles.n_taps)
  assert poles.input_norm is plain.input_norm and poles.n_channels == 2
  assert nr(poles) > nr(plain) + 25.0, (nr(poles), nr(plain))


def test_pole_zero_starts_from_the_filters_own_poles_under_a_loud_background(monkeypatch):
  """A 60 Hz resonance (ringing down by e in 50 ms, 10 ms late) under a coloured background
  with lines, twice its std: the iterations started from no poles alone settle on real poles
  that decay in a ms (the equation-error start fits the background's own colour) and remove
  less than the filter they refit; started from the poles the regularized FIR's response
  follows, they find the resonance and remove far more than that FIR."""
  rng = np.random.default_rng(0)
  n, fs, n_fit = 122880, 1024.0, 92160
  w = zoo.coloured(rng, n, fs, 10.0, 0.4 * fs)[:, None]
  noise = zoo.resonance(zoo.delayed(w[:, 0], 10), fs, 60.0, 0.05)
  background = 2.0 * noise.std() * zoo.background(rng, n, fs, 1.0, slow=False)
  fit, _, nr = _fit_and_later(w, noise, background, fs, n_fit)
  prior, _ = baselines.regularized(baselines.WienerFIR.fit([fit], 64), [fit])
  found, info = baselines.pole_zero(prior, [fit], order=2, n_zeros=16, max_taps=2048)
  assert abs(info['poles_hz'][0] - 60.0) < 0.5 and 0.04 < info['decay_s'] < 0.06, info
  assert nr(found) > nr(prior) + 10.0, (nr(found), nr(prior))
  monkeypatch.setattr(baselines, 'POLE_ZERO_FROM_RESPONSES', False)
  alone, alone_info = baselines.pole_zero(prior, [fit], order=2, n_zeros=16, max_taps=2048)
  assert alone_info['decay_s'] < 0.005 and nr(alone) < nr(prior), (alone_info, nr(alone))


def test_pole_zero_is_the_same_in_any_units_of_the_target(rng):
  """A squared witness through a delay and a resonance (85 Hz ringing down by e in 75 ms at
  1024 Hz, the shape of ``zoo``'s ``nonlinear_memory``) under a faint background, its target
  in units of 1 and of a strain (1e-21): the refit finds the same resonance either way. The
  target's lags are unknowns beside the standardized inputs, and a ridge scaled to the
  design's mean diagonal once zeroed them below about 1e-4 (poles at 0 and fs/2, 0 dB)."""
  n, fs, n_fit = 98304, 1024.0, 65536
  w = zoo.coloured(rng, n, fs, 0.5, 0.3 * fs)
  x = (w - w.mean()) / w.std()
  noise = zoo.resonance(zoo.delayed(x ** 2, 17), fs, 85.0, 0.075)
  background = 1e-3 * noise.std() * zoo.coloured(rng, n, fs, 1.0, 0.4 * fs)
  found = []
  for unit in (1.0, 1e-21):
    fit, _, nr = _fit_and_later(w[:, None], unit * noise, unit * background, fs, n_fit)
    products = volterra.Products([(0, 0, 0)], data.Normalizer.fit(
        fit.witnesses, 'standardize', 'witness channel'))
    plain = dataclasses.replace(baselines.WienerFIR.fit([products.widened(fit)], 256),
                                products=products)
    refit, info = baselines.pole_zero(plain, [fit], order=2, n_zeros=31, max_taps=4096)
    assert abs(info['poles_hz'][0] - 85.0) < 0.1 and 0.07 < info['decay_s'] < 0.08, info
    assert nr(refit) > 50.0 and nr(refit) > nr(plain) + 20.0, (unit, nr(refit), nr(plain))
    found.append(info['poles_hz'][0])
  assert abs(found[0] - found[1]) < 1e-3, found


def test_pole_zero_keeps_the_short_responses_of_inputs_without_a_ring(rng, monkeypatch):
  """A 60 Hz resonance on one input beside a loud 3-tap path on another (500 Hz, under a
  coloured background), seen by a 64-tap FIR under the prior (its second response cut short):
  refitting both over one shared denominator with numerators of 4 taps cannot render the
  short path (it would need the poles cancelled, 5 taps); with the short input's responses
  kept as the filter has them (``train._ringing``, rule on, picks the resonant input), the poles
  go to the resonance, the kept responses are the filter's to the bit and the refit removes
  far more on later data than either."""
  n, fs, n_fit = 40000, 500.0, 20000
  w = np.stack([zoo.coloured(rng, n, fs, 1.0, 200.0) for _ in range(2)], 1)
  w /= w.std(axis=0)
  short = np.convolve(w[:, 1], [1.0, -0.8, 0.5])[:n]
  noise = zoo.resonance(w[:, 0], fs, 60.0, 0.2) + 2.0 * short
  background = 0.1 * noise.std() * zoo.coloured(rng, n, fs, 0.5, 100.0)
  fit, later, nr = _fit_and_later(w, noise, background, fs, n_fit)
  prior, _ = baselines.regularized(baselines.WienerFIR.fit([fit], 64), [fit])
  every, _ = baselines.pole_zero(prior, [fit], order=2, n_zeros=4, max_taps=2048)
  mixed, info = baselines.pole_zero(prior, [fit], order=2, n_zeros=4, max_taps=2048,
                                    fir_columns=[1])
  assert info['fir_columns'] == [1] and abs(info['poles_hz'][0] - 60.0) < 0.2, info
  taps = lambda f: np.asarray(f.weights).reshape(f.n_channels, f.n_taps)
  np.testing.assert_array_equal(taps(mixed)[1, :64], taps(prior)[1])
  assert not np.any(taps(mixed)[1, 64:])
  assert nr(mixed) > max(nr(every), nr(prior)) + 6.0, (nr(mixed), nr(every), nr(prior))
  # The refits ``train._with_poles`` tries: over every input while the rule is off; with
  # it, over the resonant input too, or alone.
  assert train._ringing(prior, 4) == [0, 1] and train._kept_responses(prior, 4) == [()]
  monkeypatch.setattr(train, 'POLE_TAIL_SHARE', 1e-3)  # rule ``poles_on_ringing_inputs_too``
  assert train._ringing(prior, 4) == [0] and train._kept_responses(prior, 4) == [(), (1,)]
  assert train._kept_responses(prior, 64) == [()]  # nothing rings past 64 taps
  monkeypatch.setattr(train, 'POLE_EVERY_INPUT_TOO', False)  # ``poles_on_ringing_inputs``
  assert train._kept_responses(prior, 4) == [(1,)] and train._kept_responses(prior, 64) == []
  # Refitted with the validation samples as it was chosen: the same inputs keep their taps.
  split = train.Split([fit.slice(0, 15000)], later, 'test', validation=fit.slice(15000, n_fit))
  again = train.refit_with_validation(split, mixed, mixed.n_taps, pole_zero=info)
  np.testing.assert_array_equal(taps(again)[1], taps(mixed)[1])
  assert nr(again) > nr(every) + 6.0, (nr(again), nr(every))


def test_lag_sums_less_their_end_terms_are_the_lagged_designs_normal_matrix(rng):
  """The block-Toeplitz matrix from lag sums, less ``_end_terms``, is ``lagged``'s own
  ``X^T X`` to the rounding (the rational refit's normal equations are built so)."""
  for t, c, n_taps in ((50, 3, 7), (300, 2, 16), (9, 1, 9)):
    x = rng.standard_normal((t, c))
    design = baselines.lagged(x, n_taps)
    corr, cross = np.zeros((c, c, 2 * n_taps - 1)), np.zeros((1, c, n_taps))
    baselines._add_lag_sums(corr, cross, x, x[:, :1], 1024)
    gram = np.empty((c * n_taps, c * n_taps))
    baselines._fill_gram(gram, corr, n_taps)
    assert np.abs(gram - design.T @ design).max() > 0.1  # the ends differ ...
    np.testing.assert_allclose(gram - baselines._end_terms(x, n_taps), design.T @ design,
                               rtol=0, atol=1e-12 * np.abs(gram).max())  # ... and no more
    np.testing.assert_allclose(cross[0].reshape(-1), design.T @ x[:, 0], rtol=1e-12)
