"""The tests of a selftest C file that only a compiler can build, taken from the file's object.

The C importer skips a test whose body is plain C (or that needs compiler-chosen registers,
vmlinux.h, or a kfunc the emulated kernel serves): `wants_object` says which. When a file has
such tests, compiling is on (`checks.kselftest.compile.compiling_enabled`) and a clang with
the BPF target exists, the file is built once (cached, `checks.kselftest.compile`) and just
those tests get their program from the object (`checks.kselftest.elf_cases`); every other
test, and every expectation, still comes from the C source. A file whose build fails keeps
those tests skipped, now with the compiler's reason.

Owns: choosing the tests to take from the object, and taking them. Must not import unicorn,
github or bot/.
"""
from __future__ import annotations

import dataclasses
import pathlib
import re

from checks.iter_kfuncs import KFUNC_IDS
from checks.kselftest import compile as cc
from checks.kselftest.case import SelftestCase
from checks.kselftest.elf_cases import load_elf_cases
from jit.errors import JitError

# The importer's skip reasons that a compiler removes (their first words), and why.
COMPILER_REASONS = {
    "needs a compiler": "a C body, or asm in a C function",
    "__imm_ptr": "an operand in a compiler-chosen register",
    "asm outputs": "outputs in compiler-chosen registers",
    "needs vmlinux.h": "types only the kernel's BTF dump declares",
}
_KFUNC = re.compile(r"calls kfunc (\w+): needs kernel BTF")


def wants_object(case: SelftestCase) -> bool:
    """Whether the object would give this skipped test a program the source cannot."""
    if case.program is not None or case.error is not None or not case.skip_reason:
        return False
    kfunc = _KFUNC.match(case.skip_reason)
    if kfunc is not None:
        return kfunc.group(1) in KFUNC_IDS
    return case.skip_reason.startswith(tuple(COMPILER_REASONS))


def with_object(cases: list[SelftestCase], source: pathlib.Path, *,
                compiler: cc.Compiler | None = None) -> list[SelftestCase]:
    """`cases` (of `source`) with the tests `wants_object` picks taken from its object, when
    compiling is on and a compiler is there (`compiler`, else the default one)."""
    wanted = {c.name for c in cases if wants_object(c)}
    if not wanted or not cc.compiling_enabled():
        return cases
    compiler = compiler or cc.default_compiler()
    if compiler is None:
        return cases
    built = compiler.build(source)
    if not built.ok:
        return [_skipped(c, built.how) if c.name in wanted else c for c in cases]
    try:
        from_object = {c.name: c for c in load_elf_cases(built.object)}
    except JitError as e:
        return [_skipped(c, f"{cc.NEEDS}: the object {compiler.name} built is refused: {e.message}")
                if c.name in wanted else c for c in cases]
    return [_taken(c, from_object.get(c.name)) if c.name in wanted else c for c in cases]


def _skipped(case: SelftestCase, reason: str) -> SelftestCase:
    return dataclasses.replace(case, skip_reason=reason)


def _taken(case: SelftestCase, built: SelftestCase | None) -> SelftestCase:
    """The source's case with the object's program (named after the source file), or with the
    object's reason for having none."""
    if built is None:
        return _skipped(case, f"{cc.NEEDS}: the object has no program '{case.name}'")
    if built.program is None:
        return _skipped(case, built.skip_reason or str(built.error))
    return dataclasses.replace(case, program=dataclasses.replace(built.program, file=case.file),
                               skip_reason=None)
