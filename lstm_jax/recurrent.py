"""The time loop: LSTM layers run as a jitted ``jax.lax.scan`` with the carry passed in and out.

Two implementations of one layer compute the same function:

* ``autodiff``: ``lax.scan`` over ``lstm_cell``; JAX differentiates the scan.
* ``custom`` (default): the same forward, with a hand-written backward (``jax.custom_vjp``).
  The forward saves the activated gates and the cell state; the backward scan does only the
  recurrent part (``dz @ U^T``), and the weight gradients are single einsums over all time
  steps after the loop instead of per-step accumulations inside it.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
from typing import Optional, Sequence

import jax
import jax.numpy as jnp

from lstm_jax import cell as cell_lib
from lstm_jax import pallas_loop
from lstm_jax.cell import LSTMCarry, LSTMParams

_SLOPES = {'hard_sigmoid': 0.2, 'hard_sigmoid_keras2': 0.2, 'hard_sigmoid_keras3': 1.0 / 6.0}

# XLA CPU compiles a while loop that touches fewer bytes than this as one function ("small while
# loop" path) instead of running each op of each step as its own runtime kernel. 10 MB takes
# in every loop of the seed model's forward and train step (all six need 1 MB) and none of the
# wide or long workloads' loops, whose time is in their matmuls (BUILD_NOTES.md, stop 19).
SMALL_LOOP_BYTES = 10_000_000
_SMALL_LOOP_OPTION = 'xla_cpu_small_while_loop_byte_threshold'


def small_loop_flags(xla_flags: str, byte_threshold: int = SMALL_LOOP_BYTES) -> str:
  """``xla_flags`` (an ``XLA_FLAGS`` value) with XLA CPU's small-while-loop threshold added to
  its backend options; a threshold the user already set is kept."""
  if _SMALL_LOOP_OPTION in xla_flags:
    return xla_flags
  option = f'{_SMALL_LOOP_OPTION}={int(byte_threshold)}'
  words = shlex.split(xla_flags)
  for i, word in enumerate(words):
    if word.startswith('--xla_backend_extra_options='):
      words[i] = f'{word},{option}'
      return ' '.join(words)
  return ' '.join(words + [f'--xla_backend_extra_options={option}'])


def small_loops_on() -> bool:
  """Whether ``XLA_FLAGS`` sets a small-loop threshold that takes in batch-1 training loops
  (1 MB or more; ``use_small_loop_kernels``)."""
  found = re.search(_SMALL_LOOP_OPTION + r'=(\d+)', os.environ.get('XLA_FLAGS', ''))
  return bool(found) and int(found.group(1)) >= 1_000_000


def use_small_loop_kernels(byte_threshold: int = SMALL_LOOP_BYTES) -> None:
  """Compiles each small time loop on CPU as one function: no per-op kernel dispatch inside the
  loop (the seed model: forward 1.2x, train step 1.4x faster; the same bits). XLA reads the
  option from ``XLA_FLAGS`` once, so call this before any JAX computation; the ``experiments/``
  mains do (``cli.run_user_main``). Flax and every other JAX program in the process gain too.
  """
  flags = os.environ.get('XLA_FLAGS', '')
  new = small_loop_flags(flags, byte_threshold)
  if new == flags:
    return
  try:  # JAX has no public "has the backend started?"; without it, set the flag regardless
    from jax._src import xla_bridge  # pylint: disable=g-import-not-at-top
    started = xla_bridge.backends_are_initialized()
  except (ImportError, AttributeError):
    started = False
  if started:
    raise RuntimeError('use_small_loop_kernels() came after JAX started its backend, which has '
                       'read XLA_FLAGS already; call it before any JAX computation')
  os.environ['XLA_FLAGS'] = new


@dataclasses.dataclass(frozen=True)
class ScanConfig:
  """Static options of the time loop (hashable, so it can be a jit static argument).

  Attributes:
    recurrent_activation: ``sigmoid`` | ``hard_sigmoid`` (Keras 2, slope 0.2) |
      ``hard_sigmoid_keras3`` (slope 1/6).
    activation: ``tanh``.
    hoist_input: compute ``x W + b`` for the whole chunk in one matmul before the scan
      (``True``), or ``[x_t, h] @ [W; U]`` inside it (``False``). ``None`` picks per platform:
      in-loop on CPU, hoisted elsewhere (see BUILD_NOTES.md).
    unroll: ``lax.scan`` unroll factor; 0 picks: 4 on a GPU; at batch 1 on CPU, 4 for the
      custom backward's forward (the one that saves residuals) and 2 for its reverse scan; 1
      otherwise (BUILD_NOTES.md: unroll speeds up that train step and slows inference; the reverse
      scan's 2 instead of 4 costs about 2% of the step and saves about 0.5 s of compile). With
      small loops compiled as one function (``use_small_loop_kernels``), 1 there too: the
      step was then 1.18x faster at unroll 1 than at 4/2, and compiled in 1.6 s instead of 2.5.
    backward: ``custom`` (hand-written VJP) or ``autodiff``.
    matmul_dtype: ``float32`` or ``bfloat16`` matmul operands; carry and cell state stay f32.
    remat: recompute each step in the backward pass instead of saving it (``autodiff`` only).
    backward_gates: where the custom backward forms its gate-wise factors: ``hoisted`` (for
      all steps at once before its scan: fewer kernels per step) or ``in_loop`` (inside each
      step, from that step's saved gates: no T x B x 4H temporaries). ``auto`` picks
      hoisted for batch 1 on CPU (latency-bound), in-loop otherwise (see BUILD_NOTES.md).
    layout: the LSTM inference scan's layout: ``batch`` (state (B, H), ``z = [x, h] @ [W; U]``) or
      ``feature`` (state (H, B), ``z^T = [W; U]^T @ [x, h]^T``: the weight is the left
      operand, which XLA CPU's matmul runs faster when it is large). ``auto`` picks feature
      on CPU with the custom backward (whose training forward stays batch-major) where it
      measured faster: batch >= 8 with hidden >= 256, and batch 8-15 with hidden 128-255;
      batch otherwise (see BUILD_NOTES.md).
    loop: ``scan`` (``lax.scan`` over the step) or ``pallas`` (one Pallas/Triton kernel runs
      the whole chunk, forward and the custom backward's reverse scan: no per-step launches
      on a GPU; ``lstm_jax.pallas_loop``). ``pallas`` needs the custom backward, f32 matmuls
      and a power-of-two hidden size; on CPU it runs in Pallas' interpreter (tests only).
      ``auto`` picks ``pallas`` per layer on a GPU where it applies and measured faster
      (hidden <= 64, and <= 128 for inference; measured at batch 1 and 8, and allowed up to
      batch 128 because one program per sequence takes the same time until programs outnumber
      the multiprocessors), ``scan`` elsewhere (see BUILD_NOTES.md).
    gate_form: how the inference scan (the forward that saves no residuals) activates the
      gates: ``packed`` (one pass over all 4H pre-activations, then the cell update) or
      ``split`` (each gate activated inside the update that uses it, so XLA fuses activation
      and update: one kernel fewer per step). The training forward always saves the packed
      gates. ``auto`` picks ``split`` with the custom backward (so that only inference takes
      it) at batch 1 on CPU for 16 units and more, where it measured faster (see
      BUILD_NOTES.md). Both forms compute the same function; on the CPU measured they gave
      the same bits.
  """
  recurrent_activation: str = 'sigmoid'
  activation: str = 'tanh'
  hoist_input: Optional[bool] = None
  unroll: int = 0
  backward: str = 'custom'
  matmul_dtype: str = 'float32'
  remat: bool = False
  backward_gates: str = 'auto'
  layout: str = 'auto'
  loop: str = 'auto'
  gate_form: str = 'auto'

  def __post_init__(self):
    cell_lib.check_activations(self.recurrent_activation, self.activation)
    if self.backward not in ('custom', 'autodiff'):
      raise ValueError(f"backward must be 'custom' or 'autodiff', got {self.backward!r}")
    if self.matmul_dtype not in ('float32', 'bfloat16'):
      raise ValueError(f"matmul_dtype must be 'float32' or 'bfloat16', got {self.matmul_dtype!r}")
    if self.backward_gates not in ('auto', 'hoisted', 'in_loop'):
      raise ValueError("backward_gates must be 'auto', 'hoisted' or 'in_loop', got "
                       f'{self.backward_gates!r}')
    if self.layout not in ('auto', 'batch', 'feature'):
      raise ValueError(f"layout must be 'auto', 'batch' or 'feature', got {self.layout!r}")
    if self.gate_form not in ('auto', 'packed', 'split'):
      raise ValueError(f"gate_form must be 'auto', 'packed' or 'split', got {self.gate_form!r}")
    if self.loop not in ('auto', 'scan', 'pallas'):
      raise ValueError(f"loop must be 'auto', 'scan' or 'pallas', got {self.loop!r}")
    if self.loop == 'pallas' and (self.backward != 'custom' or self.remat):
      raise ValueError("loop='pallas' needs backward='custom' and remat=False (its kernels "
                       'have no autodiff rule)')
    if self.unroll < 0:
      raise ValueError(f'unroll must be >= 1, or 0 to pick per platform, got {self.unroll}')

  @staticmethod
  def latency_bound(batch_size: int) -> bool:
    """Batch 1 on CPU: each step's kernel launches, not its arithmetic, set the pace."""
    return batch_size == 1 and jax.default_backend() == 'cpu'

  def compiler_options(self, batch_size: int) -> Optional[dict]:
    """XLA options for a jitted program over this scan (train step or inference). Latency-bound:
    LLVM at -O1, whose code for the loop's tiny kernels runs 6-12% faster forward, as fast in
    training, and compiles about 20% sooner (BUILD_NOTES.md); results are bit-identical (no
    fast-math at any level)."""
    return {'xla_backend_optimization_level': 1} if self.latency_bound(batch_size) else None

  def unroll_for(self, batch_size: int, training: bool, reverse: bool = False) -> int:
    if self.unroll:
      return self.unroll
    if pallas_loop.on_gpu():
      return 4  # fewer loop trips: 0.50-0.69x the time of unroll 1 on an H200 (BUILD_NOTES.md)
    if not (training and self.latency_bound(batch_size)) or small_loops_on():
      return 1
    return 2 if reverse else 4

  def uses_pallas(self, batch_size: int, hidden_size: int, training: bool = True) -> bool:
    """Whether a layer of this size runs on ``lstm_jax.pallas_loop`` (see ``loop``).
    ``training``: the forward that saves residuals and its backward (else inference)."""
    if self.loop != 'auto':
      return self.loop == 'pallas'
    # With the weight held in registers (stop 20, H200), 128 units at batch 8 ran inference
    # 1.44x faster than the unrolled scan, but a train step 1.59x slower.
    largest = 64 if training else 128
    return (pallas_loop.on_gpu() and self.backward == 'custom' and not self.remat
            and self.matmul_dtype == 'float32' and batch_size <= 128
            and hidden_size <= largest and not hidden_size & (hidden_size - 1))

  def splits_gates(self, batch_size: int, hidden_size: int) -> bool:
    """Whether the inference scan activates each gate inside the cell update (see
    ``gate_form``)."""
    if self.gate_form != 'auto':
      return self.gate_form == 'split'
    # One kernel fewer per step: 4-13% faster at batch 1 for 16-128 units, slower at 8 and 12,
    # no gain at batch 8-64 (BUILD_NOTES.md, stop 18).
    return (self.backward == 'custom' and not self.remat and self.latency_bound(batch_size)
            and hidden_size >= 16)

  def hoists_backward_gates(self, batch_size: int) -> bool:
    if self.backward_gates == 'auto':
      return self.latency_bound(batch_size)
    return self.backward_gates == 'hoisted'

  def feature_major(self, batch_size: int, hidden_size: int) -> bool:
    """Whether the forward that saves no residuals runs feature-major (see ``layout``)."""
    if self.layout != 'auto':
      return self.layout == 'feature'
    if self.backward != 'custom' or jax.default_backend() != 'cpu' or batch_size < 8:
      return False
    # At 128 units the weight-left product wins only while the batch is small beside 4H
    # (1.04-1.19x at batch 8, a toss-up at 16, 0.89-0.96x at 64; BUILD_NOTES.md, stop 16).
    return hidden_size >= 256 or (hidden_size >= 128 and batch_size < 16)

  def hoisted(self) -> bool:
    if self.hoist_input is None:
      return jax.default_backend() != 'cpu'
    return self.hoist_input


def _mm_dtype(cfg: ScanConfig):
  return jnp.bfloat16 if cfg.matmul_dtype == 'bfloat16' else None


def _forward_scan(params: LSTMParams, carry: LSTMCarry, x_TxBxC, cfg: ScanConfig,
                  save_residuals: bool):
  """Runs the layer over time (time-major). Returns (carry, h_TxBxH, gates_TxBx4H, c_TxBxH)."""
  batch, hidden = carry.h.shape
  if cfg.uses_pallas(batch, hidden, training=save_residuals):
    pallas_loop.check_supported(hidden, cfg.matmul_dtype)
    xs = jnp.einsum('tbc,cg->tbg', x_TxBxC, params.kernel,
                    preferred_element_type=carry.h.dtype) + params.bias[None, None]
    h_T, c_T, *outs = pallas_loop.forward(xs, params.recurrent, carry.h, carry.c,
                                          cfg.recurrent_activation, cfg.activation,
                                          save_residuals)
    carry = LSTMCarry(h_T.astype(carry.h.dtype), c_T.astype(carry.c.dtype))
    return (carry, *outs) if save_residuals else (carry, outs[0], None, None)
  feature_major = not save_residuals and cfg.feature_major(batch, hidden)
  # Feature-major: every per-step array is (features, B) instead of (B, features); the
  # layer's inputs and outputs keep the batch-major layout.
  feature_axis = -2 if feature_major else -1
  if feature_major:
    carry = LSTMCarry(carry.h.T, carry.c.T)
    x_TxBxC = jnp.swapaxes(x_TxBxC, 1, 2)
  mm = _mm_dtype(cfg)
  dt = mm or carry.h.dtype
  f32 = carry.h.dtype

  def operand(w):  # a weight as the step's matmul takes it
    return w.T.astype(dt) if feature_major else w.astype(dt)

  def matmul(a, w):  # a @ w in batch-major terms; feature-major: w^T @ a, w already w^T
    if feature_major:
      return jnp.dot(w, a, preferred_element_type=f32)
    return jnp.dot(a, w, preferred_element_type=f32)

  bias = params.bias[:, None] if feature_major else params.bias[None, :]
  # The training forward saves the packed gates; inference may activate them where used.
  activate = (cell_lib.activate_gates_split
              if not save_residuals and cfg.splits_gates(batch, hidden)
              else cell_lib.activate_gates)
  if cfg.hoisted():
    spec = 'tcb,cg->tgb' if feature_major else 'tbc,cg->tbg'
    xs = jnp.einsum(spec, x_TxBxC.astype(dt), params.kernel.astype(dt),
                    preferred_element_type=f32) + bias[None]
    weights = operand(params.recurrent)

    def preact(h, x_t):
      return x_t + matmul(h.astype(dt), weights)
  else:
    xs = x_TxBxC
    weights = operand(jnp.concatenate([params.kernel, params.recurrent], axis=0))

    def preact(h, x_t):
      xh = jnp.concatenate([x_t.astype(dt), h.astype(dt)], axis=feature_axis)
      return matmul(xh, weights) + bias

  def step(c: LSTMCarry, x_t):
    gates = activate(preact(c.h, x_t), cfg.recurrent_activation, cfg.activation,
                     axis=feature_axis)
    c = cell_lib.lstm_update(c, gates, cfg.activation, axis=feature_axis)
    out = (c.h, gates, c.c) if save_residuals else c.h
    return c, out

  if cfg.remat:
    step = jax.checkpoint(step)
  unroll = cfg.unroll_for(batch, training=save_residuals)
  carry, outs = jax.lax.scan(step, carry, xs, unroll=unroll)
  if save_residuals:
    return (carry,) + outs
  if feature_major:
    return LSTMCarry(carry.h.T, carry.c.T), jnp.swapaxes(outs, 1, 2), None, None
  return carry, outs, None, None


def _activation_grad(y, name: str):
  """d act / d input, written in terms of the activation's output y."""
  if name == 'sigmoid':
    return y * (1.0 - y)
  if name == 'tanh':
    return 1.0 - y * y
  slope = _SLOPES[name]
  return jnp.where((y > 0.0) & (y < 1.0), slope, 0.0).astype(y.dtype)


def _backward_coefficients(gates_xBx4H, c_xBxH, c_prev_xBxH, cfg: ScanConfig):
  """Everything gate-wise the backward step needs, for one step or all steps at once.

  Returns ``pd_xBx4H = P * D`` (``D``: each gate's activation derivative, ``P``: its partner in
  the chain rule: ``g`` for ``i``, ``c_{t-1}`` for ``f``, ``i`` for ``g``, ``tanh(c_t)`` for
  ``o``), ``oc_xBxH = o (1 - tanh(c_t)^2)`` and ``f_xBxH``, with the inputs' leading axes.
  The backward scan is then a few multiply-adds and one matmul per step: at batch 1 on CPU each
  step's small ops are separate kernels, so work moved out of the loop is latency removed from
  every step. At larger batch the T x B x 4H temporaries cost more memory traffic than the
  launches they save.
  """
  i, f, g, o = jnp.split(gates_xBx4H, 4, axis=-1)
  tc = jnp.tanh(c_xBxH)
  rec = cfg.recurrent_activation
  deriv = jnp.concatenate([_activation_grad(i, rec), _activation_grad(f, rec),
                           _activation_grad(g, cfg.activation), _activation_grad(o, rec)], -1)
  partner = jnp.concatenate([g, c_prev_xBxH, i, tc], axis=-1)
  return partner * deriv, o * (1.0 - tc * tc), f


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _layer_custom(params, carry, x_TxBxC, cfg):
  carry, h, _, _ = _forward_scan(params, carry, x_TxBxC, cfg, save_residuals=False)
  return carry, h


def _layer_custom_fwd(params, carry, x_TxBxC, cfg):
  new_carry, h, gates, c = _forward_scan(params, carry, x_TxBxC, cfg, save_residuals=True)
  return (new_carry, h), (params, carry, x_TxBxC, h, gates, c)


def _reverse_scan(cfg: ScanConfig, recurrent_Hx4H, dh_out, gates, c, c_prev, dh_T, dc_T):
  """The custom backward's recurrent part as a ``lax.scan``: ``((dh_0, dc_0), dz_TxBx4H)``."""
  f32 = dh_T.dtype
  dt = _mm_dtype(cfg) or f32
  batch = dh_T.shape[0]
  # Above batch 1, U^T as its own array (the barrier stops XLA folding the transpose into the
  # per-step dot's dimension numbers, which runs slower; measured in BUILD_NOTES.md).
  u_t = recurrent_Hx4H.T.astype(dt)
  if not cfg.latency_bound(batch):
    u_t = jax.lax.optimization_barrier(u_t)
  hoisted = cfg.hoists_backward_gates(batch)

  def step(back, inputs):
    dh_next, dc_next = back
    if hoisted:  # only the recurrent part runs per step
      dh_o, pd, oc, f = inputs
    else:
      dh_o, gates_t, c_t, c_prev_t = inputs
      pd, oc, f = _backward_coefficients(gates_t, c_t, c_prev_t, cfg)
    dh = dh_o + dh_next
    dc = dc_next + dh * oc
    dz = jnp.concatenate([dc, dc, dc, dh], axis=-1) * pd
    dh_prev = jnp.dot(dz.astype(dt), u_t, preferred_element_type=f32)
    return (dh_prev, dc * f), dz

  per_step = ((dh_out,) + _backward_coefficients(gates, c, c_prev, cfg) if hoisted
              else (dh_out, gates, c, c_prev))
  return jax.lax.scan(step, (dh_T, dc_T), per_step, reverse=True,
                      unroll=cfg.unroll_for(batch, training=True, reverse=True))


def _layer_custom_bwd(cfg, residuals, cotangents):
  params, carry0, x, h, gates, c = residuals
  (dh_T, dc_T), dh_out = cotangents
  f32 = carry0.h.dtype
  dt = _mm_dtype(cfg) or f32
  steps, batch = h.shape[:2]
  h_prev = jnp.concatenate([carry0.h[None], h[:-1]], axis=0)
  c_prev = jnp.concatenate([carry0.c[None], c[:-1]], axis=0)
  if cfg.uses_pallas(batch, h.shape[-1]):
    dh0, dc0, dz = pallas_loop.backward(dh_out, *_backward_coefficients(gates, c, c_prev, cfg),
                                        params.recurrent, dh_T, dc_T)
  else:
    (dh0, dc0), dz = _reverse_scan(cfg, params.recurrent, dh_out, gates, c, c_prev, dh_T, dc_T)
  # Weight gradients: one contraction over all time steps and the batch. On one device T x B is
  # flattened into one axis (a 2-D contraction runs at about twice the GFLOP/s of the same
  # einsum over two contracting axes on XLA CPU; BUILD_NOTES.md). With several, the streams
  # may be split over them (parallel.Placement), which a flattened axis cannot keep: jit would
  # gather dz, x and h_prev onto every device and repeat the contraction there. Over t and b as
  # two axes, each device sums its own streams and the (K, 4H) results are all-reduced.
  lead = (steps * batch,) if jax.device_count() == 1 else (steps, batch)

  def rows(a_TxBxK):
    return a_TxBxK.reshape(*lead, a_TxBxK.shape[-1]).astype(dt)

  dz_rows = rows(dz)

  def weight_grad(a_TxBxK):
    return jnp.einsum('...k,...g->kg', rows(a_TxBxK), dz_rows, preferred_element_type=f32)

  dx = jnp.einsum('...g,cg->...c', dz_rows, params.kernel.astype(dt),
                  preferred_element_type=f32).reshape(x.shape).astype(x.dtype)
  d_kernel, d_recurrent = weight_grad(x), weight_grad(h_prev)
  d_bias = jnp.sum(dz, axis=(0, 1))
  d_params = LSTMParams(d_kernel.astype(params.kernel.dtype),
                        d_recurrent.astype(params.recurrent.dtype),
                        d_bias.astype(params.bias.dtype))
  return d_params, LSTMCarry(dh0, dc0), dx


_layer_custom.defvjp(_layer_custom_fwd, _layer_custom_bwd)


def lstm_layer(params: LSTMParams, carry: LSTMCarry, x_BxTxC, cfg: ScanConfig = ScanConfig()):
  """One LSTM layer over a chunk. Returns ``(carry, h_BxTxH)``; the carry continues the chunk."""
  x_TxBxC = jnp.swapaxes(x_BxTxC, 0, 1)
  if cfg.backward == 'custom' and not cfg.remat:
    carry, h = _layer_custom(params, carry, x_TxBxC, cfg)
  else:
    carry, h, _, _ = _forward_scan(params, carry, x_TxBxC, cfg, save_residuals=False)
  return carry, jnp.swapaxes(h, 0, 1)


def lstm_stack(params: Sequence[LSTMParams], carries: Sequence[LSTMCarry], x_BxTxC,
               cfg: ScanConfig = ScanConfig()):
  """Stacked layers, each a full scan over the chunk. Returns ``(carries, h_BxTxH)``."""
  new_carries = []
  h = x_BxTxC
  for p, c in zip(params, carries):
    c, h = lstm_layer(p, c, h, cfg)
    new_carries.append(c)
  return tuple(new_carries), h
