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
  products = volterra.Products([(0, 2, 4), (1, 1, 0)], data_lib.Normalizer.fit(w))
  whole = products.widen(w)
  np.testing.assert_allclose(products.widen(w[20:], w[:20]), whole[20:], rtol=1e-12)
  # Without the witnesses before, the lagged factor reads their means (scaled zeros).
  assert np.all(products.widen(w[20:])[:4, 3] == 0.0)
  x = products.norm.apply(w).astype(np.float64)
  np.testing.assert_allclose(whole[10:, 3], x[6:-4, 0] * x[10:, 2], rtol=1e-12)


def test_streaming_with_lagged_products_equals_the_whole_record(rng):
  rec = _bilinear(rng, n=3000)
  products = volterra.Products([(1, 3, 7), (0, 0, 0)], data_lib.Normalizer.fit(rec.witnesses))
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
