"""The linear path: a Wiener FIR fitted first, the recurrent model trained on what it leaves;
and the residual FIR: one fitted after training on what the trained model leaves."""
import dataclasses

import jax
import numpy as np
import pytest
import scipy.signal

import lstm_jax
from lstm_jax import baselines
from lstm_jax import data as data_lib
from lstm_jax import metrics
from lstm_jax import train as train_lib
from lstm_jax.inference import TrainedModel


def resonant_recording(path, fs=128.0, seconds=160.0, seed=0):
  """Target = a 20 Hz resonance of witness 0, 5 samples late, plus white noise; 2 witnesses."""
  rng = np.random.default_rng(seed)
  n = int(fs * seconds)
  witnesses = scipy.signal.lfilter(*scipy.signal.butter(2, [2, 50], 'band', fs=fs),
                                   rng.standard_normal((n, 2)), axis=0)
  b, a = scipy.signal.iirpeak(20.0, 5.0, fs=fs)
  noise = 3.0 * scipy.signal.lfilter(b, a, np.roll(witnesses[:, 0], 5))
  target = noise + 0.05 * rng.standard_normal(n)
  np.savez(path, witnesses=witnesses.astype(np.float32), target=target.astype(np.float32),
           noise=noise.astype(np.float32), fs=fs)
  return str(path)


def test_training_with_a_linear_path(tmp_path):
  config = lstm_jax.Config(
      data=resonant_recording(tmp_path / 'linear.npz'), linear_taps=32, residual_taps=0,
      lstm_sizes=(8,),
      head_sizes=(16,), n_streams=4, chunk_len=64, bptt_len=32, num_steps=150,
      learning_rate=1e-2, warmup_steps=10, log_every_seconds=1e9, val_every=50)
  result = lstm_jax.train_and_evaluate(config, str(tmp_path / 'run'))
  linear = result['train']['linear']  # 32 taps as asked, or as long as the poles ring
  assert linear['n_taps'] == 32 if not linear.get('pole_zero') else linear['n_taps'] > 32
  assert result['train']['linear']['train_target_nr_db'] > 15  # the FIR found the coupling
  trained = lstm_jax.TrainedModel.load(str(tmp_path / 'run' / 'model'))
  heldout = train_lib.load_split(config).heldout
  fir_alone = metrics.evaluate(heldout, trained.linear.predict(heldout.witnesses))['nr_db']
  # The sum is what is judged, and the recurrent part learnt on the residual, not against it.
  assert result['heldout']['nr_db'] > fir_alone - 1.0 > 15


def test_linear_taps_must_not_be_negative():
  with pytest.raises(lstm_jax.DataError, match='--linear_taps must be >= 0, or -1 .*, got -2'):
    lstm_jax.train_and_evaluate(lstm_jax.Config(linear_taps=-2))


def test_the_fir_is_kept_only_where_it_carries_over_to_validation():
  rng = np.random.default_rng(1)

  def unrelated(w):
    return rng.standard_normal(len(w)).astype(np.float32)

  def delayed(w):
    return np.roll(w[:, 0], 3) + 0.1 * unrelated(w)

  def record(n, target_of):
    witnesses = rng.standard_normal((n, 2)).astype(np.float32)
    return lstm_jax.Recording(witnesses, target_of(witnesses), 128.0)

  # 2 x 64 weights on 2000 samples of a target no witness explains: they fit training noise.
  split = train_lib.Split([record(2000, unrelated)], None, 'test', record(2000, unrelated))
  kept_split, fir, stats = train_lib.fit_linear_path(split, 64)
  assert fir is None and kept_split is split and not stats['kept']
  assert stats['train_target_nr_db'] > 0 > stats['validation_target_nr_db']
  # A delayed witness: the filter finds it, and the targets the LSTM sees lose it.
  split = train_lib.Split([record(4000, delayed)], None, 'test', record(2000, delayed))
  kept_split, fir, stats = train_lib.fit_linear_path(split, 8)
  assert fir is not None and stats['kept'] and stats['validation_target_nr_db'] > 15
  assert np.std(kept_split.validation.target) < 0.2 * np.std(split.validation.target)


def untrained_model(n_inputs=2, zero=False):
  """A random-weight model: its prediction is some nonlinear function of the witnesses (zero:
  all weights 0, so it predicts 0)."""
  config = lstm_jax.Config(lstm_sizes=(4,), head_sizes=(8,), eval_chunk_len=256)
  model = lstm_jax.build_model(config)
  params = model.init(jax.random.key(0), model.initialize_carry(1),
                      np.zeros((1, 4, n_inputs), np.float32))['params']
  if zero:
    params = jax.tree.map(np.zeros_like, params)
  unit = data_lib.Normalizer(np.zeros(n_inputs), np.ones(n_inputs))
  return TrainedModel(config, params, unit, data_lib.Normalizer(np.array([0.5]), np.array([2.0])),
                      n_inputs)


def split_of(target_of, lengths=(3000, 3000, 2500), seed=2):
  """Records of 2 white witnesses: training ones of ``lengths``, validation, held out."""
  rng = np.random.default_rng(seed)

  def record(n):
    witnesses = rng.standard_normal((n, 2)).astype(np.float32)
    return lstm_jax.Recording(witnesses, target_of(witnesses, rng).astype(np.float32), 128.0,
                              target_of.noise(witnesses) if hasattr(target_of, 'noise') else None)

  return train_lib.Split([record(n) for n in lengths], record(2000), 'test', record(2000))


def delayed_witness(w, rng):
  return 2.0 * np.roll(w[:, 0], 3) + 0.1 * rng.standard_normal(len(w))


delayed_witness.noise = lambda w: (2.0 * np.roll(w[:, 0], 3)).astype(np.float32)


def test_residual_fir_takes_up_the_linear_part_the_model_left():
  trained, split = untrained_model(), split_of(delayed_witness)
  cleaned, stats = train_lib.fit_residual_path(trained, split, 8)
  assert stats['kept'] and stats['validation_residual_nr_db'] > 10
  assert abs(stats['gain']) < 0.2  # the random model's output explains nothing the FIR leaves
  assert trained.linear is None and cleaned.linear.n_taps == 8  # a new model; the old as it was
  heldout = split.heldout
  before = metrics.evaluate(heldout, trained.predict(heldout.witnesses))['nr_db']
  after = metrics.evaluate(heldout, cleaned.predict(heldout.witnesses))['nr_db']
  assert after > 20 > before + 10
  # With a linear path already there, the two filters become one (the longer taps), and the
  # prediction is the gain times the old one (recurrent part and path) plus the new filter.
  # Here the network's output is part of every target, so the network stays (gain near 1).
  def with_network(r):
    return dataclasses.replace(r, target=r.target + trained.predict(r.witnesses))

  first = baselines.WienerFIR.fit(split.train, 2)  # a path too short for the lag of 3
  split = split._replace(train=[with_network(r) for r in split.train],
                         validation=with_network(split.validation),
                         heldout=with_network(split.heldout))
  with_path = dataclasses.replace(trained, linear=first)
  both, stats = train_lib.fit_residual_path(with_path, split, 16)
  assert stats['kept'] and both.linear.n_taps == 16 and not stats['network_dropped']
  new_fir, gain = baselines.WienerFIR.fit_beside(
      split.train, [with_path.predict(r.witnesses) for r in split.train], 16,
      input_norm=first.input_norm)
  assert stats['gain'] == pytest.approx(gain, rel=1e-4) and gain != 0.0
  x = heldout.witnesses
  np.testing.assert_allclose(both.predict(x), gain * with_path.predict(x) + new_fir.predict(x),
                             atol=1e-4)


def test_a_network_that_does_worse_on_validation_than_a_filter_alone_is_dropped():
  # The network's output is in the training targets (it "fitted" them) but not in the
  # validation stretch's: a chance fit, which a gain fitted on training would keep at 1.
  trained, split = untrained_model(), split_of(delayed_witness)
  fitted = [dataclasses.replace(r, target=r.target + trained.predict(r.witnesses))
            for r in split.train]
  cleaned, stats = train_lib.fit_residual_path(trained, split._replace(train=fitted), 8)
  assert stats['kept'] and stats['network_dropped'] and stats['gain'] == 0.0
  assert stats['network_t'] < 0 and stats['network_db'] < 0  # its fit does not carry over
  x = split.heldout.witnesses
  # The same filter fitted without the network, on the training and validation records.
  alone = baselines.WienerFIR.fit(fitted + [split.validation], 8)
  np.testing.assert_allclose(cleaned.predict(x), alone.predict(x), atol=2e-2)
  nr = metrics.evaluate(split.heldout, cleaned.predict(x))['nr_db']
  assert nr > metrics.evaluate(split.heldout, trained.predict(x) + alone.predict(x))['nr_db'] + 3


def test_a_network_that_does_not_beat_the_linear_path_on_validation_is_dropped():
  # The linear path already removes the coupling; a random network only adds its own output.
  trained, split = untrained_model(), split_of(delayed_witness)
  path = baselines.WienerFIR.fit(split.train, 8)
  with_path = dataclasses.replace(trained, linear=path)
  cleaned, stats = train_lib.fit_residual_path(with_path, split, 8)
  assert stats['network_dropped'] and stats['gain'] == 0.0
  assert stats['network_t'] < 0 and stats['network_db'] < 0
  x = split.heldout.witnesses
  np.testing.assert_allclose(cleaned.predict(x), path.predict(x), atol=5e-2)
  # The filter kept alone reads only the witness the target is coherent with, and is fitted
  # again with the validation stretch's samples too.
  assert stats['refit_with_validation'] and stats['inputs_used'] == [0]
  assert cleaned.linear.inputs_used() == [0]
  both = list(split.train) + [split.validation]
  again = baselines.WienerFIR.fit([dataclasses.replace(r, witnesses=r.witnesses[:, :1])
                                   for r in both], stats['n_taps'])
  # (Up to a constant, and the first taps' history: the refit keeps the training part's
  # normalizer, for ``plus``.) Where validation kept the decaying-response prior, the refit is
  # under it too: the same filter up to estimation noise, not least squares' exactly.
  a, b = cleaned.predict(x)[8:], again.predict(x[:, :1])[8:]
  np.testing.assert_allclose(a - a.mean(), b - b.mean(),
                             atol=3e-2 if stats['regularized'] else 1e-3)
  if stats['regularized']:
    assert np.abs((a - a.mean()) - (b - b.mean())).max() > 1e-4


def test_a_network_whose_help_the_blocks_do_not_agree_on_is_dropped_unless_it_learnt():
  # The network's output is truly in every target, but so small a part of what the linear
  # path leaves that validation's blocks do not agree it helps (0 < t < PARSIMONY_T). Unless
  # training improved it on validation after the first check, its error on new data is not
  # worth it; the linear path alone stays.
  trained = untrained_model()
  rng = np.random.default_rng(5)
  net_share = 1e-4  # of the variance the path leaves

  def record(n, with_net=True):
    w = rng.standard_normal((n, 2)).astype(np.float32)
    net = trained.predict(w)
    noise = np.std(net) / np.sqrt(net_share) * rng.standard_normal(n)
    return lstm_jax.Recording(w, (2.0 * np.roll(w[:, 0], 3) + noise + with_net * net
                                  ).astype(np.float32), 128.0)

  split = train_lib.Split([record(6000)], record(2000), 'test', record(8000))
  # The path as training would find it had the network's part been learnt beside it.
  path = baselines.WienerFIR.fit([record(96000, with_net=False)], 8)
  with_path = dataclasses.replace(trained, linear=path)
  cleaned, stats = train_lib.fit_residual_path(with_path, split, 8)
  assert 0 < stats['network_t'] < train_lib.PARSIMONY_T and stats['network_db'] > 0
  assert stats['network_dropped'] and stats['gain'] == 0.0 and not stats['network_learnt']
  # The same network whose validation error fell after its first check learnt something that
  # carries over: its help, small as validation sees it, keeps it.
  learnt = {'every': 250, 'best_step': 1000, 'history': [[250, 1.0], [500, 0.999], [1000, 0.99]]}
  _, stats = train_lib.fit_residual_path(with_path, split, 8, validation_summary=learnt)
  assert stats['network_learnt'] and not stats['network_dropped']
  first_best = dict(learnt, best_step=250)
  _, stats = train_lib.fit_residual_path(with_path, split, 8, validation_summary=first_best)
  assert not stats['network_learnt'] and stats['network_dropped']
  same = rng.standard_normal(640)
  assert not train_lib._clearly_below(same, same)
  assert train_lib._clearly_below(0.9 * same, same) and not train_lib._clearly_below(same, 0.9 * same)


def test_the_residual_stage_takes_the_linear_paths_prior_verdict(monkeypatch):
  # A network dropped beside a linear path leaves that path's filter: its prior was judged on
  # the same records and stretch in the linear path, so the stage reuses the verdict and fits
  # the prior only once more, on the training and validation records together. (A rational
  # refit of the delay, kept for its fewer numbers, would take the prior's place.)
  monkeypatch.setattr(train_lib, 'POLES_UNLESS_WORSE', False)
  trained, split = untrained_model(), split_of(delayed_witness)
  _, path, path_stats = train_lib.fit_linear_path(split, 8)
  assert 'regularized' in path_stats
  with_path = dataclasses.replace(trained, linear=path)
  fits = []
  real = baselines.regularized
  monkeypatch.setattr(baselines, 'regularized', lambda *a, **k: fits.append(1) or real(*a, **k))
  again, stats = train_lib.fit_residual_path(with_path, split, 8)
  n_again = len(fits)
  reused, reused_stats = train_lib.fit_residual_path(with_path, split, 8, linear_stats=path_stats)
  assert stats['network_dropped'] and reused_stats['network_dropped']
  assert reused_stats['regularized'] == stats['regularized'] == path_stats['regularized']
  assert len(fits) - n_again == n_again - 1  # the verdict's own fit is the one saved
  x = split.heldout.witnesses
  np.testing.assert_allclose(reused.predict(x), again.predict(x), atol=1e-6)


def test_fit_beside_finds_the_gain_and_the_filter():
  rng = np.random.default_rng(0)
  records, predictions = [], []
  for n in (3000, 2500):
    w = rng.standard_normal((n, 2))
    other = np.tanh(w[:, 0] * w[:, 1])  # what another model predicts: no FIR can
    target = 1.5 * other + np.roll(w[:, 1], 2) + 0.3 + 0.01 * rng.standard_normal(n)
    records.append(lstm_jax.Recording(w.astype(np.float32), target.astype(np.float32), 100.0))
    predictions.append(other + 0.2)
  fir, gain = baselines.WienerFIR.fit_beside(records, predictions, 4)
  assert gain == pytest.approx(1.5, abs=0.01)
  weights = fir.weights.reshape(2, 4)
  assert weights[1, 2] == pytest.approx(1.0 / fir.input_norm.scale[1], rel=0.02)
  np.testing.assert_allclose(np.delete(weights.ravel(), 6), 0.0, atol=0.01)
  assert fir.bias == pytest.approx(0.3 - 1.5 * 0.2, abs=0.01)


def test_residual_fir_is_dropped_where_nothing_linear_is_left():
  def unrelated(w, rng):
    return rng.standard_normal(len(w))

  trained = untrained_model(zero=True)
  # 2 x 64 weights on 2000 samples of noise no witness explains: they fit training noise only.
  split = split_of(unrelated, lengths=(2000,))
  same, stats = train_lib.fit_residual_path(trained, split, 64)
  assert same is trained and not stats['kept']
  assert stats['train_residual_nr_db'] > 0 > stats['validation_residual_nr_db']
  assert stats['validation_t'] < train_lib.MIN_T
  same, stats = train_lib.fit_residual_path(trained, split._replace(validation=None), 8)
  assert same is trained and stats['skipped'] == 'no validation stretch'


def test_the_check_counts_standard_errors_over_blocks():
  rng = np.random.default_rng(0)
  before = rng.standard_normal(1600)
  # Every block a little quieter: a small drop, many standard errors.
  assert train_lib._drop_t(before, 0.999 * before) > 1e6
  after = before.copy()
  after[:800] *= 0.9  # half the blocks quieter, half louder: a mean drop near 0
  after[800:] *= 1.0 / 0.9
  assert abs(train_lib._drop_t(before, after)) < 1.0
  jitter = before * (1 + 0.01 * np.repeat(rng.standard_normal(16), 100))  # per-block chance
  small = before * 0.9995
  assert train_lib._drop_t(before, jitter * 0.9995) < train_lib.MIN_T < train_lib._drop_t(
      before, small + 1e-4 * rng.standard_normal(1600))
  assert train_lib._drop_t(before[:20], before[:20]) == -np.inf  # too short to tell


def test_fir_sum_is_one_filter():
  split = split_of(delayed_witness)
  a = baselines.WienerFIR.fit(split.train, 3)
  b = baselines.WienerFIR.fit(split.train, 7, input_norm=a.input_norm)
  x = split.heldout.witnesses
  np.testing.assert_allclose(a.plus(b).predict(x), a.predict(x) + b.predict(x), atol=1e-9)
  other_norm = baselines.WienerFIR.fit(split.train[:1], 3)
  with pytest.raises(ValueError, match='standardize the witnesses differently'):
    a.plus(other_norm)


def test_residual_taps_must_not_be_negative():
  with pytest.raises(lstm_jax.DataError, match='--residual_taps must be >= 0, or -1 .*, got -2'):
    lstm_jax.train_and_evaluate(lstm_jax.Config(residual_taps=-2))


def test_a_stretch_is_judged_after_the_witnesses_before_it(tmp_path):
  """A held-out prediction first runs over the witnesses before the cut (never its targets), so
  it is the cut-out part of one pass over the whole recording (what experiments/clean.py
  makes); from cold, the FIR's first taps would miss the history they weigh."""
  path = resonant_recording(tmp_path / 'rec.npz', seconds=60.0)
  config = lstm_jax.Config(data=path, eval_chunk_len=256, residual_taps=32)
  split = train_lib.load_split(config)
  rec = data_lib.load_recording(path)
  cut = len(rec) - len(split.heldout)
  assert len(split.heldout_lead) == train_lib.lead_in_samples(config, 128.0) == 1024
  np.testing.assert_array_equal(split.heldout_lead, rec.witnesses[cut - 1024:cut])
  trained, stats = train_lib.fit_residual_path(untrained_model(), split, 32)
  assert stats['kept'] and stats['validation_residual_nr_db'] > 15
  warm = train_lib.predict_stretch(trained, split.heldout, split.heldout_lead)
  np.testing.assert_allclose(warm, trained.predict(rec.witnesses)[cut:], atol=1e-4)
  cold = trained.predict(split.heldout.witnesses)
  first = lambda y: (np.mean((split.heldout.noise[:32] - y[:32]) ** 2)
                     / np.var(split.heldout.noise))
  assert first(warm) < 0.01 < 0.05 < first(cold)
  # The baselines are judged the same way.
  fir = baselines.WienerFIR.fit(split.train, 32)
  np.testing.assert_allclose(train_lib.predict_stretch(fir, split.heldout, split.heldout_lead),
                             fir.predict(rec.witnesses)[cut:], atol=1e-4)


def test_whitened_check_ranks_by_the_coupling_not_the_loudest_background(rng):
  """A loud slow line the witnesses do not explain: a filter that trims a bit of it by chance
  but leaves ten times more of the broadband coupling looks better on the raw residual's
  variance, and worse through the whitening filter of the lowest residual (mostly
  background), which weighs each frequency by how little background it has (the linear
  path's check)."""
  n, fs = 16000, 256.0
  t = np.arange(n) / fs
  coupled = rng.standard_normal(n)
  line = 3.0 * np.sin(2 * np.pi * 0.3 * t)
  target = coupled + line + 0.3 * rng.standard_normal(n)
  good = target - 0.99 * coupled
  lucky = target - 0.9 * coupled - 0.05 * line
  raw, white = train_lib._judged_as(good, False), train_lib._judged_as(good, True)
  assert train_lib._clearly_below(raw(lucky), raw(good))
  assert train_lib._clearly_below(white(good), white(lucky))
  assert not train_lib._clearly_below(white(lucky), white(good))
  # The whitening filter itself: an AR(2) series comes out white, its first ``order`` dropped.
  ar2 = scipy.signal.lfilter([1.0], [1.0, -1.5, 0.7], rng.standard_normal(20000))
  out = baselines.whitening_filter(ar2, 8)(ar2)
  assert len(out) == len(ar2) - 8
  acf = [out[k:] @ out[:len(out) - k] / (out @ out) for k in range(1, 6)]
  assert max(abs(a) for a in acf) < 0.03, acf
  # Its floor bounds how deep a residual that is one pure line is notched.
  white_noise = rng.standard_normal(20000)
  pure = np.sin(2 * np.pi * 0.3 * np.arange(20000) / fs)
  notched = lambda floor: np.var(baselines.whitening_filter(pure, 32, floor)(pure)) / np.var(pure)
  assert notched(0.0) < 1e-6 and notched(train_lib.WHITENING_FLOOR) > 1e-3
  assert 0.8 < np.var(baselines.whitening_filter(pure, 32, 0.1)(white_noise)) < 1.5


def ringing_witness(w, rng):
  return ringing_witness.noise(w) + 0.3 * rng.standard_normal(len(w))


ringing_witness.noise = lambda w: scipy.signal.lfilter(
    *data_lib.resonator_coefficients(128.0, 20.0, 0.5), w[:, 0]).astype(np.float32)


def test_a_ring_longer_than_the_filter_is_refitted_with_poles(monkeypatch):
  """A resonance ringing down by e in 0.5 s (64 samples) seen by 16-tap filters: the linear
  path is refitted as a rational filter, a FIR as long as the ring, and removes far more of
  the held-out noise; the residual stage, dropping the network, refits it with the validation
  samples as a rational filter again (not as least squares over its many taps)."""
  split = split_of(ringing_witness, lengths=(6000, 6000, 6000))
  _, path, stats = train_lib.fit_linear_path(split, 16)
  assert stats['pole_zero']['order'] in train_lib.POLE_ORDERS and path.n_taps > 4 * 64, stats
  assert abs(min(stats['pole_zero']['poles_hz'], key=lambda f: abs(f - 20.0)) - 20.0) < 0.5
  held = split.heldout
  nr = lambda f: metrics.noise_reduction_db(held.noise[500:], f.predict(held.witnesses)[500:])
  # Its weights are rendered, not solved for: the ring's length to 60 dB, not the solve's cap
  # (``MAX_FIR_WEIGHTS``); a ring cut short caps what the filter removes.
  monkeypatch.setattr(train_lib, 'MAX_RENDERED_WEIGHTS', 128)
  _, cut, _ = train_lib.fit_linear_path(split, 16)
  assert cut.n_taps == 128 and nr(path) > nr(cut) + 3.0, (nr(path), nr(cut))
  monkeypatch.setattr(train_lib, 'POLE_ORDERS', ())
  _, plain, plain_stats = train_lib.fit_linear_path(split, 16)
  assert plain.n_taps == 16 and 'pole_zero' not in plain_stats
  assert nr(path) > nr(plain) + 10.0, (nr(path), nr(plain))
  with_path = dataclasses.replace(untrained_model(zero=True), linear=path)
  kept, residual = train_lib.fit_residual_path(with_path, split, 16, linear_stats=stats)
  assert residual['network_dropped'] and residual['refit_with_validation'], residual
  assert residual['pole_zero'] == stats['pole_zero'] and kept.linear.n_taps == path.n_taps
  assert nr(kept) > nr(path) - 1.0, (nr(kept), nr(path))


def quiet_resonance(w, rng):
  return quiet_resonance.noise(w) + 2.0 * rng.standard_normal(len(w))


quiet_resonance.noise = lambda w: scipy.signal.lfilter(
    *data_lib.resonator_coefficients(128.0, 20.0, 0.1), w[:, 0]).astype(np.float32)


def test_a_rational_refit_with_fewer_numbers_is_kept_unless_shown_worse(monkeypatch):
  """A resonance ringing down in 0.1 s under a background twice its std: a 64-tap filter
  renders it, and its rational refit (a few poles, numerators of a few taps) differs from it
  on the validation stretch by less than its standard error; it is kept for its fewer
  numbers and removes more of the held-out noise than the filter, which a refit that must
  prove itself leaves in place."""
  split = split_of(quiet_resonance, lengths=(3000, 3000, 3000), seed=4)
  held = split.heldout
  nr = lambda f: metrics.noise_reduction_db(held.noise[500:], f.predict(held.witnesses)[500:])
  _, path, stats = train_lib.fit_linear_path(split, 64)
  assert stats['poles_unproven'] and stats['poles_t'] < train_lib.MIN_T, stats
  monkeypatch.setattr(train_lib, 'POLES_UNLESS_WORSE', False)
  _, plain, plain_stats = train_lib.fit_linear_path(split, 64)
  assert 'pole_zero' not in plain_stats and plain.n_taps == 64
  assert nr(path) > nr(plain) + 5.0, (nr(path), nr(plain))


def test_the_unproven_refit_is_one_with_fewer_numbers_not_shown_worse():
  """Of the rational refits none of which proves itself, the one validation judges best among
  those with fewer free numbers than the filter and not clearly worse than it."""
  fir = baselines.WienerFIR(32, np.ones(2 * 32), 0.0, None)
  info = lambda order, n_zeros: {'order': order, 'n_zeros': n_zeros, 'fir_columns': []}
  entry = lambda db, worse: {'judged_nr_db': db, 'clearly_worse': worse}
  infos = [info(2, 8), info(4, 8), info(8, 40), info(2, 16)]
  tried = [entry(0.001, False), entry(-0.01, True), entry(0.01, False), entry(-0.001, False)]
  candidates = [(object(), 0.0, 0) for _ in infos]
  pick = lambda: train_lib._fewer_numbers_unless_worse(fir, candidates, infos, tried)
  # The third has more numbers than the filter's 64 taps (88), the second is clearly worse.
  assert pick()[1] is candidates[0][0] and pick()[0]['unproven']
  tried[0] = entry(-0.01, True)  # now clearly worse too: the fourth, within its noise
  assert pick()[1] is candidates[3][0]
  tried[3] = entry(-0.01, True)
  assert pick() is None


def test_a_rational_refit_on_more_records_that_leaves_more_of_them_is_not_kept(monkeypatch):
  """Refitted on the training and validation records, a rational filter whose iterations
  settled elsewhere and leave more of those very records than the filter validation chose
  gives way to that filter; one that leaves less replaces it."""
  split = split_of(ringing_witness, lengths=(6000, 6000, 6000))
  _, path, stats = train_lib.fit_linear_path(split, 16)
  info = stats['pole_zero']
  refit = lambda: train_lib.refit_with_validation(split, path, path.n_taps, pole_zero=info)
  assert refit() is not path
  real = baselines.pole_zero
  monkeypatch.setattr(baselines, 'pole_zero', lambda *a, **k: (lambda f, i: (
      dataclasses.replace(f, weights=-np.asarray(f.weights)), i))(*real(*a, **k)))
  assert refit() is path
