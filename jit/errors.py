"""The error base shared by every layer, and the JIT layer's own error.

Errors print like a compiler's: ``path:line: message``. Each layer (jit, checks, bot) raises
its own subclass so a caller can tell which layer refused the input.
"""
from __future__ import annotations


class BpfKasanError(Exception):
    """A refusal of bad input. Carries where the input was bad, as far as it is known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None,
                 insn: int | None = None):
        super().__init__(message)
        self.message = message
        self.file = file
        self.line = line
        self.insn = insn

    def located(self, *, file: str | None = None, line: int | None = None,
                insn: int | None = None) -> "BpfKasanError":
        """Fill in location fields a lower layer could not know; keeps what is already set."""
        self.file = self.file or file
        self.line = self.line if self.line is not None else line
        self.insn = self.insn if self.insn is not None else insn
        return self

    def __str__(self) -> str:
        where = ""
        if self.file:
            where = self.file + (f":{self.line}" if self.line is not None else "") + ": "
        elif self.line is not None:
            where = f"line {self.line}: "
        insn = f" (insn #{self.insn})" if self.insn is not None and f"insn #{self.insn}" not in self.message else ""
        return f"{where}{self.message}{insn}"


class JitError(BpfKasanError):
    """Malformed BPF encodings, assembler syntax errors, and programs the JIT cannot compile."""
