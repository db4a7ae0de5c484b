"""jit.elf: BPF objects built at test time by clang-19 from our own sources in tests/data/elf/
(linked.c in the test_loader format, nobtf.s in plain assembly), read back into Programs and,
through checks.kselftest.elf_cases, into the same SelftestCases the C importer gives."""
from __future__ import annotations

import dataclasses
import io
import pathlib
import random
import re
import shutil
import struct
import subprocess

import pytest
from elftools.elf.elffile import ELFFile

from checks import interp
from checks.kselftest import load_cases
from checks.kselftest.elf_cases import differences, load_elf_cases
from checks.memory_regions import Region
from jit import isa
from jit.elf import NeedsKernel, is_bpf_object, load_object, read_object
from jit.errors import JitError

DATA = pathlib.Path(__file__).resolve().parents[1] / "data" / "elf"
CLANG = shutil.which("clang-19")


def _build(source: pathlib.Path, out: pathlib.Path, *flags: str) -> pathlib.Path:
    done = subprocess.run([CLANG, "-target", "bpf", "-O2", "-g", "-mcpu=v4", "-I", str(DATA / "include"),
                           *flags, "-c", str(source), "-o", str(out)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return out


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, pathlib.Path]:
    if CLANG is None:
        pytest.skip("clang-19 is not installed (apt-get install clang-19): it builds the test objects")
    out = tmp_path_factory.mktemp("elf")
    return {"linked": _build(DATA / "linked.c", out / "linked.o"),
            "nobtf": _build(DATA / "nobtf.s", out / "nobtf.o", "-g0")}


@pytest.fixture(scope="module")
def linked(built):
    return read_object(built["linked"])


def _section(data: bytes, name: str):
    """(file offset, size) of a section, to corrupt it on purpose."""
    sec = ELFFile(io.BytesIO(data)).get_section_by_name(name)
    return sec["sh_offset"], sec["sh_size"]


def _patched(data: bytes, offset: int, fmt: str, value: int) -> bytes:
    out = bytearray(data)
    struct.pack_into(fmt, out, offset, value)
    return bytes(out)


def _refused(data: bytes, pattern: str) -> str:
    with pytest.raises(JitError) as e:
        obj = load_object(data, file="bad.o")
        for entry in obj.entries:
            obj.program(entry.name, prog_type="socket_filter")
    text = str(e.value)
    assert text.startswith("bad.o: ") and "\n" not in text
    assert re.search(pattern, text), text
    return text


# -- programs, maps, relocations --------------------------------------------------------------

def test_programs_of_one_section_are_split_by_symbol(linked):
    by_section = {}
    for entry in linked.entries:
        by_section.setdefault(entry.section, []).append(entry.name)
    assert by_section["socket"] == ["tail_a", "tail_b", "read_map", "add_twice", "globals", "do_tail",
                                    "in_outer", "c_body", "arm_only", "local_call"]
    assert by_section["tc"] == ["tc_prog", "kfunc_user"]
    assert by_section["?socket"] == ["rejected"]
    assert not {"add_one", "add_zero", "loop_body"} & {e.name for e in linked.entries}


def test_btf_defined_maps(linked):
    maps = {m.name: m for m in linked.maps.values()}
    counts, slots, outer, jumps = maps["counts"], maps["slots"], maps["outer"], maps["jumps"]
    assert (counts.type, counts.key_size, counts.value_size, counts.max_entries, counts.flags) == ("hash", 4, 8, 8, 1)
    assert (slots.type, slots.key_size, slots.value_size, slots.max_entries) == ("array", 4, 16, 2)
    assert (outer.type, outer.value_size) == ("array_of_maps", 4)
    assert (outer.inner.type, outer.inner.value_size, outer.inner.max_entries) == ("array", 8, 3)
    assert (jumps.type, jumps.key_size, jumps.value_size) == ("prog_array", 4, 4)
    assert jumps.values == ((1, "tail_a"), (3, "tail_b"))


def test_map_reference_becomes_map_fd_with_the_map_index(linked):
    prog = linked.program("read_map", prog_type="socket_filter")
    loads = [(pc, i) for pc, i in enumerate(prog.insns) if i.is_ld_imm64]
    assert [(i.src, i.imm) for _, i in loads] == [(isa.PSEUDO_MAP_FD, 0)]
    assert [m.name for m in prog.maps] == ["counts"]


def test_globals_become_map_values_one_map_per_section(linked):
    prog = linked.program("globals", prog_type="socket_filter")
    loads = [(i.src, i.imm, prog.insns[pc + 1].imm) for pc, i in enumerate(prog.insns) if i.is_ld_imm64]
    assert loads == [(isa.PSEUDO_MAP_VALUE, 0, 0), (isa.PSEUDO_MAP_VALUE, 1, 0), (isa.PSEUDO_MAP_VALUE, 2, 0)]
    data, rodata, bss = prog.maps
    assert (data.name, data.value_size, data.initial) == (".data", 8, ((0, struct.pack("<ii", 5, 9)),))
    assert (rodata.name, rodata.flags, rodata.initial) == (".rodata", 1 << 7, ((0, struct.pack("<i", 42)),))
    assert (bss.name, bss.value_size, bss.initial) == (".bss", 8, ())
    second = linked.program("tc_prog", prog_type="sched_cls")
    assert (second.insns[0].src, second.insns[1].imm) == (isa.PSEUDO_MAP_VALUE, 4)      # `second` is at +4


def test_calls_into_text_append_each_callee_once_depth_first(linked):
    prog = linked.program("add_twice", prog_type="socket_filter")
    assert prog.funcs == ((0, "add_twice"), (5, "add_one"), (8, "add_zero"))
    targets = [pc + 1 + i.imm for pc, i in enumerate(prog.insns) if i.is_pseudo_call]
    assert targets == [5, 5, 8]
    # the same subprogram is appended to every program that calls it
    assert linked.program("tc_prog", prog_type="sched_cls").funcs[1:] == ((5, "add_one"), (8, "add_zero"))


def test_callback_address_becomes_pseudo_func(linked):
    prog = linked.program("callback_user", prog_type="xdp")
    (pc, load), = [(pc, i) for pc, i in enumerate(prog.insns) if i.is_ld_imm64]
    assert load.src == isa.PSEUDO_FUNC and (pc + 1 + load.imm, "loop_body") in prog.funcs


def test_call_by_label_stays_inside_its_function(linked):
    prog = linked.program("local_call", prog_type="socket_filter")
    assert prog.funcs[0] == (0, "local_call") and prog.funcs[1][0] == 3
    assert re.fullmatch(r"l0_\d+", prog.funcs[1][1])          # named by clang's label symbol
    assert prog.insns[1].is_pseudo_call and prog.insns[1].imm == 1


def test_kfunc_call_needs_kernel_btf(linked):
    with pytest.raises(NeedsKernel, match="calls kfunc bpf_rcu_read_lock: needs kernel BTF"):
        linked.program("kfunc_user", prog_type="sched_cls")


def test_every_slot_carries_its_source_line(linked):
    source = (DATA / "linked.c").read_text().splitlines()
    for entry in linked.entries:
        if entry.name == "kfunc_user":
            continue
        prog = linked.program(entry.name, prog_type="socket_filter")
        assert sorted(prog.lines) == list(range(len(prog.insns))), entry.name
        for where in prog.lines.values():
            assert where.file.endswith("tests/data/elf/linked.c")
            assert source[where.line - 1] == where.text
    asm_line = next(n for n, text in enumerate(source, 1) if "r0 = r1; exit;" in text)
    add_twice = linked.program("add_twice", prog_type="socket_filter")
    assert add_twice.lines[8].line == asm_line          # add_zero's slots name add_zero's asm


def test_annotations_are_the_btf_decl_tags_in_order(linked):
    entry = next(e for e in linked.entries if e.name == "rejected")
    assert linked.tags(entry) == [
        "comment:test_description=rejected, messages in order", "comment:test_expect_failure",
        "comment:test_expect_msg=0=first message", "comment:test_expect_msg=1=first message",
        "comment:test_expect_msg=2=R1 !read_ok", "comment:test_prog_flags=BPF_F_ANY_ALIGNMENT"]


def test_object_without_btf_still_links(built):
    obj = read_object(built["nobtf"])
    assert obj.btf is None and [e.name for e in obj.entries] == ["main_prog"]
    prog = obj.program("main_prog", prog_type="socket_filter")
    assert prog.funcs == ((0, "main_prog"), (5, "twice")) and prog.lines == {}
    assert prog.insns[3].imm == 1 and prog.insns[1].imm == 0


# -- the same cases as the C importer, and the same runs -----------------------------------------

def test_cases_from_the_object_equal_the_cases_from_the_source(built):
    from_elf = {c.name: c for c in load_elf_cases(built["linked"])}
    from_c = {c.name: c for c in load_cases(DATA / "linked.c")}
    assert sorted(from_elf) == sorted(from_c)
    assert {name: differences(c, from_elf[name]) for name, c in from_c.items()} == {name: [] for name in from_c}
    assert from_c["c_body"].skip_reason == "needs a compiler: C body" and from_elf["c_body"].program is not None
    assert from_elf["kfunc_user"].skip_reason == "calls kfunc bpf_rcu_read_lock: needs kernel BTF"
    assert from_elf["arm_only"].skip_reason == from_c["arm_only"].skip_reason == "arch arm64 only"


def _run(program):
    """The interpreter, with each map's value 0 (the global sections) as a region."""
    regions = [Region(m.name, 0x7000_0000 + 0x1000 * n, bytearray(dict(m.initial).get(0, bytes(m.value_size))))
               for n, m in enumerate(program.maps)]

    def resolve(first, second, pc):
        return regions[first.imm].base + second.imm

    return interp.run(program, regions=regions, resolve_pseudo=resolve)


@pytest.mark.parametrize("name", ["add_twice", "globals", "local_call"])
def test_object_runs_the_same_as_its_inline_asm_source(built, name):
    from_elf = {c.name: c for c in load_elf_cases(built["linked"])}[name]
    from_c = {c.name: c for c in load_cases(DATA / "linked.c")}[name]
    ran_elf, ran_c = _run(from_elf.program), _run(from_c.program)
    assert ran_elf.error is None and ran_c.error is None
    assert ran_elf.r0 == ran_c.r0 == from_c.retval
    assert ran_elf.insns == ran_c.insns


def test_is_bpf_object_reads_the_header(built, tmp_path):
    assert is_bpf_object(built["linked"])
    host = tmp_path / "host.o"
    host.write_bytes(built["linked"].read_bytes()[:18] + struct.pack("<H", 62) + bytes(100))   # EM_X86_64
    assert not is_bpf_object(host) and not is_bpf_object(tmp_path / "missing.o")
    renamed = tmp_path / "linked.bin"
    shutil.copy(built["linked"], renamed)
    assert not is_bpf_object(renamed)


# -- bad input: one line naming the file and the place, never a traceback ---------------------

def test_not_a_bpf_object():
    _refused(b"", "not a BPF object")
    _refused(b"\x7fELF" + bytes(60), "not a BPF object")
    _refused(b"#!/bin/sh\n" * 10, "not a BPF object")


def test_truncated_objects(built):
    data = built["linked"].read_bytes()
    _refused(data[:40], r"truncated: the ELF header needs 64 bytes, the file has 40")
    for cut in range(64, len(data), 97):
        _refused(data[:cut], r"truncated|runs past the end")


def test_bad_relocations(built):
    data = built["linked"].read_bytes()
    rel, _ = _section(data, ".relsocket")
    # Elf64_Rel: r_offset (8), r_info = symbol << 32 | type (8)
    _refused(_patched(data, rel + 8, "<Q", (0x7FFF << 32) | 1),
             r"relocation section '\.relsocket' at offset 0x\w+: symbol #32767 does not exist")
    sym = struct.unpack_from("<Q", data, rel + 8)[0] >> 32
    _refused(_patched(data, rel + 8, "<Q", (sym << 32) | 7),
             r"section 'socket' offset 0x\w+: unsupported relocation type 7")
    read_map = next(s for s in ELFFile(io.BytesIO(data)).get_section_by_name(".symtab").iter_symbols()
                    if s.name == "read_map")["st_value"]
    _refused(_patched(data, rel, "<Q", read_map),          # now on `r1 = 3`, not on an ld_imm64
             r"section 'socket' offset 0x20: relocation against 'counts' patches opcode 0xb7, not a call or ld_imm64")
    _refused(_patched(data, rel, "<Q", 0x10000), r"section 'socket' offset 0x10000: relocation outside every function")


def test_bad_btf(built):
    data = built["linked"].read_bytes()
    btf, size = _section(data, ".BTF")
    _refused(_patched(data, btf, "<H", 0x1234), r"\.BTF at offset 0x0: bad magic 0x1234")
    _refused(_patched(data, btf + 12, "<I", size * 4),
             r"\.BTF at offset 0x8: types \(\d+ bytes at 0x\w+\) run past the end")
    hdr_len = struct.unpack_from("<I", data, btf + 4)[0]
    first_type_info = btf + hdr_len + 4
    _refused(_patched(data, first_type_info, "<I", 31 << 24), r"\.BTF at offset 0x\w+: type \[1\]: unknown kind 31")


def test_random_byte_flips_give_programs_or_our_error(built):
    data = built["linked"].read_bytes()
    rng = random.Random(20240601)
    outcomes = {"loaded": 0, "refused": 0}
    for _ in range(400):
        corrupt = bytearray(data)
        for _ in range(rng.randint(1, 6)):
            corrupt[rng.randrange(len(corrupt))] ^= 1 << rng.randrange(8)
        try:
            obj = load_object(bytes(corrupt), file="fuzz.o")
            for entry in obj.entries:
                try:
                    assert obj.program(entry.name, prog_type="socket_filter").insns
                except NeedsKernel:
                    pass
            outcomes["loaded"] += 1
        except JitError as e:
            assert str(e).startswith("fuzz.o: ") and "\n" not in str(e)
            outcomes["refused"] += 1
    assert outcomes["loaded"] > 50 and outcomes["refused"] > 50, outcomes


def test_differences_name_what_disagrees(built):
    case = next(c for c in load_elf_cases(built["linked"]) if c.name == "add_twice")
    assert differences(case, case) == []
    assert differences(case, dataclasses.replace(case, retval=8)) == ["retval: source 7, object 8"]
    insns = list(case.program.insns)
    insns[2] = dataclasses.replace(insns[2], imm=9)
    changed = dataclasses.replace(case, program=dataclasses.replace(case.program, insns=tuple(insns)))
    assert differences(case, changed) == ["instructions differ from slot 2 (10 vs 10 slots)"]


def test_the_runner_runs_an_object_as_it_runs_its_source(built, tmp_path):
    from checks import runner
    source = tmp_path / "linked.c"
    shutil.copy(DATA / "linked.c", source)
    (kind, _), = {(t.name, i) for _, i, t in runner.collect([str(built["linked"])])}
    assert kind.startswith("BPF ELF object")
    engine = runner.make_engine("interp")
    ran = {}
    for path in (source, built["linked"]):
        for r in runner.run_tests([str(path)], engine=engine, explore=0):
            ran.setdefault(r.id.split("::", 1)[1], {})[path.suffix] = (r.status, r.retval, r.reason)
    assert len(ran) == 12
    # Only the compiler builds c_body and kfunc_user; the C importer gives no inner map
    # template for in_outer, so its source cannot run.
    for name, outcome in ran.items():
        if name not in ("c_body", "kfunc_user", "in_outer"):
            assert outcome[".o"] == outcome[".c"], name
    assert ran["add_twice"][".o"][:2] == ("pass", 7) and ran["c_body"][".o"][0] == "pass"


def test_a_finding_in_an_object_names_its_source_line(tmp_path):
    if CLANG is None:
        pytest.skip("clang-19 is not installed (apt-get install clang-19): it builds the test objects")
    from checks import runner
    from checks.results import all_findings
    obj = _build(DATA / "oob.c", tmp_path / "oob.o")
    results = list(runner.run_tests([str(obj)], engine=runner.make_engine("interp"), explore=0))
    (finding,) = all_findings(results)
    asm_line = next(n for n, text in enumerate((DATA / "oob.c").read_text().splitlines(), 1) if "asm volatile" in text)
    assert finding["insn"] == 8 and finding["bug_type"] == "slab-out-of-bounds"
    assert f"bpf-kasan: source {DATA / 'oob.c'}:{asm_line}: asm volatile" in finding["report"]


def test_bad_annotations_are_case_errors_naming_the_c_line(tmp_path):
    if CLANG is None:
        pytest.skip("clang-19 is not installed (apt-get install clang-19): it builds the test objects")
    source = DATA / "bad_cases.c"
    cases = {c.name: c for c in load_elf_cases(_build(source, tmp_path / "bad_cases.o"))}
    lines = source.read_text().splitlines()
    retval_line = next(n for n, text in enumerate(lines, 1) if "r0 = 12" in text)
    section_line = next(n for n, text in enumerate(lines, 1) if "r0 = 0;" in text)
    assert str(cases["unparsable_retval"].error) == f"{source}:{retval_line}: cannot parse __retval from 'twelve'"
    assert str(cases["unknown_section"].error) == \
        f"{source}:{section_line}: unknown program section 'no_such_program_type'"
    assert cases["fine"].error is None and cases["fine"].retval == 1 and cases["fine"].program is not None
