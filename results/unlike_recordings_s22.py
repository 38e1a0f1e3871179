"""Recordings unlike the mocks (BUILD_NOTES.md, stop 22): python results/unlike_recordings_s22.py SEED DIR."""
import os, sys
import numpy as np, scipy.signal as ss
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from lstm_jax import data as D

def band(rng, n, fs, lo, hi):
  sos = ss.butter(4, [lo, hi], btype='band', fs=fs, output='sos')
  x = ss.sosfilt(sos, rng.standard_normal(n)); return x / x.std()

def peak(x, fs, f0, q):
  b, a = ss.iirpeak(f0, q, fs=fs); y = ss.lfilter(b, a, x); return y / (y.std() + 1e-12) * x.std()

def delay(x, k): return np.concatenate([np.zeros(k), x[:len(x) - k]])

def save(name, w, noise, signal, fs):
  rec = D.Recording(w.astype(np.float32), (signal + noise).astype(np.float32), float(fs),
                    noise.astype(np.float32), name)
  D.save_npz(f'{OUT}/{name}.npz', rec)
  print(name, w.shape, 'noise/target var', noise.var() / (signal + noise).var())

def main(seed=7):
  rng = np.random.default_rng(seed)
  # linear_resonant: 512 Hz, 600 s; 4 band-passed witnesses, 2 irrelevant.
  fs, n = 512, 512 * 600; t = np.arange(n) / fs
  w = np.stack([band(rng, n, fs, 5, 200) for _ in range(4)], 1)
  noise = 3 * peak(delay(w[:, 0], 20), fs, 40, 5) + 0.5 * w[:, 1]
  save('linear_resonant', w, noise, 0.1 * rng.standard_normal(n), fs)
  # mixed: 1024 Hz, 300 s.
  fs, n = 1024, 1024 * 300; t = np.arange(n) / fs
  w0 = band(rng, n, fs, 5, 300); w1 = np.sin(2 * np.pi * 7.3 * t); w2 = band(rng, n, fs, 20, 200)
  noise = 3 * peak(delay(w0, 10), fs, 40, 5) + 2 * w1 * w2
  save('mixed', np.stack([w0, w1, w2], 1), noise,
       0.5 * np.sin(2 * np.pi * 1.7 * t) + 0.05 * rng.standard_normal(n), fs)
  # bilinear: 1024 Hz, 300 s.
  w1 = np.sin(2 * np.pi * 7.3 * t + 0.3)
  noise = 2 * w1 * w2
  save('bilinear', np.stack([w1, w2], 1), noise,
       0.5 * np.sin(2 * np.pi * 1.7 * t) + 0.05 * rng.standard_normal(n), fs)
  # lin_lowpass (new): 2048 Hz, 200 s; 3 colored witnesses; low-passed and differentiated paths.
  fs, n = 2048, 2048 * 200; t = np.arange(n) / fs
  w = np.stack([band(rng, n, fs, 1, 500) for _ in range(3)], 1)
  b, a = ss.butter(2, 30, fs=fs)
  noise = 2 * ss.lfilter(b, a, w[:, 0]) / 0.3 + np.gradient(w[:, 2]) * 5 + 0.3 * delay(w[:, 1], 50)
  save('lin_lowpass', w, noise, np.sin(2 * np.pi * 0.5 * t) + 0.1 * rng.standard_normal(n), fs)
  # lin_plus_am (new): 1024 Hz, 300 s; a 60 Hz line whose amplitude follows a slow witness,
  # plus a linear resonant coupling that dominates.
  fs, n = 1024, 1024 * 300; t = np.arange(n) / fs
  slow = band(rng, n, fs, 0.2, 2); line = np.sin(2 * np.pi * 60 * t); w3 = band(rng, n, fs, 10, 300)
  noise = 4 * peak(delay(w3, 5), fs, 80, 8) + 1.0 * (1 + 0.8 * slow) * line
  save('lin_plus_am', np.stack([slow, line, w3], 1), noise,
       0.3 * np.sin(2 * np.pi * 3 * t) + 0.05 * rng.standard_normal(n), fs)

SEED = int(sys.argv[1]) if len(sys.argv) > 1 else 7
OUT = sys.argv[2] if len(sys.argv) > 2 else 'recordings'
os.makedirs(OUT, exist_ok=True)
main(SEED)
