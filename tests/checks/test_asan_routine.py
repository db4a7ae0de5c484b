"""The native __asan_{load,store}N routines, run in a small Unicorn of the test's own, against the
pure-Python check_region oracle."""
from __future__ import annotations

import capstone
import pytest
from hypothesis import given, settings, strategies as st
from unicorn import (UC_ARCH_X86, UC_HOOK_TLB_FILL, UC_MEM_FETCH, UC_MEM_READ, UC_MEM_WRITE,
                     UC_MODE_64, UC_PROT_ALL, UC_PROT_EXEC, UC_PROT_READ, UC_PROT_WRITE,
                     UC_TLB_VIRTUAL, Uc, UcError)
from unicorn.x86_const import (UC_X86_REG_R8, UC_X86_REG_R9, UC_X86_REG_R10, UC_X86_REG_R11,
                               UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14, UC_X86_REG_R15,
                               UC_X86_REG_RBP, UC_X86_REG_RBX, UC_X86_REG_RDI, UC_X86_REG_RSP)

from checks import asan_routine, layout
from checks.errors import CheckError
from checks.kasan_records import AccessRecord, buffer_size, read_records, reset_buffer
from checks.shadow import (METADATA_START, SLAB_FREE, SLAB_REDZONE, ShadowMap, ShadowView, Verdict,
                           check_region)

TEXT = layout.KERNEL_TEXT
BUFFER = layout.KERNEL_DATA
STACK = layout.VMALLOC
MEM = layout.DIRECT_MAP                      # the accesses' addresses (only their shadow is mapped)
SHADOW = layout.shadow(MEM)
RETURN = TEXT + 0xF00                        # where each call "returns": emulation stops there
CAPACITY = 4
CALLEE_SAVED = (UC_X86_REG_RBX, UC_X86_REG_RBP, UC_X86_REG_R12, UC_X86_REG_R13, UC_X86_REG_R14,
                UC_X86_REG_R15)
UNTOUCHED = (UC_X86_REG_R8, UC_X86_REG_R9, UC_X86_REG_R10, UC_X86_REG_R11)
ACCESS = {UC_MEM_READ: UC_PROT_READ, UC_MEM_WRITE: UC_PROT_WRITE, UC_MEM_FETCH: UC_PROT_EXEC}


class Machine:
    """Kernel text with the routines, a report buffer, a stack, and one page of shadow for MEM."""

    def __init__(self):
        self.routines = asan_routine.build(TEXT, BUFFER)
        self.uc = uc = Uc(UC_ARCH_X86, UC_MODE_64)
        uc.ctl_set_tlb_mode(UC_TLB_VIRTUAL)
        self.perms = [(TEXT, UC_PROT_READ | UC_PROT_EXEC), (BUFFER, UC_PROT_READ | UC_PROT_WRITE),
                      (STACK, UC_PROT_READ | UC_PROT_WRITE), (SHADOW, UC_PROT_READ | UC_PROT_WRITE)]
        for base, perms in self.perms:
            uc.mem_map(base, layout.PAGE, perms)
        uc.hook_add(UC_HOOK_TLB_FILL, self._tlb_fill)
        uc.mem_write(TEXT, self.routines.code)
        self.shadow = bytearray(layout.PAGE)

    def _tlb_fill(self, uc, vaddr, access, entry, _):
        entry.paddr = vaddr                   # identity, with the region's own permissions
        page = vaddr & ~(layout.PAGE - 1)
        perms = next((p for base, p in self.perms if base == page), None)
        entry.perms = UC_PROT_ALL if perms is None else perms | ACCESS.get(access, 0)
        return True

    def set_shadow(self, granules: bytes) -> ShadowMap:
        self.shadow[:] = bytes(layout.PAGE)
        self.shadow[:len(granules)] = granules
        self.uc.mem_write(SHADOW, bytes(self.shadow))
        return ShadowMap([ShadowView(MEM, self.shadow)])

    def call(self, is_write: bool, size: int, addr: int) -> tuple[AccessRecord, ...]:
        """Run one routine with rdi = addr; return the records it appended."""
        uc = self.uc
        buf = bytearray(buffer_size(CAPACITY))
        reset_buffer(buf, CAPACITY)
        uc.mem_write(BUFFER, bytes(buf))
        sp = STACK + layout.PAGE - 64
        uc.mem_write(sp, RETURN.to_bytes(8, "little"))
        for i, reg in enumerate(CALLEE_SAVED + UNTOUCHED):
            uc.reg_write(reg, 0x1111111111111111 * (i + 1))
        uc.reg_write(UC_X86_REG_RSP, sp)
        uc.reg_write(UC_X86_REG_RDI, addr)
        uc.emu_start(self.routines.address(is_write, size), RETURN)
        assert uc.reg_read(UC_X86_REG_RSP) == sp + 8                      # returned normally
        for i, reg in enumerate(CALLEE_SAVED + UNTOUCHED):
            assert uc.reg_read(reg) == 0x1111111111111111 * (i + 1)
        return read_records(uc.mem_read(BUFFER, buffer_size(CAPACITY))).records


@pytest.fixture(scope="module")
def machine():
    return Machine()


TABLE = [
    # (shadow granules from MEM, offset, size, reported?)
    (b"\x00", 0, 8, False),
    (b"\x00\xfc", 1, 8, True),
    (b"\x00\x01", 1, 8, False),
    (b"\x05", 4, 1, False),
    (b"\x05", 5, 1, True),
    (b"\x05", 2, 4, True),
    (b"\x05", 1, 4, False),
    (b"\x07\x00", 6, 2, True),
    (b"\x00\x00", 6, 2, False),
    (b"\xfb", 0, 1, True),
    (b"\x00\xfb", 6, 4, True),
    (b"\x00\x03", 7, 4, False),
]


@pytest.mark.parametrize("is_write", [False, True], ids=["load", "store"])
@pytest.mark.parametrize("granules, offset, size, reported", TABLE)
def test_table(machine, granules, offset, size, reported, is_write):
    machine.set_shadow(granules)
    records = machine.call(is_write, size, MEM + offset)
    expected = (AccessRecord(MEM + offset, size, is_write, RETURN),) if reported else ()
    assert records == expected


@pytest.mark.parametrize("addr, size", [(0, 8), (0x10, 4), (layout.TASK_SIZE - 8, 8),
                                        (0xDEAD000000000000, 2), (METADATA_START - 1, 1),
                                        (0xFFFFFFFFFFFFFFFC, 8), (0xFFFFFFFFFFFFFFF8, 8),
                                        (0xFFFFFFFFFFFFFFFF, 1), (0xFFFFFFFFFFFFFFFE, 2)])
def test_wild_and_wrapping_addresses_are_reported_without_reading_shadow(machine, addr, size):
    # None of these has mapped shadow: reading it would raise UC_ERR_READ_UNMAPPED. An access
    # ending exactly at 2**64 counts as wrapping, as the kernel's `addr + size < addr` says.
    assert check_region(ShadowMap(), addr, size) == Verdict.REPORT
    assert machine.call(False, size, addr) == (AccessRecord(addr, size, False, RETURN),)


def test_the_last_addresses_before_the_top_are_checked_normally(machine):
    with pytest.raises(UcError, match="UNMAPPED"):                # not wrapping: reads shadow
        machine.call(False, 8, 0xFFFFFFFFFFFFFFF7)


def test_metadata_address_without_shadow_faults_on_the_shadow_load(machine):
    addr = MEM + 16 * layout.PAGE * 8                         # shadow one page past the mapped one
    with pytest.raises(UcError, match="UNMAPPED"):
        machine.call(False, 1, addr)
    assert check_region(ShadowMap(), addr, 1) == Verdict.FAULT


def test_a_full_buffer_only_counts(machine):
    machine.set_shadow(b"\xfc")
    first = machine.call(True, 4, MEM)                       # fills one of CAPACITY slots
    assert first == (AccessRecord(MEM, 4, True, RETURN),)
    uc = machine.uc
    buf = bytearray(uc.mem_read(BUFFER, buffer_size(CAPACITY)))
    buf[8:16] = (1).to_bytes(8, "little")                     # shrink the capacity to one record
    uc.mem_write(BUFFER, bytes(buf))
    for _ in range(3):
        uc.reg_write(UC_X86_REG_RSP, STACK + 0x800)
        uc.mem_write(STACK + 0x800, RETURN.to_bytes(8, "little"))
        uc.reg_write(UC_X86_REG_RDI, MEM + 1)
        uc.emu_start(machine.routines.address(False, 1), RETURN)
    raw = uc.mem_read(BUFFER, buffer_size(CAPACITY))
    after = read_records(raw)
    assert after.records == first and after.dropped == 3
    assert bytes(raw[buffer_size(1):]) == bytes(buffer_size(CAPACITY) - buffer_size(1))


SHADOW_BYTE = st.sampled_from([0, 0, 0, 1, 2, 3, 4, 5, 6, 7, SLAB_REDZONE, SLAB_FREE])


@settings(max_examples=1000, deadline=None)
@given(granules=st.lists(SHADOW_BYTE, min_size=8, max_size=8), offset=st.integers(0, 56),
       size=st.sampled_from(asan_routine.SIZES), is_write=st.booleans())
def test_native_routine_agrees_with_check_region(machine, granules, offset, size, is_write):
    shadow = machine.set_shadow(bytes(granules))
    reported = bool(machine.call(is_write, size, MEM + offset))
    assert reported == (check_region(shadow, MEM + offset, size) == Verdict.REPORT)


EDGES = st.sampled_from([0, METADATA_START, 1 << 64, MEM, layout.TASK_SIZE])


@settings(max_examples=300, deadline=None)
@given(edge=EDGES, delta=st.integers(-40, 40), size=st.sampled_from(asan_routine.SIZES))
def test_native_verdict_matches_near_every_boundary(machine, edge, delta, size):
    addr = (edge + delta) % (1 << 64)
    shadow = machine.set_shadow(bytes([0, 0, 0, 3, SLAB_REDZONE]))
    try:
        native = Verdict.REPORT if machine.call(False, size, addr) else Verdict.OK
    except UcError:
        native = Verdict.FAULT                                # the shadow load hit no mapping
    assert native == check_region(shadow, addr, size)


def test_a_routine_disassembles_to_its_commented_assembly():
    code = asan_routine.routine_code(2, True, BUFFER)
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    insns = list(md.disasm(code, 0))
    listing = [f"{i.mnemonic} {i.op_str}".strip() for i in insns]
    assert sum(len(i.bytes) for i in insns) == len(code)                     # no stray bytes
    report_at = insns[listing.index(f"movabs rax, {BUFFER:#x}")].address
    assert listing[:5] == ["movabs rax, 0x800000000000", "add rax, rdi", "movabs rdx, 0x7ffffffffffd",
                           "cmp rax, rdx", f"ja {report_at:#x}"]
    assert "or edx, eax" in listing and "cmp byte ptr [rax + rcx], 0" in listing
    assert "movsx rdx, byte ptr [rax]" in listing and "mov rsi, qword ptr [rsp]" in listing
    assert "mov dword ptr [rcx + 0x1c], 1" in listing
    assert listing[-2:] == ["add qword ptr [rax], 1", "ret"]


def test_layout_names_and_sizes():
    routines = asan_routine.build(TEXT, BUFFER)
    assert len(routines.entries) == 8 and all(a % 16 == 0 for a in routines.entries.values())
    assert routines.name_at(routines.address(False, 8) + 3) == "__asan_load8"
    assert routines.name_at(routines.address(True, 1)) == "__asan_store1"
    with pytest.raises(CheckError, match="size 16"):
        routines.address(False, 16)
