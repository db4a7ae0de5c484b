"""The Unicorn machine on hand-assembled x86 snippets (no JIT involved).

Every snippet's bytes were produced with `llvm-mc-14 -triple x86_64 -x86-asm-syntax=intel
-show-encoding`; the assembly is beside them. An "image" here is a list of per-slot snippets, so
fault locations can be checked against BPF slot numbers.
"""
from __future__ import annotations

import struct
import time

import capstone
import pytest

from checks import layout
from checks.errors import CheckError
from checks.machine import (FIXED_AREA, STACK_BASE, STACK_TOP, HelperError, Machine, StopRun)
from jit.errors import JitError
from jit.image import FuncImage, Image

LEA_RAX_RDI_RSI = b"\x48\x8d\x04\x37"         # lea rax, [rdi + rsi]
RET = b"\xc3"                                 # ret
LOAD_RAX_RDI = b"\x48\x8b\x07"                # mov rax, qword ptr [rdi]
STORE_RDI8_RSI = b"\x48\x89\x77\x08"          # mov qword ptr [rdi + 8], rsi
MOV_RAX_RDI = b"\x48\x89\xf8"                 # mov rax, rdi
ADD_RAX_RSI = b"\x48\x01\xf0"                 # add rax, rsi
ADD_RAX_RDX = b"\x48\x01\xd0"                 # add rax, rdx
ADD_RAX_RCX = b"\x48\x01\xc8"                 # add rax, rcx
ADD_RAX_R8 = b"\x4c\x01\xc0"                  # add rax, r8
MOVZX_EAX_BYTE_RDI = b"\x0f\xb6\x07"          # movzx eax, byte ptr [rdi]
MOV_EAX_7 = b"\xb8\x07\x00\x00\x00"           # mov eax, 7
JMP_SELF = b"\xeb\xfe"                        # loop: jmp loop
JMP_RDI = b"\xff\xe7"                         # jmp rdi
DIV_RSI = b"\x31\xd2\x48\xf7\xf6"             # xor edx, edx; div rsi
UD2 = b"\x0f\x0b"                             # ud2
PUSH_RBP_MOV = b"\x55\x48\x89\xe5"            # push rbp; mov rbp, rsp
LEAVE_RET = b"\xc9\xc3"                       # leave; ret


def sub_abs_imm8(addr: int, imm: int) -> bytes:
    """sub qword ptr [addr], imm8 (addr as sign-extended disp32): 48 83 2c 25 disp32 ib"""
    return b"\x48\x83\x2c\x25" + struct.pack("<i", addr - (1 << 64)) + bytes([imm])


def load_abs(addr: int) -> bytes:
    """mov rax, qword ptr [addr] (sign-extended disp32): 48 8b 04 25 disp32"""
    return b"\x48\x8b\x04\x25" + struct.pack("<i", addr - (1 << 64))


def call_rel(at: int, target: int) -> bytes:
    """call rel32 placed at `at`: e8 rel32"""
    return b"\xe8" + struct.pack("<i", target - (at + 5))


def jmp_rel(at: int, target: int) -> bytes:
    """jmp rel32 placed at `at`: e9 rel32"""
    return b"\xe9" + struct.pack("<i", target - (at + 5))


def image(m: Machine, *slots: bytes, name: str = "t") -> Image:
    offsets, at = [], 0
    for code in slots:
        offsets.append(at)
        at += len(code)
    return Image(code=b"".join(slots), base=m.code.start, insn_offsets=tuple(offsets + [at]),
                 funcs=(FuncImage(name, 0, 0, at, 0),))


def calling(m: Machine, target: int, *before: bytes) -> Image:
    """An image whose slots are `before...`, `call target`, `ret`."""
    at = m.code.start + sum(len(b) for b in before)
    return image(m, *before, call_rel(at, target), RET)


@pytest.fixture(scope="module")
def m() -> Machine:
    machine = Machine()
    yield machine
    machine.close()


@pytest.fixture
def fresh(m: Machine) -> Machine:
    m.reset()
    return m


def test_arguments_arrive_in_the_bpf_argument_registers(fresh):
    img = image(fresh, MOV_RAX_RDI, ADD_RAX_RSI, ADD_RAX_RDX, ADD_RAX_RCX, ADD_RAX_R8, RET)
    run = fresh.run(img, (1, 20, 300, 4000, 50000))
    assert run.ok and run.r0 == 54321
    assert fresh.run(image(fresh, LEA_RAX_RDI_RSI, RET), (-1, 2)).r0 == 1      # 64-bit wrap


def test_loads_and_stores_reach_the_object(fresh):
    addr, view = fresh.alloc("mem", 16)
    view[:8] = (0x1122334455667788).to_bytes(8, "little")
    run = fresh.run(image(fresh, LOAD_RAX_RDI, STORE_RDI8_RSI, RET), (addr, 0xABCD))
    assert run.r0 == 0x1122334455667788
    assert bytes(view[8:]) == (0xABCD).to_bytes(8, "little")
    assert fresh.object_at(addr + 15).name == "mem" and fresh.object_at(addr + 16) is None


def test_reset_zeroes_what_the_run_dirtied(fresh):
    addr, view = fresh.alloc("mem", 16)
    fresh.run(image(fresh, STORE_RDI8_RSI, RET), (addr, 7))
    fresh.shadow_view(addr, 16)[0] = 0xFC
    fresh.run(image(fresh, STORE_RDI8_RSI, RET), (STACK_BASE, 9))   # a store into the stack
    fresh.reset()
    addr2, view2 = fresh.alloc("again", 16)
    assert addr2 == addr and bytes(view2) == bytes(16)
    assert bytes(fresh.shadow_view(addr, 16)) == bytes(2)
    assert bytes(fresh.stack.view[:16]) == bytes(16)


def test_alloc_at_a_fixed_address_and_refusals(fresh):
    addr, _ = fresh.alloc("input", 4, at=layout.DIRECT_MAP + 0x10000)
    assert addr == layout.DIRECT_MAP + 0x10000
    with pytest.raises(CheckError, match="fixed area"):
        fresh.alloc("below", 4, at=layout.DIRECT_MAP)                # under an earlier one
    heap, _ = fresh.alloc("next", 4)                                  # kmalloc: the slab heap
    assert heap >= layout.DIRECT_MAP + FIXED_AREA and fresh.find_object(heap).cache == "kmalloc-8"
    with pytest.raises(CheckError, match="is full"):
        fresh.alloc("huge", layout.DIRECT_MAP_SIZE)
    with pytest.raises(CheckError, match="at 0x"):
        fresh.alloc("outside", 4, at=layout.DIRECT_MAP - 8)


def test_heap_objects_have_redzones_and_guard_pages(fresh):
    addr, _ = fresh.alloc("obj", 8)
    assert fresh.shadow.byte(addr) == 0 and fresh.shadow.byte(addr + 8) == 0xFC
    slab = next((b, n) for b, n in fresh.slab.mapped_ranges() if b <= addr < b + n)
    guard = slab[0] + slab[1]
    run = fresh.run(image(fresh, LOAD_RAX_RDI, RET), (guard + 16,))
    assert run.fault.lines[0] == f"BUG: unable to handle page fault for address: {guard + 16:016x}"
    assert fresh.run(image(fresh, LOAD_RAX_RDI, RET), (guard - 8,)).ok


def test_guard_pages_fault_as_not_present(fresh):
    page = layout.DIRECT_MAP + 0x3F0000
    fresh.guard(page, layout.PAGE)
    for _ in range(2):                                  # the TLB must not remember a success
        run = fresh.run(image(fresh, LOAD_RAX_RDI, RET), (page + 8,))
        assert run.fault.lines[:3] == (f"BUG: unable to handle page fault for address: {page + 8:016x}",
                                       "#PF: supervisor read access in kernel mode",
                                       "#PF: error_code(0x0000) - not-present page")
    assert fresh.run(image(fresh, LOAD_RAX_RDI, RET), (page - 8,)).ok
    with pytest.raises(CheckError, match="whole pages of the direct map"):
        fresh.guard(page + 8, layout.PAGE)


def test_shadow_view_is_the_shadow_the_guest_sees(fresh):
    addr, _ = fresh.alloc("obj", 32)
    fresh.shadow_view(addr + 8, 8)[0] = 0xFB
    run = fresh.run(image(fresh, MOVZX_EAX_BYTE_RDI, RET), (layout.shadow(addr + 8),))
    assert run.r0 == 0xFB
    stack_shadow = fresh.shadow_view(STACK_BASE, 8)
    stack_shadow[0] = 0xF1
    assert fresh.run(image(fresh, MOVZX_EAX_BYTE_RDI, RET), (layout.shadow(STACK_BASE),)).r0 == 0xF1
    with pytest.raises(CheckError, match="no shadow memory"):
        fresh.shadow_view(layout.KERNEL_DATA, 8)


def test_alloc_text_and_data_are_reachable_from_images(fresh):
    stub = fresh.alloc_text("seven", MOV_EAX_7 + RET)
    assert fresh.alloc_text("seven", MOV_EAX_7 + RET) == stub              # idempotent by name
    with pytest.raises(CheckError, match="already placed"):
        fresh.alloc_text("seven", RET)
    assert fresh.run(calling(fresh, stub), ()).r0 == 7
    addr, view = fresh.data("report", 16)
    view[:8] = (0x5EED).to_bytes(8, "little")
    assert fresh.run(image(fresh, load_abs(addr), RET), ()).r0 == 0x5EED
    fresh.reset()
    assert bytes(fresh.data("report", 16)[1]) == bytes(16)                  # reset zeroes data


def test_a_new_image_replaces_the_old_translation(fresh):
    """Same size, same address, different code: stale translations would return 7 again."""
    assert fresh.run(image(fresh, MOV_EAX_7, RET), ()).r0 == 7
    assert fresh.run(image(fresh, b"\xb8\x08\x00\x00\x00", RET), ()).r0 == 8   # mov eax, 8


@pytest.mark.parametrize("address, first_line, pf_line, code", [
    (0, "BUG: kernel NULL pointer dereference, address: 0000000000000000",
     "#PF: supervisor read access in kernel mode", "#PF: error_code(0x0000) - not-present page"),
    (layout.DIRECT_MAP - 0x1000, "BUG: unable to handle page fault for address: ffff887ffffff000",
     "#PF: supervisor read access in kernel mode", "#PF: error_code(0x0000) - not-present page"),
])
def test_bad_reads_are_page_fault_oopses_naming_the_slot(fresh, address, first_line, pf_line, code):
    run = fresh.run(image(fresh, MOV_EAX_7, LOAD_RAX_RDI, RET), (address,), tag="0123456789abcdef")
    assert run.r0 is None and run.error is None
    assert run.fault.lines[:3] == (first_line, pf_line, code)
    assert run.fault.lines[-1] == "RIP: 0010:bpf_prog_0123456789abcdef_t+0x5/0x9"
    assert run.fault.insn == run.error_insn == 1 and run.fault.address == address
    assert fresh.run(image(fresh, MOV_EAX_7, RET), ()).r0 == 7                # still usable


def test_write_to_kernel_text_is_a_permission_violation(fresh):
    run = fresh.run(image(fresh, STORE_RDI8_RSI, RET), (layout.KERNEL_TEXT, 1))
    assert run.fault.access == "write" and run.fault.address == layout.KERNEL_TEXT + 8
    assert "#PF: supervisor write access in kernel mode" in run.fault.lines
    assert "#PF: error_code(0x0003) - permissions violation" in run.fault.lines


def test_non_canonical_address_is_a_general_protection_fault(fresh):
    run = fresh.run(image(fresh, LOAD_RAX_RDI, RET), (0xDEAD000000000000,))
    assert run.fault.lines[0].startswith(
        "general protection fault, probably for non-canonical address 0xdead000000000000: 0000 [#1]")


def test_kasan_decodes_a_wild_shadow_load(fresh):
    img = image(fresh, MOVZX_EAX_BYTE_RDI, RET)
    img = Image(img.code, img.base, img.insn_offsets, img.funcs, kasan="inline")
    run = fresh.run(img, (layout.shadow(0),))          # the shadow of NULL is non-canonical
    assert "KASAN: null-ptr-deref in range [0x0000000000000000-0x0000000000000007]" in run.fault.lines


def test_stack_overflow_hits_the_guard_page(fresh):
    run = fresh.run(image(fresh, LOAD_RAX_RDI, RET), (STACK_BASE - 8,))
    assert run.fault.lines[0] == (f"BUG: TASK stack guard page was hit at {STACK_BASE - 8:016x} "
                                  f"(stack is {STACK_BASE:016x}..{STACK_TOP - 1:016x})")
    above = fresh.run(image(fresh, LOAD_RAX_RDI, RET), (STACK_TOP,))
    assert "stack guard page was hit" in above.fault.lines[0]


def test_executing_data_is_an_nx_fault(fresh):
    run = fresh.run(image(fresh, JMP_RDI), (layout.DIRECT_MAP,))
    assert run.fault.lines[0] == "kernel tried to execute NX-protected page - exploit attempt? (uid: 0)"
    assert "#PF: supervisor instruction fetch in kernel mode" in run.fault.lines


@pytest.mark.parametrize("code, title, offset", [
    (DIV_RSI + RET, "divide error: 0000 [#1]", 2),
    (UD2, "invalid opcode: 0000 [#1]", 0),
])
def test_cpu_exceptions_are_oopses(fresh, code, title, offset):
    run = fresh.run(image(fresh, code), (5, 0))
    assert run.fault.lines[0].startswith(title)
    assert run.fault.lines[-1].endswith(f"bpf_prog_t+{offset:#x}/{len(code):#x}")


STACK_LOOP = (b"\x48\x89\x7c\x24\xf8"        # l: mov qword ptr [rsp - 8], rdi
              b"\x48\x8b\x44\x24\xf8"        # mov rax, qword ptr [rsp - 8]
              b"\x48\xff\xcf"                  # dec rdi
              b"\x75\xf1")                      # jnz l


def test_a_fault_keeps_the_fast_path(fresh):
    """The fault replay installs a memory hook for one instruction; a hook left behind makes
    every load and store 4-5x slower (unicorn-perf.md), far beyond the noise allowed here."""
    loop = image(fresh, STACK_LOOP, RET)

    def best() -> float:
        return min(fresh.run(loop, (3_000_000,)).elapsed for _ in range(3))
    before = best()
    fresh.run(image(fresh, LOAD_RAX_RDI, RET), (0,))
    assert best() < before * 2


def test_runaway_loop_stops_on_the_wall_clock(fresh):
    started = time.monotonic()
    run = fresh.run(image(fresh, JMP_SELF), (), time_limit=0.3)
    assert run.error == "time limit exceeded (0.3 s)" and run.r0 is None
    assert 0.25 < time.monotonic() - started < 1.0
    assert fresh.run(image(fresh, MOV_EAX_7, RET), ()).r0 == 7


def test_instruction_budget(fresh):
    target = fresh.target()
    spend = image(fresh, sub_abs_imm8(target.budget_address, 5), MOV_EAX_7, RET)
    run = fresh.run(spend, (), insn_limit=100)
    assert run.r0 == 7 and run.insns == 5 + 3                 # consumed budget + slots
    at = fresh.code.start
    exhaust = image(fresh, jmp_rel(at, target.budget_exhausted_address))
    run = fresh.run(exhaust, (), insn_limit=1234)
    assert run.error == "instruction limit exceeded (1234)" and run.fault is None


def test_a_late_watchdog_stop_resumes_the_run(fresh):
    """A stop meant for an earlier run (the benign race) must not end this one."""
    stops = []

    def stop_from_outside(machine, *args):
        stops.append(machine.uc.emu_stop())
        return 0
    stub = fresh.register_helper(900, stop_from_outside)
    run = fresh.run(calling(fresh, stub, MOV_EAX_7), ())
    assert run.ok and run.r0 == 0 and len(stops) == 1


def test_helpers_get_r1_to_r5_and_return_r0(fresh):
    seen = []
    stub = fresh.register_helper(901, lambda mach, *regs: seen.append(regs) or 0x77)
    assert fresh.call_address(0, 901) == stub
    img = calling(fresh, stub)
    assert fresh.run(img, (1, 2, 3, 4, 5)).r0 == 0x77
    assert seen == [(1, 2, 3, 4, 5)]
    fresh.register_helper(901, lambda mach, *regs: 0x88)          # same stub, new handler
    assert fresh.call_address(0, 901) == stub and fresh.run(img, ()).r0 == 0x88


def test_kfunc_stubs_are_separate_from_helpers(fresh):
    helper = fresh.register_helper(902, lambda *a: 1)
    kfunc = fresh.register_helper(902, lambda *a: 2, src=2)
    assert helper != kfunc and fresh.run(calling(fresh, kfunc), ()).r0 == 2


def test_unknown_helper_is_refused_when_linking(fresh):
    with pytest.raises(JitError, match="unknown helper #12345"):
        fresh.call_address(0, 12345)


def test_helper_without_handler_is_a_run_error_at_the_call(fresh):
    stub = fresh.register_helper(903, None, name="helper 903")
    run = fresh.run(calling(fresh, stub, MOV_EAX_7), ())
    assert run.error == "call to unknown helper 903" and run.error_insn == 1


def test_helper_exceptions_propagate_and_the_machine_survives(fresh):
    def boom(*args):
        raise ValueError("boom")
    stub = fresh.register_helper(904, boom)
    with pytest.raises(ValueError, match="boom"):
        fresh.run(calling(fresh, stub), ())
    assert fresh.run(image(fresh, MOV_EAX_7, RET), ()).r0 == 7


def test_helper_can_stop_or_fail_the_run(fresh):
    def stop(*args):
        raise StopRun(42)

    def fail(*args):
        raise HelperError("bad pointer")
    assert fresh.run(calling(fresh, fresh.register_helper(905, stop), MOV_EAX_7), ()).r0 == 42
    run = fresh.run(calling(fresh, fresh.register_helper(906, fail), MOV_EAX_7), ())
    assert run.error == "bad pointer" and run.error_insn == 1


def test_helpers_read_and_write_guest_memory(fresh):
    addr, view = fresh.alloc("buf", 8)
    stub = fresh.register_helper(907, lambda mach, p, *r: mach.write(p, b"hi") or mach.read_u64(p))
    assert fresh.run(calling(fresh, stub), (addr,)).r0 == int.from_bytes(b"hi", "little")
    assert bytes(view[:2]) == b"hi"
    with pytest.raises(CheckError, match="unmapped"):
        fresh.read(0x1000, 1)
    with pytest.raises(CheckError, match="unwritable"):
        fresh.write(layout.KERNEL_TEXT, b"x")


def test_fault_inside_a_stub_names_the_calling_slot(fresh):
    stub = fresh.alloc_text("crash", LOAD_RAX_RDI + RET)
    run = fresh.run(calling(fresh, stub, MOV_EAX_7), (0,))
    assert run.fault.insn == 1 and run.fault.lines[-1] == "RIP: 0010:crash+0x0/0x4"


def test_image_linked_elsewhere_is_refused(fresh):
    img = image(fresh, RET)
    moved = Image(img.code, img.base + 0x1000, img.insn_offsets, img.funcs)
    with pytest.raises(CheckError, match="compile with machine.target"):
        fresh.run(moved, ())


def test_target_points_into_this_machine(m):
    t = m.target(kasan="inline", asan_address=lambda w, s: 0)
    assert t.image_base == layout.MODULES and t.kasan == "inline"
    assert layout.KERNEL_DATA <= t.budget_address < layout.KERNEL_DATA + layout.KERNEL_DATA_SIZE
    assert layout.KERNEL_TEXT <= t.budget_exhausted_address < layout.KERNEL_TEXT + 0x1000


def test_trampoline_disassembles_as_documented(m):
    """The hand-encoded run trampoline: load r1-r5, call the image, keep rax, mark done."""
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    code = bytes(m.text.view[:m.exit_marker - m.entry + 1])
    text = [f"{i.mnemonic} {i.op_str}" for i in md.disasm(code, m.entry)]
    assert [t.split(",")[0] for t in text[:5]] == ["mov rdi", "mov rsi", "mov rdx", "mov rcx", "mov r8"]
    assert text[5].startswith("call qword ptr [rip")
    assert text[6].startswith("mov qword ptr [rip") and text[6].endswith("rax")
    assert text[7].startswith("mov byte ptr [rip") and text[8] == "int3 "


def test_close_stops_the_watchdog_and_may_be_repeated():
    machine = Machine()
    machine.close()
    machine.close()
    assert machine._watchdog.closed.is_set()
