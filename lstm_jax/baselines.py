"""Honest baselines for noise regression: a multi-input Wiener FIR and a static per-sample MLP.

Both fit on the same training records as the LSTM (witnesses in, target out) and predict in
target units, so ``lstm_jax.metrics.evaluate`` judges them the same way.

* ``WienerFIR``: the least-squares causal FIR filter on ``n_taps`` lags of every witness (the
  discrete Wiener filter), solved in closed form from normal equations accumulated block by block
  on standardized witnesses. It is the best *linear* time-invariant subtraction.
* ``StaticMLP``: a small Flax MLP on the witnesses at the present sample only, trained with optax.
  It can learn any *memoryless* nonlinear coupling, and nothing that needs the past.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from lstm_jax import data as data_lib


def lagged(x_TxC: np.ndarray, n_taps: int, history=None) -> np.ndarray:
  """(T, C * n_taps) with column ``c * n_taps + k`` = ``x[t - k, c]``.

  Samples before the start are the last rows of ``history`` ((H, C), the samples just before
  ``x``) where given, else zeros.
  """
  x = np.asarray(x_TxC, np.float64)
  t, c = x.shape
  pad = np.zeros((n_taps - 1, c))
  if history is not None and n_taps > 1 and len(history):
    h = np.asarray(history, np.float64)[-(n_taps - 1):]
    pad[len(pad) - len(h):] = h
  padded = np.concatenate([pad, x])
  # windows[t, c, k] = padded[t + k, c]; reverse k so lag 0 comes first.
  windows = np.lib.stride_tricks.sliding_window_view(padded, n_taps, axis=0)[:t]
  return windows[:, :, ::-1].reshape(t, c * n_taps)


@dataclasses.dataclass
class WienerFIR:
  """Causal multi-input FIR: ``y[t] = b + sum_c sum_k w[c, k] x_c[t - k]``, least squares."""
  n_taps: int
  weights: np.ndarray  # (C * n_taps,) on standardized witnesses
  bias: float
  input_norm: data_lib.Normalizer
  name: str = 'wiener_fir'

  @classmethod
  def fit(cls, records: Sequence[data_lib.Recording], n_taps: int = 128,
          ridge: float = 1e-6) -> 'WienerFIR':
    """Solves the Wiener-Hopf equations ``(R + ridge tr(R)/d I) w = p`` over all records.

    ``p[c, k] = sum_t x_c[t - k] y[t]`` (exact, zeros before each record's start) and ``R`` is
    the block-Toeplitz matrix of the witnesses' auto- and cross-correlations at lags up to
    ``n_taps - 1``, all from FFTs: the lagged design matrix is never formed (its edge terms, a
    fraction ``n_taps / T`` of each sum, are dropped). The bias is the target's mean: the
    witnesses are standardized, so their means are zero.
    """
    if n_taps < 1:
      raise ValueError(f'n_taps must be >= 1, got {n_taps}')
    norm = data_lib.Normalizer.fit(np.concatenate([r.witnesses for r in records]), 'standardize',
                                   'witness channel')
    y_mean = float(np.mean(np.concatenate([r.target for r in records]), dtype=np.float64))
    n_ch = records[0].witnesses.shape[1]
    corr = np.zeros((n_ch, n_ch, 2 * n_taps - 1))  # corr[c, e, L-1+j] = sum_s x_c[s] x_e[s+j]
    cross = np.zeros((n_ch, n_taps))  # cross[c, k] = sum_t x_c[t-k] y[t]
    for rec in records:
      x = norm.apply(rec.witnesses).astype(np.float64)
      y = rec.target.astype(np.float64) - y_mean
      n_fft = 1 << int(np.ceil(np.log2(len(x) + n_taps)))
      fx = np.fft.rfft(x, n_fft, axis=0)  # (F, C)
      fy = np.fft.rfft(y, n_fft)
      # sum_s a[s] b[s + j] is irfft(conj(A) B)[j] (negative j wrap to the end).
      lags = np.r_[n_fft - n_taps + 1:n_fft, 0:n_taps]
      for c in range(n_ch):  # one channel at a time: memory n_fft x C, not n_fft x C x C
        xc = np.fft.irfft(np.conj(fx[:, c:c + 1]) * fx, n_fft, axis=0)  # (n_fft, C)
        corr[c] += xc[lags].T
      cross += np.fft.irfft(np.conj(fx) * fy[:, None], n_fft, axis=0)[:n_taps].T
    d = n_ch * n_taps
    k = np.arange(n_taps)
    # R[(c, k), (e, m)] = sum_t x_c[t-k] x_e[t-m] = corr[c, e, lag k - m].
    gram = corr[:, :, (n_taps - 1) + k[:, None] - k[None, :]]  # (C, C, K, K)
    gram = gram.transpose(0, 2, 1, 3).reshape(d, d)
    gram = 0.5 * (gram + gram.T)
    reg = ridge * np.trace(gram) / d
    w = np.linalg.solve(gram + reg * np.eye(d), cross.reshape(d))
    return cls(n_taps, w, y_mean, norm)

  def predict(self, witnesses_TxC, block: int = 1 << 15) -> np.ndarray:
    """(T,) in target units for one record; zeros (the witnesses' means) before its start."""
    return self.apply_scaled(self.input_norm.apply(witnesses_TxC), None, block)

  def apply_scaled(self, x_TxC, history=None, block: int = 1 << 15) -> np.ndarray:
    """The filter on standardized witnesses ``x`` whose ``n_taps - 1`` predecessors are
    ``history`` (standardized too; None: zeros). Streaming passes each block's tail on."""
    out = []
    for lo in range(0, len(x_TxC), block):
      hist = x_TxC[max(0, lo - self.n_taps + 1):lo] if lo else history
      out.append(lagged(x_TxC[lo:lo + block], self.n_taps, hist) @ self.weights + self.bias)
    return np.concatenate(out) if out else np.zeros(0)

  def to_dict(self) -> dict:
    return {'n_taps': self.n_taps, 'weights': np.asarray(self.weights).tolist(),
            'bias': self.bias, 'input_norm': self.input_norm.to_dict()}

  @classmethod
  def from_dict(cls, d: dict) -> 'WienerFIR':
    return cls(int(d['n_taps']), np.asarray(d['weights'], np.float64), float(d['bias']),
               data_lib.Normalizer.from_dict(d['input_norm']))


class _MLP(nn.Module):
  hidden: Sequence[int]

  @nn.compact
  def __call__(self, x_NxC):
    h = x_NxC
    for k, size in enumerate(self.hidden):
      h = nn.gelu(nn.Dense(size, name=f'hidden_{k}')(h))
    return nn.Dense(1, name='out')(h)[..., 0]


@dataclasses.dataclass
class StaticMLP:
  """Per-sample MLP: ``y[t] = f(x[t])``, no memory. Trained with Adam on random minibatches."""
  hidden: tuple
  params: dict
  input_norm: data_lib.Normalizer
  target_norm: data_lib.Normalizer
  name: str = 'static_mlp'

  @classmethod
  def fit(cls, records: Sequence[data_lib.Recording], hidden: Sequence[int] = (64, 64),
          num_steps: int = 3000, batch_size: int = 4096, learning_rate: float = 3e-3,
          seed: int = 0) -> 'StaticMLP':
    x_all = np.concatenate([r.witnesses for r in records])
    y_all = np.concatenate([r.target for r in records])
    input_norm = data_lib.Normalizer.fit(x_all, 'standardize', 'witness channel')
    target_norm = data_lib.Normalizer.fit(y_all, 'standardize', 'target channel')
    x = jnp.asarray(input_norm.apply(x_all))
    y = jnp.asarray(target_norm.apply(y_all[:, None])[:, 0])
    model = _MLP(tuple(hidden))
    key_init, key_data = jax.random.split(jax.random.key(seed))
    params = model.init(key_init, x[:1])['params']
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, num_steps, 0.01))

    def loss(p, xb, yb):
      return jnp.mean(jnp.square(model.apply({'params': p}, xb) - yb))

    @jax.jit
    def run(params):
      def step(carry, key):
        p, opt_state = carry
        idx = jax.random.randint(key, (batch_size,), 0, x.shape[0])
        value, grads = jax.value_and_grad(loss)(p, x[idx], y[idx])
        updates, opt_state = optimizer.update(grads, opt_state, p)
        return (optax.apply_updates(p, updates), opt_state), value
      (params, _), losses = jax.lax.scan(step, (params, optimizer.init(params)),
                                         jax.random.split(key_data, num_steps))
      return params, losses

    params, _ = run(params)
    return cls(tuple(hidden), jax.device_get(params), input_norm, target_norm)

  def predict(self, witnesses_TxC) -> np.ndarray:
    y = _MLP(self.hidden).apply({'params': self.params},
                                jnp.asarray(self.input_norm.apply(witnesses_TxC)))
    return self.target_norm.invert(np.asarray(y)[:, None])[:, 0]


def fit_timed(fit, *args, **kwargs):
  """``(fitted, seconds)``: wall time of a fit, with JAX work finished."""
  t0 = time.perf_counter()
  fitted = fit(*args, **kwargs)
  jax.block_until_ready(getattr(fitted, 'params', 0))
  return fitted, time.perf_counter() - t0
