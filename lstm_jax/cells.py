r"""Recurrent cells behind one interface, a registry by name, and a zoo of variants.

A cell is a frozen dataclass (its fields are its options) with:

* ``Params`` / ``Carry``: NamedTuples of one layer's weights and of its state (every carry has
  an ``h`` field: the layer's output);
* ``param_specs(in_size, hidden_size, unit_forget_bias)``: name -> ``ParamSpec(shape, init)``,
  from which ``init`` and the Flax module ``CellWeights`` build ``Params``;
* ``zero_carry(batch_size, hidden_size)``;
* ``project(params, x_...xC)``: the part of the step that depends on the input only (usually
  ``x W + b``), for any leading axes, so the time loop may hoist it out of the scan;
* ``recur(params, carry, xp_BxG, scan)``: the rest of one step, ``-> (carry, h_BxH)``;
* ``fused(params)`` and ``update(small, carry, z, scan, axis)``: a cell with one recurrent
  matmul gives its weights as ``recurrent.Fused(kernel, recurrent, bias, small)`` and its
  step's pointwise rest as ``update`` (``z = x W + b + h U``, or the pair ``(x W + b, h U)``
  when ``sums_projections`` is False). That is all its math: ``project``, ``recur`` and
  ``step`` follow from it, and ``layer`` runs ``recurrent.fused_layer`` (the backward derived
  from ``update`` by ``jax.vjp``, the Pallas loop tracing ``update``);
* ``layer(params, carry, x_BxTxC, scan)``: a whole chunk. Without a fused form the default is
  the generic scan (``scan_layer``), which hoists the projection or keeps it in the loop as
  ``scan.hoisted()`` says; a cell with a faster time loop of its own (``min_lstm``,
  ``min_gru``) overrides ``layer``.

Activations come from the time loop's ``ScanConfig`` (``recurrent_activation`` for gates,
``activation`` for candidates), so ``--recurrent_activation=hard_sigmoid`` serves every cell.

Usage::

  cell = cells.get_cell('gru', 'reset_after=false')
  params = cell.init(key, in_size=3, hidden_size=8)
  carry = cell.zero_carry(batch_size=4, hidden_size=8)
  carry, h_BxTxH = cell.layer(params, carry, x_BxTxC, ScanConfig())

A new cell: subclass ``Cell``, set ``name``/``Params``/``Carry``, write ``param_specs`` and
either ``fused`` and ``update`` or ``project`` and ``recur``, decorate with ``@register``, and
run ``check(cell)`` (see docs/cells.md).
"""
from __future__ import annotations

import dataclasses
import importlib
import typing
from typing import Any, Callable, ClassVar, NamedTuple, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from lstm_jax import cell as cell_lib
from lstm_jax import recurrent
from lstm_jax.cell import LSTMCarry, LSTMParams
from lstm_jax.recurrent import Fused, ScanConfig

# --------------------------------------------------------------------------- helpers


class ParamSpec(NamedTuple):
  """Shape and initializer ``init(key, shape, dtype)`` of one parameter array."""
  shape: tuple
  init: Callable


def row(v_G, like):
  """``v_G`` reshaped to broadcast against ``like`` (..., G) without implicit rank promotion."""
  return v_G.reshape((1,) * (like.ndim - 1) + v_G.shape)


def dense(x_xC, w_CxG, scan: ScanConfig):
  """``x @ w`` over any leading axes; operands in ``scan.matmul_dtype``, result in x's dtype."""
  dt = jnp.bfloat16 if scan.matmul_dtype == 'bfloat16' else x_xC.dtype
  return jnp.einsum('...c,cg->...g', x_xC.astype(dt), w_CxG.astype(dt),
                    preferred_element_type=x_xC.dtype)


def gate_fn(scan: ScanConfig) -> Callable:
  return cell_lib.RECURRENT_ACTIVATIONS[scan.recurrent_activation]


def act_fn(scan: ScanConfig) -> Callable:
  return cell_lib.ACTIVATIONS[scan.activation]


def zeros_init(key, shape, dtype=jnp.float32):
  del key
  return jnp.zeros(shape, dtype)


def ones_init(key, shape, dtype=jnp.float32):
  del key
  return jnp.ones(shape, dtype)


def bias_init(hidden_size: int, forget_slot: Optional[int]):
  """Zeros, with the forget gate (slot ``forget_slot`` of the packed gates) set to 1."""

  def init(key, shape, dtype=jnp.float32):
    bias = zeros_init(key, shape, dtype)
    if forget_slot is None:
      return bias
    n = hidden_size
    return bias.at[forget_slot * n:(forget_slot + 1) * n].set(1.0)

  return init


def layer_norm(v, eps: float):
  """Normalizes over the last axis (no gain or bias)."""
  mean = jnp.mean(v, axis=-1, keepdims=True)
  var = jnp.mean(jnp.square(v - mean), axis=-1, keepdims=True)
  return (v - mean) * jax.lax.rsqrt(var + eps)


class HCarry(NamedTuple):
  """State of a cell whose only state is its output ``h_BxH`` (GRU, minLSTM, minGRU)."""
  h: jax.Array


# --------------------------------------------------------------------------- interface


@dataclasses.dataclass(frozen=True)
class Cell:
  """Base class of every cell; the dataclass fields of a subclass are its options."""
  name: ClassVar[str] = ''
  Params: ClassVar[type] = LSTMParams
  Carry: ClassVar[type] = LSTMCarry
  # ``update`` sees ``z = x W + b + h U`` (True) or the pair ``(x W + b, h U)`` (False).
  sums_projections: ClassVar[bool] = True
  # ``update`` honours ``axis=-2`` (gates packed along features of a (G, B) layout).
  feature_major_ok: ClassVar[bool] = False

  def param_specs(self, in_size: int, hidden_size: int,
                  unit_forget_bias: bool = True) -> dict[str, ParamSpec]:
    raise NotImplementedError

  def make_params(self, arrays: dict):
    return self.Params(**arrays)

  def init(self, key, in_size: int, hidden_size: int, unit_forget_bias: bool = True,
           dtype=jnp.float32):
    """Random parameters (one key per array, in ``param_specs`` order)."""
    specs = self.param_specs(in_size, hidden_size, unit_forget_bias)
    keys = jax.random.split(key, len(specs))
    return self.make_params({n: s.init(k, s.shape, dtype)
                             for k, (n, s) in zip(keys, specs.items())})

  def zero_carry(self, batch_size: int, hidden_size: int, dtype=jnp.float32):
    # One buffer per field: a donated carry must not alias itself.
    return self.Carry(*(jnp.zeros((batch_size, hidden_size), dtype) for _ in self.Carry._fields))

  def fused(self, params) -> Optional[Fused]:
    """The weights as ``recurrent.Fused(kernel, recurrent, bias, small)`` for the fused time
    loop, or None: this cell has no single recurrent matmul (``update`` is then unused)."""
    del params
    return None

  def update(self, small, carry, z, scan: ScanConfig = ScanConfig(), axis: int = -1):
    """The pointwise rest of a step: ``(small params, carry, z) -> carry`` (see ``fused``)."""
    raise NotImplementedError

  def math_key(self) -> tuple:
    """What the cell's math is made of, as compile caches see it: the functions it calls, so
    a program traced before an edit is not reused after it. Cells that call module functions
    (the LSTM: ``lstm_jax.cell.activate_gates``, ``lstm_update``) add them."""
    return (type(self).update, type(self).recur, type(self).project)

  def takes_fused_path(self) -> bool:
    """Whether ``layer`` runs ``recurrent.fused_layer`` (a cell may offer it as an option)."""
    return True

  def project(self, params, x_xC, scan: ScanConfig = ScanConfig()):
    """Input-only part of a step, for any leading axes (default ``x W + b``)."""
    fp = self.fused(params)
    if fp is None:
      fp = Fused(params.kernel, None, params.bias)
    xp = dense(x_xC, fp.kernel, scan)
    return xp if fp.bias is None else xp + row(fp.bias, xp)

  def recur(self, params, carry, xp_BxG, scan: ScanConfig = ScanConfig()):
    """The step given the projected input: ``-> (carry, h_BxH)``. A fused cell's is its
    ``update`` after the recurrent matmul."""
    fp = self.fused(params)
    if fp is None:
      raise NotImplementedError(f'cell {self.name!r} defines neither fused/update nor recur')
    hu = dense(carry.h, fp.recurrent, scan)
    carry = self.update(fp.small, carry, xp_BxG + hu if self.sums_projections else (xp_BxG, hu),
                        scan)
    return carry, carry.h

  def step(self, params, carry, x_BxC, scan: ScanConfig = ScanConfig()):
    """One time step from the raw input: ``(carry, x_BxC) -> (carry, h_BxH)``."""
    return self.recur(params, carry, self.project(params, x_BxC, scan), scan)

  def layer(self, params, carry, x_BxTxC, scan: ScanConfig = ScanConfig()):
    """One layer over a chunk: ``-> (carry, h_BxTxH)``; the carry continues the chunk."""
    fp = self.fused(params) if self.takes_fused_path() else None
    if fp is not None:
      return recurrent.fused_layer(self, fp, carry, x_BxTxC, scan)
    check_generic_flags(self, scan)
    return scan_layer(self, params, carry, x_BxTxC, scan)

  def stack(self, params: Sequence, carries: Sequence, x_BxTxC,
            scan: ScanConfig = ScanConfig()):
    """Stacked layers: ``-> (carries, h_BxTxH)``; with ``loop='pallas_stack'`` every layer in
    one kernel per chunk (``recurrent.fused_stack``), otherwise layer by layer."""
    if scan.loop == 'pallas_stack':
      if not self.takes_fused_path():
        check_generic_flags(self, scan)
      return recurrent.fused_stack(self, [self.fused(p) for p in params], carries, x_BxTxC,
                                   scan)
    new_carries, h = [], x_BxTxC
    for p, c in zip(params, carries):
      c, h = self.layer(p, c, h, scan)
      new_carries.append(c)
    return tuple(new_carries), h


def describe(cell: Cell) -> str:
  """``name`` or ``name[option=value,...]`` for messages."""
  options = ','.join(f'{f.name}={getattr(cell, f.name)}' for f in dataclasses.fields(cell))
  return f'{cell.name}[{options}]' if options else cell.name


def check_generic_flags(cell: Cell, scan: ScanConfig) -> None:
  """Time-loop flags that only the fused loop has: refused (``loop='pallas'``) or warned about
  once per process (``backward='custom'``, ``layout='feature'``) where a cell runs elsewhere."""
  if scan.loop in ('pallas', 'pallas_stack'):
    raise ValueError(f'loop={scan.loop!r}: cell {describe(cell)} has no fused form (one '
                     "recurrent matmul and a pointwise update) for the kernel to run; use "
                     "loop='scan'")
  if scan.loop == 'cudnn':
    raise ValueError(f"loop='cudnn': cuDNN runs the stock LSTM only, not cell {describe(cell)}; "
                     "use loop='scan'")
  if scan.backward == 'custom':
    recurrent.warn_once(f"cell {describe(cell)} has no fused form, so backward='custom' does "
                        'not apply: JAX differentiates its time loop (as backward=autodiff)')
  if scan.layout == 'feature':
    recurrent.warn_once(f"cell {describe(cell)}: layout='feature' applies to the fused LSTM "
                        'loop only; the batch-major scan runs')


def scan_layer(cell: Cell, params, carry, x_BxTxC, scan: ScanConfig = ScanConfig()):
  """The generic time loop: ``lax.scan`` over ``cell.recur``; JAX differentiates it.

  With ``scan.hoisted()`` the input projection runs once for the chunk before the loop,
  otherwise inside it, step by step.
  """
  x_TxBxC = jnp.swapaxes(x_BxTxC, 0, 1)
  if scan.hoisted():
    xs = cell.project(params, x_TxBxC, scan)

    def body(c, xp):
      return cell.recur(params, c, xp, scan)
  else:
    xs = x_TxBxC

    def body(c, x_t):
      return cell.step(params, c, x_t, scan)

  if scan.remat:
    body = jax.checkpoint(body)
  unroll = scan.unroll_for(x_TxBxC.shape[1], training=False)
  carry, h_TxBxH = jax.lax.scan(body, carry, xs, unroll=unroll)
  return carry, jnp.swapaxes(h_TxBxH, 0, 1)


def loop_layer(cell: Cell, params, carry, x_BxTxC, scan: ScanConfig = ScanConfig()):
  """Reference: ``cell.step`` in a Python loop (tests, streaming one sample at a time)."""
  outs = []
  for t in range(x_BxTxC.shape[1]):
    carry, h = cell.step(params, carry, x_BxTxC[:, t], scan)
    outs.append(h)
  return carry, jnp.stack(outs, axis=1)


# --------------------------------------------------------------------------- registry

CELLS: dict[str, type] = {}


def register(cls):
  """Class decorator: makes the cell available as ``get_cell(cls.name)`` and ``--cell=NAME``."""
  if not cls.name:
    raise ValueError(f'{cls.__name__} has no name')
  CELLS[cls.name] = cls
  return cls


def parse_options(options: Any) -> tuple:
  """``'a=1,b=false'`` | dict | pairs -> sorted ``((key, value), ...)`` (values may be text)."""
  if not options:
    return ()
  if isinstance(options, str):
    pairs = []
    for item in options.split(','):
      item = item.strip()
      if not item:
        continue
      if '=' not in item:
        raise ValueError(f'cell option {item!r}: expected key=value')
      k, v = item.split('=', 1)
      pairs.append((k.strip(), v.strip()))
    return tuple(sorted(pairs))
  if isinstance(options, dict):
    return tuple(sorted(options.items()))
  return tuple(sorted(tuple(p) for p in options))


def _convert(cell_name: str, key: str, value, hint):
  if not isinstance(value, str) or hint is str:
    return value
  try:
    if hint is bool:
      choices = {'true': True, '1': True, 'yes': True, 'false': False, '0': False, 'no': False}
      return choices[value.lower()]
    return hint(value)
  except (KeyError, ValueError):
    raise ValueError(f'cell {cell_name!r} option {key}: cannot read {value!r} as '
                     f'{hint.__name__}') from None


def get_cell(name: str, options: Any = ()) -> Cell:
  """The registered cell ``name`` with its options (text ``'k=v,...'``, a dict, or pairs).

  ``name`` may be ``module:cell``: the module (e.g. your ``my_cells.py``, importable from the
  working directory) is imported first, so that its ``@register`` runs.
  """
  if ':' in name:
    module, _, name = name.partition(':')
    try:
      importlib.import_module(module)
    except ImportError as e:
      raise ValueError(f'cell {module}:{name}: cannot import module {module!r} ({e})') from None
  if name not in CELLS:
    raise ValueError(f'unknown cell {name!r}; choose one of {sorted(CELLS)}')
  cls = CELLS[name]
  hints = typing.get_type_hints(cls)
  fields = {f.name for f in dataclasses.fields(cls)}
  kw = {}
  for key, value in parse_options(options):
    if key not in fields:
      raise ValueError(f'cell {name!r} has no option {key!r}; its options: '
                       f'{sorted(fields) or "none"}')
    kw[key] = _convert(name, key, value, hints[key])
  return cls(**kw)


class CellWeights(nn.Module):
  """Declares one layer's parameters in the Flax tree, named as ``cell.param_specs`` says."""
  cell: Cell
  in_size: int
  hidden_size: int
  unit_forget_bias: bool = True

  @nn.compact
  def __call__(self):
    specs = self.cell.param_specs(self.in_size, self.hidden_size, self.unit_forget_bias)
    return self.cell.make_params({n: self.param(n, s.init, s.shape) for n, s in specs.items()})


# --------------------------------------------------------------------------- LSTM family


def lstm_specs(in_size, hidden_size, n_gates, forget_slot, unit_forget_bias):
  """Keras defaults: kernel glorot_uniform, recurrent one orthogonal matrix, bias zeros."""
  g = n_gates * hidden_size
  return {
      'kernel': ParamSpec((in_size, g), nn.initializers.glorot_uniform()),
      'recurrent': ParamSpec((hidden_size, g), nn.initializers.orthogonal()),
      'bias': ParamSpec((g,), bias_init(hidden_size, forget_slot if unit_forget_bias else None)),
  }


@register
@dataclasses.dataclass(frozen=True)
class LSTM(Cell):
  r"""The LSTM of ``lstm_jax.cell`` (Keras/PyTorch conventions, gates packed i, f, g, o).

  .. math::
     z &= x W + h_{t-1} U + b\\
     i &= \sigma(z_i),\ f = \sigma(z_f),\ g = \tanh(z_g),\ o = \sigma(z_o)\\
     c_t &= f \odot c_{t-1} + i \odot g,\quad h_t = o \odot \tanh(c_t)

  Its update is ``lstm_jax.cell.activate_gates`` then ``lstm_update``, looked up in that module
  at trace time: edit them there and every path follows.
  """
  name: ClassVar[str] = 'lstm'
  Params: ClassVar[type] = LSTMParams
  Carry: ClassVar[type] = LSTMCarry
  feature_major_ok: ClassVar[bool] = True

  def param_specs(self, in_size, hidden_size, unit_forget_bias=True):
    return lstm_specs(in_size, hidden_size, 4, 1, unit_forget_bias)

  def zero_carry(self, batch_size, hidden_size, dtype=jnp.float32):
    return cell_lib.zero_carry(batch_size, hidden_size, dtype)

  def fused(self, params):
    return Fused(params.kernel, params.recurrent, params.bias, ())

  def update(self, small, carry, z, scan=ScanConfig(), axis=-1):
    del small
    gates = cell_lib.activate_gates(z, scan.recurrent_activation, scan.activation, axis)
    return cell_lib.lstm_update(carry, gates, scan.activation, axis)

  def math_key(self):
    return super().math_key() + (cell_lib.activate_gates, cell_lib.lstm_update)


class PeepholeParams(NamedTuple):
  """LSTM weights plus ``peephole_3xH``: the cell-state weights of gates i, f, o."""
  kernel: jax.Array
  recurrent: jax.Array
  bias: jax.Array
  peephole: jax.Array


@register
@dataclasses.dataclass(frozen=True)
class PeepholeLSTM(Cell):
  r"""LSTM with peephole connections (Gers & Schmidhuber 2000; as TF's ``PeepholeLSTMCell``).

  .. math::
     z &= x W + h_{t-1} U + b \quad (\text{packed } i, f, g, o)\\
     i &= \sigma(z_i + p_i \odot c_{t-1}),\ f = \sigma(z_f + p_f \odot c_{t-1}),\
       g = \tanh(z_g)\\
     c_t &= f \odot c_{t-1} + i \odot g\\
     o &= \sigma(z_o + p_o \odot c_t),\quad h_t = o \odot \tanh(c_t)

  The peephole weights ``p`` (diagonal) start at zero: the cell starts as a plain LSTM.
  """
  name: ClassVar[str] = 'peephole_lstm'
  Params: ClassVar[type] = PeepholeParams
  Carry: ClassVar[type] = LSTMCarry

  def param_specs(self, in_size, hidden_size, unit_forget_bias=True):
    specs = lstm_specs(in_size, hidden_size, 4, 1, unit_forget_bias)
    specs['peephole'] = ParamSpec((3, hidden_size), zeros_init)
    return specs

  def fused(self, params):
    return Fused(params.kernel, params.recurrent, params.bias, params.peephole)

  def update(self, p, carry, z, scan=ScanConfig(), axis=-1):
    sig, act = gate_fn(scan), act_fn(scan)
    zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
    i = sig(zi + row(p[0], carry.c) * carry.c)
    f = sig(zf + row(p[1], carry.c) * carry.c)
    c = f * carry.c + i * act(zg)
    h = sig(zo + row(p[2], c) * c) * act(c)
    return LSTMCarry(h, c)


@register
@dataclasses.dataclass(frozen=True)
class CIFGLSTM(Cell):
  r"""Coupled input and forget gates (Greff et al. 2017), gates packed f, g, o.

  .. math::
     z &= x W + h_{t-1} U + b\\
     f &= \sigma(z_f),\ i = 1 - f,\ g = \tanh(z_g),\ o = \sigma(z_o)\\
     c_t &= f \odot c_{t-1} + (1 - f) \odot g,\quad h_t = o \odot \tanh(c_t)

  Its own update (this equation) runs on the fused loop (``fast=True``: the derived custom
  backward, the feature-major layout); ``fast=False`` scans it with JAX's autodiff.
  """
  name: ClassVar[str] = 'cifg_lstm'
  Params: ClassVar[type] = LSTMParams
  Carry: ClassVar[type] = LSTMCarry
  feature_major_ok: ClassVar[bool] = True
  fast: bool = True

  def param_specs(self, in_size, hidden_size, unit_forget_bias=True):
    return lstm_specs(in_size, hidden_size, 3, 0, unit_forget_bias)

  def fused(self, params):
    return Fused(params.kernel, params.recurrent, params.bias, ())

  def takes_fused_path(self):
    return self.fast

  def update(self, small, carry, z, scan=ScanConfig(), axis=-1):
    del small
    sig, act = gate_fn(scan), act_fn(scan)
    zf, zg, zo = jnp.split(z, 3, axis=axis)
    f = sig(zf)
    c = f * carry.c + (1.0 - f) * act(zg)
    h = sig(zo) * act(c)
    return LSTMCarry(h.astype(carry.h.dtype), c.astype(carry.c.dtype))


class LayerNormParams(NamedTuple):
  """LSTM weights plus the layer-norm gains (and the cell-norm shift)."""
  kernel: jax.Array
  recurrent: jax.Array
  bias: jax.Array
  input_scale: jax.Array  # (4H,) gain of LN(x W)
  recurrent_scale: jax.Array  # (4H,) gain of LN(h U)
  cell_scale: jax.Array  # (H,) gain of LN(c)
  cell_bias: jax.Array  # (H,) shift of LN(c)


@register
@dataclasses.dataclass(frozen=True)
class LayerNormLSTM(Cell):
  r"""Layer-normalized LSTM (Ba, Kiros & Hinton 2016, eqs. 20-22).

  .. math::
     z &= \mathrm{LN}(x W; \alpha_x) + \mathrm{LN}(h_{t-1} U; \alpha_h) + b
       \quad (\text{packed } i, f, g, o)\\
     c_t &= \sigma(z_f) \odot c_{t-1} + \sigma(z_i) \odot \tanh(z_g)\\
     h_t &= \sigma(z_o) \odot \tanh(\mathrm{LN}(c_t; \alpha_c, \beta_c))

  :math:`\mathrm{LN}(v; \alpha, \beta) = \alpha (v - \bar v) / \sqrt{\mathrm{var}(v) +
  \epsilon} + \beta` over the 4H (or H) features; the carry keeps the un-normalized
  ``c_t``. On the fused loop: the projection is ``x W`` (no bias), and the update normalizes
  it and ``h U`` apart (``sums_projections = False``), per row, so JAX derives its backward
  like any other cell's. The Pallas kernel does not take it (it sums the two products).
  """
  name: ClassVar[str] = 'layernorm_lstm'
  Params: ClassVar[type] = LayerNormParams
  Carry: ClassVar[type] = LSTMCarry
  sums_projections: ClassVar[bool] = False
  eps: float = 1e-5

  def param_specs(self, in_size, hidden_size, unit_forget_bias=True):
    specs = lstm_specs(in_size, hidden_size, 4, 1, unit_forget_bias)
    specs['input_scale'] = ParamSpec((4 * hidden_size,), ones_init)
    specs['recurrent_scale'] = ParamSpec((4 * hidden_size,), ones_init)
    specs['cell_scale'] = ParamSpec((hidden_size,), ones_init)
    specs['cell_bias'] = ParamSpec((hidden_size,), zeros_init)
    return specs

  def fused(self, params):
    return Fused(params.kernel, params.recurrent, None,
                 (params.bias, params.input_scale, params.recurrent_scale, params.cell_scale,
                  params.cell_bias))

  def update(self, small, carry, z, scan=ScanConfig(), axis=-1):
    bias, input_scale, recurrent_scale, cell_scale, cell_bias = small
    xw, hu = z
    sig, act = gate_fn(scan), act_fn(scan)
    xw, hu = layer_norm(xw, self.eps), layer_norm(hu, self.eps)
    z = xw * row(input_scale, xw) + row(bias, xw) + hu * row(recurrent_scale, hu)
    zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
    c = sig(zf) * carry.c + sig(zi) * act(zg)
    cn = layer_norm(c, self.eps) * row(cell_scale, c) + row(cell_bias, c)
    h = sig(zo) * act(cn)
    return LSTMCarry(h, c)


# --------------------------------------------------------------------------- GRU


class GRUParams(NamedTuple):
  """GRU weights, gates packed r, z, n (PyTorch order); ``recurrent_bias`` only if reset_after."""
  kernel: jax.Array  # (C, 3H)
  recurrent: jax.Array  # (H, 3H)
  bias: jax.Array  # (3H,) input bias
  recurrent_bias: Optional[jax.Array] = None  # (3H,) bias of h U (reset_after=True)


@register
@dataclasses.dataclass(frozen=True)
class GRU(Cell):
  r"""Gated recurrent unit (Cho et al. 2014), gates packed r, z, n.

  With ``reset_after=True`` (default; PyTorch, Keras 3, cuDNN, Flax ``GRUCell``) the reset gate
  multiplies the recurrent matmul's result, which has its own bias :math:`b_h`:

  .. math::
     a &= x W + b,\quad u = h_{t-1} U + b_h\\
     r &= \sigma(a_r + u_r),\ z = \sigma(a_z + u_z),\ n = \tanh(a_n + r \odot u_n)\\
     h_t &= (1 - z) \odot n + z \odot h_{t-1}

  With ``reset_after=False`` (the original paper; Keras ``reset_after=False``) it multiplies
  the state before the matmul, and there is one bias:

  .. math::
     n = \tanh(a_n + (r \odot h_{t-1}) U_n)

  ``reset_after=True`` runs on the fused loop (update of ``(x W + b, h U)`` with ``b_h`` as its
  small parameter). ``reset_after=False`` cannot: its step has two dependent recurrent
  matmuls (``r`` first, then ``(r h) U_n``), so it scans ``recur`` with JAX's autodiff.
  """
  name: ClassVar[str] = 'gru'
  Params: ClassVar[type] = GRUParams
  Carry: ClassVar[type] = HCarry
  sums_projections: ClassVar[bool] = False
  reset_after: bool = True

  def param_specs(self, in_size, hidden_size, unit_forget_bias=True):
    specs = lstm_specs(in_size, hidden_size, 3, None, False)
    if self.reset_after:
      specs['recurrent_bias'] = ParamSpec((3 * hidden_size,), zeros_init)
    return specs

  def fused(self, params):
    if not self.reset_after:
      return None
    return Fused(params.kernel, params.recurrent, params.bias, params.recurrent_bias)

  def update(self, recurrent_bias, carry, z, scan=ScanConfig(), axis=-1):
    sig, act = gate_fn(scan), act_fn(scan)
    xp, u = z
    ar, az, an = jnp.split(xp, 3, axis=-1)
    u = u + row(recurrent_bias, u)
    ur, uz, un = jnp.split(u, 3, axis=-1)
    r, z = sig(ar + ur), sig(az + uz)
    n = act(an + r * un)
    return HCarry((1.0 - z) * n + z * carry.h)

  def recur(self, params, carry, xp_Bx3H, scan=ScanConfig()):
    if self.reset_after:
      return super().recur(params, carry, xp_Bx3H, scan)
    sig, act = gate_fn(scan), act_fn(scan)
    h = carry.h
    ar, az, an = jnp.split(xp_Bx3H, 3, axis=-1)
    hidden = h.shape[-1]
    u = dense(h, params.recurrent[:, :2 * hidden], scan)
    ur, uz = jnp.split(u, 2, axis=-1)
    r, z = sig(ar + ur), sig(az + uz)
    n = act(an + dense(r * h, params.recurrent[:, 2 * hidden:], scan))
    h = (1.0 - z) * n + z * h
    return HCarry(h), h


# --------------------------------------------------------------------------- minimal RNNs


class MinParams(NamedTuple):
  """Input-only gates: ``kernel_CxkH`` and ``bias_kH`` (k = 3 for minLSTM, 2 for minGRU)."""
  kernel: jax.Array
  bias: jax.Array


def linear_scan(a_TxBxH, b_TxBxH, h0_BxH):
  """All ``h_t = a_t h_{t-1} + b_t`` at once, with ``jax.lax.associative_scan``.

  The pairs (a, b) compose as affine maps: applying (a1, b1) then (a2, b2) is
  (a1 a2, a2 b1 + b2), an associative operation, so the T steps take O(log T) depth.
  """
  b_TxBxH = b_TxBxH.at[0].add(a_TxBxH[0] * h0_BxH)  # fold the initial state into step 0

  def compose(first, second):
    a1, b1 = first
    a2, b2 = second
    return a1 * a2, a2 * b1 + b2

  _, h_TxBxH = jax.lax.associative_scan(compose, (a_TxBxH, b_TxBxH), axis=0)
  return h_TxBxH


@dataclasses.dataclass(frozen=True)
class MinCell(Cell):
  """Shared by minLSTM and minGRU: ``h_t = a_t h_{t-1} + b_t`` with (a, b) from x_t only.

  ``parallel=True`` runs the chunk block by block (``block`` steps each, 0: the whole chunk as
  one block): each block is projected and solved by one ``linear_scan``, and a ``lax.scan``
  hands the last h of a block to the next. Blocks keep the projected inputs in cache, where
  one whole-chunk projection of a long chunk spills to memory (docs/cells.md, "min cells").
  """
  Params: ClassVar[type] = MinParams
  Carry: ClassVar[type] = HCarry
  parallel: bool = True
  block: int = 128

  def __post_init__(self):
    if self.block < 0:
      raise ValueError(f'cell {self.name!r}: block must be >= 0 (0: one block), got {self.block}')

  def coefficients(self, xp, scan):
    """Projected input (..., kH) -> (a, b), each (..., H)."""
    raise NotImplementedError

  def recur(self, params, carry, xp_BxG, scan=ScanConfig()):
    a, b = self.coefficients(xp_BxG, scan)
    h = a * carry.h + b
    return HCarry(h), h

  def layer(self, params, carry, x_BxTxC, scan=ScanConfig()):
    check_generic_flags(self, scan)
    if not self.parallel:
      return scan_layer(self, params, carry, x_BxTxC, scan)
    if scan.hoist_input is False or scan.unroll:
      recurrent.warn_once(f'cell {describe(self)}: hoist_input and unroll do not apply to the '
                          'parallel scan (each block is projected at once and solved by '
                          'associative_scan); parallel=false scans step by step')
    x_TxBxC = jnp.swapaxes(x_BxTxC, 0, 1)
    steps, batch, n_in = x_TxBxC.shape
    block = min(self.block or steps, steps)
    n_blocks = steps // block

    def solve(h0_BxH, x_KxBxC):
      a, b = self.coefficients(self.project(params, x_KxBxC, scan), scan)
      h_KxBxH = linear_scan(a, b, h0_BxH)
      return h_KxBxH[-1], h_KxBxH

    head_NxKxBxC = x_TxBxC[:n_blocks * block].reshape(n_blocks, block, batch, n_in)
    h, h_NxKxBxH = jax.lax.scan(solve, carry.h, head_NxKxBxC)
    h_TxBxH = h_NxKxBxH.reshape(n_blocks * block, batch, -1)
    if steps % block:  # the remainder, one shorter block
      h, h_tail = solve(h, x_TxBxC[n_blocks * block:])
      h_TxBxH = jnp.concatenate([h_TxBxH, h_tail], axis=0)
    return HCarry(h), jnp.swapaxes(h_TxBxH, 0, 1)


@register
@dataclasses.dataclass(frozen=True)
class MinLSTM(MinCell):
  r"""minLSTM (Feng et al. 2024, "Were RNNs all we needed?"), gates packed f, i, h̃.

  .. math::
     f &= \sigma(x W_f + b_f),\ i = \sigma(x W_i + b_i),\ \tilde h = x W_h + b_h\\
     h_t &= \frac{f}{f + i} \odot h_{t-1} + \frac{i}{f + i} \odot \tilde h

  The gates do not see :math:`h_{t-1}`, so the recurrence is linear in h and ``parallel=True``
  runs it with ``jax.lax.associative_scan`` (``linear_scan``) in blocks of ``block`` steps;
  ``parallel=False`` scans ``recur`` step by step (same numbers up to rounding).
  """
  name: ClassVar[str] = 'min_lstm'

  def param_specs(self, in_size, hidden_size, unit_forget_bias=True):
    specs = lstm_specs(in_size, hidden_size, 3, 0, unit_forget_bias)
    del specs['recurrent']
    return specs

  def coefficients(self, xp, scan):
    sig = gate_fn(scan)
    zf, zi, h_tilde = jnp.split(xp, 3, axis=-1)
    f, i = sig(zf), sig(zi)
    total = f + i + 1e-12  # both hard sigmoids can be 0 at once
    return f / total, (i / total) * h_tilde


@register
@dataclasses.dataclass(frozen=True)
class MinGRU(MinCell):
  r"""minGRU (Feng et al. 2024), gates packed z, h̃.

  .. math::
     z = \sigma(x W_z + b_z),\ \tilde h = x W_h + b_h,\quad
     h_t = (1 - z) \odot h_{t-1} + z \odot \tilde h

  Parallel over time with ``jax.lax.associative_scan`` like ``min_lstm``.
  """
  name: ClassVar[str] = 'min_gru'

  def param_specs(self, in_size, hidden_size, unit_forget_bias=True):
    specs = lstm_specs(in_size, hidden_size, 2, None, False)
    del specs['recurrent']
    return specs

  def coefficients(self, xp, scan):
    zz, h_tilde = jnp.split(xp, 2, axis=-1)
    z = gate_fn(scan)(zz)
    return 1.0 - z, z * h_tilde


# --------------------------------------------------------------------------- check


def _random_problem(cell: Cell, batch: int, steps: int, in_size: int, hidden_size: int,
                    seed: int):
  """Random parameters (each perturbed, so no term is trivially zero), carry and input."""
  keys = jax.random.split(jax.random.key(seed), 4)
  params = jax.jit(lambda k: cell.init(k, in_size, hidden_size))(keys[0])
  leaves, tree = jax.tree.flatten(params)
  noise = jax.random.split(keys[1], len(leaves))
  params = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape)
                                     for k, p in zip(noise, leaves)])
  carry = cell.zero_carry(batch, hidden_size)
  carry = type(carry)(*(0.5 * jax.random.normal(k, c.shape)
                        for k, c in zip(jax.random.split(keys[2], len(carry)), carry)))
  x = jax.random.normal(keys[3], (batch, steps, in_size))
  return params, carry, x


def _relative_error(got, want) -> float:
  """Largest |got - want| over the largest |want| (1 if that is below 1), over a whole tree."""
  err, scale = 0.0, 1.0
  for g, w in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
    g, w = np.asarray(g, np.float64), np.asarray(w, np.float64)
    err = max(err, float(np.max(np.abs(g - w), initial=0.0)))
    scale = max(scale, float(np.max(np.abs(w), initial=0.0)))
  return err / scale


def _loss(cell: Cell, scan: ScanConfig):
  """A loss of a chunk's outputs and its final carry, so both cotangent paths are used."""

  def loss(params, carry, x):
    new_carry, h = cell.layer(params, carry, x, scan)
    return jnp.sum(jnp.sin(h)) + sum(jnp.sum(c * c) for c in new_carry)

  return loss


def _stack_loss(cell, scan: ScanConfig):
  """``_loss`` through ``cell.stack``: every layer's carry and the top layer's outputs."""

  def loss(params, carries, x):
    new_carries, h = cell.stack(params, carries, x, scan)
    return jnp.sum(jnp.sin(h)) + sum(jnp.sum(c * c) for carry in new_carries for c in carry)

  return loss


def check(cell, options: Any = (), scan: ScanConfig = ScanConfig(), batch: int = 2,
          steps: int = 9, in_size: int = 3, hidden_size: int = 4, seed: int = 0,
          tolerance: float = 1e-5, report: Optional[Callable] = print) -> dict:
  """Checks a cell (a ``Cell``, or a registered name with ``options``) the way the tests check
  the built-in ones, and prints a short report (``report=None``: silent). Returns
  ``{check: (ok, detail)}``; every ``ok`` is True for a correct cell:

  * ``scan vs loop``: ``layer`` (the scan) against ``loop_layer`` (``step`` in Python);
  * ``two chunks``: two chunks with the carry passed on against one pass;
  * ``no retrace``: the second chunk reuses the first one's compiled program;
  * ``check_grads f64``: ``jax.test_util.check_grads`` of ``layer`` in float64 (reverse mode);
  * ``custom vs autodiff [loop]``: the gradient of the fused loop's derived backward against
    JAX differentiating the scan, on each loop form the cell runs on (``scan``; ``pallas``,
    in Pallas' interpreter off a GPU); only cells with a fused form have one;
  * ``custom vs autodiff [pallas_stack, 2 layers]``: two layers in one kernel
    (``loop='pallas_stack'``) against autodiff of the two scans, where the kernel applies.

  Float32 figures are relative to the reference's largest magnitude, ``tolerance`` at most.
  """
  from jax.test_util import check_grads  # pylint: disable=g-import-not-at-top
  if isinstance(cell, str):
    cell = get_cell(cell, options)
  results = {}
  params, carry, x = _random_problem(cell, batch, steps, in_size, hidden_size, seed)

  def record(name, ok, detail):
    results[name] = (bool(ok), detail)

  def layer(params, carry, x):
    return cell.layer(params, carry, x, scan)

  scanned = jax.jit(layer)(params, carry, x)
  err = _relative_error(scanned, jax.jit(lambda p, c, xx: loop_layer(cell, p, c, xx, scan))(
      params, carry, x))
  record('scan vs loop', err <= tolerance, f'{err:.1e}')
  traces = []

  def counted(params, carry, x):
    traces.append(1)
    return layer(params, carry, x)

  chunk = jax.jit(counted)
  cut = steps // 2
  first = chunk(params, carry, x[:, :cut])
  second = chunk(params, first[0], x[:, cut:2 * cut])
  whole = jax.jit(layer)(params, carry, x[:, :2 * cut])
  err = _relative_error((second[0], jnp.concatenate([first[1], second[1]], axis=1)), whole)
  record('two chunks', err <= tolerance, f'{err:.1e}')
  record('no retrace', len(traces) == 1, f'{len(traces)} trace(s) for 2 chunks')
  with jax.enable_x64(True):
    as64 = lambda tree: jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), tree)
    try:
      check_grads(jax.jit(layer), (as64(params), as64(carry), as64(x[:, :5])), order=1,
                  modes=('rev',), atol=1e-4, rtol=1e-4)
      record('check_grads f64', True, 'reverse mode, order 1')
    except AssertionError as e:
      record('check_grads f64', False, str(e).strip().splitlines()[-1][:120])
  fp = cell.fused(params) if cell.takes_fused_path() else None
  if fp is None:
    record('custom vs autodiff', True, 'n/a: no fused form (JAX differentiates its loop)')
  else:
    reference = jax.jit(jax.value_and_grad(
        _loss(cell, dataclasses.replace(scan, backward='autodiff', loop='scan')),
        argnums=(0, 1, 2)))(params, carry, x)
    loops = ['scan']
    if recurrent.pallas_loop.unsupported(cell, fp, hidden_size, scan.matmul_dtype) is None:
      loops.append('pallas')
    for loop in loops:
      derived = dataclasses.replace(scan, backward='custom', remat=False, loop=loop)
      got = jax.jit(jax.value_and_grad(_loss(cell, derived), argnums=(0, 1, 2)))(
          params, carry, x)
      err = _relative_error(got, reference)
      record(f'custom vs autodiff [{loop}]', err <= tolerance, f'{err:.1e}')
    if 'pallas' in loops:  # two layers in one kernel, forward and backward
      upper, upper_carry, _ = _random_problem(cell, batch, steps, hidden_size, hidden_size,
                                              seed + 1)
      problem = ([params, upper], [carry, upper_carry], x)
      grads = [jax.jit(jax.value_and_grad(_stack_loss(cell, dataclasses.replace(
          scan, backward=backward, remat=False, loop=loop)), argnums=(0, 1, 2)))(*problem)
               for backward, loop in [('autodiff', 'scan'), ('custom', 'pallas_stack')]]
      err = _relative_error(grads[1], grads[0])
      record('custom vs autodiff [pallas_stack, 2 layers]', err <= tolerance, f'{err:.1e}')
  if report is not None:
    width = max(len(k) for k in results)
    report(f'check {describe(cell)}:')
    for name, (ok, detail) in results.items():
      report(f'  {name:<{width}}  {"ok  " if ok else "FAIL"}  {detail}')
  return results
