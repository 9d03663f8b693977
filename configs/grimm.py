"""The TFLearn SequenceGenerator tutorial's run: 2xLSTM-256 on Grimms' Fairy Tales.

  python -m lstmgen.main --config=configs/grimm.py --workdir=runs/grimm

Dropout 0.5, Adam 1e-3, global-norm clip 5, windows of 100 characters, batch 128, the last 10% of
the book held out, samples of 600 characters at temperatures 1.0, 0.5 and 0.1.

The bundled model (lstmgen/pretrained/grimm) is this config on Gutenberg #2591 in two phases:
  python -m lstmgen.main --config=configs/grimm.py --workdir=runs/grimm --config.num_steps=3747
  python -m lstmgen.main --config=configs/grimm.py --workdir=runs/grimm --config.num_steps=4400 \
      --config.learning_rate=1e-4
It reaches 1.889 validation bits/char (1.309 nats) at step 4400 (1.898 at 3500 before the
learning rate drop), in 55 minutes on 2 Intel Xeon CPU cores (2026-12-04, JAX 0.10.2; the cores
were shared with other work for most of it, ~12-22k chars/s). The tutorial's goal of <= 1.85 needs
longer training.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.corpus = 'grimm'
  config.num_steps = 5000
  return config
