"""The doctor: every check fires on its planted mistake and stays quiet on a sound setup."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lstm_jax import config as config_lib
from lstm_jax import data as data_lib
from lstm_jax import doctor
from lstm_jax import train as train_lib


def checks(findings, severity='warning'):
  return [f['check'] for f in findings if f['severity'] == severity]


def weights(scale=0.1, seed=0):
  rng = np.random.default_rng(seed)
  return {'kernel': scale * rng.standard_normal((64, 256)), 'bias': np.zeros(256)}


def lr(config):
  return doctor.schedule_values(train_lib.make_schedule(config), config.num_steps)


# --------------------------------------------------------------------------- one check each

def test_lr_budget_flags_the_seed_decay_and_not_the_default():
  seed = config_lib.seed_keras()
  found = doctor.check_lr_budget(lr(seed), weights(), seed.decay)
  assert checks(found) == ['lr_budget']
  message = found[0]['message']
  # Sum of 3.9e-5 / (1 + 0.05 t) over 300 steps = 2.18e-3; the decay ends at 1/16 of the start.
  assert '0.00218' in message and '1/16' in message and 'decay=0.05' in message
  assert 'Change:' in message
  assert doctor.check_lr_budget(lr(config_lib.Config()), weights()) == []
  # Not tuned to one seed: a constant 1e-4 over 300 steps (sum 0.03) on weights of scale 0.1
  # passes, the same on weights of scale 1 does not.
  flat = np.full(300, 1e-4)
  assert doctor.check_lr_budget(flat, weights(0.1)) == []
  assert checks(doctor.check_lr_budget(flat, weights(1.0))) == ['lr_budget']


def test_updates_flags_fewer_than_adams_horizon():
  assert checks(doctor.check_updates(300, 0.999, 10)) == ['updates']
  assert '30 passes' in doctor.check_updates(300, 0.999, 10)[0]['message']
  assert doctor.check_updates(5000, 0.999) == []
  assert doctor.check_updates(300, 0.99) == []  # b2 = 0.99 averages over 100 steps


def test_scaling_flags_minmax_inputs_and_unreachable_target(rng):
  noise = rng.standard_normal((20000, 1))
  minmaxed = data_lib.Normalizer.fit(noise, 'minmax').apply(noise)
  standardized = data_lib.Normalizer.fit(noise, 'standardize').apply(noise)
  target = standardized[:, 0]
  found = doctor.check_scaling(minmaxed, target, 'minmax')
  assert checks(found) == ['scaling'] and 'inputs are not standardized' in found[0]['message']
  assert doctor.check_scaling(standardized, target) == []
  # The ramp's raw target (mean 1402, std 809) is out of reach of an output layer whose weights
  # move at most 0.33 each.
  ramp_y = np.arange(1, 2805, dtype=np.float64)
  found = doctor.check_scaling(standardized, ramp_y, 'standardize', 'none', 0.33, 100)
  assert checks(found) == ['scaling'] and 'reach about 34.3' in found[0]['message']
  # A target left unscaled that happens to be standard is only worth a note.
  found = doctor.check_scaling(standardized, target, 'standardize', 'none', 7.5, 32)
  assert checks(found) == [] and checks(found, 'info') == ['scaling']


def test_output_activation_flags_leaky_relu_on_a_signed_target(rng):
  signed = rng.standard_normal(10000)
  assert checks(doctor.check_output_activation('leaky_relu', signed)) == ['output_activation']
  assert checks(doctor.check_output_activation('tanh', 2.0 * signed)) == ['output_activation']
  assert doctor.check_output_activation('linear', signed) == []
  assert doctor.check_output_activation('leaky_relu', np.abs(signed)) == []


def test_data_size_flags_more_parameters_than_samples():
  assert checks(doctor.check_data_size(20480, 26497)) == ['data_size']
  assert doctor.check_data_size(1048576, 8801) == []


def test_state_reset_flags_a_carry_never_reset_across_epochs():
  assert checks(doctor.check_state_reset(False, 10, 300)) == ['state_reset']
  assert doctor.check_state_reset(True, 10, 300) == []
  assert doctor.check_state_reset(False, 10, 10) == []  # one pass: nothing to reset


def test_stream_alignment_flags_shuffled_chunks(rng):
  records = [rng.standard_normal((1000, 3)).astype(np.float32) for _ in range(2)]
  streams = data_lib.make_streams(records, 4, 100)
  assert doctor.check_stream_alignment(streams, records) == []
  shuffled = streams[rng.permutation(streams.shape[0])]
  found = doctor.check_stream_alignment(shuffled, records)
  assert checks(found) == ['stream_alignment'] and '[0, 1, 2, 3]' in found[0]['message']
  # Streams swapped between batch rows break continuity only from the swap on.
  swapped = streams.copy()
  swapped[2:, [0, 1]] = swapped[2:, [1, 0]]
  assert '[0, 1]' in doctor.check_stream_alignment(swapped, records)[0]['message']


def test_weights_moved_collapse_and_memorization():
  assert checks(doctor.check_weights_moved(0.002)) == ['weights_moved']
  assert doctor.check_weights_moved(0.4) == []
  assert checks(doctor.check_collapse(0.0002, -0.03)) == ['prediction_collapse']
  assert checks(doctor.check_collapse(0.7, 0.01)) == ['prediction_collapse']  # R^2 ~ 0
  assert doctor.check_collapse(0.7, 0.5) == []
  assert checks(doctor.check_memorization(0.95, 0.3)) == ['memorization']
  assert doctor.check_memorization(0.51, 0.49) == []
  assert doctor.check_memorization(0.2, 0.05) == []  # small gap in explained variance
  fit = {'r2': 0.95, 'prediction_std_over_target_std': 0.97}
  assert checks(doctor.diagnose_end(fit, {'r2': 0.2}, 0.3)) == ['memorization']
  assert doctor.diagnose_end(fit, {'r2': 0.94}, 0.3) == []
  # A collapse under the plain PSD-ratio loss names that loss and the flag that fixes it.
  flat = {'r2': 0.0, 'prediction_std_over_target_std': 0.0002}
  plain = config_lib.Config(loss='spectral', loss_psd_floor=0.0)
  [hint] = doctor.diagnose_end(flat, {'r2': 0.0}, 0.3, plain)
  assert '--loss_psd_floor=1' in hint['message']
  for config in (None, config_lib.Config(), config_lib.Config(loss='mse', loss_psd_floor=0.0)):
    [other] = doctor.diagnose_end(flat, {'r2': 0.0}, 0.3, config)
    assert 'loss_psd_floor' not in other['message']


def test_residual_fir_findings():
  residual = {'n_taps': 128, 'kept': True, 'gain': 0.02, 'validation_residual_nr_db': 10.0}
  [linear] = doctor.check_residual_fir(residual)
  assert linear['check'] == 'linear_left' and 'gain 0.020' in linear['message']
  assert 'coupling looks linear' in linear['message']
  [left] = doctor.check_residual_fir(dict(residual, gain=0.99))
  assert 'only approximated' in left['message'] and 'looks linear' not in left['message']
  [bilinear] = doctor.check_residual_fir(dict(residual, products=[[0, 2, 5]]))
  assert 'witnesses w0(t-5)*w2' in bilinear['message'] and 'bilinear coupling' in bilinear['message']
  assert 'looks linear' not in bilinear['message'] and 'saturates' not in bilinear['message']
  [bent] = doctor.check_residual_fir(dict(residual, shapes=[[1, 2.0, 0.7]]))
  assert 'bent witness tanh(2*w1)' in bent['message'] and 'saturates' in bent['message']
  assert 'looks linear' not in bent['message'] and 'bilinear' not in bent['message']
  assert doctor.check_residual_fir(dict(residual, validation_residual_nr_db=0.09)) == []
  assert doctor.check_residual_fir(dict(residual, kept=False)) == []
  assert doctor.check_residual_fir(None) == []
  fit = {'r2': 0.95, 'prediction_std_over_target_std': 0.97}
  assert checks(doctor.diagnose_end(fit, {'r2': 0.94}, 0.3, None, None, residual),
                'info') == ['linear_left']


def test_relative_change():
  before = {'a': jnp.ones((4,)), 'b': jnp.zeros((2, 2))}
  after = jax.tree_util.tree_map(lambda v: v + 0.1, before)
  assert doctor.relative_change(before, after) == pytest.approx(np.sqrt(8 * 0.01) / 2.0)


# --------------------------------------------------------------------------- whole runs

def start_findings(config):
  """``diagnose_start`` on exactly what ``train.train`` would feed it."""
  split = train_lib.load_split(config)
  wit = np.concatenate([r.witnesses for r in split.train])
  tgt = np.concatenate([r.target for r in split.train])
  inorm = data_lib.Normalizer.fit(wit, config.input_scaling)
  tnorm = data_lib.Normalizer.fit(tgt, config.target_scaling)
  records = [np.concatenate([inorm.apply(r.witnesses), tnorm.apply(r.target[:, None])], axis=1)
             for r in split.train]
  streams = data_lib.make_streams(records, config.n_streams, config.chunk_len)
  model = train_lib.build_model(config)
  carry = model.initialize_carry(config.n_streams)
  # Parameter shapes do not depend on the chunk length: a short one keeps this test fast.
  params = model.init(jax.random.key(config.seed), carry,
                      jnp.asarray(streams[0, :, :8, :2]))['params']
  return doctor.diagnose_start(config, params, records, streams, 2, lr(config))


def test_seed_keras_findings_name_the_real_causes_first():
  found = start_findings(config_lib.seed_keras())
  names = checks(found)
  assert names[:2] == ['lr_budget', 'updates'], names
  assert set(names) == {'lr_budget', 'updates', 'output_activation', 'scaling', 'data_size',
                        'state_reset'}
  assert all('Change:' in f['message'] for f in found)


def test_default_recipe_gets_no_warning():
  assert checks(start_findings(config_lib.Config())) == []
