"""A compiled selftest object (`clang -target bpf` of a `progs/verifier_*.c`) → `SelftestCase`s,
with no need for its source.

test_loader reads a test's annotations from the decl tags on its BTF FUNC; the C importer
turns the annotation macros into those same tag strings. So the tags read from BTF go through
the importer's own `annotations.expectations`, and the SEC name through `sections.section`,
and a case from an object matches the case from its source field for field, except:
`line` is the first line BTF line info gives for the function (the importer gives the line of
its name), `naked` stays False (BTF does not record it), and programs with C bodies are
there too, since the compiler built them. Calls of the kfuncs the emulated kernel serves by
name (`checks.iter_kfuncs`) are linked to their ids; other kfuncs leave the test skipped.

Owns: ELF object → cases. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import dataclasses
import pathlib

from checks.errors import CheckError
from checks.iter_kfuncs import KFUNC_IDS
from checks.kselftest import annotations, sections
from checks.kselftest.case import SelftestCase
from jit.elf import BpfObject, Entry, NeedsKernel, is_bpf_object, read_object

__all__ = ["differences", "is_bpf_object", "load_elf_cases", "runner_cases"]

# Fields in which a case from an object may differ from the case from its source, and why.
NOT_COMPARED = {
    "id": "named after the object file",
    "file": "the object's path",
    "line": "BTF line info gives the first line of code, not the line of the function's name",
    "naked": "BTF does not record __naked",
    "unknown_annotations": "the source also lists macros it does not know; BTF only has tags",
    "program": "compared on instructions and maps (Program.file and label names differ)",
    "skip_reason": "the compiler builds C bodies the importer skips",
    "error": "compared as present or absent",
}


def load_elf_cases(path: str | pathlib.Path) -> list[SelftestCase]:
    """Every program of a BPF object, in section and address order. Raises JitError when the
    object as a whole is malformed."""
    obj = read_object(path)
    return [_case(obj, entry) for entry in obj.entries]


def runner_cases(path: str, file_id: str) -> list:
    """The runner's `FileType.cases` for BPF objects: each case runs as the same test from its
    C file would (`checks.kselftest.run`, imported here because it loads the test machinery)."""
    from checks.kselftest import run
    del file_id                      # ids are "<object name>::<function>"
    return run.runner_cases(load_elf_cases(path))


def _case(obj: BpfObject, entry: Entry) -> SelftestCase:
    line = entry.line or 0
    base = dict(id=f"{pathlib.Path(obj.file).name}::{entry.name}", file=obj.file, name=entry.name,
                line=line, sec=entry.section)
    # Refusals point into the C source BTF names, when it does (a line of the object means nothing).
    where = dict(file=entry.source, line=entry.line) if entry.source else dict(file=obj.file, line=None)
    try:
        fields = annotations.expectations([(tag, where["line"]) for tag in obj.tags(entry)], entry.name,
                                          file=where["file"])
    except CheckError as e:
        return SelftestCase(**base, description=entry.name, prog_type=None, expect="success",
                            expect_unpriv=None, retval=None, retval_unpriv=None, error=e)
    unknown = fields.pop("unknown_tags")
    found = sections.section(entry.section)
    program, skip, error = None, None, None
    if found is None:
        error = CheckError(f"unknown program section '{entry.section}'", **where)
    elif fields["arch"] and annotations.ARCH not in fields["arch"]:
        skip = f"arch {', '.join(a.lower() for a in fields['arch'])} only"
    else:
        try:
            program = obj.program(entry.name, prog_type=found.prog_type, kfuncs=KFUNC_IDS)
        except NeedsKernel as e:
            skip = e.message
    return SelftestCase(**base, **fields, prog_type=found.prog_type if found else None,
                        unknown_annotations=unknown, program=program, skip_reason=skip, error=error)


def differences(from_source: SelftestCase, from_object: SelftestCase) -> list[str]:
    """How a case read from an object differs from the same case read from its C source,
    beyond the differences `NOT_COMPARED` allows. Empty when they agree."""
    out = [f"{f.name}: source {getattr(from_source, f.name)!r}, object {getattr(from_object, f.name)!r}"
           for f in dataclasses.fields(SelftestCase)
           if f.name not in NOT_COMPARED and getattr(from_source, f.name) != getattr(from_object, f.name)]
    if (from_source.error is None) != (from_object.error is None):
        out.append(f"error: source {from_source.error}, object {from_object.error}")
    if from_source.program is not None:
        if from_object.program is None:
            out.append(f"only the source built a program; object: {from_object.skip_reason or from_object.error}")
        else:
            out += _program_differences(from_source.program, from_object.program)
    return out


def _program_differences(source, obj) -> list[str]:
    out = []
    if source.insns != obj.insns:
        at = next((i for i, (a, b) in enumerate(zip(source.insns, obj.insns)) if a != b),
                  min(len(source.insns), len(obj.insns)))
        out.append(f"instructions differ from slot {at} ({len(source.insns)} vs {len(obj.insns)} slots)")
    # The importer may not know an inner map template that BTF spells out.
    theirs = tuple(dataclasses.replace(m, inner=None) if s.inner is None else m
                   for s, m in zip(source.maps, obj.maps))
    if len(source.maps) != len(obj.maps) or source.maps != theirs:
        out.append(f"maps differ: source {[m.name for m in source.maps]}, object {[m.name for m in obj.maps]}")
    return out
