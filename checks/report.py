"""A bad access → `Finding`: the KASAN report in the kernel's format, plus what only we know.

The text follows mm/kasan/report.c of Linux 6.12 as described in kasan-jit.md §3.5-3.6 (facts,
re-expressed): the 66-`=` rulers, `BUG: KASAN: <type> in <symbol>+0x<off>/0x<len>` where the
offset is the `__asan_*` return address minus the function start (the kernel's _RET_IP_), the
`<Read|Write> of size N at addr ... by task comm/pid` line, a dump_stack block, the object and
physical-page description, and five rows of shadow bytes around the first bad address. A wild
access (no shadow) gets the header and the stack only, as in the kernel.

After the closing ruler come our own `bpf-kasan:` lines, which the kernel cannot give: the BPF
instruction and its source line, the x86 instruction making the access, what the object is,
and, when the emulator is stricter than real KASAN, why the kernel would have stayed silent.

Owns: the report text and the Finding record. Must not import unicorn or bot/.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Callable

import capstone

from checks import layout
from jit.tag import prog_tag
from checks.asan_routine import routine_name
from checks.kasan_records import Attributed, ReportGate, attribute
from checks.shadow import GRANULE, MASK64, ShadowMap, classify
from checks.slab import SlabObject
from checks.titles import alt_title, kasan_title
from jit import isa
from jit.image import FuncImage, Image
from jit.llvm_disasm import format_insn
from jit.program import Program, SourceLine

RULER = "=" * 66
ROW_BYTES = 16                                # shadow bytes per memory-state row
ROW_MEMORY = ROW_BYTES * GRANULE              # memory one row describes
ROWS_AROUND = 2
MODE_FAITHFUL = "faithful"

# Frames below the program in a BPF_PROG_TEST_RUN report, by program type. Offsets are made up
# but stable, so reports stay byte-identical from run to run.
_TEST_RUN = ("bpf_test_run+0x2c1/0x7c0",)
_RUNNERS = {
    "xdp": _TEST_RUN + ("bpf_prog_test_run_xdp+0x6d4/0x11a0",),
    "raw_tracepoint": ("__bpf_prog_test_run_raw_tp+0x62/0x140",),
    "tracing": ("__bpf_prog_test_run_raw_tp+0x62/0x140",),
    "syscall": ("bpf_prog_test_run_syscall+0x2a3/0x4f0",),
    "flow_dissector": ("bpf_prog_test_run_flow_dissector+0x3b9/0x8e0",),
    "sk_lookup": ("bpf_prog_test_run_sk_lookup+0x56e/0xb70",),
}
_SKB_RUNNER = _TEST_RUN + ("bpf_prog_test_run_skb+0x6f2/0x1690",)
_SYSCALL_FRAMES = ("__sys_bpf+0x13a4/0x4c90", "__x64_sys_bpf+0x78/0xc0", "do_syscall_64+0xc3/0x1d0",
                   "entry_SYSCALL_64_after_hwframe+0x77/0x7f")
_REPORT_FRAMES = ("dump_stack_lvl+0x5d/0x80", "print_report+0xce/0x630", "kasan_report+0xd8/0x110")
_ASAN_FRAME = "+0x7b/0xa0"


@dataclass(frozen=True)
class Task:
    """Who ran the program, as the report's header and dump_stack lines name it."""
    comm: str = "test_progs"
    pid: int = 1234
    cpu: int = 0
    release: str = "6.12.0"
    hardware: str = "bpf-kasan emulated x86-64 (Unicorn)"


@dataclass(frozen=True)
class ReportContext:
    """What a report needs to know about the run that produced the bad access."""
    image: Image
    program: Program                 # as loaded (map references unresolved: the tag depends on it)
    shadow: ShadowMap
    find_object: Callable[[int], SlabObject | None] | None = None     # e.g. Heap.find
    task: Task = field(default_factory=Task)


@dataclass(frozen=True)
class Finding:
    """One KASAN report, as data. `to_json` gives the fields the bot and CI read."""
    id: str
    test: str
    function: str                    # bpf_prog_<tag>_<name>, or an address if unknown
    insn: int | None                 # slot within its function (ld_imm64 counts 2)
    bug_type: str
    access: str                      # "read" or "write"
    size: int
    address: int
    object: str | None               # the object's label, when the address is in one
    title: str
    report: str
    mode: str = MODE_FAITHFUL        # how the run was made: faithful, explore or what-if
    variant: str = ""
    alt_titles: tuple[str, ...] = ()
    # Why real KASAN would not have reported this (our objects are stricter), or "" when it would.
    stricter: str = ""
    file: str | None = None          # source of the bad instruction (Program.lines), when known
    line: int | None = None

    def to_json(self) -> dict:
        return {"id": self.id, "test": self.test, "function": self.function, "insn": self.insn,
                "bug_type": self.bug_type, "access": self.access, "size": self.size,
                "address": f"0x{self.address:016x}", "object": self.object, "title": self.title,
                "alt_titles": list(self.alt_titles), "report": self.report, "mode": self.mode,
                "variant": self.variant, "stricter": self.stricter or None,
                "file": self.file, "line": self.line}


# -- the program's kallsyms name ----------------------------------------------------------------

def func_slots(program: Program, func: FuncImage) -> tuple[isa.Insn, ...]:
    """The slots of `func`: from its start to the next function's."""
    later = [start for start, _ in program.funcs if start > func.start_insn]
    return program.insns[func.start_insn:min(later, default=len(program.insns))]


def prog_symbol(program: Program, func: FuncImage) -> str:
    """`bpf_prog_<tag>_<name>`, each function tagged over its own slots."""
    return f"bpf_prog_{prog_tag(Program(func.name, func_slots(program, func)))}_{func.name}"


def code_symbol(ctx: ReportContext, ip: int) -> tuple[str, str]:
    """(symbol, symbol+0x<off>/0x<len>) of a code address, as %pS prints it."""
    func = ctx.image.func_at(ip - ctx.image.base)
    if func is None:
        return f"0x{ip:016x}", f"0x{ip:016x}"
    symbol = prog_symbol(ctx.program, func)
    start = ctx.image.base + func.offset
    return symbol, f"{symbol}+0x{ip - start:x}/0x{func.length:x}"


# -- report sections ----------------------------------------------------------------------------

def _dump_stack(ctx: ReportContext, frame: str, asan: str, tainted: bool) -> list[str]:
    task = ctx.task
    taint = "Tainted: G    B" if tainted else "Not tainted"
    runner = _RUNNERS.get(ctx.program.prog_type, _SKB_RUNNER)
    frames = _REPORT_FRAMES + (asan + _ASAN_FRAME, frame) + runner + _SYSCALL_FRAMES
    return [f"CPU: {task.cpu} UID: 0 PID: {task.pid} Comm: {task.comm} {taint} {task.release} #1",
            f"Hardware name: {task.hardware}", "Call Trace:", " <TASK>",
            *(f" {f}" for f in frames), " </TASK>"]


def alloc_size(shadow: ShadowMap, obj: SlabObject) -> int:
    """kasan_get_alloc_size(): usable bytes from the object's shadow; the cache's size if none."""
    size = 0
    while size < obj.object_size:
        value = shadow.byte(obj.addr + size)
        if value == 0:
            size += GRANULE
            continue
        if value is not None and value < GRANULE:
            size += value
        break
    else:
        size = obj.object_size
    return size or obj.object_size


def _object_lines(shadow: ShadowMap, obj: SlabObject, addr: int, bug_type: str) -> list[str]:
    size = alloc_size(shadow, obj)
    if addr < obj.addr:
        where, distance = "to the left", obj.addr - addr
    elif addr >= obj.addr + size:
        where, distance = "to the right", addr - (obj.addr + size)
    else:
        where, distance = "inside", addr - obj.addr
    state = {"slab-out-of-bounds": "allocated ", "slab-use-after-free": "freed "}.get(bug_type, "")
    return [f"The buggy address belongs to the object at {obj.addr:016x}",
            f" which belongs to the cache {obj.cache} of size {obj.object_size}",
            f"The buggy address is located {distance} bytes {where} of",
            f" {state}{size}-byte region [{obj.addr:016x}, {obj.addr + size:016x})", ""]


def _place_lines(ctx: ReportContext, addr: int, obj: SlabObject | None, bug_type: str) -> list[str]:
    """What the address belongs to: a slab object, the task stack, and the physical page."""
    lines = []
    if obj is not None and obj.cache:
        lines += _object_lines(ctx.shadow, obj, addr, bug_type)
    if layout.VMALLOC <= addr < layout.VMALLOC + layout.VMALLOC_SIZE:
        lines += [f"The buggy address belongs to stack of task {ctx.task.comm}/{ctx.task.pid}", "",
                  "The buggy address belongs to a vmalloc virtual mapping", ""]
    elif layout.DIRECT_MAP <= addr < layout.DIRECT_MAP + layout.DIRECT_MAP_SIZE:
        pfn = (addr - layout.DIRECT_MAP) >> 12
        lines += ["The buggy address belongs to the physical page:",
                  f"page: refcount:1 mapcount:0 mapping:0000000000000000 index:0x0 pfn:0x{pfn:x}",
                  ""]
    return lines


def memory_state(shadow: ShadowMap, first_bad: int) -> list[str]:
    """Five rows of 16 shadow bytes around `first_bad`; `>` and a caret mark its shadow byte."""
    lines = ["Memory state around the buggy address:"]
    row = ((first_bad & ~(ROW_MEMORY - 1)) - ROWS_AROUND * ROW_MEMORY) & MASK64
    for _ in range(2 * ROWS_AROUND + 1):
        guilty = row <= first_bad < row + ROW_MEMORY
        values = (shadow.byte(row + GRANULE * i) for i in range(ROW_BYTES))
        hexes = " ".join("??" if v is None else f"{v:02x}" for v in values)
        lines.append(f"{'>' if guilty else ' '}{row:016x}: {hexes}")
        if guilty:
            column = 3 + 16 + (first_bad - row) // GRANULE * 3 + 1     # 1-based, as %*c pads
            lines.append(" " * (column - 1) + "^")
        row = (row + ROW_MEMORY) & MASK64          # rows past the top of memory wrap, as in C
    return lines


# -- our own lines ------------------------------------------------------------------------------

def _bpf_text(insns, slot: int) -> str:
    """The slot in the kernel's pseudo-C dialect (an ld_imm64 with its second slot)."""
    return format_insn(insns[slot], insns[slot + 1] if slot + 1 < len(insns) else None)


def access_instruction(image: Image, slot: int) -> str | None:
    """The x86 instruction of `slot` that touches memory: its first memory operand that is not
    part of the KASAN check itself (push/pop/call/lea, the shadow compare)."""
    start, end = image.insn_offsets[slot], image.insn_offsets[slot + 1]
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for ins in md.disasm(image.code[start:end], image.base + start):
        if "[" in ins.op_str and ins.mnemonic not in ("push", "pop", "call", "lea") \
                and "r11 + r10" not in ins.op_str:
            return f"{ins.address:016x}: {ins.mnemonic} {ins.op_str}"
    return None


def _stricter(obj: SlabObject | None, addr: int) -> str:
    """Why real KASAN would stay silent, when the access is outside an object so marked."""
    if obj is None or not obj.stricter or obj.addr <= addr < obj.end:
        return ""
    return obj.stricter


def source_of(ctx: ReportContext, item: Attributed) -> SourceLine | None:
    """The source line of the BPF instruction that made the access, when the program has it."""
    return ctx.program.lines.get(item.site.insn) if item.site is not None else None


def _our_lines(ctx: ReportContext, item: Attributed, symbol: str, obj, note: str) -> list[str]:
    lines = []
    site = item.site
    if site is not None:
        slot = site.insn
        where = source_of(ctx, item)
        lines.append(f"bpf-kasan: insn {item.func_insn} of {symbol}: "
                     f"{_bpf_text(ctx.program.insns, slot)}")
        if where is not None:
            lines.append(f"bpf-kasan: source {where.file}:{where.line}: {where.text.strip()}")
        x86 = access_instruction(ctx.image, slot)
        if x86:
            lines.append(f"bpf-kasan: x86 {x86}")
    if obj is not None and obj.allocated:
        lines.append(f"bpf-kasan: object: {obj.label} ({obj.size} bytes"
                     f"{', ' + obj.cache if obj.cache else ''}{', freed' if obj.freed else ''})")
    if note:
        lines.append(f"bpf-kasan: stricter than the kernel: {note}")
    return lines


# -- the whole report ---------------------------------------------------------------------------

def build_finding(ctx: ReportContext, item: Attributed, *, test: str, variant: str = "",
                  tainted: bool = False) -> Finding:
    """The Finding for one attributed bad access. `tainted`: an earlier report was printed."""
    rec = item.record
    verdict = classify(ctx.shadow, rec.addr, rec.size)
    symbol, located = code_symbol(ctx, rec.ret_ip)
    kind = "Write" if rec.is_write else "Read"
    lines = [RULER, f"BUG: KASAN: {verdict.bug_type} in {located}",
             f"{kind} of size {rec.size} at addr {rec.addr:016x} by task "
             f"{ctx.task.comm}/{ctx.task.pid}", ""]
    lines += _dump_stack(ctx, located, routine_name(rec.is_write, rec.size), tainted)
    obj = ctx.find_object(rec.addr) if ctx.find_object and verdict.has_metadata else None
    if verdict.has_metadata:
        lines += [""] + _place_lines(ctx, rec.addr, obj, verdict.bug_type)
        lines += memory_state(ctx.shadow, verdict.first_bad)
    lines.append(RULER)
    note = _stricter(obj, rec.addr)
    lines += _our_lines(ctx, item, symbol, obj, note)
    title = kasan_title(verdict.bug_type, rec.is_write, symbol)
    ident = hashlib.sha1("|".join(map(str, (test, variant, title, item.func_insn, rec.size)))
                         .encode()).hexdigest()[:12]
    where = source_of(ctx, item)
    return Finding(id=ident, test=test, function=symbol, insn=item.func_insn,
                   bug_type=verdict.bug_type, access=kind.lower(), size=rec.size, address=rec.addr,
                   object=obj.label if obj is not None and obj.allocated else None, title=title,
                   report="\n".join(lines) + "\n", variant=variant,
                   alt_titles=(alt_title(symbol),), stricter=note or "",
                   file=where.file if where else None, line=where.line if where else None)


def findings_of_run(ctx: ReportContext, records, gate: ReportGate, *, test: str,
                    variant: str = "") -> list[Finding]:
    """Every bad access of one run that the gate lets through (multishot or first-only), as
    Findings; from the invocation's second report on, the kernel shows taint flag B."""
    admitted = gate.admit(attribute(ctx.image, records))
    return [build_finding(ctx, item, test=test, variant=variant, tainted=number > 0)
            for number, item in admitted]
