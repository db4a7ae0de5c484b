"""Maps of a selftest file, as `jit.program.MapDef`s.

- BTF-style definitions: `struct { __uint(type, BPF_MAP_TYPE_HASH); __uint(max_entries, 1);
  __type(key, long long); __type(value, struct test_val); } name SEC(".maps");`, with
  `__array(values, ...)` for prog arrays and map-in-maps (value_size 4, as libbpf sets) and a
  `.values = { [0] = &prog }` initialiser.
- Global variables: one array map per ELF section (.bss, .data, .rodata, .data.*), one value
  holding every variable of the section at its offset, as libbpf makes them. `.rodata` gets
  BPF_F_RDONLY_PROG.

Owns: map definitions. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from checks.errors import CheckError
from checks.kselftest.cexpr import IntType, evaluate, wrap
from checks.kselftest.ctypes_layout import CType, Layouts
from checks.kselftest.tokens import Tok, group_end, spell, split_top, string_value
from jit.btf_maps import IGNORED_ATTRIBUTES
from jit.elf import BPF_F_RDONLY_PROG
from jit.program import MapDef


@dataclass(frozen=True)
class GlobalVar:
    name: str
    type: CType
    section: str
    init: tuple[Tok, ...]       # initializer tokens (after '='), empty if none
    line: int


@dataclass(frozen=True)
class SectionMap:
    map: MapDef
    offsets: dict               # variable name -> byte offset in the map's value


def map_def(name: str, toks: tuple[Tok, ...], *, layouts: Layouts, uapi, file: str | None) -> MapDef:
    """The MapDef of `struct { ... } name SEC(".maps") [= {...}]` (tokens of the declaration)."""
    start = next((i for i, t in enumerate(toks) if t.text == "{"), None)
    if start is None:
        raise CheckError(f"map {name}: no attribute block", file=file, line=toks[0].line)
    end = group_end(toks, start)
    attrs = dict(type=None, key_size=0, value_size=0, max_entries=0, map_flags=0)
    line = toks[0].line
    for member in split_top(list(toks[start + 1:end - 1]), ";"):
        if member:
            _attribute(member, attrs, layouts, uapi, name, file)
    if attrs["type"] is None:
        raise CheckError(f"map {name}: no type", file=file, line=line)
    eq = next((i for i in range(end, len(toks)) if toks[i].text == "="), None)
    values = _values(list(toks[eq + 1:]), name, file) if eq is not None else ()
    return MapDef(name, attrs["type"], attrs["key_size"], attrs["value_size"], attrs["max_entries"],
                  attrs["map_flags"], values)


def _attribute(member: list[Tok], attrs: dict, layouts: Layouts, uapi, name: str, file) -> None:
    head = member[0]
    if len(member) < 4 or member[1].text != "(" or member[-1].text != ")":
        raise CheckError(f"map {name}: cannot read '{spell(member)}'", file=file, line=head.line)
    args = split_top(member[2:-1], ",")
    if len(args) != 2 or len(args[0]) != 1:
        raise CheckError(f"map {name}: cannot read '{spell(member)}'", file=file, line=head.line)
    field, value = args[0][0].text, args[1]
    if head.text in ("__uint", "__ulong") and field in IGNORED_ATTRIBUTES:
        return
    if head.text in ("__uint", "__ulong") and field == "type":
        attrs["type"] = _map_type(value, uapi, name, file)
    elif head.text in ("__uint", "__ulong") and field in attrs:
        attrs[field] = evaluate(value, lookup=layouts.constant, layouts=layouts, file=file).value
    elif head.text == "__type" and field in ("key", "value"):
        found = layouts.type_at(value, 0)
        if found is None or found[1] != len(value):
            raise CheckError(f"map {name}: unknown {field} type '{spell(value)}'", file=file, line=head.line)
        attrs[f"{field}_size"] = layouts.size_of(found[0])
    elif head.text == "__array" and field == "values":
        attrs["value_size"] = attrs["value_size"] or 4
    else:
        raise CheckError(f"map {name}: unknown attribute '{head.text}({field}, ...)'",
                         file=file, line=head.line)


def _map_type(value: list[Tok], uapi, name: str, file) -> str:
    if len(value) == 1 and value[0].kind == "id":
        found = uapi.map_type_name(value[0].text)
    else:
        number = evaluate(value, lookup=uapi.constant, file=file).value
        found = uapi.map_type_of_value(number)
    if found is None:
        raise CheckError(f"map {name}: unknown map type '{spell(value)}'", file=file, line=value[0].line)
    return found


def _values(init: list[Tok], name: str, file) -> tuple[tuple[int, str], ...]:
    """`{ .values = { [0] = (void *)&prog, ... } }` → ((0, "prog"), ...)."""
    for i, t in enumerate(init):
        if t.text == "values" and i and init[i - 1].text == "." and i + 2 < len(init) \
                and init[i + 2].text == "{":
            inner = init[i + 3:group_end(init, i + 2) - 1]
            break
    else:
        return ()
    out, index = [], 0
    for item in split_top(inner, ","):
        if len(item) > 3 and item[0].text == "[" and item[2].text == "]" and item[3].text == "=":
            index = int(item[1].text, 0)
            item = item[4:]
        target = [t.text for t in item if t.kind == "id" and t.text != "void"]
        if not target:
            raise CheckError(f"map {name}: cannot read initial value '{spell(item)}'",
                             file=file, line=item[0].line if item else None)
        out.append((index, target[-1]))
        index += 1
    return tuple(out)


def section_of(decl: tuple[Tok, ...], init: list[Tok], explicit: str | None) -> str:
    """The ELF section clang puts a global in."""
    if explicit:
        return explicit
    if any(t.text == "const" for t in decl):
        return ".rodata"
    zero = not init or all(t.text in ("{", "}", "0", ",") for t in init)
    return ".bss" if zero else ".data"


def section_map(section: str, variables: list[GlobalVar], layouts: Layouts, file) -> SectionMap:
    """The array map libbpf makes for `section`, with its variables laid out in order."""
    offsets, image = {}, bytearray()
    for var in variables:
        if var.section != section:
            continue
        start = -(-len(image) // max(var.type.align, 1)) * max(var.type.align, 1)
        image.extend(bytes(start - len(image)))
        offsets[var.name] = start
        image.extend(_initial_bytes(var, layouts, file))
    flags = BPF_F_RDONLY_PROG if section.startswith(".rodata") else 0
    initial = ((0, bytes(image)),) if any(image) else ()
    return SectionMap(MapDef(section, "array", 4, max(len(image), 1), 1, flags, initial=initial), offsets)


def _initial_bytes(var: GlobalVar, layouts: Layouts, file) -> bytes:
    t, init = var.type, list(var.init)
    if not init:
        return bytes(t.size)
    if t.kind == "int":
        return _scalar(init, t, layouts, file)
    if t.kind == "array" and init[0].kind == "str":
        text = "".join(string_value(x) for x in init if x.kind == "str").encode("latin-1")
        return text[:t.size].ljust(t.size, b"\0")
    if t.kind == "array" and t.target.kind == "int" and init[0].text == "{":
        items = [x for x in split_top(init[1:-1], ",") if x]
        data = b"".join(_scalar(x, t.target, layouts, file) for x in items[:t.count])
        return data.ljust(t.size, b"\0")
    if init[0].text == "{" and len(init) == 2:
        return bytes(t.size)
    raise CheckError(f"cannot evaluate the initializer of global '{var.name}'", file=file, line=var.line)


def _scalar(toks: list[Tok], t: CType, layouts: Layouts, file) -> bytes:
    value = evaluate(toks, lookup=layouts.constant, layouts=layouts, file=file).value
    return wrap(value, IntType(t.size * 8, False)).to_bytes(t.size, "little")
