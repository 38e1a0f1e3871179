"""Training on a recording read in blocks (lstm_jax.blockdata) against the same in memory."""
import dataclasses
import logging

import numpy as np
import pytest

from lstm_jax import baselines
from lstm_jax import blockdata
from lstm_jax import channels
from lstm_jax import data as data_lib
from lstm_jax import gw
from lstm_jax import train
from lstm_jax import volterra
from lstm_jax.config import Config

TARGET = gw.LIGO_TARGET


@pytest.fixture(scope='module')
def h5_path(tmp_path_factory):
  pytest.importorskip('h5py', reason="the gw extra is not installed: pip install -e '.[gw]'")
  path = str(tmp_path_factory.mktemp('blocks') / 'rec.h5')
  channels.save_recording(path, gw.ligo_mock(fs=256.0, duration=40.0, seed=3))
  return path


def _config(path, mode, **kw):
  return Config(data=path, target_channel=TARGET, read_in_blocks=mode, lstm_sizes=(6,),
                head_sizes=(8,), n_streams=2, chunk_len=64, bptt_len=64, num_steps=40,
                val_every=20, eval_chunk_len=128, linear_taps=8, linear_products=2,
                residual_taps=8, **kw)


def test_read_in_blocks_trains_to_the_in_memory_result(h5_path):
  """The same file, loaded whole and read in blocks: the same split, the same filters and
  normalizers (to rounding), the same chunks, so the same training and held-out figures."""
  whole, blocks = (train.train_and_evaluate(_config(h5_path, mode)) for mode in ('never',
                                                                                 'always'))
  assert 'read_in_blocks' in blocks and 'read_in_blocks' not in whole
  assert blocks['train_seconds_of_data'] == whole['train_seconds_of_data']
  assert blocks['heldout_seconds'] == whole['heldout_seconds']
  assert blocks['train']['linear']['products'] == whole['train']['linear']['products']
  np.testing.assert_allclose(blocks['train']['loss_last'], whole['train']['loss_last'],
                             rtol=1e-4)
  np.testing.assert_allclose(blocks['train']['validation']['history'],
                             whole['train']['validation']['history'], rtol=1e-4)
  for key in ('nr_db', 'band_nr_db', 'r2', 'asd_ratio_band_mean'):
    np.testing.assert_allclose(blocks['heldout'][key], whole['heldout'][key], rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_allclose(blocks['train_fit'][key], whole['train_fit'][key], rtol=1e-4,
                               atol=1e-5)
  np.testing.assert_allclose(blocks['gw']['bns_range_mpc']['cleaned'],
                             whole['gw']['bns_range_mpc']['cleaned'], rtol=1e-4)


def _stretch(path):
  reader = channels.open_reader(path, channels.Selection(target=TARGET))
  return reader, blockdata.Stretch(reader, 0, reader.n_samples)


def test_streamed_pieces_equal_their_in_memory_counterparts(h5_path):
  reader, stretch = _stretch(h5_path)
  rec = stretch.load()
  assert np.array_equal(stretch.witnesses[100:300], rec.witnesses[100:300])
  # A linear path with a lagged product: its output block by block, with the history before
  # each block, equals its output over the whole record.
  norm = data_lib.Normalizer.fit(rec.witnesses)
  products = volterra.Products([(0, 1, 3)], norm, [], [(0, 1, (1.0, 0.5, -0.25, 0.1, 0.05))])
  fir = baselines.WienerFIR.fit([products.widened(rec)], 12)
  fir = dataclasses.replace(fir, products=products)
  left = np.asarray(rec.target, np.float64) - fir.predict(rec.witnesses)
  pieces = [blockdata.target_block(stretch, a, min(len(rec), a + 1000), fir).target
            for a in range(0, len(rec), 1000)]
  np.testing.assert_allclose(np.concatenate(pieces), left, rtol=1e-12, atol=1e-12 * left.std())
  # The normalizers in one streaming pass of small blocks.
  input_norm, target_norm = blockdata.fit_normalizers([stretch.slice(0, 5000),
                                                      stretch.slice(5000, len(rec))], fir,
                                                     'standardize', 'standardize', block=777)
  ref_in = data_lib.Normalizer.fit(rec.witnesses)
  ref_tgt = data_lib.Normalizer.fit(np.concatenate([
      left[:5000], np.asarray(rec.target[5000:], np.float64)
      - fir.predict(rec.witnesses[5000:])]))
  for got, want in ((input_norm, ref_in), (target_norm, ref_tgt)):
    np.testing.assert_allclose(got.offset, want.offset, rtol=1e-12,
                               atol=1e-14 * float(want.scale.max()))
    np.testing.assert_allclose(got.scale, want.scale, rtol=1e-12)
  # The chunks read as the loop reaches them are make_streams' chunks.
  parts = [stretch.slice(0, 4000), stretch.slice(4000, len(rec))]
  feeder = blockdata.ChunkFeeder(parts, 3, 64, input_norm, target_norm, fir, window=5)
  records = [np.concatenate([input_norm.apply(p.load().witnesses), target_norm.apply(
      blockdata.target_block(p, 0, len(p), fir).target[:, None])], axis=1) for p in parts]
  streams = data_lib.make_streams(records, 3, 64)
  assert feeder.n_chunks == streams.shape[0]
  for k in (0, 4, 5, 11, streams.shape[0] - 1):
    x, y = feeder(k)
    np.testing.assert_allclose(x, streams[k, ..., :-1], atol=1e-6)
    np.testing.assert_allclose(y, streams[k, ..., -1:], atol=1e-5)
  reader.close()


def test_lag_sums_do_not_depend_on_how_many_bins_a_step_takes(rng):
  x, later = rng.standard_normal((5000, 3)), rng.standard_normal((5000, 4))
  whole = baselines.lag_sums(x, later, 40, segment=512, group=3)
  assert np.array_equal(baselines.lag_sums(x, later, 40, segment=512, group=3, bins=7), whole)
  # sum_s x[s, c] later[s + j, e] = sum_t x[t - j, c] later[t, e]
  want = np.einsum('tcj,te->cej', baselines.lagged(x, 40).reshape(5000, 3, 40), later)
  np.testing.assert_allclose(whole, want, atol=1e-9)


def test_gaps_found_streaming_and_the_validation_cap(tmp_path, caplog):
  pytest.importorskip('h5py', reason="the gw extra is not installed: pip install -e '.[gw]'")
  rec = gw.ligo_mock(fs=256.0, duration=40.0, seed=4)
  rec.witnesses[2560:2700, 1] = np.nan  # a gap across a block edge below
  path = str(tmp_path / 'gap.h5')
  channels.save_recording(path, rec)
  selection = channels.Selection(target=TARGET)
  want = channels.load_segments(path, selection)
  reader = channels.open_reader(path, selection)
  with caplog.at_level(logging.WARNING):
    got = blockdata.scan_segments(reader, block=2600)
  assert [(s.start, s.stop) for s in got] == [(0, 2560), (2700, len(rec))]
  assert [len(s) for s in got] == [len(s) for s in want]
  assert got[1].t0 == want[1].t0 and 'gap (NaN) from GPS' in caplog.text
  train_part, heldout, validation, _, validation_lead = channels.split_segments(
      got, 0.2, 0.3, 100)
  n_val = len(validation)
  train_part, validation, validation_lead = blockdata.cap_validation(
      train_part, validation, validation_lead, 100, most=1000)
  assert isinstance(validation, data_lib.Recording) and len(validation) == 1000
  assert train_part[-1].stop == got[1].start + (len(got[1]) - len(heldout)) - 1000
  assert sum(len(s) for s in train_part) + 1000 + len(heldout) == len(got[0]) + len(got[1])
  assert len(validation_lead) == 100 and n_val > 1000
  reader.close()


def test_auto_reads_a_small_file_whole_and_validation_by_chunks_scores_the_same(h5_path, rng):
  small = _config(h5_path, 'auto')
  assert train._split_in_blocks(small) is None  # pylint: disable=protected-access
  assert train.in_blocks(train.load_split(_config(h5_path, 'always')))
  config = _config(h5_path, 'never')
  model = train.build_model(config)
  rec = data_lib.Recording(rng.standard_normal((3000, 4)).astype(np.float32),
                           rng.standard_normal(3000), 256.0)
  lead = rng.standard_normal((500, 4)).astype(np.float32)
  norm = data_lib.Normalizer.fit(rec.witnesses)
  target_norm = data_lib.Normalizer.fit(rec.target)
  import jax  # pylint: disable=g-import-not-at-top
  params = model.init(jax.random.key(0), model.initialize_carry(1),
                      np.zeros((1, 64, 4), np.float32))['params']
  whole = train.make_validator(model, rec, norm, target_norm, 128, lead)(params)
  by_chunks = train.make_validator(model, rec, norm, target_norm, 128, lead, piece=100)(params)
  np.testing.assert_allclose(float(by_chunks), float(whole), rtol=1e-5)


@pytest.mark.parametrize('kind', ['gwf', 'npy'])
def test_frames_and_npy_pairs_read_in_blocks(tmp_path, kind):
  rec = gw.ligo_mock(fs=256.0, duration=24.0, seed=5)
  if kind == 'gwf':
    pytest.importorskip('gwpy.timeseries', reason="the gw extra is not installed")
    pytest.importorskip('lalframe', reason='no GWF frame library (lalsuite)')
    path = str(tmp_path / 'rec.gwf')
    channels.save_recording(path, rec, block=1024)  # a frame per 4 s
    config = Config(data=path, target_channel=TARGET, read_in_blocks='always')
  else:
    path = f'{tmp_path}/w.npy,{tmp_path}/t.npy'
    np.save(f'{tmp_path}/w.npy', rec.witnesses)
    np.save(f'{tmp_path}/t.npy', rec.target)
    config = Config(data=path, fs=256.0, read_in_blocks='always')
  split = train.load_split(config)
  assert train.in_blocks(split)
  whole = train.load_split(config.replace(read_in_blocks='never'))
  assert [len(s) for s in split.train] == [len(r) for r in whole.train]
  got = split.heldout.read(500, 1000)
  np.testing.assert_array_equal(got.witnesses, whole.heldout.witnesses[500:1000])
  np.testing.assert_array_equal(got.target, whole.heldout.target[500:1000])
  np.testing.assert_array_equal(split.heldout_lead, whole.heldout_lead)
