"""C type layout for the BPF target (LP64, little endian): sizeof, alignof and offsetof for the
structs a selftest file defines and the UAPI structs it uses.

Handles scalars and the kernel's fixed-width typedefs (`__u32`, `__be16`, ...), pointers (8
bytes), arrays, nested and anonymous structs/unions, enums, bitfields (System V rules: a field
never straddles a unit of its type; unnamed ones add no alignment), and the `aligned`/`packed`
attributes. A `Layouts` may have a parent (the UAPI header's layouts) that it falls back to.

Owns: types and their layout. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from checks.errors import CheckError
from checks.kselftest.cexpr import IntType, Value, enumerator, evaluate
from checks.kselftest.tokens import Tok, group_end, split_top, string_value


@dataclass(frozen=True)
class Field:
    name: str | None          # None: an anonymous struct/union member, or an unnamed bitfield
    offset: int               # bytes from the start of the enclosing struct
    type: "CType"
    bit_size: int | None = None


@dataclass(frozen=True)
class CType:
    kind: str                 # "int", "float", "void", "ptr", "array", "struct", "union", "func"
    size: int
    align: int
    name: str = ""
    signed: bool = False
    target: "CType | None" = None     # pointee or array element
    count: int = 0                    # array length
    fields: tuple[Field, ...] = ()


class IncompleteType(CheckError):
    """A struct or union that is declared but never defined here (a vmlinux.h type, say)."""


def _incomplete(t: CType) -> bool:
    return t.kind in ("struct", "union") and not t.fields and t.size == 0


def scalar(name: str, size: int, signed: bool) -> CType:
    return CType("int", size, size, name, signed)


def pointer(to: CType) -> CType:
    return CType("ptr", 8, 8, to.name + " *", False, to)


def array(of: CType, count: int) -> CType:
    return CType("array", of.size * count, of.align, f"{of.name}[{count}]", target=of, count=count)


VOID = CType("void", 1, 1, "void")

# The fixed-width and size types of linux/types.h, stdint.h and the selftests' vmlinux.h aliases.
_FIXED = {
    1: ("__u8 u8 uint8_t u_int8_t __u8", "__s8 s8 int8_t"),
    2: ("__u16 u16 uint16_t __be16 __le16 __sum16 u_int16_t", "__s16 s16 int16_t"),
    4: ("__u32 u32 uint32_t __be32 __le32 __wsum u_int32_t __kernel_pid_t",
        "__s32 s32 int32_t"),
    8: ("__u64 u64 uint64_t __be64 __le64 __aligned_u64 __aligned_be64 __aligned_le64 size_t "
        "__kernel_size_t uintptr_t u_int64_t",
        "__s64 s64 int64_t ssize_t intptr_t ptrdiff_t __kernel_long_t"),
}
BUILTIN_TYPEDEFS = {name: scalar(name, size, signed)
                    for size, groups in _FIXED.items()
                    for signed, names in zip((False, True), groups) for name in names.split()}
BUILTIN_TYPEDEFS["bool"] = scalar("bool", 1, False)

_SPECIFIER_WORDS = frozenset("signed unsigned short long int char _Bool void float double".split())
_QUALIFIERS = frozenset("const volatile restrict __restrict register static extern inline __inline "
                        "__always_inline __volatile__ __const".split())


def _round_up(value: int, align: int) -> int:
    return -(-value // align) * align


class Layouts:
    """The types one translation unit knows: its struct/union/enum tags, typedefs and globals."""

    def __init__(self, *, parent: "Layouts | None" = None, lookup=None, file: str | None = None):
        self.parent = parent
        self.lookup = lookup or (lambda name: None)
        self.file = file
        self.tags: dict[str, CType] = {}          # "struct x" / "union x" / "enum x"
        self.typedefs: dict[str, CType] = {}
        self.variables: dict[str, CType] = {}
        self.enum_values: dict[str, int] = {}

    # -- lookups that fall back to the parent -----------------------------------------------
    def tag(self, key: str) -> CType | None:
        found = self.tags.get(key)
        if found is None and self.parent is not None:
            return self.parent.tag(key)
        return found

    def typedef(self, name: str) -> CType | None:
        found = self.typedefs.get(name)
        if found is None and self.parent is not None:
            return self.parent.typedef(name)
        return found if found is not None else BUILTIN_TYPEDEFS.get(name)

    def variable(self, name: str) -> CType | None:
        return self.variables.get(name)

    # -- questions cexpr asks ------------------------------------------------------------------
    def size_of(self, t: CType) -> int:
        if _incomplete(t):
            raise IncompleteType(f"sizeof incomplete type '{t.name}'", file=self.file)
        return t.size

    def align_of(self, t: CType) -> int:
        return t.align

    def int_type(self, t: CType) -> IntType | None:
        if t.kind in ("int", "ptr"):
            return IntType(t.size * 8, t.signed)
        return None

    def offset_of(self, t: CType, path: list, *, file=None, line=None) -> int:
        offset, _ = self.member(t, path, file=file, line=line)
        return offset

    def member(self, t: CType, path: list, *, file=None, line=None) -> tuple[int, CType]:
        """(offset, type) of `a.b[2].c` inside `t`."""
        offset = 0
        for step in path:
            if isinstance(step, int):
                if t.kind != "array":
                    raise CheckError(f"'{t.name}' is not an array", file=file or self.file, line=line)
                offset += step * t.target.size
                t = t.target
                continue
            if _incomplete(t):
                raise IncompleteType(f"incomplete type '{t.name}'", file=file or self.file, line=line)
            found = _find_field(t, step)
            if found is None:
                raise CheckError(f"'{t.name}' has no member '{step}'", file=file or self.file, line=line)
            delta, field = found
            if field.bit_size is not None:
                raise CheckError(f"offsetof a bitfield ('{step}')", file=file or self.file, line=line)
            offset += delta
            t = field.type
        return offset, t

    # -- parsing types -------------------------------------------------------------------------
    def type_at(self, toks: list[Tok], i: int) -> tuple[CType, int] | None:
        """The type name starting at toks[i] (specifiers, then `*`s and `[N]`s), or None."""
        found = self.specifiers(toks, i)
        if found is None:
            return None
        t, i = found
        while i < len(toks) and toks[i].text in ("*", "const", "volatile", "restrict", "__restrict"):
            if toks[i].text == "*":
                t = pointer(t)
            i += 1
        dims, i = self.dimensions(toks, i)
        for n in reversed(dims):
            t = array(t, n)
        if i + 1 < len(toks) and toks[i].text == "(" and toks[i + 1].text in ("void", ")"):
            i = group_end(toks, i)              # a function type: `void (void)`
            t = CType("func", 1, 1, "function")
        return t, i

    def specifiers(self, toks: list[Tok], i: int) -> tuple[CType, int] | None:
        words = []
        while i < len(toks) and toks[i].kind == "id":
            text = toks[i].text
            if text in _QUALIFIERS:
                i += 1
            elif text in _SPECIFIER_WORDS:
                words.append(text)
                i += 1
            elif text in ("struct", "union", "enum") and not words:
                return self.tagged(toks, i)
            elif text == "__attribute__":
                i = group_end(toks, i + 1)
            elif not words and self.typedef(text) is not None:
                return self.typedef(text), i + 1
            else:
                break
        if not words:
            return None
        return _base_type(words), i

    def tagged(self, toks: list[Tok], i: int) -> tuple[CType, int]:
        """`struct x`, `struct x { ... }`, `struct { ... }` (and union/enum) at toks[i]."""
        kind = toks[i].text
        i += 1
        leading = _attributes(toks, i)               # struct __attribute__((packed)) name {...}
        while i < len(toks) and toks[i].text == "__attribute__":
            i = group_end(toks, i + 1)
        name = None
        if i < len(toks) and toks[i].kind == "id":
            name = toks[i].text
            i += 1
        key = f"{kind} {name}" if name else ""
        if i < len(toks) and toks[i].text == "{":
            end = group_end(toks, i)
            t = self.define_body(kind, key or f"{kind} <anonymous>", toks[i + 1:end - 1],
                                 {**leading, **_attributes(toks, end)})
            if key:
                self.tags[key] = t
            return t, end
        if kind == "enum":
            return scalar(key, 4, False), i
        found = self.tag(key)
        return (found if found is not None else CType(kind, 0, 1, key)), i

    def define_body(self, kind: str, key: str, body: list[Tok], attrs: dict) -> CType:
        if kind == "enum":
            self.define_enum(body)
            return scalar(key, 4, False)
        members = self.members(body)
        return _lay_out(kind, key, members, packed="packed" in attrs, align=attrs.get("aligned", 1))

    def define_enum(self, body: list[Tok]) -> None:
        value = -1
        for item in split_top(body, ","):
            if not item:
                continue
            if len(item) > 2 and item[1].text == "=":
                value = evaluate(item[2:], lookup=self.constant, layouts=self, file=self.file).value
            else:
                value += 1
            self.enum_values[item[0].text] = value

    def constant(self, name: str) -> Value | None:
        """An enumerator of this unit or its parent, else what `lookup` knows."""
        if name in self.enum_values:
            return enumerator(self.enum_values[name])
        if self.parent is not None:
            found = self.parent.constant(name)
            if found is not None:
                return found
        return self.lookup(name)

    def dimensions(self, toks: list[Tok], i: int) -> tuple[list[int], int]:
        dims = []
        while i < len(toks) and toks[i].text == "[":
            end = group_end(toks, i)
            inner = toks[i + 1:end - 1]
            dims.append(evaluate(inner, lookup=self.constant, layouts=self, file=self.file).value
                        if inner else 0)
            i = end
        return dims, i

    def members(self, body: list[Tok]) -> list[tuple[str | None, CType, int | None, int]]:
        """(name, type, bit width or None, extra alignment) for each member declarator."""
        out = []
        for decl in split_top(body, ";"):
            if not decl:
                continue
            found = self.specifiers(decl, 0)
            if found is None:
                raise CheckError(f"cannot read member declaration '{' '.join(t.text for t in decl[:6])}'",
                                 file=self.file, line=decl[0].line)
            base, i = found
            declarators = split_top(decl[i:], ",")
            if declarators == [[]]:
                out.append((None, base, None, 1))         # anonymous struct/union member
                continue
            for d in declarators:
                out.append(self.declarator(base, d))
        return out

    def declarator(self, base: CType, d: list[Tok]) -> tuple[str | None, CType, int | None, int]:
        """One declarator of a declaration (`*name[4]`, `x : 3`, `(*fn)(int)`); trailing
        annotations such as `SEC("x")` or `__ksym` are passed over."""
        t, i, name = base, 0, None
        attrs: dict = {}
        while i < len(d):
            text = d[i].text
            if text == "__attribute__":
                attrs.update(_attributes(d, i))
                i = group_end(d, i + 1)
                continue
            if text == "(":
                if name is None:                        # function pointer: ( * name ) ( ... )
                    inner = d[i + 1:group_end(d, i) - 1]
                    name = next((x.text for x in inner if x.kind == "id"), None)
                    return name, pointer(VOID), None, 1
                i = group_end(d, i)
                continue
            if text in ("[", ":", "="):
                break
            if text == "*":
                t = pointer(t)
            elif d[i].kind == "id" and text not in _QUALIFIERS and name is None:
                name = text
            i += 1
        dims, i = self.dimensions(d, i)
        for n in reversed(dims):
            t = array(t, n)
        width = None
        if i < len(d) and d[i].text == ":":
            width = evaluate(d[i + 1:], lookup=self.constant, layouts=self, file=self.file).value
        return name, t, width, attrs.get("aligned", 1)

    def declare(self, toks: list[Tok]) -> list[tuple[str, CType, list[Tok]]]:
        """Record a top-level declaration's tags, enumerators and typedefs. Returns
        (name, type, initializer tokens) for each object it declares; an array declared `[]`
        takes its length from the initializer."""
        is_typedef = bool(toks) and toks[0].text == "typedef"
        found = self.specifiers(toks, 1 if is_typedef else 0)
        if found is None:
            return []
        base, i = found
        declared = []
        for d in split_top(toks[i:], ","):
            eq = next((k for k, t in enumerate(d) if t.text == "="), len(d))
            name, t, _, _ = self.declarator(base, d[:eq])
            if name is None:
                continue
            init = d[eq + 1:]
            if t.kind == "array" and t.count == 0 and init:
                t = array(t.target, _initializer_length(init))
            if is_typedef:
                self.typedefs[name] = t
            else:
                declared.append((name, t, init))
        return declared

    def expression_type(self, toks: list[Tok], i: int, *, file=None) -> tuple[CType, int]:
        """The type of the unary expression at toks[i] (for `sizeof expr`): variables,
        `((T *)0)->member`, `x[0]`, `*p`, `&x`."""
        tok = toks[i] if i < len(toks) else None
        if tok is None:
            raise CheckError("sizeof needs an operand", file=file or self.file)
        if tok.text == "*":
            t, i = self.expression_type(toks, i + 1, file=file)
            return (t.target or t), i
        if tok.text == "&":
            t, i = self.expression_type(toks, i + 1, file=file)
            return pointer(t), i
        if tok.text == "(":
            cast = self.type_at(toks, i + 1)
            if cast is not None and cast[1] < len(toks) and toks[cast[1]].text == ")":
                _, i = self.expression_type(toks, cast[1] + 1, file=file)
                return cast[0], i
            t, i = self.expression_type(toks, i + 1, file=file)
            if i >= len(toks) or toks[i].text != ")":
                raise CheckError("sizeof: unsupported expression", file=file or self.file, line=tok.line)
            return self.postfix(t, toks, i + 1, file)
        if tok.kind == "num":
            return scalar("int", 4, True), i + 1
        if tok.kind == "id" and self.variable(tok.text) is not None:
            return self.postfix(self.variable(tok.text), toks, i + 1, file)
        raise CheckError(f"sizeof: unknown name '{tok.text}'", file=file or self.file, line=tok.line)

    def postfix(self, t: CType, toks: list[Tok], i: int, file) -> tuple[CType, int]:
        while i < len(toks) and toks[i].text in ("->", ".", "["):
            if toks[i].text == "[":
                t, i = (t.target or t), group_end(toks, i)
                continue
            holder = t.target if toks[i].text == "->" else t
            if holder is None or i + 1 >= len(toks):
                raise CheckError("sizeof: bad member access", file=file or self.file, line=toks[i].line)
            _, t = self.member(holder, [toks[i + 1].text], file=file, line=toks[i].line)
            i += 2
        return t, i


def _base_type(words: list[str]) -> CType:
    name = " ".join(words)
    if "void" in words:
        return VOID
    if "float" in words or "double" in words:
        size = 4 if "float" in words else (16 if "long" in words else 8)
        return CType("float", size, size, name)
    signed = "unsigned" not in words
    if "char" in words:
        return scalar(name, 1, signed)
    if "_Bool" in words:
        return scalar(name, 1, False)
    if "short" in words:
        return scalar(name, 2, signed)
    if "long" in words:
        return scalar(name, 8, signed)
    return scalar(name, 4, signed)


def _lay_out(kind: str, key: str, members, *, packed: bool, align: int) -> CType:
    """Place members by the System V rules; a union puts every member at 0."""
    fields = []
    bits = 0                      # next free bit (struct) / largest size in bits (union)
    struct_align = align
    for name, t, width, extra_align in members:
        member_align = 1 if packed else max(t.align, extra_align)
        if width is not None:
            unit = t.size * 8
            if kind == "union":
                start = 0
            elif width == 0:
                bits = _round_up(bits, unit)
                continue
            elif not packed and bits // unit != (bits + width - 1) // unit:
                start = bits = _round_up(bits, unit)
            else:
                start = bits
            if name is not None:
                struct_align = max(struct_align, member_align)
                fields.append(Field(name, (start // unit) * t.size, t, width))
            bits = max(bits, start + width) if kind == "union" else start + width
            continue
        struct_align = max(struct_align, member_align)
        start = 0 if kind == "union" else _round_up(bits, member_align * 8)
        fields.append(Field(name, start // 8, t))
        bits = max(bits, start + t.size * 8) if kind == "union" else start + t.size * 8
    size = _round_up(_round_up(bits, 8) // 8, struct_align)
    return CType(kind, size, struct_align, key, fields=tuple(fields))


def _find_field(t: CType, name: str) -> tuple[int, Field] | None:
    """A member by name, looking inside anonymous members (C11)."""
    for f in t.fields:
        if f.name == name:
            return f.offset, f
        if f.name is None and f.type.kind in ("struct", "union"):
            inner = _find_field(f.type, name)
            if inner is not None:
                return f.offset + inner[0], inner[1]
    return None


def _initializer_length(init: list[Tok]) -> int:
    """Elements of `{a, b, [5] = c}` or characters (+ NUL) of a string initializer."""
    if init and init[0].kind == "str":
        return sum(len(string_value(t)) for t in init if t.kind == "str") + 1
    if not init or init[0].text != "{":
        return 1
    items = [x for x in split_top(init[1:-1], ",") if x]
    length = index = 0
    for item in items:
        if item[0].text == "[" and len(item) > 2 and item[1].kind == "num":
            index = int(item[1].text, 0)
        index += 1
        length = max(length, index)
    return length


def _attributes(toks: list[Tok], i: int) -> dict:
    """`packed` and `aligned(N)` from the __attribute__((...)) groups starting at toks[i]."""
    attrs: dict = {}
    while i < len(toks) and toks[i].text == "__attribute__":
        end = group_end(toks, i + 1)
        inner = toks[i + 2:end - 1]
        for j, t in enumerate(inner):
            if t.text in ("packed", "__packed__"):
                attrs["packed"] = True
            elif t.text in ("aligned", "__aligned__") and j + 2 < len(inner) and inner[j + 1].text == "(":
                attrs["aligned"] = int(inner[j + 2].text, 0)
        i = end
    return attrs
