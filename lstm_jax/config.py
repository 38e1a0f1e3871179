"""One configuration object for a training run, and named presets.

The experiment scripts expose every field as a flag (``lstm_jax.cli``), so there is one path
from the command line to the code.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

from lstm_jax import recurrent


@dataclasses.dataclass(frozen=True)
class Config:
  """A training run. Times are in samples unless the name says seconds."""
  # Data: a user's recording (``data``) or a mock (``mock``) when empty.
  data: str = ''
  fs: float = 0.0  # Hz: fills in a rate the file does not state (never overrides one it does)
  holdout_fraction: float = 0.2
  mock: str = 'seed'
  mock_fs: float = 2048.0
  n_train_records: int = 8  # independent mock records: fresh noise draws
  train_record_seconds: float = 64.0
  eval_seconds: float = 64.0
  # Channels of a .gwf or .h5 ``data`` file (lstm_jax.channels; docs/gw.md): the target's name;
  # the witnesses' as 'A,B' or '@FILE' (one name a line; empty: every other channel; column
  # indices for files without names); channels to drop; a GPS span (0: the file's); the rate
  # channels of other rates are resampled to (0: they must share one). ``target_strain``: the
  # target is strain, so the BNS range is reported (None: from its unit or channel name).
  target_channel: str = ''
  witness_channels: str = ''
  exclude_channels: str = ''
  gps_start: float = 0.0
  gps_end: float = 0.0
  resample_to: float = 0.0
  target_strain: Optional[bool] = None
  # A .gwf, .h5 or .npy-pair ``data`` file read in blocks, never whole (lstm_jax.blockdata):
  # 'auto' where its selected channels exceed 256 MB as float32, 'always', or 'never'.
  read_in_blocks: str = 'auto'
  # Scaling, fitted on training data only.
  input_scaling: str = 'standardize'  # standardize | minmax | none
  target_scaling: str = 'standardize'
  # Model.
  lstm_sizes: tuple = (32,)
  head_sizes: tuple = (64, 32)
  head_activation: str = 'gelu'  # smooth: fits products of witnesses closer than leaky_relu
  output_activation: str = 'linear'
  head_inputs: bool = True
  head_products: int = 0  # product units beside the head (lstm_jax.model.LSTMRegressor)
  input_products: int = 0  # product units appended to the inputs (lstm_jax.model.LSTMRegressor)
  recurrent_activation: str = 'sigmoid'
  unit_forget_bias: bool = True
  # Linear path: before training, the least-squares causal FIR over the witnesses (the Wiener
  # filter, lstm_jax.baselines.WienerFIR), and over the witnesses widened by up to
  # ``linear_products`` products of witness pairs the target is coherent with (a bilinear
  # coupling; lstm_jax.volterra), solved in closed form on the training records; the recurrent
  # model learns what it leaves, and the prediction is the sum. A filter renders the delays and
  # resonances of a linear coupling exactly, where an LSTM only approximates them. The filter
  # kept lowers the validation stretch's target the most among those that lower it by more
  # than two standard errors over its 16 blocks; none qualifying, there is no linear path.
  # ``linear_taps``: -1: the lengths of ``train.FILTER_SECONDS`` are tried; N > 0: N taps;
  # 0: none (docs/quality.md, "Linear path").
  linear_taps: int = -1
  linear_products: int = 8
  # Residual FIR: after training, the Wiener FIR of ``residual_taps`` lags per witness (with a
  # linear path: over its inputs) and a gain on the trained model's prediction, fitted together
  # on the training targets and added (with a linear path, the two filters become one) where
  # the validation stretch's residual falls by more than two standard errors over its 16
  # blocks. It takes up linear structure the recurrent model only approximated; where there is
  # none it is dropped and the prediction is unchanged (docs/quality.md, "Residual FIR").
  # -1: the lengths of ``train.FILTER_SECONDS`` are tried and validation keeps the best;
  # 0: none. Without a linear path it also tries up to ``residual_products`` witness-pair
  # products that the model's residual is coherent with.
  residual_taps: int = -1
  residual_products: int = 8
  # Recurrent cell (lstm_jax.cells registry: lstm, gru, min_lstm, ...) and its options as
  # 'key=value,...' text, e.g. --cell=gru --cell_options=reset_after=false.
  cell: str = 'lstm'
  cell_options: str = ''
  # Time loop.
  hoist_input: Optional[bool] = None
  unroll: int = 0  # 0: per platform (lstm_jax.recurrent.ScanConfig.unroll_for)
  backward: str = 'custom'
  matmul_dtype: str = 'float32'
  remat: bool = False
  layout: str = 'auto'  # the LSTM inference scan's layout: auto | batch | feature
  loop: str = 'auto'  # auto | scan | pallas (one Triton kernel per layer; auto: small GPU layers) | cudnn
  # Streams and chunks: ``n_streams`` parallel continuous streams cut in ``chunk_len`` chunks;
  # the gradient is truncated every ``bptt_len`` samples inside a chunk. One update per chunk.
  n_streams: int = 32
  chunk_len: int = 256
  bptt_len: int = 256
  reset_carry_each_epoch: bool = True
  # Optimizer.
  num_steps: int = 7000  # the most updates; the plateau schedule usually ends sooner
  learning_rate: float = 3e-3
  # plateau (warm-up, then the peak until validation stops improving for ``patience``
  # validations, then x``plateau_factor``; after ``plateau_drops`` drops, ``patience`` more
  # without improvement end the run) | cosine | constant | inverse_time.
  schedule: str = 'plateau'
  warmup_steps: int = 200
  patience: int = 4
  plateau_factor: float = 0.3
  plateau_drops: int = 3
  plateau_min_delta: float = 0.001
  decay: float = 0.0  # Keras legacy inverse-time decay: lr / (1 + decay * step)
  clip_norm: float = 1.0  # global norm; 0 disables
  # Validation judges, and the run keeps, a running average of the parameters that moves
  # 1 - ema_decay of the way to each update's (about 1 / (1 - ema_decay) updates long). 0: the
  # parameters as they are.
  ema_decay: float = 0.0
  adam_b1: float = 0.9
  adam_b2: float = 0.999
  adam_eps: float = 1e-8
  # mse | spectral: (1 - loss_weight) MSE + loss_weight PSD ratio in band. The spectral mix is
  # the default: MSE alone lets target content no witness explains (the seed's sin(t)) drive
  # the gradient; +3.8 to +4.7 dB held out on the seed mock (docs/quality.md, "Loss").
  loss: str = 'spectral'
  loss_weight: float = 0.5  # the spectral term's share when loss = 'spectral'
  loss_nperseg: int = 0  # Welch segment of the spectral loss; 0: min(chunk_len, 256)
  loss_psd_floor: float = 1.0  # target PSD floor in the ratio, x its band mean (lstm_jax.losses)
  # Validation: a stretch of the training data kept out of the updates. Every ``val_every``
  # updates the model's MSE on it is measured; the run ends with the parameters of the latest
  # update within ``val_tolerance`` (relative) of the lowest MSE. A model that starts to fit
  # what does not generalize (a deterministic signal in one record, say) is not the one kept,
  # and differences within the tolerance do not undo the last updates. User data: the last
  # ``val_fraction`` of the training part; mocks: an extra record of that share of the
  # training seconds, earlier in time, with its own noise draw. 0: the last update's.
  val_fraction: float = 0.1
  val_every: int = 250
  val_tolerance: float = 0.001
  # Evaluation and logging.
  band_lo: float = 0.0  # Hz; 0 and 0 pick the default band (lstm_jax.metrics.default_band)
  band_hi: float = 0.0
  # With a band named, the prediction is band-passed to it before it is subtracted (held out
  # and in ``clean``), so other frequencies are left alone (lstm_jax.bandlimit); True: the
  # whole prediction is subtracted.
  clean_outside_band: bool = False
  eval_chunk_len: int = 2048
  seed: int = 0
  log_every_seconds: float = 10.0
  # Checkpoints (workdir/checkpoints/): every ``checkpoint_every`` updates (0 = off), the last 2
  # kept; ``resume`` continues from the newest one (see lstm_jax.checkpoint).
  checkpoint_every: int = 0
  resume: bool = False
  # Data parallelism (lstm_jax.parallel): the streams axis sharded over ``num_devices`` devices
  # (1: one device; 0: all devices of all processes). Multi-host: one process per host, each
  # given the same flags plus its ``process_id``.
  num_devices: int = 1
  coordinator_address: str = ''
  num_processes: int = 1
  process_id: int = 0

  def scan_config(self) -> recurrent.ScanConfig:
    return recurrent.ScanConfig(recurrent_activation=self.recurrent_activation,
                                hoist_input=self.hoist_input, unroll=self.unroll,
                                backward=self.backward, matmul_dtype=self.matmul_dtype,
                                remat=self.remat, layout=self.layout, loop=self.loop)

  def replace(self, **kw) -> 'Config':
    return dataclasses.replace(self, **kw)

  def to_dict(self) -> dict:
    return dataclasses.asdict(self)

  @classmethod
  def from_dict(cls, d: dict) -> 'Config':
    names = {f.name for f in dataclasses.fields(cls)}
    kw = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k in names}
    return cls(**kw)


def seed_keras() -> Config:
  """The seed's exact Keras setup: it fails (about 0 dB held out), on purpose."""
  return Config(
      n_train_records=1, train_record_seconds=10.0, eval_seconds=10.0,
      input_scaling='minmax', target_scaling='none',
      lstm_sizes=(64, 16, 8), head_sizes=(128, 16, 8), head_activation='leaky_relu',
      output_activation='leaky_relu', head_inputs=False, recurrent_activation='hard_sigmoid',
      n_streams=1, chunk_len=2048, bptt_len=2048, reset_carry_each_epoch=False,
      num_steps=300,  # 30 epochs of 10 chunks
      learning_rate=3.9e-5, schedule='inverse_time', decay=0.05, warmup_steps=0, clip_norm=0.0,
      loss='mse', linear_taps=0, residual_taps=0,
  )


def memory() -> Config:
  """The memory mock (``lstm_jax.data.memory_mock``): modulated noise through a 30 Hz resonator.

  The default recipe with 64 LSTM units and the plain spectral loss (0.5 MSE + 0.5 PSD ratio,
  no PSD floor: this target is quiet above its resonance and the plain ratio weighs those bins
  fully); see docs/quality.md, "Baselines", for what it reaches against the Wiener FIR and
  the MLP.
  """
  return Config(mock='memory', lstm_sizes=(64,), loss='spectral', loss_psd_floor=0.0)


def microseism() -> Config:
  """A 1 Hz seismometer day (``experiments/real_data.py``): 20% held out, judged in the
  microseism band 0.05-0.25 Hz; fewer streams and updates, the record being short."""
  return Config(holdout_fraction=0.2, n_streams=16, num_steps=1500, warmup_steps=100,
                band_lo=0.05, band_hi=0.25)


PRESETS = {'default': Config, 'seed_keras': seed_keras, 'memory': memory,
           'microseism': microseism}


def get_config(preset: str = 'default') -> Config:
  if preset not in PRESETS:
    raise ValueError(f'unknown preset {preset!r}; choose one of {sorted(PRESETS)}')
  return PRESETS[preset]()
