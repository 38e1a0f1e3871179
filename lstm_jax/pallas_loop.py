"""The LSTM time loop as one Pallas (Triton) kernel per layer: ``ScanConfig(loop='pallas')``.

On a GPU, ``lax.scan`` launches the step's kernels again at every time step, so at small batch
a step costs several microseconds of launches for a few thousand multiply-adds. Here one
kernel runs the whole chunk: program ``b`` of a ``(B,)`` grid carries sequence ``b``'s ``h`` and
``c`` in registers through a ``fori_loop`` over time, reading each step's hoisted input
projection (loaded one step ahead) and the recurrent weight (L1/L2-resident) and writing
``h_t``. The recurrent product is a broadcast multiply and a sum along the weight's contiguous
axis, in f32 (Triton's ``dot`` needs 16 rows; a batch-1 step has one), so there are no TF32
products: the kernel computes the reference's function.

The backward kernel is the custom backward's reverse scan (``recurrent._layer_custom_bwd``)
in the same form; the weight gradients stay single einsums after it. On CPU both kernels run in
Pallas' interpreter, which is how the tests check them against the plain scan.

Limits: f32 matmuls, the hidden size a power of two (Triton's block shapes), and a weight
small enough to stream from cache each step (the per-step temporary is ``H x H`` per gate).
"""
from __future__ import annotations

import jax
import jax.numpy as jnp

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


def num_warps(hidden_size: int) -> int:
  """Warps per program: the step's H x H products spread over 32-lane warps (about 32 values
  per lane per gate), and no more warps than that, since the row sums then cross warps
  through shared memory on the step's critical path."""
  return max(1, min(8, hidden_size * hidden_size // 1024))


def _call(kernel, out_shape, hidden_size: int, batch: int, *args):
  from jax.experimental import pallas as pl
  from jax.experimental.pallas import triton as pl_triton
  interpret = jax.default_backend() == 'cpu'
  params = None if interpret else pl_triton.CompilerParams(
      num_warps=num_warps(hidden_size), num_stages=1)
  return pl.pallas_call(kernel, out_shape=out_shape, grid=(batch,), interpret=interpret,
                        compiler_params=params)(*args)


def forward(xs_TxBx4H, recurrent_Hx4H, h0_BxH, c0_BxH, recurrent_activation: str,
            activation: str, save_residuals: bool):
  """``xs = x W + b`` for the chunk (time-major) -> ``(h_T, c_T, h_TxBxH[, gates, c_TxBxH])``."""
  from jax.experimental import pallas as pl
  steps, batch, four_h = xs_TxBx4H.shape
  n = four_h // 4
  acts = _gate_fns(recurrent_activation, activation)

  def kernel(xs_ref, ut_ref, h0_ref, c0_ref, hT_ref, cT_ref, hs_ref, *residual_refs):
    b = pl.program_id(0)
    row = pl.ds(b, 1)
    load_x = lambda t: tuple(xs_ref[t, row, pl.ds(k * n, n)] for k in range(4))

    def step(t, state):
      h, c, x_t = state
      x_next = load_x(jnp.minimum(t + 1, steps - 1))  # issued early: off the h -> h chain
      h_row = h[:, None, :]  # (1, 1, H): each gate's U^T block is (H out, H in)
      gates = []
      for k, act in enumerate(acts):
        z = x_t[k] + jnp.sum(h_row * ut_ref[pl.ds(k * n, n), :][None], axis=2)
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
      return h, c, x_next

    h, c, _ = jax.lax.fori_loop(0, steps, step, (h0_ref[row, :], c0_ref[row, :], load_x(0)))
    hT_ref[row, :] = h
    cT_ref[row, :] = c

  f32 = jnp.float32
  shape = lambda *s: jax.ShapeDtypeStruct(s, f32)
  out = [shape(batch, n), shape(batch, n), shape(steps, batch, n)]
  if save_residuals:
    out += [shape(steps, batch, four_h), shape(steps, batch, n)]
  # U^T: the step's sum then runs along the last (contiguous) axis, within a warp.
  return _call(kernel, tuple(out), n, batch, xs_TxBx4H.astype(f32),
               recurrent_Hx4H.T.astype(f32), h0_BxH.astype(f32), c0_BxH.astype(f32))


def backward(dh_out_TxBxH, pd_TxBx4H, oc_TxBxH, f_TxBxH, recurrent_Hx4H, dh_T, dc_T):
  """The reverse scan of the custom backward, from its hoisted gate-wise factors
  (``recurrent._backward_coefficients``). Returns ``(dh_0, dc_0, dz_TxBx4H)``."""
  from jax.experimental import pallas as pl
  steps, batch, n = dh_out_TxBxH.shape

  def kernel(dho_ref, pd_ref, oc_ref, f_ref, u_ref, dhT_ref, dcT_ref, dh0_ref, dc0_ref,
             dz_ref):
    b = pl.program_id(0)
    row = pl.ds(b, 1)

    def load(t):  # step t's inputs, all independent of the backward chain
      return (dho_ref[t, row, :], oc_ref[t, row, :], f_ref[t, row, :],
              tuple(pd_ref[t, row, pl.ds(k * n, n)] for k in range(4)))

    def step(s, state):
      t = steps - 1 - s
      dh_next, dc_next, (dh_o, oc, f, pd) = state
      ahead = load(jnp.maximum(t - 1, 0))
      dh = dh_o + dh_next
      dc = dc_next + dh * oc
      dh_prev = jnp.zeros_like(dh)
      for k, d in enumerate((dc, dc, dc, dh)):  # dz = [dc, dc, dc, dh] * (P * D)
        dz = d * pd[k]
        dz_ref[t, row, pl.ds(k * n, n)] = dz
        # dh_prev[j] += sum_m dz[m] U[j, k n + m]: a sum along the last axis
        dh_prev = dh_prev + jnp.sum(dz[:, None, :] * u_ref[:, pl.ds(k * n, n)][None], axis=2)
      return dh_prev, dc * f, ahead

    dh0, dc0, _ = jax.lax.fori_loop(
        0, steps, step, (dhT_ref[row, :], dcT_ref[row, :], load(steps - 1)))
    dh0_ref[row, :] = dh0
    dc0_ref[row, :] = dc0

  f32 = jnp.float32
  shape = lambda *s: jax.ShapeDtypeStruct(s, f32)
  out = (shape(batch, n), shape(batch, n), shape(steps, batch, 4 * n))
  return _call(kernel, out, n, batch, *(a.astype(f32) for a in (
      dh_out_TxBxH, pd_TxBx4H, oc_TxBxH, f_TxBxH, recurrent_Hx4H, dh_T, dc_T)))
