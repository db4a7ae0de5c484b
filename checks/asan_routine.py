"""Native x86-64 code of `__asan_{load,store}{1,2,4,8}` for the emulated kernel's text.

Both KASAN modes of the JIT end up here: outline checks call these routines for every access,
inline checks only when the shadow byte is non-zero. Each routine gets rdi = the address and
applies generic KASAN's check_region_inline for its constant size, natively:

1. `addr + size` wraps past 2**64 - 1, or `addr` is below the kernel half (shadow.METADATA_START,
   no shadow): report without reading shadow. One unsigned compare decides both;
2. fast path: the shadow bytes of the first and the last byte are both 0: fine;
3. otherwise the exact rules: an access of 2/4/8 bytes crossing a granule needs the first
   granule's shadow to be 0; the last byte's shadow s must be 0 or (last & 7) < (s8)s.

The fast path keeps a clean access to two taken-or-not branches: each conditional jump ends a
QEMU translation block, which is most of what a check costs (unicorn-perf.md).

A report appends {addr, size, is_write, ret_ip = [rsp]} to the buffer of checks/kasan_records.py
(or only bumps its count when full) and returns: the access then happens, as in the kernel.
Only caller-saved registers (rax, rcx, rdx, rsi) and flags are clobbered.

The bytes come from jit/x86.py's encoder, each instruction with its assembly beside it; the
short jumps are resolved here (tests/checks/test_asan_routine.py checks the capstone listing).

Must not import unicorn or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from checks.errors import CheckError
from checks.kasan_records import (HEADER_SIZE, REC_ADDR, REC_IS_WRITE, REC_RET_IP, REC_SIZE,
                                  RECORD_SIZE, Records, buffer_size, read_records, reset_buffer)
from checks.shadow import MASK64, METADATA_START
from jit.image import KASAN_SHADOW_OFFSET
from jit.x86 import (OP_ADD, OP_CMP, OP_OR, OP_TEST, REL8_JCC_LEN, Cond, Ext, Reg, emit_alu_ri,
                     emit_cmp_byte_indexed_0, emit_imul_ri, emit_jcc8, emit_lea, emit_load,
                     emit_load_sx, emit_mem_ri, emit_movabs, emit_mov_rr, emit_op_rr, emit_ret,
                     emit_shift_ri, emit_store, emit_store_imm, is_imm8)

SIZES = (1, 2, 4, 8)
ALIGN = 16                         # each routine starts on a 16-byte boundary, padded with int3
_JUMPS = {"ja": Cond.A, "jae": Cond.AE, "je": Cond.E, "jne": Cond.NE, "jl": Cond.L}
RAX, RCX, RDX, RSI, RDI, RSP = Reg.RAX, Reg.RCX, Reg.RDX, Reg.RSI, Reg.RDI, Reg.RSP


def routine_name(is_write: bool, size: int) -> str:
    return f"__asan_{'store' if is_write else 'load'}{size}"


def _x(emit, *args) -> bytes:
    """The bytes one jit.x86 emitter appends."""
    out = bytearray()
    emit(out, *args)
    return bytes(out)


def _range_check(size: int) -> list:
    """Step 1: rdi - METADATA_START must lie in [0, 2**64 - 1 - size - METADATA_START]: the
    kernel's `addr + size < addr` already holds when the access ends exactly at 2**64."""
    return [
        _x(emit_movabs, RAX, -METADATA_START & MASK64),      # movabs rax, -METADATA_START
        _x(emit_op_rr, OP_ADD, RAX, RDI, True),              # add rax, rdi
        _x(emit_movabs, RDX, (-size - 1 - METADATA_START) & MASK64),  # movabs rdx, last valid offset
        _x(emit_op_rr, OP_CMP, RAX, RDX, True),              # cmp rax, rdx
        ("ja", "report"),                                    # ja report      ; wild or wrapping
        _x(emit_movabs, RCX, KASAN_SHADOW_OFFSET),           # movabs rcx, KASAN_SHADOW_OFFSET
        _x(emit_lea, RSI, RDI, size - 1),                    # lea rsi, [rdi + size - 1] ; last byte
    ]


def _shadow_byte(dst: Reg, addr: Reg) -> list:
    """dst = the shadow byte of the address in `addr`, zero-extended (rcx = shadow offset)."""
    return [
        _x(emit_mov_rr, dst, addr, True),                    # mov dst, addr
        _x(emit_shift_ri, Ext.SHR, dst, 3, True),            # shr dst, 3
        _x(emit_op_rr, OP_ADD, dst, RCX, True),              # add dst, rcx
        _x(emit_load, dst, dst, 0, 1),                       # movzx dst, byte [dst + 0]
    ]


def _fast_path(size: int) -> list:
    """Step 2: both granules whole. For one byte there is only one granule."""
    if size == 1:
        return _shadow_byte(RDX, RDI) + [
            _x(emit_op_rr, OP_TEST, RDX, RDX, False),        # test edx, edx
            ("je", "ok"),                                    # jz ok
        ]
    return _shadow_byte(RDX, RDI) + _shadow_byte(RAX, RSI) + [
        _x(emit_op_rr, OP_OR, RDX, RAX, False),              # or edx, eax
        ("je", "ok"),                                        # jz ok
    ]


def _crossing_check(size: int) -> list:
    """Step 3, for sizes 2/4/8: an access spilling into the next granule needs the first one whole."""
    if size == 1:
        return []
    return [
        _x(emit_mov_rr, RAX, RSI, False),                    # mov eax, esi
        _x(emit_alu_ri, Ext.AND, RAX, 7, False),             # and eax, 7
        _x(emit_alu_ri, Ext.CMP, RAX, size - 1, False),      # cmp eax, size - 1
        ("jae", "last"),                                     # jae last       ; one granule only
        _x(emit_mov_rr, RAX, RDI, True),                     # mov rax, rdi
        _x(emit_shift_ri, Ext.SHR, RAX, 3, True),            # shr rax, 3
        _x(emit_cmp_byte_indexed_0, RAX, RCX),               # cmp byte [rax + rcx], 0
        ("jne", "report"),                                   # jne report
        "last",
    ]


def _last_byte_check() -> list:
    """Step 3, the granule holding the last byte; a partial one allows its first s bytes."""
    return [
        _x(emit_mov_rr, RAX, RSI, True),                     # mov rax, rsi
        _x(emit_shift_ri, Ext.SHR, RAX, 3, True),            # shr rax, 3
        _x(emit_op_rr, OP_ADD, RAX, RCX, True),              # add rax, rcx   ; shadow address
        _x(emit_load_sx, RDX, RAX, 0, 1),                    # movsx rdx, byte [rax + 0]
        _x(emit_op_rr, OP_TEST, RDX, RDX, False),            # test edx, edx
        ("je", "ok"),                                        # jz ok
        _x(emit_alu_ri, Ext.AND, RSI, 7, False),             # and esi, 7
        _x(emit_op_rr, OP_CMP, RSI, RDX, False),             # cmp esi, edx   ; signed: s < 0 is bad
        ("jl", "ok"),                                        # jl ok
    ]


def _report(size: int, is_write: bool, report_buffer: int) -> list:
    """Append a record unless the buffer is full; always count."""
    rec = HEADER_SIZE
    return [
        "report",
        _x(emit_movabs, RAX, report_buffer),                 # movabs rax, report_buffer
        _x(emit_load, RCX, RAX, 0, 8),                       # mov rcx, [rax + 0]   ; count
        _x(emit_load, RDX, RAX, 8, 8),                       # mov rdx, [rax + 8]   ; capacity
        _x(emit_op_rr, OP_CMP, RCX, RDX, True),              # cmp rcx, rdx
        ("jae", "full"),                                     # jae full
        _x(emit_imul_ri, RCX, RECORD_SIZE, True),            # imul rcx, rcx, RECORD_SIZE
        _x(emit_op_rr, OP_ADD, RCX, RAX, True),              # add rcx, rax         ; record - 16
        _x(emit_store, RCX, rec + REC_ADDR, RDI, 8),         # mov [rcx + 16], rdi  ; addr
        _x(emit_store_imm, RCX, rec + REC_SIZE, size, 4),    # mov dword [rcx + 24], size
        _x(emit_store_imm, RCX, rec + REC_IS_WRITE, int(is_write), 4),  # mov dword [rcx + 28], w
        _x(emit_load, RSI, RSP, 0, 8),                       # mov rsi, [rsp + 0]   ; _RET_IP_
        _x(emit_store, RCX, rec + REC_RET_IP, RSI, 8),       # mov [rcx + 32], rsi
        "full",
        _x(emit_mem_ri, Ext.ADD, RAX, 0, 1),                 # add qword [rax + 0], 1 ; count
        "ok",
        _x(emit_ret),                                        # ret
    ]


def _assemble(items: list) -> bytes:
    """Bytes, label names (str) and short jumps (mnemonic, label) → code. Two passes."""
    labels, pos = {}, 0
    for item in items:
        if isinstance(item, str):
            labels[item] = pos
        else:
            pos += REL8_JCC_LEN if isinstance(item, tuple) else len(item)
    out = bytearray()
    for item in items:
        if isinstance(item, tuple):
            rel = labels[item[1]] - (len(out) + REL8_JCC_LEN)
            assert is_imm8(rel), item
            emit_jcc8(out, _JUMPS[item[0]], rel)
        elif isinstance(item, bytes):
            out += item
    return bytes(out)


def routine_code(size: int, is_write: bool, report_buffer: int) -> bytes:
    """The machine code of one `__asan_{load,store}<size>`."""
    if size not in SIZES:
        raise CheckError(f"no __asan routine for size {size}: the JIT checks 1, 2, 4 or 8 bytes")
    return _assemble(_range_check(size) + _fast_path(size) + _crossing_check(size)
                     + _last_byte_check() + _report(size, is_write, report_buffer))


@dataclass(frozen=True)
class AsanRoutines:
    """All eight routines laid out from `base`, ready to copy into kernel text."""
    base: int
    code: bytes
    entries: dict                      # (is_write, size) -> absolute address
    lengths: dict                      # (is_write, size) -> bytes of code

    def address(self, is_write: bool, size: int) -> int:
        """Where `call __asan_*` must go; fits `jit.image.Target.asan_address`."""
        try:
            return self.entries[(bool(is_write), size)]
        except KeyError:
            raise CheckError(f"no __asan routine for size {size}") from None

    def name_at(self, addr: int) -> str | None:
        """The routine containing `addr`, for stack traces."""
        for key, start in self.entries.items():
            if start <= addr < start + self.lengths[key]:
                return routine_name(*key)
        return None


def build(base: int, report_buffer: int) -> AsanRoutines:
    """Lay out every routine from `base`; `report_buffer` is the absolute address of the buffer."""
    code, entries, lengths = bytearray(), {}, {}
    for is_write in (False, True):
        for size in SIZES:
            code += b"\xCC" * (-len(code) % ALIGN)
            routine = routine_code(size, is_write, report_buffer)
            entries[(is_write, size)] = base + len(code)
            lengths[(is_write, size)] = len(routine)
            code += routine
    return AsanRoutines(base, bytes(code), entries, lengths)


class InstalledAsan:
    """The routines and their report buffer placed in a machine's kernel text and data.

    `machine` needs `alloc_text(name, code) -> addr` and `data(name, size) -> (addr, view)`
    (checks.machine.Machine). The machine zeroes its data buffers when it resets, so call
    `begin_run()` after each reset and before each run; `records()` afterwards."""

    def __init__(self, machine, capacity: int = 256):
        self.capacity = capacity
        buffer, self.view = machine.data("kasan report buffer", buffer_size(capacity))
        # The code does not depend on where it sits (absolute operands only): lay it out once
        # to learn its bytes, place it, and take the entry points from where it landed.
        base = machine.alloc_text("__asan_routines", build(0, buffer).code)
        self.routines = build(base, buffer)
        self.begin_run()

    def address(self, is_write: bool, size: int) -> int:
        """`Target.asan_address`."""
        return self.routines.address(is_write, size)

    def begin_run(self) -> None:
        reset_buffer(self.view, self.capacity)

    def records(self) -> Records:
        return read_records(self.view)
