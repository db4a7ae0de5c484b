"""Top-level declarations of a preprocessed C file: function definitions (with their bodies),
function prototypes, and everything else (types, maps, globals), each as a slice of tokens.

Owns: finding where declarations start and end. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from checks.kselftest.tokens import Tok, group_end

_OPEN, _CLOSE = frozenset("([{"), frozenset(")]}")
# bpf_tracing.h macros that write a function's signature: `int BPF_PROG(name, args...)`.
_SIGNATURE_MACROS = frozenset("BPF_PROG BPF_PROG2 BPF_KPROBE BPF_KRETPROBE BPF_KSYSCALL "
                              "BPF_KPROBE_SYSCALL BPF_UPROBE BPF_URETPROBE BPF_USDT BPF_STRUCT_OPS "
                              "BPF_STRUCT_OPS_SLEEPABLE".split())


@dataclass(frozen=True)
class Function:
    """`prefix name(params) suffix { body }`; body is None for a prototype."""
    name: str
    line: int
    prefix: tuple[Tok, ...]        # annotations, storage class, return type
    params: tuple[Tok, ...]
    body: tuple[Tok, ...] | None   # tokens between the braces


@dataclass(frozen=True)
class Declaration:
    """Any other top-level declaration (struct, typedef, map, global), without its ';'."""
    toks: tuple[Tok, ...]
    line: int


def split(toks: list[Tok]) -> list[Function | Declaration]:
    """The file's top-level items in order; stray ';'s are dropped."""
    items: list[Function | Declaration] = []
    start, depth, i, n = 0, 0, 0, len(toks)
    while i < n:
        text = toks[i].text
        if text == "{" and depth == 0 and _is_function_header(toks, start, i):
            end = _body_end(toks, i)
            items.append(_function(toks[start:i], toks[i + 1:end]))
            i = start = end + 1
            continue
        if text in _OPEN:
            depth += 1
        elif text in _CLOSE:
            depth = max(depth - 1, 0)
        elif text == ";" and depth == 0:
            if i > start:
                items.append(_declaration(toks[start:i]))
            start = i + 1
        i += 1
    if start < n:
        items.append(Declaration(tuple(toks[start:]), toks[start].line))
    return items


def _is_function_header(toks: list[Tok], start: int, brace: int) -> bool:
    if brace == start or toks[brace - 1].text != ")":
        return False
    depth = 0
    for t in toks[start:brace]:
        if t.text in _OPEN:
            depth += 1
        elif t.text in _CLOSE:
            depth -= 1
        elif depth == 0 and t.text == "=":
            return False
    return True


def _matching(toks: list[Tok], i: int) -> int:
    """Index of the bracket closing the one at toks[i]."""
    return group_end(toks, i) - 1


def _body_end(toks: list[Tok], i: int) -> int:
    """Index of the '}' closing the function body opening at toks[i]. Only braces count, so a
    body with a broken string (and so an unclosed parenthesis) still ends where it should."""
    depth = 0
    for j in range(i, len(toks)):
        if toks[j].text == "{":
            depth += 1
        elif toks[j].text == "}":
            depth -= 1
            if depth == 0:
                return j
    return len(toks) - 1


def _group_start(toks: list[Tok], close: int) -> int:
    """Index of the bracket that opens the group closing at toks[close]."""
    depth = 0
    for j in range(close, -1, -1):
        if toks[j].text in _CLOSE:
            depth += 1
        elif toks[j].text in _OPEN:
            depth -= 1
            if depth == 0:
                return j
    return 0


def _declarator_parens(head: list[Tok]) -> int | None:
    """Index of the '(' of `name(params)`, walking back over trailing attributes
    (`__attribute__((used))`, `__ksym`)."""
    j = len(head) - 1
    while j >= 0:
        t = head[j]
        if t.text == ")":
            open_ = _group_start(head, j)
            if open_ >= 1 and head[open_ - 1].text == "__attribute__":
                j = open_ - 2
                continue
            if open_ >= 1 and head[open_ - 1].kind == "id" and head[open_ - 1].text != "SEC":
                return open_
            return None
        if t.kind == "id" and t.text.startswith("__"):
            j -= 1
            continue
        return None
    return None


def _function(head: list[Tok], body: list[Tok] | None) -> Function | Declaration:
    paren = _declarator_parens(head)
    if paren is None:
        return Declaration(tuple(head), head[0].line)
    close = _matching(head, paren)
    name = head[paren - 1]
    if name.text in _SIGNATURE_MACROS and close > paren + 1 and head[paren + 1].kind == "id":
        name = head[paren + 1]
    return Function(name.text, name.line, tuple(head[:paren - 1]), tuple(head[paren + 1:close]),
                    None if body is None else tuple(body))


def _declaration(toks: list[Tok]) -> Function | Declaration:
    """A ';'-terminated item: a prototype if it declares `name(params)` with no `{` or `=`."""
    depth = 0
    for t in toks:
        if t.text in _OPEN:
            if depth == 0 and t.text == "{":
                return Declaration(tuple(toks), toks[0].line)
            depth += 1
        elif t.text in _CLOSE:
            depth -= 1
        elif depth == 0 and t.text == "=":
            return Declaration(tuple(toks), toks[0].line)
    return _function(toks, None)
