r"""Five recordings generated unlike the mocks: couplings the recipe was not tuned on.

Writes ``linear_resonant.npz``, ``mixed.npz``, ``bilinear.npz``, ``lin_lowpass.npz`` and
``lin_plus_am.npz`` (witnesses, target, fs and the true ``noise``) to ``--out_dir``; each is
described in docs/quality.md, "Residual FIR". Generator seeds 7, 8 and 9 made the recordings of
that table (``experiments/residual_fir_study.py`` then trains on them)::

  python -m experiments.unlike_recordings --seed=7 --out_dir=recordings7
  python -m experiments.unlike_recordings --seed=8 --seconds_scale=0.1 --out_dir=/tmp/short
"""
import os

from absl import app
from absl import flags
import numpy as np
import scipy.signal as ss

from lstm_jax import data

SEED = flags.DEFINE_integer('seed', 7, 'Generator seed (7, 8, 9 in docs/quality.md).')
OUT_DIR = flags.DEFINE_string('out_dir', 'recordings', 'Writes the five .npz files here.')
SECONDS_SCALE = flags.DEFINE_float(
    'seconds_scale', 1.0, 'Scales every recording\'s length (1: the lengths of docs/quality.md; '
    'another value draws other noise).')


def _band(rng, n, fs, lo, hi):
  """Unit-variance white noise band-passed to [lo, hi] Hz (4th-order Butterworth)."""
  sos = ss.butter(4, [lo, hi], btype='band', fs=fs, output='sos')
  x = ss.sosfilt(sos, rng.standard_normal(n))
  return x / x.std()


def _peak(x, fs, f0, q):
  """``x`` through a resonance at ``f0`` Hz of quality ``q``, at ``x``'s std."""
  b, a = ss.iirpeak(f0, q, fs=fs)
  y = ss.lfilter(b, a, x)
  return y / (y.std() + 1e-12) * x.std()


def _delay(x, k):
  return np.concatenate([np.zeros(k), x[:len(x) - k]])


def _recording(name, witnesses, noise, signal, fs) -> data.Recording:
  return data.Recording(witnesses.astype(np.float32), (signal + noise).astype(np.float32),
                        float(fs), noise.astype(np.float32), name)


def make_recordings(seed: int, seconds_scale: float = 1.0) -> list:
  """The five recordings, drawn in this order from one generator seeded with ``seed``."""
  rng = np.random.default_rng(seed)

  def length(fs, seconds):
    n = int(round(fs * seconds * seconds_scale))
    return n, np.arange(n) / fs

  out = []
  # linear_resonant: a 40 Hz, Q 5 resonance of a witness 20 samples late; 2 of 4 irrelevant.
  fs = 512
  n, _ = length(fs, 600)
  w = np.stack([_band(rng, n, fs, 5, 200) for _ in range(4)], 1)
  noise = 3 * _peak(_delay(w[:, 0], 20), fs, 40, 5) + 0.5 * w[:, 1]
  out.append(_recording('linear_resonant', w, noise, 0.1 * rng.standard_normal(n), fs))
  # mixed: that resonance plus a bilinear term.
  fs = 1024
  n, t = length(fs, 300)
  w0, w1, w2 = _band(rng, n, fs, 5, 300), np.sin(2 * np.pi * 7.3 * t), _band(rng, n, fs, 20, 200)
  noise = 3 * _peak(_delay(w0, 10), fs, 40, 5) + 2 * w1 * w2
  signal = 0.5 * np.sin(2 * np.pi * 1.7 * t) + 0.05 * rng.standard_normal(n)
  out.append(_recording('mixed', np.stack([w0, w1, w2], 1), noise, signal, fs))
  # bilinear: a 7.3 Hz sine times band-passed noise (the same w2).
  w1 = np.sin(2 * np.pi * 7.3 * t + 0.3)
  signal = 0.5 * np.sin(2 * np.pi * 1.7 * t) + 0.05 * rng.standard_normal(n)
  out.append(_recording('bilinear', np.stack([w1, w2], 1), 2 * w1 * w2, signal, fs))
  # lin_lowpass: a low-passed, a differentiated and a delayed witness.
  fs = 2048
  n, t = length(fs, 200)
  w = np.stack([_band(rng, n, fs, 1, 500) for _ in range(3)], 1)
  b, a = ss.butter(2, 30, fs=fs)
  noise = (2 * ss.lfilter(b, a, w[:, 0]) / 0.3 + np.gradient(w[:, 2]) * 5
           + 0.3 * _delay(w[:, 1], 50))
  signal = np.sin(2 * np.pi * 0.5 * t) + 0.1 * rng.standard_normal(n)
  out.append(_recording('lin_lowpass', w, noise, signal, fs))
  # lin_plus_am: an 80 Hz resonance (Q 8) of a witness 5 samples late, plus a 60 Hz line whose
  # amplitude follows a slow witness.
  fs = 1024
  n, t = length(fs, 300)
  slow, line = _band(rng, n, fs, 0.2, 2), np.sin(2 * np.pi * 60 * t)
  w3 = _band(rng, n, fs, 10, 300)
  noise = 4 * _peak(_delay(w3, 5), fs, 80, 8) + 1.0 * (1 + 0.8 * slow) * line
  signal = 0.3 * np.sin(2 * np.pi * 3 * t) + 0.05 * rng.standard_normal(n)
  out.append(_recording('lin_plus_am', np.stack([slow, line, w3], 1), noise, signal, fs))
  return out


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  os.makedirs(OUT_DIR.value, exist_ok=True)
  for rec in make_recordings(SEED.value, SECONDS_SCALE.value):
    path = os.path.join(OUT_DIR.value, rec.name + '.npz')
    data.save_npz(path, rec)
    print(f'{path}: {rec.witnesses.shape}, noise/target variance '
          f'{rec.noise.var() / rec.target.var():.3f}')


if __name__ == '__main__':
  app.run(main)
