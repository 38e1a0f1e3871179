"""Online cleaning: streaming equals a whole-record pass exactly; the export round trip."""
import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lstm_jax
from lstm_jax import baselines
from lstm_jax import data as data_lib
from lstm_jax import export as export_lib
from lstm_jax import volterra
from lstm_jax.inference import TrainedModel


@pytest.fixture(scope='module')
def trained():
  config = lstm_jax.Config(lstm_sizes=(12, 6), head_sizes=(16,), eval_chunk_len=256)
  model = lstm_jax.build_model(config)
  carry = model.initialize_carry(1)
  params = model.init(jax.random.key(0), carry, np.zeros((1, 4, 2), np.float32))['params']
  norm_in = data_lib.Normalizer(np.array([0.1, -0.2], np.float32), np.array([0.7, 1.3], np.float32))
  norm_out = data_lib.Normalizer(np.array([0.5], np.float32), np.array([2.0], np.float32))
  return TrainedModel(config, params, norm_in, norm_out, 2)


@pytest.fixture(scope='module')
def record():
  return lstm_jax.seed_mock(fs=256.0, duration=4.0, seed=3)  # 1024 samples


@pytest.mark.parametrize('block_size', [1, 7, 128, 2048])
def test_streaming_equals_whole_record_exactly(trained, record, block_size):
  whole = trained.predict(record.witnesses)
  n = 300 if block_size == 1 else len(record)  # 1-sample blocks: a shorter stretch suffices
  stream = trained.stream()
  parts = [stream.push(record.witnesses[a:min(a + block_size, n)]) for a in range(0, n, block_size)]
  np.testing.assert_array_equal(np.concatenate(parts), whole[:n])


def test_streaming_has_no_look_ahead(trained, record):
  a = trained.predict(record.witnesses)
  changed = record.witnesses.copy()
  changed[500:] += 10.0
  b = trained.predict(changed)
  np.testing.assert_array_equal(a[:500], b[:500])
  assert not np.allclose(a[500:], b[500:])


def test_reset_and_channel_check(trained, record):
  stream = trained.stream()
  first = stream.push(record.witnesses[:100])
  stream.reset()
  np.testing.assert_array_equal(stream.push(record.witnesses[:100]), first)
  with pytest.raises(data_lib.DataError, match='trained on 2 witness channels'):
    stream.push(np.zeros((10, 3)))


def test_export_round_trip(trained, record, tmp_path):
  path = str(tmp_path / 'model.jaxexport')
  export_lib.save_exported(trained, path)
  served = export_lib.ExportedCleaner.load(path)
  assert served.n_inputs == 2 and served.batch_size == 1
  ref = trained.predict(record.witnesses)
  whole = served.push(record.witnesses)
  np.testing.assert_allclose(whole, ref, atol=1e-5)
  served.reset()
  parts = [served.push(record.witnesses[a:a + 100]) for a in range(0, len(record), 100)]
  np.testing.assert_allclose(np.concatenate(parts), ref, atol=1e-5)


@pytest.fixture(scope='module')
def trained_linear(trained, record):
  """``trained`` with a linear path: a Wiener FIR of 16 taps fitted on the record."""
  fir = baselines.WienerFIR.fit([record], n_taps=16)
  return dataclasses.replace(trained, linear=fir)


def test_linear_path_adds_the_fir_and_streams(trained, trained_linear, record):
  whole = trained_linear.predict(record.witnesses)
  np.testing.assert_allclose(whole - trained.predict(record.witnesses),
                             trained_linear.linear.predict(record.witnesses), atol=1e-5)
  for block_size in (1, 7, 300):  # the FIR's history crosses every block boundary
    n = 100 if block_size == 1 else len(record)
    stream = trained_linear.stream()
    parts = [stream.push(record.witnesses[a:min(a + block_size, n)])
             for a in range(0, n, block_size)]
    np.testing.assert_allclose(np.concatenate(parts), whole[:n], rtol=1e-6, atol=1e-6)
  stream.reset()
  # The FIR runs in float64 (BLAS sums in a block-size-dependent order): equal to ~1 ulp.
  np.testing.assert_allclose(stream.push(record.witnesses[:50]), whole[:50], rtol=1e-12,
                             atol=1e-15)
  with pytest.raises(data_lib.DataError, match='made for 1'):
    stream.push(np.zeros((2, 10, 2)))


def test_linear_path_saves_loads_and_exports(trained, trained_linear, record, tmp_path):
  trained_linear.save(str(tmp_path / 'model'))
  loaded = TrainedModel.load(str(tmp_path / 'model'))
  np.testing.assert_array_equal(loaded.predict(record.witnesses),
                                trained_linear.predict(record.witnesses))
  trained.save(str(tmp_path / 'model'))  # the same directory, no linear path now
  assert TrainedModel.load(str(tmp_path / 'model')).linear is None
  export_lib.save_exported(trained_linear, str(tmp_path / 'linear.jaxexport'))
  served = export_lib.ExportedCleaner.load(str(tmp_path / 'linear.jaxexport'))
  ref = trained_linear.predict(record.witnesses)
  parts = [served.push(record.witnesses[a:a + 100]) for a in range(0, len(record), 100)]
  np.testing.assert_allclose(np.concatenate(parts), ref, atol=1e-4)


def test_export_widens_like_the_filter(trained, record, tmp_path):
  """A linear path over products (one lagged), bent witnesses, a modulated and a bent path: the
  exported program widens the witnesses as ``Products.widen`` does, the history of the lagged
  factor and of the path's taps across blocks."""
  norm = data_lib.Normalizer.fit(record.witnesses)
  products = volterra.Products([(0, 1, 5), (1, 1, 0)], norm, [(0, 2.0, 0.6), (1, 0.5, 0.4)],
                               [(1, 0, (0.0, 1.0, -0.5, 0.25, 0.0, 0.0, 0.0, 0.1))],
                               [(1, 1.3, (0.5, 0.3, 0.2, 0.1, 0.05), ((2.0, 0.5, 0.7),))])
  fir = dataclasses.replace(baselines.WienerFIR.fit([products.widened(record)], n_taps=8),
                            products=products)
  with_path = dataclasses.replace(trained, linear=fir)
  ref = with_path.predict(record.witnesses)
  export_lib.save_exported(with_path, str(tmp_path / 'widened.jaxexport'))
  served = export_lib.ExportedCleaner.load(str(tmp_path / 'widened.jaxexport'))
  parts = [served.push(record.witnesses[a:a + 3]) for a in range(0, 300, 3)]
  parts += [served.push(record.witnesses[300:])]
  np.testing.assert_allclose(np.concatenate(parts), ref, atol=1e-4)


def _iir_columns(kind: str, norm, fs: float) -> volterra.Products:
  """A widening of one column of ``kind`` whose filters are IIR (their history streams carry
  as ``max_lag`` samples): a fringe, a moving mode, an envelope."""
  from lstm_jax import envelopes, fringes, modes  # pylint: disable=import-outside-toplevel
  if kind == 'fringes':
    found = fringes.Fringe(1, (np.log(2.0), np.log(1.5), 2.0, -0.2, 0.0),
                           fringes.nested(np.linspace(-0.5, 0.5, 3 * 2 * 7).reshape(3, 2, 7)),
                           1.0)
    return volterra.Products([], norm, fringes=[(1, found.filters(fs), found.weights)])
  if kind == 'modes':
    found = modes.Mode(1, 0, (30.0, 2.0, 0.5, np.log(20.0), 0.2), (1.0, -0.4), 1.0)
    return volterra.Products([], norm, modes=[(1, 0, found.digital(fs))])
  found = envelopes.Envelope(1, (20.0, 40.0), 'resonance', 3.0, 0.3, (1.0, 0.8, 0.9),
                             tuple(np.linspace(-1.0, 1.0, 3 * 8)), 1.0)
  return volterra.Products([], norm, envelopes=[(1, found.filters(fs), found.weights)])


@pytest.mark.parametrize('kind,text', [('fringes', 'fringe(h*w1)'), ('modes', 'mode(w1; w0)'),
                                       ('envelopes', 'env(h*w1)')])
def test_iir_columns_stream_and_export_like_the_whole_file(trained, kind, text, tmp_path):
  """A linear path over a column of IIR filters (a fringe's phase path and readout, a moving
  mode's pole and lag, an envelope's band, detectors and low-passes): the column's math in
  ``jax.numpy`` over a history agrees with numpy's over the whole file, and so does numpy's
  given that history; the widening read back from its dict widens alike; the stream and the
  exported program (scans: its length is symbolic), block by block with their history, clean
  as the whole file does."""
  record = lstm_jax.seed_mock(fs=256.0, duration=12.0, seed=3)
  w = record.witnesses
  norm = data_lib.Normalizer.fit(w, 'standardize', 'witness channel')
  products = _iir_columns(kind, norm, record.fs)
  assert volterra.describe([], **{kind: getattr(products, kind)}) == text
  lag = products.max_lag
  column = products.widen(w)[:, -1]
  x = products.norm.take(products.factors).apply(w[:, products.factors])
  start = lag + 200
  from_jax = np.asarray(products.appended(jnp.asarray(x[None, start - lag:start + 500]),
                                          jnp)[0][0])
  np.testing.assert_allclose(from_jax, column[start:start + 500], rtol=0,
                             atol=2e-3 * column.std())
  np.testing.assert_allclose(products.widen(w[start:start + 500], w[:start])[:, -1],
                             column[start:start + 500], rtol=0, atol=1e-5 * column.std())
  again = volterra.Products.from_dict(products.to_dict())
  np.testing.assert_allclose(again.widen(w)[:, -1], column, rtol=1e-12, atol=1e-12)
  fir = dataclasses.replace(baselines.WienerFIR.fit([products.widened(record)], n_taps=8),
                            products=products)
  with_path = dataclasses.replace(trained, linear=fir)
  whole = with_path.predict(record.witnesses)
  stream = with_path.stream()
  parts = [stream.push(record.witnesses[a:a + 100]) for a in range(0, len(record), 100)]
  # the columns start from rest at the history's first sample: 1e-6 of a push left in them
  np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-4 * whole.std())
  export_lib.save_exported(with_path, str(tmp_path / f'{kind}.jaxexport'))
  served = export_lib.ExportedCleaner.load(str(tmp_path / f'{kind}.jaxexport'))
  parts = [served.push(record.witnesses[a:a + 100]) for a in range(0, len(record), 100)]
  np.testing.assert_allclose(np.concatenate(parts), whole, rtol=0, atol=1e-3 * whole.std())


def test_export_round_trip_of_a_gru(record, tmp_path):
  config = lstm_jax.Config(lstm_sizes=(8,), head_sizes=(8,), cell='gru')
  model = lstm_jax.build_model(config)
  params = model.init(jax.random.key(1), model.initialize_carry(1),
                      np.zeros((1, 4, 2), np.float32))['params']
  ident = data_lib.Normalizer(np.zeros(2, np.float32), np.ones(2, np.float32))
  gru = TrainedModel(config, params, ident, data_lib.Normalizer(np.zeros(1, np.float32),
                                                                np.ones(1, np.float32)), 2)
  served = export_lib.ExportedCleaner(export_lib.export_trained(gru).serialize())
  parts = [served.push(record.witnesses[a:a + 300]) for a in range(0, len(record), 300)]
  np.testing.assert_allclose(np.concatenate(parts), gru.predict(record.witnesses), atol=1e-5)
