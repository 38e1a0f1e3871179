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
  def fit(cls, records: Sequence[data_lib.Recording], n_taps: int = 128, ridge: float = 1e-6,
          block: int = 1 << 15) -> 'WienerFIR':
    """Solves the normal equations ``(X'X + ridge tr(X'X)/d I) w = X'y`` over all records.

    ``X`` (lagged, standardized witnesses with a constant column) is never held whole: ``X'X``
    and ``X'y`` are accumulated ``block`` samples at a time. Each record's filter starts from
    zeros (records are independent draws).
    """
    if n_taps < 1:
      raise ValueError(f'n_taps must be >= 1, got {n_taps}')
    norm = data_lib.Normalizer.fit(np.concatenate([r.witnesses for r in records]), 'standardize',
                                   'witness channel')
    d = records[0].witnesses.shape[1] * n_taps + 1
    xtx = np.zeros((d, d))
    xty = np.zeros(d)
    for rec in records:
      x = norm.apply(rec.witnesses)
      for lo in range(0, len(x), block):
        hist = x[max(0, lo - n_taps + 1):lo]
        feats = lagged(x[lo:lo + block], n_taps, hist)
        feats = np.concatenate([feats, np.ones((len(feats), 1))], axis=1)
        y = np.asarray(rec.target[lo:lo + block], np.float64)
        xtx += feats.T @ feats
        xty += feats.T @ y
    reg = ridge * np.trace(xtx) / d
    w = np.linalg.solve(xtx + reg * np.eye(d), xty)
    return cls(n_taps, w[:-1].astype(np.float64), float(w[-1]), norm)

  def predict(self, witnesses_TxC, block: int = 1 << 15) -> np.ndarray:
    x = self.input_norm.apply(witnesses_TxC)
    out = []
    for lo in range(0, len(x), block):
      hist = x[max(0, lo - self.n_taps + 1):lo]
      out.append(lagged(x[lo:lo + block], self.n_taps, hist) @ self.weights + self.bias)
    return np.concatenate(out).astype(np.float32)


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
