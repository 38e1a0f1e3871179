"""The gravitational-wave workflow: channels in blocks, gaps, sampling-rate rules, the BNS range,
the frequency-domain Wiener filter, the doctor's sensing check, and (with the ``gw`` extra) the
two CLIs on .h5 and .gwf files with LIGO channel names, and the injection report."""
import json
import logging
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.constants
import scipy.signal

from lstm_jax import baselines
from lstm_jax import channels
from lstm_jax import data as data_lib
from lstm_jax import doctor
from lstm_jax import gw
from lstm_jax import metrics
from lstm_jax import spectra
from lstm_jax.data import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ['--lstm_sizes=6', '--head_sizes=8', '--n_streams=2', '--chunk_len=64', '--bptt_len=64',
        '--num_steps=30', '--eval_chunk_len=128', '--residual_taps=16']
TARGET = gw.LIGO_TARGET
CLEAN = f'{TARGET}_CLEAN'


def needs_h5py():
  return pytest.importorskip('h5py', reason="the gw extra is not installed: pip install -e '.[gw]'")


def needs_gwpy():
  pytest.importorskip('h5py', reason="the gw extra is not installed: pip install -e '.[gw]'")
  return pytest.importorskip('gwpy.timeseries',
                             reason="the gw extra is not installed: pip install -e '.[gw]'")


def run(module, *args):
  env = dict(os.environ, JAX_PLATFORMS='cpu')
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT, env=env,
                        capture_output=True, text=True, timeout=600)


def one_line_error(proc, *needles):
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert 'Traceback' not in proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 1, proc.stderr
  for needle in needles:
    assert needle in errors[0], errors[0]
  return errors[0]


# --------------------------------------------------------------------------- pieces

@pytest.mark.parametrize('up, down', [(1, 4), (4, 1), (2, 3), (16, 1)])
def test_resampling_by_blocks_equals_resample_poly_on_the_whole(rng, up, down):
  x = rng.standard_normal(3000)
  whole = scipy.signal.resample_poly(x, up, down)
  n = len(whole)
  bounds = [0, 1, n // 7, n // 2, n - 5, n]
  for a, b in zip(bounds[:-1], bounds[1:]):
    got = channels._resampled(lambda i, j: x[i:j], len(x), up, down, a, b)  # pylint: disable=protected-access
    np.testing.assert_allclose(got, whole[a:b], rtol=0, atol=1e-12)


def test_normalizer_fit_in_blocks_equals_the_whole(rng):
  x = (rng.standard_normal((5000, 3)) * [1e-21, 3.0, 2e5] + [0.0, -7.0, 1e6]).astype(np.float64)
  for method in ('standardize', 'minmax', 'none'):
    whole = data_lib.Normalizer.fit(x, method)
    blocks = data_lib.Normalizer.fit_blocks((x[a:a + 333] for a in range(0, len(x), 333)), method)
    np.testing.assert_allclose(blocks.offset, whole.offset, rtol=1e-13)
    np.testing.assert_allclose(blocks.scale, whole.scale, rtol=1e-12)
  with pytest.raises(DataError, match='channel 1 is constant'):
    data_lib.Normalizer.fit_blocks([np.ones((10, 2)) * [[0, 5]] + [[1, 0]] * np.arange(10)[:, None],
                                    np.ones((4, 2)) * [[3, 5]]])


def test_streaming_welch_and_metrics_equal_the_whole(rng):
  x = rng.standard_normal((6000, 2)).cumsum(0) * 0.01 + rng.standard_normal((6000, 2))
  welch = spectra.WelchAccumulator(100.0, 256, 2)
  for a in range(0, len(x), 777):
    welch.add(x[a:a + 777])
  f, psd = welch.psd()
  f_ref, psd_ref = scipy.signal.welch(x, fs=100.0, nperseg=256, axis=0)
  np.testing.assert_allclose(f, f_ref)
  np.testing.assert_allclose(psd, psd_ref, rtol=1e-12)
  rec = data_lib.seed_mock(fs=128.0, duration=30.0, seed=3)
  prediction = 0.9 * rec.noise + 0.01 * rng.standard_normal(len(rec))
  for noise in (rec.noise, None):
    whole = metrics.evaluate(data_lib.Recording(rec.witnesses, rec.target, rec.fs, noise),
                             prediction, (5, 40))
    stream = spectra.StreamingEvaluation(rec.fs, len(rec), (5, 40), noise is not None)
    for a in range(0, len(rec), 1000):
      stream.add(rec.target[a:a + 1000], prediction[a:a + 1000],
                 None if noise is None else noise[a:a + 1000])
    got = stream.result()
    assert got.keys() == whole.keys()
    for key, value in whole.items():
      if isinstance(value, float):
        np.testing.assert_allclose(got[key], value, rtol=1e-9, err_msg=key)


def test_bns_range_against_the_formula_integrated_by_hand():
  # A white PSD S0 makes the integral closed-form: int f^(-7/3) df = 3/4 (a^(-4/3) - b^(-4/3)).
  # Constants here come from scipy.constants and the IAU solar mass parameter, not lstm_jax.gw.
  s0, fmin = 1e-46, 10.0
  f = np.arange(0.0, 2048.0, 1.0 / 64)
  m_sun = 1.32712440018e20 / scipy.constants.G  # GM_sun / G
  m_chirp = (1.4 * 1.4) ** 0.6 / 2.8 ** 0.2 * m_sun
  f_isco = scipy.constants.c ** 3 / (scipy.constants.G * 6 ** 1.5 * np.pi * 2.8 * m_sun)
  integral = 0.75 * (fmin ** (-4 / 3) - f_isco ** (-4 / 3))
  r2 = (1.77 ** 2 * 5 * scipy.constants.c ** (1 / 3)
        * (m_chirp * scipy.constants.G / scipy.constants.c ** 2) ** (5 / 3)
        / (96 * np.pi ** (4 / 3) * 64.0)) * integral / s0
  by_hand = np.sqrt(r2) / (1e6 * scipy.constants.parsec)
  got = gw.bns_range_mpc(f, np.full_like(f, s0), fmin)
  np.testing.assert_allclose(got, by_hand, rtol=2e-4)  # trapezoid rule, 1/64 Hz bins
  # Halving the ASD doubles the range; the horizon is 2.26 times the range.
  np.testing.assert_allclose(gw.bns_range_mpc(f, np.full_like(f, s0 / 4), fmin), 2 * got)
  np.testing.assert_allclose(gw.bns_range_mpc(f, np.full_like(f, s0), fmin, horizon=True),
                             got * 4 / 1.77)


def test_bns_range_equals_gwpy_sensemon_range():
  frequencyseries = pytest.importorskip(
      'gwpy.frequencyseries', reason="the gw extra is not installed: pip install -e '.[gw]'")
  from gwpy.astro import sensemon_range  # pylint: disable=g-import-not-at-top
  f = np.arange(0, 2048.25, 0.25)
  psd = (1e-23 * (1 + (30 / np.maximum(f, 1)) ** 4 + (f / 300) ** 2)) ** 2
  series = frequencyseries.FrequencySeries(psd, f0=0, df=0.25, unit='1/Hz')
  for fmin in (None, 10.0, 30.0):
    np.testing.assert_allclose(gw.bns_range_mpc(f, psd, fmin),
                               sensemon_range(series, fmin=fmin).value, rtol=1e-12)


def test_figures_of_merit_outside_the_band():
  f = np.arange(0, 129.0)
  psd = np.full_like(f, 1e-44)
  cleaned = psd.copy()
  cleaned[(f >= 50) & (f <= 70)] *= 0.25  # the band: half the ASD
  cleaned[100] *= 1.0201  # 1% more ASD at 100 Hz
  out = gw.figures_of_merit(f, psd, cleaned, (50, 70), strain=True)
  np.testing.assert_allclose(out['outside_band_max_asd_change'], 0.01, rtol=1e-9)
  assert out['outside_band_max_asd_change_hz'] == 100.0
  np.testing.assert_allclose(out['outside_band_max_asd_increase'], 0.01, rtol=1e-9)
  cleaned[100] = psd[100] * 0.9 ** 2  # a fall: a change, no increase
  out = gw.figures_of_merit(f, psd, cleaned, (50, 70), strain=True)
  np.testing.assert_allclose(out['outside_band_max_asd_change'], 0.1, rtol=1e-9)
  assert out['outside_band_max_asd_increase'] == 0.0
  assert out['bns_range_mpc']['cleaned'] > out['bns_range_mpc']['target']
  assert 'bns_range_mpc' not in gw.figures_of_merit(f, psd, cleaned, (50, 70), strain=False)


def test_frequency_domain_wiener_matches_the_time_domain_one(rng):
  n_ch, n_taps, n = 3, 16, 40000
  x = rng.standard_normal((n, n_ch))
  x[:, 2] = scipy.signal.lfilter([1.0], [1.0, -0.6], x[:, 2])  # one coloured witness
  taps = rng.standard_normal((n_ch, n_taps)) * np.exp(-np.arange(n_taps) / 4)
  y = sum(scipy.signal.lfilter(taps[c], [1.0], x[:, c]) for c in range(n_ch))
  y = y + 0.3 * rng.standard_normal(n)
  train = data_lib.Recording(x[:30000].astype(np.float32), y[:30000], 100.0)
  time_fir = baselines.WienerFIR.fit([train], n_taps)
  freq_fir = baselines.WienerFIR.fit_frequency([train], n_taps)
  a, b = time_fir.predict(x[30000:]), freq_fir.predict(x[30000:])
  assert np.std(a - b) < 0.005 * np.std(a)
  np.testing.assert_allclose(freq_fir.weights, time_fir.weights, atol=0.01)


def test_doctor_names_the_witness_that_senses_the_target_and_no_other():
  def findings(rec):
    x = np.column_stack([rec.witnesses, rec.target])
    z = data_lib.Normalizer.fit(x).apply(x)
    return doctor.check_sensing_witnesses([z], rec.witnesses.shape[1], rec.witness_names, rec.fs)

  sensing = gw.ligo_mock(fs=256.0, duration=96.0, seed=4, sensing_gain=0.05, sensing_noise=0.05)
  found = findings(sensing)
  assert [f['check'] for f in found] == ['witness_senses_target']
  assert gw.SENSING_CHANNEL in found[0]['message']
  assert f'--exclude_channels={gw.SENSING_CHANNEL}' in found[0]['message']
  for name in gw.LIGO_MOCK_CHANNELS:  # the noise sources, linear and causal among them
    assert name not in found[0]['message']
  assert not findings(gw.ligo_mock(fs=256.0, duration=96.0, seed=4))


def test_split_segments_cuts_as_one_recording_and_never_across_a_gap():
  rec = data_lib.seed_mock(fs=64.0, duration=40.0)
  train, heldout, validation, heldout_lead, validation_lead = channels.split_segments(
      [rec], 0.25, 0.1, 100)
  cut, val_cut = 1920, 1920 - 192
  np.testing.assert_array_equal(train[0].target, rec.target[:val_cut])
  np.testing.assert_array_equal(heldout.target, rec.target[cut:])
  np.testing.assert_array_equal(validation.target, rec.target[val_cut:cut])
  np.testing.assert_array_equal(heldout_lead, rec.witnesses[cut - 100:cut])
  np.testing.assert_array_equal(validation_lead, rec.witnesses[val_cut - 100:val_cut])
  # Three segments: the held-out part spans the last gap and keeps its longer piece.
  segments = [rec.slice(0, 1000), rec.slice(1100, 2200), rec.slice(2300, 2560)]
  train, heldout, validation, heldout_lead, _ = channels.split_segments(segments, 0.2, 0.1, 50)
  assert [len(r) for r in train] == [1000, 699]
  np.testing.assert_array_equal(heldout.target, rec.target[2300:2560])
  assert heldout.t0 == pytest.approx(2300 / 64.0)
  np.testing.assert_array_equal(heldout_lead, rec.witnesses[2300:2300])  # no lead across a gap
  np.testing.assert_array_equal(validation.target, rec.target[1799:1988])


# --------------------------------------------------------------------------- sampling rates

def test_sampling_rate_is_stated_or_given_never_defaulted(tmp_path):
  w, t = np.random.default_rng(0).standard_normal((2, 200))
  path = str(tmp_path / 'r.npz')
  np.savez(path, witnesses=w[:, None], target=t)
  with pytest.raises(DataError, match='r.npz: the file states no sampling rate; give it with'):
    data_lib.load_recording(path)
  assert data_lib.load_recording(path, fs=32.0).fs == 32.0
  np.savez(path, witnesses=w[:, None], target=t, fs=64.0)
  assert data_lib.load_recording(path).fs == 64.0
  assert data_lib.load_recording(path, fs=64.0).fs == 64.0
  with pytest.raises(DataError, match=r'states fs = 64 Hz but --fs=32; --fs only fills in'):
    data_lib.load_recording(path, fs=32.0)
  for bad in (0.0, np.nan, np.inf):
    np.savez(path, witnesses=w[:, None], target=t, fs=bad)
    with pytest.raises(DataError, match='states the sampling rate fs = .*give the true one'):
      data_lib.load_recording(path)
    assert data_lib.load_recording(path, fs=16.0).fs == 16.0
  np.savetxt(tmp_path / 'r.csv', np.column_stack([w, t]), delimiter=',')
  with pytest.raises(DataError, match='r.csv: the file states no sampling rate'):
    data_lib.load_recording(str(tmp_path / 'r.csv'))
  with pytest.raises(DataError, match='--fs must be a positive number'):
    data_lib.load_recording(str(tmp_path / 'r.csv'), fs=-1.0)


# --------------------------------------------------------------------------- files by channel

def _h5(path, rates=None, seconds=8.0, t0=1e9, nan=None):
  """An HDF5 file in gwpy's layout: the target and three LIGO-named witnesses."""
  h5py = needs_h5py()
  rates = rates or {}
  rng = np.random.default_rng(1)
  names = [TARGET, 'H1:PEM-CS_MAINSMON_EBAY_1_DQ', 'H1:ASC-CHARD_P_OUT_DQ', 'H1:ASC-DHARD_Y_OUT_DQ']
  with h5py.File(path, 'w') as f:
    for name in names:
      fs = rates.get(name, 256.0)
      x = rng.standard_normal(int(seconds * fs))
      if nan and name == names[1]:
        x[int(nan[0] * fs):int(nan[1] * fs)] = np.nan
      ds = f.create_dataset(name, data=x)
      ds.attrs.update(name=name, x0=t0, dx=1.0 / fs, unit='strain' if name == TARGET else '')
  return str(path), names


def test_channel_selection_and_its_errors(tmp_path):
  path, names = _h5(tmp_path / 'r.h5')
  rec = data_lib.load_recording(path, selection=channels.Selection(target=TARGET))
  assert rec.witness_names == tuple(sorted(names[1:])) and rec.target_name == TARGET
  assert rec.fs == 256.0 and rec.t0 == 1e9 and rec.target_unit == 'strain'
  listed = tmp_path / 'witnesses.txt'
  listed.write_text(f'# mains first\n{names[1]}\n\n{names[3]}\n')
  pick = channels.Selection(target=TARGET, witnesses=channels.parse_names(f'@{listed}'),
                            gps_start=1e9 + 2, gps_end=1e9 + 6)
  rec = data_lib.load_recording(path, selection=pick)
  assert rec.witness_names == (names[1], names[3]) and len(rec) == 4 * 256
  assert rec.t0 == 1e9 + 2
  rec = data_lib.load_recording(path, selection=channels.Selection(
      target=TARGET, exclude=(names[2],)))
  assert names[2] not in rec.witness_names and len(rec.witness_names) == 2
  bad = [(channels.Selection(), 'name the target channel with --target_channel; the file holds 4'),
         (channels.Selection(target=TARGET, witnesses=('H1:NOPE', 'H1:ALSO_NOPE')),
          'no channel H1:NOPE, H1:ALSO_NOPE; the file holds 4'),
         (channels.Selection(target='H1:GDS-NOPE'), 'no channel H1:GDS-NOPE'),
         (channels.Selection(target=TARGET, gps_start=1e9 - 5), 'is outside the file\'s data'),
         (channels.Selection(target=TARGET, gps_end=1e9 + 9), 'is outside the file\'s data')]
  for selection, message in bad:
    with pytest.raises(DataError, match=message.replace('(', r'\(')):
      data_lib.load_recording(path, selection=selection)


def test_rates_differ_error_unless_resampled(tmp_path):
  path, names = _h5(tmp_path / 'r.h5', {'H1:ASC-CHARD_P_OUT_DQ': 64.0})
  with pytest.raises(DataError, match=r'channels at different rates \(.*H1:ASC-CHARD_P_OUT_DQ '
                                      r'64 Hz.*256 Hz.*\); give --resample_to=HZ'):
    data_lib.load_recording(path, selection=channels.Selection(target=TARGET))
  selection = channels.Selection(target=TARGET, resample_to=256.0)
  rec = data_lib.load_recording(path, selection=selection)
  raw = channels._Hdf5File(path)  # pylint: disable=protected-access
  slow = raw.read('H1:ASC-CHARD_P_OUT_DQ', 0, 512)
  k = rec.witness_names.index('H1:ASC-CHARD_P_OUT_DQ')
  np.testing.assert_allclose(rec.witnesses[:, k], scipy.signal.resample_poly(slow, 4, 1),
                             atol=1e-12)
  # Read in blocks, the same samples.
  reader = channels.open_reader(path, selection)
  blocks = np.concatenate([b.witnesses for _, b in reader.blocks(300)])
  np.testing.assert_allclose(blocks, rec.witnesses, atol=1e-12)
  raw.close()
  reader.close()


def test_a_gap_is_a_segment_boundary(tmp_path, caplog):
  path, _ = _h5(tmp_path / 'r.h5', nan=(3.0, 3.5))
  with caplog.at_level(logging.WARNING):
    segments = channels.load_segments(path, channels.Selection(target=TARGET))
  assert [len(s) for s in segments] == [768, 1152]
  assert segments[1].t0 == 1e9 + 3.5
  assert 'gap (NaN) from GPS 1000000003.000000 to 1000000003.500000' in caplog.text
  with pytest.raises(DataError, match='hold NaN'):
    data_lib.load_recording(path, selection=channels.Selection(target=TARGET))


# --------------------------------------------------------------------------- the CLIs

@pytest.fixture(scope='module')
def gw_files(tmp_path_factory):
  """A training .h5 and a later recording as .h5 and .gwf, LIGO names, a sensing witness; a
  model trained on the .h5 through the CLI."""
  needs_gwpy()
  root = tmp_path_factory.mktemp('gw')
  train = gw.ligo_mock(fs=256.0, duration=48.0, seed=1, sensing_gain=0.05, sensing_noise=0.05)
  later = gw.ligo_mock(fs=256.0, duration=24.0, seed=2, t0=1e9 + 48, sensing_gain=0.05,
                       sensing_noise=0.05)
  channels.save_recording(str(root / 'train.h5'), train)
  channels.save_recording(str(root / 'later.h5'), later)
  channels.save_recording(str(root / 'later.gwf'), later, block=1024)  # a frame per 4 s
  work = root / 'work'
  proc = run('experiments.noise_regression', f'--data={root}/train.h5',
             f'--target_channel={TARGET}', f'--workdir={work}', *TINY)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return root, later, proc.stderr


def test_train_on_h5_then_clean_h5_and_gwf_read_back_with_gwpy(gw_files):
  from gwpy.io.gwf import get_channel_names  # pylint: disable=g-import-not-at-top
  from gwpy.timeseries import TimeSeriesDict  # pylint: disable=g-import-not-at-top
  root, later, log = gw_files
  assert f'[witness_senses_target]: witness {gw.SENSING_CHANNEL}' in log
  metrics_json = json.loads((root / 'work' / 'metrics.json').read_text())
  assert metrics_json['gw']['bns_range_mpc']['target'] > 0
  assert 'outside_band_max_asd_change' in metrics_json['gw']
  inputs = json.loads((root / 'work' / 'model' / 'inputs.json').read_text())
  assert inputs['fs'] == 256.0 and inputs['target_name'] == TARGET
  outputs = {}
  for source, out in (('later.gwf', 'clean.h5'), ('later.h5', 'clean.gwf'),
                      ('later.h5', 'clean.npz')):
    proc = run('experiments.clean', f'--model_dir={root}/work', f'--input={root}/{source}',
               f'--output={root}/{out}')
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs[out] = proc
  npz = np.load(root / 'clean.npz')
  for name in ('clean.h5', 'clean.gwf'):
    path = str(root / name)
    names = None if name.endswith('.h5') else get_channel_names(path)
    back = TimeSeriesDict.read(path) if names is None else TimeSeriesDict.read(path, names)
    assert set(back) == {CLEAN, f'{TARGET}_PREDICTION'}
    cleaned = back[CLEAN]
    assert cleaned.t0.value == later.t0 and cleaned.sample_rate.value == later.fs
    assert len(cleaned) == len(later) and str(cleaned.unit) == 'strain'
    np.testing.assert_allclose(cleaned.value, later.target - npz['prediction'], rtol=0,
                               atol=1e-12 * np.abs(later.target).max())
    np.testing.assert_allclose(back[f'{TARGET}_PREDICTION'].value, npz['prediction'], rtol=0,
                               atol=1e-12 * np.abs(later.target).max())
  report = json.loads(outputs['clean.npz'].stdout[:outputs['clean.npz'].stdout.rindex('}') + 1])
  assert report['gw']['bns_range_mpc']['cleaned'] > 0


def test_clean_refuses_bad_input_in_one_line_and_writes_nothing(gw_files, tmp_path):
  from lstm_jax import cleaning  # pylint: disable=g-import-not-at-top
  root, later, _ = gw_files
  out = tmp_path / 'out.h5'
  fewer = data_lib.Recording(later.witnesses[:, :5], later.target, later.fs, None, 'x',
                             t0=later.t0, witness_names=later.witness_names[:5],
                             target_name=TARGET, target_unit='strain')
  channels.save_recording(str(tmp_path / 'fewer.h5'), fewer)
  line = one_line_error(run('experiments.clean', f'--model_dir={root}/work',
                            f'--input={tmp_path}/fewer.h5', f'--output={out}'), 'no channel')
  for name in gw.LIGO_MOCK_CHANNELS[5:] + (gw.SENSING_CHANNEL,):
    assert name in line
  slow = data_lib.Recording(later.witnesses[::2], later.target[::2], 128.0, None, 'x',
                            t0=later.t0, witness_names=later.witness_names, target_name=TARGET)
  channels.save_recording(str(tmp_path / 'slow.h5'), slow)
  with pytest.raises(DataError, match='sampled at 128 Hz, but the model .* trained at 256 Hz'):
    cleaning.clean_file(str(root / 'work'), str(tmp_path / 'slow.h5'), str(out))
  with pytest.raises(DataError, match="outside the file's data"):
    cleaning.clean_file(str(root / 'work'), str(root / 'later.h5'), str(out),
                        selection=channels.Selection(gps_end=2e9))
  assert not out.exists() and not [p for p in os.listdir(tmp_path) if '.tmp' in p]


def test_clean_across_a_gap_restarts_the_carry(gw_files, tmp_path, caplog):
  from lstm_jax import cleaning  # pylint: disable=g-import-not-at-top
  from lstm_jax.inference import TrainedModel  # pylint: disable=g-import-not-at-top
  root, later, _ = gw_files
  witnesses = np.array(later.witnesses)
  witnesses[2000:2300] = np.nan
  channels.save_recording(str(tmp_path / 'gap.h5'),
                          data_lib.Recording(witnesses, later.target, later.fs, None, 'gap',
                                             t0=later.t0, witness_names=later.witness_names,
                                             target_name=TARGET, target_unit='strain'))
  with caplog.at_level(logging.WARNING):
    cleaning.clean_file(str(root / 'work'), str(tmp_path / 'gap.h5'), str(tmp_path / 'gap.npz'))
  assert 'gap (NaN) from GPS 1000000055.812500 to 1000000056.984375' in caplog.text
  prediction = np.load(tmp_path / 'gap.npz')['prediction']
  assert np.isnan(prediction[2000:2300]).all() and np.isfinite(prediction[2300:]).all()
  trained = TrainedModel.load(str(root / 'work' / 'model'))
  inputs = channels.ModelInputs.load(str(root / 'work' / 'model'))
  ordered = later.witnesses[:, [later.witness_names.index(n) for n in inputs.witness_names]]
  np.testing.assert_allclose(prediction[:2000], trained.predict(ordered[:2000]),
                             rtol=0, atol=1e-9 * np.abs(later.target).max())
  np.testing.assert_allclose(prediction[2300:], trained.predict(ordered[2300:]),
                             rtol=0, atol=1e-9 * np.abs(later.target).max())


def test_injection_loses_snr_through_the_sensing_witness_only(gw_files, tmp_path):
  """Trained with the witness that senses the target, the model subtracts part of a chirp
  that reaches that witness; one that reaches only the target (as with the witness excluded:
  nothing the model reads changes) survives whole. results/gw_injection.py trains both."""
  root, _, _ = gw_files
  args = [f'--model_dir={root}/work', f'--input={root}/later.h5', '--snr=20', '--mass1=5',
          '--mass2=5', '--f_low=25']
  proc = run('experiments.injection', *args, f'--witness_coupling={gw.SENSING_CHANNEL}:0.05',
             f'--output={tmp_path}/kept.json')
  assert proc.returncode == 0, proc.stderr[-3000:]
  kept = json.loads((tmp_path / 'kept.json').read_text())
  assert kept['snr_fraction'] < 0.9 and kept['couplings'] == {gw.SENSING_CHANNEL: 0.05}
  from lstm_jax import cleaning  # pylint: disable=g-import-not-at-top
  trained, reader = cleaning.open_with_model(str(root / 'work'), str(root / 'later.h5'))
  rec = reader.read(0, reader.n_samples)
  blind = gw.inject_and_clean(trained, rec, gw.Injection(snr=20, m1=5, m2=5, f_low=25))
  assert blind['snr_fraction'] == pytest.approx(1.0, abs=1e-9)
  assert blind['phase_change_rad'] == pytest.approx(0.0, abs=1e-9)
  one_line_error(run('experiments.injection', *args, '--witness_coupling=H1:NOPE:0.1'),
                 'H1:NOPE')


def test_clean_subtracts_only_in_the_band(gw_files, tmp_path):
  from lstm_jax import bandlimit  # pylint: disable=g-import-not-at-top
  from lstm_jax import cleaning  # pylint: disable=g-import-not-at-top
  from lstm_jax.inference import TrainedModel  # pylint: disable=g-import-not-at-top
  root, later, _ = gw_files
  trained = TrainedModel.load(str(root / 'work' / 'model'))
  inputs = channels.ModelInputs.load(str(root / 'work' / 'model'))
  ordered = later.witnesses[:, [later.witness_names.index(n) for n in inputs.witness_names]]
  whole = trained.predict(ordered)
  band = (20.0, 70.0)
  out = tmp_path / 'band.npz'
  metrics = cleaning.clean_file(str(root / 'work'), str(root / 'later.h5'), str(out),
                                band=band, block_size=500)
  with np.load(out) as z:
    prediction, cleaned = z['prediction'], z['cleaned']
  scale = np.abs(later.target).max()
  np.testing.assert_allclose(prediction, bandlimit.apply(whole, band, later.fs), rtol=0,
                             atol=1e-9 * scale)
  np.testing.assert_allclose(cleaned, later.target - prediction, rtol=0, atol=1e-9 * scale)
  assert metrics['subtracted_band_hz'] == list(band)
  assert metrics['band_limit_delay_s'] > 0
  assert metrics['gw']['outside_band_max_asd_change'] <= 0.01  # nothing moves outside
  everywhere = cleaning.clean_file(str(root / 'work'), str(root / 'later.h5'),
                                   str(tmp_path / 'all.npz'), band=band, clean_outside_band=True)
  with np.load(tmp_path / 'all.npz') as z:
    np.testing.assert_allclose(z['prediction'], whole, rtol=0, atol=1e-9 * scale)
  assert 'subtracted_band_hz' not in everywhere


def test_the_timing_recording_is_the_mock_with_idle_witnesses_in_strain_units():
  rec = gw.ligo_mock_with_idle(fs=512.0, duration=8.0, n_idle=3, seed=2)
  mock = gw.ligo_mock(fs=512.0, duration=8.0, seed=2)
  assert rec.witnesses.shape == (len(mock), mock.witnesses.shape[1] + 3)
  np.testing.assert_array_equal(rec.witnesses[:, :6], mock.witnesses.astype(np.float32))
  np.testing.assert_allclose(rec.target, mock.target / gw.STRAIN, rtol=1e-6)
  np.testing.assert_allclose(rec.noise, mock.noise / gw.STRAIN, rtol=1e-6)
  idle = rec.witnesses[:, 6:]
  np.testing.assert_allclose(idle.std(0), 1.0, rtol=1e-3)  # unit variance, and unrelated:
  assert np.abs(np.corrcoef(np.c_[idle, rec.noise].T)[-1, :-1]).max() < 0.1
