#!/usr/bin/env bash
# Issue 3's GPU study in one call of the device tool: our loop's forms ranked in one process,
# every workload against Flax and PyTorch (cuDNN) with ours' variants, then the fast-path
# parity tests on the GPU.
# Usage (repo root, a machine with one GPU and jax/flax/optax/torch installed):
#   OUT=/some/dir bash experiments/gpu_benchmarks.sh
# Each section has its own time limit so a slow one cannot starve the rest; JSON lines land
# in $OUT/bench_gpu.jsonl as each mode finishes.
set -u -o pipefail
OUT=${OUT:-results}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
J="$OUT/bench_gpu.jsonl"
LOG="$OUT/gpu_log.txt"
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm,memory.used,memory.total \
    --format=csv
  python3 -c "import jax, flax, optax, torch; print('jax', jax.__version__, 'flax', \
flax.__version__, 'optax', optax.__version__, 'torch', torch.__version__, 'cudnn', \
torch.backends.cudnn.version(), jax.devices())"
} 2>&1 | tee "$LOG"

# Smoke: our model's gradient compiles and runs on the GPU, or nothing else runs.
timeout 90 python3 - <<'EOF' 2>&1 | tee -a "$LOG" || exit 1
import jax, jax.numpy as jnp, numpy as np
from lstm_jax.model import LSTMRegressor
from lstm_jax.recurrent import ScanConfig
m = LSTMRegressor(scan=ScanConfig(loop='scan'))
x = jnp.asarray(np.random.default_rng(0).standard_normal((2, 64, 2)), jnp.float32)
c = m.initialize_carry(2)
p = m.init(jax.random.key(0), c, x)['params']
loss = lambda p: jnp.mean(m.apply({'params': p}, c, x)[1] ** 2)
g = jax.jit(jax.grad(loss))(p)
print('smoke ok on', jax.devices()[0].device_kind, 'grad leaves', len(jax.tree.leaves(g)))
print('default backend', jax.default_backend(), '| loop=auto runs the seed layers on Pallas:',
      [ScanConfig().uses_pallas(1, n) for n in (64, 16, 8)])
try:  # the Pallas loop: same gradients as the scan, or the reason it fails here
  mp = LSTMRegressor(scan=ScanConfig(loop='pallas'))
  lossp = lambda p: jnp.mean(mp.apply({'params': p}, c, x)[1] ** 2)
  gp = jax.jit(jax.grad(lossp))(p)
  print('pallas smoke: max |grad - scan grad| =', max(float(jnp.max(jnp.abs(a - b)))
        for a, b in zip(jax.tree.leaves(gp), jax.tree.leaves(g))))
except Exception as e:  # pylint: disable=broad-except
  print('pallas smoke FAILED:', type(e).__name__, str(e)[-1500:])
EOF

bench() {  # time limit (s), then flags; $BENCH_FLAGS (say --steps=32) for a dry run
  local limit=$1; shift
  timeout "$limit" python3 -m experiments.benchmark --platform="${PLATFORM:-cuda}" \
    --peers=flax,torch --torch_threads=1 --concurrent_start --peak_n=8192 --nosmall_loops \
    --out="$J" "$@" \
    ${BENCH_FLAGS:-} 2>&1 | tee -a "$LOG"
}
# Our loop's forms ranked in one process (scan unrolls, Pallas warp counts).
timeout ${STUDY_S:-120} python3 -m experiments.gpu_loop_study --out="$OUT/gpu_loop_study.json" 2>&1 \
  | grep -v "^[IW][0-9]" | tee -a "$LOG"
bench 90 --workload=seed --mode=fwd,train --reps=10 --variants=loop=scan,loop=scan+unroll=1
bench 50 --workload=wide --mode=fwd,train --reps=10 --peak=false
bench 80 --workload=long --mode=fwd,train --reps=10 --peak=false --variants=loop=pallas

# The default training job's update rate on this device: loop=auto (Pallas here) against the scan.
for loop in auto scan; do
  timeout 90 python3 -m experiments.noise_regression --loop=$loop --num_steps=${NR_STEPS:-800} \
    --workdir="/tmp/nr_$loop" 2>&1 | grep -v "^[IW][0-9]" | tail -4 | tee -a "$LOG"
  cp "/tmp/nr_$loop/metrics.json" "$OUT/nr_${loop}_metrics.json" 2>/dev/null
done

# The fast paths compute the reference's function on this device too (full f32 matmuls).
JAX_DEFAULT_MATMUL_PRECISION=float32 timeout 100 python3 -m pytest -q -p no:cacheprovider \
  ${PYTEST_FLAGS:--n 8} tests/test_fast_paths.py tests/test_recurrent.py \
  -k "reference or equals_plain or bfloat16 or chain_rule or matches or chunks or hard_sigmoid \
or check_grads or pallas or loop_auto or unroll_zero" 2>&1 | tail -12 | tee -a "$LOG"
nvidia-smi --query-gpu=clocks.sm,memory.used,temperature.gpu --format=csv | tee -a "$LOG"
