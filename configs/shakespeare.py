"""char-rnn's tiny-shakespeare (1.1 MB, 65 characters) with the reference model.

  python -m lstmgen.main --config=configs/shakespeare.py --workdir=runs/shakespeare
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.corpus = 'shakespeare'
  config.data.strip_gutenberg = False  # Not a Gutenberg file.
  config.num_steps = 10000
  config.eval_every = 1000
  config.checkpoint_every = 1000
  config.sample_every = 1000
  return config
