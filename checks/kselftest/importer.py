"""A test_loader-format selftest file (`progs/verifier_*.c`) → `SelftestCase`s, no compiler.

Every function with a SEC(...) is a program and gives one case (auxiliary programs too, marked
so). A `__naked` function whose body is one `asm volatile(...)` statement is assembled and
linked into a `jit.program.Program`; any other test gets a `skip_reason`. A malformed test
gets a CheckError in `error` and the rest of its file still imports.

Owns: turning one file into cases. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import functools
import pathlib
from dataclasses import dataclass

from checks.errors import CheckError
from checks.kselftest import annotations, maps, operands, sections, uapi
from checks.kselftest.case import SelftestCase
from checks.kselftest.ctypes_layout import IncompleteType, Layouts
from checks.kselftest.decls import Declaration, Function, split
from checks.kselftest.linker import FunctionCode, NeedsCompiler, Symbols, assemble_function, link
from checks.kselftest.source import Preprocessor
from checks.kselftest.template import Template
from checks.kselftest.tokens import Tok, group_end, split_top, string_value
from jit.program import MapDef

# libbpf's attribute-only macros (bpf_helpers.h) that may sit in a global's declaration:
# `__hidden` (visibility) and the kptr type tags change nothing the importer lays out.
_ATTRIBUTE_MACROS = frozenset("__hidden __weak __kptr __kptr_untrusted __percpu_kptr".split())


def is_selftest_source(path: str | pathlib.Path) -> bool:
    """Whether a file is for `load_cases`: a verifier_*.c, or C with `__naked` SEC programs."""
    path = pathlib.Path(path)
    if path.suffix != ".c":
        return False
    if path.name.startswith("verifier_"):
        return True
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return False
    return "__naked" in text and "SEC(" in text


def load_cases(path: str | pathlib.Path) -> list[SelftestCase]:
    """All programs of one selftest file, in source order. Raises CheckError only when the file
    as a whole cannot be read (unreadable, unbalanced #if)."""
    path = pathlib.Path(path)
    try:
        text = path.read_text(errors="replace")
    except OSError as e:
        raise CheckError(f"cannot read selftest file: {e.strerror}", file=str(path)) from None
    unit = _Unit(path, text)
    return [unit.case(fn) for fn in unit.programs()]


@dataclass(frozen=True)
class _Asm:
    """The one `asm volatile (template : outputs : inputs : clobbers);` of a naked function."""
    template: list[Tok]
    outputs: list[Tok]
    inputs: list[Tok]


class _Unit:
    """One preprocessed file: its types, maps, globals and functions."""

    def __init__(self, path: pathlib.Path, text: str):
        self.file = str(path)
        self.uapi = uapi.load(path)
        self.layouts = Layouts(parent=self.uapi.layouts, lookup=self.uapi.constant, file=self.file)
        self.functions: dict[str, Function] = {}
        self.externs: set[str] = set()
        self.map_decls: dict[str, Declaration] = {}
        self.globals: dict[str, maps.GlobalVar] = {}
        self.broken: dict[str, CheckError] = {}        # maps/globals whose declaration failed
        pre = Preprocessor(self.file)
        for item in split(pre.run(text)):
            self.add(item)
        self.vmlinux = any(name.endswith("vmlinux.h") for name in pre.includes)
        self.asm = {name: _asm_statement(fn) for name, fn in self.functions.items()}
        self.asm_numbers = {name: n for n, name in enumerate(n for n, a in self.asm.items() if a)}
        self.annotations: dict[str, annotations.Annotated] = {}
        self.symbols = Symbols(self.uapi.helpers, self.kind_of)
        self.scope = operands.Scope(self.uapi.helpers, self.is_symbol, self.layouts.constant, self.layouts)
        self.code = functools.lru_cache(maxsize=None)(self._code)
        self.map_of = functools.lru_cache(maxsize=None)(self._map_of)
        self.section_map = functools.lru_cache(maxsize=None)(self._section_map)

    # -- reading the file ---------------------------------------------------------------------
    def add(self, item: Function | Declaration) -> None:
        if isinstance(item, Function):
            if item.body is not None:
                self.functions[item.name] = item
            else:
                self.externs.add(item.name)
            return
        toks = [t for t in item.toks if t.text not in _ATTRIBUTE_MACROS]
        section, toks = _take_section(toks)
        if section == ".maps":
            name = _declared_name(toks)
            if name is not None:
                self.map_decls[name] = Declaration(item.toks, item.line)
        elif section in ("license", "version") or (section or "").startswith(".struct_ops"):
            return
        elif toks and toks[0].text == "extern":
            self.externs.update(name for name, _, _ in self.declare(toks, item.line))
        else:
            for name, ctype, init in self.declare(toks, item.line):
                self.layouts.variables[name] = ctype
                self.globals[name] = maps.GlobalVar(name, ctype, maps.section_of(tuple(toks), init, section),
                                                    tuple(init), item.line)

    def declare(self, toks: list[Tok], line: int) -> list:
        try:
            return self.layouts.declare(toks)
        except CheckError as e:
            name = _declared_name(toks)
            if name:
                self.broken[name] = e.located(file=self.file, line=line)
            return []

    def programs(self) -> list[Function]:
        return [fn for fn in self.functions.values() if self.annotated(fn.name).sec is not None]

    def annotated(self, name: str) -> annotations.Annotated:
        if name not in self.annotations:
            try:
                found = annotations.read(self.functions[name].prefix, file=self.file)
            except CheckError as e:
                found = annotations.Annotated(error=e)
            self.annotations[name] = found
        return self.annotations[name]

    # -- what names are -------------------------------------------------------------------------
    def kind_of(self, name: str) -> str | None:
        if name in self.functions:
            naked = self.annotated(name).naked and self.asm[name] is not None
            return "func" if naked else "cfunc"
        if name in self.map_decls:
            return "map"
        if name in self.globals or name in self.broken:
            return "var"
        return None

    def is_symbol(self, name: str) -> bool:
        return self.kind_of(name) is not None or name in self.externs

    def _map_of(self, name: str) -> MapDef:
        if name in self.broken:
            raise self.broken[name]
        decl = self.map_decls[name]
        return maps.map_def(name, decl.toks, layouts=self.layouts, uapi=self.uapi, file=self.file)

    def _section_map(self, section: str) -> maps.SectionMap:
        return maps.section_map(section, list(self.globals.values()), self.layouts, self.file)

    def variable(self, name: str) -> tuple[MapDef, int]:
        if name in self.broken:
            raise self.broken[name]
        found = self.section_map(self.globals[name].section)
        return found.map, found.offsets[name]

    # -- functions → code ----------------------------------------------------------------------
    def _code(self, name: str) -> FunctionCode:
        asm = self.asm[name]
        if asm is None or not self.annotated(name).naked:
            raise NeedsCompiler(f"needs a compiler: calls C function {name}")
        _check_template(asm.template, self.file, self.functions[name].line)
        template = Template(asm.template, file=self.file)
        if asm.outputs:
            raise NeedsCompiler("asm outputs: compiler-chosen registers")
        ops = operands.read(asm.inputs, self.scope, file=self.file)
        used = template.names()
        for op_name, op in ops.items():
            if op.unsupported and op_name in used:
                raise NeedsCompiler(op.unsupported)
        texts = {n: op.text for n, op in ops.items() if op.text is not None}
        statements = template.statements(texts, self.asm_numbers[name])
        return assemble_function(name, statements, self.symbols, file=self.file)

    # -- cases ---------------------------------------------------------------------------------
    def case(self, fn: Function) -> SelftestCase:
        ann = self.annotated(fn.name)
        base = dict(id=f"{pathlib.Path(self.file).name}::{fn.name}", file=self.file, name=fn.name,
                    line=fn.line, sec=ann.sec)
        try:
            if ann.error is not None:
                raise ann.error
            fields = annotations.expectations(ann.tags, fn.name, file=self.file)
        except CheckError as e:
            return SelftestCase(**base, description=fn.name, prog_type=None, expect="success",
                                expect_unpriv=None, retval=None, retval_unpriv=None, error=e)
        unknown = tuple(ann.unknown) + fields.pop("unknown_tags")
        found = sections.section(ann.sec)
        prog_type = found.prog_type if found else None
        program, skip, error = None, None, None
        try:
            skip = self.why_not_imported(fn, ann, fields["arch"], found)
            if skip is None:
                program = link(fn.name, symbols=self.symbols, code=self.code, map_of=self.map_of,
                               variable=self.variable, prog_type=prog_type, file=self.file)
        except NeedsCompiler as e:
            skip = str(e)
        except IncompleteType as e:
            if not self.vmlinux:
                error = e.located(file=self.file, line=fn.line)
            else:
                skip = f"needs vmlinux.h: {e.message}"
        except CheckError as e:
            error = e.located(file=self.file, line=fn.line)
        return SelftestCase(**base, **fields, prog_type=prog_type, unknown_annotations=unknown,
                            naked=self.kind_of(fn.name) == "func", program=program,
                            skip_reason=skip, error=error)

    def why_not_imported(self, fn: Function, ann, arch: tuple[str, ...], found) -> str | None:
        if found is None:
            raise CheckError(f"unknown program section '{ann.sec}'", file=self.file, line=ann.sec_line)
        if arch and annotations.ARCH not in arch:
            return f"arch {', '.join(a.lower() for a in arch)} only"
        if self.asm[fn.name] is None:
            return "needs a compiler: C body"
        if not ann.naked:
            return "needs a compiler: asm in a function that is not __naked"
        return None


def _asm_statement(fn: Function) -> _Asm | None:
    """The parts of the body when it is exactly one `asm volatile (...)` statement."""
    body = list(fn.body or ())
    i = 0
    if i < len(body) and body[i].text in ("asm", "__asm__", "__asm"):
        i += 1
        while i < len(body) and body[i].text in ("volatile", "__volatile__", "goto"):
            i += 1
    if i == 0 or i >= len(body) or body[i].text != "(":
        return None
    end = group_end(body, i)
    if [t.text for t in body[end:]] not in ([], [";"]):
        return None
    parts = split_top(body[i + 1:end - 1], ":") + [[], [], []]
    return _Asm(parts[0], parts[1], parts[2])


def _check_template(toks: list[Tok], file: str, line: int) -> None:
    """The template must be string literals only (adjacent ones are joined)."""
    for t in toks:
        if t.kind == "bad":
            raise CheckError(t.text, file=file, line=t.line)
        if t.kind != "str":
            raise CheckError(f"asm template: '{t.text}' is not part of a string literal",
                             file=file, line=t.line)
    if not toks:
        raise CheckError("asm statement without a template", file=file, line=line)


def _take_section(toks: list[Tok]) -> tuple[str | None, list[Tok]]:
    """The SEC("...") of a declaration, and its tokens without it."""
    for i in range(len(toks) - 2):
        if toks[i].text == "SEC" and toks[i + 1].text == "(":
            end = group_end(toks, i + 1)
            name = "".join(string_value(t) for t in toks[i + 2:end - 1] if t.kind == "str")
            return name, toks[:i] + toks[end:]
    return None, toks


def _declared_name(toks: list[Tok]) -> str | None:
    """The name a declaration declares: its last identifier outside brackets before any
    initializer or array bound (`struct {...} name = {...}` → name)."""
    name, depth = None, 0
    for t in toks:
        if depth == 0 and t.text in ("=", "["):
            break
        if t.text in ("(", "{", "["):
            depth += 1
        elif t.text in (")", "}", "]"):
            depth -= 1
        elif t.kind == "id" and depth == 0:
            name = t.text
    return name
