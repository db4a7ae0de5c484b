"""`.data` test files of bpf_conformance and uBPF: parse, build the program, run, judge.

File format (one parser for both suites; facts from their parsers):
- `-- <section>` lines start sections; `#` starts a comment. Sections: `asm` (uBPF dialect, see
  `jit.ubpf_asm`), `raw` (one little-endian 64-bit slot per number; a line of 8 two-digit hex bytes is
  one slot, as bpf_conformance's generated negative tests write it), `mem` (hex bytes; uBPF hexdump
  lines `0x0000:  0026 622f` too), `result` (last line; hex if it has `0x`), `error` (expected refusal
  text), `error pattern` (uBPF: a regex). `asm @ f` / `mem @ f` read a sibling file.
- Ignored: `no register offset`, `c`, `description`, `no jit`, `unload`. Skipped with a reason:
  `pyelf` (needs uBPF's ELF mutator) and `reload` (a uBPF VM API test).
- A file with no instructions, an unknown section or a repeated one is malformed (CheckError);
  bpf_conformance would silently skip such files, but here they are refused so typos do not hide.
- With `raw` and `asm` both present, `raw` is the program and the two must agree.

Judging: a test that expects a failure (`error` / `error pattern`) passes when assembling, decoding,
loading or running fails; `error_match` says whether our message matched the expected text
(empty expected text matches any). Run-time faults under an expected success are `fail`.

r1 = input buffer, r2 = its length; helpers 0-5 are uBPF's test helpers (below), and 5 is also
uBPF's unwind helper: a zero return ends the program with r0 = 0.

Owns: the .data format and uBPF's test helpers. Must not import unicorn or bot/.
"""
from __future__ import annotations

import math
import pathlib
import re
import time
from dataclasses import dataclass, field

from checks.errors import CheckError
from checks.memory_regions import Memory
from checks.results import TestResult
from jit import isa
from jit.errors import BpfKasanError, JitError
from jit.isa import Insn
from jit.program import Program, SourceLine
from jit.ubpf_asm import assemble_source

SECTIONS = ("asm", "raw", "mem", "result", "error", "error pattern", "no register offset", "c",
            "description", "no jit", "reload", "unload", "pyelf")
IGNORED = {"no register offset", "c", "description", "no jit", "unload"}
SKIPPED = {"pyelf": "needs uBPF's pyelf ELF mutator", "reload": "tests uBPF's VM reload API"}
_HEX_BYTE_SLOT = re.compile(r"(?:[0-9a-fA-F]{2}\s+){7}[0-9a-fA-F]{2}")


# --- uBPF's test helpers (tests/README in uBPF: ids 0-5) --------------------------------------------

def gather_bytes(mem: Memory, a: int, b: int, c: int, d: int, e: int) -> int:
    return ((a & 0xFF) << 32) | ((b & 0xFF) << 24) | ((c & 0xFF) << 16) | ((d & 0xFF) << 8) | (e & 0xFF)


def memfrob(mem: Memory, ptr: int, n: int, *_unused: int) -> int:
    """XOR each of `n` bytes at `ptr` with 42, like glibc's memfrob."""
    mem.write(ptr, bytes(byte ^ 42 for byte in mem.read(ptr, n & 0xFFFFFFFF)))
    return 0


def no_op(mem: Memory, *_unused: int) -> int:
    return 0


def sqrti(mem: Memory, x: int, *_unused: int) -> int:
    return math.isqrt(x & 0xFFFFFFFF)


def strcmp_ext(mem: Memory, a: int, b: int, *_unused: int) -> int:
    """strcmp of two NUL-terminated strings: <0, 0, >0 as a sign-extended int."""
    sa, sb = mem.read_cstring(a), mem.read_cstring(b)
    return ((sa > sb) - (sa < sb)) & 0xFFFFFFFFFFFFFFFF


def unwind(mem: Memory, x: int, *_unused: int) -> int:
    return x


UBPF_HELPERS = {0: gather_bytes, 1: memfrob, 2: no_op, 3: sqrti, 4: strcmp_ext, 5: unwind}
UBPF_UNWIND_HELPER = 5


# --- parsing ---------------------------------------------------------------------------------------

@dataclass
class _Section:
    name: str
    line: int                              # line number of the header
    body: list[tuple[int, str]] = field(default_factory=list)   # (line number, text)
    file: str = ""                         # where the body came from (a sibling for `@ file`)


@dataclass(frozen=True)
class DataTest:
    """One parsed `.data` file, not yet built or run."""
    path: str
    sections: dict                          # name -> _Section

    def has(self, name: str) -> bool:
        return name in self.sections

    @property
    def expects_failure(self) -> bool:
        return self.has("error") or self.has("error pattern")


def _strip_comment(text: str) -> str:
    return text.split("#", 1)[0].strip()


def parse_file(path: str) -> DataTest:
    """Read and split a `.data` file into sections; raises CheckError naming file:line."""
    text = _read_text(path, "cannot read test file", path, None)
    sections: dict[str, _Section] = {}
    current = None
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip("\r")
        code = _strip_comment(line)
        if code.startswith("--"):
            current = _open_section(code[2:].strip(), path, number, sections)
        elif current is not None:
            current.body.append((number, line))
        elif code:
            raise CheckError(f"text before the first section: {code!r}", file=path, line=number)
    return DataTest(path, sections)


def _read_text(path: str, what: str, file: str, line: int | None) -> str:
    try:
        return pathlib.Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise CheckError(f"{what}: {e.strerror}", file=file, line=line) from None
    except UnicodeDecodeError as e:
        raise CheckError(f"{what}: not UTF-8 text (byte {e.start})", file=file, line=line) from None


def _open_section(header: str, path: str, number: int, sections: dict) -> _Section:
    name, _, source = (part.strip() for part in header.partition("@"))
    if name not in SECTIONS:
        raise CheckError(f"unknown section '-- {header}'", file=path, line=number)
    if name in sections:
        raise CheckError(f"section '-- {name}' appears twice (first at line {sections[name].line})",
                         file=path, line=number)
    section = _Section(name, number, file=path)
    if source:
        sibling = pathlib.Path(path).parent / source
        lines = _read_text(str(sibling), f"cannot read '{source}'", path, number).splitlines()
        section.file = str(sibling)
        section.body = list(enumerate(lines, 1))
    sections[name] = section
    return section


def _last_line(section: _Section) -> tuple[int, str]:
    lines = [(n, _strip_comment(t)) for n, t in section.body if _strip_comment(t)]
    return lines[-1] if lines else (section.line, "")


def expected_retval(test: DataTest) -> int | None:
    if not test.has("result"):
        return None
    number, text = _last_line(test.sections["result"])
    try:
        value = int(text, 16) if "0x" in text.lower() else int(text, 10)
    except ValueError:
        raise CheckError(f"result is not a number: {text!r}", file=test.path, line=number) from None
    return value & 0xFFFFFFFFFFFFFFFF


def input_memory(test: DataTest) -> bytes:
    if not test.has("mem"):
        return b""
    section, out = test.sections["mem"], bytearray()
    for number, text in section.body:
        code = _strip_comment(text)
        if ":" in code:                      # hexdump line: drop the address column
            code = code.split(":", 1)[1]
        for token in code.split():
            try:
                if len(token) % 2:
                    raise ValueError
                out += bytes.fromhex(token)
            except ValueError:
                raise CheckError(f"mem: not hex bytes: {token!r}", file=section.file,
                                 line=number) from None
    return bytes(out)


def _raw_slots(section: _Section) -> tuple[list[Insn], dict[int, SourceLine]]:
    slots, lines = [], {}
    for number, text in section.body:
        code = _strip_comment(text)
        if not code:
            continue
        if _HEX_BYTE_SLOT.fullmatch(code):
            values = [int.from_bytes(bytes.fromhex("".join(code.split())), "little")]
        elif len(code.split()) > 1 and all(re.fullmatch(r"[0-9a-fA-F]{2}", t) for t in code.split()):
            raise CheckError(f"raw: truncated instruction: {len(code.split())} bytes, need 8",
                             file=section.file, line=number)
        else:
            values = [_raw_number(t, section.file, number) for t in code.split()]
        for value in values:
            lines[len(slots)] = SourceLine(section.file, number, code)
            slots.append(Insn.from_u64(value))
    return slots, lines


def _raw_number(token: str, file: str, line: int) -> int:
    try:
        value = int(token, 16) if token.lower().startswith("0x") else int(token, 10)
    except ValueError:
        raise CheckError(f"raw: not a number: {token!r}", file=file, line=line) from None
    if not 0 <= value < (1 << 64):
        raise CheckError(f"raw: {token} does not fit in 64 bits", file=file, line=line)
    return value


def build_program(test: DataTest) -> Program:
    """The program of a test: `raw` if present (checked against `asm`), else `asm`. Raises
    JitError/CheckError for bad assembly, truncated or invalid encodings, or no instructions."""
    slots, lines = _assembled(test)
    if not slots:
        raise CheckError("test has no instructions", file=test.path)
    try:
        isa.check(slots, file=test.path)
    except JitError as e:                   # name the line the bad slot came from
        where = lines.get(e.insn)
        if where:
            e.file, e.line = where.file, where.line
        raise
    return Program(name=pathlib.Path(test.path).stem, insns=tuple(slots), lines=dict(lines),
                   file=test.path)


def _assembled(test: DataTest) -> tuple[list[Insn], dict[int, SourceLine]]:
    """Slots and their source lines, from `raw` (which must agree with `asm` when both exist)."""
    asm = None
    if test.has("asm"):
        section = test.sections["asm"]
        first = section.body[0][0] if section.body else section.line + 1
        text = "\n".join(t for _, t in section.body)
        asm = assemble_source(text, file=section.file, first_line=first)
    if test.has("raw"):
        slots, lines = _raw_slots(test.sections["raw"])
        if asm is not None and tuple(slots) != asm.insns:
            raise CheckError("the raw and asm sections give different programs", file=test.path,
                             line=test.sections["raw"].line)
    elif asm is not None:
        slots, lines = list(asm.insns), asm.lines
    else:
        slots, lines = [], {}
    return slots, lines


# --- judging ---------------------------------------------------------------------------------------

def _error_matches(test: DataTest, message: str) -> bool:
    if test.has("error pattern"):
        return re.search(_last_line(test.sections["error pattern"])[1], message) is not None
    expected = _last_line(test.sections["error"])[1]
    return expected in message


def _describe_fault(program: Program, message: str, pc: int | None) -> str:
    where = program.lines.get(pc) if pc is not None else None
    return f"{where.file}:{where.line}: {message}" if where else message


@dataclass(frozen=True)
class DataCase:
    """One runnable `.data` test, as the runner's file-type registry hands it out."""
    id: str
    path: str

    @property
    def name(self) -> str:
        return pathlib.Path(self.path).stem

    def run(self, engine, *, insn_limit: int) -> TestResult:
        started = time.perf_counter()
        test = parse_file(self.path)
        base = dict(id=self.id, file=self.path, name=self.name, engine=engine.name,
                    expect="failure" if test.expects_failure else "success",
                    expected_retval=None if test.expects_failure else expected_retval(test))
        skip = next((why for s, why in SKIPPED.items() if test.has(s)), None)
        if skip:
            return TestResult(status="skip", reason=skip, **base)
        if not (test.expects_failure or test.has("result")):
            if test.has("asm") and test.has("raw"):     # uBPF's assembler tests: asm must equal raw
                _assembled(test)
                return TestResult(status="pass", duration_s=time.perf_counter() - started, **base)
            raise CheckError("test has neither a '-- result' nor an '-- error' section",
                             file=self.path)
        outcome, findings = _judge(test, engine, insn_limit)
        result = TestResult(duration_s=time.perf_counter() - started, **outcome, **base)
        return result.with_findings([dict(f.to_json(), test=self.id) for f in findings])


def _judge(test: DataTest, engine, insn_limit: int) -> tuple[dict, tuple]:
    """The verdict fields of one run, and the KASAN findings the engine made (none for interp)."""
    mem = input_memory(test)
    try:
        program = build_program(test)
        result = engine.run(program, mem, helpers=UBPF_HELPERS, insn_limit=insn_limit,
                            unwind_helper=UBPF_UNWIND_HELPER)
    except BpfKasanError as e:
        if not test.expects_failure:
            raise
        return dict(status="pass", reason="", error_match=_error_matches(test, e.message)), ()
    return _verdict(test, program, result), getattr(result, "findings", ())


def _verdict(test: DataTest, program, result) -> dict:
    if test.expects_failure:
        if result.error is not None:
            return dict(status="pass", insns=result.insns,
                        error_match=_error_matches(test, result.error))
        return dict(status="fail", retval=result.r0, insns=result.insns,
                    reason=f"expected an error, but the program returned {result.r0:#x}")
    if result.error is not None:
        return dict(status="fail", insns=result.insns,
                    reason=_describe_fault(program, result.error, result.error_insn))
    expected = expected_retval(test)
    if expected is not None and result.r0 != expected:
        return dict(status="fail", retval=result.r0, insns=result.insns,
                    reason=f"r0 = {result.r0:#x}, expected {expected:#x}")
    return dict(status="pass", retval=result.r0, insns=result.insns)
