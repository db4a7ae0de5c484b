"""A compiled selftest object (`clang -target bpf` of a `progs/verifier_*.c`) → `SelftestCase`s,
with no need for its source.

test_loader reads a test's annotations from the decl tags on its BTF FUNC; the C importer
turns the annotation macros into those same tag strings. So the tags read from BTF go through
the importer's own `annotations.expectations`, and the SEC name through `sections.section`,
and a case from an object matches the case from its source field for field, except:
`line` is the first line BTF line info gives for the function (the importer gives the line of
its name), `naked` stays False (BTF does not record it), and programs with C bodies are
there too, since the compiler built them.

Owns: ELF object → cases. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import pathlib

from checks.errors import CheckError
from checks.kselftest import annotations, sections
from checks.kselftest.case import SelftestCase
from jit.elf import BpfObject, Entry, NeedsKernel, is_bpf_object, read_object

__all__ = ["is_bpf_object", "load_elf_cases"]

_ARCH = "X86_64"                  # the arch we emulate; other __arch_* tests are skipped


def load_elf_cases(path: str | pathlib.Path) -> list[SelftestCase]:
    """Every program of a BPF object, in section and address order. Raises JitError when the
    object as a whole is malformed."""
    obj = read_object(path)
    return [_case(obj, entry) for entry in obj.entries]


def _case(obj: BpfObject, entry: Entry) -> SelftestCase:
    line = entry.line or 0
    base = dict(id=f"{pathlib.Path(obj.file).name}::{entry.name}", file=obj.file, name=entry.name,
                line=line, sec=entry.section)
    try:
        fields = annotations.expectations([(tag, line) for tag in obj.tags(entry)], entry.name, file=obj.file)
    except CheckError as e:
        return SelftestCase(**base, description=entry.name, prog_type=None, expect="success",
                            expect_unpriv=None, retval=None, retval_unpriv=None, error=e)
    unknown = fields.pop("unknown_tags")
    found = sections.section(entry.section)
    program, skip, error = None, None, None
    if found is None:
        error = CheckError(f"unknown program section '{entry.section}'", file=obj.file, line=line)
    elif fields["arch"] and _ARCH not in fields["arch"]:
        skip = f"arch {', '.join(a.lower() for a in fields['arch'])} only"
    else:
        try:
            program = obj.program(entry.name, prog_type=found.prog_type)
        except NeedsKernel as e:
            skip = e.message
    return SelftestCase(**base, **fields, prog_type=found.prog_type if found else None,
                        unknown_annotations=unknown, program=program, skip_reason=skip, error=error)
