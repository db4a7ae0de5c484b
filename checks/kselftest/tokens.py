"""C lexing for the selftest importer: text → tokens with line numbers, and string-literal values.

Comments disappear, `\\`-newline continuations are whitespace, and each preprocessor directive
comes out as one `Directive` (its own tokens inside). A lexical error does not stop the file: it
becomes a `bad` token, so only the declaration that contains it fails to import.

Owns: tokens and literal decoding. Must not import unicorn, github, or other checks/ modules.
"""
from __future__ import annotations

import re
from typing import NamedTuple


class Tok(NamedTuple):
    kind: str      # "id", "num", "str", "chr", "op", or "bad" (text is then the error message)
    text: str
    line: int
    space: bool = False     # whitespace came before it (for `#` stringizing)


class Directive(NamedTuple):
    """`#name rest`: `raw` is the text after the name (continuations joined), `toks` its tokens."""
    name: str
    raw: str
    toks: list
    line: int


_TOKEN = re.compile(r"""
 (?P<ws>(?:[ \t\r\f\v]|\\\r?\n)+)
|(?P<nl>\n)
|(?P<comment>/\*.*?\*/|//[^\n]*)
|(?P<str>(?:u8|[uUL])?"(?:[^"\\\n]|\\[\s\S])*")
|(?P<chr>[uUL]?'(?:[^'\\\n]|\\.)+')
|(?P<num>\.?[0-9](?:[eEpP][+-]|[\w.])*)
|(?P<id>[A-Za-z_$][\w$]*)
|(?P<op>\.\.\.|<<=|>>=|->|\+\+|--|<<|>>|<=|>=|==|!=|&&|\|\||\#\#|[-+*/%&|^]=|[-+*/%&|^~!<>=?:;,.(){}\[\]\#@])
|(?P<bad>/\*|["'][^\n]*|.)
""", re.X | re.S)

# The rest of a directive line: anything up to a newline that is not escaped by a backslash.
_DIRECTIVE_BODY = re.compile(r"(?:[^\n\\]|\\[\s\S])*")
_DIRECTIVE_NAME = re.compile(r"[ \t]*(\w*)")


def tokenize(text: str, *, first_line: int = 1, directives: bool = True) -> list:
    """All tokens and directives of `text`, in order (no directives inside a directive)."""
    out: list = []
    line = first_line
    bol = True              # nothing but whitespace since the last newline: a '#' starts a directive
    space = False
    pos, end = 0, len(text)
    match = _TOKEN.match
    while pos < end:
        m = match(text, pos)
        kind = m.lastgroup
        tok = m.group()
        if kind == "op" and tok == "#" and bol and directives:
            body = _DIRECTIVE_BODY.match(text, m.end())
            out.append(_directive(body.group(), line))
            line += body.group().count("\n")
            pos = body.end()
            continue
        if kind == "nl":
            line += 1
            bol = space = True
        elif kind in ("ws", "comment"):
            line += tok.count("\n")
            space = True
        elif kind == "bad":
            out.append(Tok("bad", _bad_message(tok), line, space))
            bol = space = False
        else:
            out.append(Tok(kind, tok, line, space))
            line += tok.count("\n")       # only string literals with continuations span lines
            bol = space = False
        pos = m.end()
    return out


def _directive(body: str, line: int) -> Directive:
    name = _DIRECTIVE_NAME.match(body)
    rest = body[name.end():]
    rest = rest.replace("\\\n", "")        # line splicing: continuation lines join
    return Directive(name.group(1), rest.strip(), tokenize(rest, first_line=line, directives=False), line)


def _bad_message(text: str) -> str:
    if text.startswith("/*"):
        return "unterminated comment"
    if text[0] in "\"'":
        return "unterminated string literal" if text[0] == '"' else "unterminated character literal"
    return f"stray character {text[0]!r}"


_ESCAPE = re.compile(r"\\(?:([0-7]{1,3})|x([0-9a-fA-F]+)|(\r?\n)|(.))", re.S)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "a": "\a", "b": "\b", "f": "\f",
                   "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?", "e": "\x1b"}


def _unescape(m: re.Match) -> str:
    octal, hexa, splice, char = m.groups()
    if octal:
        return chr(int(octal, 8))
    if hexa:
        return chr(int(hexa, 16) & 0xFF)
    if splice:
        return ""
    return _SIMPLE_ESCAPES.get(char, char)


def _body(tok: Tok) -> str:
    return tok.text[tok.text.index('"') + 1:-1]


def string_value(tok: Tok) -> str:
    """The characters a string literal stands for."""
    return _ESCAPE.sub(_unescape, _body(tok))


def string_pieces(tok: Tok) -> list[tuple[str, int]]:
    """A string literal's value as (text, source line) pieces, split where a `\\`-newline
    continues it on the next line: lets an asm template keep the line of every statement."""
    pieces = []
    for i, raw in enumerate(re.split(r"\\\r?\n", _body(tok))):
        pieces.append((_ESCAPE.sub(_unescape, raw), tok.line + i))
    return pieces


def char_value(tok: Tok) -> int:
    """The int value of a character constant ('a', '\\n', '\\x41')."""
    body = tok.text[tok.text.index("'") + 1:-1]
    value = _ESCAPE.sub(_unescape, body)
    return ord(value[0]) if len(value) == 1 else int.from_bytes(value.encode("latin-1"), "big")


def spell(toks) -> str:
    """Tokens back to text as C's `#` does: one space wherever the source had whitespace."""
    return "".join((" " if t.space and i else "") + t.text for i, t in enumerate(toks))


_OPENERS, _CLOSERS = frozenset("([{"), frozenset(")]}")


def group_end(toks, i: int) -> int:
    """Index just after the bracket group that opens at toks[i]; len(toks) if it never closes."""
    depth = 0
    for j in range(i, len(toks)):
        text = toks[j].text
        if text in _OPENERS:
            depth += 1
        elif text in _CLOSERS:
            depth -= 1
            if depth == 0:
                return j + 1
    return len(toks)


def split_top(toks, sep: str) -> list[list]:
    """Split at `sep` outside brackets; a trailing separator adds no empty part."""
    parts: list[list] = [[]]
    depth = 0
    for t in toks:
        text = t.text
        if text in _OPENERS:
            depth += 1
        elif text in _CLOSERS:
            depth -= 1
        elif text == sep and depth == 0:
            parts.append([])
            continue
        parts[-1].append(t)
    if len(parts) > 1 and not parts[-1]:
        parts.pop()
    return parts
