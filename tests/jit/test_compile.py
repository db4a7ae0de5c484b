"""jit/compile.py (+ emit_*, kasan, frame, flow_check): structural invariants of every compiled
conformance program in every KASAN mode, and hand-built programs for what the suites miss."""
from __future__ import annotations

import pathlib

import pytest
from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from jit import compile as jit_compile
from jit import isa
from jit.compile import compile_program, compile_with_layout
from jit.errors import JitError
from jit.image import Target
from jit.isa import Insn
from jit.kasan import access_of
from jit.program import Program

DECODER = Cs(CS_ARCH_X86, CS_MODE_64)
BASE = 0xFFFFFFFFA0000000
HELPERS = 0xFFFFFFFF81000000
ASAN = 0xFFFFFFFF81800000
BUDGET, EXHAUSTED = 0xFFFFFFFF82000040, 0xFFFFFFFF81900000
MODES = ("off", "inline", "outline")


def helper_address(src: int, imm: int) -> int:
    if imm == 999:
        raise JitError("unknown helper 999")
    return HELPERS + 0x10000 * src + 16 * (imm & 0xFFF)


def asan_address(is_write: bool, size: int) -> int:
    return ASAN + 64 * size + 32 * is_write


def target(kasan: str = "off", budget: bool = False) -> Target:
    return Target(BASE, helper_address, asan_address, kasan=kasan,
                  budget_address=BUDGET if budget else None,
                  budget_exhausted_address=EXHAUSTED if budget else None)


def program(*slots, name: str = "p", **kw) -> Program:
    flat = []
    for s in slots:
        flat.extend(s if isinstance(s, tuple) else (s,))
    return Program(name, tuple(flat), **kw)


def alu64(op, dst, imm=0, src=None, off=0):
    if src is None:
        return Insn(isa.ALU64 | op | isa.K, dst, 0, off, imm)
    return Insn(isa.ALU64 | op | isa.X, dst, src, off, 0)


EXIT = Insn(isa.JMP | isa.EXIT)


def ja(off):
    return Insn(isa.JMP | isa.JA, 0, 0, off, 0)


# --- invariants ------------------------------------------------------------------------------

def decode_all(image, begin: int, end: int) -> list:
    """Linear decode of [begin, end); fails on any byte capstone cannot decode."""
    insns = list(DECODER.disasm(image.code[begin:end], image.base + begin))
    decoded = sum(i.size for i in insns)
    assert decoded == end - begin, f"undecodable bytes at image offset {begin + decoded:#x}"
    return insns


def branch_target(ins) -> int | None:
    if (ins.mnemonic.startswith("j") or ins.mnemonic == "call") and ins.op_str.startswith("0x"):
        return int(ins.op_str, 16)
    return None


def check_image(prog: Program, tgt: Target) -> None:
    image, layout = compile_with_layout(prog, tgt)
    assert compile_program(prog, tgt).code == image.code, "compiling twice must give the same bytes"
    assert image.funcs[0].offset == 0
    assert image.funcs[-1].offset + image.funcs[-1].length == len(image.code) == image.insn_offsets[-1]
    boundaries, slot_starts = set(), set(image.insn_offsets)
    for index, func in enumerate(image.funcs):
        insns = decode_all(image, func.offset, func.offset + func.length)
        boundaries |= {i.address - image.base for i in insns}
        slot_starts.add(layout.body_start[index])
    func_starts = {f.offset for f in image.funcs}
    for func in image.funcs:
        for ins in decode_all(image, func.offset, func.offset + func.length):
            dest = branch_target(ins)
            if dest is None or not 0 <= dest - image.base < len(image.code):
                continue
            dest -= image.base
            assert dest in boundaries, f"{ins.mnemonic} at {ins.address:#x} lands inside an instruction"
            if ins.mnemonic == "call":
                assert dest in func_starts, f"call at {ins.address:#x} is not to a function start"
    _check_bpf_jumps(prog, image, layout, slot_starts)
    _check_sites(prog, image, tgt)


def _check_bpf_jumps(prog, image, layout, slot_starts) -> None:
    """Each BPF jump's last x86 instruction goes to the start of its target slot's code."""
    starts = {f.start_insn: layout.body_start[i] for i, f in enumerate(image.funcs)}
    ends = {f.start_insn: layout.body_end[i] for i, f in enumerate(image.funcs)}
    for pc, insn in enumerate(prog.insns):
        if not insn.is_jump or insn.op in (isa.CALL, isa.EXIT) or (pc and prog.insns[pc - 1].is_ld_imm64):
            continue
        begin = starts.get(pc, image.insn_offsets[pc])
        end = image.insn_offsets[pc + 1] if pc + 1 not in starts else ends[prog.func_of(pc)[0]]
        end = min(end, ends[prog.func_of(pc)[0]])
        code = decode_all(image, begin, end)
        target = insn.jump_target(pc)
        want = starts.get(target, image.insn_offsets[target])
        if not code or code[-1].mnemonic == "nop":
            assert want == end, f"slot {pc}: dropped jump, but target {target} is not next"
            continue
        assert branch_target(code[-1]) - image.base == want, f"slot {pc}: jumps to the wrong place"
        assert want in slot_starts


def _check_sites(prog, image, tgt) -> None:
    expected = {pc for pc, i in enumerate(prog.insns) if access_of(i) and not (pc and prog.insns[pc - 1].is_ld_imm64)}
    if tgt.kasan == "off":
        assert image.check_sites == ()
        return
    assert {s.insn for s in image.check_sites} == expected
    assert len(image.check_sites) == len(expected)
    for site in image.check_sites:
        assert site.base_reg != isa.FP
        call = list(DECODER.disasm(image.code[site.ret_offset - 5:site.ret_offset], image.base + site.ret_offset - 5))
        assert call[0].mnemonic == "call"
        assert int(call[0].op_str, 16) == asan_address(site.is_write, site.size)
        is_write, size, base, off = access_of(prog.insns[site.insn])
        assert (site.is_write, site.size, site.base_reg, site.off) == (is_write, size, base, off)


def conformance_programs(suite_dir: pathlib.Path) -> list[tuple[Program, bool]]:
    """(program, whether it must compile): tests with a result must; negative tests may be refused.
    uBPF's assembler-only tests (asm + raw, nothing to run) are left out."""
    from checks.conformance import build_program, parse_file
    programs = []
    for path in sorted((suite_dir / "tests").glob("*.data")):
        test = parse_file(str(path))
        if not (test.has("result") or test.expects_failure):
            continue
        try:
            programs.append((build_program(test), not test.expects_failure))
        except JitError:
            assert test.expects_failure, f"{path.name} does not assemble"
    return programs


@pytest.mark.parametrize("kasan", MODES)
@pytest.mark.parametrize("budget", (False, True), ids=("no-budget", "budget"))
def test_conformance_programs_compile_soundly(conformance_dir, ubpf_dir, kasan, budget):
    programs = conformance_programs(conformance_dir) + conformance_programs(ubpf_dir)
    assert len(programs) > 300
    for prog, must_compile in programs:
        try:
            check_image(prog, target(kasan, budget))
        except JitError:
            if must_compile:
                raise


# --- hand-built programs -------------------------------------------------------------------

STACK_AND_MAP = program(
    alu64(isa.MOV, 2, 7),
    Insn(isa.STX | isa.MEM | isa.DW, 10, 2, -16),                      # stack: never checked
    Insn(isa.STX | isa.MEM | isa.W, 1, 2, 4),                          # write 4 at r1+4
    Insn(isa.ST | isa.MEM | isa.B, 1, 0, -300, 5),                     # write 1 at r1-300
    Insn(isa.LDX | isa.MEM | isa.H, 3, 1, 2),                          # read 2
    Insn(isa.LDX | isa.MEMSX | isa.B, 4, 1, 0x7FFF),                   # read 1, sign-extending
    Insn(isa.LDX | isa.MEM | isa.DW, 0, 10, -16),                      # stack
    Insn(isa.STX | isa.ATOMIC | isa.DW, 1, 2, 8, isa.ADD),              # RMW: one write check
    Insn(isa.STX | isa.ATOMIC | isa.W, 0, 2, 8, isa.OR | isa.FETCH),    # fetch loop, base r0
    Insn(isa.STX | isa.ATOMIC | isa.DW, 1, 0, 0, isa.ATOMIC_CMPXCHG),
    Insn(isa.STX | isa.ATOMIC | isa.W, 1, 5, 0, isa.ATOMIC_XCHG),
    Insn(isa.STX | isa.ATOMIC | isa.B, 3, 1, 0, isa.LOAD_ACQ),
    Insn(isa.STX | isa.ATOMIC | isa.H, 1, 3, 0, isa.STORE_REL),
    Insn(isa.STX | isa.ATOMIC | isa.DW, 10, 2, -8, isa.XOR | isa.FETCH),  # stack atomic
    EXIT)


@pytest.mark.parametrize("kasan", MODES)
def test_checks_exactly_the_non_stack_accesses(kasan):
    check_image(STACK_AND_MAP, target(kasan))
    sites = compile_program(STACK_AND_MAP, target(kasan)).check_sites
    if kasan != "off":
        assert [s.insn for s in sites] == [2, 3, 4, 5, 7, 8, 9, 10, 11, 12]
        assert [(s.is_write, s.size) for s in sites][:4] == [(True, 4), (True, 1), (False, 2), (False, 1)]


def test_outline_check_is_the_kernel_sequence():
    image = compile_program(program(Insn(isa.LDX | isa.MEM | isa.DW, 0, 7, 0x10), EXIT), target("outline"))
    body = image.code[image.insn_offsets[0] + 12:]       # after nop5, nop3, push rbp, mov rbp,rsp
    body = body[2:]                                       # push r13 (r7 is used)
    push9, pop9 = "5051525657415041514152 4153".replace(" ", ""), "415b415a415941585f5e5a5958"
    assert body.hex().startswith(push9 + "4c89ef" + "4883c710" + "e8")
    assert body[13 + 3 + 4 + 5:].hex().startswith(pop9 + "498b4510")   # then the load itself
    assert image.check_sites[0].ret_offset == image.insn_offsets[0] + 14 + 13 + 3 + 4 + 5


def test_inline_slow_paths_live_inside_their_function():
    prog = program(alu64(isa.MOV, 0, 0), Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, 1), EXIT,
                   Insn(isa.LDX | isa.MEM | isa.W, 0, 1, 0), EXIT)
    image = compile_program(prog, target("inline"))
    (site,) = image.check_sites
    callee = image.funcs[1]
    assert site.insn == 3 and image.func_at(site.ret_offset) is callee
    assert site.ret_offset > image.insn_offsets[4]        # after the callee's code, not among it


def test_frames_stack_depth_and_callee_saved():
    prog = program(alu64(isa.MOV, 6, 1), alu64(isa.MOV, 2, src=10), alu64(isa.ADD, 2, -40),
                   Insn(isa.ST | isa.MEM | isa.W, 2, 0, 4, 0),             # fp-36
                   Insn(isa.STX | isa.MEM | isa.DW, 10, 6, -24), alu64(isa.MOV, 0, src=6), EXIT)
    image = compile_program(prog, target())
    assert image.funcs[0].stack_depth == 40
    listing = [f"{i.mnemonic} {i.op_str}" for i in decode_all(image, 0, image.insn_offsets[1])]
    assert listing[-3:-1] == ["sub rsp, 0x28", "push rbx"]
    declared = compile_program(Program("p", prog.insns, stack_depth=100), target())
    assert declared.funcs[0].stack_depth == 104


def test_may_goto_counter_lives_below_the_declared_stack():
    prog = program(Insn(isa.ST | isa.MEM | isa.DW, 10, 0, -8, 1),
                   Insn(isa.JMP | isa.JCOND, 0, 0, 1, 0), ja(-2), alu64(isa.MOV, 0, 0), EXIT)
    image = compile_program(prog, target())
    assert image.funcs[0].stack_depth == 16
    text = [f"{i.mnemonic} {i.op_str}" for i in decode_all(image, 0, image.insn_offsets[2])]
    assert "mov qword ptr [rbp - 0x10], 0x800000" in text
    assert text[-3:-1] == ["sub qword ptr [rbp - 0x10], 1", "adc qword ptr [rbp - 0x10], 0"]
    assert text[-1].startswith("jb ")
    check_image(prog, target(budget=True))


def test_budget_charges_backward_jumps_and_calls_only():
    loop = program(alu64(isa.MOV, 0, 3), alu64(isa.SUB, 0, 1),
                   Insn(isa.JMP | isa.JNE | isa.K, 0, 0, -2, 0),          # back to slot 1: 2 slots
                   Insn(isa.JMP | isa.JEQ | isa.K, 0, 0, 0, 5),           # forward: free
                   Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, 1), EXIT,
                   alu64(isa.MOV, 0, 1), alu64(isa.MOV, 0, 2), EXIT)
    image = compile_program(loop, target(budget=True))
    text = [f"{i.mnemonic} {i.op_str}" for f in image.funcs
            for i in decode_all(image, f.offset, f.offset + f.length)]
    charges = [t for t in text if t.startswith("sub qword ptr [0xffffffff82000040]")]
    assert charges == ["sub qword ptr [0xffffffff82000040], 2", "sub qword ptr [0xffffffff82000040], 3"]
    assert text.count(f"jmp {EXHAUSTED:#x}") == 1
    check_image(loop, target(budget=True))
    assert not any("82000040" in t for t in _text(compile_program(loop, target())))


def _text(image):
    return [f"{i.mnemonic} {i.op_str}".strip() for f in image.funcs
            for i in decode_all(image, f.offset, f.offset + f.length)]


def test_long_and_short_jumps_and_convergence():
    filler = [alu64(isa.MOV, 0, 0x12345678)] * 40                       # 5 bytes each
    prog = program(Insn(isa.JMP | isa.JEQ | isa.K, 1, 0, 41, 7), *filler,
                   Insn(isa.JMP | isa.JEQ | isa.K, 1, 0, -42, 9), ja(-1), alu64(isa.MOV, 0, 0), EXIT)
    image = compile_program(prog, target())
    first = decode_all(image, image.insn_offsets[0] + 12, image.insn_offsets[1])
    assert first[-1].size == 6                                           # 0F 84 rel32
    assert decode_all(image, image.insn_offsets[42], image.insn_offsets[43])[-1].bytes.hex() == "ebfe"
    check_image(prog, target())


def test_padding_passes_still_give_sound_code(monkeypatch):
    monkeypatch.setattr(jit_compile, "PADDING_PASSES", 0)
    filler = [alu64(isa.MOV, 0, 0x12345678)] * 30
    prog = program(Insn(isa.JMP | isa.JEQ | isa.K, 1, 0, 31, 7), *filler, ja(0), ja(1), EXIT, EXIT)
    check_image(prog, target())
    image = compile_program(prog, target())
    # padded from the first pass on, nothing shrinks below the 64-byte estimates' choice
    assert decode_all(image, image.insn_offsets[31], image.insn_offsets[32])[0].mnemonic == "nop"


def test_refuses_what_never_converges(monkeypatch):
    monkeypatch.setattr(jit_compile, "MAX_PASSES", 1)
    with pytest.raises(JitError, match="did not converge"):
        compile_program(program(ja(0), EXIT), target())


@pytest.mark.parametrize("slots,message,insn", [
    ((ja(5), EXIT), "jump out of range", 0),
    ((alu64(isa.MOV, 0, 0),), "last insn is not an exit", 0),
    ((Insn(isa.JMP | isa.JA, 0, 0, 1), isa.ld_imm64(0, 1), EXIT), "middle of ld_imm64", 0),
    ((Insn(isa.JMP | isa.CALL, 0, 0, 0, 999), EXIT), "unknown helper 999", 0),
    ((alu64(isa.MOV, 0, 1), Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, 1), EXIT,
      Insn(isa.JMP | isa.JA, 0, 0, -3), EXIT), "jump out of range", 3),
    ((Insn(0xFF), EXIT), "unknown opcode", 0),
])
def test_bad_programs_are_refused_with_their_slot(slots, message, insn):
    with pytest.raises(JitError, match=message) as e:
        compile_program(program(*slots), target())
    assert e.value.insn == insn


def test_calls_must_target_a_function_start():
    prog = Program("p", (Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, 0), EXIT), funcs=((0, "p"),))
    with pytest.raises(JitError, match="not the start of a function") as e:
        compile_program(prog, target())
    assert e.value.insn == 0


def test_errors_name_the_source_line():
    from jit.program import SourceLine
    prog = Program("p", (Insn(isa.JMP | isa.CALL, 0, 0, 0, 999), EXIT), lines={0: SourceLine("x.s", 7)})
    with pytest.raises(JitError) as e:
        compile_program(prog, target())
    assert str(e.value).startswith("x.s:7: unknown helper 999")


def test_kasan_needs_asan_addresses_and_a_known_mode():
    prog = program(Insn(isa.LDX | isa.MEM | isa.B, 0, 1, 0), EXIT)
    with pytest.raises(JitError, match="asan_address"):
        compile_program(prog, Target(BASE, helper_address, kasan="inline"))
    with pytest.raises(JitError, match="unknown KASAN mode"):
        compile_program(prog, Target(BASE, helper_address, asan_address, kasan="fast"))


def test_pseudo_func_loads_the_function_address():
    prog = program(isa.ld_imm64(2, 3, src=isa.PSEUDO_FUNC), Insn(isa.JMP | isa.CALL | isa.X, 2), EXIT,
                   alu64(isa.MOV, 0, 7), EXIT)
    image = compile_program(prog, target())
    (mov,) = decode_all(image, image.insn_offsets[0] + 12, image.insn_offsets[2])
    assert int(mov.op_str.split(", ")[1], 16) == BASE + image.funcs[1].offset
    assert [f.start_insn for f in image.funcs] == [0, 4]


def test_ld_abs_calls_the_skb_load_stub_and_returns_zero_when_it_fails():
    from jit.emit_mem import SKB_LOAD_STUB
    prog = program(alu64(isa.MOV, 6, src=1), Insn(isa.LD | isa.ABS | isa.H, 0, 0, 0, 12),
                   Insn(isa.LD | isa.IND | isa.W, 0, 2, 0, 4), EXIT)
    image = compile_program(prog, target())
    text = _text(image)
    assert f"call {helper_address(0, SKB_LOAD_STUB[2]):#x}" in text
    assert f"call {helper_address(0, SKB_LOAD_STUB[4]):#x}" in text
    assert text.count("leave") == 3                       # two failure exits and the real one
    check_image(prog, target())


# --- generated programs --------------------------------------------------------------------

_REG = st.integers(0, 9)
_OFF = st.sampled_from([0, 1, -8, 127, 128, -129, 0x7FFF, -0x8000])
_IMM = st.sampled_from([0, 1, -1, 2, 127, 128, 0x7FFFFFFF, -0x80000000, 31, 63])
_SIZE = st.sampled_from([isa.B, isa.H, isa.W, isa.DW])
_ALU_OPS = st.sampled_from([isa.ADD, isa.SUB, isa.MUL, isa.DIV, isa.OR, isa.AND, isa.LSH, isa.RSH,
                            isa.MOD, isa.XOR, isa.MOV, isa.ARSH])


@st.composite
def _slot(draw, pc: int, length: int):
    kind = draw(st.sampled_from(["alu", "alu", "mem", "jmp", "atomic", "misc"]))
    dst, src, off, imm = draw(_REG), draw(st.integers(0, 10)), draw(_OFF), draw(_IMM)
    if kind == "alu":
        cls, op = draw(st.sampled_from([isa.ALU, isa.ALU64])), draw(_ALU_OPS)
        signed = int(op in (isa.DIV, isa.MOD) and draw(st.booleans()))
        if draw(st.booleans()):
            return Insn(cls | op | isa.X, dst, draw(_REG), signed, 0)
        return Insn(cls | op | isa.K, dst, 0, signed, imm if op not in (isa.LSH, isa.RSH, isa.ARSH) else imm & 31)
    if kind == "mem":
        size = draw(_SIZE)
        return draw(st.sampled_from([Insn(isa.LDX | isa.MEM | size, dst, src, off),
                                     Insn(isa.LDX | isa.MEMSX | (size if size != isa.DW else isa.W), dst, src, off),
                                     Insn(isa.STX | isa.MEM | size, src, dst, off),
                                     Insn(isa.ST | isa.MEM | size, src, 0, off, imm)]))
    if kind == "atomic":
        op = draw(st.sampled_from(sorted(isa.ATOMIC_OPS)))
        return Insn(isa.STX | isa.ATOMIC | draw(st.sampled_from([isa.W, isa.DW])), src, dst, off, op)
    if kind == "jmp":
        target = draw(st.integers(0, length - 1)) - pc - 1
        cls = draw(st.sampled_from([isa.JMP, isa.JMP32]))
        op = draw(st.sampled_from(sorted(isa.JMP_CONDS) + [isa.JA]))
        if op == isa.JA:
            return Insn(isa.JMP | isa.JA, 0, 0, target) if cls == isa.JMP else Insn(isa.JMP32 | isa.JA, 0, 0, 0, target)
        return Insn(cls | op | isa.X, dst, draw(_REG), target) if draw(st.booleans()) else \
            Insn(cls | op | isa.K, dst, 0, target, imm)
    return draw(st.sampled_from([EXIT, Insn(isa.JMP | isa.CALL, 0, 0, 0, draw(st.integers(1, 200))),
                                 Insn(isa.ALU | isa.END | draw(st.sampled_from([isa.TO_LE, isa.TO_BE])), dst, 0, 0,
                                      draw(st.sampled_from([16, 32, 64]))),
                                 Insn(isa.JMP | isa.JCOND, 0, 0, draw(st.integers(-pc - 1, length - pc - 2)), 0),
                                 alu64(isa.NEG, dst)]))


@st.composite
def _programs(draw):
    length = draw(st.integers(1, 60))
    slots = [draw(_slot(pc, length + 1)) for pc in range(length)]
    return Program("gen", tuple(slots) + (EXIT,))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_programs(), st.sampled_from(MODES), st.booleans())
def test_generated_programs_compile_soundly_or_are_refused(prog, kasan, budget):
    """Any program either compiles to a sound image or gets our JitError, never a crash."""
    try:
        check_image(prog, target(kasan, budget))
    except JitError:
        pass


@pytest.mark.parametrize("kasan", ("off", "inline"))
def test_kernel_verifier_selftests_compile_soundly(kernel_selftests, kasan):
    """Every verifier_*.c program the kernel accepts compiles to a sound image (these include
    verifier_jit_convergence.c, written against jump-size oscillation)."""
    from checks.kselftest.importer import load_cases
    accepted = [c.program for path in sorted((kernel_selftests / "progs").glob("verifier_*.c"))
                for c in load_cases(path) if c.program is not None and c.expect == "success"]
    assert len(accepted) > 500
    for prog in accepted:
        check_image(prog, target(kasan, budget=True))
