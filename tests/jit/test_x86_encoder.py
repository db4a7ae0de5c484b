"""jit/x86.py: every emitted form, decoded back by capstone (Intel syntax), over every register
where the encoding depends on it (REX for r8-r15, sil/dil/bpl/spl byte registers, SIB for
rsp/r12 bases, the displacement rbp/r13 bases need)."""
from __future__ import annotations

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs

from jit import x86
from jit.x86 import Cond, Ext, Reg

DECODER = Cs(CS_ARCH_X86, CS_MODE_64)
AT = 0x1000                                  # address the single instructions are decoded at

R64 = [r.name.lower() for r in Reg]
R32 = ["eax", "ecx", "edx", "ebx", "esp", "ebp", "esi", "edi"] + [f"r{i}d" for i in range(8, 16)]
R16 = ["ax", "cx", "dx", "bx", "sp", "bp", "si", "di"] + [f"r{i}w" for i in range(8, 16)]
R8 = ["al", "cl", "dl", "bl", "spl", "bpl", "sil", "dil"] + [f"r{i}b" for i in range(8, 16)]
WIDTH = {1: ("byte", R8), 2: ("word", R16), 4: ("dword", R32), 8: ("qword", R64)}
DISPS = (0, 0x10, -8, 0x1000)


def num(v: int) -> str:
    """A number as capstone prints it: decimal below 10, else hex, with a sign."""
    sign, mag = ("-", -v) if v < 0 else ("", v)
    return f"{sign}{mag}" if mag < 10 else f"{sign}{mag:#x}"


def mem(size: int, base: int, disp: int) -> str:
    where = R64[base] + ("" if disp == 0 else f" {'-' if disp < 0 else '+'} {num(abs(disp))}")
    return f"{WIDTH[size][0]} ptr [{where}]"


def emitted(emit, *args) -> bytes:
    out = bytearray()
    emit(out, *args)
    return bytes(out)


def decode_one(code: bytes) -> str:
    insns = list(DECODER.disasm(code, AT))
    assert len(insns) == 1, f"{code.hex()} decodes as {[(i.mnemonic, i.op_str) for i in insns]}"
    assert insns[0].size == len(code), f"{code.hex()}: capstone used {insns[0].size} bytes"
    return f"{insns[0].mnemonic} {insns[0].op_str}".strip()


def _cases():
    regs = list(Reg)
    for r in regs:
        yield f"push-{r.name}", emitted(x86.emit_push, r), f"push {R64[r]}"
        yield f"pop-{r.name}", emitted(x86.emit_pop, r), f"pop {R64[r]}"
        yield f"neg-{r.name}", emitted(x86.emit_neg, r, True), f"neg {R64[r]}"
        yield f"neg32-{r.name}", emitted(x86.emit_neg, r, False), f"neg {R32[r]}"
        yield f"bswap-{r.name}", emitted(x86.emit_bswap, r, True), f"bswap {R64[r]}"
        yield f"bswap32-{r.name}", emitted(x86.emit_bswap, r, False), f"bswap {R32[r]}"
        yield f"ror16-{r.name}", emitted(x86.emit_ror16_8, r), f"ror {R16[r]}, 8"
        yield f"movzx16-{r.name}", emitted(x86.emit_movzx16_rr, r, r), f"movzx {R32[r]}, {R16[r]}"
        yield f"div-{r.name}", emitted(x86.emit_div, r, False, True), f"div {R64[r]}"
        yield f"idiv32-{r.name}", emitted(x86.emit_div, r, True, False), f"idiv {R32[r]}"
        yield f"shl1-{r.name}", emitted(x86.emit_shift_ri, Ext.SHL, r, 1, True), f"shl {R64[r]}, 1"
        yield f"sar5-{r.name}", emitted(x86.emit_shift_ri, Ext.SAR, r, 5, False), f"sar {R32[r]}, 5"
        yield f"shr-cl-{r.name}", emitted(x86.emit_shift_cl, Ext.SHR, r, True), f"shr {R64[r]}, cl"
        yield f"imul-imm8-{r.name}", emitted(x86.emit_imul_ri, r, 3, True), f"imul {R64[r]}, {R64[r]}, 3"
        yield f"imul-imm32-{r.name}", emitted(x86.emit_imul_ri, r, 0x1000, False), \
            f"imul {R32[r]}, {R32[r]}, 0x1000"
        yield f"test-imm-{r.name}", emitted(x86.emit_test_ri, r, 0x80, True), f"test {R64[r]}, 0x80"
        yield f"mov-imm32-{r.name}", emitted(x86.emit_mov_ri32, r, 0x12345678, False), f"mov {R32[r]}, 0x12345678"
        yield f"mov-imm0-{r.name}", emitted(x86.emit_mov_ri32, r, 0, True), f"xor {R32[r]}, {R32[r]}"
        yield f"mov-sx-{r.name}", emitted(x86.emit_mov_ri32, r, -2, True), f"mov {R64[r]}, 0xfffffffffffffffe"
        yield f"mov-sx32-{r.name}", emitted(x86.emit_mov_sx32, r, 7), f"mov {R64[r]}, 7"
        yield f"movabs-{r.name}", emitted(x86.emit_movabs, r, 0x1122334455667788), \
            f"movabs {R64[r]}, 0x1122334455667788"
        yield f"call-{r.name}", emitted(x86.emit_call_reg, r), f"call {R64[r]}"
        yield f"jmp-{r.name}", emitted(x86.emit_jmp_reg, r), f"jmp {R64[r]}"
        for ext in (Ext.ADD, Ext.OR, Ext.AND, Ext.SUB, Ext.XOR, Ext.CMP):
            op = ext.name.lower()
            yield f"{op}-imm8-{r.name}", emitted(x86.emit_alu_ri, ext, r, 3, True), f"{op} {R64[r]}, 3"
            yield f"{op}-imm32-{r.name}", emitted(x86.emit_alu_ri, ext, r, 0x100, False), f"{op} {R32[r]}, 0x100"
            yield f"{op}-fixed32-{r.name}", emitted(x86.emit_alu_ri32, ext, r, 8, True), f"{op} {R64[r]}, 8"
        for s in regs:
            yield f"mov-{r.name}-{s.name}", emitted(x86.emit_op_rr, x86.OP_MOV, r, s, True), f"mov {R64[r]}, {R64[s]}"
            yield f"mov32-{r.name}-{s.name}", emitted(x86.emit_mov_rr, r, s, False), f"mov {R32[r]}, {R32[s]}"
            yield f"imul-{r.name}-{s.name}", emitted(x86.emit_imul_rr, r, s, True), f"imul {R64[r]}, {R64[s]}"
            yield f"movsx8-{r.name}-{s.name}", emitted(x86.emit_movsx_rr, r, s, 8, True), f"movsx {R64[r]}, {R8[s]}"
            yield f"movsx8-32-{r.name}-{s.name}", emitted(x86.emit_movsx_rr, r, s, 8, False), \
                f"movsx {R32[r]}, {R8[s]}"
            yield f"movsx16-{r.name}-{s.name}", emitted(x86.emit_movsx_rr, r, s, 16, False), \
                f"movsx {R32[r]}, {R16[s]}"
            yield f"movsxd-{r.name}-{s.name}", emitted(x86.emit_movsx_rr, r, s, 32, True), \
                f"movsxd {R64[r]}, {R32[s]}"
            if s != Reg.RSP:                 # rsp cannot be a SIB index
                yield f"cmp-byte-{r.name}-{s.name}", emitted(x86.emit_cmp_byte_indexed_0, r, s), \
                    f"cmp byte ptr [{R64[r]} + {R64[s]}], 0"
    for opcode, name in ((x86.OP_ADD, "add"), (x86.OP_OR, "or"), (x86.OP_AND, "and"), (x86.OP_SUB, "sub"),
                         (x86.OP_XOR, "xor"), (x86.OP_CMP, "cmp"), (x86.OP_TEST, "test")):
        for r, s in ((Reg.RAX, Reg.R15), (Reg.R9, Reg.RSI), (Reg.RBP, Reg.R12)):
            yield f"{name}-rr-{r.name}-{s.name}", emitted(x86.emit_op_rr, opcode, r, s, False), \
                f"{name} {R32[r]}, {R32[s]}"
    yield from _memory_cases(regs)
    yield from _control_cases()


def _memory_cases(regs):
    for base in regs:
        for disp in DISPS:
            where = f"{base.name}{disp:+#x}"
            for r in (Reg.RAX, Reg.RSI, Reg.RDI, Reg.RBP, Reg.RSP, Reg.R8, Reg.R11, Reg.R15):
                for size in (1, 2, 4, 8):
                    width, names = WIDTH[size]
                    load = f"movzx {R64[r]}, {mem(size, base, disp)}" if size < 4 else \
                        f"mov {(R32 if size == 4 else R64)[r]}, {mem(size, base, disp)}"
                    yield f"load{size}-{r.name}-{where}", emitted(x86.emit_load, r, base, disp, size), load
                    yield f"store{size}-{r.name}-{where}", emitted(x86.emit_store, base, disp, r, size), \
                        f"mov {mem(size, base, disp)}, {names[r]}"
                    if size < 8:
                        mnemonic = "movsxd" if size == 4 else "movsx"
                        yield f"loadsx{size}-{r.name}-{where}", emitted(x86.emit_load_sx, r, base, disp, size), \
                            f"{mnemonic} {R64[r]}, {mem(size, base, disp)}"
                for size, opcode, name in ((8, b"\x01", "add"), (4, b"\x09", "or"), (8, b"\x21", "and"),
                                           (4, b"\x31", "xor"), (8, b"\x0f\xc1", "xadd"),
                                           (4, b"\x87", "xchg"), (8, b"\x0f\xb1", "cmpxchg")):
                    yield f"lock-{name}-{r.name}-{where}", \
                        emitted(x86.emit_atomic, opcode, base, disp, r, size == 8), \
                        f"lock {name} {mem(size, base, disp)}, {WIDTH[size][1][r]}"
                yield f"lea-{r.name}-{where}", emitted(x86.emit_lea, r, base, disp), \
                    f"lea {R64[r]}, [{mem(8, base, disp).split('[')[1]}"
            for size in (1, 2, 4, 8):
                yield f"store-imm{size}-{where}", emitted(x86.emit_store_imm, base, disp, 0x11, size), \
                    f"mov {mem(size, base, disp)}, 0x11"
            yield f"sub-mem-{where}", emitted(x86.emit_mem_ri, Ext.SUB, base, disp, 1), f"sub {mem(8, base, disp)}, 1"
            yield f"adc-mem-{where}", emitted(x86.emit_mem_ri, Ext.ADC, base, disp, 0), f"adc {mem(8, base, disp)}, 0"


def _control_cases():
    for cond in Cond:
        name = {Cond.B: "jb", Cond.AE: "jae", Cond.E: "je", Cond.NE: "jne", Cond.BE: "jbe", Cond.A: "ja",
                Cond.S: "js", Cond.NS: "jns", Cond.L: "jl", Cond.GE: "jge", Cond.LE: "jle", Cond.G: "jg",
                Cond.O: "jo", Cond.NO: "jno"}[cond]
        yield f"{name}-rel8", emitted(x86.emit_jcc8, cond, -128), f"{name} {AT + 2 - 128:#x}"
        yield f"{name}-rel32", emitted(x86.emit_jcc32, cond, 0x1234), f"{name} {AT + 6 + 0x1234:#x}"
        yield f"{name}-auto-long", emitted(x86.emit_jcc, cond, 128), f"{name} {AT + 6 + 128:#x}"
    yield "jmp-rel8", emitted(x86.emit_jmp8, 127), f"jmp {AT + 2 + 127:#x}"
    yield "jmp-rel32", emitted(x86.emit_jmp32, -0x200), f"jmp {AT + 5 - 0x200:#x}"
    yield "jmp-auto-short", emitted(x86.emit_jmp, -2), f"jmp {AT:#x}"
    yield "call-rel32", emitted(x86.emit_call, 0x10), f"call {AT + 5 + 0x10:#x}"
    yield "leave", emitted(x86.emit_leave), "leave"
    yield "ret", emitted(x86.emit_ret), "ret"
    yield "lfence", emitted(x86.emit_lfence), "lfence"
    yield "cdq", emitted(x86.emit_sign_extend_rax, False), "cdq"
    yield "cqo", emitted(x86.emit_sign_extend_rax, True), "cqo"
    yield "sub-abs-imm8", emitted(x86.emit_sub_abs_imm, 0xFFFFFFFF82000040, 11), \
        "sub qword ptr [0xffffffff82000040], 0xb"
    yield "sub-abs-imm32", emitted(x86.emit_sub_abs_imm, 0xFFFFFFFF82000040, 1000), \
        "sub qword ptr [0xffffffff82000040], 0x3e8"


FAMILIES: dict[str, list] = {}
for _case in _cases():
    FAMILIES.setdefault(_case[0].split("-")[0], []).append(_case)


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_forms_decode_as_documented(family):
    """One test per form family (thousands of register/displacement combinations in all)."""
    wrong = []
    for name, code, expected in FAMILIES[family]:
        try:
            got = decode_one(code)
        except AssertionError as e:
            got = str(e)
        if got != expected:
            wrong.append(f"{name}: {code.hex()} is {got!r}, expected {expected!r}")
    assert not wrong, "\n".join(wrong[:20])


@pytest.mark.parametrize("count", range(1, 20))
def test_nops_fill_exactly(count):
    code = emitted(x86.emit_nops, count)
    insns = list(DECODER.disasm(code, AT))
    assert len(code) == count and sum(i.size for i in insns) == count
    assert {i.mnemonic for i in insns} == {"nop"}


@pytest.mark.parametrize("emit,args,raw", [
    (x86.emit_mov_rr, (Reg.RDI, Reg.RSI, True), "4889f7"),             # the kernel's `mov rdi, rsi`
    (x86.emit_mov_rr, (Reg.RDI, Reg.R13, True), "4c89ef"),             # `mov rdi, r13`
    (x86.emit_alu_ri, (Ext.ADD, Reg.RDI, 8, True), "4883c708"),        # `add rdi, imm8`
    (x86.emit_alu_ri, (Ext.ADD, Reg.RDI, 0x1000, True), "4881c700100000"),
    (x86.emit_alu_ri, (Ext.ADD, Reg.RAX, 0x1000, True), "480500100000"),  # rax short form
    (x86.emit_alu_ri, (Ext.CMP, Reg.RAX, 0x1000, True, False), "4881f800100000"),  # cmp: no short form
    (x86.emit_alu_ri32, (Ext.SUB, Reg.RSP, 8, True), "4881ec08000000"),   # `sub rsp, depth`
    (x86.emit_mov_ri32, (Reg.R13, 0, False), "4531ed"),                # xor r13d, r13d
    (x86.emit_store, (Reg.RDI, 0, Reg.RSI, 1), "40887700"),            # sil needs a bare REX
    (x86.emit_store, (Reg.RDI, 0, Reg.RBX, 1), "885f00"),              # bl does not
    (x86.emit_load, (Reg.RAX, Reg.RBP, -8, 8), "488b45f8"),            # always a displacement
    (x86.emit_nops, (5,), "0f1f440000"),                               # the patchable NOP
])
def test_kernel_byte_sequences(emit, args, raw):
    assert emitted(emit, *args).hex() == raw


def test_mov_to_itself_is_omitted_only_for_64_bit():
    assert emitted(x86.emit_mov_rr, Reg.RAX, Reg.RAX, True) == b""
    assert decode_one(emitted(x86.emit_mov_rr, Reg.RAX, Reg.RAX, False)) == "mov eax, eax"


@pytest.mark.parametrize("value,expected", [
    (0, "xor eax, eax"), (0xFFFFFFFF, "mov eax, 0xffffffff"),
    (0xFFFFFFFF80000000, "mov rax, 0xffffffff80000000"), (1 << 32, "movabs rax, 0x100000000")])
def test_mov_imm64_picks_the_shortest_form(value, expected):
    assert decode_one(emitted(x86.emit_mov_ri64, Reg.RAX, value)) == expected
