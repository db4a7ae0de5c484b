"""BTF and BTF.ext, as clang writes them into a BPF object: types, strings, decl tags,
func_info and line_info.

Layouts (kernel uapi `btf.h` and libbpf's `.BTF.ext` reader, as facts): both sections start
with a little-endian header (magic 0xeb9f, version 1, flags, header length, then offset/length
pairs relative to the header's end). A type is 12 bytes (name offset, info word: vlen in bits
0-15, kind in bits 24-28, kind_flag in bit 31; then a size or a type id) followed by
kind-specific data. In an object file, func_info and line_info records are grouped by ELF
section and their instruction offsets count *bytes* from the section start.

Owns: decoding the two sections into plain records. Must not import unicorn, capstone,
anything from checks/ or bot/.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field

from jit.errors import JitError

MAGIC = 0xEB9F
(INT, PTR, ARRAY, STRUCT, UNION, ENUM, FWD, TYPEDEF, VOLATILE, CONST, RESTRICT, FUNC, FUNC_PROTO,
 VAR, DATASEC, FLOAT, DECL_TAG, TYPE_TAG, ENUM64) = range(1, 20)
KIND_NAMES = ("void", "int", "ptr", "array", "struct", "union", "enum", "fwd", "typedef", "volatile",
              "const", "restrict", "func", "func_proto", "var", "datasec", "float", "decl_tag",
              "type_tag", "enum64")
# Kinds that only qualify or rename the type they point to.
MODIFIERS = frozenset((TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG))
# Kinds whose third header word is a size in bytes (the others hold a type id).
_SIZED = frozenset((INT, STRUCT, UNION, ENUM, DATASEC, FLOAT, ENUM64))
# Bytes after the 12-byte header: (fixed part, per vlen entry).
_TRAILER = {INT: (4, 0), ARRAY: (12, 0), STRUCT: (0, 12), UNION: (0, 12), ENUM: (0, 8),
            FUNC_PROTO: (0, 8), VAR: (4, 0), DATASEC: (0, 12), DECL_TAG: (4, 0), ENUM64: (0, 12)}
_HEADER = struct.Struct("<HBBIIIII")        # magic, version, flags, hdr_len, then 2 (off, len) pairs
_BTF_PARTS = ("types", "strings")
_MAX_CHAIN = 64                             # typedef/const/ptr chains longer than this are loops


@dataclass(frozen=True)
class Member:
    """One entry after a type's header: a struct/union member (`offset` in bits), a function
    parameter, an enumerator (`offset` is its value), or a DATASEC variable (`offset` and
    `size` in bytes)."""
    name: str
    type: int = 0
    offset: int = 0
    size: int = 0


@dataclass(frozen=True)
class BtfType:
    id: int
    kind: int
    name: str
    ref: int                  # size in bytes for sized kinds, else the referenced type id
    vlen: int = 0
    kind_flag: bool = False
    members: tuple[Member, ...] = ()
    array: tuple[int, int, int] | None = None      # (element type, index type, element count)
    extra: int = 0            # INT encoding word, VAR linkage, DECL_TAG component index

    @property
    def kind_name(self) -> str:
        return KIND_NAMES[self.kind]


_VOID = BtfType(0, 0, "void", 0)


class Btf:
    """The types of one `.BTF` section; `types[id]`, id 0 being void."""

    def __init__(self, types: list[BtfType], *, file: str | None):
        self.types = types
        self.file = file
        self._tags: dict[int, list[str]] | None = None
        self._by_name: dict[tuple[int, str], BtfType] | None = None

    def error(self, message: str) -> JitError:
        return JitError(f".BTF: {message}", file=self.file)

    def __getitem__(self, type_id: int) -> BtfType:
        if not 0 <= type_id < len(self.types):
            raise self.error(f"type id {type_id} out of range (the section has {len(self.types) - 1})")
        return self.types[type_id]

    def resolve(self, type_id: int) -> BtfType:
        """The type behind typedefs and qualifiers."""
        t = self[type_id]
        for _ in range(_MAX_CHAIN):
            if t.kind not in MODIFIERS:
                return t
            t = self[t.ref]
        raise self.error(f"type [{type_id}]: qualifier chain loops")

    def size_of(self, type_id: int, depth: int = 0) -> int:
        """Bytes a value of the type takes, as libbpf's btf__resolve_size computes it."""
        if depth > _MAX_CHAIN:
            raise self.error(f"type [{type_id}]: size depends on itself")
        t = self.resolve(type_id)
        if t.kind in _SIZED:
            return t.ref
        if t.kind == PTR:
            return 8
        if t.kind == ARRAY:
            return t.array[2] * self.size_of(t.array[0], depth + 1)
        raise self.error(f"type [{type_id}] ({t.kind_name} '{t.name}') has no size")

    def find(self, kind: int, name: str) -> BtfType | None:
        """The first type of `kind` called `name` (libbpf's btf__find_by_name_kind)."""
        if self._by_name is None:
            self._by_name = {}
            for t in reversed(self.types):
                self._by_name[(t.kind, t.name)] = t
        return self._by_name.get((kind, name))

    def decl_tags(self, type_id: int) -> list[str]:
        """The decl tags on type `type_id` itself (component -1), in BTF order, as test_loader
        reads a test's annotations."""
        if self._tags is None:
            self._tags = {}
            for t in self.types:
                if t.kind == DECL_TAG and t.extra == -1:
                    self._tags.setdefault(t.ref, []).append(t.name)
        return list(self._tags.get(type_id, ()))


@dataclass(frozen=True)
class LineInfo:
    insn_off: int             # bytes from the start of the ELF section
    file: str
    line: int
    col: int
    text: str


@dataclass(frozen=True)
class BtfExt:
    """func_info and line_info by ELF section name, sorted by instruction offset."""
    func_info: dict[str, tuple[tuple[int, int], ...]] = field(default_factory=dict)  # (byte off, FUNC id)
    line_info: dict[str, tuple[LineInfo, ...]] = field(default_factory=dict)


class _Reader:
    """Bounds-checked little-endian reads of one section; every failure names the offset."""

    def __init__(self, data: bytes, section: str, file: str | None):
        self.data, self.section, self.file = data, section, file

    def error(self, message: str, offset: int) -> JitError:
        return JitError(f"{self.section} at offset 0x{offset:x}: {message}", file=self.file)

    def unpack(self, fmt: str | struct.Struct, offset: int) -> tuple:
        s = fmt if isinstance(fmt, struct.Struct) else struct.Struct(fmt)
        if offset < 0 or offset + s.size > len(self.data):
            raise self.error(f"truncated: {s.size} bytes needed, the section has {len(self.data)}", offset)
        return s.unpack_from(self.data, offset)

    def header(self, parts: tuple[str, str]) -> tuple[int, tuple[tuple[int, int], tuple[int, int]]]:
        """Header length and its two (offset, length) pairs, made absolute and checked;
        `parts` names them for messages."""
        magic, version, _flags, hdr_len, off1, len1, off2, len2 = self.unpack(_HEADER, 0)
        if magic != MAGIC:
            raise self.error(f"bad magic 0x{magic:04x} (want 0x{MAGIC:04x}, little-endian)", 0)
        if version != 1:
            raise self.error(f"unsupported version {version}", 2)
        if hdr_len < _HEADER.size or hdr_len > len(self.data):
            raise self.error(f"bad header length {hdr_len}", 4)
        found = []
        for i, (off, length) in enumerate(((off1, len1), (off2, len2))):
            start = hdr_len + off
            if start + length > len(self.data):
                raise self.error(f"{parts[i]} ({length} bytes at 0x{start:x}) run past the end",
                                 8 + 8 * i)
            found.append((start, length))
        return hdr_len, (found[0], found[1])


class _Strings:
    def __init__(self, reader: _Reader, start: int, length: int):
        self.reader, self.start, self.length = reader, start, length

    def __call__(self, offset: int, where: int) -> str:
        if offset == 0 and self.length == 0:
            return ""
        if not 0 <= offset < self.length:
            raise self.reader.error(f"string offset {offset} outside the string table "
                                    f"({self.length} bytes)", where)
        data = self.reader.data
        end = data.find(b"\0", self.start + offset, self.start + self.length)
        if end < 0:
            raise self.reader.error(f"string at {offset} is not NUL-terminated", where)
        return data[self.start + offset:end].decode("utf-8", "replace")


def parse_btf(data: bytes, *, file: str | None = None) -> Btf:
    """Decode a `.BTF` section."""
    reader = _Reader(data, ".BTF", file)
    _, ((type_start, type_len), (str_start, str_len)) = reader.header(_BTF_PARTS)
    strings = _Strings(reader, str_start, str_len)
    types, pos, end = [_VOID], type_start, type_start + type_len
    while pos < end:
        t, pos = _type(reader, strings, pos, len(types))
        types.append(t)
    if pos != end:
        raise reader.error("the last type runs past the type section", pos)
    return Btf(types, file=file)


def _type(reader: _Reader, strings: _Strings, pos: int, type_id: int) -> tuple[BtfType, int]:
    name_off, info, ref = reader.unpack("<III", pos)
    kind, vlen, kind_flag = (info >> 24) & 0x1F, info & 0xFFFF, bool(info >> 31)
    if not 1 <= kind <= ENUM64:
        raise reader.error(f"type [{type_id}]: unknown kind {kind}", pos)
    fixed, each = _TRAILER.get(kind, (0, 0))
    body = pos + 12
    base = dict(id=type_id, kind=kind, name=strings(name_off, pos), ref=ref, vlen=vlen,
                kind_flag=kind_flag)
    if kind == ARRAY:
        base["array"] = reader.unpack("<III", body)
    elif fixed:
        base["extra"] = reader.unpack("<i" if kind == DECL_TAG else "<I", body)[0]
    if each:
        base["members"] = tuple(_member(reader, strings, kind, body + fixed + i * each) for i in range(vlen))
    return BtfType(**base), body + fixed + vlen * each


def _member(reader: _Reader, strings: _Strings, kind: int, pos: int) -> Member:
    if kind == DATASEC:
        var, offset, size = reader.unpack("<III", pos)
        return Member("", var, offset, size)
    if kind in (STRUCT, UNION):
        name_off, member_type, offset = reader.unpack("<III", pos)
        return Member(strings(name_off, pos), member_type, offset)
    if kind == ENUM:
        name_off, value = reader.unpack("<Ii", pos)
        return Member(strings(name_off, pos), offset=value)
    if kind == ENUM64:
        name_off, lo, hi = reader.unpack("<III", pos)
        return Member(strings(name_off, pos), offset=(hi << 32) | lo)
    name_off, param_type = reader.unpack("<II", pos)            # FUNC_PROTO parameter
    return Member(strings(name_off, pos), param_type)


def parse_btf_ext(data: bytes, btf_data: bytes, *, file: str | None = None) -> BtfExt:
    """Decode a `.BTF.ext` section; its strings live in the `.BTF` section `btf_data`."""
    reader = _Reader(data, ".BTF.ext", file)
    _, ((func_start, func_len), (line_start, line_len)) = reader.header(("func_info", "line_info"))
    btf_reader = _Reader(btf_data, ".BTF", file)
    _, (_, (str_start, str_len)) = btf_reader.header(_BTF_PARTS)
    strings = _Strings(btf_reader, str_start, str_len)
    funcs = _records(reader, strings, func_start, func_len, 8, "<II")
    lines = _records(reader, strings, line_start, line_len, 16, "<IIII")
    func_info = {sec: tuple(sorted(recs)) for sec, recs in funcs.items()}
    line_info = {sec: tuple(sorted((_line(strings, rec, pos) for pos, *rec in recs),
                                   key=lambda li: li.insn_off)) for sec, recs in lines.items()}
    return BtfExt(func_info, line_info)


def _records(reader: _Reader, strings: _Strings, start: int, length: int, min_size: int,
             fmt: str) -> dict[str, list[tuple]]:
    """One part of .BTF.ext: a record size, then per ELF section its name, count and records.
    func_info records come back as (offset, type id); line_info ones with their position first."""
    out: dict[str, list[tuple]] = {}
    if length == 0:
        return out
    (rec_size,) = reader.unpack("<I", start)
    if rec_size < min_size:
        raise reader.error(f"record size {rec_size} is below the minimum {min_size}", start)
    pos, end = start + 4, start + length
    while pos < end:
        name_off, count = reader.unpack("<II", pos)
        section = strings(name_off, pos)
        pos += 8
        if pos + count * rec_size > end:
            raise reader.error(f"section '{section}': {count} records run past the end", pos - 4)
        recs = out.setdefault(section, [])
        for i in range(count):
            rec = reader.unpack(fmt, pos + i * rec_size)
            recs.append(rec if min_size == 8 else (pos + i * rec_size, *rec))
        pos += count * rec_size
    return out


def _line(strings: _Strings, rec: tuple, pos: int) -> LineInfo:
    insn_off, file_off, text_off, line_col = rec
    return LineInfo(insn_off, strings(file_off, pos), line_col >> 10, line_col & 0x3FF,
                    strings(text_off, pos))
