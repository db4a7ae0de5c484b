"""The emulated x86-64 kernel that runs JIT images under Unicorn.

One `Machine` owns one `Uc`, created once and reused: every run resets only what the previous
run dirtied. Memory follows `checks.layout`: JIT images in the module area (RX), native stubs in
kernel text (RX), bookkeeping slots in kernel data (RW), objects in the direct map (RW), one
VMAP task stack with unmapped guard pages on both sides, and KASAN shadow for the direct map and
vmalloc. Every region is host memory mapped with `mem_map_ptr`, so Python reads and writes it
through memoryviews and copies code with `ctypes.memmove` (no TLB flush, see unicorn-perf.md).

The direct map has two parts: a small fixed area at its start for objects that must sit at a
given address (the interpreter-compatible input buffer of `.data` tests), and above it the
`slab.Heap` every other object comes from (kmalloc caches, redzones, quarantine). The heap's
guard pages (one opening the arena, one after each slab) are made to fault with `mem_protect`
as the heap carves them, so a far overrun is a page fault, as with the kernel's slab layout.

Speed recipe (measured in unicorn-perf.md): UC_TLB_VIRTUAL plus an identity TLB-fill hook that
hands out region permissions; no memory-access hooks; the only hot hook is one UC_HOOK_CODE on
the helper dispatch point; runs are bounded by the JIT's instruction budget and a polling
watchdog thread, never by `count=`.

How a run goes: a trampoline in kernel text loads BPF r1-r5 from data slots and `call`s the
image (through an entry stub that takes the image address only once); the image returns into the
trampoline, which stores rax in a slot, marks the run done and reaches the exit marker, where
emu_start stops. So a normal run needs no register API call at all. Faults are results (`Fault`,
see checks.oops), never exceptions. A return address a helper smashed cannot rerun the program:
unused kernel text is int3 and a second pass through the entry stub hits ud2.

Shadow as KASAN leaves it: the vmalloc shadow is VMALLOC_INVALID except for the task stack; the
shadow of any other kernel address reads as the early shadow page (zero), mapped on demand the
first time a check reads it, so the access itself then faults at its own address.

Owns: regions, TLB fill, code loading, stubs, helper dispatch, the run loop, fault capture.
Must not import github or anything from bot/.
"""
from __future__ import annotations

import bisect
import ctypes
import mmap
import os
import struct
import time
from dataclasses import dataclass
from typing import Callable, Sequence

from unicorn import (UC_ARCH_X86, UC_CTL_IO_WRITE, UC_CTL_TLB_FLUSH, UC_ERR_FETCH_PROT,
                     UC_ERR_FETCH_UNMAPPED, UC_ERR_INSN_INVALID, UC_ERR_READ_PROT,
                     UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_PROT, UC_ERR_WRITE_UNMAPPED, UC_HOOK_CODE,
                     UC_HOOK_INTR, UC_HOOK_MEM_INVALID, UC_HOOK_TLB_FILL, UC_MEM_FETCH,
                     UC_MEM_FETCH_PROT, UC_MEM_FETCH_UNMAPPED, UC_MEM_READ, UC_MEM_READ_PROT,
                     UC_MEM_READ_UNMAPPED, UC_MEM_WRITE, UC_MEM_WRITE_PROT, UC_MEM_WRITE_UNMAPPED,
                     UC_MODE_64, UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_NONE, UC_PROT_READ, UC_PROT_WRITE,
                     UC_TLB_VIRTUAL, Uc, UcError)
from unicorn.x86_const import UC_X86_REG_RIP, UC_X86_REG_RSP

from checks import layout
from checks.errors import CheckError
from checks.oops import Fault, Location, classify_fault, classify_trap
from checks.shadow import PAGE_REDZONE, VMALLOC_INVALID, ShadowMap, ShadowView
from checks.slab import Heap, SlabObject
from checks.watchdog import Watchdog
from jit.errors import JitError
from jit.image import Image, Target

MASK64 = 0xFFFFFFFFFFFFFFFF
RX, RW = UC_PROT_READ | UC_PROT_EXEC, UC_PROT_READ | UC_PROT_WRITE

# Task stack: THREAD_SIZE of a KASAN kernel (32 KiB), between unmapped guard pages.
STACK_SIZE = 0x8000
STACK_BASE = layout.VMALLOC + 0x10000
STACK_TOP = STACK_BASE + STACK_SIZE
ENTRY_RSP = STACK_TOP - 0x100        # like the kernel, the program starts below some frames

# Kernel text: trampoline and stops first, then one 16-byte stub per helper, then free text.
_TEXT_HELPERS = 0x1000
_HELPER_STUB = 16
_MAX_HELPERS = 0x1000
_TEXT_FREE = _TEXT_HELPERS + _MAX_HELPERS * _HELPER_STUB
# Kernel data slots (offsets into KERNEL_DATA), then free data.
_D_ARGS, _D_ENTRY, _D_R0, _D_STATUS, _D_BUDGET = 0x00, 0x28, 0x30, 0x38, 0x40
_D_TARGET = 0x48                     # the image entry, taken (and zeroed) by the entry stub
_D_CALL = 0x80                       # helper call: index, r1..r5, rsp, return value
_D_SERVED = _D_CALL + 4              # set once Python served the call at the dispatch point
# callx's helper table (Target.helper_table_address): u64 count, then u64 stub address per id.
_D_HELPER_TABLE = 0x800
HELPER_TABLE_COUNT = (0x1000 - _D_HELPER_TABLE) // 8 - 1
_DATA_FREE = 0x1000
# Direct-map bytes below the heap for objects placed at a fixed address (`alloc(at=...)`).
FIXED_AREA = 0x100000
_DONE, _OUT_OF_BUDGET = 1, 2

# Shadow pages mapped on demand (`_zero_shadow_for`): at most this many a run, and in all.
ZERO_SHADOW_PER_RUN, ZERO_SHADOW_PAGES = 16, 1024
# Inline KASAN fast-path shadow reads that fault and resume at their slow path: at most this many a run.
PROBE_FAULTS_PER_RUN = 4096
_SHADOW_SPACE = (layout.KASAN_SHADOW_START, layout.shadow(MASK64) + 1)
DEFAULT_INSN_LIMIT = 1_000_000
DEFAULT_TIME_LIMIT = 3.0             # seconds; a backstop behind the instruction budget

HelperFn = Callable[["Machine", int, int, int, int, int], int]


class StopRun(Exception):
    """Raised by a helper to end the program at once with BPF r0 = `r0` (e.g. uBPF's unwind)."""

    def __init__(self, r0: int):
        super().__init__(f"program stopped by a helper with r0={r0:#x}")
        self.r0 = r0 & MASK64


class HelperError(Exception):
    """Raised by a helper to end the run with an error result (a bad pointer, an unknown helper);
    `run` fills in the calling instruction."""


class HelperFault(Exception):
    """Raised by a helper whose memory access on the program's behalf hit unmapped memory: the
    kernel's C helper would take a page fault there, so the run ends in an oops whose RIP is
    `symbol` (the helper)."""

    def __init__(self, access: str, address: int, size: int, symbol: str):
        super().__init__(f"{symbol}: {access} of {size} bytes at {address & MASK64:#x} faults")
        self.access, self.address, self.size, self.symbol = access, address & MASK64, size, symbol


@dataclass(frozen=True)
class MachineRun:
    """What one run of an image produced."""
    r0: int | None               # BPF r0 (rax) at exit; None when the run did not return
    insns: int                   # executed BPF slots, an upper bound (see `Machine.run`)
    fault: Fault | None = None   # the oops, when the program crashed the emulated kernel
    error: str | None = None     # why the run stopped early without an oops (a bound, a helper)
    error_insn: int | None = None  # BPF slot the fault or helper error happened at, when known
    elapsed: float = 0.0         # wall seconds inside emu_start

    @property
    def ok(self) -> bool:
        return self.fault is None and self.error is None


@dataclass(frozen=True)
class Region:
    """One mapping: a labelled, host-backed range of guest memory."""
    name: str
    start: int
    size: int
    perms: int
    host: int                    # host address of the backing memory
    view: memoryview

    @property
    def end(self) -> int:
        return self.start + self.size

    def offset(self, addr: int, size: int = 1) -> int | None:
        """Offset of [addr, addr+size) inside this region, or None if it is not wholly inside."""
        off = addr - self.start
        return off if 0 <= off and off + size <= self.size else None


@dataclass(frozen=True)
class Obj:
    """An object in the direct map, allocated for the current run."""
    name: str
    addr: int
    size: int


def _riprel(at: int, opcode: bytes, target: int, tail: bytes = b"") -> bytes:
    """`opcode disp32 tail` with disp32 relative to the end of the instruction at `at`."""
    end = at + len(opcode) + 4 + len(tail)
    return opcode + struct.pack("<i", target - end) + tail


class _Text:
    """Appends hand-assembled instructions at a known guest address."""

    def __init__(self, at: int):
        self.at, self.code = at, bytearray()

    def emit(self, raw: bytes) -> int:
        where = self.at + len(self.code)
        self.code += raw
        return where

    def riprel(self, opcode: bytes, target: int, tail: bytes = b"") -> int:
        return self.emit(_riprel(self.at + len(self.code), opcode, target, tail))


class Machine:
    """The emulated kernel. Create once per process (`shared_machine()`), reuse for every run.

    Per run: `reset()`, then `alloc()` the objects the program gets, `load(image)`, `run(...)`.
    Other layers extend it with `register_helper`, `alloc_text`, `data` and `shadow_view`."""

    def __init__(self, *, watchdog_interval: float = 0.01):
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self.regions: list[Region] = []
        self._buffers: list[mmap.mmap] = []
        self.code = self._map("bpf_jit images", layout.MODULES, layout.MODULES_SIZE, RX)
        self.text = self._map("kernel text", layout.KERNEL_TEXT, layout.KERNEL_TEXT_SIZE, RX)
        self.kdata = self._map("kernel data", layout.KERNEL_DATA, layout.KERNEL_DATA_SIZE, RW)
        self.heap = self._map("direct map", layout.DIRECT_MAP, layout.DIRECT_MAP_SIZE, RW)
        self.stack = self._map("task stack", STACK_BASE, STACK_SIZE, RW)
        self.heap_shadow = self._map("direct map shadow", layout.shadow(layout.DIRECT_MAP),
                                     layout.DIRECT_MAP_SIZE >> 3, RW)
        self.vmalloc_shadow = self._map("vmalloc shadow", layout.shadow(layout.VMALLOC),
                                        layout.VMALLOC_SIZE >> 3, RW)
        self._helpers: dict[tuple[int, int], int] = {}        # (src, imm) -> stub index
        self._native: dict[tuple[int, int], int] = {}         # (src, imm) -> native code address
        self._helper_fns: list[tuple[str, HelperFn | None]] = []
        self._text_names: dict[str, tuple[int, bytes]] = {}
        self._text_top = _TEXT_FREE
        self._data_names: dict[str, tuple[int, int]] = {}
        self._data_top = _DATA_FREE
        self.objects: list[Obj] = []                          # fixed-area objects of this run
        self._fixed_top = 0
        self._dirty_shadow: list[tuple[memoryview, int, int]] = []
        self._loaded: Image | None = None
        # Built from the loaded image on its first fault (`_resume_tables`): fast-path shadow cmp ->
        # slow path, and inline access [start, end) -> slow path.
        self._resume: tuple[dict[int, int], list[tuple[int, int, int]]] | None = None
        self._last_slow: int | None = None                   # slow path a fault last resumed at
        self._loaded_len = 0
        self._fault_access: tuple[int, int, int] | None = None
        self._guards: list[tuple[int, int]] = []              # sorted, disjoint
        self._trap: int | None = None
        self._zero_shadow: set[int] = set()                  # early-shadow pages mapped so far
        self.fixed_shadow = ShadowView(layout.DIRECT_MAP, self.heap_shadow.view[:FIXED_AREA >> 3])
        self.fixed_shadow.fill(PAGE_REDZONE)
        self.slab = Heap(ShadowView(layout.DIRECT_MAP + FIXED_AREA,
                                    self.heap_shadow.view[FIXED_AREA >> 3:]),
                         on_new_slab=self._on_new_slab)
        for addr, size in self.slab.guard_ranges():
            self.guard(addr, size)
        self.shadow = ShadowMap([self.fixed_shadow, self.slab.shadow,
                                 ShadowView(layout.VMALLOC, self.vmalloc_shadow.view)])
        ctypes.memset(self.text.host, 0xCC, self.text.size)   # stray jumps into text trap
        self._vmalloc_pristine = _vmalloc_shadow()
        self.vmalloc_shadow.view[:] = self._vmalloc_pristine
        self._install_stubs()
        self._install_entry()
        self._init_helper_table()
        self._install_hooks()
        self.uc.reg_write(UC_X86_REG_RSP, ENTRY_RSP)
        self.uc.reg_write(UC_X86_REG_RIP, self.entry)
        self._context = self.uc.context_save()
        self._watchdog = Watchdog(self.uc.emu_stop, watchdog_interval)

    # ---------------------------------------------------------------- memory map

    def _map(self, name: str, start: int, size: int, perms: int) -> Region:
        buf = mmap.mmap(-1, size)               # anonymous: lazily zero, no RSS until touched
        host = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        self.uc.mem_map_ptr(start, size, perms, host)
        self._buffers.append(buf)
        region = Region(name, start, size, perms, host, memoryview(buf))
        self.regions.append(region)
        return region

    def region_at(self, addr: int) -> Region | None:
        """The mapped region holding `addr` (None in a hole or a guard page)."""
        for r in self.regions:
            if r.start <= addr < r.end:
                return None if self._guards and self._in_guard(addr) else r
        return None

    def _in_guard(self, addr: int) -> bool:
        i = bisect.bisect_right(self._guards, (addr, MASK64 + 1)) - 1   # last guard starting <= addr
        return i >= 0 and addr < self._guards[i][1]

    def guard(self, addr: int, size: int) -> None:
        """Make [addr, addr+size) of the direct map fault like unmapped memory (a slab's guard
        page), for good. Page-aligned; each costs a region split, so the heap's guards (one per
        slab, and slabs are kept across runs) stay in the tens."""
        if addr % layout.PAGE or size % layout.PAGE or size <= 0 \
                or self.heap.offset(addr, size) is None:
            raise CheckError(f"guard {addr:#x}+{size:#x}: must be whole pages of the direct map")
        if any(self._in_guard(a) for a in range(addr, addr + size, layout.PAGE)):
            return
        self.uc.mem_protect(addr, size, UC_PROT_NONE)
        bisect.insort(self._guards, (addr, addr + size))

    def _on_new_slab(self, base: int, size: int) -> None:
        """The heap carved a slab: its memory is mapped already, its guard page must fault."""
        self.guard(base + size, layout.PAGE)

    def _tlb_fill(self, uc, vaddr, access, entry, _user) -> bool:
        # Identity translation with the region's own permissions plus nothing else, so stores
        # run at TCG speed; an unmapped page gets every permission so Unicorn's region check
        # reports the precise *_UNMAPPED error (a False here would only give UC_ERR_EXCEPTION).
        entry.paddr = vaddr
        region = self.region_at(vaddr)
        entry.perms = UC_PROT_ALL if region is None else region.perms | _ACCESS_PERM.get(access, 0)
        return True

    # ---------------------------------------------------------------- stubs and hooks

    def _install_stubs(self) -> None:
        """The run trampoline, the budget stop and the helper dispatcher, in kernel text."""
        slot = lambda off: layout.KERNEL_DATA + off          # noqa: E731 (a one-line address map)
        t = _Text(layout.KERNEL_TEXT)
        self.entry = t.at
        for i, opcode in enumerate(_LOAD_ARG):                # mov rdi/rsi/rdx/rcx/r8, [args+8i]
            t.riprel(opcode, slot(_D_ARGS + 8 * i))
        t.riprel(b"\xff\x15", slot(_D_ENTRY))                # call [entry]
        t.riprel(b"\x48\x89\x05", slot(_D_R0))               # mov [r0], rax
        t.riprel(b"\xc6\x05", slot(_D_STATUS), bytes([_DONE]))   # mov byte [status], DONE
        self.exit_marker = t.emit(b"\xcc")                    # int3: emu_start stops before it
        self.budget_stop = t.riprel(b"\xc6\x05", slot(_D_STATUS), bytes([_OUT_OF_BUDGET]))
        t.emit(b"\xe9" + struct.pack("<i", self.exit_marker - (t.at + len(t.code) + 5)))
        # Helper dispatch: each helper stub is `mov eax, index; jmp dispatch`; the dispatcher
        # spills the arguments to data slots, so the one Python hook reads memory, not registers.
        self._dispatch = t.at + len(t.code)
        t.riprel(b"\x48\x89\x05", slot(_D_CALL))             # mov [call.index], rax (clears .served)
        for i, opcode in enumerate(_STORE_ARG):               # mov [call.r1+8i], rdi/.../r8/rsp
            t.riprel(opcode, slot(_D_CALL + 8 + 8 * i))
        self._dispatch_hook = t.emit(b"\x90")                 # nop: the Python handler runs here
        t.riprel(b"\x48\x8b\x05", slot(_D_CALL + 0x40))      # mov rax, [call.ret]
        t.emit(b"\xc3")                                       # ret
        assert len(t.code) <= _TEXT_HELPERS
        self.text.view[:len(t.code)] = t.code

    def _install_entry(self) -> None:
        """The trampoline calls the image through a stub that takes the entry address once:
        `xchg` leaves 0 in its slot, so coming back (a helper smashed the program's return
        address and `ret` landed in the trampoline) ends in a ud2 oops, not in a rerun that
        spins until the time limit."""
        smashed = self.alloc_text("corrupted_return_address", b"\x0f\x0b")    # ud2
        t = _Text(self.text.start + ((self._text_top + 15) & ~15))
        t.emit(b"\x45\x31\xdb")                                             # xor r11d, r11d
        t.riprel(b"\x4c\x87\x1d", self.kdata.start + _D_TARGET)             # xchg r11, [target]
        t.emit(b"\x4d\x85\xdb")                                             # test r11, r11
        t.riprel(b"\x0f\x84", smashed)                                        # jz smashed
        t.emit(b"\x41\xff\xe3")                                             # jmp r11
        self._enter = self.alloc_text("bpf_prog_entry", bytes(t.code))

    def _install_hooks(self) -> None:
        self.uc.hook_add(UC_HOOK_TLB_FILL, self._tlb_fill)
        self.uc.hook_add(UC_HOOK_CODE, self._on_helper, begin=self._dispatch_hook,
                         end=self._dispatch_hook)
        self.uc.hook_add(UC_HOOK_INTR, self._on_trap)

    def _on_bad_access(self, uc, access, address, size, value, _user) -> bool:
        self._fault_access = (access, address & MASK64, size)
        return False

    def _replay_fault(self, rip: int) -> None:
        """Learn the exact address of the access that faulted at `rip`.

        A MEM_INVALID hook would give it for free, but merely installing one makes every TLB
        entry filled meanwhile take the slow path (measured: loads and stores 4-5x slower). So
        the hook lives only while the faulting instruction is executed once more (x86 faults
        are precise: nothing was changed), and the TLB and translations it touched are dropped."""
        self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)       # so the access misses again
        hook = self.uc.hook_add(UC_HOOK_MEM_INVALID, self._on_bad_access)
        try:
            self.uc.emu_start(rip, self.exit_marker, count=1)
        except UcError:
            pass
        finally:
            self.uc.hook_del(hook)
            self.uc.ctl(UC_CTL_TLB_FLUSH, UC_CTL_IO_WRITE)
            self.uc.ctl_flush_tb()

    def _on_trap(self, uc, intno, _user) -> None:
        # With an INTR hook Unicorn would resume after the exception (and loop on #DE): stop.
        self._trap = intno
        uc.emu_stop()

    def _on_helper(self, uc, address, size, _user) -> None:
        index, r1, r2, r3, r4, r5 = _CALL_SLOTS.unpack_from(self.kdata.view, _D_CALL)
        name, fn = self._helper_fns[index]
        if fn is None:
            raise HelperError(f"call to unknown {name}")
        ret = fn(self, r1, r2, r3, r4, r5)
        struct.pack_into("<Q", self.kdata.view, _D_CALL + 0x40, ret & MASK64)
        self.kdata.view[_D_SERVED] = 1

    def caller_insn(self) -> int | None:
        """The BPF slot of the `call` that entered the helper being served (for its messages)."""
        return self.insn_of_return(self.caller_return())

    def caller_return(self) -> int:
        """The return address of the helper call being served (in the image for a BPF `call`)."""
        rsp = struct.unpack_from("<Q", self.kdata.view, _D_CALL + 0x30)[0]
        return self.read_u64(rsp) if self.stack.offset(rsp, 8) is not None else 0

    def serving(self) -> str:
        """The name of the helper being served (the last one called)."""
        index = struct.unpack_from("<I", self.kdata.view, _D_CALL)[0]
        return self._helper_fns[index][0] if index < len(self._helper_fns) else "?"

    def _helper_fault(self, crash: HelperFault, image: Image) -> Fault:
        stub = self._helper_stub(struct.unpack_from("<I", self.kdata.view, _D_CALL)[0])
        where = Location(crash.symbol, self.caller_insn())
        return classify_fault(crash.access, crash.address, crash.size, stub, where,
                              present=self.region_at(crash.address) is not None,
                              kasan=image.kasan != "off", stack=(STACK_BASE, STACK_TOP))

    # ---------------------------------------------------------------- extension API

    def register_helper(self, imm: int, fn: HelperFn | None, *, src: int = 0, name: str = "") -> int:
        """Serve calls to helper `imm` (src 0) or kfunc BTF id `imm` (src 2) with
        `fn(machine, r1, r2, r3, r4, r5) -> r0`. Returns the stub address the JIT calls.
        `fn` may raise `StopRun(r0)` to end the program; any other exception ends the run
        and is raised again from `run`. Re-registering only swaps the handler (cheap)."""
        label = name or (f"helper#{imm}" if src == 0 else f"kfunc#{imm}")
        key = (src, imm)
        if key in self._native:
            raise CheckError(f"{label} is native code in this machine; it has no Python handler")
        if key in self._helpers:
            self._helper_fns[self._helpers[key]] = (label, fn)
            return self._helper_stub(self._helpers[key])
        if len(self._helper_fns) >= _MAX_HELPERS:
            raise CheckError(f"too many helpers (at most {_MAX_HELPERS})")
        index = len(self._helper_fns)
        self._helpers[key] = index
        self._helper_fns.append((label, fn))
        stub = self._helper_stub(index)
        off = stub - self.text.start
        jmp = struct.pack("<i", self._dispatch - (stub + 10))
        self.text.view[off:off + 10] = b"\xb8" + struct.pack("<I", index) + b"\xe9" + jmp
        self.uc.ctl_remove_cache(stub, stub + _HELPER_STUB)
        self._set_table_entry(key, stub)
        return stub

    def register_native(self, imm: int, code: bytes, *, src: int = 0, name: str) -> int:
        """Serve helper `imm` with native x86 `code` placed in kernel text (for helpers that call
        back into BPF, which a Python handler cannot: Unicorn is not re-entrant). Its address."""
        key = (src, imm)
        if key in self._helpers:
            raise CheckError(f"{name}: helper #{imm} already has a Python handler")
        addr = self.alloc_text(name, code)
        self._native[key] = addr
        self._set_table_entry(key, addr)
        return addr

    def has_helper(self, src: int, imm: int) -> bool:
        return (src, imm) in self._helpers or (src, imm) in self._native

    def is_native(self, src: int, imm: int) -> bool:
        return (src, imm) in self._native

    def _init_helper_table(self) -> None:
        struct.pack_into("<Q", self.kdata.view, _D_HELPER_TABLE, HELPER_TABLE_COUNT)

    def _set_table_entry(self, key: tuple[int, int], addr: int) -> None:
        """callx with a helper id finds the helper's code here (see `Target.helper_table_address`)."""
        src, imm = key
        if src == 0 and 0 <= imm < HELPER_TABLE_COUNT:
            struct.pack_into("<Q", self.kdata.view, _D_HELPER_TABLE + 8 + 8 * imm, addr)

    def _helper_stub(self, index: int) -> int:
        return self.text.start + _TEXT_HELPERS + index * _HELPER_STUB

    def call_address(self, src: int, imm: int) -> int:
        """`Target.call_address`: the stub for a registered helper or kfunc."""
        native = self._native.get((src, imm))
        if native is not None:
            return native
        index = self._helpers.get((src, imm))
        if index is None:
            kind = {0: "helper", 2: "kfunc"}.get(src, f"call src={src}")
            raise JitError(f"unknown {kind} #{imm}: the emulated kernel does not provide it")
        return self._helper_stub(index)

    def alloc_text(self, name: str, code: bytes) -> int:
        """Place native code (e.g. `__asan_load8`) in kernel text, once per name; its address."""
        if name in self._text_names:
            addr, old = self._text_names[name]
            if old != code:
                raise CheckError(f"kernel text {name!r} is already placed with other code")
            return addr
        off = (self._text_top + 15) & ~15
        if off + len(code) > self.text.size:
            raise CheckError(f"kernel text is full: no room for {name!r} ({len(code)} bytes)")
        self.text.view[off:off + len(code)] = code
        self._text_top = off + len(code)
        addr = self.text.start + off
        self.uc.ctl_remove_cache(addr, addr + len(code))
        self._text_names[name] = (addr, bytes(code))
        return addr

    def data(self, name: str, size: int) -> tuple[int, memoryview]:
        """A kernel-data buffer (e.g. a KASAN report ring), once per name; zeroed by `reset`."""
        if name in self._data_names:
            addr, old = self._data_names[name]
            if old != size:
                raise CheckError(f"kernel data {name!r} already exists with size {old}")
        else:
            off = (self._data_top + 63) & ~63
            if off + size > self.kdata.size:
                raise CheckError(f"kernel data is full: no room for {name!r} ({size} bytes)")
            self._data_top = off + size
            addr = self.kdata.start + off
            self._data_names[name] = (addr, size)
        off = addr - self.kdata.start
        return addr, self.kdata.view[off:off + size]

    def shadow_view(self, addr: int, size: int) -> memoryview:
        """The shadow bytes of [addr, addr+size) (one per 8-byte granule), writable, for
        poisoning. `reset` restores them: stack shadow to zero, heap shadow to the heap's own
        values (the heap re-poisons every slab that held an object)."""
        first, last = layout.shadow(addr), layout.shadow(addr + size - 1) + 1
        for region in (self.heap_shadow, self.vmalloc_shadow):
            off = region.offset(first, last - first)
            if off is not None:
                if region is self.vmalloc_shadow:
                    self._dirty_shadow.append((region.view, off, last - first))
                return region.view[off:off + last - first]
        raise CheckError(f"no shadow memory for {addr:#x}+{size:#x}: only the direct map and "
                         "vmalloc have shadow")

    def alloc(self, name: str, size: int, *, at: int | None = None,
              stricter: str = "") -> tuple[int, memoryview]:
        """A zeroed object for this run; `reset` frees it. Returns (address, view).

        Without `at` it is `kmalloc(size)` from the slab heap: unpoisoned, redzone after it,
        labelled `name` in reports (`stricter`: see `SlabObject.stricter`). With `at` it is
        placed at that address of the fixed area below the heap (above every fixed object so
        far), its shadow unpoisoned and the rest of the area left as redzone."""
        if at is None:
            obj = self.slab.kmalloc(size, name, stricter=stricter)
            off = obj.addr - self.heap.start
            ctypes.memset(self.heap.host + off, 0, obj.object_size)
            return obj.addr, self.heap.view[off:off + size]
        off = at - self.heap.start
        if not self._fixed_top <= off or off + size > FIXED_AREA or at % 8:
            raise CheckError(f"cannot place {name!r} ({size} bytes) at {at:#x}: the fixed area is "
                             f"[{self.heap.start + self._fixed_top:#x}, "
                             f"{self.heap.start + FIXED_AREA:#x}), 8-aligned")
        self._fixed_top = off + size
        ctypes.memset(self.heap.host + off, 0, size)
        if size:
            self.fixed_shadow.unpoison(at, size)
        self.objects.append(Obj(name, at, size))
        return at, self.heap.view[off:off + size]

    def find_object(self, addr: int) -> SlabObject | None:
        """The object whose slot holds `addr`, as reports describe it (`slab.Heap.find`)."""
        if addr < self.heap.start + FIXED_AREA:
            obj = next((o for o in self.objects if o.addr <= addr < o.addr + max(o.size, 1)), None)
            return obj and SlabObject(obj.addr, obj.size, obj.size, None, obj.name)
        return self.slab.find(addr)

    def object_at(self, addr: int) -> Obj | None:
        """The live object holding `addr` (its own bytes only, not its redzone)."""
        obj = self.find_object(addr)
        if obj is None or not obj.allocated or not obj.addr <= addr < obj.addr + max(obj.size, 1):
            return None
        return Obj(obj.label, obj.addr, obj.size)

    def read(self, addr: int, size: int) -> bytes:
        """Guest memory, for helpers; CheckError when it is not mapped."""
        region = self.region_at(addr)
        off = region.offset(addr, size) if region else None
        if off is None:
            raise CheckError(f"helper access to unmapped memory {addr & MASK64:#x}+{size}")
        return bytes(region.view[off:off + size])

    def write(self, addr: int, data: bytes) -> None:
        region = self.region_at(addr)
        off = region.offset(addr, len(data)) if region else None
        if off is None or not region.perms & UC_PROT_WRITE:
            raise CheckError(f"helper write to unwritable memory {addr & MASK64:#x}+{len(data)}")
        region.view[off:off + len(data)] = data

    def accessible(self, addr: int, size: int, *, write: bool = False) -> int:
        """How many bytes from `addr` (up to `size`) can be read (or written) before the first
        unmapped, guard or read-only byte: what a C memcpy gets through before it faults."""
        region = self.region_at(addr)
        if region is None or (write and not region.perms & UC_PROT_WRITE):
            return 0
        i = bisect.bisect_right(self._guards, (addr, MASK64 + 1))
        stop = min(region.end, self._guards[i][0] if i < len(self._guards) else region.end)
        return max(min(size, stop - addr), 0)

    def read_u64(self, addr: int) -> int:
        return struct.unpack("<Q", self.read(addr, 8))[0]

    # ---------------------------------------------------------------- per run

    def target(self, *, kasan: str = "off", asan_address=None, tail_calls: bool = False,
               unpriv: bool = False) -> Target:
        """What the JIT links against on this machine. `tail_calls`: compile bpf_tail_call
        inline (the machine's prog arrays use jit/tail_call.py's layout). `unpriv`: with the
        verifier's unprivileged tail-call index guard (`Target.tail_call_index_guard`)."""
        return Target(image_base=self.code.start, call_address=self.call_address,
                      asan_address=asan_address, kasan=kasan,
                      tail_call_address=self._tail_call_marker() if tail_calls else None,
                      budget_address=self.kdata.start + _D_BUDGET,
                      budget_exhausted_address=self.budget_stop,
                      helper_table_address=self.kdata.start + _D_HELPER_TABLE,
                      tail_call_index_guard=unpriv)

    def _tail_call_marker(self) -> int:
        # Inline tail calls never call bpf_tail_call; the address only says "supported" and names
        # the helper should anything ever jump there (int3: a clear trap).
        return self.alloc_text("bpf_tail_call", b"\xcc")

    def reset(self) -> None:
        """Forget the previous run: free its objects and zero the memory and shadow it could
        have dirtied (the slabs it used, fixed objects, the whole task stack, the stack's
        shadow, kernel-data buffers). Heap shadow goes back to the heap's own poison values."""
        for base, size in self._used_slabs():
            ctypes.memset(self.heap.host + base - self.heap.start, 0, size)
        self.slab.reset()
        ctypes.memset(self.heap.host, 0, self._fixed_top)
        if self._fixed_top:
            self.fixed_shadow.poison(self.heap.start, (self._fixed_top + 7) & ~7, PAGE_REDZONE)
        ctypes.memset(self.stack.host, 0, STACK_SIZE)
        ctypes.memset(self.vmalloc_shadow.host + ((STACK_BASE - layout.VMALLOC) >> 3), 0,
                      STACK_SIZE >> 3)
        for view, off, size in self._dirty_shadow:          # only vmalloc shadow is listed
            view[off:off + size] = self._vmalloc_pristine[off:off + size]
        for addr, size in self._data_names.values():
            ctypes.memset(self.kdata.host + addr - self.kdata.start, 0, size)
        self._dirty_shadow.clear()
        self.objects.clear()
        self._fixed_top = 0

    def _used_slabs(self) -> list[tuple[int, int]]:
        """(base, size) of every slab holding an object of this run."""
        slabs = self.slab.mapped_ranges()
        starts = [base for base, _ in slabs]
        used = {bisect.bisect_right(starts, obj.addr) - 1 for obj in self.slab.objects()}
        return [slabs[i] for i in sorted(used) if i >= 0]

    def load(self, image: Image) -> None:
        """Copy `image` to its link address (a no-op if it is already there)."""
        if image is self._loaded:
            return
        if image.base != self.code.start:
            raise CheckError(f"image linked at {image.base:#x}, but this machine loads JIT images "
                             f"at {self.code.start:#x} (compile with machine.target())")
        size = len(image.code)
        if size > self.code.size:
            raise CheckError(f"JIT image of {size} bytes does not fit the module area")
        ctypes.memmove(self.code.host, image.code, size)
        # Drop stale translations of the old and the new code (unicorn-perf.md, section 7).
        self.uc.ctl_remove_cache(self.code.start, self.code.start + max(size, self._loaded_len, 1))
        self._loaded, self._loaded_len = image, size
        self._resume = None

    def run(self, image: Image, args: tuple[int, ...] = (), *, insn_limit: int = DEFAULT_INSN_LIMIT,
            time_limit: float = DEFAULT_TIME_LIMIT, tag: str | Sequence[str] = "") -> MachineRun:
        """Run the loaded `image` from its first function with BPF r1.. = `args`. `tag`: the
        program tag oopses name functions by (one for all, or one per `image.funcs` entry).

        `insns` is an upper bound of executed BPF slots: the budget the JIT's back-edge and call
        counters consumed, plus the number of slots (the straight-line part run at most once per
        budgeted pass). Stops: the instruction budget ("instruction limit exceeded (N)"), the
        wall-time watchdog, a fault (an oops in `fault`). Helper exceptions are raised here."""
        self.load(image)
        view = self.kdata.view
        _ENTRY_SLOTS.pack_into(view, _D_ARGS, *_five(args), self._enter, 0, 0, insn_limit)
        struct.pack_into("<Q", view, _D_TARGET,
                         image.base + image.funcs[0].offset if image.funcs else image.base)
        self._fault_access = self._trap = None
        self.uc.context_restore(self._context)
        started = time.perf_counter()
        crash = self._emulate(self.entry, time_limit)
        zero_pages = probe_faults = 0
        self._last_slow = None
        while True:
            resume = self._probe_slow_path(crash) if probe_faults < PROBE_FAULTS_PER_RUN else None
            if resume is not None:
                probe_faults += 1
            elif zero_pages < ZERO_SHADOW_PER_RUN and self._zero_shadow_for(crash):
                zero_pages += 1
                resume = self.uc.reg_read(UC_X86_REG_RIP)
            else:
                break
            crash = self._emulate(resume, time_limit)
        elapsed = time.perf_counter() - started
        r0, status, remaining = _RESULT_SLOTS.unpack_from(view, _D_R0)
        used = max(insn_limit - remaining, 0) + len(image.insn_offsets) - 1
        if status == _DONE:
            return MachineRun(r0, used, elapsed=elapsed)
        if status == _OUT_OF_BUDGET:
            return MachineRun(None, used, error=f"instruction limit exceeded ({insn_limit})",
                              elapsed=elapsed)
        if isinstance(crash, StopRun):
            return MachineRun(crash.r0, used, elapsed=elapsed)
        if isinstance(crash, HelperFault):
            fault = self._helper_fault(crash, image)
            return MachineRun(None, used, fault=fault, error_insn=fault.insn, elapsed=elapsed)
        if isinstance(crash, HelperError):
            return MachineRun(None, used, error=str(crash), error_insn=self.caller_insn(),
                              elapsed=elapsed)
        if crash == "timeout":
            return MachineRun(None, used, elapsed=elapsed,
                              error=f"time limit exceeded ({time_limit:g} s)")
        fault = self._fault(crash, image, tag)
        return MachineRun(None, used, fault=fault, error_insn=fault.insn, elapsed=elapsed)

    def _emulate(self, begin: int, time_limit: float):
        """emu_start until the exit marker; returns None, "timeout", a StopRun or a UcError.
        A spurious watchdog stop meant for an earlier run resumes where it stopped."""
        while True:
            serial = self._watchdog.arm(time_limit)
            try:
                self.uc.emu_start(begin, self.exit_marker)
            except UcError as e:
                return e
            except (StopRun, HelperError, HelperFault) as e:
                return e
            finally:
                self._watchdog.disarm()
            if self._trap is not None or self.kdata.view[_D_STATUS]:
                return None
            if self._watchdog.fired == serial:
                return "timeout"
            begin = self.uc.reg_read(UC_X86_REG_RIP)
            if begin == self._dispatch_hook and self.kdata.view[_D_SERVED]:
                begin += 1                    # stopped right after the hook: never serve twice
            if begin == self.exit_marker:     # jumped there past the trampoline: `run` reports it
                return None

    def _probe_slow_path(self, crash) -> int | None:
        """After a read fault on an inline KASAN fast path's shadow `cmp` (the shadow of a wild or
        wrapping address is unmapped): the address of that site's slow path, which recomputes the
        address from the intact registers and calls `__asan_*` exactly as outline mode does."""
        if not (isinstance(crash, UcError) and crash.errno in _ACCESS_ERRORS):
            return None
        rip = self.uc.reg_read(UC_X86_REG_RIP)
        probes, accesses = self._resume_tables()
        slow = probes.get(rip)
        if slow is None and crash.errno not in (UC_ERR_FETCH_UNMAPPED, UC_ERR_FETCH_PROT):
            # The checked access itself faulted: a wild address whose shadow address is mapped
            # memory reading zero passed the fast path. Its slow path runs once, so `__asan_*`
            # reports it as in outline mode; the access then faults again, for real.
            at = bisect.bisect_right(accesses, (rip, MASK64, MASK64)) - 1
            if at >= 0 and rip < accesses[at][1] and accesses[at][2] != self._last_slow:
                slow = accesses[at][2]
        if slow is not None:
            self._last_slow = slow
        return slow

    def _resume_tables(self) -> tuple[dict[int, int], list[tuple[int, int, int]]]:
        """Where a fault inside an inline KASAN site resumes; built only once an image faults."""
        if self._resume is None:
            image = self._loaded
            sites = [s for s in image.check_sites if s.slow_offset is not None]
            probes = {image.base + p: image.base + s.slow_offset for s in sites for p in s.probe_offsets}
            accesses = sorted((image.base + s.access_offset, image.base + image.insn_offsets[s.insn + 1],
                               image.base + s.slow_offset) for s in sites if s.access_offset is not None)
            self._resume = (probes, accesses)
        return self._resume

    def _zero_shadow_for(self, crash) -> bool:
        """After a read fault: if it was a KASAN check reading shadow the emulator does not map
        (the shadow of a kernel address outside our regions), map a zero page there, as the
        kernel's early shadow page reads, so the check passes and the access itself faults at
        its own address. True when the run can resume."""
        if not (isinstance(crash, UcError) and crash.errno == UC_ERR_READ_UNMAPPED):
            return False
        if len(self._zero_shadow) >= ZERO_SHADOW_PAGES:
            return False
        self._fault_access = None
        self._replay_fault(self.uc.reg_read(UC_X86_REG_RIP))
        address = self._fault_access[1] if self._fault_access else 0
        page = address & ~(layout.PAGE - 1)
        if not _SHADOW_SPACE[0] <= address < _SHADOW_SPACE[1] or page in self._zero_shadow:
            return False
        self.uc.mem_map(page, layout.PAGE, UC_PROT_READ)
        self._zero_shadow.add(page)
        self._fault_access = None
        return True

    def _fault(self, crash, image: Image, tag: str) -> Fault:
        rip = self.uc.reg_read(UC_X86_REG_RIP)
        rsp = self.uc.reg_read(UC_X86_REG_RSP)
        where = self.locate(rip, image, tag, rsp)
        if self._trap is not None:
            return classify_trap(self._trap, rip, where, kasan=image.kasan != "off")
        code = crash.errno if isinstance(crash, UcError) else None
        if code in _ACCESS_ERRORS:
            self._replay_fault(rip)
        if self._fault_access is None:
            return classify_trap(6 if code == UC_ERR_INSN_INVALID else -1, rip, where,
                                 kasan=image.kasan != "off", detail=str(crash))
        access, address, size = self._fault_access
        mapped = self.region_at(address)
        return classify_fault(_ACCESS_KIND[access], address, size, rip, where,
                              present=mapped is not None, kasan=image.kasan != "off",
                              stack=(STACK_BASE, STACK_TOP))

    # ---------------------------------------------------------------- symbols

    def insn_of_return(self, ret: int) -> int | None:
        """The BPF slot of the `call` whose return address is `ret`, if it is in the image."""
        image = self._loaded
        if image is None or not image.base < ret <= image.base + len(image.code):
            return None
        return image.insn_at(ret - 1 - image.base)

    def locate(self, rip: int, image: Image, tag: str | Sequence[str], rsp: int | None = None):
        """(symbol+off/len, BPF slot) for `rip`; in a stub, the BPF slot is its caller's."""
        off = rip - image.base
        if 0 <= off < len(image.code):
            func = image.func_at(off)
            name = func.name if func else "?"
            if not isinstance(tag, str):
                tag = tag[image.funcs.index(func)] if func in image.funcs and tag else ""
            sym = f"bpf_prog_{tag}_{name}" if tag else f"bpf_prog_{name}"
            rel, length = (off - func.offset, func.length) if func else (off, len(image.code))
            return Location(f"{sym}+{rel:#x}/{length:#x}", image.insn_at(off))
        caller = None
        if rsp is not None and self.stack.offset(rsp, 8) is not None:
            caller = self.insn_of_return(self.read_u64(rsp))
        return Location(self._text_symbol(rip), caller)

    def _text_symbol(self, rip: int) -> str:
        for name, (addr, code) in self._text_names.items():
            if addr <= rip < addr + len(code):
                return f"{name}+{rip - addr:#x}/{len(code):#x}"
        for (src, imm), index in self._helpers.items():
            stub = self._helper_stub(index)
            if stub <= rip < stub + _HELPER_STUB:
                return f"{self._helper_fns[index][0]}+{rip - stub:#x}"
        return f"{rip:#x}"

    def close(self) -> None:
        """Stop the watchdog thread; the Uc itself is freed with the machine."""
        self._watchdog.closed.set()


def _vmalloc_shadow() -> bytes:
    """The vmalloc shadow as KASAN_VMALLOC leaves it: only the task stack is populated, the rest
    (its guard pages included) is VMALLOC_INVALID."""
    shadow = bytearray([VMALLOC_INVALID]) * (layout.VMALLOC_SIZE >> 3)
    start = (STACK_BASE - layout.VMALLOC) >> 3
    shadow[start:start + (STACK_SIZE >> 3)] = bytes(STACK_SIZE >> 3)
    return bytes(shadow)


def _five(args: tuple[int, ...]) -> list[int]:
    if len(args) > 5:
        raise CheckError(f"a BPF program takes at most 5 arguments, got {len(args)}")
    return [a & MASK64 for a in args] + [0] * (5 - len(args))


_ACCESS_ERRORS = (UC_ERR_READ_UNMAPPED, UC_ERR_WRITE_UNMAPPED, UC_ERR_FETCH_UNMAPPED,
                  UC_ERR_READ_PROT, UC_ERR_WRITE_PROT, UC_ERR_FETCH_PROT)
_ACCESS_PERM = {UC_MEM_READ: UC_PROT_READ, UC_MEM_WRITE: UC_PROT_WRITE, UC_MEM_FETCH: UC_PROT_EXEC}
_ACCESS_KIND = {UC_MEM_READ_UNMAPPED: "read", UC_MEM_READ_PROT: "read",
                UC_MEM_WRITE_UNMAPPED: "write", UC_MEM_WRITE_PROT: "write",
                UC_MEM_FETCH_UNMAPPED: "fetch", UC_MEM_FETCH_PROT: "fetch"}
# mov rdi/rsi/rdx/rcx/r8, [rip+disp32] (BPF r1-r5)
_LOAD_ARG = (b"\x48\x8b\x3d", b"\x48\x8b\x35", b"\x48\x8b\x15", b"\x48\x8b\x0d", b"\x4c\x8b\x05")
# mov [rip+disp32], rdi/rsi/rdx/rcx/r8/rsp
_STORE_ARG = (b"\x48\x89\x3d", b"\x48\x89\x35", b"\x48\x89\x15", b"\x48\x89\x0d", b"\x4c\x89\x05",
              b"\x48\x89\x25")
_ENTRY_SLOTS = struct.Struct("<6Q QQq")        # r1..r5, entry | r0, status, budget
_RESULT_SLOTS = struct.Struct("<QQq")          # r0, status, budget left
_CALL_SLOTS = struct.Struct("<Q5Q")            # index (u32 + pad), r1..r5

_shared: tuple[int, Machine] | None = None


def shared_machine() -> Machine:
    """The process's machine (one Uc per process; a forked child gets its own)."""
    global _shared
    if _shared is None or _shared[0] != os.getpid():
        _shared = (os.getpid(), Machine())
    return _shared[1]
