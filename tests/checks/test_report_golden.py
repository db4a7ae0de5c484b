"""KASAN report text against golden files written from the kernel's report layout.

Each file in tests/data/kasan_reports/ is: header lines (`TITLE:`, `ALT:`, `TYPE:`, `MODE:`), a
blank line, a scenario, then `REPORT:` and the expected report. Expected lines are compared one
by one; placeholders stand for what the layout does not fix:
  {{ADDR}} 16 hex digits (%px)   {{TAG}} a program tag   {{HEX}} hex digits   {{ANY}} anything
Scenario lines:
  prog <name> <prog_type>             the one-instruction program (default: oob sched_cls)
  kmalloc <size> <label...>           an object ("obj" in addresses)
  stricter <reason...>                the last object is packed without redzones in the kernel
  kfree                               free the last object
  access <read|write> <size> <where>  `obj+N`, `obj-N` or an absolute 0x address
  tainted                             an earlier report was printed
Besides the layout, every report is checked for invariants: the title parses back from the
text, the `>` row and caret point at the first bad address, and the region line adds up.
"""
from __future__ import annotations

import pathlib
import re

import pytest

from checks import layout
from checks.kasan_records import AccessRecord, attribute
from checks.report import ReportContext, build_finding
from checks.shadow import ShadowMap, ShadowView, classify
from checks.slab import Heap
from checks.titles import titles_in_log
from jit import isa
from jit.image import CheckSite, FuncImage, Image
from jit.program import Program
from jit.x86 import (Ext, Reg, emit_alu_ri, emit_call, emit_leave, emit_load, emit_mov_rr, emit_nops,
                     emit_pop, emit_push, emit_ret, emit_store)

GOLDEN = pathlib.Path(__file__).resolve().parent.parent / "data" / "kasan_reports"
PLACEHOLDERS = {"{{ADDR}}": "[0-9a-f]{16}", "{{TAG}}": "[0-9a-f]{16}", "{{HEX}}": "[0-9a-f]+",
                "{{ANY}}": ".*"}
SAVED = (Reg.RAX, Reg.RCX, Reg.RDX, Reg.RSI, Reg.RDI, Reg.R8, Reg.R9, Reg.R10, Reg.R11)
ASAN = layout.KERNEL_TEXT + 0x10000          # where the __asan_* call goes (never executed here)


def outline_image(insn: isa.Insn, name: str) -> Image:
    """A one-function image as the kernel JIT lays out `insn; exit` with an outline check (§1.4):
    prologue, push x9, add rdi off, call __asan_*, pop x9, the access, leave, ret."""
    base = layout.MODULES
    code = bytearray()
    emit_nops(code, 8)
    emit_push(code, Reg.RBP)
    emit_mov_rr(code, Reg.RBP, Reg.RSP, True)
    start = len(code)
    for reg in SAVED:
        emit_push(code, reg)
    if insn.off:
        emit_alu_ri(code, Ext.ADD, Reg.RDI, insn.off, True)
    emit_call(code, ASAN - (base + len(code) + 5))
    ret_offset = len(code)
    for reg in reversed(SAVED):
        emit_pop(code, reg)
    if insn.cls == isa.LDX:
        emit_load(code, Reg.RAX, Reg.RDI, insn.off, insn.nbytes)
    else:
        emit_store(code, Reg.RDI, insn.off, Reg.RSI, insn.nbytes)
    exit_at = len(code)
    emit_leave(code)
    emit_ret(code)
    site = CheckSite(0, ret_offset, insn.nbytes, insn.cls == isa.STX, insn.src or insn.dst, insn.off)
    return Image(bytes(code), base, (start, exit_at, len(code)),
                 (FuncImage(name, 0, 0, len(code), 0),), (site,), "outline")


class Scenario:
    def __init__(self, text: str):
        self.name, self.prog_type = "oob", "sched_cls"
        self.heap = Heap(ShadowView(layout.DIRECT_MAP, bytearray(1 << 16)))
        self.obj, self.tainted, self.access = None, False, None
        for line in text.strip().splitlines():
            word, _, rest = line.partition(" ")
            getattr(self, "_" + word)(rest)

    def _prog(self, rest):
        self.name, self.prog_type = rest.split()

    def _kmalloc(self, rest):
        size, label = rest.split(" ", 1)
        self.obj = self.heap.kmalloc(int(size), label)

    def _stricter(self, rest):
        self.obj.stricter = rest

    def _kfree(self, _):
        assert self.heap.kfree(self.obj.addr) is None

    def _tainted(self, _):
        self.tainted = True

    def _access(self, rest):
        kind, size, where = rest.split()
        m = re.fullmatch(r"obj([+-]\d+)", where)
        self.access = (kind == "write", int(size), self.obj.addr + int(m[1]) if m else int(where, 0))

    def finding(self):
        is_write, size, addr = self.access
        mode = isa.BYTES_SIZE[size] | isa.MEM
        insn = isa.Insn(isa.STX | mode, 1, 2) if is_write else isa.Insn(isa.LDX | mode, 0, 1)
        program = Program(self.name, (insn, isa.Insn(isa.JMP | isa.EXIT)), prog_type=self.prog_type)
        image = outline_image(insn, self.name)
        # The program's r1 holds the address; the JIT's check adds the instruction's offset (0).
        record = AccessRecord(addr, size, is_write, image.base + image.check_sites[0].ret_offset)
        ctx = ReportContext(image, program, ShadowMap([self.heap.shadow]), self.heap.find)
        [item] = attribute(image, [record])
        return build_finding(ctx, item, test=f"golden/{self.name}", tainted=self.tainted), ctx


def load(path: pathlib.Path):
    head, _, rest = path.read_text().partition("\n\n")
    scenario, _, report = rest.partition("REPORT:\n")
    headers = dict(line.split(": ", 1) for line in head.splitlines())
    return headers, scenario, report.splitlines()


def line_pattern(expected: str) -> re.Pattern:
    parts = re.split(r"(\{\{[A-Z]+\}\})", expected)
    return re.compile("".join(PLACEHOLDERS.get(p, re.escape(p)) for p in parts))


CASES = sorted(GOLDEN.glob("*.txt"))


def test_golden_files_exist():
    assert len(CASES) >= 5, f"golden reports missing under {GOLDEN}"


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_report_matches_the_golden_layout(path):
    headers, scenario, expected = load(path)
    finding, _ = Scenario(scenario).finding()
    actual = finding.report.splitlines()
    for number, (want, got) in enumerate(zip(expected, actual), 1):
        assert line_pattern(want).fullmatch(got), f"{path.name} line {number}:\n want {want!r}\n  got {got!r}"
    assert len(actual) == len(expected), "\n".join(actual)
    assert finding.title == headers["TITLE"]
    assert finding.alt_titles == (headers["ALT"],)
    assert finding.mode == headers["MODE"]
    [parsed] = titles_in_log(finding.report)                    # the text says the same
    assert (parsed.title, parsed.alt_titles, parsed.type, parsed.corrupted) == \
        (headers["TITLE"], (headers["ALT"],), headers["TYPE"], "")


@pytest.mark.parametrize("path", CASES, ids=[p.stem for p in CASES])
def test_report_invariants(path):
    _, scenario, _ = load(path)
    finding, ctx = Scenario(scenario).finding()
    lines = finding.report.splitlines()
    assert lines[0] == lines[-1 - sum(1 for x in lines if x.startswith("bpf-kasan:"))] == "=" * 66
    off, length = map(lambda h: int(h, 16), re.search(r"\+0x(\w+)/0x(\w+)$", lines[1]).groups())
    assert off == ctx.image.check_sites[0].ret_offset and length == len(ctx.image.code)
    verdict = classify(ctx.shadow, finding.address, finding.size)
    rows = [i for i, x in enumerate(lines) if x.startswith(">")]
    if not verdict.has_metadata:
        assert rows == [] and "Memory state around the buggy address:" not in lines
        return
    [guilty] = rows
    row = int(lines[guilty][1:17], 16)
    assert row <= verdict.first_bad < row + 128
    assert lines[guilty + 1].index("^") == 19 + 3 * ((verdict.first_bad - row) // 8)
    region = re.search(r"(\d+)-byte region \[(\w+), (\w+)\)", finding.report)
    if region:
        size, start, end = int(region[1]), int(region[2], 16), int(region[3], 16)
        assert end - start == size
        located = re.search(r"located (\d+) bytes (to the right|to the left|inside) of", finding.report)
        distance = {"to the right": finding.address - end, "to the left": start - finding.address,
                    "inside": finding.address - start}[located[2]]
        assert distance == int(located[1])
