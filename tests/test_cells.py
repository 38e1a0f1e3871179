"""The cell interface and the zoo: time loops vs a Python loop, chunked carries, gradients,
parallel vs sequential minimal RNNs, the registry, and every cell through the model and CLI."""
import jax
import jax.numpy as jnp
from jax.test_util import check_grads
import numpy as np
import pytest

import lstm_jax
from lstm_jax import cell as cell_lib
from lstm_jax import cells
from lstm_jax import cli
from lstm_jax import recurrent
from lstm_jax.recurrent import ScanConfig



def registry_cases():
  """Every registered cell with its defaults, and with each of its boolean options flipped (the
  other loop or convention it offers): a new built-in cell is checked without editing a list."""
  import dataclasses
  import typing
  cases = []
  for name, cls in sorted(cells.CELLS.items()):
    cases.append((name, ''))
    hints = typing.get_type_hints(cls)
    for field in dataclasses.fields(cls):
      if hints[field.name] is bool:
        cases.append((name, f'{field.name}={str(not field.default).lower()}'))
  return cases


CASES = registry_cases()
IDS = [f'{n}[{o}]' if o else n for n, o in CASES]
GRAD_CASES = [c for c in CASES if 'false' not in c[1] or c[0] == 'gru']
ZOO = {'lstm', 'peephole_lstm', 'cifg_lstm', 'layernorm_lstm', 'gru', 'min_lstm', 'min_gru'}


def make_problem(name, options, batch=2, t=9, in_size=3, hidden=4, seed=0):
  """Random params (biases and peepholes too, so no term is trivially zero), carry and input:
  the same problem ``cells.check`` builds."""
  cell = cells.get_cell(name, options)
  return (cell, *cells._random_problem(cell, batch, t, in_size, hidden, seed))


def assert_trees_close(got, want, atol=1e-5, rtol=0.0):
  got_leaves, want_leaves = jax.tree.leaves(got), jax.tree.leaves(want)
  assert len(got_leaves) == len(want_leaves)
  for g, w in zip(got_leaves, want_leaves):
    np.testing.assert_allclose(g, w, atol=atol, rtol=rtol)


def test_registry_holds_the_zoo():
  assert ZOO <= set(cells.CELLS)
  for name in ZOO:
    cell = cells.get_cell(name)
    assert cell.name == name and 'h' in cell.Carry._fields
    assert 'h' in cell.__class__.__doc__ or '\\' in cell.__class__.__doc__  # has equations


def test_options_are_typed_and_checked():
  assert cells.get_cell('gru', 'reset_after=false').reset_after is False
  assert cells.get_cell('gru', {'reset_after': False}) == cells.get_cell('gru', 'reset_after=0')
  assert cells.get_cell('layernorm_lstm', 'eps=0.001').eps == 1e-3
  with pytest.raises(ValueError, match="unknown cell 'grux'"):
    cells.get_cell('grux')
  with pytest.raises(ValueError, match="no option 'reset_before'"):
    cells.get_cell('gru', 'reset_before=true')
  with pytest.raises(ValueError, match='cannot read'):
    cells.get_cell('gru', 'reset_after=maybe')
  with pytest.raises(ValueError, match='key=value'):
    cells.get_cell('gru', 'reset_after')
  assert cells.get_cell('min_gru', 'block=7').block == 7
  with pytest.raises(ValueError, match="'min_lstm': block must be >= 0"):
    cells.get_cell('min_lstm', 'block=-1')


@pytest.mark.parametrize('name,options', CASES, ids=IDS)
def test_layer_matches_python_loop_and_chunks(name, options):
  """Scan (projection hoisted or in the loop, fast path or generic) == Python loop, and two
  chunks with the carry passed on == one pass. One jit per cell keeps compiles few."""
  cell, params, carry, x = make_problem(name, options)

  @jax.jit
  def run(params, carry, x):
    out = {'loop': cells.loop_layer(cell, params, carry, x)}
    own_loop = cell.fused(params) is not None or type(cell).layer is not cells.Cell.layer
    for hoist in (False, True):
      scan = ScanConfig(hoist_input=hoist)
      out[f'layer_{hoist}'] = cell.layer(params, carry, x, scan)
      if own_loop:  # the generic scan computes the same as the fast path
        out[f'generic_{hoist}'] = cells.scan_layer(cell, params, carry, x, scan)
    c1, h1 = cell.layer(params, carry, x[:, :4])
    c2, h2 = cell.layer(params, c1, x[:, 4:])
    out['chunks'] = (c2, jnp.concatenate([h1, h2], axis=1))
    return out

  out = run(params, carry, x)
  for key in out:
    assert_trees_close(out[key], out['loop'], atol=2e-5)


@pytest.mark.parametrize('name,options', [('peephole_lstm', ''), ('gru', 'reset_after=false'),
                                          ('min_gru', '')])
def test_recurrent_activation_reaches_the_cells(name, options):
  cell, params, carry, x = make_problem(name, options)
  hard = ScanConfig(recurrent_activation='hard_sigmoid')

  @jax.jit
  def run(params, carry, x):
    return (cell.layer(params, carry, x, hard), cells.loop_layer(cell, params, carry, x, hard),
            cell.layer(params, carry, x))

  got, want, plain = run(params, carry, x)
  assert_trees_close(got, want)
  assert not np.allclose(got[1], plain[1], atol=1e-4)


@pytest.mark.parametrize('name', ['lstm', 'gru', 'min_lstm'])
def test_stack_carries_each_layer(name):
  cell, params, carry, x = make_problem(name, '')
  stack = [params, jax.jit(lambda k: cell.init(k, 4, 4))(jax.random.key(9))]
  carries = (carry, cell.zero_carry(2, 4))

  @jax.jit
  def run(stack, carries, x):
    first = cell.stack(stack, carries, x[:, :5])
    second = cell.stack(stack, first[0], x[:, 5:])
    return cell.stack(stack, carries, x), (second[0], jnp.concatenate([first[1], second[1]], 1))

  whole, chunked = run(stack, carries, x)
  assert_trees_close(chunked, whole)
  assert [type(c) for c in whole[0]] == [cell.Carry] * 2


@pytest.mark.parametrize('name,options', GRAD_CASES, ids=[f'{n}[{o}]' for n, o in GRAD_CASES])
def test_check_grads(name, options):
  """Orders 1 and 2 for every cell (the fast=false / parallel=false variants are checked
  against these below), in float64, as finite differences in float32 are too coarse to check
  anything. Order 2 differentiates the LSTM's custom backward too."""
  with jax.enable_x64(True):
    cell, params, carry, x = jax.tree.map(
        lambda a: a.astype(jnp.float64) if isinstance(a, jax.Array) else a,
        make_problem(name, options, t=4, in_size=2, hidden=3))
    # Reverse mode: what training uses (forward mode cannot pass the LSTM's custom_vjp).
    f = jax.jit(cell.layer)
    check_grads(f, (params, carry, x), order=1, modes=('rev',), atol=1e-4, rtol=1e-4)
    check_grads(f, (params, carry, x), order=2, modes=('rev',), atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize('name,options', CASES, ids=IDS)
def test_check_passes_for_every_registered_cell(name, options, capsys):
  """``cells.check``: scan vs Python loop, chunks, no retrace, float64 check_grads, and the
  derived backward against autodiff on every loop form the cell runs on."""
  results = cells.check(name, options)
  report = capsys.readouterr().out
  assert report.startswith('check ') and 'FAIL' not in report, report
  assert all(ok for ok, _ in results.values()), results
  fused = cells.get_cell(name, options)
  has_fused = fused.takes_fused_path() and fused.fused(
      fused.init(jax.random.key(0), 3, 4)) is not None
  assert ('custom vs autodiff [scan]' in results) == has_fused
  if name == 'lstm':
    assert 'custom vs autodiff [pallas]' in results
    assert 'custom vs autodiff [pallas_stack, 2 layers]' in results


def test_flags_that_do_not_apply_are_refused_or_warned_once():
  cell, params, carry, x = make_problem('gru', 'reset_after=false')
  with pytest.raises(ValueError, match="loop='pallas'.*no fused form"):
    cell.layer(params, carry, x, ScanConfig(loop='pallas'))
  recurrent._WARNED.clear()  # pylint: disable=protected-access
  with pytest.warns(UserWarning, match="backward='custom' does not apply"):
    cell.layer(params, carry, x, ScanConfig())
  import warnings
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    cell.layer(params, carry, x, ScanConfig())  # once per process
  peephole, params, carry, x = make_problem('peephole_lstm', '')
  with pytest.raises(ValueError, match="loop='pallas'.*parameters besides W, U and b"):
    peephole.layer(params, carry, x, ScanConfig(loop='pallas'))
  with pytest.warns(UserWarning, match="layout='feature' does not apply"):
    peephole.layer(params, carry, x, ScanConfig(layout='feature'))


@pytest.mark.parametrize('name,block', [('min_lstm', 128), ('min_gru', 128), ('min_lstm', 0),
                                        ('min_gru', 7), ('min_lstm', 1000)])
def test_parallel_scan_matches_sequential(name, block):
  """500 steps: whole blocks plus a remainder (128, 7), one block (0), a block past the end."""
  par, params, carry, x = make_problem(name, f'parallel=true,block={block}', t=500)
  seq = cells.get_cell(name, 'parallel=false')

  def loss(cell, params, carry):
    new_carry, h = cell.layer(params, carry, x)
    return jnp.sum(h * jnp.sin(h)) + jnp.sum(new_carry.h)

  @jax.jit
  def run(params, carry):
    grad = jax.grad(loss, argnums=(1, 2))
    return (par.layer(params, carry, x), seq.layer(params, carry, x),
            grad(par, params, carry), grad(seq, params, carry))

  got, want, g_par, g_seq = run(params, carry)
  assert_trees_close(got, want, atol=2e-5)
  assert_trees_close(g_par, g_seq, atol=1e-3, rtol=1e-4)


def test_linear_scan_folds_the_initial_state():
  a = jnp.asarray([[[0.5]], [[2.0]], [[0.1]]])
  b = jnp.asarray([[[1.0]], [[-1.0]], [[3.0]]])
  h = cells.linear_scan(a, b, jnp.asarray([[4.0]]))
  np.testing.assert_allclose(h[:, 0, 0], [3.0, 5.0, 3.5], rtol=1e-6)


@pytest.mark.parametrize('rec_act', ['sigmoid', 'hard_sigmoid'])
def test_cifg_fast_path_matches_its_definition(rec_act):
  """The LSTM expansion (i = sigma(-z_f)) equals i = 1 - f, values and gradients."""
  fast, params, carry, x = make_problem('cifg_lstm', 'fast=true')
  slow = cells.get_cell('cifg_lstm', 'fast=false')
  scan = ScanConfig(recurrent_activation=rec_act)

  def loss(cell, params):
    c, h = cell.layer(params, carry, x, scan)
    return jnp.sum(jnp.square(h)) + jnp.sum(c.c)

  @jax.jit
  def run(params):
    return (fast.layer(params, carry, x, scan), slow.layer(params, carry, x, scan),
            jax.grad(loss, argnums=1)(fast, params), jax.grad(loss, argnums=1)(slow, params))

  got, want, g_fast, g_slow = run(params)
  assert_trees_close(got, want)
  assert_trees_close(g_fast, g_slow, atol=1e-4)


def test_lstm_cell_is_the_foundation_cell():
  cell, params, carry, x = make_problem('lstm', '')
  want = cell_lib.lstm_cell(params, carry, x[:, 0])
  assert_trees_close(cell.step(params, carry, x[:, 0]), want, atol=1e-6)
  np.testing.assert_array_equal(cell.layer(params, carry, x)[1],
                                recurrent.lstm_layer(params, carry, x)[1])


@pytest.mark.parametrize('name,options', [('layernorm_lstm', ''), ('gru', 'reset_after=false')])
def test_regressor_with_a_zoo_cell(name, options):
  model = lstm_jax.LSTMRegressor(lstm_sizes=(4, 3), head_sizes=(5,), cell=name,
                                 cell_options=options, head_inputs=True)
  cell = cells.get_cell(name, options)
  x = jax.random.normal(jax.random.key(0), (2, 10, 3))
  carry = model.initialize_carry(2)
  assert [type(c) for c in carry] == [cell.Carry] * 2
  variables = jax.jit(model.init)(jax.random.key(1), carry, x)
  specs = cell.param_specs(3, 4)
  assert set(variables['params'][f'{name}_0']) == set(specs)
  for n, spec in specs.items():
    assert variables['params'][f'{name}_0'][n].shape == spec.shape

  @jax.jit
  def run(variables, carry, x):
    c1, y1 = model.apply(variables, carry, x[:, :4])
    c2, y2 = model.apply(variables, c1, x[:, 4:])
    return model.apply(variables, carry, x), (c2, jnp.concatenate([y1, y2], axis=1))

  whole, chunked = run(variables, carry, x)
  assert_trees_close(chunked, whole)


def test_unit_forget_bias_lands_on_each_forget_gate():
  h = 3
  for name, slot, n_gates in [('lstm', 1, 4), ('peephole_lstm', 1, 4), ('layernorm_lstm', 1, 4),
                              ('cifg_lstm', 0, 3), ('min_lstm', 0, 3)]:
    cell = cells.get_cell(name)
    bias = jax.jit(lambda k, cell=cell: cell.init(k, 2, h).bias)(jax.random.key(0))
    want = np.zeros(n_gates * h)
    want[slot * h:(slot + 1) * h] = 1.0
    np.testing.assert_array_equal(bias, want, err_msg=name)


def test_cell_flags_reach_the_model(capsys):
  from absl import flags
  fv = flags.FlagValues()
  cli.define_config_flags(fv)
  fv(['prog', '--cell=gru', '--cell_options=reset_after=false'])
  config = cli.config_from_flags('default', fv)
  model = lstm_jax.build_model(config)
  assert model.get_cell() == cells.get_cell('gru', {'reset_after': False})
  assert lstm_jax.build_model(lstm_jax.Config()).get_cell() == cells.get_cell('lstm')
  code = cli.run_user_main(lambda: lstm_jax.build_model(config.replace(cell='lstmm')),
                           small_loops=False)
  err = capsys.readouterr().err
  assert code == 2 and err.count('\n') == 1 and "unknown cell 'lstmm'" in err


def test_zoo_cell_trains_and_round_trips(tmp_path):
  """A few training steps through lstm_jax.train, then save, load and stream predictions."""
  from lstm_jax import train as train_lib
  config = lstm_jax.Config(lstm_sizes=(6,), head_sizes=(8,), n_streams=2, chunk_len=32,
                           bptt_len=16, learning_rate=3e-2, warmup_steps=0, num_steps=20,
                           cell='min_gru')
  model = lstm_jax.build_model(config)
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 2, 32, 2)).astype(np.float32)
  y = x[..., :1] * x[..., 1:]  # a product coupling, as in the seed mock
  carry = model.initialize_carry(2)
  params = jax.jit(model.init)(jax.random.key(0), carry, x[0])['params']
  optimizer = train_lib.make_optimizer(config)
  state = train_lib.TrainState(params, optimizer.init(params), carry, jnp.zeros((), jnp.int32))
  step = train_lib.make_train_step(model, optimizer, config.bptt_len)
  losses = []
  for _ in range(config.num_steps):
    state = state._replace(carry=model.initialize_carry(2))
    state, loss = step(state, x, y, 0, config.learning_rate)
    losses.append(float(loss))
  assert losses[-1] < 0.7 * losses[0]
  norm = lstm_jax.Normalizer.fit(x[0, 0], 'none', 'witness channel')
  lstm_jax.TrainedModel(config, jax.device_get(state.params), norm,
                        lstm_jax.Normalizer.fit(y[0, 0], 'none', 'target channel'),
                        2).save(str(tmp_path))
  trained = lstm_jax.TrainedModel.load(str(tmp_path))
  assert trained.config.cell == 'min_gru' and 'min_gru_0' in trained.params
  witnesses = rng.normal(size=(48, 2)).astype(np.float32)  # whole chunks: no eager tail
  np.testing.assert_allclose(trained.predict(witnesses, chunk_len=16),
                             trained.predict(witnesses, chunk_len=48), atol=1e-5)


def test_tutorial_cell_from_the_docs(tmp_path, monkeypatch):
  """docs/cells.md's tutorial cell, saved as my_cells.py, works as the tutorial says."""
  import os
  import re
  import sys
  doc = open(os.path.join(os.path.dirname(__file__), '..', 'docs', 'cells.md')).read()
  code = next(b for b in re.findall(r'```python\n(.*?)```', doc, re.S) if '@cells.register' in b)
  (tmp_path / 'my_cells_tutorial.py').write_text(code)
  monkeypatch.syspath_prepend(str(tmp_path))
  try:
    cell = cells.get_cell('my_cells_tutorial:janet', 'beta=2')
    assert cell.beta == 2.0
    x = jax.random.normal(jax.random.key(3), (2, 9, 3))
    params = jax.jit(lambda k: cell.init(k, 3, 4))(jax.random.key(0))
    carry = cell.zero_carry(2, 4)

    @jax.jit
    def run(params, carry, x):
      c1, h1 = cell.layer(params, carry, x[:, :4])
      c2, h2 = cell.layer(params, c1, x[:, 4:])
      return (cells.loop_layer(cell, params, carry, x), cell.layer(params, carry, x),
              (c2, jnp.concatenate([h1, h2], axis=1)))

    want, whole, chunked = run(params, carry, x)
    assert_trees_close(whole, want)
    assert_trees_close(chunked, want)
    model = lstm_jax.LSTMRegressor(lstm_sizes=(4,), head_sizes=(), cell='my_cells_tutorial:janet')
    variables = jax.jit(model.init)(jax.random.key(0), model.initialize_carry(2), x)
    assert set(variables['params']['janet_0']) == {'kernel', 'recurrent', 'bias'}
  finally:
    cells.CELLS.pop('janet', None)
    sys.modules.pop('my_cells_tutorial', None)
