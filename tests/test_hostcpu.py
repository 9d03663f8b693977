"""bf16 advice: told on CPUs that would emulate bf16, silent where bf16 runs natively."""

from lstmgen import hostcpu

EPYC_AVX2 = 'processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx fma avx2\n'
XEON_AMX = 'processor\t: 0\nflags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n'
ARM_BF16 = 'processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n'


def test_bf16_on_a_cpu_without_bf16_units_gets_one_line_of_advice():
  advice = hostcpu.bf16_warning('bfloat16', 'cpu', EPYC_AVX2)
  assert advice and '\n' not in advice and '--config.dtype=float32' in advice


def test_no_advice_where_bf16_is_native_or_not_asked_for_or_unknown():
  assert hostcpu.bf16_warning('bfloat16', 'cpu', XEON_AMX) is None
  assert hostcpu.bf16_warning('bfloat16', 'cpu', ARM_BF16) is None
  assert hostcpu.bf16_warning('float32', 'cpu', EPYC_AVX2) is None
  assert hostcpu.bf16_warning('bfloat16', 'gpu', EPYC_AVX2) is None  # The host CPU is not computing.
  assert hostcpu.bf16_warning('bfloat16', 'cpu', '') is None  # No /proc/cpuinfo (not Linux).
