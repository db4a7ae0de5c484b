"""The checks layer's error: malformed test files, unknown helpers, emulator set-up failures.

KASAN findings and faults of a program under test are *results*, never exceptions.
"""
from jit.errors import BpfKasanError


class CheckError(BpfKasanError):
    """Bad input to the checks layer (a test file, a program, an option), located when possible."""
