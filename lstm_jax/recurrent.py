"""The time loop: a cell's layers run as a jitted ``jax.lax.scan`` with the carry passed in and out.

A cell with a fused form (``lstm_jax.cells.Cell.fused``: an input projection ``x W + b``, one
recurrent matmul ``h U`` and a pointwise update ``(small params, carry, z) -> carry``) runs on
``fused_layer``; the LSTM's update is ``lstm_jax.cell.activate_gates`` then ``lstm_update``,
looked up in that module at trace time. Two backwards compute the same gradients:

* ``autodiff``: JAX differentiates the scan.
* ``custom`` (default): ``jax.custom_vjp``. The forward saves each step's pre-activation and
  carry; the reverse scan applies ``jax.vjp`` of the cell's update at each step and the
  transposed recurrent matmul ``dhu @ U^T``; the weight gradients are single einsums over all
  time steps after the loop instead of per-step accumulations inside it. No derivative is
  written by hand: editing the cell's update changes the backward with it.
"""
from __future__ import annotations

import dataclasses
import functools
import os
import re
import shlex
import warnings
from typing import Any, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp

from lstm_jax import cell as cell_lib
from lstm_jax import cudnn_loop
from lstm_jax import pallas_loop
from lstm_jax.cell import LSTMCarry, LSTMParams

# XLA CPU compiles a while loop that touches fewer bytes than this as one function ("small while
# loop" path) instead of running each op of each step as its own runtime kernel. 10 MB takes
# in every loop of the seed model's forward and train step (all six need 1 MB) and none of the
# wide or long workloads' loops, whose time is in their matmuls (docs/performance.md, "Small loops as one function").
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


LOOPS = ('auto', 'scan', 'pallas', 'pallas_stack', 'cudnn')


@dataclasses.dataclass(frozen=True)
class ScanConfig:
  """Static options of the time loop (hashable, so it can be a jit static argument).

  Attributes:
    recurrent_activation: ``sigmoid`` | ``hard_sigmoid`` (Keras 2, slope 0.2) |
      ``hard_sigmoid_keras3`` (slope 1/6).
    activation: ``tanh``.
    hoist_input: compute ``x W + b`` for the whole chunk in one matmul before the scan
      (``True``), or ``[x_t, h] @ [W; U]`` inside it (``False``). ``None`` picks per platform:
      in-loop on CPU, hoisted elsewhere (docs/performance.md, "hoist_input"); hoisted for a
      cell whose update takes ``x W + b`` and ``h U`` apart (no fused product to gain).
    unroll: ``lax.scan`` unroll factor; 0 picks: 4 on a GPU; at batch 1 on CPU, 4 for the
      custom backward's forward (the one that saves residuals) and 2 for its reverse scan; 1
      otherwise (docs/performance.md, "unroll": unroll speeds up that train step and slows inference; the reverse
      scan's 2 instead of 4 costs about 2% of the step and saves about 0.5 s of compile). With
      small loops compiled as one function (``use_small_loop_kernels``), 1 there too: the
      step was then 1.18x faster at unroll 1 than at 4/2, and compiled in 1.6 s instead of 2.5.
    backward: ``custom`` (the VJP derived from the cell's pointwise update, see the module
      docstring) or ``autodiff`` (JAX differentiates the scan: the reference).
    matmul_dtype: ``float32`` or ``bfloat16`` matmul operands; carry and cell state stay f32.
    remat: recompute each step in the backward pass instead of saving it (``autodiff`` only).
    layout: the LSTM inference scan's layout: ``batch`` (state (B, H), ``z = [x, h] @ [W; U]``) or
      ``feature`` (state (H, B), ``z^T = [W; U]^T @ [x, h]^T``: the weight is the left
      operand, which XLA CPU's matmul runs faster when it is large). ``auto`` picks feature
      on CPU with the custom backward (whose training forward stays batch-major) where it
      measured faster: batch >= 8 with hidden >= 256, and batch 8-15 with hidden 128-255;
      batch otherwise (docs/performance.md, "layout"). Only cells whose update takes the
      gates' axis (``Cell.feature_major_ok``: the LSTM, CIFG) run feature-major; for others
      ``feature`` is warned about once and the batch-major scan runs.
    loop: ``scan`` (``lax.scan`` over the step) or ``pallas`` (one Pallas/Triton kernel runs
      the whole chunk, forward and the custom backward's reverse scan: no per-step launches
      on a GPU; ``lstm_jax.pallas_loop``). ``pallas`` needs the custom backward, f32 matmuls
      and a power-of-two hidden size; on CPU it runs in Pallas' interpreter (tests only).
      ``auto`` picks ``pallas`` per layer on a GPU where it applies and measured faster
      (hidden <= 64, and <= 128 for inference; measured at batch 1 and 8, and allowed up to
      batch 128 because one program per sequence takes the same time until programs outnumber
      the multiprocessors), ``scan`` elsewhere (docs/performance.md, "loop"). The kernel
      traces the cell's own update (forward) and its ``jax.vjp`` (backward); cells that do
      not fit it are refused with ``pallas`` and run the scan with ``auto``.
      ``pallas_stack``: every layer of a stack in one kernel per chunk, step ``t`` of layer
      ``k + 1`` right after step ``t`` of layer ``k`` (``recurrent.fused_stack``; the same
      limits per layer); ``auto`` does not pick it until it is timed on a GPU.
      ``cudnn``: the stock LSTM through cuDNN (``lstm_jax.cudnn_loop``; a CUDA GPU only,
      refused for any other cell or an edited ``lstm_jax.cell``); explicit only: through
      ``jax.experimental.rnn`` it ran seed 16-17x slower than the Pallas kernel and long
      2.0-2.4x slower than our best loop on an H200, host-bound (docs/performance.md, "loop").
      ``describe_loops`` says which loop each layer runs on (training logs it).
  """
  recurrent_activation: str = 'sigmoid'
  activation: str = 'tanh'
  hoist_input: Optional[bool] = None
  unroll: int = 0
  backward: str = 'custom'
  matmul_dtype: str = 'float32'
  remat: bool = False
  layout: str = 'auto'
  loop: str = 'auto'

  def __post_init__(self):
    cell_lib.check_activations(self.recurrent_activation, self.activation)
    if self.backward not in ('custom', 'autodiff'):
      raise ValueError(f"backward must be 'custom' or 'autodiff', got {self.backward!r}")
    if self.matmul_dtype not in ('float32', 'bfloat16'):
      raise ValueError(f"matmul_dtype must be 'float32' or 'bfloat16', got {self.matmul_dtype!r}")
    if self.layout not in ('auto', 'batch', 'feature'):
      raise ValueError(f"layout must be 'auto', 'batch' or 'feature', got {self.layout!r}")
    if self.loop not in LOOPS:
      raise ValueError(f'loop must be one of {", ".join(map(repr, LOOPS))}, got {self.loop!r}')
    if self.loop in ('pallas', 'pallas_stack', 'cudnn') and (self.backward != 'custom'
                                                             or self.remat):
      raise ValueError(f"loop={self.loop!r} needs backward='custom' and remat=False (its "
                       'kernels have no autodiff rule; cuDNN brings its own backward)')
    if self.unroll < 0:
      raise ValueError(f'unroll must be >= 1, or 0 to pick per platform, got {self.unroll}')

  @staticmethod
  def latency_bound(batch_size: int) -> bool:
    """Batch 1 on CPU: each step's kernel launches, not its arithmetic, set the pace."""
    return batch_size == 1 and jax.default_backend() == 'cpu'

  def compiler_options(self, batch_size: int) -> Optional[dict]:
    """XLA options for a jitted program over this scan (train step or inference). Latency-bound:
    LLVM at -O1, whose code for the loop's tiny kernels runs 6-12% faster forward, as fast in
    training, and compiles about 20% sooner (docs/performance.md, "LLVM -O1"); results are bit-identical (no
    fast-math at any level)."""
    return {'xla_backend_optimization_level': 1} if self.latency_bound(batch_size) else None

  def unroll_for(self, batch_size: int, training: bool, reverse: bool = False) -> int:
    if self.unroll:
      return self.unroll
    if pallas_loop.on_gpu():
      return 4  # fewer loop trips: 0.50-0.69x the time of unroll 1 on an H200 (performance.md)
    if not (training and self.latency_bound(batch_size)) or small_loops_on():
      return 1
    return 2 if reverse else 4

  def uses_pallas(self, batch_size: int, hidden_size: int, training: bool = True) -> bool:
    """Whether a layer of this size runs on ``lstm_jax.pallas_loop`` (see ``loop``).
    ``training``: the forward that saves residuals and its backward (else inference)."""
    if self.loop != 'auto':
      return self.loop in ('pallas', 'pallas_stack')
    # With the weight held in registers (H200), 128 units at batch 8 ran inference 1.44x
    # faster than the unrolled scan, but a train step 1.59x slower (docs/performance.md, "loop").
    largest = 64 if training else 128
    return (pallas_loop.on_gpu() and self.backward == 'custom' and not self.remat
            and self.matmul_dtype == 'float32' and batch_size <= 128
            and hidden_size <= largest and not hidden_size & (hidden_size - 1))

  def feature_major(self, batch_size: int, hidden_size: int) -> bool:
    """Whether the forward that saves no residuals runs feature-major (see ``layout``)."""
    if self.layout != 'auto':
      return self.layout == 'feature'
    if self.backward != 'custom' or jax.default_backend() != 'cpu' or batch_size < 8:
      return False
    # At 128 units the weight-left product wins only while the batch is small beside 4H
    # (1.04-1.19x at batch 8, a toss-up at 16, 0.89-0.96x at 64; docs/performance.md, "layout").
    return hidden_size >= 256 or (hidden_size >= 128 and batch_size < 16)

  def hoisted(self) -> bool:
    if self.hoist_input is None:
      return jax.default_backend() != 'cpu'
    return self.hoist_input


def _mm_dtype(cfg: ScanConfig):
  return jnp.bfloat16 if cfg.matmul_dtype == 'bfloat16' else None


class Fused(NamedTuple):
  """A cell's weights as the fused time loop takes them: the input projection ``x W + b``
  (``bias`` may be None), one recurrent matmul ``h U``, and the small parameters ``small`` (any
  pytree, possibly ``()``) that only the cell's pointwise update reads."""
  kernel: jax.Array  # (C, G)
  recurrent: jax.Array  # (H, G)
  bias: Optional[jax.Array]  # (G,) or None
  small: Any = ()


_WARNED: set = set()


def warn_once(message: str) -> None:
  """``warnings.warn(message)`` the first time this process sees ``message``."""
  if message not in _WARNED:
    _WARNED.add(message)
    warnings.warn(message, stacklevel=3)


def lstm_math():
  """The LSTM as a cell of ``lstm_jax.cells`` (what ``lstm_layer`` runs)."""
  from lstm_jax import cells  # pylint: disable=g-import-not-at-top (cells imports this module)
  return cells.get_cell('lstm')


def _preactivation(cell, fp: Fused, cfg: ScanConfig, batch: int, hidden: int,
                   feature_major: bool):
  """``(xs_for(x_TxBxC), z_for(h, x_t), hoisted)``: the per-step inputs of the scan and each
  step's pre-activation ``z`` (``xp + hu``, or the pair ``(xp, hu)`` for a cell that takes them
  apart), from the projection hoisted out of the loop or ``[x_t, h] @ [W; U]`` inside it. A
  cell that takes them apart has no fused ``[W; U]`` product to gain from the loop, so
  ``hoist_input=None`` hoists its projection on every platform."""
  del batch, hidden
  dt = _mm_dtype(cfg) or fp.recurrent.dtype
  f32 = fp.recurrent.dtype
  axis = -2 if feature_major else -1

  def operand(w):  # a weight as the step's matmul takes it
    return w.T.astype(dt) if feature_major else w.astype(dt)

  def matmul(a, w):  # a @ w in batch-major terms; feature-major: w^T @ a, w already w^T
    if feature_major:
      return jnp.dot(w, a, preferred_element_type=f32)
    return jnp.dot(a, w, preferred_element_type=f32)

  def add_bias(v):
    if fp.bias is None:
      return v
    return v + (fp.bias[:, None] if feature_major else fp.bias[None, :]).astype(v.dtype)

  sums = cell.sums_projections
  u = operand(fp.recurrent)
  hoisted = cfg.hoisted() if sums or cfg.hoist_input is not None else True
  if hoisted or not sums:
    if hoisted:
      def xs_for(x_TxBxC):
        spec = 'tcb,cg->tgb' if feature_major else 'tbc,cg->tbg'
        xp = jnp.einsum(spec, x_TxBxC.astype(dt), fp.kernel.astype(dt),
                        preferred_element_type=f32)
        if fp.bias is not None:
          xp = xp + (fp.bias[:, None] if feature_major else fp.bias[None, :])[None]
        return xp

      project = lambda xp_t: xp_t
    else:
      xs_for = lambda x_TxBxC: x_TxBxC
      w = operand(fp.kernel)
      project = lambda x_t: add_bias(matmul(x_t.astype(dt), w))

    def z_for(h, x_t):
      xp, hu = project(x_t), matmul(h.astype(dt), u)
      return xp + hu if sums else (xp, hu)
    return xs_for, z_for, hoisted
  weights = operand(jnp.concatenate([fp.kernel, fp.recurrent], axis=0))

  def z_for(h, x_t):
    xh = jnp.concatenate([x_t.astype(dt), h.astype(dt)], axis=axis)
    return add_bias(matmul(xh, weights))
  return (lambda x_TxBxC: x_TxBxC), z_for, hoisted


def uses_pallas(cell, fp: Fused, cfg: ScanConfig, batch: int, hidden: int,
                training: bool) -> bool:
  """Whether this layer runs on ``lstm_jax.pallas_loop``: where ``cfg`` picks it and the cell
  fits the kernel (one summed pre-activation, a bias, no small parameters, power-of-two
  sizes). ``loop='pallas'`` where the cell does not fit is refused."""
  if not cfg.uses_pallas(batch, hidden, training):
    return False
  why = pallas_loop.unsupported(cell, fp, hidden, cfg.matmul_dtype)
  if why is None:
    return True
  if cfg.loop == 'pallas':
    raise ValueError(f"loop='pallas': {why}; use loop='scan'")
  return False


def layer_loop(cell, fp: Optional[Fused], cfg: ScanConfig, batch: int, hidden: int,
               training: bool) -> str:
  """The loop a layer runs on: ``scan``, ``pallas``, ``pallas_stack`` or ``cudnn`` (a cell
  without a fused form: ``scan``, JAX differentiating it). ``training``: the forward that saves
  residuals and its backward (else inference). Explicit choices the layer cannot take raise."""
  if fp is None:
    return 'scan'
  if cfg.loop == 'cudnn':  # only when asked for: ``auto`` never picks it (see ``loop``)
    why = cudnn_loop.unsupported(cell, cfg, cell.math_key())
    if why is not None:
      raise ValueError(f"loop='cudnn': {why}; use loop='scan'")
    return 'cudnn'
  if cfg.loop == 'pallas_stack':
    return 'pallas_stack'
  return 'pallas' if uses_pallas(cell, fp, cfg, batch, hidden, training) else 'scan'


def describe_loops(cell, sizes: Sequence[int], in_size: int, batch: int, cfg: ScanConfig,
                   training: bool) -> str:
  """Which loop each layer of a stack runs on, for the log: ``'64 units: pallas, ...'``."""
  loops = []
  for n in sizes:
    params = jax.eval_shape(lambda n=n, i=in_size: cell.init(jax.random.key(0), i, n))
    fp = cell.fused(params) if cell.takes_fused_path() else None
    loops.append(f'{n} units: {layer_loop(cell, fp, cfg, batch, n, training)}')
    in_size = n
  return (f"{', '.join(loops)} ({'train step' if training else 'inference'}, batch {batch}, "
          f'{jax.default_backend()})')


def _forward_scan(key, fp: Fused, carry, x_TxBxC, cfg: ScanConfig, save_residuals: bool):
  """Runs the layer over time (time-major). Returns ``(carry, h_TxBxH, residuals)``, the
  residuals (every step's pre-activation and carry) only with ``save_residuals``."""
  cell = key[0]
  batch, hidden = carry.h.shape
  if uses_pallas(cell, fp, cfg, batch, hidden, training=save_residuals):
    return pallas_loop.forward(cell, fp, carry, x_TxBxC, cfg, save_residuals)
  feature_major = not save_residuals and cfg.feature_major(batch, hidden)
  if feature_major and not cell.feature_major_ok:
    feature_major = False
    if cfg.layout == 'feature':
      warn_once(f"cell {cell.name!r}: its update does not take the feature-major layout "
                "(Cell.feature_major_ok), so layout='feature' does not apply; the batch-major "
                'scan runs')
  # Feature-major: every per-step array is (features, B) instead of (B, features); the
  # layer's inputs and outputs keep the batch-major layout.
  axis = -2 if feature_major else -1
  if feature_major:
    carry = jax.tree.map(lambda a: a.T, carry)
    x_TxBxC = jnp.swapaxes(x_TxBxC, 1, 2)
  xs_for, z_for, hoisted = _preactivation(cell, fp, cfg, batch, hidden, feature_major)
  # A pair (xp, hu) with xp hoisted: the residuals keep hu per step and the hoisted xs whole.
  hoisted_pair = hoisted and not cell.sums_projections

  def step(c, x_t):
    z = z_for(c.h, x_t)
    c = cell.update(fp.small, c, z, cfg, axis)
    return c, ((c, z[1] if hoisted_pair else z) if save_residuals else c.h)

  if cfg.remat:
    step = jax.checkpoint(step)
  unroll = cfg.unroll_for(batch, training=save_residuals)
  xs = xs_for(x_TxBxC)
  carry, outs = jax.lax.scan(step, carry, xs, unroll=unroll)
  if save_residuals:
    carries, zs = outs
    return carry, carries.h, (carries, (xs, zs) if hoisted_pair else zs)
  if feature_major:
    return jax.tree.map(lambda a: a.T, carry), jnp.swapaxes(outs, 1, 2), None
  return carry, outs, None


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4))
def _layer_custom(key, fp, carry, x_TxBxC, cfg):
  carry, h, _ = _forward_scan(key, fp, carry, x_TxBxC, cfg, save_residuals=False)
  return carry, h


def _layer_custom_fwd(key, fp, carry, x_TxBxC, cfg):
  new_carry, h, (carries, zs) = _forward_scan(key, fp, carry, x_TxBxC, cfg, save_residuals=True)
  return (new_carry, h), (fp, carry, x_TxBxC, carries, zs)


def _reverse_scan(cell, cfg: ScanConfig, fp: Fused, dh_out, prev, zs, d_carry):
  """The backward's recurrent part: each step the VJP of the cell's pointwise update at the
  saved carry and pre-activation, then ``dhu @ U^T`` into ``dh``. Returns
  ``(d_carry_0, d_small, dz)``."""
  f32 = dh_out.dtype
  dt = _mm_dtype(cfg) or f32
  batch = dh_out.shape[1]
  u_t = fp.recurrent.T.astype(dt)
  # Above batch 1, U^T as its own array (the barrier stops XLA folding the transpose into the
  # per-step dot's dimension numbers, which runs slower; docs/performance.md, "backward").
  if not cfg.latency_bound(batch):
    u_t = jax.lax.optimization_barrier(u_t)
  sums = cell.sums_projections

  def step(back, inputs):
    d_next, d_small = back
    dh_o, prev_t, z_t = inputs
    d_new = d_next._replace(h=d_next.h + dh_o)
    _, pullback = jax.vjp(lambda c, z, s: cell.update(s, c, z, cfg), prev_t, z_t, fp.small)
    d_prev, dz, ds = pullback(d_new)
    dhu = dz if sums else dz[1]
    d_prev = d_prev._replace(h=d_prev.h + jnp.dot(dhu.astype(dt), u_t,
                                                  preferred_element_type=f32))
    return (d_prev, jax.tree.map(jnp.add, d_small, ds)), dz

  d_small0 = jax.tree.map(jnp.zeros_like, fp.small)
  (d_carry0, d_small), dz = jax.lax.scan(
      step, (d_carry, d_small0), (dh_out, prev, zs), reverse=True,
      unroll=cfg.unroll_for(batch, training=True, reverse=True))
  return d_carry0, d_small, dz


def _previous_carries(carry0, carries):
  """The carry before each step: ``carry0`` then every step's carry but the last."""
  return jax.tree.map(lambda c0, cs: jnp.concatenate([c0[None], cs[:-1]], axis=0),
                      carry0, carries)


def _projection_grads(cell, cfg: ScanConfig, fp: Fused, x_TxBxC, prev_h, dz, d_small,
                      input_grad: bool = True):
  """A layer's weight gradients from its steps' pre-activation cotangents ``dz`` (after the
  reverse loop): ``-> (d_fused, dx)`` (``dx`` None without ``input_grad``)."""
  f32 = prev_h.dtype
  dt = _mm_dtype(cfg) or f32
  steps, batch = prev_h.shape[:2]
  dxp, dhu = (dz, dz) if cell.sums_projections else dz
  # Weight gradients: one contraction over all time steps and the batch. On one device T x B is
  # flattened into one axis (a 2-D contraction runs at about twice the GFLOP/s of the same
  # einsum over two contracting axes on XLA CPU; docs/performance.md, "backward"). With
  # several, the streams may be split over them (parallel.Placement), which a flattened axis
  # cannot keep: jit would gather dz, x and h_prev onto every device and repeat the
  # contraction there. Over t and b as two axes, each device sums its own streams and the
  # (K, G) results are all-reduced.
  lead = (steps * batch,) if jax.device_count() == 1 else (steps, batch)

  def rows(a_TxBxK):
    return a_TxBxK.reshape(*lead, a_TxBxK.shape[-1]).astype(dt)

  dxp_rows = rows(dxp)
  dhu_rows = dxp_rows if cell.sums_projections else rows(dhu)

  def weight_grad(a_TxBxK, d_rows):
    return jnp.einsum('...k,...g->kg', rows(a_TxBxK), d_rows, preferred_element_type=f32)

  dx = None
  if input_grad:
    dx = jnp.einsum('...g,cg->...c', dxp_rows, fp.kernel.astype(dt),
                    preferred_element_type=f32).reshape(x_TxBxC.shape).astype(x_TxBxC.dtype)
  d_fused = Fused(weight_grad(x_TxBxC, dxp_rows).astype(fp.kernel.dtype),
                  weight_grad(prev_h, dhu_rows).astype(fp.recurrent.dtype),
                  None if fp.bias is None else jnp.sum(dxp, axis=(0, 1)).astype(fp.bias.dtype),
                  d_small)
  return d_fused, dx


def _layer_custom_bwd(key, cfg, residuals, cotangents):
  cell = key[0]
  fp, carry0, x, carries, zs = residuals
  d_carry, dh_out = cotangents
  batch, hidden = carry0.h.shape
  prev = _previous_carries(carry0, carries)
  if uses_pallas(cell, fp, cfg, batch, hidden, training=True):
    d_carry0, dz = pallas_loop.backward(cell, fp, cfg, dh_out, prev, zs, d_carry)
    d_small = ()
  else:
    d_carry0, d_small, dz = _reverse_scan(cell, cfg, fp, dh_out, prev, zs, d_carry)
  d_fused, dx = _projection_grads(cell, cfg, fp, x, prev.h, dz, d_small)
  return d_fused, d_carry0, dx


_layer_custom.defvjp(_layer_custom_fwd, _layer_custom_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0, 4))
def _stack_custom(key, fps, carries, x_TxBxC, cfg):
  carries, h, _ = pallas_loop.stack_forward(key[0], fps, carries, x_TxBxC, cfg, False)
  return carries, h


def _stack_custom_fwd(key, fps, carries, x_TxBxC, cfg):
  new_carries, h, per_layer = pallas_loop.stack_forward(key[0], fps, carries, x_TxBxC, cfg,
                                                        True)
  return (new_carries, h), (fps, carries, x_TxBxC, per_layer)


def _stack_custom_bwd(key, cfg, residuals, cotangents):
  """The stack's reverse loop in one kernel, then each layer's weight gradients; a layer's
  input is the layer below's saved outputs (layer 0's: ``x``)."""
  cell = key[0]
  fps, carries0, x, per_layer = residuals
  d_carries, dh_out = cotangents
  prevs = [_previous_carries(c0, cs) for c0, (cs, _) in zip(carries0, per_layer)]
  d_carries0, dzs = pallas_loop.stack_backward(cell, fps, cfg, dh_out, prevs,
                                               [zs for _, zs in per_layer], d_carries)
  inputs = [x] + [cs.h for cs, _ in per_layer[:-1]]
  # Only layer 0's input gradient leaves the stack; the kernel fed the others' back already.
  d_fps, d_inputs = zip(*(
      _projection_grads(cell, cfg, fp, inp, prev.h, dz, (), input_grad=k == 0)
      for k, (fp, inp, prev, dz) in enumerate(zip(fps, inputs, prevs, dzs))))
  return tuple(d_fps), tuple(d_carries0), d_inputs[0]


_stack_custom.defvjp(_stack_custom_fwd, _stack_custom_bwd)


def stack_unsupported(cell, fps: Sequence[Optional[Fused]], cfg: ScanConfig,
                      hidden_sizes: Sequence[int]) -> Optional[str]:
  """Why a stack cannot run as one Pallas kernel (``None``: it can)."""
  if any(fp is None for fp in fps):
    return (f"cell {cell.name!r} has no fused form (one recurrent matmul and a pointwise "
            'update) for the kernel to run')
  for k, (fp, n) in enumerate(zip(fps, hidden_sizes)):
    why = pallas_loop.unsupported(cell, fp, n, cfg.matmul_dtype)
    if why is not None:
      return f'layer {k}: {why}'
  return None


def fused_stack(cell, fps: Sequence[Fused], carries, x_BxTxC, cfg: ScanConfig = ScanConfig()):
  """Every layer of a stack over a chunk in one Pallas kernel (``loop='pallas_stack'``; the
  interpreter off a GPU): ``-> (carries, h_BxTxH)``, the same function as the layers one by
  one. The backward is the stack's reverse loop in one kernel (derived from the cell's update
  by ``jax.vjp``, as the per-layer loops) and each layer's weight gradients after it."""
  why = stack_unsupported(cell, fps, cfg, [c.h.shape[-1] for c in carries])
  if why is not None:
    raise ValueError(f"loop='pallas_stack': {why}; use loop='scan'")
  key = (cell, cell.math_key())
  carries, h = _stack_custom(key, tuple(fps), tuple(carries), jnp.swapaxes(x_BxTxC, 0, 1), cfg)
  return carries, jnp.swapaxes(h, 0, 1)


def fused_layer(cell, fp: Fused, carry, x_BxTxC, cfg: ScanConfig = ScanConfig()):
  """One layer of ``cell`` (an ``lstm_jax.cells.Cell`` with a fused form) over a chunk:
  ``-> (carry, h_BxTxH)``. The cell's pointwise ``update`` is the only cell math: the forward
  scan calls it, and the custom backward differentiates it (``jax.vjp``) step by step, the
  recurrent matmul transposed and the weight gradients as einsums after the reverse loop."""
  x_TxBxC = jnp.swapaxes(x_BxTxC, 0, 1)
  # The cell's math key (the update functions it reaches through their modules) is a static
  # argument, so a traced program is never reused after the cell math is edited.
  key = (cell, cell.math_key())
  batch, hidden = carry.h.shape
  loop = layer_loop(cell, fp, cfg, batch, hidden, training=True)
  if loop == 'cudnn':
    return cudnn_loop.layer(LSTMParams(fp.kernel, fp.recurrent, fp.bias), carry, x_BxTxC)
  if loop == 'pallas_stack':  # a lone layer: a stack of one
    carries, h = fused_stack(cell, [fp], [carry], x_BxTxC, cfg)
    return carries[0], h
  if cfg.backward == 'custom' and not cfg.remat:
    carry, h = _layer_custom(key, fp, carry, x_TxBxC, cfg)
  else:
    carry, h, _ = _forward_scan(key, fp, carry, x_TxBxC, cfg, save_residuals=False)
  return carry, jnp.swapaxes(h, 0, 1)


def lstm_layer(params: LSTMParams, carry: LSTMCarry, x_BxTxC, cfg: ScanConfig = ScanConfig()):
  """One LSTM layer over a chunk. Returns ``(carry, h_BxTxH)``; the carry continues the chunk."""
  return fused_layer(lstm_math(), Fused(params.kernel, params.recurrent, params.bias, ()),
                     carry, x_BxTxC, cfg)


def lstm_stack(params: Sequence[LSTMParams], carries: Sequence[LSTMCarry], x_BxTxC,
               cfg: ScanConfig = ScanConfig()):
  """Stacked LSTM layers over a chunk (``Cell.stack``). Returns ``(carries, h_BxTxH)``."""
  return lstm_math().stack(params, carries, x_BxTxC, cfg)
