"""The input operands of a selftest's `asm volatile(... : : OPERANDS : ...)`, as the text each
`%[name]` becomes (what clang prints for the operand).

- `__imm(helper)` → the helper id (bpf_helper_defs.h declares helpers as `(void *) id`);
  `__imm(function)` and `__imm(kfunc)` → the symbol name; anything else → a constant.
- `__imm_const(name, expr)` and `[name]"i"(expr)` → the constant, sign-extended from its C
  type's width, as clang prints `"i"` operands.
- `__imm_addr(map_or_global)` → the symbol name, for `rX = %[name] ll`.
- `__imm_insn(name, BPF_...(...))` → `*(long *)&insn`, for `.8byte %[name]`.
- `__imm_ptr(x)` and `"r"`/`"m"` constraints: the compiler picks a register or an address, so
  the test cannot be imported without one.

Owns: operand values. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

from checks.errors import CheckError
from checks.kselftest.cexpr import Value, asm_immediate, evaluate
from checks.kselftest.insn_macros import as_long, instruction
from checks.kselftest.tokens import Tok, spell, split_top, string_value


class Operand(NamedTuple):
    text: str | None                 # what %[name] becomes
    unsupported: str | None = None   # why no compiler-free import is possible


class Scope(NamedTuple):
    """What operand expressions can name."""
    helpers: dict[str, int]
    is_symbol: Callable[[str], bool]          # functions, maps, globals, extern declarations
    lookup: Callable[[str], Value | None]     # constants
    layouts: object                           # ctypes_layout.Layouts


def read(toks: list[Tok], scope: Scope, *, file: str | None = None) -> dict[str, Operand]:
    """Operand name → Operand, for the comma-separated operand list `toks`."""
    out: dict[str, Operand] = {}
    for item in split_top(toks, ","):
        if not item:
            continue
        name, operand = _one(item, scope, file)
        out[name] = operand
    return out


def _one(item: list[Tok], scope: Scope, file: str | None) -> tuple[str, Operand]:
    head = item[0]
    if head.text == "[":
        return _raw(item, scope, file)
    if head.kind != "id" or len(item) < 4 or item[1].text != "(" or item[-1].text != ")":
        raise CheckError(f"cannot read asm operand '{spell(item)}'", file=file, line=head.line)
    args = split_top(item[2:-1], ",")
    first = args[0][0].text if args and args[0] else ""
    kind = head.text
    if kind == "__imm" and len(args) == 1:
        return first, _named(first, scope, file, head.line)
    if kind == "__imm_addr" and len(args) == 1:
        if not scope.is_symbol(first):
            raise CheckError(f"__imm_addr({first}): no map or global variable of that name",
                             file=file, line=head.line)
        return first, Operand(first)
    if kind == "__imm_ptr" and len(args) == 1:
        return first, Operand(None, "__imm_ptr: compiler-chosen register")
    if kind == "__imm_const" and len(args) == 2:
        return first, Operand(str(asm_immediate(_constant(args[1], scope, file))))
    if kind == "__imm_insn" and len(args) == 2:
        insn = instruction(args[1], lambda toks: _constant(toks, scope, file).value, file=file)
        return first, Operand(str(as_long(insn)))
    raise CheckError(f"unknown asm operand form '{spell(item)}'", file=file, line=head.line)


def _named(name: str, scope: Scope, file: str | None, line: int) -> Operand:
    """`__imm(name)`: helper id, symbol, or constant."""
    if name in scope.helpers:
        return Operand(str(scope.helpers[name]))
    if scope.is_symbol(name):
        return Operand(name)
    value = scope.lookup(name)
    return Operand(str(asm_immediate(value)) if value is not None else name)


def _raw(item: list[Tok], scope: Scope, file: str | None) -> tuple[str, Operand]:
    """`[name] "constraint" (expr)`."""
    line = item[0].line
    if len(item) < 6 or item[2].text != "]" or item[3].kind != "str" or item[4].text != "(":
        raise CheckError(f"cannot read asm operand '{spell(item)}'", file=file, line=line)
    name, constraint, expr = item[1].text, string_value(item[3]), item[5:-1]
    if constraint in ("i", "n"):
        if len(expr) == 2 and expr[0].text == "&" and scope.is_symbol(expr[1].text):
            return name, Operand(expr[1].text)
        return name, Operand(str(asm_immediate(_constant(expr, scope, file))))
    where = "register" if "r" in constraint else "memory operand" if "m" in constraint else "operand"
    return name, Operand(None, f'asm constraint "{constraint}": compiler-chosen {where}')


def _constant(toks: list[Tok], scope: Scope, file: str | None) -> Value:
    return evaluate(toks, lookup=scope.lookup, layouts=scope.layouts, file=file)
