import jax
import pytest

# Strict numerics: implicit rank promotion is a bug here; x64 stays off like in production.
jax.config.update('jax_numpy_rank_promotion', 'raise')


@pytest.fixture
def rng():
  import numpy as np
  return np.random.default_rng(0)
