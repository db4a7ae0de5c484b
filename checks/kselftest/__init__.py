"""Import the kernel's inline-asm verifier selftests (`progs/verifier_*.c`, test_loader format)
straight from C source, without a compiler.

Pipeline, one module per step: `tokens` (C lexing) → `source` (preprocessor) → `decls` (top-level
declarations) → `annotations` / `maps` / `ctypes_layout` / `operands` → `linker` (asm → Program)
→ `importer` (file → `SelftestCase`s). `load_cases(path)` is the entry point.

Owns: reading test sources. Must not import github or anything from bot/.
"""
from checks.kselftest.case import SelftestCase
from checks.kselftest.importer import is_selftest_source, load_cases

__all__ = ["SelftestCase", "is_selftest_source", "load_cases"]
