"""What every lstmgen command shares: quiet logs, and one line plus exit 2 for a user's mistake."""

import functools
import logging as pylogging
import os
import sys

from absl import flags, logging

from lstmgen.errors import UserError


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


class _OwnLogsOnly(pylogging.Filter):
  """lstmgen's INFO logs, other libraries' warnings; Orbax (which narrates every save) errors only.

  Ours are told by the package's own directory: a '/lstmgen/' anywhere in the path also matched
  every library of a virtual environment made inside a checkout named lstmgen (as CI's is).
  """

  def filter(self, record):
    if os.path.abspath(record.pathname).startswith(_PACKAGE_DIR):
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


def parse_flags(argv):
  """absl's flag parsing, with a bad flag or config override reported as one line, exit 2."""
  try:
    return flags.FLAGS(argv)
  except flags.Error as e:
    message = f'{e}; see --helpfull'
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # From config_flags overrides.
    field = str(e).strip('"\'')
    culprit = next((a for a in argv if a.startswith('--config.') and field in a), '--config...')
    message = (f'{culprit}: no such config field ({field!r}) or a value of the wrong type; the '
               'fields and their types are in configs/default.py')
  print(f'lstmgen: error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)
