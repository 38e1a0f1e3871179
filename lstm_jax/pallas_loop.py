"""A cell's time loop as one Pallas (Triton) kernel per layer (``ScanConfig(loop='pallas')``) or
per stack (``loop='pallas_stack'``).

On a GPU, ``lax.scan`` launches the step's kernels again at every time step, so at small batch
a step costs several microseconds of launches for a few thousand multiply-adds. Here one
kernel runs the whole chunk: program ``b`` of a ``(B,)`` grid carries sequence ``b``'s state
in registers through a ``fori_loop`` over time, reading each step's hoisted input projection
and writing the step's outputs; the recurrent weight is loaded once and stays in registers
(``KernelForm``). A stack's kernel (``stack_forward``, ``stack_backward``) runs every layer's
step ``t`` before step ``t + 1``, each layer's state and weights resident; a lone layer is a
stack of one, so both loops share one kernel body. The recurrent product is a broadcast
multiply and a row sum in f32 (Triton's ``dot`` needs 16 rows; a batch-1 step has one), so
there are no TF32 products: the kernel computes the reference's function.

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


def _const_axes(consts, layer: int) -> list:
  return [' '.join(f'q{layer}c{i}d{d}' for d in range(c.ndim)) for i, c in enumerate(consts)]


def _row_product(h, weight):
  """``h @ U`` for one row: ``(1, H) x (1, H, G) -> (1, G)`` as a broadcast multiply and a row
  sum in f32 (Triton's ``dot`` needs 16 rows)."""
  return jnp.sum(h[:, :, None] * weight, axis=1)


def _row_product_t(dz, weight):
  """``dz @ U^T`` for one row: ``(1, G) x (1, H, G) -> (1, H)``."""
  return jnp.sum(dz[:, None, :] * weight, axis=2)


class _Refs:
  """Reads a kernel's refs in the order the call passed them."""

  def __init__(self, refs):
    self._it = iter(refs)

  def one(self):
    return next(self._it)

  def take(self, n: int) -> list:
    return [next(self._it) for _ in range(n)]


def _shapes(fps, carries):
  hidden = [c.h.shape[-1] for c in carries]
  gates = [fp.recurrent.shape[-1] for fp in fps]
  return hidden, gates


def stack_forward(cell, fps, carries, x_TxBxC, cfg, save_residuals: bool,
                  form: Optional[KernelForm] = None):
  """A stack of layers' forward as one kernel per chunk: ``-> (carries, h_TxBxH, residuals)``,
  ``h`` the top layer's and ``residuals`` per layer ``(carries_TxB, zs_TxBxG)`` as
  ``recurrent._forward_scan`` returns them (with ``save_residuals``; else None).

  Step ``t`` of layer ``k + 1`` runs right after step ``t`` of layer ``k``: layer 0's step is
  ``z = xp_t + h U`` (its input projection hoisted, one einsum before the kernel), layer
  ``k``'s ``z = h_below W + b + h U``, then the cell's own pointwise update, traced in. Every
  layer's state and weights stay in the program for the whole chunk; nothing but the top
  layer's output (or the residuals) goes back to memory between steps."""
  from jax.experimental import pallas as pl
  form = FORM if form is None else form
  fp0 = fps[0]
  dtype = carries[0].h.dtype
  xs = jnp.einsum('tbc,cg->tbg', x_TxBxC, fp0.kernel,
                  preferred_element_type=dtype) + fp0.bias[None, None]
  steps = xs.shape[0]
  n_layers, hidden, gates = len(fps), *_shapes(fps, carries)
  carry_type, n_fields = type(carries[0]), len(carries[0])
  consts, updates = _lifted_per_layer(lambda c, z: cell.update((), c, z, cfg), hidden, gates,
                                      carry_type, n_fields, dtype, cotangent=False)

  def kernel(*refs):
    refs = _Refs(refs)
    xs_ref = refs.one()
    layers = []
    for k in range(n_layers):
      below = refs.take(2) if k else None  # W and b of a layer fed by the one below
      layers.append((below, refs.one(), refs.take(len(consts[k])), refs.take(n_fields)))
    final_refs = [refs.take(n_fields) for _ in range(n_layers)]
    per_step_refs = ([refs.take(n_fields + 1) for _ in range(n_layers)] if save_residuals
                     else refs.one())
    row = pl.ds(pl.program_id(0), 1)
    const_values = [[r[...] for r in layer[2]] for layer in layers]
    recurrent_w = [_weight(layer[1], form) for layer in layers]
    input_w = [None] + [_weight(layer[0][0], form) for layer in layers[1:]]
    bias = [None] + [layer[0][1][...] for layer in layers[1:]]
    first, advance = _step_inputs([(xs_ref, pl.ds(0, gates[0]))], row, steps, form)

    def step(t, state):
      fields, carried = state
      (below,), carried = advance(t, carried)  # layer 0's input: its hoisted projection
      new_fields = []
      for k in range(n_layers):
        c = carry_type(*fields[k])
        xp = below if k == 0 else _row_product(below, input_w[k]()) + bias[k]
        z = xp + _row_product(c.h, recurrent_w[k]())
        c = updates[k](const_values[k], c, z)
        if save_residuals:
          for ref, value in zip(per_step_refs[k], tuple(c) + (z,)):
            ref[t, row, :] = value
        below = c.h
        new_fields.append(tuple(c))
      if not save_residuals:
        per_step_refs[t, row, :] = below
      return tuple(new_fields), carried

    _over_time(step, steps, first, row, [layer[3] for layer in layers], final_refs)

  operands, operand_axes = [xs], ['t b g0']
  for k, (fp, carry) in enumerate(zip(fps, carries)):
    if k:
      operands += [fp.kernel, fp.bias[None]]
      operand_axes += [f'k{k - 1} g{k}', f'one{k} g{k}']
    operands += [fp.recurrent, *consts[k], *carry]
    operand_axes += [f'k{k} g{k}', *_const_axes(consts[k], k)] + [f'b k{k}'] * n_fields
  result_axes = [f'b k{k}' for k in range(n_layers) for _ in range(n_fields)]
  if save_residuals:
    result_axes += [a for k in range(n_layers) for a in [f't b k{k}'] * n_fields + [f't b g{k}']]
  else:
    result_axes.append(f't b k{n_layers - 1}')

  outs = _run(kernel, operands, operand_axes, result_axes, steps, hidden, gates, dtype)
  new_carries = []
  for carry in carries:
    finals, outs = outs[:n_fields], outs[n_fields:]
    new_carries.append(carry_type(*(o.astype(c.dtype) for o, c in zip(finals, carry))))
  if not save_residuals:
    return tuple(new_carries), outs[0], None
  residuals = []
  for _ in range(n_layers):
    per_step, outs = outs[:n_fields + 1], outs[n_fields + 1:]
    residuals.append((carry_type(*per_step[:n_fields]), per_step[-1]))
  return tuple(new_carries), residuals[-1][0].h, residuals


def _over_time(step, steps: int, first, row, start_refs, end_refs) -> None:
  """A kernel's time loop: ``step`` over ``steps`` from every layer's state read from
  ``start_refs`` (and ``first``, the prefetched inputs), the state at the end written to
  ``end_refs``."""
  start = tuple(tuple(r[row, :] for r in refs) for refs in start_refs)
  fields, _ = jax.lax.fori_loop(0, steps, step, (start, first))
  for refs, values in zip(end_refs, fields):
    for ref, value in zip(refs, values):
      ref[row, :] = value


def _lifted_per_layer(fn, hidden: list, gates: list, carry_type, n_fields: int, dtype,
                      cotangent: bool):
  """``_lifted`` of ``fn(carry, z)`` (``cotangent``: ``fn(carry, z, d_carry)``) at each
  layer's row shapes: ``-> (consts per layer, run per layer)``."""
  consts, runs = [], []
  for h, g in zip(hidden, gates):
    row_carry = carry_type(*(jnp.zeros((1, h), dtype) for _ in range(n_fields)))
    args = (row_carry, jnp.zeros((1, g), dtype)) + ((row_carry,) if cotangent else ())
    layer_consts, run = _lifted(fn, *args)
    consts.append(layer_consts)
    runs.append(run)
  return consts, runs


def _run(kernel, operands, operand_axes, result_axes, steps: int, hidden: list, gates: list,
         dtype) -> list:
  """One program per stream over ``operands``; results shaped by their axes (``t``, ``b``,
  ``k<layer>``, ``g<layer>``), split by streams over several devices."""
  sizes = {'t': steps, **{f'k{k}': h for k, h in enumerate(hidden)},
           **{f'g{k}': g for k, g in enumerate(gates)}}

  def call(*args):
    b = args[0].shape[1]  # the streams on this device
    shapes = [tuple(b if a == 'b' else sizes[a] for a in axes.split()) for axes in result_axes]
    return _call(kernel, shapes, max(hidden), b, *args, dtype=dtype)

  axes = ', '.join(operand_axes) + ' -> ' + ', '.join(result_axes)
  return list(_on_devices(call, axes)(*operands))


def stack_backward(cell, fps, cfg, dh_out_TxBxH, prevs, zss, d_carries,
                   form: Optional[KernelForm] = None):
  """The custom backward's reverse scan of a whole stack as one kernel: ``prevs[k]`` the carry
  before each step and ``zss[k]`` each step's pre-activation of layer ``k``, ``dh_out`` the
  top layer's output cotangent. Reverse step ``t`` runs the layers top down: ``jax.vjp`` of the
  cell's update, then ``dz U^T`` into the layer's ``dh`` for step ``t - 1`` and ``dz W^T``
  into the layer below's ``dh`` at step ``t``. Returns ``(d_carries_0, dzs)``."""
  from jax.experimental import pallas as pl
  form = FORM if form is None else form
  steps = dh_out_TxBxH.shape[0]
  n_layers, hidden, gates = len(fps), *_shapes(fps, d_carries)
  carry_type, n_fields = type(d_carries[0]), len(d_carries[0])
  dtype = dh_out_TxBxH.dtype

  def pullback(c, z, d_new):
    return jax.vjp(lambda cc, zz: cell.update((), cc, zz, cfg), c, z)[1](d_new)

  consts, pulls = _lifted_per_layer(pullback, hidden, gates, carry_type, n_fields, dtype,
                                    cotangent=True)

  def kernel(*refs):
    refs = _Refs(refs)
    dho_ref = refs.one()
    layers = []
    for k in range(n_layers):
      zs_ref, prev_refs, u_ref = refs.one(), refs.take(n_fields), refs.one()
      w_ref = refs.one() if k else None
      layers.append((zs_ref, prev_refs, u_ref, w_ref, refs.take(len(consts[k])),
                     refs.take(n_fields)))
    d0_refs = [refs.take(n_fields) for _ in range(n_layers)]
    dz_refs = refs.take(n_layers)
    row = pl.ds(pl.program_id(0), 1)
    const_values = [[r[...] for r in layer[4]] for layer in layers]
    recurrent_w = [_weight(layer[2], form) for layer in layers]
    input_w = [None] + [_weight(layer[3], form) for layer in layers[1:]]
    per_step = [(dho_ref, pl.ds(0, hidden[-1]))]
    for k, layer in enumerate(layers):
      per_step += [(layer[0], pl.ds(0, gates[k]))] + [(r, pl.ds(0, hidden[k])) for r in layer[1]]
    first, advance = _step_inputs(per_step, row, steps, form, reverse=True)

    def step(s, back):
      t = steps - 1 - s
      d_fields, carried = back
      loaded, carried = advance(t, carried)
      dh_above, loaded = loaded[0], loaded[1:]
      inputs = [loaded[k * (n_fields + 1):(k + 1) * (n_fields + 1)] for k in range(n_layers)]
      new_fields = [None] * n_layers
      for k in reversed(range(n_layers)):
        z_t, prev_t = inputs[k][0], inputs[k][1:]
        d_new = carry_type(*d_fields[k])
        d_new = d_new._replace(h=d_new.h + dh_above)
        d_prev, dz = pulls[k](const_values[k], carry_type(*prev_t), z_t, d_new)
        dz_refs[k][t, row, :] = dz
        d_prev = d_prev._replace(h=d_prev.h + _row_product_t(dz, recurrent_w[k]()))
        if k:
          dh_above = _row_product_t(dz, input_w[k]())
        new_fields[k] = tuple(d_prev)
      return tuple(new_fields), carried

    _over_time(step, steps, first, row, [layer[5] for layer in layers], d0_refs)

  operands, operand_axes = [dh_out_TxBxH], [f't b k{n_layers - 1}']
  for k, fp in enumerate(fps):
    operands += [zss[k], *prevs[k], fp.recurrent]
    operand_axes += [f't b g{k}'] + [f't b k{k}'] * n_fields + [f'k{k} g{k}']
    if k:
      operands.append(fp.kernel)
      operand_axes.append(f'k{k - 1} g{k}')
    operands += [*consts[k], *d_carries[k]]
    operand_axes += _const_axes(consts[k], k) + [f'b k{k}'] * n_fields
  result_axes = [f'b k{k}' for k in range(n_layers) for _ in range(n_fields)]
  result_axes += [f't b g{k}' for k in range(n_layers)]

  outs = _run(kernel, operands, operand_axes, result_axes, steps, hidden, gates, dtype)
  d0s = tuple(carry_type(*outs[k * n_fields:(k + 1) * n_fields]) for k in range(n_layers))
  return d0s, tuple(outs[n_layers * n_fields:])


def forward(cell, fp, carry, x_TxBxC, cfg, save_residuals: bool,
            form: Optional[KernelForm] = None):
  """One layer's forward as one kernel (a stack of one): ``-> (carry, h_TxBxH, residuals)``
  as ``recurrent._forward_scan`` returns them."""
  carries, h, residuals = stack_forward(cell, [fp], [carry], x_TxBxC, cfg, save_residuals, form)
  return carries[0], h, None if residuals is None else residuals[0]


def backward(cell, fp, cfg, dh_out_TxBxH, prev, zs_TxBxG, d_carry,
             form: Optional[KernelForm] = None):
  """One layer's reverse scan as one kernel (a stack of one): ``-> (d_carry_0, dz_TxBxG)``."""
  d0s, dzs = stack_backward(cell, [fp], cfg, dh_out_TxBxH, [prev], [zs_TxBxG], [d_carry], form)
  return d0s[0], dzs[0]


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
