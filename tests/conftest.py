import os

# Tests check functions, not code speed: LLVM at -O0 compiles the suite's many small programs
# about a fifth sooner (CI's 10-minute budget). No fast-math at any level, so the arithmetic
# is the same; programs that pass their own level (ScanConfig.compiler_options) keep it.
if 'xla_backend_optimization_level' not in os.environ.get('XLA_FLAGS', ''):
  os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '')
                             + ' --xla_backend_optimization_level=0').strip()

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position
import pytest  # pylint: disable=g-import-not-at-top,wrong-import-position

# Strict numerics: implicit rank promotion is a bug here; x64 stays off like in production.
jax.config.update('jax_numpy_rank_promotion', 'raise')


@pytest.fixture
def rng():
  import numpy as np
  return np.random.default_rng(0)
