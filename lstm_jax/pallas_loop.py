"""The LSTM time loop as one Pallas (Triton) kernel per layer: ``ScanConfig(loop='pallas')``.

On a GPU, ``lax.scan`` launches the step's kernels again at every time step, so at small batch
a step costs several microseconds of launches for a few thousand multiply-adds. Here one
kernel runs the whole chunk: program ``b`` of a ``(B,)`` grid carries sequence ``b``'s ``h`` and
``c`` in registers through a ``fori_loop`` over time, reading each step's hoisted input
projection and writing ``h_t``; the recurrent weight is loaded once and stays in registers
(``KernelForm``). The recurrent product is a broadcast multiply and a row sum in f32 (Triton's
``dot`` needs 16 rows; a batch-1 step has one), so there are no TF32 products: the kernel
computes the reference's function.

The backward kernel is the custom backward's reverse scan (``recurrent._layer_custom_bwd``)
in the same form; the weight gradients stay single einsums after it. Off a GPU both kernels run
in Pallas' interpreter, which is how the tests check them against the plain scan on CPU.

With several devices, each call splits by streams where jit splits them (``_split_by_streams``):
each device runs the programs of its own streams instead of all of them.

Limits: f32 matmuls, the hidden size a power of two (Triton's block shapes), and a weight
small enough for one program's registers (a larger one is left to the compiler to spill; not
profiled). The per-step temporary is ``H x H`` per gate.

Measured on an H200 (BUILD_NOTES.md, stops 17 and 20). Stop 17, the weight read from cache at
every step: at the seed sizes (64/16/8, batch 1) forward 3.9 us per step against 8.5 for the
best ``lax.scan`` (unroll 4), a train step 12.9 against 20.2. Stop 20, the weight's gate blocks
held in registers for the whole chunk (``KernelForm.resident_weights``, the default): seed
forward 1.8 us, train step 6.8-6.9; at 128 units (batch 8) forward 6.3 against 9.0 for the
scan, but a train step 34.8 against 21.9, so ``loop='auto'`` runs 128 units on this loop for
inference only. Prefetching each step's inputs a step ahead (``KernelForm.prefetch``) changed
nothing measurable. A form with the weight transposed (the sum along the contiguous axis) ran
1.8x (seed) and 3x (128 units) slower at stop 17 and was dropped.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import jax
import jax.numpy as jnp
from jax.experimental.custom_partitioning import custom_partitioning
from jax.sharding import NamedSharding, PartitionSpec as P

from lstm_jax import cell as cell_lib


def _gate_fns(recurrent_activation: str, activation: str):
  if recurrent_activation == 'sigmoid':
    rec = lambda v: 0.5 * jnp.tanh(0.5 * v) + 0.5  # the library's one-tanh form
  else:
    rec = cell_lib.RECURRENT_ACTIVATIONS[recurrent_activation]
  return (rec, rec, cell_lib.ACTIVATIONS[activation], rec)


def check_supported(hidden_size: int, matmul_dtype: str) -> None:
  if hidden_size & (hidden_size - 1):
    raise ValueError(f"loop='pallas' needs a power-of-two hidden size (Triton block shapes), "
                     f'got {hidden_size}; use loop=\'scan\'')
  if matmul_dtype != 'float32':
    raise ValueError(f"loop='pallas' computes in float32, got matmul_dtype={matmul_dtype!r}")


class KernelForm(NamedTuple):
  """How a kernel's step gets its operands; every form computes the same function.

  ``resident_weights``: the recurrent weight's four gate blocks are loaded once, before the time
  loop, and stay in registers (instead of a load from cache at every step).
  ``prefetch``: each step issues the loads of the next step's per-step inputs (hoisted
  projection, or the backward's factors) and carries them, so their latency overlaps the step's
  arithmetic instead of heading its critical path.
  """
  resident_weights: bool = False
  prefetch: bool = False


FORM = KernelForm(resident_weights=True)  # what the library runs (BUILD_NOTES.md, stop 20)


def num_warps(hidden_size: int) -> int:
  """Warps per program (``experiments.gpu_loop_study`` varies it)."""
  return 4 if hidden_size <= 64 else 8


def on_gpu() -> bool:
  """Triton runs the kernels here; anywhere else they run in Pallas' interpreter."""
  return jax.default_backend() in ('gpu', 'cuda', 'rocm')


def _call(kernel, out_shapes, hidden_size: int, batch: int, *args):
  """One program per sequence over f32 operands; ``out_shapes``: the f32 outputs' shapes."""
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import triton as pl_triton
  f32 = jnp.float32
  gpu = on_gpu()
  params = (pl_triton.CompilerParams(num_warps=num_warps(hidden_size), num_stages=1) if gpu
            else None)
  return pl.pallas_call(
      kernel, out_shape=tuple(jax.ShapeDtypeStruct(s, f32) for s in out_shapes),
      grid=(batch,), interpret=not gpu, compiler_params=params)(*(a.astype(f32) for a in args))


# Operands -> results of each kernel call, by axis: t time, b streams (the batch), k hidden, g the
# four gates. Programs are independent per stream, so only b may be split across devices.
_AXES = {
    'forward': 't b g, k g, b k, b k -> b k, b k, t b k',
    'forward_saving': 't b g, k g, b k, b k -> b k, b k, t b k, t b g, t b k',
    'backward': 't b k, t b g, t b k, t b k, k g, b k, b k -> b k, b k, t b g',
}


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


def _weight_blocks(u_ref, n: int, form: KernelForm):
  """Returns ``block(k)``: gate ``k``'s ``(1, H, H)`` weight block, read once or at each use."""
  from jax.experimental import pallas as pl
  if form.resident_weights:
    blocks = [u_ref[:, pl.ds(k * n, n)][None] for k in range(4)]
    return lambda k: blocks[k]
  return lambda k: u_ref[:, pl.ds(k * n, n)][None]


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


def forward(xs_TxBx4H, recurrent_Hx4H, h0_BxH, c0_BxH, recurrent_activation: str,
            activation: str, save_residuals: bool, form: Optional[KernelForm] = None):
  """``xs = x W + b`` for the chunk (time-major) -> ``(h_T, c_T, h_TxBxH[, gates, c_TxBxH])``."""
  from jax.experimental import pallas as pl
  steps, _, four_h = xs_TxBx4H.shape
  n = four_h // 4
  acts = _gate_fns(recurrent_activation, activation)
  form = FORM if form is None else form

  def kernel(xs_ref, u_ref, h0_ref, c0_ref, hT_ref, cT_ref, hs_ref, *residual_refs):
    b = pl.program_id(0)
    row = pl.ds(b, 1)
    weight = _weight_blocks(u_ref, n, form)
    first, advance = _step_inputs([(xs_ref, pl.ds(k * n, n)) for k in range(4)], row, steps,
                                  form)

    def step(t, state):
      h, c, carried = state
      xs_t, carried = advance(t, carried)
      h_col = h[:, :, None]  # (1, H, 1): h[j] times row j of each gate's weight block
      gates = []
      for k, act in enumerate(acts):
        z = xs_t[k] + jnp.sum(h_col * weight(k), axis=1)
        gates.append(act(z))
      i, f, g, o = gates
      c = f * c + i * g
      h = o * acts[2](c)
      hs_ref[t, row, :] = h
      if save_residuals:
        gates_ref, cs_ref = residual_refs
        for k, gate in enumerate(gates):
          gates_ref[t, row, pl.ds(k * n, n)] = gate
        cs_ref[t, row, :] = c
      return h, c, carried

    h, c, _ = jax.lax.fori_loop(0, steps, step, (h0_ref[row, :], c0_ref[row, :], first))
    hT_ref[row, :] = h
    cT_ref[row, :] = c

  def call(xs, u, h0, c0):
    b = xs.shape[1]  # the streams on this device
    out = [(b, n), (b, n), (steps, b, n)]
    if save_residuals:
      out += [(steps, b, four_h), (steps, b, n)]
    return _call(kernel, out, n, b, xs, u, h0, c0)

  axes = _AXES['forward_saving' if save_residuals else 'forward']
  return _on_devices(call, axes)(xs_TxBx4H, recurrent_Hx4H, h0_BxH, c0_BxH)


def backward(dh_out_TxBxH, pd_TxBx4H, oc_TxBxH, f_TxBxH, recurrent_Hx4H, dh_T, dc_T,
             form: Optional[KernelForm] = None):
  """The reverse scan of the custom backward, from its hoisted gate-wise factors
  (``recurrent._backward_coefficients``). Returns ``(dh_0, dc_0, dz_TxBx4H)``."""
  from jax.experimental import pallas as pl
  steps, _, n = dh_out_TxBxH.shape
  form = FORM if form is None else form

  def kernel(dho_ref, pd_ref, oc_ref, f_ref, u_ref, dhT_ref, dcT_ref, dh0_ref, dc0_ref,
             dz_ref):
    b = pl.program_id(0)
    row = pl.ds(b, 1)
    weight = _weight_blocks(u_ref, n, form)
    whole = pl.ds(0, n)
    first, advance = _step_inputs(
        [(dho_ref, whole), (oc_ref, whole), (f_ref, whole)]
        + [(pd_ref, pl.ds(k * n, n)) for k in range(4)], row, steps, form, reverse=True)

    def step(s, back):
      t = steps - 1 - s
      dh_next, dc_next, carried = back
      (dh_o, oc, f, *pd), carried = advance(t, carried)
      dh = dh_o + dh_next
      dc = dc_next + dh * oc
      dh_prev = jnp.zeros_like(dh)
      for k, d in enumerate((dc, dc, dc, dh)):  # dz = [dc, dc, dc, dh] * (P * D)
        dz = d * pd[k]
        dz_ref[t, row, pl.ds(k * n, n)] = dz
        # dh_prev[j] += sum_m dz[m] U[j, k n + m]
        dh_prev = dh_prev + jnp.sum(dz[:, None, :] * weight(k), axis=2)
      return dh_prev, dc * f, carried

    dh0, dc0, _ = jax.lax.fori_loop(0, steps, step, (dhT_ref[row, :], dcT_ref[row, :], first))
    dh0_ref[row, :] = dh0
    dc0_ref[row, :] = dc0

  def call(*args):
    b = args[0].shape[1]  # the streams on this device
    return _call(kernel, [(b, n), (b, n), (steps, b, 4 * n)], n, b, *args)

  return _on_devices(call, _AXES['backward'])(dh_out_TxBxH, pd_TxBx4H, oc_TxBxH, f_TxBxH,
                                              recurrent_Hx4H, dh_T, dc_T)


def outputs_on_random_inputs(forms, steps: int, batch: int, hidden_size: int, seed: int = 0):
  """Every output of the forward (with residuals) and the reverse kernel, per form, on one set
  of random inputs: what the parity test and the GPU study compare across ``KernelForm``s."""
  keys = iter(jax.random.split(jax.random.key(seed), 12))
  rand = lambda *shape: jax.random.normal(next(keys), shape)
  n = hidden_size
  xs, u = rand(steps, batch, 4 * n), 0.3 * rand(n, 4 * n)
  fwd = (xs, u, rand(batch, n), rand(batch, n))
  bwd = (rand(steps, batch, n), rand(steps, batch, 4 * n), rand(steps, batch, n),
         rand(steps, batch, n), u, rand(batch, n), rand(batch, n))
  return [forward(*fwd, 'sigmoid', 'tanh', True, form=f) + backward(*bwd, form=f)
          for f in forms]
