"""Host buffers on transparent huge pages, set up by re-executing the command once.

XLA's CPU backend allocates every temporary of a training step afresh (about 500 MB per step for
the reference model), and glibc hands buffers that large out as new mmap regions. Touching them
page by page cost ~125k page faults per step, 10-15% of the step. With glibc's `hugetlb`
tunable, malloc asks for transparent huge pages on those regions and the faults drop ~15x
(compare `python -m bench.run --only=train` with and without LSTMGEN_NO_HUGEPAGES=1). glibc reads
tunables only when a process starts, hence the re-exec; lstmgen.main does it before importing
JAX, so it costs a fraction of a second.
"""

import os
import platform
import sys

TUNABLE = 'glibc.malloc.hugetlb=1'
OPT_OUT = 'LSTMGEN_NO_HUGEPAGES'  # Set to 1 to keep the default allocator behaviour.
_THP = '/sys/kernel/mm/transparent_hugepage/enabled'


def wanted(environ=os.environ) -> bool:
  """Whether this process would gain from the tunable and does not have it yet."""
  if environ.get(OPT_OUT) or TUNABLE in environ.get('GLIBC_TUNABLES', ''):
    return False
  if sys.platform != 'linux' or platform.libc_ver()[0] != 'glibc':
    return False
  try:
    with open(_THP) as f:
      return '[never]' not in f.read()
  except OSError:
    return False


def with_tunable(environ) -> dict:
  tunables = ':'.join(t for t in (environ.get('GLIBC_TUNABLES'), TUNABLE) if t)
  return {**environ, 'GLIBC_TUNABLES': tunables}


def reexec_with_huge_pages() -> None:
  """Replaces this process with the same command under the tunable (same PID), when it helps."""
  if wanted():
    os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], with_tunable(os.environ))
