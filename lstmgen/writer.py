"""Where a run's metrics go: workdir/metrics.jsonl (one JSON object per event) and TensorBoard."""

import json
import math
import os


class MetricWriter:
  """Appends events to metrics.jsonl and TensorBoard; a no-op on processes other than 0."""

  def __init__(self, workdir: str, enabled: bool = True, resumed_at: int = 0):
    """`resumed_at`: the restored step. What an earlier launch logged after it is dropped, from
    metrics.jsonl and from TensorBoard's view: the resumed run logs it again, so both read as one
    run."""
    self.enabled = enabled
    self.path = os.path.join(workdir, 'metrics.jsonl')
    self._tb = None
    if enabled:
      from tensorboardX import SummaryWriter  # Imported here: only process 0 writes events.
      # Event file names hold the time in whole seconds: the suffix keeps two launches within
      # one second from writing to the same file.
      self._tb = SummaryWriter(os.path.join(workdir, 'tensorboard'), flush_secs=30,
                               purge_step=resumed_at + 1,
                               filename_suffix=f'.{os.getpid()}.{resumed_at}')
      self._truncate_after(resumed_at)

  def _truncate_after(self, step: int) -> None:
    if not os.path.exists(self.path):
      return
    with open(self.path, encoding='utf-8') as f:
      keep = [line for line in f if line.strip() and json.loads(line)['step'] <= step]
    tmp = self.path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as f:
      f.writelines(keep)
    os.replace(tmp, self.path)

  def write(self, event: dict) -> None:
    if not self.enabled:
      return
    with open(self.path, 'a', encoding='utf-8') as f:
      f.write(json.dumps(event, sort_keys=True) + '\n')
    for name, value in event.items():
      if (name not in ('step', 'wall_time') and isinstance(value, (int, float))
          and math.isfinite(value)):
        self._tb.add_scalar(name, value, event['step'], walltime=event.get('wall_time'))

  def flush(self) -> None:
    """Writes TensorBoard's queued events out (at each checkpoint: a killed run loses none of
    the steps it resumes after)."""
    if self._tb is not None:
      self._tb.flush()

  def text(self, tag: str, text: str, step: int) -> None:
    if self.enabled:
      self._tb.add_text(tag, text, step)

  def close(self) -> None:
    if self._tb is not None:
      self._tb.close()


def read(workdir: str) -> list[dict]:
  path = os.path.join(workdir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]
