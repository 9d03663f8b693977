"""What every lstmgen command shares: quiet logs, and one line plus exit 2 for a user's mistake."""

import functools
import logging as pylogging
import sys

from absl import logging

from lstmgen.errors import UserError


class _OwnLogsOnly(pylogging.Filter):
  """lstmgen's INFO logs, other libraries' warnings; Orbax (which narrates every save) errors only."""

  def filter(self, record):
    if '/lstmgen/' in record.pathname:
      return True
    return record.levelno >= (pylogging.ERROR if '/orbax/' in record.pathname else pylogging.WARNING)


def command(main):
  """Wraps an absl `main`: INFO logs of lstmgen only; UserError -> one line on stderr, exit 2."""

  @functools.wraps(main)
  def wrapped(argv):
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_OwnLogsOnly())
    try:
      return main(argv)
    except UserError as e:
      print(f'lstmgen: error: {e}', file=sys.stderr, flush=True)
      sys.exit(2)

  return wrapped
