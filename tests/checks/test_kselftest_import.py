"""checks.kselftest: test_loader-format C files → SelftestCases, on our own small files in
tests/data/kselftest/ and on the kernel 6.12 verifier_*.c suite (skipped when absent)."""
from __future__ import annotations

import collections
import pathlib
import re
import shutil
import subprocess

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from checks.errors import CheckError
from checks.kselftest import is_selftest_source, load_cases
from jit import isa
from jit.isa import Insn, ld_imm64

DATA = pathlib.Path(__file__).resolve().parent.parent / "data" / "kselftest"


def cases_of(name: str) -> dict:
    return {c.name: c for c in load_cases(DATA / name)}


def mov(dst: int, imm: int) -> Insn:
    return Insn(isa.ALU64 | isa.MOV | isa.K, dst, 0, 0, imm)


EXIT = Insn(isa.JMP | isa.EXIT)


# ------------------------------------------------------------------ annotations
ANNOTATED = [
    # name, field, expected
    ("plain_success", "expect", "success"),
    ("plain_success", "retval", 7),
    ("plain_success", "expect_unpriv", None),
    ("plain_success", "description", "plain success, privileged only"),
    ("failure_with_messages", "expect", "failure"),
    ("failure_with_messages", "msgs", ("first message", "R{{[0-9]+}} second message")),
    ("failure_with_messages", "expect_unpriv", "failure"),
    ("failure_with_messages", "msgs_unpriv", ("only when unprivileged",)),
    ("failure_with_messages", "description", "failure_with_messages"),
    ("unpriv_inherits_retval", "retval", -2),           # 0xfffffffe compared as an int
    ("unpriv_inherits_retval", "retval_unpriv", -2),
    ("unpriv_inherits_retval", "executes_unpriv", True),
    ("own_unpriv_result", "retval", -12),
    ("own_unpriv_result", "retval_unpriv", 3),
    ("own_unpriv_result", "expect_unpriv", "failure"),
    ("retval_int_min", "retval", -2147483648),
    ("retval_not_compared", "retval", None),
    ("retval_not_compared", "executes", True),
    ("retval_data_len", "retval", 64),
    ("flags_and_log_level", "flags", ("BPF_F_ANY_ALIGNMENT", "0x40", "!BPF_F_TEST_RND_HI32")),
    ("flags_and_log_level", "log_level", 2),
    ("flags_and_log_level", "executes", False),
    ("helper_program", "auxiliary", True),
    ("helper_program", "auxiliary_unpriv", True),
    ("helper_program", "runs_unpriv", True),
    ("jited_lines", "arch", ("ARM64", "X86_64")),
    ("jited_lines", "jited", ("\tendbr64", "...", "\txorl\t%eax, %eax")),   # arm64 lines dropped
    ("jited_lines", "xlated", ("0: r0 = 0", "1: exit")),
    ("riscv_only", "skip_reason", "arch riscv64 only"),
    ("unknown_annotations", "btf_path", "custom_btf.bpf.o"),
    ("unknown_annotations", "unknown_annotations", ("unknown: __caps_unpriv", "unknown: __load_if_JITed")),
    ("raw_decl_tags", "expect", "failure"),
    ("raw_decl_tags", "msgs", ("raw tag message",)),
    ("raw_decl_tags", "sec", "?raw_tp"),
    ("raw_decl_tags", "prog_type", "raw_tracepoint"),
    ("no_expectation", "expect", "success"),
    ("no_expectation", "runs_priv", True),
    ("no_expectation", "prog_type", "lsm"),
    ("c_body", "skip_reason", "needs a compiler: C body"),
    ("c_body", "program", None),
    ("c_body", "naked", False),
    ("plain_success", "naked", True),
]


@pytest.mark.parametrize("name,field,expected", ANNOTATED, ids=[f"{n}.{f}" for n, f, _ in ANNOTATED])
def test_annotations(name, field, expected):
    assert getattr(cases_of("annotations.c")[name], field) == expected


def test_case_identity_and_location():
    case = cases_of("annotations.c")["plain_success"]
    assert case.id == "annotations.c::plain_success"
    assert case.line == 10 and case.file.endswith("annotations.c")
    assert case.program.lines[0].line == 12 and case.program.lines[0].text == "r0 = 7"


# ------------------------------------------------------------------ operands
def test_helpers_and_map_address():
    prog = cases_of("operands.c")["helper_and_map"].program
    assert prog.insns[4:6] == ld_imm64(1, 0, isa.PSEUDO_MAP_FD)
    assert [i.imm for i in prog.insns if i.is_call] == [1, 7]    # map_lookup_elem, get_prandom_u32
    (pairs,) = prog.maps
    assert (pairs.name, pairs.type, pairs.key_size, pairs.value_size, pairs.max_entries) == \
        ("pairs", "array", 4, 24, 2)


def test_constant_operands_follow_c_types():
    insns = cases_of("operands.c")["constants"].program.insns
    assert insns[0] == Insn(isa.LDX | isa.W | isa.MEM, 0, 1, 8)        # offsetof(__sk_buff, mark)
    assert insns[1].off == 56                                           # cb[2]
    assert [i.imm for i in insns[2:5]] == [24, 18, -0x80000000]        # sizeof, offsetof, INT_MIN
    assert isa.imm64(*insns[5:7]) == 1 << 63                            # LLONG_MIN
    assert insns[7].imm == -22                                          # -EINVAL
    assert insns[8].imm == -2                                           # 0xffffffff - 1 is -2...
    assert isa.imm64(*insns[9:11]) == 0xFFFFFFFFFFFFFFFE                # ...sign-extended, as clang prints
    assert isa.imm64(*insns[11:13]) == 0xFFFFFFFF                       # (__u32)-1 + 0ull
    assert isa.imm64(*insns[13:15]) == (1 << 40) | 5
    assert insns[15].imm == 12                                          # SLOTS * sizeof(int)
    assert isa.imm64(*insns[16:18]) == 0x1122334455667788              # [raw_i]"i"(...)
    assert insns[18] == Insn(isa.ALU | isa.MOD | isa.K, 0, 0, 0, 3)     # `w0 %%= 3`


def test_instruction_macros():
    insns = cases_of("operands.c")["raw_instructions"].program.insns
    assert insns[1:] == (
        Insn(isa.LD | isa.H | isa.ABS, 0, 0, 0, 12),
        Insn(isa.ST | isa.DW | isa.MEM, 10, 0, -16, 99),
        Insn(isa.LD_IMM64, 1, isa.PSEUDO_MAP_FD, 0, 0), Insn(0),
        Insn(isa.JMP | isa.JSET | isa.K, 0, 0, 0, 0x10),
        mov(0, 0), EXIT)


def test_percent_equals_gives_each_asm_statement_its_labels():
    insns = cases_of("operands.c")["unique_labels_one"].program.insns
    assert [i.off for i in insns] == [0, 2, 0, -3, 0]
    assert cases_of("operands.c")["unique_labels_two"].program.insns == (mov(0, 1), EXIT)


@pytest.mark.parametrize("name,reason", [
    ("pointer_operand", "__imm_ptr: compiler-chosen register"),
    ("register_constraint", 'asm constraint "r": compiler-chosen register'),
    ("kfunc_call", "calls kfunc bpf_made_up_kfunc: needs kernel BTF"),
    ("unused_pointer_operand", None),              # declared but not in the template: harmless
])
def test_operands_a_compiler_would_choose(name, reason):
    case = cases_of("operands.c")[name]
    assert case.skip_reason == reason
    assert (case.program is None) == (reason is not None)


# ------------------------------------------------------------------ maps, globals, calls
def test_btf_map_definitions():
    maps = {m.name: m for m in cases_of("maps_subprogs.c")["uses_maps"].program.maps}
    assert list(maps) == ["events", "records", "outer", "jumps"]       # order of first reference
    assert maps["records"] == maps["records"].__class__("records", "hash", 8, 28, 16, 1)
    events = maps["events"]
    assert (events.type, events.max_entries, events.value_size) == ("ringbuf", 4096, 0)
    assert (maps["outer"].type, maps["outer"].value_size) == ("array_of_maps", 4)
    assert maps["jumps"].values == ((1, "jump_target_a"), (3, "jump_target_b"))
    imms = [i.imm for i in cases_of("maps_subprogs.c")["uses_maps"].program.insns if i.is_ld_imm64]
    assert imms == [0, 1, 0, 2, 3]


def test_globals_become_section_maps():
    prog = cases_of("maps_subprogs.c")["uses_globals"].program
    maps = {m.name: m for m in prog.maps}
    assert list(maps) == [".data", ".bss", ".rodata", ".data.notes"]
    assert maps[".data"].initial == ((0, (42).to_bytes(8, "little") + bytes([1, 2, 3, 0])),)
    assert (maps[".bss"].value_size, maps[".bss"].initial) == (4, ())
    assert maps[".rodata"].flags == 1 << 7 and maps[".rodata"].initial == ((0, b"\x07\x00"),)
    assert maps[".data.notes"].initial == ((0, b"hi\x00"),)
    loads = [(prog.insns[pc].src, prog.insns[pc].imm, prog.insns[pc + 1].imm)
             for pc in range(len(prog.insns)) if prog.insns[pc].is_ld_imm64]
    assert loads == [(isa.PSEUDO_MAP_VALUE, 0, 0), (isa.PSEUDO_MAP_VALUE, 1, 0),
                     (isa.PSEUDO_MAP_VALUE, 2, 0), (isa.PSEUDO_MAP_VALUE, 3, 0),
                     (isa.PSEUDO_MAP_VALUE, 0, 8)]                      # bytes[] after `long answer`


def test_callees_are_appended_depth_first_like_libbpf():
    prog = cases_of("maps_subprogs.c")["nested_calls"].program
    assert prog.funcs == ((0, "nested_calls"), (4, "middle"), (7, "leaf"), (9, "middle_again"))
    calls = {pc: pc + 1 + i.imm for pc, i in enumerate(prog.insns) if i.is_pseudo_call}
    assert calls == {1: 4, 2: 7, 4: 7, 5: 9, 9: 7}
    assert prog.lines[7].text == "r0 += 1" and prog.lines[7].line == 128


def test_tail_call_program_and_auxiliary_targets():
    cases = cases_of("maps_subprogs.c")
    prog = cases["tail_call"].program
    assert prog.insns[3] == Insn(isa.JMP | isa.CALL, imm=12) and prog.maps[0].name == "jumps"
    assert [c.name for c in cases.values() if c.auxiliary] == ["jump_target_a", "jump_target_b"]


def test_calling_a_c_function_needs_a_compiler():
    assert cases_of("maps_subprogs.c")["calls_c_function"].skip_reason == \
        "needs a compiler: calls C function c_helper"


def test_unknown_map_type_fails_only_the_test_using_it():
    cases = cases_of("maps_subprogs.c")
    error = cases["uses_bad_map"].error
    assert isinstance(error, CheckError)
    assert str(error).endswith("maps_subprogs.c:58: map not_a_map_type: unknown map type "
                               "'BPF_MAP_TYPE_SPARKLY_NEW'")
    assert sum(c.error is not None for c in cases.values()) == 1


# ------------------------------------------------------------------ preprocessing
def test_conditionals_and_macros():
    cases = cases_of("preproc.c")
    assert list(cases) == ["endian_branch", "guarded_v4", "macro_built_body", "continued_template",
                           "generated_alpha", "generated_beta"]
    assert cases["endian_branch"].program.insns[1].off == -8            # the little-endian branch
    assert cases["guarded_v4"].program.insns[1] == Insn(isa.ALU64 | isa.MOV | isa.X, 0, 0, 8)
    assert cases["macro_built_body"].program.insns == (
        mov(0, 5), Insn(isa.ALU64 | isa.ADD | isa.K, 0, 0, 0, 1), EXIT)
    beta = cases["generated_beta"]
    assert (beta.sec, beta.description, beta.retval) == ("tc", "made by a macro: beta", 20)
    assert beta.program.insns == (mov(0, 20), EXIT)


def test_statement_lines_follow_the_c_source():
    prog = cases_of("preproc.c")["continued_template"].program
    assert [(prog.lines[pc].line, prog.lines[pc].text) for pc in range(5)] == [
        (83, "r1 = 1"), (84, "r2 = 2"), (85, "r0 = r1"), (86, "r0 += r2"), (87, "exit")]
    assert [cases_of("preproc.c")["endian_branch"].program.lines[pc].line for pc in range(3)] == [29, 31, 35]


# ------------------------------------------------------------------ malformed input
MALFORMED = [
    ("bad_statement", 20, "bad_statement: cannot parse 'r0 =+* r1'"),
    ("undeclared_operand", 29, "asm operand %[nowhere] is not among the statement's operands"),
    ("unknown_constant", 36, "unknown name 'NOT_A_CONSTANT' in constant expression"),
    ("unterminated_string", 43, "unterminated string literal"),
    ("unknown_section", 47, "unknown program section 'not_a_section'"),
    ("bad_retval", 55, "cannot parse __retval from 'one'"),
    ("jited_without_arch", 62, "__jited used before __arch_*"),
    ("unknown_symbol", 72, "unknown symbol 'no_such_thing'"),
    ("unknown_map_attribute", 77, "map odd_map: unknown attribute '__uint(colour, ...)'"),
]


@pytest.mark.parametrize("name,line,message", MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_test_is_refused_alone(name, line, message):
    case = cases_of("malformed.c")[name]
    assert case.program is None and case.skip_reason is None
    assert isinstance(case.error, CheckError)
    assert (case.error.line, case.error.message) == (line, message)
    assert str(case.error) == f"{DATA / 'malformed.c'}:{line}: {message}"


def test_good_tests_around_malformed_ones_still_import():
    cases = cases_of("malformed.c")
    assert len(cases) == len(MALFORMED) + 2
    assert cases["good_before"].program.insns == (mov(0, 1), EXIT)
    assert cases["good_after"].program.insns == (mov(0, 2), EXIT)


def test_which_files_are_selftest_sources(tmp_path):
    (tmp_path / "other.c").write_text('SEC("xdp") __naked void f(void) { asm volatile ("exit;"); }')
    (tmp_path / "plain.c").write_text("int main(void) { return 0; }")
    (tmp_path / "verifier_x.c").write_text("")
    (tmp_path / "notes.txt").write_text("__naked SEC(")
    claimed = [p.name for p in sorted(tmp_path.iterdir()) if is_selftest_source(p)]
    assert claimed == ["other.c", "verifier_x.c"]


SOURCES = [p.read_text() for p in sorted(DATA.glob("*.c"))]
DAMAGE = ['"', "(", ")", "{", "}", ";", "#if 1\n", "#endif\n", "\\\n", "%[", "/*", "__imm(", ":", "ll"]


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(source=st.sampled_from(SOURCES), edits=st.lists(
    st.tuples(st.floats(0, 1), st.integers(0, 30), st.sampled_from(DAMAGE + [""])), min_size=1, max_size=4))
def test_damaged_files_give_cases_or_check_errors(tmp_path, source, edits):
    """Whatever the damage: cases (each maybe with its own error) or one CheckError, no traceback."""
    for where, length, insert in edits:
        at = int(where * len(source))
        source = source[:at] + insert + source[at + length:]
    path = tmp_path / "verifier_damaged.c"
    path.write_text(source)
    try:
        cases = load_cases(path)
    except CheckError as e:
        assert e.file == str(path)
        return
    assert all(c.error is None or isinstance(c.error, CheckError) for c in cases)


def test_unreadable_file_is_one_located_error(tmp_path):
    with pytest.raises(CheckError, match="cannot read selftest file"):
        load_cases(tmp_path / "missing.c")
    broken = tmp_path / "unbalanced.c"
    broken.write_text("int x;\n#if 1\nint y;\n")
    with pytest.raises(CheckError, match="unbalanced.c:2: #if without #endif"):
        load_cases(broken)


# ------------------------------------------------------------------ the kernel 6.12 suite
@pytest.fixture(scope="module")
def kernel_cases(kernel_selftests):
    files = sorted((kernel_selftests / "progs").glob("verifier_*.c"))
    assert len(files) == 95
    return {c.id: c for f in files for c in load_cases(f)}


def test_kernel_counts(kernel_cases):
    """selftests.md §3.6 says 1,349 tests (1,363 with 14 auxiliary) and 1,166 naked. A compiler
    also sees the 9 naked tests verifier_ctx.c makes with its narrow_load() macro, which a
    text search does not: 1,166 + 9 naked. The C-bodied count (180) is 3 below §3.6's 183."""
    tests = [c for c in kernel_cases.values() if not c.auxiliary]
    assert len(kernel_cases) == 1369 and len(tests) == 1355
    naked = [c for c in tests if c.naked]
    assert len(naked) == 1175
    assert sum(c.name.startswith("invalid_narrow_load") for c in naked) == 9
    assert collections.Counter(c.expect for c in tests) == {"success": 822, "failure": 533}


def test_every_naked_kernel_test_is_imported_or_skipped_with_a_reason(kernel_cases):
    naked = [c for c in kernel_cases.values() if c.naked]
    assert [c.id for c in naked if c.error is not None] == []
    assert all((c.program is None) == (c.skip_reason is not None) for c in naked)
    reasons = collections.Counter(re.sub(r"(kfunc|function) \w+", r"\1 X", c.skip_reason)
                                  for c in naked if c.skip_reason)
    assert reasons == {"__imm_ptr: compiler-chosen register": 24,
                       "calls kfunc X: needs kernel BTF": 8,
                       "arch arm64, riscv64 only": 1,
                       "needs a compiler: calls C function X": 1,
                       "needs vmlinux.h: incomplete type 'struct skb_shared_info'": 1}
    assert sum(c.program is not None for c in naked) == 1154


def test_kernel_spot_checks(kernel_cases):
    ref = kernel_cases["verifier_ref_tracking.c::reference_tracking_leak_potential_reference"]
    assert ref.prog_type == "sched_cls" and ref.msgs == ("Unreleased reference",)
    # BPF_SK_LOOKUP(bpf_sk_lookup_tcp): sizeof(struct bpf_sock_tuple) then helper 84, all at
    # the macro's line.
    assert ref.program.insns[9] == mov(3, 36) and ref.program.insns[12] == Insn(isa.JMP | isa.CALL, imm=84)
    assert {ref.program.lines[pc].line for pc in range(13)} == {116}

    tail = kernel_cases["verifier_tailcall_jit.c::main"].program
    assert tail.funcs == ((0, "main"), (3, "sub"))
    assert tail.insns[0] == Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, 2)
    assert tail.maps[0].type == "prog_array" and tail.maps[0].values == ((0, "main"),)

    may_goto = kernel_cases["verifier_iterating_callbacks.c::jgt_imm64_and_may_goto"].program
    assert may_goto.insns[0] == Insn(isa.LD_IMM64, 0, isa.PSEUDO_MAP_VALUE, 0, 0)
    assert may_goto.maps[0].name == ".bss" and may_goto.insns[2] == Insn(isa.JMP | isa.JCOND, 0, 0, -3)

    sdiv = kernel_cases["verifier_sdiv.c::sdiv32_non_zero_imm_1"]
    assert sdiv.retval == -20 and sdiv.expect_unpriv == "success"
    assert sdiv.program.insns[1] == Insn(isa.ALU | isa.DIV | isa.K, 0, 0, 1, 2)

    ld_abs = kernel_cases["verifier_ld_ind.c::ld_abs_subprog_both_paths_safe"].program
    assert ld_abs.insns[4] == Insn(isa.LD | isa.W | isa.ABS)


def test_uapi_facts_match_the_tree(kernel_selftests):
    """The tables used when no kernel tree is around agree with the tree's bpf.h."""
    from checks.kselftest import uapi, uapi_facts
    tree = uapi.load(kernel_selftests / "progs" / "verifier_and.c")
    assert tree.origin.startswith("tree") and tree.problems == []
    facts = uapi._from_facts()
    for key in uapi_facts.FALLBACK_STRUCTS:
        mine, theirs = facts.layouts.tag(key), tree.layouts.tag(key)
        assert (mine.size, mine.align) == (theirs.size, theirs.align), key
        for name, offset, *_ in uapi_facts.FALLBACK_STRUCTS[key][2]:
            path = name.split(".")
            assert facts.layouts.offset_of(mine, path) == tree.layouts.offset_of(theirs, path), (key, name)
    assert all(tree.helpers[name] == n for name, n in uapi_facts.FALLBACK_HELPERS.items())
    assert all(tree.constant(name).value == v for name, v in uapi_facts.FALLBACK_CONSTANTS.items())


LLVM_MC = shutil.which("llvm-mc-14")


@pytest.mark.skipif(LLVM_MC is None, reason="llvm-mc-14 is not installed")
def test_imported_statements_assemble_as_llvm_does(kernel_selftests, tmp_path):
    """A sample of kernel test functions: the statements the importer hands the assembler give
    the same bytes under llvm-mc-14 (functions it cannot read, v4 forms, are left out)."""
    from elftools.elf.elffile import ELFFile
    from checks.kselftest.importer import _Unit
    from checks.kselftest.linker import NeedsCompiler
    compared = 0
    for path in sorted((kernel_selftests / "progs").glob("verifier_*.c"))[::3]:
        unit = _Unit(path, path.read_text())
        for name in list(unit.functions)[::3]:
            try:
                code = unit.code(name)
            except NeedsCompiler:             # C-bodied, or operands a compiler picks
                continue
            if any(i.src and (i.is_call or i.is_ld_imm64) for i in code.insns):
                continue                      # map and call relocations differ by design
            text = "\n".join(s.text for s in code.statements)
            obj = tmp_path / "f.o"
            run = subprocess.run([LLVM_MC, "-triple", "bpf", "-filetype=obj", "-o", str(obj)],
                                 input=text, capture_output=True, text=True)
            if run.returncode:
                continue
            with obj.open("rb") as f:
                assert ELFFile(f).get_section_by_name(".text").data() == \
                    b"".join(i.to_bytes() for i in code.insns), f"{path.name}::{name}"
            compared += 1
    assert compared >= 50
