"""What the host CPU can do for bf16, so a run asking for bf16 on a CPU without it is told so.

A CPU computes in bf16 natively only with bf16 units (AVX512_BF16, AMX or Arm's BF16);
elsewhere XLA emulates it through fp32 conversions and bf16 compute is slower than fp32 (an
AVX2-only AMD EPYC trained at 5.9k and 6.8k chars/s in bf16 against 9.4k and 8.9k in fp32, in two
runs of `python -m bench.run`).
"""

BF16_FLAGS = frozenset({'avx512_bf16', 'amx_bf16', 'bf16'})  # x86 flags; Arm's 'Features' name.


def cpu_flags(cpuinfo: str) -> frozenset[str] | None:
  """The first processor's feature flags from /proc/cpuinfo's text; None if it lists none."""
  for line in cpuinfo.splitlines():
    key, _, value = line.partition(':')
    if key.strip() in ('flags', 'Features'):
      return frozenset(value.split())
  return None


def read_cpuinfo(path: str = '/proc/cpuinfo') -> str:
  try:
    with open(path) as f:
      return f.read()
  except OSError:  # Not Linux: nothing to say.
    return ''


def bf16_warning(dtype: str, platform: str, cpuinfo: str) -> str | None:
  """One line of advice when bf16 compute is asked of a CPU that would emulate it; else None."""
  flags = cpu_flags(cpuinfo)
  if dtype != 'bfloat16' or platform != 'cpu' or flags is None or flags & BF16_FLAGS:
    return None
  return ('config.dtype=bfloat16, but this CPU has no bf16 units (no AVX512_BF16, AMX or Arm '
          'BF16 in /proc/cpuinfo): bf16 is emulated through fp32 here and trains slower than '
          'float32; use --config.dtype=float32 on this machine')
