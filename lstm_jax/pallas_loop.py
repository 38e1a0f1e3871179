"""A cell's time loop as one Pallas (Triton) kernel per layer: ``ScanConfig(loop='pallas')``.

On a GPU, ``lax.scan`` launches the step's kernels again at every time step, so at small batch
a step costs several microseconds of launches for a few thousand multiply-adds. Here one
kernel runs the whole chunk: program ``b`` of a ``(B,)`` grid carries sequence ``b``'s state
in registers through a ``fori_loop`` over time, reading each step's hoisted input projection
and writing the step's outputs; the recurrent weight is loaded once and stays in registers
(``KernelForm``). The recurrent product is a broadcast multiply and a row sum in f32 (Triton's
``dot`` needs 16 rows; a batch-1 step has one), so there are no TF32 products: the kernel
computes the reference's function.

The kernels hold no cell math of their own. Each step is ``z = x W + b + h U`` and then the
cell's pointwise ``update`` (``lstm_jax.cells.Cell.update``; for the LSTM
``lstm_jax.cell.activate_gates`` and ``lstm_update``), traced into the kernel; the backward
kernel is the custom backward's reverse scan (``recurrent._reverse_scan``): ``jax.vjp`` of
that update at each step's saved carry and pre-activation, then ``dz U^T``. Arrays the update
closes over are passed in as operands (``_lifted``). The weight gradients stay single einsums
after it. Off a GPU both kernels run in Pallas' interpreter, which is how the tests check
them against the plain scan on CPU.

With several devices, each call splits by streams where jit splits them (``_split_by_streams``):
each device runs the programs of its own streams instead of all of them.

Limits (``unsupported``): f32, the hidden size and the gate width powers of two (Triton's block
shapes), a cell whose update takes ``z`` summed and no parameters besides W, U and b, and a
weight small enough for one program's registers (a larger one is left to the compiler to
spill; not profiled). Triton lowers only some array operations (its ``concatenate`` takes two
operands of width 1, for one), so an update that uses others runs in the interpreter but not
on a GPU.

Measured on an H200 with the earlier hand-written kernels (docs/performance.md, "loop" and "The
Pallas kernel's form"): seed forward 1.8 us per step and train step 6.8-6.9 against 8.5 and
20.2 for the best ``lax.scan``; at 128 units (batch 8) forward 6.3 against 9.0, a train step
34.8 against 21.9, so ``loop='auto'`` runs 128 units on this loop for inference only. The
kernels derived from the cell's update have not been timed on a GPU.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.extend import core as jax_core
from jax.sharding import NamedSharding, PartitionSpec as P

from lstm_jax import cell as cell_lib


def _power_of_two(n: int) -> bool:
  return n > 0 and not n & (n - 1)


def unsupported(cell, fp, hidden_size: int, matmul_dtype: str) -> Optional[str]:
  """Why the kernel cannot run this layer (``None``: it can)."""
  if not _power_of_two(hidden_size):
    return f'needs a power-of-two hidden size (Triton block shapes), got {hidden_size}'
  if not _power_of_two(fp.recurrent.shape[-1]):
    return (f'needs a power-of-two gate width (Triton block shapes); cell {cell.name!r} has '
            f'{fp.recurrent.shape[-1]}')
  if matmul_dtype != 'float32':
    return f'computes in float32, got matmul_dtype={matmul_dtype!r}'
  if not cell.sums_projections:
    return f"cell {cell.name!r}'s update takes x W and h U apart; the kernel sums them"
  if fp.bias is None or jax.tree.leaves(fp.small):
    return f"cell {cell.name!r} has parameters besides W, U and b; the kernel takes only those"
  return None


class KernelForm(NamedTuple):
  """How a kernel's step gets its operands; every form computes the same function.

  ``resident_weights``: the recurrent weight is loaded once, before the time loop, and stays in
  registers (instead of a load from cache at every step).
  ``prefetch``: each step issues the loads of the next step's per-step inputs (hoisted
  projection, or the backward's factors) and carries them, so their latency overlaps the step's
  arithmetic instead of heading its critical path.
  """
  resident_weights: bool = False
  prefetch: bool = False


FORM = KernelForm(resident_weights=True)  # what the library runs (docs/performance.md)


def num_warps(hidden_size: int) -> int:
  """Warps per program (``experiments.gpu_loop_study`` varies it)."""
  return 4 if hidden_size <= 64 else 8


def on_gpu() -> bool:
  """Triton runs the kernels here; anywhere else they run in Pallas' interpreter."""
  return jax.default_backend() in ('gpu', 'cuda', 'rocm')


def _call(kernel, out_shapes, hidden_size: int, batch: int, *args, dtype=jnp.float32):
  """One program per sequence over ``dtype`` operands (f32; the tests' float64 checks run the
  interpreter in f64); ``out_shapes``: the outputs' shapes."""
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import triton as pl_triton
  f32 = dtype
  gpu = on_gpu()
  params = (pl_triton.CompilerParams(num_warps=num_warps(hidden_size), num_stages=1) if gpu
            else None)
  return pl.pallas_call(
      kernel, out_shape=tuple(jax.ShapeDtypeStruct(s, f32) for s in out_shapes),
      grid=(batch,), interpret=not gpu, compiler_params=params)(*(a.astype(f32) for a in args))


def _axes(kernel: str, n_fields: int, consts: list) -> str:
  """Operands -> results of a kernel call, by axis: t time, b streams (the batch), k hidden, g
  the packed gates; ``n_fields`` carry fields, ``consts`` the lifted constants' axes.
  Programs are independent per stream, so only b may be split across devices."""
  fields, stacked = ['b k'] * n_fields, ['t b k'] * n_fields
  if kernel == 'forward':
    return ', '.join(['t b g', 'k g'] + consts + fields) + ' -> ' + ', '.join(fields + ['t b k'])
  if kernel == 'forward_saving':
    return (', '.join(['t b g', 'k g'] + consts + fields) + ' -> '
            + ', '.join(fields + stacked + ['t b g']))
  return (', '.join(['t b k', 't b g'] + consts + stacked + ['k g'] + fields) + ' -> '
          + ', '.join(fields + ['t b g']))


def _split_by_streams(call, axes: str):
  """``call`` for jit to run on each device's shard of the streams, where it shards them.

  A ``pallas_call`` has no sharding rule, so jit would gather every stream onto every device
  and run all of them there (the same result, with no gain from the devices). This gives the
  call one (``custom_partitioning``): ``b`` keeps the sharding of the first operand's streams
  axis, and every other axis is whole on each device.
  """
  operands, results = (side.split(', ') for side in axes.split(' -> '))
  factors = list(dict.fromkeys(axes.replace(',', ' ').replace('->', ' ').split()))
  split = custom_partitioning(call)

  def shardings(mesh, streams, dims_list):
    return tuple(NamedSharding(mesh, P(*[streams if d == 'b' else None for d in dims.split()]))
                 for dims in dims_list)

  def partition(mesh, arg_shapes, result_shape):
    first = arg_shapes[0].sharding  # its axis 1 is the streams (every kernel's operand 0)
    if not isinstance(first, NamedSharding):
      return (mesh, call, tuple(r.sharding for r in result_shape),
              tuple(a.sharding for a in arg_shapes))
    streams = first.spec[1] if len(first.spec) > 1 else None
    return (first.mesh, call, shardings(first.mesh, streams, results),
            shardings(first.mesh, streams, operands))

  split.def_partition(partition, sharding_rule=axes,
                      need_replication_factors=tuple(f for f in factors if f != 'b'))
  return split


def _on_devices(call, axes: str):
  """``call``, split by streams where there are several devices (one device: unchanged)."""
  return _split_by_streams(call, axes) if jax.device_count() > 1 else call


def _weight(u_ref, form: KernelForm):
  """Returns ``weight()``: the recurrent weight as ``(1, H, G)``, read once or at each use."""
  if form.resident_weights:
    resident = u_ref[...][None]
    return lambda: resident
  return lambda: u_ref[...][None]


def _step_inputs(refs_and_blocks, row, steps: int, form: KernelForm, reverse: bool = False):
  """``(first, advance)`` for per-step inputs, each a ``(ref, block)`` read at ``[t, row, block]``.

  Without prefetch ``first`` is ``()`` and ``advance(t, carried)`` returns ``(now, ())``, the
  blocks read at step ``t``. With prefetch ``first`` holds the first step's blocks and
  ``advance`` returns them while it issues the next step's loads (clamped at the chunk's end).
  """

  def load(t):
    return tuple(ref[t, row, block] for ref, block in refs_and_blocks)

  if not form.prefetch:
    return (), lambda t, carried: (load(t), ())
  first = load(steps - 1 if reverse else 0)

  def advance(t, carried):
    nxt = jnp.maximum(t - 1, 0) if reverse else jnp.minimum(t + 1, steps - 1)
    return carried, load(nxt)
  return first, advance




def _concatenate_by_pairs(parts):
  """``jnp.concatenate(parts, axis=-1)`` for 2, 4, 8, ... parts of one width, built from
  two-way stacks, a transpose and a reshape: the forms Triton lowers (its ``concatenate`` takes
  two operands of width 1 only). ``jax.vjp`` of a gate split is such a concatenation."""
  if len(parts) == 1:
    return parts[0]
  half = len(parts) // 2
  x, y = _concatenate_by_pairs(parts[:half]), _concatenate_by_pairs(parts[half:])
  both = jnp.stack([x, y], axis=-1)  # (..., m, 2)
  both = jnp.swapaxes(both, -1, -2)  # (..., 2, m)
  return both.reshape(*x.shape[:-1], 2 * x.shape[-1])


def _eval(jaxpr, consts, *args):
  """``jax.core.eval_jaxpr`` that builds equal-width, power-of-two concatenations along the
  last axis by ``_concatenate_by_pairs`` (also inside nested jit calls)."""
  env = {}

  def read(v):
    return v.val if isinstance(v, jax_core.Literal) else env[v]

  for var, value in zip(jaxpr.constvars, consts):
    env[var] = value
  for var, value in zip(jaxpr.invars, args):
    env[var] = value
  for eqn in jaxpr.eqns:
    values = [read(v) for v in eqn.invars]
    name = eqn.primitive.name
    widths = {v.aval.shape[-1] for v in eqn.invars} if name == 'concatenate' else set()
    if (name == 'concatenate' and eqn.params['dimension'] == eqn.invars[0].aval.ndim - 1
        and len(values) > 1 and not len(values) & (len(values) - 1) and len(widths) == 1):
      outs = [_concatenate_by_pairs(values)]
    elif name in ('pjit', 'jit', 'closed_call') and 'jaxpr' in eqn.params:
      inner = eqn.params['jaxpr']
      outs = _eval(inner.jaxpr, inner.consts, *values)
    else:
      outs = eqn.primitive.bind(*values, **eqn.params)
      outs = outs if eqn.primitive.multiple_results else [outs]
    for var, value in zip(eqn.outvars, outs):
      env[var] = value
  return [read(v) for v in jaxpr.outvars]


def _lifted(fn, *example_args):
  """``fn`` as ``(consts, run)``: the arrays ``fn`` closes over (a kernel may not capture
  constants) and ``run(const_values, *args)``, which evaluates ``fn`` on ``args`` with the
  constants as given (each kernel passes them in as operands and reads them inside)."""
  closed, out_shape = jax.make_jaxpr(fn, return_shape=True)(*example_args)
  out_tree = jax.tree.structure(out_shape)

  def run(const_values, *args):
    out = _eval(closed.jaxpr, list(const_values), *jax.tree.leaves(args))
    return jax.tree.unflatten(out_tree, out)

  dtype = jax.tree.leaves(example_args)[0].dtype
  return [jnp.asarray(c, dtype) for c in closed.consts], run


def _const_axes(consts) -> list:
  return [' '.join(f'q{i}d{d}' for d in range(c.ndim)) for i, c in enumerate(consts)]


def forward(cell, fp, carry, x_TxBxC, cfg, save_residuals: bool,
            form: Optional[KernelForm] = None):
  """The layer's forward as one kernel: ``-> (carry, h_TxBxH, residuals)`` as
  ``recurrent._forward_scan`` returns them (residuals: every step's carry and pre-activation,
  with ``save_residuals``). Each step is ``z = xp_t + h U`` and then the cell's own pointwise
  update, traced into the kernel."""
  from jax.experimental import pallas as pl
  form = FORM if form is None else form
  xs = jnp.einsum('tbc,cg->tbg', x_TxBxC, fp.kernel,
                  preferred_element_type=carry.h.dtype) + fp.bias[None, None]
  steps, _, gates = xs.shape
  hidden = carry.h.shape[-1]
  carry_type, n_fields = type(carry), len(carry)
  dtype = carry.h.dtype
  row_carry = carry_type(*(jnp.zeros((1, hidden), dtype) for _ in carry))
  consts, update = _lifted(lambda c, z: cell.update((), c, z, cfg), row_carry,
                           jnp.zeros((1, gates), dtype))
  n_consts = len(consts)

  def kernel(xs_ref, u_ref, *refs):
    const_values = [r[...] for r in refs[:n_consts]]
    refs = refs[n_consts:]
    carry0_refs, out_refs = refs[:n_fields], refs[n_fields:]
    final_refs, per_step_refs = out_refs[:n_fields], out_refs[n_fields:]
    b = pl.program_id(0)
    row = pl.ds(b, 1)
    weight = _weight(u_ref, form)
    first, advance = _step_inputs([(xs_ref, pl.ds(0, gates))], row, steps, form)

    def step(t, state):
      fields, carried = state
      (xs_t,), carried = advance(t, carried)
      c = carry_type(*fields)
      z = xs_t + jnp.sum(c.h[:, :, None] * weight(), axis=1)  # h[j] times row j of U
      c = update(const_values, c, z)
      if save_residuals:
        for ref, value in zip(per_step_refs, tuple(c) + (z,)):
          ref[t, row, :] = value
      else:
        per_step_refs[0][t, row, :] = c.h
      return tuple(c), carried

    fields, _ = jax.lax.fori_loop(0, steps, step,
                                  (tuple(r[row, :] for r in carry0_refs), first))
    for ref, value in zip(final_refs, fields):
      ref[row, :] = value

  def call(xs, u, *rest):
    b = xs.shape[1]  # the streams on this device
    out = [(b, hidden)] * n_fields
    out += ([(steps, b, hidden)] * n_fields + [(steps, b, gates)] if save_residuals
            else [(steps, b, hidden)])
    return _call(kernel, out, hidden, b, xs, u, *rest, dtype=dtype)

  axes = _axes('forward_saving' if save_residuals else 'forward', n_fields, _const_axes(consts))
  outs = _on_devices(call, axes)(xs, fp.recurrent, *consts, *carry)
  new_carry = carry_type(*(o.astype(c.dtype) for o, c in zip(outs[:n_fields], carry)))
  if not save_residuals:
    return new_carry, outs[n_fields], None
  carries = carry_type(*outs[n_fields:2 * n_fields])
  return new_carry, carries.h, (carries, outs[-1])


def backward(cell, fp, cfg, dh_out_TxBxH, prev, zs_TxBxG, d_carry,
             form: Optional[KernelForm] = None):
  """The custom backward's reverse scan as one kernel: each step ``jax.vjp`` of the cell's
  update at the saved carry ``prev`` (the carry before each step) and pre-activation, then
  ``dz @ U^T`` into ``dh``. Returns ``(d_carry_0, dz_TxBxG)``."""
  from jax.experimental import pallas as pl
  form = FORM if form is None else form
  steps, _, hidden = dh_out_TxBxH.shape
  gates = zs_TxBxG.shape[-1]
  carry_type, n_fields = type(d_carry), len(d_carry)
  dtype = dh_out_TxBxH.dtype
  row_carry = carry_type(*(jnp.zeros((1, hidden), dtype) for _ in d_carry))

  def pullback(c, z, d_new):
    return jax.vjp(lambda cc, zz: cell.update((), cc, zz, cfg), c, z)[1](d_new)

  consts, pull = _lifted(pullback, row_carry, jnp.zeros((1, gates), dtype), row_carry)
  n_consts = len(consts)

  def kernel(dho_ref, zs_ref, *refs):
    const_values = [r[...] for r in refs[:n_consts]]
    refs = refs[n_consts:]
    prev_refs, u_ref = refs[:n_fields], refs[n_fields]
    d_final_refs = refs[n_fields + 1:2 * n_fields + 1]
    d0_refs, dz_ref = refs[2 * n_fields + 1:3 * n_fields + 1], refs[-1]
    b = pl.program_id(0)
    row = pl.ds(b, 1)
    weight = _weight(u_ref, form)
    whole, all_gates = pl.ds(0, hidden), pl.ds(0, gates)
    first, advance = _step_inputs(
        [(dho_ref, whole), (zs_ref, all_gates)] + [(r, whole) for r in prev_refs], row, steps,
        form, reverse=True)

    def step(s, back):
      t = steps - 1 - s
      d_fields, carried = back
      (dh_o, z_t, *prev_t), carried = advance(t, carried)
      d_new = carry_type(*d_fields)
      d_new = d_new._replace(h=d_new.h + dh_o)
      d_prev, dz = pull(const_values, carry_type(*prev_t), z_t, d_new)
      dz_ref[t, row, :] = dz
      # dh_prev[j] += sum_g dz[g] U[j, g]
      d_prev = d_prev._replace(h=d_prev.h + jnp.sum(dz[:, None, :] * weight(), axis=2))
      return tuple(d_prev), carried

    d_fields, _ = jax.lax.fori_loop(0, steps, step,
                                    (tuple(r[row, :] for r in d_final_refs), first))
    for ref, value in zip(d0_refs, d_fields):
      ref[row, :] = value

  def call(*args):
    b = args[0].shape[1]  # the streams on this device
    return _call(kernel, [(b, hidden)] * n_fields + [(steps, b, gates)], hidden, b, *args,
                 dtype=dtype)

  axes = _axes('backward', n_fields, _const_axes(consts))
  outs = _on_devices(call, axes)(dh_out_TxBxH, zs_TxBxG, *consts, *prev, fp.recurrent, *d_carry)
  return carry_type(*outs[:n_fields]), outs[-1]


def outputs_on_random_inputs(forms, steps: int, batch: int, hidden_size: int, seed: int = 0):
  """Every output of the LSTM's forward (with residuals) and reverse kernel, per form, on one
  set of random inputs: what the parity test and the GPU study compare across ``KernelForm``s."""
  from lstm_jax import recurrent  # pylint: disable=g-import-not-at-top (it imports this module)
  keys = iter(jax.random.split(jax.random.key(seed), 12))
  rand = lambda *shape: jax.random.normal(next(keys), shape)
  n = hidden_size
  cell, cfg = recurrent.lstm_math(), recurrent.ScanConfig(loop='pallas')
  fp = recurrent.Fused(rand(2, 4 * n), 0.3 * rand(n, 4 * n), rand(4 * n), ())
  carry = cell_lib.LSTMCarry(rand(batch, n), rand(batch, n))
  x = rand(steps, batch, 2)
  prev = cell_lib.LSTMCarry(rand(steps, batch, n), rand(steps, batch, n))
  bwd = (rand(steps, batch, n), prev, rand(steps, batch, 4 * n),
         cell_lib.LSTMCarry(rand(batch, n), rand(batch, n)))
  return [jax.tree.leaves(forward(cell, fp, carry, x, cfg, True, form=f))
          + jax.tree.leaves(backward(cell, fp, cfg, *bwd, form=f)) for f in forms]
