"""What every lstmgen command shares: quiet logs, and one line plus exit 2 for a user's mistake."""

import functools
import logging as pylogging
import os
import re
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
  """Wraps an absl `main`: INFO logs of lstmgen only; UserError (and an OSError, which is
  nearly always about a path the user gave) -> one line on stderr, exit 2."""

  @functools.wraps(main)
  def wrapped(argv):
    logging.set_verbosity(logging.INFO)
    logging.get_absl_handler().addFilter(_OwnLogsOnly())
    try:
      return main(argv)
    except UserError as e:
      print(f'lstmgen: error: {e}', file=sys.stderr, flush=True)
      sys.exit(2)
    except OSError as e:  # Mostly a path the user gave: a missing folder, a file, no permission.
      where = f'{e.filename}: ' if e.filename else ''
      print(f'lstmgen: error: {where}{e.strerror or e}; check the paths given', file=sys.stderr,
            flush=True)
      sys.exit(2)

  return wrapped


def _config_path(argv) -> str | None:
  """The file of a --config=FILE[:ARGS] flag in argv, if any."""
  value = next((a.split('=', 1)[1] for a in argv if a.startswith('--config=')), None)
  return value.split(':', 1)[0] if value else None


def parse_flags(argv):
  """absl's flag parsing; a bad flag, config file or config override is one line, exit 2."""
  path = _config_path(argv)
  if path and os.path.isfile(path):
    # Config files import configs/default.py: found from any working directory, not only the
    # repository root, by putting the folder above the config's folder on the path.
    sys.path.append(os.path.dirname(os.path.dirname(os.path.abspath(path))))
  try:
    argv = flags.FLAGS(argv)
    if path:
      flags.FLAGS.config.get('seed')  # A config file that failed to load raises when first read.
    return argv
  except flags.Error as e:
    message = f'{e}; see --helpfull'
  except UserError as e:  # From a config file's get_config (configs/resume.py).
    message = str(e)
  except (OSError, SyntaxError, ImportError) as e:  # Loading the --config file.
    if not os.path.isfile(path):
      message = f'--config={path}: no such file; pass a config file such as configs/grimm.py'
    else:
      cause = str(e.__cause__ or e).strip().splitlines()
      message = f'--config={path} cannot be loaded ({type(e).__name__}: {cause[-1] if cause else e})'
  except (AttributeError, KeyError, TypeError, ValueError) as e:  # From config_flags overrides.
    raw = str(e.args[0] if e.args else e)
    if 'get_config' in raw:
      message = (f'--config={path} defines no get_config(); a config file returns its '
                 'ml_collections.ConfigDict from get_config(), as configs/default.py does')
    else:
      # The field comes quoted; from a nested field with its quotes and newline escaped.
      field = (re.sub(r"\\[n']|[\"'\n]", ' ', raw).split() or ['?'])[0]
      hint = re.search(r'Did you mean "([\w.]+)"', raw)
      culprit = next((a for a in argv if a.startswith('--config.') and field in a), '--config...')
      message = (f'{culprit}: no such config field ({field}'
                 f'{f"; did you mean {hint[1]}?" if hint else ""}) or a value of the wrong type; '
                 'the fields and their types are in configs/default.py')
  print(f'lstmgen: error: {message}', file=sys.stderr, flush=True)
  sys.exit(2)
