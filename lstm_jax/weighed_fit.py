"""Weighed least squares with a few nonlinear numbers: what ``fringes`` and ``modes`` fit.

A residual ``r`` is explained by columns that a handful of numbers ``theta`` shape (a phase
path, a moving pole) and weights solved by least squares at each ``theta`` (variable
projection, Golub and Pereyra). Both sides are weighed by one filter (a band or a high-pass
around what the columns can hold); the rows after a settling stretch, up to two thirds, are
fitted, and the last third is held out to judge the fit.
"""
from __future__ import annotations

import numpy as np
import scipy.signal


class WeighedFit:
  """Subclasses give ``bounded(theta)`` and either ``design(theta)`` (the weighed columns,
  every row) and ``steps`` (for ``solve`` by least squares and ``jacobian`` by differences),
  or their own ``solve(theta) -> (cost, d, w, *more)`` on ``rows`` (``d`` the weighed
  columns on every row, ``w`` their weights) and ``jacobian(theta, d, w, *more)`` (d residual
  / d theta on ``rows``, the weights' span projected off)."""

  def __init__(self, r, fs: float, sos, settle_seconds: float):
    """``sos``: the weighing filter's second-order sections (None: unweighed)."""
    self.fs, self.sos = fs, sos
    self.r = self.weigh(r - np.mean(r))
    n = len(r)
    settle = int(min(settle_seconds * fs, n / 10))
    self.cut = settle + 2 * (n - settle) // 3
    self.rows = slice(settle, self.cut)

  def weigh(self, v):
    return v if self.sos is None else scipy.signal.sosfilt(self.sos, v, axis=0)

  def solve(self, theta):
    """(cost, design, weights) on ``rows``: plain least squares of the residual on
    ``design(theta)``, the weighed columns (subclasses give ``design``)."""
    d = self.design(theta)
    w = np.linalg.lstsq(d[self.rows], self.r[self.rows], rcond=None)[0]
    e = self.r[self.rows] - d[self.rows] @ w
    return float(e @ e), d, w

  def jacobian(self, theta, d, w, *more):
    """By differences of ``design`` (one step per number, ``self.steps``), the weights' span
    projected off (variable projection)."""
    rows = d[self.rows]
    base = rows @ w
    eye = np.eye(len(theta))
    j = np.stack([(self.design(theta + h * eye[k])[self.rows] @ w - base) / h
                  for k, h in enumerate(self.steps)], 1)
    return j - rows @ np.linalg.lstsq(rows, j, rcond=None)[0]

  def levenberg_marquardt(self, theta, iterations: int):
    """``(theta, cost)`` after at most ``iterations`` accepted steps, each the damped
    Gauss-Newton step (damping raised until the cost falls, at most 8 times)."""
    theta = np.asarray(theta, np.float64)
    cost, d, w, *more = self.solve(theta)
    damping = 1e-3
    for _ in range(iterations):
      j = self.jacobian(theta, d, w, *more)
      e = self.r[self.rows] - d[self.rows] @ w
      a, g = j.T @ j, j.T @ e
      for _ in range(8):
        step = np.linalg.solve(a + damping * np.diag(np.diag(a) + 1e-12), g)
        moved = self.bounded(theta + step)
        new = self.solve(moved)
        if new[0] < cost:
          theta, (cost, d, w, *more) = moved, new
          damping = max(damping / 3, 1e-9)
          break
        damping *= 4
      else:
        break
    return theta, cost

  def held_out_share(self, theta) -> tuple[float, np.ndarray]:
    """The share of the weighed residual's variance the fit explains on the last third, and
    the weights."""
    _, d, w, *_ = self.solve(theta)
    left = self.r[self.cut:] - d[self.cut:] @ w
    return 1.0 - float(np.var(left) / max(np.var(self.r[self.cut:]), 1e-300)), w
