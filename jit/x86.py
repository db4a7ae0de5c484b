"""A typed x86-64 encoder: the few instruction forms the BPF JIT emits, one function each.

Every `emit_*` appends the bytes of one instruction (the form in its docstring, Intel syntax)
to a `bytearray`. Memory operands always carry a displacement (disp8 when it fits, else
disp32), as the kernel JIT does; that also covers rbp/r13, which cannot be encoded without
one. rsp/r12 as a base get the SIB byte they need.

Owns: byte-level encodings. Knows nothing about BPF. Must not import capstone, unicorn or
anything from checks/ or bot/.
"""
from __future__ import annotations

from enum import IntEnum


class Reg(IntEnum):
    RAX = 0
    RCX = 1
    RDX = 2
    RBX = 3
    RSP = 4
    RBP = 5
    RSI = 6
    RDI = 7
    R8 = 8
    R9 = 9
    R10 = 10
    R11 = 11
    R12 = 12
    R13 = 13
    R14 = 14
    R15 = 15


class Cond(IntEnum):
    """Condition codes, the low nibble of `70+cc` / `0F 80+cc`."""
    O = 0x0
    NO = 0x1
    B = 0x2
    AE = 0x3
    E = 0x4
    NE = 0x5
    BE = 0x6
    A = 0x7
    S = 0x8
    NS = 0x9
    L = 0xC
    GE = 0xD
    LE = 0xE
    G = 0xF


class Ext(IntEnum):
    """The /n opcode extension of group-1 ALU (`81`/`83`) and group-2 shift (`C1`/`D1`/`D3`) forms."""
    ADD = 0
    OR = 1
    AND = 4
    ADC = 2
    SUB = 5
    XOR = 6
    CMP = 7
    SHL = 4
    SHR = 5
    SAR = 7


# `op r/m, reg` opcodes (the /r forms whose source is the ModRM reg field).
OP_ADD, OP_OR, OP_AND, OP_SUB, OP_XOR, OP_CMP, OP_TEST, OP_MOV = 0x01, 0x09, 0x21, 0x29, 0x31, 0x39, 0x85, 0x89

# Multi-byte NOPs as Intel recommends them, indexed by length.
NOPS = (b"", b"\x90", b"\x66\x90", b"\x0f\x1f\x00", b"\x0f\x1f\x40\x00", b"\x0f\x1f\x44\x00\x00",
        b"\x66\x0f\x1f\x44\x00\x00", b"\x0f\x1f\x80\x00\x00\x00\x00",
        b"\x0f\x1f\x84\x00\x00\x00\x00\x00")

REL8_JCC_LEN, REL32_JCC_LEN, REL8_JMP_LEN, REL32_JMP_LEN, CALL_LEN = 2, 6, 2, 5, 5


def is_imm8(value: int) -> bool:
    return -128 <= value <= 127


def is_simm32(value: int) -> bool:
    return -0x80000000 <= value <= 0x7FFFFFFF


def imm32(value: int) -> bytes:
    return (value & 0xFFFFFFFF).to_bytes(4, "little")


def _rex(out: bytearray, w: bool, reg: int = 0, rm: int = 0, index: int = 0, force: bool = False) -> None:
    """REX = 0100WRXB, emitted only when a bit is set (or `force`, for spl/bpl/sil/dil)."""
    byte = 0x40 | (w << 3) | ((reg >> 3) << 2) | ((index >> 3) << 1) | (rm >> 3)
    if byte != 0x40 or force:
        out.append(byte)


def _modrm_reg(out: bytearray, reg: int, rm: int) -> None:
    """ModRM with mod=11: register-direct operand."""
    out.append(0xC0 | ((reg & 7) << 3) | (rm & 7))


def _modrm_mem(out: bytearray, reg: int, base: int, disp: int) -> None:
    """ModRM (+SIB for rsp/r12) for [base + disp], always with a disp8 or disp32."""
    mod = 0x40 if is_imm8(disp) else 0x80
    out.append(mod | ((reg & 7) << 3) | (base & 7))
    if base & 7 == 4:
        out.append(0x24)                    # SIB: no index, base = rsp/r12
    if mod == 0x40:
        out.append(disp & 0xFF)
    else:
        out += imm32(disp)


def _needs_byte_rex(reg: int) -> bool:
    """spl, bpl, sil and dil exist only with a REX prefix (without one they are ah..bh)."""
    return 4 <= reg <= 7


# --- register-register and register-immediate ALU ------------------------------------------

def emit_op_rr(out: bytearray, opcode: int, rm: int, reg: int, is64: bool) -> None:
    """`<op> rm, reg` for the /r forms: add 01, or 09, and 21, sub 29, xor 31, cmp 39, test 85, mov 89."""
    _rex(out, is64, reg, rm)
    out.append(opcode)
    _modrm_reg(out, reg, rm)


def emit_alu_ri(out: bytearray, ext: int, dst: int, imm: int, is64: bool, rax_short: bool = True) -> None:
    """`<op> dst, imm`: `83 /n ib` when imm fits s8, `05/0D/25/2D/35 id` for (e/r)ax, else `81 /n id`."""
    _rex(out, is64, 0, dst)
    if is_imm8(imm):
        out.append(0x83)
        _modrm_reg(out, ext, dst)
        out.append(imm & 0xFF)
    elif rax_short and dst == Reg.RAX:
        out.append((ext << 3) | 0x05)
        out += imm32(imm)
    else:
        out.append(0x81)
        _modrm_reg(out, ext, dst)
        out += imm32(imm)


def emit_alu_ri32(out: bytearray, ext: int, dst: int, imm: int, is64: bool) -> None:
    """`<op> dst, imm32` in the fixed-length `81 /n id` form (e.g. `sub rsp, depth`)."""
    _rex(out, is64, 0, dst)
    out.append(0x81)
    _modrm_reg(out, ext, dst)
    out += imm32(imm)


def emit_test_ri(out: bytearray, dst: int, imm: int, is64: bool) -> None:
    """`test dst, imm32`: `F7 /0 id`."""
    _rex(out, is64, 0, dst)
    out.append(0xF7)
    _modrm_reg(out, 0, dst)
    out += imm32(imm)


def emit_mov_rr(out: bytearray, dst: int, src: int, is64: bool) -> None:
    """`mov dst, src` (`89 /r`). A 64-bit move to itself is omitted; a 32-bit one zero-extends, so stays."""
    if is64 and dst == src:
        return
    emit_op_rr(out, OP_MOV, dst, src, is64)


def emit_mov_ri32(out: bytearray, dst: int, imm: int, sign_extend: bool) -> None:
    """`mov dst, imm`: `xor r32, r32` for 0; `REX.W C7 /0 id` (sign-extends) for a negative imm
    when `sign_extend`; else `B8+r id` (zero-extends)."""
    imm &= 0xFFFFFFFF
    if sign_extend and imm & 0x80000000:
        emit_mov_sx32(out, dst, imm)
    elif imm == 0:
        emit_op_rr(out, OP_XOR, dst, dst, False)
    else:
        _rex(out, False, 0, dst)
        out.append(0xB8 | (dst & 7))
        out += imm32(imm)


def emit_mov_sx32(out: bytearray, dst: int, imm: int) -> None:
    """`mov dst, imm32` sign-extended to 64 bits: `REX.W C7 /0 id`."""
    _rex(out, True, 0, dst)
    out.append(0xC7)
    _modrm_reg(out, 0, dst)
    out += imm32(imm)


def emit_movabs(out: bytearray, dst: int, value: int) -> None:
    """`movabs dst, imm64`: `REX.W B8+r io`."""
    _rex(out, True, 0, dst)
    out.append(0xB8 | (dst & 7))
    out += (value & 0xFFFFFFFFFFFFFFFF).to_bytes(8, "little")


def emit_mov_ri64(out: bytearray, dst: int, value: int) -> None:
    """`dst = value` in the shortest form: `mov r32` if it fits u32, sign-extended `C7` if it fits
    s32, else `movabs`."""
    value &= 0xFFFFFFFFFFFFFFFF
    if value <= 0xFFFFFFFF:
        emit_mov_ri32(out, dst, value, False)
    elif value >= 0xFFFFFFFF80000000:
        emit_mov_ri32(out, dst, value, True)
    else:
        emit_movabs(out, dst, value)


def emit_movsx_rr(out: bytearray, dst: int, src: int, bits: int, is64: bool) -> None:
    """`movsx dst, src8/16` (`0F BE` / `0F BF`) or `movsxd dst, src32` (`REX.W 63`)."""
    if bits == 32:
        _rex(out, True, dst, src)
        out.append(0x63)
    else:
        _rex(out, is64, dst, src, force=bits == 8)
        out += b"\x0f\xbe" if bits == 8 else b"\x0f\xbf"
    _modrm_reg(out, dst, src)


def emit_movzx16_rr(out: bytearray, dst: int, src: int) -> None:
    """`movzx dst32, src16`: `0F B7 /r`."""
    _rex(out, False, dst, src)
    out += b"\x0f\xb7"
    _modrm_reg(out, dst, src)


def emit_neg(out: bytearray, dst: int, is64: bool) -> None:
    """`neg dst`: `F7 /3`."""
    _rex(out, is64, 0, dst)
    out.append(0xF7)
    _modrm_reg(out, 3, dst)


def emit_imul_rr(out: bytearray, dst: int, src: int, is64: bool) -> None:
    """`imul dst, src`: `0F AF /r`."""
    _rex(out, is64, dst, src)
    out += b"\x0f\xaf"
    _modrm_reg(out, dst, src)


def emit_imul_ri(out: bytearray, dst: int, imm: int, is64: bool) -> None:
    """`imul dst, dst, imm`: `6B /r ib` or `69 /r id`."""
    _rex(out, is64, dst, dst)
    short = is_imm8(imm)
    out.append(0x6B if short else 0x69)
    _modrm_reg(out, dst, dst)
    if short:
        out.append(imm & 0xFF)
    else:
        out += imm32(imm)


def emit_div(out: bytearray, src: int, signed: bool, is64: bool) -> None:
    """`div src` (`F7 /6`) or `idiv src` (`F7 /7`): rdx:rax / src."""
    _rex(out, is64, 0, src)
    out.append(0xF7)
    _modrm_reg(out, 7 if signed else 6, src)


def emit_sign_extend_rax(out: bytearray, is64: bool) -> None:
    """`cdq` (`99`) or `cqo` (`48 99`): rdx = sign of rax, before idiv."""
    if is64:
        out.append(0x48)
    out.append(0x99)


def emit_shift_ri(out: bytearray, ext: int, dst: int, count: int, is64: bool) -> None:
    """`shl/shr/sar dst, count`: `D1 /n` for 1, else `C1 /n ib`."""
    _rex(out, is64, 0, dst)
    out.append(0xD1 if count == 1 else 0xC1)
    _modrm_reg(out, ext, dst)
    if count != 1:
        out.append(count & 0xFF)


def emit_shift_cl(out: bytearray, ext: int, dst: int, is64: bool) -> None:
    """`shl/shr/sar dst, cl`: `D3 /n`."""
    _rex(out, is64, 0, dst)
    out.append(0xD3)
    _modrm_reg(out, ext, dst)


def emit_ror16_8(out: bytearray, dst: int) -> None:
    """`ror dst16, 8`: `66 C1 /1 08`, swapping the two low bytes."""
    out.append(0x66)
    _rex(out, False, 0, dst)
    out.append(0xC1)
    _modrm_reg(out, 1, dst)
    out.append(8)


def emit_bswap(out: bytearray, dst: int, is64: bool) -> None:
    """`bswap dst`: `0F C8+r` (32-bit form zero-extends)."""
    _rex(out, is64, 0, dst)
    out += bytes((0x0F, 0xC8 | (dst & 7)))


# --- memory --------------------------------------------------------------------------------

def emit_load(out: bytearray, dst: int, base: int, disp: int, size: int) -> None:
    """Zero-extending load: `movzx dst, byte/word [base+disp]` (`REX.W 0F B6/B7`),
    `mov dst32, [base+disp]` (`8B`) or `mov dst, qword [base+disp]` (`REX.W 8B`)."""
    if size == 4:
        _rex(out, False, dst, base)
        out.append(0x8B)
    elif size == 8:
        _rex(out, True, dst, base)
        out.append(0x8B)
    else:
        _rex(out, True, dst, base)
        out += b"\x0f\xb6" if size == 1 else b"\x0f\xb7"
    _modrm_mem(out, dst, base, disp)


_LOAD_SX_OPCODE = {1: b"\x0f\xbe", 2: b"\x0f\xbf", 4: b"\x63"}


def emit_load_sx(out: bytearray, dst: int, base: int, disp: int, size: int) -> None:
    """Sign-extending load to 64 bits: `movsx dst, byte/word [m]` (`REX.W 0F BE/BF`) or
    `movsxd dst, dword [m]` (`REX.W 63`)."""
    _rex(out, True, dst, base)
    out += _LOAD_SX_OPCODE[size]
    _modrm_mem(out, dst, base, disp)


def emit_store(out: bytearray, base: int, disp: int, src: int, size: int) -> None:
    """`mov [base+disp], src8/16/32/64`: `88` (REX for sil/dil/bpl), `66 89`, `89`, `REX.W 89`."""
    if size == 2:
        out.append(0x66)
    _rex(out, size == 8, src, base, force=size == 1 and _needs_byte_rex(src))
    out.append(0x88 if size == 1 else 0x89)
    _modrm_mem(out, src, base, disp)


def emit_store_imm(out: bytearray, base: int, disp: int, imm: int, size: int) -> None:
    """`mov size [base+disp], imm`: `C6 ib`, `66 C7 iw`, `C7 id`, `REX.W C7 id` (sign-extended)."""
    if size == 2:
        out.append(0x66)
    _rex(out, size == 8, 0, base)
    out.append(0xC6 if size == 1 else 0xC7)
    _modrm_mem(out, 0, base, disp)
    out += (imm & 0xFFFFFFFF).to_bytes(4, "little")[:min(size, 4)]


def emit_atomic(out: bytearray, opcode: bytes, base: int, disp: int, reg: int, is64: bool) -> None:
    """`lock <op> [base+disp], reg`: `F0` then add `01`, or `09`, and `21`, xor `31`,
    xadd `0F C1`, xchg `87`, cmpxchg `0F B1`."""
    out.append(0xF0)
    _rex(out, is64, reg, base)
    out += opcode
    _modrm_mem(out, reg, base, disp)


def emit_lea(out: bytearray, dst: int, base: int, disp: int) -> None:
    """`lea dst, [base+disp]`: `REX.W 8D /r`."""
    _rex(out, True, dst, base)
    out.append(0x8D)
    _modrm_mem(out, dst, base, disp)


def emit_cmp_byte_indexed_0(out: bytearray, base: int, index: int) -> None:
    """`cmp byte [base+index], 0`: `80 /7` with a SIB byte (scale 1); rbp/r13 bases get a disp8 0."""
    _rex(out, False, 0, base, index)
    out.append(0x80)
    needs_disp = base & 7 == 5
    out.append((0x40 if needs_disp else 0x00) | (7 << 3) | 4)
    out.append(((index & 7) << 3) | (base & 7))
    if needs_disp:
        out.append(0)
    out.append(0)


def emit_sub_abs_imm(out: bytearray, address: int, imm: int) -> None:
    """`sub qword [address], imm`: `REX.W 83/81 /5` with SIB `25` (absolute disp32, no base)."""
    out.append(0x48)
    short = is_imm8(imm)
    out.append(0x83 if short else 0x81)
    out += b"\x2c\x25"
    out += imm32(address)
    if short:
        out.append(imm & 0xFF)
    else:
        out += imm32(imm)


def emit_mem_ri(out: bytearray, ext: int, base: int, disp: int, imm: int) -> None:
    """`<op> qword [base+disp], imm8`: `REX.W 83 /n ib` (e.g. sub/adc of a stack counter)."""
    _rex(out, True, 0, base)
    out.append(0x83)
    _modrm_mem(out, ext, base, disp)
    out.append(imm & 0xFF)


# --- stack, control flow -------------------------------------------------------------------

def emit_push(out: bytearray, reg: int) -> None:
    """`push reg`: `50+r` (`41 50+r` for r8-r15)."""
    _rex(out, False, 0, reg)
    out.append(0x50 | (reg & 7))


def emit_pop(out: bytearray, reg: int) -> None:
    """`pop reg`: `58+r` (`41 58+r` for r8-r15)."""
    _rex(out, False, 0, reg)
    out.append(0x58 | (reg & 7))


def emit_leave(out: bytearray) -> None:
    """`leave`: `C9` (mov rsp, rbp; pop rbp)."""
    out.append(0xC9)


def emit_ret(out: bytearray) -> None:
    """`ret`: `C3`."""
    out.append(0xC3)


def emit_nops(out: bytearray, count: int) -> None:
    """`count` bytes of NOPs, in the longest forms first."""
    while count > 0:
        n = min(count, len(NOPS) - 1)
        out += NOPS[n]
        count -= n


def emit_jcc(out: bytearray, cond: int, rel: int) -> None:
    """`j<cc> rel` in the shortest form that reaches; `rel` counts from the end of the jump."""
    if is_imm8(rel):
        emit_jcc8(out, cond, rel)
    else:
        emit_jcc32(out, cond, rel)


def emit_jcc8(out: bytearray, cond: int, rel: int) -> None:
    """`j<cc> rel8`: `70+cc rel8`."""
    out += bytes((0x70 | cond, rel & 0xFF))


def emit_jcc32(out: bytearray, cond: int, rel: int) -> None:
    """`j<cc> rel32`: `0F 80+cc rel32`."""
    out += bytes((0x0F, 0x80 | cond))
    out += imm32(rel)


def emit_jmp(out: bytearray, rel: int) -> None:
    """`jmp rel` in the shortest form that reaches; `rel` counts from the end of the jump."""
    if is_imm8(rel):
        emit_jmp8(out, rel)
    else:
        emit_jmp32(out, rel)


def emit_jmp8(out: bytearray, rel: int) -> None:
    """`jmp rel8`: `EB rel8`."""
    out += bytes((0xEB, rel & 0xFF))


def emit_jmp32(out: bytearray, rel: int) -> None:
    """`jmp rel32`: `E9 rel32`."""
    out.append(0xE9)
    out += imm32(rel)


def emit_call(out: bytearray, rel: int) -> None:
    """`call rel32`: `E8 rel32`, relative to the end of the call."""
    out.append(0xE8)
    out += imm32(rel)


def emit_call_reg(out: bytearray, reg: int) -> None:
    """`call reg`: `FF /2`."""
    _rex(out, False, 0, reg)
    out.append(0xFF)
    _modrm_reg(out, 2, reg)


def emit_jmp_reg(out: bytearray, reg: int) -> None:
    """`jmp reg`: `FF /4`."""
    _rex(out, False, 0, reg)
    out.append(0xFF)
    _modrm_reg(out, 4, reg)


def emit_lfence(out: bytearray) -> None:
    """`lfence`: `0F AE E8` (BPF_ST | BPF_NOSPEC)."""
    out += b"\x0f\xae\xe8"
