"""Data: the mock, loaders, validation errors that name the problem, normalizers, streams."""
import numpy as np
import pytest

from lstm_jax import data as data_lib
from lstm_jax.data import DataError


def test_seed_mock_formula_and_time_axis():
  rec = data_lib.seed_mock(fs=100.0, duration=2.0, start=5.0, seed=3)
  t = 5.0 + np.arange(200) / 100.0
  n = rec.witnesses[:, 1]
  np.testing.assert_allclose(rec.witnesses[:, 0], np.sin(10 * t), atol=1e-6)
  np.testing.assert_allclose(rec.noise, np.sin(10 * t) * n, atol=1e-6)
  np.testing.assert_allclose(rec.target, np.sin(t) + rec.noise, atol=1e-6)
  # A new seed draws new noise; the same seed the same.
  assert not np.allclose(data_lib.seed_mock(100.0, 2.0, 5.0, 4).witnesses[:, 1], n)
  np.testing.assert_array_equal(data_lib.seed_mock(100.0, 2.0, 5.0, 3).witnesses, rec.witnesses)


def write_npz(path, **arrays):
  np.savez(path, **arrays)
  return str(path)


def test_load_npz_npy_csv_agree(tmp_path):
  rec = data_lib.seed_mock(fs=64.0, duration=1.0, seed=1)
  npz = tmp_path / 'r.npz'
  data_lib.save_npz(str(npz), rec)
  a = data_lib.load_recording(str(npz))
  assert a.fs == 64.0 and a.witnesses.shape == (64, 2)
  np.testing.assert_array_equal(a.noise, rec.noise)
  np.save(tmp_path / 'w.npy', rec.witnesses)
  np.save(tmp_path / 't.npy', rec.target)
  b = data_lib.load_recording(f'{tmp_path}/w.npy,{tmp_path}/t.npy', fs=64.0)
  np.testing.assert_array_equal(b.witnesses, a.witnesses)
  table = np.column_stack([np.arange(64) / 64.0, rec.target, rec.witnesses])
  np.savetxt(tmp_path / 'r.csv', table, delimiter=',', header='time,target,sine,n', comments='')
  c = data_lib.load_recording(str(tmp_path / 'r.csv'), fs=64.0)
  np.testing.assert_allclose(c.witnesses, a.witnesses, atol=1e-6)
  np.testing.assert_allclose(c.target, a.target, atol=1e-6)


@pytest.mark.parametrize('arrays, message', [
    (dict(witnesses=np.ones((10, 2)), target=np.ones(9)), 'target has 9 samples but witnesses have 10'),
    (dict(witnesses=np.ones((10, 2, 1)), target=np.ones(10)), r'witnesses must be \(T, C\)'),
    (dict(witnesses=np.ones((10, 2)), target=np.ones((10, 2))), r'target must be \(T,\)'),
    (dict(witnesses=np.ones((10, 2))), "missing key 'target'"),
    (dict(target=np.ones(10)), "missing key 'witnesses'"),
])
def test_bad_arrays_are_named(tmp_path, arrays, message):
  path = write_npz(tmp_path / 'bad.npz', **arrays)
  with pytest.raises(DataError, match=message) as err:
    data_lib.load_recording(path)
  assert 'bad.npz' in str(err.value)


@pytest.mark.parametrize('where, value, message', [
    ('target', np.nan, 'target has 1 non-finite values; first NaN at sample 7'),
    ('witnesses', np.inf, 'witnesses has 1 non-finite values; first Inf at channel 1, sample 7'),
])
def test_non_finite_is_located(tmp_path, where, value, message):
  arrays = dict(witnesses=np.zeros((20, 2)), target=np.zeros(20))
  if where == 'target':
    arrays['target'][7] = value
  else:
    arrays['witnesses'][7, 1] = value
  with pytest.raises(DataError, match=message):
    data_lib.load_recording(write_npz(tmp_path / 'x.npz', **arrays))


def test_missing_and_unsupported_files(tmp_path):
  with pytest.raises(DataError, match='nope.npz: no such file'):
    data_lib.load_recording(str(tmp_path / 'nope.npz'))
  (tmp_path / 'x.txt').write_text('1,2\n')
  with pytest.raises(DataError, match='unsupported data path'):
    data_lib.load_recording(str(tmp_path / 'x.txt'))
  (tmp_path / 'junk.npz').write_bytes(b'not a zip file')
  with pytest.raises(DataError, match='junk.npz: cannot read as .npz'):
    data_lib.load_recording(str(tmp_path / 'junk.npz'))


def test_normalizer_round_trip_and_constant_channel(rng):
  x = rng.normal(3.0, 2.0, size=(500, 3)).astype(np.float32)
  for method in ('standardize', 'minmax', 'none'):
    norm = data_lib.Normalizer.fit(x, method)
    np.testing.assert_allclose(norm.invert(norm.apply(x)), x, atol=1e-5)
    again = data_lib.Normalizer.from_dict(norm.to_dict())
    np.testing.assert_array_equal(again.apply(x), norm.apply(x))
  z = data_lib.Normalizer.fit(x).apply(x)
  np.testing.assert_allclose(z.mean(0), 0, atol=1e-5)
  np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
  x[:, 2] = 4.0
  with pytest.raises(DataError, match='channel 2 is constant'):
    data_lib.Normalizer.fit(x, what='witness channel')


def test_normalizer_takes_physical_units(rng):
  # Strain is ~1e-21: it varies, it is not constant; standardized it is like any other channel.
  x = rng.normal(size=(500, 2)) * np.array([1e-21, 3e-18]) + np.array([0.0, 1e-17])
  norm = data_lib.Normalizer.fit(x.astype(np.float32))
  z = norm.apply(x)
  np.testing.assert_allclose(z.std(0), 1, atol=1e-4)
  np.testing.assert_allclose(norm.invert(z), x, rtol=1e-4, atol=1e-25)
  # A variation float64 cannot resolve beside the channel's mean is named as such.
  x[:, 1] = 1e4 + 3e-12 * rng.normal(size=500)
  with pytest.raises(DataError, match='channel 1 varies by .*below float64 resolution'):
    data_lib.Normalizer.fit(x, what='witness channel')


def test_offsets_keep_their_resolution_from_file_to_prediction(rng, tmp_path):
  # DC-coupled sensors: 1e4 +- 1e-3 and -3e5 +- 1e-3. Cast to float32 the first takes 8
  # values and the second one; loaded, scaled and inverted in float64 they are like any other.
  wiggle = rng.normal(size=(4000, 2))
  offsets = np.array([1e4, -3e5])
  path = str(tmp_path / 'offsets.npz')
  np.savez(path, witnesses=offsets + 1e-3 * wiggle, target=2e6 + 1e-2 * wiggle[:, 0], fs=64.0)
  rec = data_lib.load_recording(path)
  norm = data_lib.Normalizer.fit(rec.witnesses)
  z = norm.apply(rec.witnesses)
  assert z.dtype == np.float32
  expected = (wiggle - wiggle.mean(0)) / wiggle.std(0)
  np.testing.assert_allclose(z, expected, atol=1e-5)
  target_norm = data_lib.Normalizer.fit(rec.target)
  back = target_norm.invert(target_norm.apply(rec.target[:, None]))[:, 0]
  assert back.dtype == np.float64
  np.testing.assert_allclose(back - 2e6, 1e-2 * wiggle[:, 0], atol=1e-7)
  # Scaled in blocks, the same numbers; float32 samples stay float32 (no detail to keep).
  np.testing.assert_array_equal(norm.apply(rec.witnesses, block=7), z)
  np.savez(path, witnesses=wiggle.astype(np.float32), target=wiggle[:, 0].astype(np.float32),
           fs=64.0)
  assert data_lib.load_recording(path).witnesses.dtype == np.float32


def test_streams_are_continuous_and_stay_inside_records():
  # Two records whose samples are their own (record, index) labels.
  recs = [np.stack([np.full(1000, r), np.arange(1000)], 1).astype(np.float32) for r in (0, 1)]
  chunks = data_lib.make_streams(recs, n_streams=4, chunk_len=64)  # (N, B, T, 2)
  n, b, t, _ = chunks.shape
  assert b == 4 and t == 64 and n == 7  # 2 * floor(1000 / (7*64)) = 4 streams of 448
  streams = chunks.swapaxes(0, 1).reshape(b, n * t, 2)
  for s in streams:
    assert np.all(s[:, 0] == s[0, 0])  # one record per stream
    np.testing.assert_array_equal(np.diff(s[:, 1]), 1)  # chunk k continues chunk k-1
  starts = sorted((s[0, 0], s[0, 1]) for s in streams)
  assert starts == [(0, 0), (0, 448), (1, 0), (1, 448)]


def test_record_too_short_for_one_chunk():
  with pytest.raises(DataError, match='training data too short: 100 samples'):
    data_lib.make_streams([np.zeros((100, 3))], n_streams=2, chunk_len=64)


def test_streams_that_fit_shrinks_then_refuses():
  assert data_lib.streams_that_fit([100_000, 100_000], 32, 256) == 32
  assert data_lib.streams_that_fit([1000], 32, 256) == 3  # 3 whole chunks
  assert data_lib.streams_that_fit([1000], 32, 256, multiple_of=2) == 2
  with pytest.raises(DataError, match='100 samples in 1 record'):
    data_lib.streams_that_fit([100], 32, 256)
