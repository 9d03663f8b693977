"""A model small enough to train in seconds on a CPU: for tests and smoke runs.

  python -m lstmgen.main --config=configs/tiny.py --workdir=runs/tiny --config.data.path=book.txt
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.corpus = ''
  config.model.embed_size = 8
  config.model.hidden_size = 32
  config.model.num_layers = 2
  config.model.dropout = 0.0
  config.batch_size = 8
  config.seq_len = 16
  config.learning_rate = 1e-2  # A tiny model on a tiny text can take big steps.
  config.num_steps = 40
  config.log_every = 10
  config.eval_every = 20
  config.eval_batch_size = 4
  config.checkpoint_every = 20
  config.sample_every = 20
  config.sample_length = 40
  config.sample_prompt_length = 8
  return config
