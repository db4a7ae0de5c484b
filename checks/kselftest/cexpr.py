"""C integer constant expressions, evaluated with C's types (BPF target: LP64, little endian).

Used for `#if` lines, `__imm_const(name, expr)` operands, map attributes and array sizes. Values
keep their C type so that `0xffffffff - 1` stays `unsigned int` and `~0` stays `int`, as a
compiler sees them; `asm_immediate` then prints a value the way clang prints an `"i"` operand
(sign-extended from the type's width, as GCC does).

Types of expressions (sizeof, offsetof, casts) come from a `layouts` object (see
`ctypes_layout.Layouts`); names come from a `lookup` callable.

Owns: expression evaluation. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import re
from typing import Callable, NamedTuple

from checks.errors import CheckError
from checks.kselftest.tokens import Tok, char_value


class IntType(NamedTuple):
    bits: int
    signed: bool


INT, UINT, LONG, ULONG = IntType(32, True), IntType(32, False), IntType(64, True), IntType(64, False)


class Value(NamedTuple):
    value: int
    type: IntType


def wrap(value: int, t: IntType) -> int:
    """`value` converted to type `t` (modulo 2**bits, then signed if `t` is)."""
    mask = (1 << t.bits) - 1
    value &= mask
    if t.signed and value >> (t.bits - 1):
        value -= 1 << t.bits
    return value


def enumerator(value: int) -> Value:
    """An enum constant: int when it fits, else the first 64-bit type that holds it (as GCC)."""
    if -(1 << 31) <= value < (1 << 31):
        return Value(value, INT)
    return Value(value, LONG if value < (1 << 63) else ULONG)


def asm_immediate(v: Value) -> int:
    """The number clang prints for an `"i"` operand: the value sign-extended from its width."""
    return wrap(v.value, IntType(v.type.bits, True))


def _promote(t: IntType) -> IntType:
    return INT if t.bits < 32 else t


def _common(a: IntType, b: IntType) -> IntType:
    """C's usual arithmetic conversions, for the integer types of an LP64 target."""
    a, b = _promote(a), _promote(b)
    if a == b:
        return a
    if a.signed == b.signed:
        return a if a.bits >= b.bits else b
    unsigned, signed = (a, b) if not a.signed else (b, a)
    return unsigned if unsigned.bits >= signed.bits else signed


_LITERAL = re.compile(r"(0[xX][0-9a-fA-F]+|0[bB][01]+|[0-9]+)([uUlL]*)$")


def literal(text: str) -> Value:
    """An integer literal with C's typing rules (decimal: signed types only; hex/octal: the
    first of int, unsigned int, long, unsigned long that holds the value)."""
    m = _LITERAL.match(text)
    if not m:
        raise ValueError(f"not an integer constant: {text}")
    digits, suffix = m.group(1), m.group(2).lower()
    if digits[:2].lower() == "0x":
        value = int(digits, 16)
    elif digits[:2].lower() == "0b":
        value = int(digits[2:], 2)
    elif len(digits) > 1 and digits[0] == "0":
        value = int(digits, 8)
    else:
        value = int(digits)
    decimal = digits[0] != "0" or digits == "0"
    candidates = [INT, UINT, LONG, ULONG]
    if "l" in suffix:
        candidates = [LONG, ULONG]
    if "u" in suffix:
        candidates = [t for t in candidates if not t.signed]
    elif decimal:
        candidates = [t for t in candidates if t.signed] or candidates
    for t in candidates:
        if value < (1 << (t.bits - t.signed)):
            return Value(value, t)
    return Value(value & 0xFFFFFFFFFFFFFFFF, ULONG)


_BINARY = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6, "<": 7, ">": 7, "<=": 7, ">=": 7,
    "<<": 8, ">>": 8, "+": 9, "-": 9, "*": 10, "/": 10, "%": 10,
}


class Evaluator:
    """Evaluates one expression given as tokens.

    `lookup(name)` gives the Value of an identifier or None; with `undefined_is_zero` (as in
    `#if`) unknown names are 0, otherwise they are an error. `layouts` answers type questions
    (sizeof, offsetof, casts); it may be None where no types can appear."""

    def __init__(self, toks: list[Tok], *, lookup: Callable[[str], Value | None], layouts=None,
                 file: str | None = None, undefined_is_zero: bool = False):
        self.toks = toks
        self.pos = 0
        self.lookup = lookup
        self.layouts = layouts
        self.file = file
        self.undefined_is_zero = undefined_is_zero

    # -- driving ------------------------------------------------------------------------------
    def evaluate(self) -> Value:
        if not self.toks:
            raise self.error("empty expression")
        value = self.ternary()
        if self.pos < len(self.toks):
            raise self.error(f"unexpected '{self.toks[self.pos].text}' in constant expression")
        return value

    def error(self, message: str) -> CheckError:
        at = self.toks[min(self.pos, len(self.toks) - 1)] if self.toks else None
        return CheckError(message, file=self.file, line=at.line if at else None)

    def peek(self, ahead: int = 0) -> Tok | None:
        i = self.pos + ahead
        return self.toks[i] if i < len(self.toks) else None

    def take(self, text: str | None = None) -> Tok:
        tok = self.peek()
        if tok is None or (text is not None and tok.text != text):
            want = f"'{text}'" if text else "more"
            raise self.error(f"expected {want} in constant expression")
        self.pos += 1
        return tok

    # -- grammar ------------------------------------------------------------------------------
    def ternary(self) -> Value:
        cond = self.binary(1)
        if self.peek() is None or self.peek().text != "?":
            return cond
        self.take("?")
        yes = self.ternary()
        self.take(":")
        no = self.ternary()
        t = _common(yes.type, no.type)
        return Value(wrap((yes if cond.value else no).value, t), t)

    def binary(self, min_prec: int) -> Value:
        left = self.unary()
        while True:
            tok = self.peek()
            prec = _BINARY.get(tok.text) if tok is not None and tok.kind == "op" else None
            if prec is None or prec < min_prec:
                return left
            self.pos += 1
            right = self.binary(prec + 1)
            left = self.apply(tok.text, left, right)

    def apply(self, op: str, a: Value, b: Value) -> Value:
        if op in ("&&", "||"):
            result = (a.value and b.value) if op == "&&" else (a.value or b.value)
            return Value(int(bool(result)), INT)
        if op in ("<<", ">>"):
            t = _promote(a.type)
            if not 0 <= b.value < t.bits:
                raise self.error(f"shift count {b.value} is out of range for a {t.bits}-bit value")
            shifted = a.value << b.value if op == "<<" else wrap(a.value, t) >> b.value
            return Value(wrap(shifted, t), t)
        t = _common(a.type, b.type)
        x, y = wrap(a.value, t), wrap(b.value, t)
        if op in ("==", "!=", "<", ">", "<=", ">="):
            return Value(int({"==": x == y, "!=": x != y, "<": x < y, ">": x > y,
                              "<=": x <= y, ">=": x >= y}[op]), INT)
        if op in ("/", "%"):
            if y == 0:
                raise self.error("division by zero in constant expression")
            quotient = abs(x) // abs(y) * (1 if (x < 0) == (y < 0) else -1)   # C truncates
            return Value(wrap(quotient if op == "/" else x - quotient * y, t), t)
        result = {"+": x + y, "-": x - y, "*": x * y, "&": x & y, "|": x | y, "^": x ^ y}[op]
        return Value(wrap(result, t), t)

    def unary(self) -> Value:
        tok = self.peek()
        if tok is None:
            raise self.error("expression ends too early")
        if tok.kind == "op" and tok.text in ("-", "+", "~", "!"):
            self.pos += 1
            v = self.unary()
            t = _promote(v.type)
            if tok.text == "!":
                return Value(int(not v.value), INT)
            result = {"-": -v.value, "+": v.value, "~": ~v.value}[tok.text]
            return Value(wrap(result, t), t)
        cast = self.parenthesized_type()
        if cast is not None:
            return self.cast(cast, self.unary())
        if tok.kind == "id" and tok.text in ("sizeof", "_Alignof", "__alignof__"):
            self.pos += 1
            return self.size_query(tok.text != "sizeof")
        if tok.kind == "id" and tok.text in ("offsetof", "__builtin_offsetof"):
            self.pos += 1
            return self.offsetof()
        return self.primary()

    def primary(self) -> Value:
        tok = self.take()
        if tok.text == "(":
            v = self.ternary()
            self.take(")")
            return v
        if tok.kind == "num":
            try:
                return literal(tok.text)
            except ValueError as e:
                raise self.error(str(e)) from None
        if tok.kind == "chr":
            return Value(char_value(tok), INT)
        if tok.kind == "id":
            v = self.lookup(tok.text)
            if v is not None:
                return v
            if self.undefined_is_zero:
                return Value(0, INT)
            raise CheckError(f"unknown name '{tok.text}' in constant expression",
                             file=self.file, line=tok.line)
        raise CheckError(f"unexpected '{tok.text}' in constant expression", file=self.file, line=tok.line)

    # -- types --------------------------------------------------------------------------------
    def need_layouts(self):
        if self.layouts is None:
            raise self.error("types are not allowed in this expression")
        return self.layouts

    def cast(self, ctype, v: Value) -> Value:
        t = self.need_layouts().int_type(ctype)
        if t is None:
            raise self.error("cast to a non-integer type in a constant expression")
        return Value(wrap(v.value, t), t)

    def parenthesized_type(self):
        """A `( type-name )` at the current position: consume it and return the type."""
        tok = self.peek()
        if tok is None or tok.text != "(" or self.layouts is None:
            return None
        found = self.layouts.type_at(self.toks, self.pos + 1)
        if found is None or found[1] >= len(self.toks) or self.toks[found[1]].text != ")":
            return None
        self.pos = found[1] + 1
        return found[0]

    def size_query(self, align: bool) -> Value:
        """sizeof / _Alignof of `( type )` or of an expression."""
        layouts = self.need_layouts()
        ctype = self.parenthesized_type()
        if ctype is None:
            ctype, self.pos = layouts.expression_type(self.toks, self.pos, file=self.file)
        return Value(layouts.align_of(ctype) if align else layouts.size_of(ctype), ULONG)

    def offsetof(self) -> Value:
        layouts = self.need_layouts()
        self.take("(")
        found = layouts.type_at(self.toks, self.pos)
        if found is None:
            raise self.error("offsetof needs a type")
        self.pos = found[1]
        self.take(",")
        path = []
        path.append(self.take().text)
        while self.peek() is not None and self.peek().text in (".", "["):
            if self.take().text == ".":
                path.append(self.take().text)
            else:
                path.append(self.ternary().value)
                self.take("]")
        self.take(")")
        offset = layouts.offset_of(found[0], path, file=self.file, line=self.toks[0].line)
        return Value(offset, ULONG)


def evaluate(toks: list[Tok], *, lookup, layouts=None, file: str | None = None,
             undefined_is_zero: bool = False) -> Value:
    """Evaluate the tokens of one constant expression."""
    return Evaluator(toks, lookup=lookup, layouts=layouts, file=file,
                     undefined_is_zero=undefined_is_zero).evaluate()
