"""lstm_jax: stateful LSTM regression on long sampled signals, in JAX."""
from lstm_jax.cell import LSTMCarry, LSTMParams, init_lstm_params, lstm_cell, zero_carry
from lstm_jax.config import Config, get_config
from lstm_jax.data import DataError, Normalizer, Recording, load_recording, make_streams, seed_mock
from lstm_jax.metrics import asd, evaluate, noise_reduction_db
from lstm_jax.inference import StreamingPredictor, TrainedModel, build_model
from lstm_jax.model import LSTMRegressor
from lstm_jax.recurrent import ScanConfig, lstm_layer, lstm_stack
from lstm_jax.train import train_and_evaluate

__all__ = [
    'Config', 'DataError', 'LSTMCarry', 'LSTMParams', 'LSTMRegressor', 'Normalizer', 'Recording',
    'ScanConfig', 'StreamingPredictor', 'TrainedModel', 'asd', 'build_model', 'evaluate',
    'get_config', 'init_lstm_params', 'load_recording', 'lstm_cell', 'lstm_layer', 'lstm_stack',
    'make_streams', 'noise_reduction_db', 'seed_mock', 'train_and_evaluate', 'zero_carry',
]
