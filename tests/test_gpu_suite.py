"""The prepared GPU check runs on CPU (``--platform=cpu --quick``): every loop's parity with
the scan (the Pallas loops in the interpreter, cuDNN skipped with its reason), then ours on
each loop and the peers, at the precision each record states."""
import json
import os
import subprocess
import sys


def test_gpu_suite_dry_run_on_cpu(tmp_path):
  out = tmp_path / 'gpu'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.gpu_benchmarks', '--platform=cpu', '--quick',
       '--workloads=seed', '--modes=train', '--loops=pallas_stack,cudnn', '--peers=torch',
       f'--out={out}'], capture_output=True, text=True, timeout=600,
      cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 0, proc.stderr[-3000:]
  summary = json.loads((out / 'gpu_parity.json').read_text())
  parity = {(p['loop'], tuple(p['lstm_sizes'])): p for p in summary['parity']}
  assert len(parity) == 2  # quick: the seed's stack only
  for sizes in [(64, 16, 8)]:
    assert parity['pallas_stack', sizes]['ok']
    assert parity['pallas_stack', sizes]['gradient_error'] <= 1e-4
    assert parity['pallas_stack', sizes]['layers'].startswith(f'{sizes[0]} units: pallas_stack')
    assert 'needs a CUDA GPU' in parity['cudnn', sizes]['skipped']
  records = [json.loads(line) for line in (out / 'gpu_bench.jsonl').read_text().splitlines()]
  assert {(r['mode'], r['system']) for r in records} == {
      (m, s) for m in ('train',)
      for s in ('ours[loop=pallas_stack]', 'torch[1 thr]')}
  assert {r['info']['precision'] for r in records} == {'float32'}
  assert all(r['workload']['steps'] == 16 and r['reps'] == 10 for r in records)
  assert set(summary['ratios']) == {'seed train'}
  assert set(summary['ratios']['seed train']) == {'ours[loop=pallas_stack]'}
  assert "parity cudnn        64/16/8   skipped: loop='cudnn': needs a CUDA GPU" in proc.stdout


def test_gpu_suite_names_an_unknown_choice_in_one_line():
  proc = subprocess.run([sys.executable, '-m', 'experiments.gpu_benchmarks', '--platform=cpu',
                         '--loops=scan,triton'], capture_output=True, text=True, timeout=120,
                        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
  assert proc.returncode == 2
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: --loops: unknown ['triton']; choose from ['auto', 'scan', 'pallas', "
      "'pallas_stack', 'cudnn']")
