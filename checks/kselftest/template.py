"""An inline-asm template as the assembler should see it: one statement per line, operands
substituted (`%[name]`, `%%`, `%=`), each statement knowing the C line it was written on.

The template is one C string (adjacent literals and `\\`-newline continuations joined), so
its own newlines say nothing about C lines: the line of each statement comes from the
position of its first character in the source.

Owns: template text and statement lines. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import bisect
import re
from typing import NamedTuple

from checks.errors import CheckError
from checks.kselftest.tokens import Tok, string_pieces


class Statement(NamedTuple):
    text: str      # operands substituted, stripped
    line: int      # C source line


_COMMENT = re.compile(r"/\*.*?\*/|//[^\n]*", re.S)
_STATEMENT = re.compile(r"[^;\n]+")
_BLANKS = re.compile(r"\s+")
_OPERAND = re.compile(r"%(?:(%)|(=)|\[(\w+)\]|(.?))")


class Template:
    """The text of an asm template with the source line of every character."""

    def __init__(self, literals: list[Tok], *, file: str | None = None):
        self.file = file
        parts, self.starts, self.lines = [], [], []
        offset = 0
        for tok in literals:
            for text, line in string_pieces(tok):
                parts.append(text)
                self.starts.append(offset)
                self.lines.append(line)
                offset += len(text)
        # Comments become blanks of the same length, so offsets (and lines) stay put.
        self.text = _COMMENT.sub(lambda m: " " * len(m.group()), "".join(parts))
        self.first_line = literals[0].line if literals else 0

    def line_at(self, offset: int) -> int:
        i = bisect.bisect_right(self.starts, offset) - 1
        return self.lines[i] if i >= 0 else self.first_line

    def statements(self, operands: dict[str, str], number: int) -> list[Statement]:
        """Statements with `%[name]` → operands[name], `%%` → `%`, `%=` → `number`."""
        out = []
        for m in _STATEMENT.finditer(self.text):
            raw = m.group()
            stripped = raw.strip()
            if not stripped:
                continue
            line = self.line_at(m.start() + len(raw) - len(raw.lstrip()))
            text = _BLANKS.sub(" ", self.substitute(stripped, operands, number, line))
            out.append(Statement(text, line))
        return out

    def substitute(self, text: str, operands: dict[str, str], number: int, line: int) -> str:
        def replace(m: re.Match) -> str:
            percent, unique, name, other = m.groups()
            if percent:
                return "%"
            if unique:
                return str(number)
            if name is not None:
                if name not in operands:
                    raise CheckError(f"asm operand %[{name}] is not among the statement's operands",
                                     file=self.file, line=line)
                return operands[name]
            raise CheckError(f"unsupported asm operand reference '%{other}'", file=self.file, line=line)
        return _OPERAND.sub(replace, text)

    def names(self) -> set[str]:
        """Operand names the template refers to."""
        return {m.group(3) for m in _OPERAND.finditer(self.text) if m.group(3)}
