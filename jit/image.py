"""`Target` (what the JIT links against) and `Image` (what it produces).

The emulated machine chooses the addresses: where the image will live, where each helper or
kfunc stub is, where the `__asan_{load,store}N` functions are. The JIT only needs them to
encode `call rel32`, which must reach within +-2 GiB, exactly as in the kernel.

Owns: plain data. Must not import unicorn, capstone, or anything from checks/ or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

KASAN_MODES = ("off", "inline", "outline")
KASAN_SHADOW_OFFSET = 0xDFFFFC0000000000     # x86-64 generic KASAN, 4-level paging


@dataclass(frozen=True)
class Target:
    image_base: int
    # (call src, imm) -> absolute address of the stub a `call` instruction goes to.
    # src 0 = helper id, src 2 = kfunc BTF id. Raises JitError for an unknown one.
    call_address: Callable[[int, int], int]
    # (is_write, size) -> address of __asan_{load,store}{size}. Needed unless kasan == "off".
    asan_address: Callable[[bool, int], int] | None = None
    kasan: str = "off"
    # Address of the tail-call dispatcher stub, if the machine supports tail calls.
    tail_call_address: int | None = None
    # Instruction budget: a u64 counter in kernel data (absolute, reachable as sign-extended disp32).
    # Every taken backward jump and every bpf-to-bpf call subtracts the number of BPF slots it may
    # re-execute; when it goes below zero the code jumps to `budget_exhausted_address`.
    budget_address: int | None = None
    budget_exhausted_address: int | None = None
    # callx (uBPF's rule): a register value below 2**32 is a helper id, looked up in a table at
    # this address, `{u64 count; u64 stub[count]}` (0 = no such helper); any other value is an
    # absolute address. None: callx always calls the register as an address.
    helper_table_address: int | None = None
    # Unprivileged program (the verifier's `bpf_map_ptr_unpriv`): before each tail call,
    # do_misc_fixups inserts `if r3 >= max_entries goto out; w3 &= index_mask`, a 64-bit
    # compare. The JIT emits it inside the tail-call sequence (`cmp rdx, max_entries; jae out`,
    # max_entries read from the prog array, zero-extended), so slot indices stay those of the
    # program as loaded; the mask is a no-op once the index is below max_entries. False (the
    # privileged load): only the JIT's own 32-bit index compare, so r3 = 2**32 is index 0.
    tail_call_index_guard: bool = False


@dataclass(frozen=True)
class CheckSite:
    """One KASAN check the JIT emitted before a memory access."""
    insn: int            # slot index of the checked BPF instruction
    ret_offset: int      # image offset just after `call __asan_*` (the kernel's _RET_IP_)
    size: int            # 1, 2, 4 or 8
    is_write: bool
    base_reg: int        # BPF register the address is computed from
    off: int             # displacement added to it
    # Inline mode: image offsets of the fast path's shadow-reading `cmp`s, and of the slow path.
    # A fault on one of those reads (unmapped shadow: a wild or wrapping address) resumes there.
    probe_offsets: tuple[int, ...] = ()
    slow_offset: int | None = None
    # Inline mode: image offset of the checked access (where the fast path falls through to). A
    # fault there resumes once at the slow path: a wild address whose shadow address happens to
    # be mapped memory passes the fast path, and outline mode would have reported it.
    access_offset: int | None = None


@dataclass(frozen=True)
class FuncImage:
    name: str
    start_insn: int      # first slot of the function
    offset: int          # image offset of its first byte (its kallsyms address)
    length: int          # its jited length in bytes, as `+0x../0x<len>` prints it
    stack_depth: int     # bytes of BPF stack, rounded up to 8


@dataclass(frozen=True)
class Image:
    code: bytes
    base: int                          # the address `code` was linked to run at
    insn_offsets: tuple[int, ...]      # image offset where each slot's code starts; one extra entry = end
    funcs: tuple[FuncImage, ...]
    check_sites: tuple[CheckSite, ...] = ()
    kasan: str = "off"

    def insn_at(self, offset: int) -> int:
        """The slot whose code covers image offset `offset` (for faults and reports)."""
        lo, hi = 0, len(self.insn_offsets) - 1
        while lo < hi:                      # last slot whose start <= offset
            mid = (lo + hi + 1) // 2
            if self.insn_offsets[mid] <= offset:
                lo = mid
            else:
                hi = mid - 1
        return lo

    def func_at(self, offset: int) -> FuncImage | None:
        for f in self.funcs:
            if f.offset <= offset < f.offset + f.length:
                return f
        return None
