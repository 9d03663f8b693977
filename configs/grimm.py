"""The TFLearn SequenceGenerator tutorial's run: 2xLSTM-256 on Grimms' Fairy Tales.

  python -m lstmgen.main --config=configs/grimm.py --workdir=runs/grimm

Dropout 0.5, Adam 1e-3, global-norm clip 5, windows of 100 characters, batch 128, the last 10% of the
book held out, samples of 600 characters at temperatures 1.0, 0.5 and 0.1.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.data.corpus = 'grimm'
  config.num_steps = 5000
  return config
