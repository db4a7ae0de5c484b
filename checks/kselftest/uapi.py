"""What `#include <linux/bpf.h>` and `<bpf/bpf_helpers.h>` give a selftest: helper ids, UAPI
constants (map types, flags), and UAPI struct layouts.

Read from the kernel tree the selftests sit in when it is there: the nearest
include/uapi/linux/bpf.h above the file (tools/include/uapi, which the selftests compile
against, comes before the kernel's own include/uapi), and the helper ids of
tools/lib/bpf/bpf_helper_defs.h, or failing that bpf.h's `FN(name, id, ...)` list. Without a
tree, everything comes from `uapi_facts`. A few structs are never in bpf.h (x86-64 `pt_regs`,
`bpf_perf_event_data`, `bpf_nf_ctx`) and always come from the facts. Parsed once per header
per process; nothing is cached on disk.

Owns: locating and reading the UAPI headers. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import functools
import pathlib
import re
from dataclasses import dataclass, field

from checks.errors import CheckError
from checks.kselftest import uapi_facts
from checks.kselftest.cexpr import Value, enumerator, evaluate
from checks.kselftest.constants import builtin
from checks.kselftest.ctypes_layout import CType, Field, Layouts, array, scalar
from checks.kselftest.decls import Declaration, split
from checks.kselftest.source import Macro, Preprocessor

_HELPER_DEF = re.compile(r"\(\s*\*\s*const\s+(\w+)\s*\)\s*\([^;]*?\)\s*=\s*\(void\s*\*\)\s*(\d+)\s*;", re.S)
_HELPER_FN = re.compile(r"\bFN\(\s*(\w+)\s*,\s*(\d+)\s*[,)]")


@dataclass
class Uapi:
    helpers: dict[str, int]                   # "bpf_map_lookup_elem" -> 1
    layouts: Layouts                          # UAPI structs; enumerators through .constant()
    macros: dict[str, Macro] = field(default_factory=dict)   # bpf.h's #defines, evaluated lazily
    origin: str = "built-in tables"
    problems: list[str] = field(default_factory=list)        # declarations of the header we skipped
    _values: dict[str, Value | None] = field(default_factory=dict)

    def constant(self, name: str) -> Value | None:
        """An enumerator or numeric #define of the header, else a built-in fact."""
        if name in self._values:
            return self._values[name]
        enum = self.layouts.enum_values.get(name)
        value = enumerator(enum) if enum is not None else None
        macro = self.macros.get(name)
        if value is None and macro is not None and macro.params is None and macro.body:
            self._values[name] = None             # a self-referencing macro must not recurse
            try:
                value = evaluate(list(macro.body), lookup=self.constant, layouts=self.layouts)
            except CheckError:
                value = None
        value = value if value is not None else builtin(name)
        self._values[name] = value
        return value

    def map_type_name(self, enumerator: str) -> str | None:
        """"BPF_MAP_TYPE_HASH" -> "hash", if the header has that map type."""
        if not enumerator.startswith("BPF_MAP_TYPE_") or self.constant(enumerator) is None:
            return None
        return enumerator[len("BPF_MAP_TYPE_"):].lower()

    def map_type_of_value(self, value: int) -> str | None:
        names = [n for n, v in self.layouts.enum_values.items()
                 if n.startswith("BPF_MAP_TYPE_") and v == value and not n.endswith("_DEPRECATED")]
        return names[-1][len("BPF_MAP_TYPE_"):].lower() if names else None


def find_root(c_file: str | pathlib.Path) -> pathlib.Path | None:
    """The nearest directory above `c_file` holding include/uapi/linux/bpf.h."""
    here = pathlib.Path(c_file).resolve().parent
    for d in [here, *here.parents][:7]:
        if (d / "include/uapi/linux/bpf.h").is_file():
            return d
    return None


def load(c_file: str | pathlib.Path) -> Uapi:
    """The UAPI view for a selftest file: from its kernel tree if found, else the facts."""
    root = find_root(c_file)
    return _from_tree(str(root)) if root is not None else _from_facts()


@functools.lru_cache(maxsize=4)
def _from_tree(root: str) -> Uapi:
    base = pathlib.Path(root)
    header = base / "include/uapi/linux/bpf.h"
    text = header.read_text(errors="replace")
    pre = Preprocessor(str(header))
    toks = pre.run(text)
    layouts = Layouts(lookup=builtin, file=str(header))
    _add_facts(layouts)
    problems = []
    for item in split(toks):
        if isinstance(item, Declaration):
            try:
                layouts.declare(list(item.toks))
            except CheckError as e:
                problems.append(str(e))
    uapi = Uapi(_helpers(base, text), layouts, pre.macros, f"tree {root}", problems)
    layouts.lookup = uapi.constant
    return uapi


@functools.lru_cache(maxsize=1)
def _from_facts() -> Uapi:
    layouts = Layouts(lookup=builtin)
    _add_facts(layouts)
    for key, table in uapi_facts.FALLBACK_STRUCTS.items():
        layouts.tags[key] = struct_from_table(key, *table)
    layouts.enum_values.update(uapi_facts.FALLBACK_CONSTANTS)
    return Uapi(dict(uapi_facts.FALLBACK_HELPERS), layouts)


def _helpers(base: pathlib.Path, bpf_h: str) -> dict[str, int]:
    for defs in (base / "tools/lib/bpf/bpf_helper_defs.h", base / "lib/bpf/bpf_helper_defs.h"):
        if defs.is_file():
            return {name: int(n) for name, n in _HELPER_DEF.findall(defs.read_text(errors="replace"))}
    return {f"bpf_{name}": int(n) for name, n in _HELPER_FN.findall(bpf_h) if name != "unspec"}


def _add_facts(layouts: Layouts) -> None:
    for key, table in uapi_facts.ALWAYS_STRUCTS.items():
        layouts.tags[key] = struct_from_table(key, *table)


def struct_from_table(key: str, size: int, align: int, rows) -> CType:
    """A struct type from (name, offset, size[, count]) rows; "a.b" rows describe the members of
    a nested struct whose own row is "a"."""
    nested: dict[str, list] = {}
    for row in rows:
        if "." in row[0]:
            head, rest = row[0].split(".", 1)
            nested.setdefault(head, []).append((rest, *row[1:]))
    fields = []
    for row in rows:
        name, offset, nbytes = row[0], row[1], row[2]
        if "." in name:
            continue
        if name in nested:
            inner = [(n, o - offset, *r) for n, o, *r in nested[name]]
            t = struct_from_table(f"struct <{name}>", nbytes, align, inner)
        elif len(row) > 3:
            t = array(scalar("", nbytes // row[3], False), row[3])
        else:
            t = scalar("", nbytes, False)
        fields.append(Field(name, offset, t))
    return CType("struct", size, align, key, fields=tuple(fields))
