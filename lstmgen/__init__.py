"""lstmgen: character-level LSTM language models in JAX/Flax."""
