"""The real-data example (obspy's seismometer record): loads, and a tiny comparison runs on it."""
import json

import numpy as np
import pytest

pytest.importorskip('obspy')

from lstm_jax import config as config_lib  # pylint: disable=g-import-not-at-top
from experiments import real_data  # pylint: disable=g-import-not-at-top


def test_balst_record_is_two_aligned_channels():
  rec = real_data.balst_recording()
  assert rec.fs == 1.0 and rec.witnesses.shape == (86343, 1) and rec.target.shape == (86343,)
  assert rec.noise is None and np.all(np.isfinite(rec.target))
  # The microseism is common to both components: coherent well above chance at 0.1-0.15 Hz.
  import scipy.signal
  f, coh = scipy.signal.coherence(rec.witnesses[:, 0], rec.target, fs=1.0, nperseg=1024)
  assert coh[(f > 0.1) & (f < 0.15)].mean() > 0.3


def test_real_data_smoke(tmp_path):
  config = config_lib.get_config('microseism').replace(
      lstm_sizes=(4,), head_sizes=(4,), n_streams=4, chunk_len=64, bptt_len=64, num_steps=3,
      warmup_steps=0)
  result = real_data.run(config, str(tmp_path), fir_taps=16, mlp_steps=10, max_samples=4096,
                         mlp_hidden=(8,))
  saved = json.loads((tmp_path / 'compare.json').read_text())
  assert [r['method'] for r in saved['rows']] == ['lstm', 'wiener', 'mlp']
  assert saved['rows'][0]['nr_reference'] == 'target' and saved['band_hz'] == [0.05, 0.25]
  assert result['heldout_seconds'] == pytest.approx(0.2 * 4096, abs=1)
  assert (tmp_path / 'balst.npz').exists() and (tmp_path / 'compare_asd.png').exists()
