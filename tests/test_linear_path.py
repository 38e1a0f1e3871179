"""The linear path: a Wiener FIR fitted first, the recurrent model trained on what it leaves."""
import numpy as np
import pytest
import scipy.signal

import lstm_jax
from lstm_jax import metrics
from lstm_jax import train as train_lib


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
      data=resonant_recording(tmp_path / 'linear.npz'), linear_taps=32, lstm_sizes=(8,),
      head_sizes=(16,), n_streams=4, chunk_len=64, bptt_len=32, num_steps=150,
      learning_rate=1e-2, warmup_steps=10, log_every_seconds=1e9, val_every=50)
  result = lstm_jax.train_and_evaluate(config, str(tmp_path / 'run'))
  assert result['train']['linear']['n_taps'] == 32
  assert result['train']['linear']['train_target_nr_db'] > 15  # the FIR found the coupling
  trained = lstm_jax.TrainedModel.load(str(tmp_path / 'run' / 'model'))
  heldout = train_lib.load_split(config).heldout
  fir_alone = metrics.evaluate(heldout, trained.linear.predict(heldout.witnesses))['nr_db']
  # The sum is what is judged, and the recurrent part learnt on the residual, not against it.
  assert result['heldout']['nr_db'] > fir_alone - 1.0 > 15


def test_linear_taps_must_not_be_negative():
  with pytest.raises(lstm_jax.DataError, match='--linear_taps must be >= 0, got -1'):
    lstm_jax.train_and_evaluate(lstm_jax.Config(linear_taps=-1))


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
