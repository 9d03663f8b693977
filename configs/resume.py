"""A run's own saved config (WORKDIR/config.json), to resume it with some fields changed:

  python -m lstmgen.main --config=configs/resume.py:runs/grimm --workdir=runs/grimm \
      --config.num_steps=10000

Without changes, `python -m lstmgen.main --workdir=runs/grimm` resumes the run as it was saved.
"""

from lstmgen import checkpoint


def get_config(workdir: str):
  return checkpoint.load_config(workdir)
