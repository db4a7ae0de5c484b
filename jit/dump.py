"""A bpftool-style listing of a JITed program (`bpftool prog dump jited`, Intel syntax).

Per function a header `bpf_prog_<tag>_<name>:`, its prologue, then each BPF instruction as a
`; <insn>` comment line (LLVM syntax) followed by its x86 code, one instruction a line:
`  <offset>: <bytes>  <mnemonic> <operands>`, offsets and jump targets relative to the image.
Out-of-line code (KASAN slow paths, the budget stub) follows under its own comment. Calls to
known stubs are annotated with the stub's name.

The listing needs no machine: `listing_target` links against fixed dummy addresses, helpers
and kfuncs at 0xffffffff81000000 + 16*id in kernel text, the image at 0xffffffffa0000000.

Owns: the listing format. May import capstone; must not import unicorn, checks/ or bot/.
"""
from __future__ import annotations

from typing import Callable

from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from jit import isa
from jit.compile import Layout, compile_with_layout
from jit.emit_mem import SKB_LOAD_STUB
from jit.image import FuncImage, Image, Target
from jit.llvm_disasm import format_insn
from jit.program import Program

KERNEL_TEXT = 0xFFFFFFFF81000000
IMAGE_BASE = 0xFFFFFFFFA0000000
KFUNC_TEXT = KERNEL_TEXT + 0x400000          # kfunc ids get their own range, apart from helpers
ASAN_TEXT = KERNEL_TEXT + 0x800000
BUDGET_COUNTER = 0xFFFFFFFF82000040
BUDGET_EXHAUSTED = KERNEL_TEXT + 0x900000
TAIL_CALLS_INLINE = KERNEL_TEXT + 0xA00000     # only its presence matters: tail calls compile inline
NO_TAG = "0" * 16
_BYTES_WIDTH = 30


class _DummyKernel:
    """Addresses for a listing, remembering a name for each one handed out."""

    def __init__(self):
        self.names: dict[int, str] = {BUDGET_EXHAUSTED: "bpf_budget_exhausted"}
        self._skb = {stub: f"bpf_skb_load_helper_{8 * size}" for size, stub in SKB_LOAD_STUB.items()}

    def call_address(self, src: int, imm: int) -> int:
        base = KFUNC_TEXT if src == isa.PSEUDO_KFUNC_CALL else KERNEL_TEXT
        addr = base + 16 * imm
        kind = "kfunc" if src == isa.PSEUDO_KFUNC_CALL else "helper"
        self.names[addr] = self._skb.get(imm, f"{kind}#{imm}") if kind == "helper" else f"kfunc#{imm}"
        return addr

    def asan_address(self, is_write: bool, size: int) -> int:
        addr = ASAN_TEXT + 64 * size + 32 * is_write
        self.names[addr] = f"__asan_{'store' if is_write else 'load'}{size}"
        return addr


def listing_target(kasan: str = "off", budget: bool = False) -> tuple[Target, dict[int, str]]:
    """A Target with the dummy addresses, and the (address -> name) map it fills while compiling."""
    kernel = _DummyKernel()
    target = Target(IMAGE_BASE, kernel.call_address, kernel.asan_address, kasan=kasan,
                    tail_call_address=TAIL_CALLS_INLINE,
                    budget_address=BUDGET_COUNTER if budget else None,
                    budget_exhausted_address=BUDGET_EXHAUSTED if budget else None)
    return target, kernel.names


SymbolOf = Callable[[Program, FuncImage], str]


def format_listing(program: Program, *, kasan: str = "off", budget: bool = False,
                   symbol_of: SymbolOf | None = None) -> str:
    """Compile `program` against the dummy target and list it. `symbol_of` names a function
    (`bpf_prog_<tag>_<name>`); without it tags print as zeros."""
    target, names = listing_target(kasan, budget)
    image, layout = compile_with_layout(program, target)
    return format_image(program, image, layout, names, symbol_of)


def format_image(program: Program, image: Image, layout: Layout, names: dict[int, str],
                 symbol_of: SymbolOf | None = None) -> str:
    disasm = Cs(CS_ARCH_X86, CS_MODE_64)
    lines: list[str] = []
    for index, func in enumerate(image.funcs):
        stop = image.funcs[index + 1].start_insn if index + 1 < len(image.funcs) else len(program.insns)
        body = (layout.body_start[index], layout.body_end[index])
        lines.append(f"{symbol_of(program, func) if symbol_of else f'bpf_prog_{NO_TAG}_{func.name}'}:")
        lines.append("; prologue")
        lines += _code(disasm, image, func.offset, body[0], names)
        lines += _body(disasm, program, image, (func.start_insn, stop), body, names)
        if body[1] < func.offset + func.length:
            lines.append("; out of line")
            lines += _code(disasm, image, body[1], func.offset + func.length, names)
    return "\n".join(lines) + "\n"


def _body(disasm: Cs, program: Program, image: Image, slots: tuple[int, int], body: tuple[int, int],
          names: dict[int, str]) -> list[str]:
    """`; insn` plus its code for every slot (an ld_imm64 pair is one line)."""
    lines, insns = [], program.insns
    pc, stop = slots
    while pc < stop:
        insn = insns[pc]
        width = 2 if insn.is_ld_imm64 else 1
        begin = body[0] if pc == slots[0] else image.insn_offsets[pc]
        end = image.insn_offsets[pc + width] if pc + width < stop else body[1]
        lines.append(f"; {format_insn(insn, insns[pc + 1] if width == 2 else None)}")
        lines += _code(disasm, image, begin, end, names)
        pc += width
    return lines


def _code(disasm: Cs, image: Image, begin: int, end: int, names: dict[int, str]) -> list[str]:
    """Capstone lines for image bytes [begin, end); undecodable bytes print as `.byte`."""
    lines, at = [], begin
    while at < end:
        decoded = False
        for ins in disasm.disasm(image.code[at:end], image.base + at):
            lines.append(_line(ins.address - image.base, ins.bytes, ins.mnemonic, ins.op_str, image, names))
            at = ins.address - image.base + ins.size
            decoded = True
        if at < end and not decoded:
            lines.append(_line(at, image.code[at:at + 1], ".byte", f"{image.code[at]:#04x}", image, names))
            at += 1
    return lines


def _line(offset: int, raw: bytes, mnemonic: str, operands: str, image: Image, names: dict[int, str]) -> str:
    """One x86 line; branch targets inside the image become image offsets, others get a name."""
    if mnemonic.startswith(("j", "call")) and operands.startswith("0x"):
        target = int(operands, 16)
        if 0 <= target - image.base <= len(image.code):
            operands = f"{target - image.base:#x}"
        elif target in names:
            operands += f" <{names[target]}>"
    return f"{offset:>5x}: {raw.hex(' '):<{_BYTES_WIDTH}} {mnemonic} {operands}".rstrip()
