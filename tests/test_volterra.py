"""Witness-pair products: the screen finds the coupled pair, the filter over the widened
witnesses renders "product, then linear dynamics", and streaming equals the whole record."""
import dataclasses

import numpy as np

import lstm_jax
from lstm_jax import baselines
from lstm_jax import data as data_lib
from lstm_jax import inference
from lstm_jax import volterra
from lstm_jax import zoo


def _bilinear(rng, n=60000, fs=1000.0, lag=7):
  """Witness 1 (slow) seen ``lag`` samples late times witness 3 (fast), through a resonance;
  witnesses 0 and 2 idle; a background the witnesses do not explain."""
  slow = zoo.coloured(rng, n, fs, 0.3, 3.0)
  fast = zoo.coloured(rng, n, fs, 5.0, 400.0)
  idle = [zoo.coloured(rng, n, fs, 1.0, 300.0) for _ in range(2)]
  noise = zoo.resonance(zoo.delayed(slow, lag) * fast, fs, 80.0, 0.02)
  background = 0.5 * noise.std() * zoo.coloured(rng, n, fs, 1.0, 400.0)
  w = np.stack([idle[0], slow * 3.0 + 7.0, idle[1], fast * 0.01], 1)
  return data_lib.Recording(w.astype(np.float32), (noise + background).astype(np.float32), fs,
                            noise.astype(np.float32))


def test_screen_finds_the_coupled_pair_and_its_lag(rng):
  rec = _bilinear(rng)
  pairs, scores = volterra.screen_pairs([rec], [rec.target], max_pairs=4)
  assert [p[:2] for p in pairs] == [(1, 3)]  # witness 1 earlier, times witness 3
  assert 4 <= pairs[0][2] <= 11, pairs
  assert scores[0][3] > 20 and all(s[3] < 5 for s in scores[1:])


def test_filter_over_products_renders_product_then_resonance(rng):
  rec = _bilinear(rng)
  train, test = rec.slice(0, 40000), rec.slice(40000, 60000)
  plain = baselines.WienerFIR.fit([train], 64)
  pairs, _ = volterra.screen_pairs([train], [train.target], max_pairs=2)
  products = volterra.Products(pairs, data_lib.Normalizer.fit(train.witnesses))
  wide = dataclasses.replace(baselines.WienerFIR.fit([products.widened(train)], 64),
                             products=products)
  nr = lambda fir: lstm_jax.noise_reduction_db(test.noise[200:], fir.predict(test.witnesses)[200:])
  assert nr(plain) < 1.0  # a product is uncorrelated with every lag of either witness
  assert nr(wide) > 20.0


def test_widen_reads_the_witnesses_before_for_a_lagged_factor(rng):
  w = rng.normal(size=(50, 3)).astype(np.float32)
  taps = (0.5, -1.0, 0.0, 0.25, 0.0, 0.0, 0.1)  # a modulated path reads 6 samples before
  products = volterra.Products([(0, 2, 4), (1, 1, 0)], data_lib.Normalizer.fit(w), [],
                               [(2, 0, taps)], [(1, 1.5, taps[:4], ((2.0, 0.0, 1.0),
                                                                    (1.0, 0.5, -0.3)))])
  assert products.max_lag == 6 and products.factors == [0, 1, 2]
  whole = products.widen(w)
  np.testing.assert_allclose(products.widen(w[20:], w[:20]), whole[20:], rtol=1e-12)
  # Without the witnesses before, the lagged factor reads their means (scaled zeros).
  assert np.all(products.widen(w[20:])[:4, 3] == 0.0)
  x = products.norm.apply(w).astype(np.float64)
  np.testing.assert_allclose(whole[10:, 3], x[6:-4, 0] * x[10:, 2], rtol=1e-12)
  path = sum(h * x[10 - k:len(x) - k, 0] for k, h in enumerate(taps))  # x2(t) (h * x0)(t)
  np.testing.assert_allclose(whole[10:, 5], x[10:, 2] * path, rtol=1e-12)
  u = sum(h * x[10 - k:len(x) - k, 1] for k, h in enumerate(taps[:4])) / 1.5  # (h * x1) / s
  np.testing.assert_allclose(whole[10:, 6], np.tanh(2.0 * u) - 0.3 * np.tanh(u - 0.5),
                             rtol=1e-12)
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  factors = np.concatenate([np.zeros((6, 3)), x])  # the exported program's form
  exported = products.appended(jnp.asarray(factors), jnp)
  for k in (2, 3):
    np.testing.assert_allclose(np.asarray(exported[k]), whole[:, 3 + k], rtol=1e-5, atol=1e-6)


def test_streaming_with_lagged_products_equals_the_whole_record(rng):
  rec = _bilinear(rng, n=3000)
  products = volterra.Products([(1, 3, 7), (0, 0, 0)], data_lib.Normalizer.fit(rec.witnesses),
                               [], [(1, 3, tuple(np.hanning(12)))],
                               [(3, 2.0, tuple(np.hanning(20)), ((1.0, 0.5, 0.5),))])
  fir = dataclasses.replace(baselines.WienerFIR.fit([products.widened(rec)], 16),
                            products=products)
  config = lstm_jax.Config(lstm_sizes=(4,), head_sizes=(4,))
  model = lstm_jax.build_model(config)
  import jax
  params = model.init(jax.random.key(0), model.initialize_carry(1),
                      np.zeros((1, 8, 4), np.float32))['params']
  trained = inference.TrainedModel(config, params, data_lib.Normalizer.fit(rec.witnesses),
                                   data_lib.Normalizer.fit(rec.target), 4, fir)
  whole = trained.predict(rec.witnesses, chunk_len=64)
  stream = trained.stream(chunk_len=64)
  cuts = np.cumsum([0] + [3 + k % 13 for k in range(600)])
  cuts = [int(c) for c in cuts[cuts < 3000]] + [3000]
  online = np.concatenate([stream.push(rec.witnesses[a:b]) for a, b in zip(cuts, cuts[1:])])
  np.testing.assert_allclose(online, whole, rtol=1e-9, atol=1e-9 * np.std(whole))
  # The filter's dict round trip keeps the products.
  again = baselines.WienerFIR.from_dict(fir.to_dict())
  assert again.products.pairs == [(1, 3, 7), (0, 0, 0)]
  assert again.same_inputs(fir) and again.products.modulated == products.modulated
  assert again.products.bent_paths == products.bent_paths
  np.testing.assert_array_equal(again.predict(rec.witnesses), fir.predict(rec.witnesses))


def test_filters_are_also_fitted_over_the_coherent_inputs_alone(rng):
  """Five witnesses, one coupled through a resonance: the column screen keeps that one, and a
  filter over it alone (other weights zero, the same normalizer) joins the candidates."""
  n, fs = 40000, 500.0
  w = np.stack([zoo.coloured(rng, n, fs, 1.0, 200.0) for _ in range(5)], 1)
  noise = zoo.resonance(w[:, 3], fs, 40.0, 0.02)
  target = noise + 0.3 * noise.std() * rng.standard_normal(n)
  rec = data_lib.Recording(w.astype(np.float32), target.astype(np.float32), fs)
  keep, ratios = volterra.coherent_columns([rec], [rec.target], 3.0)
  assert keep == [3] and ratios[3] > 100 and max(np.delete(ratios, 3)) < 3
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  candidates = train_lib._filter_candidates([rec], None, [16], 0, {})  # pylint: disable=protected-access
  (every, _, _), (alone, _, _) = candidates
  assert every.inputs_used() == [0, 1, 2, 3, 4] and alone.inputs_used() == [3]
  assert alone.input_norm.to_dict() == every.input_norm.to_dict()  # one normalizer: ``plus`` works
  sub = baselines.WienerFIR.fit([dataclasses.replace(rec, witnesses=rec.witnesses[:, 3:4])], 16)
  np.testing.assert_allclose(alone.predict(rec.witnesses), sub.predict(rec.witnesses[:, 3:4]),
                             rtol=0, atol=1e-6 * np.abs(rec.target).max())


def test_a_coherent_products_factors_join_it(monkeypatch):
  """A line modulated by a slow witness, and the line's own weak direct coupling: the column
  screen keeps only the product (the line's power is small beside the sidebands and the
  background); a filter over the product and its factors is also fitted, and picked, and it
  removes the direct coupling too."""
  rng = np.random.default_rng(0)
  n, fs = 60000, 500.0
  theta = zoo.wandering_line(rng, n, fs, 50.0, 0.03)
  slow = zoo.coloured(rng, n, fs, 1.0, 5.0)
  w = np.stack([zoo.coloured(rng, n, fs, 1.0, 200.0), np.sin(theta), slow,
                zoo.coloured(rng, n, fs, 1.0, 200.0)], 1)
  noise = slow * np.sin(theta) + 0.1 * np.cos(theta)
  target = noise + zoo.coloured(rng, n, fs, 0.5, 200.0)
  rec = data_lib.Recording(w.astype(np.float32), target.astype(np.float32), fs,
                           noise.astype(np.float32))
  keep, _ = volterra.coherent_columns([rec], [rec.target], 3.0)
  assert 1 not in keep  # the line alone is below the screen
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  train, val, later = rec.slice(0, 40000), rec.slice(40000, 48000), rec.slice(48000, n)
  split = train_lib.Split([train], later, 'test', val, None, train.witnesses[-4000:])
  nr = lambda f: lstm_jax.noise_reduction_db(later.noise[100:], f.predict(later.witnesses)[100:])
  monkeypatch.setattr(train_lib, 'MODULATED_PATHS', False)  # the candidates' inputs alone
  monkeypatch.setattr(train_lib, 'POLE_ORDERS', ())
  _, with_factors, stats = train_lib.fit_linear_path(split, [16, 64], 4)
  assert stats['inputs_used'] == [1, 2, 4] and stats['products'][0][:2] == [1, 2], stats
  monkeypatch.setattr(train_lib, 'WITH_FACTORS', False)
  _, without, stats = train_lib.fit_linear_path(split, [16, 64], 4)
  assert stats['inputs_used'] != [1, 2, 4], stats  # every input, or the product alone
  # The product alone leaves the direct coupling (every input under the prior, with its idle
  # ones shrunk away, does as well as the factors: 36.53 and 36.55 dB; the product alone 19.6).
  widened = with_factors.products
  [[(alone, _)]] = baselines.WienerFIR.fit_beside_sets([widened.widened(train)], None,
                                                       [with_factors.n_taps], [[4]])
  alone = dataclasses.replace(alone, products=widened)
  assert nr(with_factors) > nr(alone) + 3.0, (nr(with_factors), nr(alone))
  assert nr(with_factors) > nr(without) - 0.5, (nr(with_factors), nr(without))


def _mild_saturation_beside(seed: int, n_ch: int, other, monkeypatch):
  """``n_ch`` unit witnesses, the second saturated mildly (tanh at gain 1.2) into the target
  beside ``other(witnesses)``, under a faint background, 160 s at 500 Hz; the linear path's
  modulated paths, poles and bent paths off: ``(split, train, nr)``, ``nr`` a filter's NR on
  the later noise."""
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(seed)
  n, fs = 80000, 500.0
  w = np.stack([zoo.coloured(rng, n, fs, 1.0, 200.0) for _ in range(n_ch)], 1)
  w /= w.std(axis=0)
  noise = np.tanh(1.2 * w[:, 1]) / 0.65 + other(w)
  target = noise + 0.05 * zoo.coloured(rng, n, fs, 0.5, 200.0)
  rec = data_lib.Recording(w.astype(np.float32), target.astype(np.float32), fs,
                           noise.astype(np.float32))
  train, val, later = rec.slice(0, 56000), rec.slice(56000, 66000), rec.slice(66000, n)
  split = train_lib.Split([train], later, 'test', val, None, train.witnesses[-4000:])
  for name in ('MODULATED_PATHS', 'BENT_PATHS'):
    monkeypatch.setattr(train_lib, name, False)
  monkeypatch.setattr(train_lib, 'POLE_ORDERS', ())
  return split, train, lambda f: lstm_jax.noise_reduction_db(
      later.noise[100:], f.predict(later.witnesses)[100:])


def test_a_coherent_witness_bent_forms_join_it(monkeypatch):
  """A mild saturation of one of eight witnesses beside a strong delayed path: its bent forms
  are screened in, yet their own coherence with the target is under the column screen (its
  linear part holds nearly all of it). The filter over the coherent columns takes them with
  their witness and leaves the six idle witnesses out; without that, the filter over every
  column wins, and with more weights than the prior's cap (lowered here) it stays least
  squares."""
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  split, train, nr = _mild_saturation_beside(
      0, 8, lambda w: 4.0 * zoo.delayed(w[:, 4], 5), monkeypatch)
  monkeypatch.setattr(baselines, 'MAX_REGULARIZED_WEIGHTS', 64)
  _, joined, stats = train_lib.fit_linear_path(split, [8, 32], 4)
  forms = list(range(8, 8 + len(stats['shapes'])))
  assert forms and all(i == 1 for i, *_ in stats['shapes']), stats
  assert stats['inputs_used'] == [1, 4] + forms and stats['regularized'], stats
  widened = volterra.Products([], data_lib.Normalizer.fit(train.witnesses),
                              [tuple(s) for s in stats['shapes']]).widened(train)
  keep, ratios = volterra.coherent_columns([widened], [widened.target], train_lib.SELECT_RATIO)
  assert keep == [1, 4] and max(ratios[c] for c in forms) < train_lib.SELECT_RATIO, ratios
  monkeypatch.setattr(train_lib, 'FORMS_WITH_WITNESS', False)
  _, every, stats_every = train_lib.fit_linear_path(split, [8, 32], 4)
  assert stats_every['inputs_used'] == list(range(8)) + forms, stats_every
  assert not stats_every.get('regularized'), stats_every
  assert nr(joined) > nr(every) + 1.5, (nr(joined), nr(every))


def test_a_slow_witness_modulating_a_resonant_path_is_fitted_as_a_modulated_path(monkeypatch):
  """A coupling through a resonance whose gain a slow witness sets, (1 + e T(t)) (h * x)(t):
  the linear path's product T x is then also tried as T (h * x), h the path it fitted to x,
  and kept; on later data it removes more than the filter over the product."""
  rng = np.random.default_rng(0)
  n, fs = 80000, 500.0
  temp = zoo.coloured(rng, n, fs, 0.01, 0.1, order=1)
  fast = zoo.coloured(rng, n, fs, 1.0, 200.0)
  path = zoo.resonance(zoo.delayed(fast, 3), fs, 40.0, 0.03)
  noise = path / path.std() * (1.0 + 0.4 * temp)
  target = noise + zoo.coloured(rng, n, fs, 0.5, 200.0)
  w = np.stack([temp, fast, zoo.coloured(rng, n, fs, 1.0, 200.0)], 1)
  rec = data_lib.Recording(w.astype(np.float32), target.astype(np.float32), fs,
                           noise.astype(np.float32))
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  train, val, later = rec.slice(0, 56000), rec.slice(56000, 64000), rec.slice(64000, n)
  split = train_lib.Split([train], later, 'test', val, None, train.witnesses[-4000:])
  nr = lambda f: lstm_jax.noise_reduction_db(later.noise[100:], f.predict(later.witnesses)[100:])
  monkeypatch.setattr(train_lib, 'POLE_ORDERS', ())  # the modulated paths alone
  _, modulated, stats = train_lib.fit_linear_path(split, [8, 32, 128], 4)
  assert stats['modulated'] == [[0, 1, 128]] and stats['products'][0][:2] == [1, 0], stats
  monkeypatch.setattr(train_lib, 'MODULATED_PATHS', False)
  _, product, stats = train_lib.fit_linear_path(split, [8, 32, 128], 4)
  assert not stats['modulated'], stats
  assert nr(modulated) > nr(product) + 3.0, (nr(modulated), nr(product))


def test_screen_searches_between_the_lag_grid_points(rng):
  """A slow factor 22 samples late: the geometric grid has 17 and 26, the search between them
  finds 22 (a slow factor's lag error is what caps a product filter at a high rate)."""
  rec = _bilinear(rng, lag=22)
  assert 22 not in volterra.lag_grid(50)
  pairs, _ = volterra.screen_pairs([rec], [rec.target], max_pairs=1)
  assert pairs[0][:2] == (1, 3) and abs(pairs[0][2] - 22) <= 1, pairs


def test_a_lagged_pair_is_also_fitted_unlagged_and_validation_picks(rng, monkeypatch):
  """A slow gain times a fast witness through a resonance (a drifting coupling): were the
  screen to lag the fast factor (coherence cannot tell a factor's lag from the product's
  delay), the filter over that product would lose the resonance's first taps; the same pair
  at lag 0 is fitted beside it, and the linear path keeps the unlagged filter."""
  n, fs = 80000, 500.0
  gain = zoo.coloured(rng, n, fs, 0.01, 0.1, order=1)
  fast = zoo.coloured(rng, n, fs, 1.0, 200.0)
  noise = zoo.resonance(fast, fs, 30.0, 0.02) * (1.0 + 0.5 * gain / gain.std())
  target = noise + 0.3 * noise.std() * zoo.coloured(rng, n, fs, 0.5, 200.0)
  rec = data_lib.Recording(np.stack([gain, fast], 1).astype(np.float32),
                           target.astype(np.float32), fs, noise.astype(np.float32))
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(volterra, 'screen_pairs', lambda *a, **k: ([(1, 0, 6)], []))
  candidates = train_lib._filter_candidates([rec], None, [32], 4, {})  # pylint: disable=protected-access
  assert sorted({tuple(map(tuple, f.products.pairs)) for f, _, _ in candidates
                 if f.products is not None}) == [((1, 0, 0),), ((1, 0, 6),)]
  train, val, later = rec.slice(0, 56000), rec.slice(56000, 64000), rec.slice(64000, n)
  split = train_lib.Split([train], later, 'test', val, None, train.witnesses[-4000:])
  _, fir, stats = train_lib.fit_linear_path(split, [32], 4)
  assert stats['kept'] and fir.products.pairs == [(1, 0, 0)], stats
  lagged = next(f for f, _, n_taps in train_lib._filter_candidates(  # pylint: disable=protected-access
      [train], None, [32], 4, {}) if f.products is not None and f.products.pairs[0][2] == 6
      and len(f.inputs_used()) == f.n_channels)
  nr = lambda f: lstm_jax.noise_reduction_db(later.noise[100:], f.predict(later.witnesses)[100:])
  assert nr(fir) > nr(lagged) + 6.0, (nr(fir), nr(lagged))


def _saturated(rng, n=60000, fs=1000.0, k=2.0):
  """Witness 1 saturates (tanh at gain ``k``) before a resonance; witness 2 couples linearly
  through a resonance; witness 0 idle; a background."""
  w = [zoo.coloured(rng, n, fs, 1.0, 300.0) for _ in range(3)]
  w = [x / x.std() for x in w]
  bent = zoo.resonance(np.tanh(k * w[1]), fs, 60.0, 0.02)
  linear = zoo.resonance(w[2], fs, 30.0, 0.04)
  noise = bent / bent.std() + 0.5 * linear / linear.std()
  background = 0.1 * zoo.coloured(rng, n, fs, 1.0, 400.0)
  witnesses = np.stack([w[0], 3.0 * w[1] + 1.0, w[2]], 1)
  return data_lib.Recording(witnesses.astype(np.float32), (noise + background).astype(np.float32),
                            fs, noise.astype(np.float32))


def test_screen_finds_the_bent_witness_not_a_linear_one(rng):
  """Only the saturated witness's bent forms score: less their linear part, those of a
  witness that couples linearly (the raw target screened: all of its linear part is left) are
  incoherent with the target."""
  rec = _saturated(rng)
  shapes, scores = volterra.screen_shapes([rec], [rec.target])
  assert shapes and {i for i, _, _ in shapes} == {1}, scores[:6]
  assert max(v for i, _, _, v in scores if i != 1) < 2.0, scores
  assert all(v > 10.0 for i, _, _, v in scores if i == 1), scores


def test_filter_over_bent_witnesses_renders_saturation_then_resonance(rng):
  rec = _saturated(rng)
  train, test = rec.slice(0, 40000), rec.slice(40000, 60000)
  plain = baselines.WienerFIR.fit([train], 256)
  shapes, _ = volterra.screen_shapes([train], [train.target])
  products = volterra.Products([], data_lib.Normalizer.fit(train.witnesses), shapes)
  wide = dataclasses.replace(baselines.WienerFIR.fit([products.widened(train)], 256),
                             products=products)
  nr = lambda fir: lstm_jax.noise_reduction_db(test.noise[300:], fir.predict(test.witnesses)[300:])
  assert nr(plain) < 12.0  # tanh(2x) is 8 dB from its linear part
  assert nr(wide) > nr(plain) + 10.0, (nr(plain), nr(wide))
  again = volterra.Products.from_dict(products.to_dict())
  assert again.shapes == products.shapes and again.pairs == []
  assert volterra.Products.from_dict({'pairs': [[0, 1, 2]], 'norm': products.norm.to_dict()}
                                     ).shapes == []  # a model saved before bent witnesses
  assert volterra.describe([(0, 0, 0)], [(1, 2.0, 0.7)]) == 'w0^2, tanh(2*w1)'


def test_a_mild_saturation_under_a_square_is_screened_on_what_the_square_leaves(monkeypatch):
  """A square six times as strong as a mild saturation (tanh at gain 1.2): on what a filter
  over the witnesses leaves, the square holds the share of its power a bent form must be
  coherent with, and the saturation's forms stay under the screen; screened again on what
  the square's filter leaves, they clear it, and the filter with them removes far more of
  the later noise."""
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  # Bent paths render it too (68 dB), later: off here.
  split, _, nr = _mild_saturation_beside(
      1, 3, lambda w: 6.0 * (w[:, 0] ** 2 - 1.0) / np.sqrt(2.0), monkeypatch)
  _, again, stats = train_lib.fit_linear_path(split, [8, 32], 4)
  assert max(v for i, _, _, v in stats['shapes_screened'] if i == 1) < 3.0, stats
  assert min(v for i, _, _, v in stats['shapes_screened_again'] if i == 1) > 30.0, stats
  assert any(i == 1 for i, *_ in stats['shapes']), stats
  monkeypatch.setattr(train_lib, 'SCREEN_AGAIN', False)
  _, once, stats_once = train_lib.fit_linear_path(split, [8, 32], 4)
  assert not any(i == 1 for i, *_ in (stats_once.get('shapes') or [])), stats_once
  assert nr(again) > nr(once) + 20.0, (nr(again), nr(once))


def test_bent_forms_are_also_scored_against_the_residual_whitened(monkeypatch):
  """A mild saturation under a loud low-frequency background: the background holds most of
  the residual's power, where the bend is buried, and by that share the bent forms score
  under the screen; every frequency weighed alike they score far above it, and an idle
  witness's forms stay near chance either way."""
  rng = np.random.default_rng(1)
  n, fs = 80000, 500.0
  w = np.stack([zoo.coloured(rng, n, fs, 1.0, 200.0) for _ in range(2)], 1)
  w /= w.std(axis=0)
  target = np.tanh(1.2 * w[:, 1]) + 5.0 * zoo.coloured(rng, n, fs, 0.5, 20.0)
  rec = data_lib.Recording(w.astype(np.float32), target.astype(np.float32), fs)
  monkeypatch.setattr(volterra, 'SHAPES_WHITENED', False)
  by_power, power_scores = volterra.screen_shapes([rec], [rec.target])
  monkeypatch.setattr(volterra, 'SHAPES_WHITENED', True)
  whitened, scores = volterra.screen_shapes([rec], [rec.target])
  assert not by_power and max(v for *_, v in power_scores) < 3.0, power_scores
  assert {i for i, _, _ in whitened} == {1} and len(whitened) == len(volterra.SHAPE_GAINS)
  assert min(v for i, _, _, v in scores if i == 1) > 10.0, scores
  assert max(v for i, _, _, v in scores if i == 0) < 2.0, scores


def _wiener_model(gain: float, cutoff_hz: float, order: int):
  """Three witnesses, the second delayed, low-passed and saturated into the target (a Wiener
  model) under a faint background: ``(split, nr)``, ``nr`` a filter's NR on the later noise."""
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  n, fs = 60000, 500.0
  w = np.stack([zoo.coloured(rng, n, fs, 0.5, 200.0) for _ in range(3)], 1)
  low = zoo.lowpass(zoo.delayed(w[:, 1], 4), fs, cutoff_hz, order=order)
  noise = np.tanh(gain * zoo._unit(low))
  target = noise + 0.05 * noise.std() * zoo.coloured(rng, n, fs, 0.5, 200.0)
  rec = data_lib.Recording(w.astype(np.float32), target.astype(np.float32), fs,
                           noise.astype(np.float32))
  train, val, later = rec.slice(0, 40000), rec.slice(40000, 48000), rec.slice(48000, n)
  split = train_lib.Split([train], later, 'test', val, None, train.witnesses[-4000:])
  return split, lambda f: lstm_jax.noise_reduction_db(later.noise[100:],
                                                       f.predict(later.witnesses)[100:])


def test_a_saturation_after_a_low_pass_is_fitted_as_a_bent_path(monkeypatch):
  """A witness low-passed, then saturated (a Wiener model): the linear path's filter for it is
  the low-pass up to a gain, its output through the fitted nonlinearity is kept, and on later
  data it removes far more than the filter over the witnesses and their bent forms."""
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  split, nr = _wiener_model(2.0, 15.0, 3)
  monkeypatch.setattr(train_lib, 'POLE_ORDERS', ())  # the bent paths alone
  _, bent, stats = train_lib.fit_linear_path(split, [16, 64], 4)
  assert stats['bent_paths'] and {p[0] for p in stats['bent_paths']} == {1}, stats
  monkeypatch.setattr(train_lib, 'BENT_PATHS', False)
  _, plain, stats = train_lib.fit_linear_path(split, [16, 64], 4)
  assert not stats['bent_paths'], stats
  assert nr(bent) > nr(plain) + 10.0, (nr(bent), nr(plain))


def test_a_bent_path_stands_in_for_its_witness_bent_forms_where_the_filter_is_full(monkeypatch):
  """A milder low-pass before a harder saturation, where the witness's static bent forms join
  the filter, and the filter's weight budget filled by its columns: the bent path still joins
  it, in place of the bent witness's static forms, and removes far more."""
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  split, nr = _wiener_model(2.6, 40.0, 2)
  monkeypatch.setattr(train_lib, 'POLE_ORDERS', ())
  monkeypatch.setattr(train_lib, 'BENT_PATHS', False)
  # The filter over every column kept, as where the forms' witness is under the column
  # screen (with it, the witness and its forms alone are kept, and a lower cap changes the
  # lengths tried).
  monkeypatch.setattr(train_lib, 'FORMS_WITH_WITNESS', False)
  _, plain, plain_stats = train_lib.fit_linear_path(split, [16, 64], 4)
  shapes_of_1 = [k for k, (i, *_) in enumerate(plain_stats['shapes']) if i == 1]
  assert shapes_of_1, plain_stats  # the witness's static forms are in the plain filter
  full = len(plain_stats['inputs_used']) * plain_stats['n_taps']
  monkeypatch.setattr(train_lib, 'MAX_FIR_WEIGHTS', full)
  monkeypatch.setattr(train_lib, 'BENT_PATHS', True)
  _, bent, stats = train_lib.fit_linear_path(split, [16, 64], 4)
  assert 1 in {p[0] for p in stats['bent_paths']}, stats
  first_shape = 3 + len(stats['products'] or [])
  used_shapes = [c - first_shape for c in stats['inputs_used']
                 if first_shape <= c < first_shape + len(stats['shapes'])]
  assert not set(used_shapes) & set(shapes_of_1), stats
  assert len(stats['inputs_used']) * stats['n_taps'] <= full
  assert nr(bent) > nr(plain) + 10.0, (nr(bent), nr(plain))


def test_a_bend_is_fitted_on_what_its_witness_static_forms_took_too(monkeypatch):
  """``nonlinear_memory``'s saturation after a low-pass alone, noiseless (60 s at 1024 Hz, 12
  witnesses): the witness's static bent forms join the filter and take part of the bend. Its
  bent path's nonlinearity is fitted on what the filter leaves with their part added back;
  fitted on what they left (their misfit), the same bent path removed 17 dB less."""
  from lstm_jax import train as train_lib  # pylint: disable=g-import-not-at-top
  draw = zoo.make('nonlinear_memory', 0, with_background=False, max_seconds=60.0)
  saturation = draw.features_train[:, 1].astype(np.float32)  # f2: tanh(k low-passed w)
  rec = dataclasses.replace(draw.train, target=saturation, noise=saturation)
  n = len(rec)
  train, val, later = rec.slice(0, 7 * n // 10), rec.slice(7 * n // 10, 17 * n // 20), rec.slice(
      17 * n // 20, n)
  split = train_lib.Split([train], later, 'test', val, None, train.witnesses[-4000:])
  nr = lambda f: lstm_jax.noise_reduction_db(later.noise[200:], f.predict(later.witnesses)[200:])
  monkeypatch.setattr(train_lib, 'POLE_ORDERS', ())
  _, bent, stats = train_lib.fit_linear_path(split, [8, 31], 4)
  witness = stats['bent_paths'][0][0]
  assert {s[0] for s in stats['shapes']} == {witness}, stats  # its static forms beside it
  fit_bends = volterra.fit_bends
  monkeypatch.setattr(volterra, 'fit_bends',
                      lambda *a, beside=None, **k: fit_bends(*a, **k))  # on what they left
  _, left_only, left_stats = train_lib.fit_linear_path(split, [8, 31], 4)
  assert left_stats['bent_paths'], left_stats
  assert nr(bent) > 40.0 and nr(bent) > nr(left_only) + 10.0, (nr(bent), nr(left_only))
