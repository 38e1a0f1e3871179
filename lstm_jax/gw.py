"""The gravitational-wave field's figures of merit and signal-safety check.

* ``bns_range_mpc``: the binary-neutron-star inspiral range of a strain PSD, the "SenseMon"
  formula of LIGO-T030276 (as ``gwpy.astro.sensemon_range``): the distance, averaged over sky
  position and orientation, at which a 1.4 + 1.4 solar-mass inspiral reaches SNR 8,

  .. math:: R^2 = \\frac{1.77^2 \\cdot 5\\, c^{1/3} (G M_c / c^2)^{5/3}}{96\\, \\pi^{4/3}\\,
            \\rho^2} \\int_{f_{min}}^{f_{ISCO}} \\frac{f^{-7/3}}{S(f)} df

  with :math:`M_c` the chirp mass and :math:`S` the one-sided PSD (strain^2/Hz).
* ``figures_of_merit``: the range before and after cleaning, and how far the cleaned ASD moves
  outside the band (cleaning should leave it alone there), from the two PSDs; ``plot_figures``
  draws the range integrand and the ASD ratio in the band.
* ``chirp``: a leading-order post-Newtonian inspiral (the chirp of two point masses, Newtonian
  amplitude and phase), ``inner`` the noise-weighted inner product it is scaled and judged with;
  ``inject_and_clean`` adds one at a chosen matched-filter SNR to a recording's target (and, at
  a fraction, to witnesses that sense the target), cleans it, and reports the share of the SNR
  that survives and the amplitude and phase change (docs/gw.md, "Signal safety").
"""
from __future__ import annotations

import dataclasses
import os
from typing import Mapping, Optional, Sequence

import numpy as np

from lstm_jax import bandlimit
from lstm_jax import data as data_lib
from lstm_jax import metrics as metrics_lib

G = 6.67430e-11  # m^3 kg^-1 s^-2 (CODATA 2018)
C = 299792458.0  # m / s
M_SUN = 1.988409870698051e30  # kg (IAU 2015 nominal G M_sun / G, as astropy)
MPC = 3.0856775814913673e22  # m
RANGE_FMIN_HZ = 10.0  # the ground-based detectors' usual lower cut-off of the range integral
OUTSIDE_BAND_TOLERANCE = 0.01  # cleaning should move the ASD outside the band by under 1%


def chirp_mass(m1: float, m2: float) -> float:
  """In solar masses."""
  return (m1 * m2) ** 0.6 / (m1 + m2) ** 0.2


def isco_hz(m1: float, m2: float) -> float:
  """GW frequency at the innermost stable circular orbit of a test mass about m1 + m2."""
  return C ** 3 / (G * 6 ** 1.5 * np.pi * (m1 + m2) * M_SUN)


def range_integrand(f, psd, snr: float = 8.0, m1: float = 1.4, m2: float = 1.4,
                    horizon: bool = False) -> np.ndarray:
  """R^2 per Hz (Mpc^2 / Hz) at each frequency ``f`` > 0 of the one-sided strain ``psd``."""
  f, psd = np.asarray(f, np.float64), np.asarray(psd, np.float64)
  mc = chirp_mass(m1, m2) * M_SUN
  prefactor = ((16.0 if horizon else 1.77 ** 2) * 5.0 * C ** (1 / 3) * (mc * G / C ** 2) ** (5 / 3)
               / (96.0 * np.pi ** (4 / 3) * snr ** 2))
  with np.errstate(divide='ignore'):
    out = prefactor * f ** (-7 / 3) / np.maximum(psd, metrics_lib.TINY) / MPC ** 2
  return np.where(f > 0, out, 0.0)


def bns_range_mpc(f, psd, fmin: Optional[float] = None, fmax: Optional[float] = None,
                  snr: float = 8.0, m1: float = 1.4, m2: float = 1.4,
                  horizon: bool = False) -> float:
  """Inspiral range in Mpc (``gwpy.astro.sensemon_range``'s formula and limits: the integral
  runs over ``fmin <= f < fmax`` by the trapezoid rule; ``fmin`` None: the bin spacing;
  ``fmax`` None or above ISCO: the ISCO frequency)."""
  f = np.asarray(f, np.float64)
  fmin = fmin or (f[1] - f[0])
  fmax = min(fmax or np.inf, isco_hz(m1, m2))
  keep = (f >= fmin) & (f < fmax)
  if keep.sum() < 2:
    return 0.0
  return float(np.sqrt(np.trapezoid(range_integrand(f[keep], np.asarray(psd)[keep], snr, m1, m2,
                                                    horizon), f[keep])))


def is_strain(unit: str, name: Optional[str], given: Optional[bool] = None) -> bool:
  """Whether a target is in strain: ``given`` (``--target_strain``), else its unit says so
  (gwpy's ``strain``) or its channel name does (``...STRAIN...``, as ``H1:GDS-CALIB_STRAIN``)."""
  if given is not None:
    return bool(given)
  return 'strain' in (unit or '').lower() or 'STRAIN' in (name or '').upper()


def figures_of_merit(f, psd_target, psd_cleaned, band: Sequence[float],
                     strain: bool) -> dict:
  """The range before and after (strain only), and the largest relative ASD change outside
  ``band`` (every bin above DC; cleaning should leave those frequencies within 1%), with the
  largest rise apart: a fall there can be coupled noise removed outside the band, a rise is
  noise the cleaning added."""
  f = np.asarray(f, np.float64)
  ratio = np.sqrt(np.maximum(psd_cleaned, 0) / np.maximum(psd_target, metrics_lib.TINY))
  outside = (f > 0) & ~metrics_lib.band_mask(f, band)
  out = {'band_hz': [float(band[0]), float(band[1])]}
  if outside.any():
    change = np.abs(ratio[outside] - 1.0)
    worst, rise = int(np.argmax(change)), int(np.argmax(ratio[outside]))
    out.update(outside_band_max_asd_change=float(change[worst]),
               outside_band_max_asd_change_hz=float(f[outside][worst]),
               # Noise added (the ASD rising), as against coupled noise removed there too.
               outside_band_max_asd_increase=float(max(ratio[outside][rise] - 1.0, 0.0)),
               outside_band_max_asd_increase_hz=float(f[outside][rise]),
               outside_band_bins_over_1pct=int(np.sum(change > OUTSIDE_BAND_TOLERANCE)),
               outside_band_bins=int(outside.sum()))
  if strain:
    fmin = max(RANGE_FMIN_HZ, f[1])
    before = bns_range_mpc(f, psd_target, fmin)
    after = bns_range_mpc(f, psd_cleaned, fmin)
    out['bns_range_mpc'] = {'target': before, 'cleaned': after,
                            'gain_percent': 100.0 * (after / before - 1.0) if before else None,
                            'fmin_hz': fmin, 'fmax_hz': min(isco_hz(1.4, 1.4), float(f[-1]))}
  return out


def psds(rec: data_lib.Recording, prediction) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """(f, PSD of the target, PSD of the cleaned target), Welch as ``metrics.asd``."""
  f, asd_target = metrics_lib.asd(rec.target, rec.fs)
  _, asd_cleaned = metrics_lib.asd(np.asarray(rec.target, np.float64) - prediction, rec.fs)
  return f, asd_target ** 2, asd_cleaned ** 2


def evaluate_figures(rec: data_lib.Recording, prediction, band: Sequence[float],
                     target_strain: Optional[bool] = None) -> dict:
  """``figures_of_merit`` of a recording and its prediction held in memory."""
  strain = is_strain(rec.target_unit, rec.target_name, target_strain)
  return figures_of_merit(*psds(rec, prediction), band, strain)


def plot_figures(f, psd_target, psd_cleaned, band: Sequence[float], out_dir: str,
                 strain: bool, prefix: str = 'heldout') -> list[str]:
  """``{prefix}_band_asd_ratio.png`` (ASD ratio across the band and an octave either side);
  for strain also ``{prefix}_range.png`` (the cumulative range, before and after)."""
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt
  f = np.asarray(f, np.float64)
  paths = []
  lo, hi = max(band[0] / 2, f[1]), min(band[1] * 2, f[-1])
  keep = (f >= lo) & (f <= hi)
  fig, ax = plt.subplots(figsize=(8, 4))
  ratio = np.sqrt(psd_cleaned / np.maximum(psd_target, metrics_lib.TINY))
  ax.plot(f[keep], ratio[keep], lw=0.9)
  ax.axhline(1.0, color='k', lw=0.5)
  for bound in (1 - OUTSIDE_BAND_TOLERANCE, 1 + OUTSIDE_BAND_TOLERANCE):
    ax.axhline(bound, color='0.5', lw=0.5, ls=':')
  ax.axvspan(*band, color='0.92', zorder=0, label=f'band {band[0]:g}-{band[1]:g} Hz')
  ax.set_xlabel('frequency [Hz]')
  ax.set_ylabel('ASD(cleaned) / ASD(target)')
  ax.set_title('ASD ratio in the band (dotted: 1% either side)')
  paths.append(_finish(fig, ax, os.path.join(out_dir, f'{prefix}_band_asd_ratio.png')))
  if strain:
    fig, ax = plt.subplots(figsize=(8, 4))
    fmin = max(RANGE_FMIN_HZ, f[1])
    keep = (f >= fmin) & (f < isco_hz(1.4, 1.4))
    for psd, label in ((psd_target, 'target'), (psd_cleaned, 'cleaned')):
      integrand = range_integrand(f[keep], psd[keep])
      cumulative = np.concatenate([[0.0], np.cumsum(0.5 * (integrand[1:] + integrand[:-1])
                                                    * np.diff(f[keep]))])
      ax.plot(f[keep], np.sqrt(cumulative), label=f'{label}: {np.sqrt(cumulative[-1]):.4g} Mpc')
    ax.axvspan(*band, color='0.92', zorder=0)
    ax.set_xscale('log')
    ax.set_xlabel('frequency [Hz]')
    ax.set_ylabel('BNS range up to f [Mpc]')
    ax.set_title('binary-neutron-star inspiral range (1.4 + 1.4 Msun, SNR 8)')
    paths.append(_finish(fig, ax, os.path.join(out_dir, f'{prefix}_range.png')))
  return paths


def _finish(fig, ax, path: str) -> str:
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top
  ax.legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
  return path


# --------------------------------------------------------------------------- injections

def chirp(fs: float, n_samples: int, merger_index: int, m1: float = 1.4, m2: float = 1.4,
          f_low: float = 30.0, f_high: Optional[float] = None) -> np.ndarray:
  """A leading-order (Newtonian) inspiral, plus polarization, optimally oriented, unit
  amplitude at ``f_low``; its frequency reaches ``f_high`` (default: the lower of ISCO and 40%
  of ``fs``) at ``merger_index``, where it ends. With ``tau`` the time before coalescence and
  ``M = G M_c / c^3`` in seconds::

    f(tau) = (5 / (256 tau))^(3/8) M^(-5/8) / pi,   phase(tau) = -2 (tau / (5 M))^(5/8),
    h = (f / f_low)^(2/3) cos(phase)

  A Hann taper of 4 cycles at each end keeps its spectrum inside [f_low, f_high].
  """
  mc = G * chirp_mass(m1, m2) * M_SUN / C ** 3
  f_high = min(f_high or np.inf, isco_hz(m1, m2), 0.4 * fs)
  if not 0 < f_low < f_high:
    raise data_lib.DataError(f'chirp: f_low = {f_low:g} Hz must lie below f_high = {f_high:g} '
                             f'Hz (ISCO, or 40% of fs = {fs:g} Hz)')
  tau_of = lambda f: 5.0 / 256.0 * (np.pi * f) ** (-8 / 3) * mc ** (-5 / 3)
  tau_end = tau_of(f_high)
  n_long = int(np.ceil((tau_of(f_low) - tau_end) * fs))
  if n_long > merger_index:
    raise data_lib.DataError(
        f'chirp: a {m1:g} + {m2:g} Msun inspiral from {f_low:g} Hz lasts '
        f'{n_long / fs:.1f} s, more than the {merger_index / fs:.1f} s before the merger time; '
        'raise --f_low, or give a longer recording')
  h = np.zeros(n_samples)
  k = np.arange(merger_index - n_long, min(merger_index, n_samples))
  tau = tau_end + (merger_index - k) / fs
  freq = (5.0 / (256.0 * tau)) ** (3 / 8) * mc ** (-5 / 8) / np.pi
  wave = (freq / f_low) ** (2 / 3) * np.cos(-2.0 * (tau / (5.0 * mc)) ** (5 / 8))
  for cycles_at, edge in ((f_low, slice(0, None)), (f_high, slice(None, None, -1))):
    n_taper = min(len(wave) // 2, int(4 * fs / cycles_at))
    taper = np.ones(len(wave))
    taper[:n_taper] = 0.5 - 0.5 * np.cos(np.pi * np.arange(n_taper) / n_taper)
    wave = wave * taper[edge]
  h[k] = wave[:len(k)]
  return h


def inner(a, b, fs: float, f_psd, psd, f_range: Sequence[float]) -> complex:
  """Noise-weighted inner product ``4 sum A(f) conj(B(f)) / S(f) df`` over ``f_range``: its
  real part is the matched filter's ``<a, b>``; ``<h, h>`` is the optimal SNR squared. The PSD
  (one-sided, Welch) is interpolated to the signal's frequencies."""
  n = len(a)
  freqs = np.fft.rfftfreq(n, 1.0 / fs)
  A, B = np.fft.rfft(a) / fs, np.fft.rfft(b) / fs
  keep = (freqs >= f_range[0]) & (freqs <= f_range[1])
  weight = 1.0 / np.maximum(np.interp(freqs[keep], f_psd, psd), metrics_lib.TINY)
  return complex(4.0 * np.sum(A[keep] * np.conj(B[keep]) * weight) * fs / n)


@dataclasses.dataclass(frozen=True)
class Injection:
  """A chirp to add: its masses, band, optimal matched-filter SNR against the target's PSD,
  merger time (seconds after the recording's start) and the witnesses that sense the target,
  each with the gain it sees the target's signal at (its units per target unit: 0.05 for a
  witness calibrated like the target that carries 5% of it)."""
  snr: float = 20.0
  m1: float = 1.4
  m2: float = 1.4
  f_low: float = 30.0
  merger_seconds: float = 0.0  # 0: 80% of the way into the recording
  couplings: Mapping[str, float] = dataclasses.field(default_factory=dict)


def parse_couplings(text: str) -> dict:
  """``'NAME:GAIN,NAME:GAIN'`` -> ``{NAME: GAIN}`` (a name may hold colons: the last one
  splits)."""
  out = {}
  for item in (text or '').split(','):
    if not item.strip():
      continue
    name, sep, frac = item.strip().rpartition(':')
    try:
      out[name] = float(frac)
      if not sep or not name:
        raise ValueError
    except ValueError:
      raise data_lib.DataError(f'--witness_coupling: expected NAME:GAIN, got {item!r}') from None
  return out


def inject(rec: data_lib.Recording, injection: Injection):
  """``(recording with the chirp added, the chirp in target units, report)``."""
  fs, n = rec.fs, len(rec)
  merger = int(round((injection.merger_seconds or 0.8 * n / fs) * fs))
  if not 0 < merger <= n:
    raise data_lib.DataError(f'--merger_seconds={injection.merger_seconds:g} lies outside the '
                             f'recording ({n / fs:g} s)')
  f_psd, asd_target = metrics_lib.asd(rec.target, fs)
  psd = asd_target ** 2
  unit_chirp = chirp(fs, n, merger, injection.m1, injection.m2, injection.f_low)
  f_high = min(isco_hz(injection.m1, injection.m2), 0.4 * fs)
  band = (injection.f_low, f_high)
  h = unit_chirp * injection.snr / np.sqrt(inner(unit_chirp, unit_chirp, fs, f_psd, psd,
                                                 band).real)
  names = list(rec.witness_names or [str(k) for k in range(rec.witnesses.shape[1])])
  unknown = [name for name in injection.couplings if name not in names]
  if unknown:
    raise data_lib.DataError(f'--witness_coupling names no witness of the model: '
                             f'{", ".join(unknown)} (witnesses: {", ".join(names)})')
  witnesses = np.array(rec.witnesses, np.float64)
  for name, gain in injection.couplings.items():
    witnesses[:, names.index(name)] += gain * h
  injected = dataclasses.replace(rec, witnesses=witnesses, target=rec.target + h)
  report = {'snr': injection.snr, 'mass1': injection.m1, 'mass2': injection.m2,
            'f_low_hz': injection.f_low, 'f_high_hz': f_high,
            'merger_gps': rec.t0 + merger / fs, 'couplings': dict(injection.couplings),
            'psd': (f_psd, psd), 'band': band}
  return injected, h, report


def recovery(h, recovered, fs: float, f_psd, psd, band) -> dict:
  """What a matched filter with the true template ``h`` sees of ``recovered`` (the injected
  signal as it is in the cleaned data): the share of the SNR, amplitude and phase change."""
  hh = inner(h, h, fs, f_psd, psd, band).real
  z = inner(recovered, h, fs, f_psd, psd, band)
  return {'snr_fraction': z.real / hh, 'amplitude_ratio': abs(z) / hh,
          'phase_change_rad': float(np.angle(z)),
          'optimal_snr_fraction': float(np.sqrt(inner(recovered, recovered, fs, f_psd, psd,
                                                      band).real / hh))}


def inject_and_clean(trained, rec: data_lib.Recording, injection: Injection,
                     chunk_len: Optional[int] = None) -> dict:
  """Adds the chirp to ``rec`` (``inject``), cleans the recording with and without it in one
  pass of two streams, and reports what survives: the signal in the cleaned data is the
  difference of the two cleaned targets, judged against the chirp (``recovery``). What is
  subtracted is what ``clean`` subtracts: the prediction in the model's band
  (``lstm_jax.bandlimit``) unless it was trained to clean outside it."""
  injected, h, report = inject(rec, injection)
  predictions = trained.stream(2, chunk_len).push(
      np.stack([np.asarray(rec.witnesses, np.float64), injected.witnesses]))
  subtracted = bandlimit.apply(predictions[1] - predictions[0],
                               bandlimit.subtracted_band(trained.config), rec.fs)
  recovered = h - subtracted  # (target + h - p1) - (target - p0)
  f_psd, psd = report.pop('psd')
  report.update(recovery(h, recovered, rec.fs, f_psd, psd, report.pop('band')))
  report['snr_lost_percent'] = 100.0 * (1.0 - report['snr_fraction'])
  return report


def injection_report(model_dir: str, input_path: str, injection: Injection,
                     fs: Optional[float] = None, selection=None,
                     chunk_len: Optional[int] = None, output: str = '') -> dict:
  """``experiments/injection.py``: loads the model (a training workdir or its ``model/``) and
  the recording (its channels by the model's names), runs ``inject_and_clean``, prints the
  report and writes it to ``output`` (JSON) if given."""
  import json
  from lstm_jax import cleaning  # pylint: disable=g-import-not-at-top (it imports this module)
  if output and not os.path.isdir(os.path.dirname(os.path.abspath(output))):
    raise data_lib.DataError(f'{output}: directory does not exist')
  trained, reader = cleaning.open_with_model(model_dir, input_path, selection, fs)
  try:
    rec = data_lib.validate(reader.read(0, reader.n_samples))
  finally:
    reader.close()
  report = dict(inject_and_clean(trained, rec, injection, chunk_len), model_dir=model_dir,
                input=input_path, witnesses=list(rec.witness_names or []))
  text = json.dumps(report, indent=1)
  print(text)
  if output:
    tmp = f'{output}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
      f.write(text)
    os.replace(tmp, output)
  return report


# --------------------------------------------------------------------------- a LIGO-like mock

STRAIN = 1e-21  # the mock target's scale
LIGO_MOCK_CHANNELS = ('H1:PEM-CS_MAINSMON_EBAY_1_DQ', 'H1:ASC-CHARD_P_OUT_DQ',
                      'H1:ASC-DHARD_Y_OUT_DQ', 'H1:PEM-EY_ACC_BEAMTUBE_Y_DQ',
                      'H1:ASC-INP1_P_OUT_DQ', 'H1:ASC-MICH_P_OUT_DQ')
SENSING_CHANNEL = 'H1:OMC-DCPD_SUM_OUT_DQ'
LIGO_TARGET = 'H1:GDS-CALIB_STRAIN'


def ligo_mock(fs: float = 512.0, duration: float = 64.0, seed: int = 0, t0: float = 1e9,
              sensing_gain: float = 0.0, sensing_noise: float = 0.02) -> data_lib.Recording:
  """A strain target with LIGO-style channel names, couplings and an unwitnessed background.

  Witnesses (``LIGO_MOCK_CHANNELS``): the mains monitor (a 60 Hz line that wanders), two
  angular channels (slow motion, 0.1 to 3 Hz) that modulate the mains coupling (sidebands, a
  bilinear coupling), an accelerometer whose white motion reaches the target through a 30 Hz
  resonance 5 ms later (linear, causal), and two idle angular channels. The target is that
  coupled noise plus a coloured background no witness sees (the detector's own noise, where
  astrophysical signals live), in strain (``STRAIN`` scale, unit ``strain``).

  ``sensing_gain`` > 0 adds ``SENSING_CHANNEL``, a witness that senses the target (as a
  length-sensing channel does): ``sensing_gain`` x the target plus its own white noise of
  ``sensing_noise`` x the background's std. ``noise`` is the witnessed part of the target.
  """
  import scipy.signal
  n = int(round(duration * fs))
  t = np.arange(n) / fs
  rng = np.random.default_rng(seed)
  wander = np.cumsum(rng.standard_normal(n)) * 2e-3 / np.sqrt(fs)
  mains = np.sin(2 * np.pi * 60.0 * t + wander) + 0.01 * rng.standard_normal(n)
  slow = [data_lib.slow_random_modulator(n, fs, seed * 10 + k, (0.1, 3.0)) for k in range(4)]
  accel = rng.standard_normal(n)
  b, a = data_lib.resonator_coefficients(fs, min(30.0, fs / 8), 0.05)
  lag = int(round(0.005 * fs))
  resonant = scipy.signal.lfilter(b, a, np.concatenate([np.zeros(lag), accel[:n - lag]]))
  noise = 0.8 * (1.0 + 0.5 * slow[0] + 0.3 * slow[1]) * mains + 0.6 * resonant
  background = scipy.signal.lfilter(*scipy.signal.butter(2, 0.2 * fs, fs=fs),
                                    rng.standard_normal(n)) + 0.3 * rng.standard_normal(n)
  target = STRAIN * (noise + background)
  witnesses = [mains, slow[0], slow[1], accel, slow[2], slow[3]]
  names = LIGO_MOCK_CHANNELS
  if sensing_gain:
    own = sensing_noise * STRAIN * np.std(background) * rng.standard_normal(n)
    witnesses.append(sensing_gain * target + own)
    names = names + (SENSING_CHANNEL,)
  return data_lib.Recording(np.stack(witnesses, axis=1), target, float(fs), STRAIN * noise,
                            f'ligo_mock(seed={seed})', t0=t0, witness_names=names,
                            target_name=LIGO_TARGET, target_unit='strain')


def ligo_mock_with_idle(fs: float = 4096.0, duration: float = 600.0, n_idle: int = 10,
                        seed: int = 5, idle_seed: int = 11) -> data_lib.Recording:
  """``ligo_mock`` with ``n_idle`` more witnesses that nothing couples (coloured noise, bands
  from 0.1-200 Hz up to 50 times that, drawn with ``idle_seed``), in units of ``STRAIN``: the
  many-channel recording the default job's wall time is judged on (docs/quality.md)."""
  from lstm_jax import zoo  # pylint: disable=g-import-not-at-top
  rec = ligo_mock(fs=fs, duration=duration, seed=seed)
  rng = np.random.default_rng(idle_seed)
  idle = [zoo.coloured(rng, len(rec), fs, lo, min(1800.0, lo * 50))
          for lo in np.exp(rng.uniform(np.log(0.1), np.log(200), n_idle))]
  witnesses = np.concatenate([np.asarray(rec.witnesses), np.stack(idle, 1)], 1)
  in_units = lambda x: np.asarray(x, np.float32) / STRAIN
  return data_lib.Recording(witnesses.astype(np.float32), in_units(rec.target), fs,
                            in_units(rec.noise),
                            f'ligo_mock_with_idle(seed={seed}, n_idle={n_idle})')
