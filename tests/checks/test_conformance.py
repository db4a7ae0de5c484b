"""The `.data` format and the bundled bpf_conformance and uBPF suites, through the runner."""
from __future__ import annotations

import pytest

from checks import conformance
from checks.errors import CheckError
from checks.memory_regions import INPUT_BASE, Memory, Region
from checks.runner import InterpEngine, run_tests
from jit.errors import JitError
from jit.isa import Insn


def results_by_id(path) -> dict:
    return {r.id: r for r in run_tests([str(path)], engine=InterpEngine())}


def test_every_bpf_conformance_test_passes(conformance_dir):
    results = results_by_id(conformance_dir / "tests")
    assert len(results) == 313
    bad = {i: r.reason for i, r in results.items() if r.status != "pass"}
    assert bad == {}
    assert all(r.retval == r.expected_retval for r in results.values())
    assert results["mem-len.data"].retval == 8


def test_negative_files_are_never_accepted(conformance_dir):
    results = results_by_id(conformance_dir / "negative")
    assert len(results) == 60
    refused = {i for i, r in results.items() if r.expect == "failure" and r.status == "pass"}
    others = {i: r.status for i, r in results.items() if i not in refused}
    # error.data (`or %r0, %r10`) runs fine here: it returns the frame pointer, which only a
    # verifier's pointer-leak check would refuse.
    assert others.pop("error.data") == "fail"
    assert others.pop("incorrect_return_value_high_bits.data") == "fail"
    assert set(others.values()) == {"error"}          # malformed files and bad assembly
    assert len(refused) == 48
    assert all(results[i].error_match for i in refused)


def test_ubpf_files_with_a_result_pass(ubpf_dir):
    results = results_by_id(ubpf_dir / "tests")
    with_result = {i: r for i, r in results.items() if r.expected_retval is not None}
    assert {i: r.status for i, r in with_result.items() if r.status != "pass"} == \
        {"elf/ok.data": "skip"}                        # needs uBPF's pyelf mutator
    assert len(with_result) >= 40
    # Refusals uBPF makes that the kernel does not: gotol (0x06) is a cpu v4 instruction and the
    # kernel loads up to 1,000,000 instructions, not 65,536.
    assert {i for i, r in results.items() if r.status == "fail"} == \
        {"errors/err-unknown-opcode.data", "errors/err-too-many-instructions.data"}
    assert results["alu.data"].status == "pass"          # an asm-vs-raw assembler test


def write(tmp_path, text: str, name: str = "t.data") -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_hexdump_mem_and_sibling_files(tmp_path):
    (tmp_path / "prog.asm").write_text("ldxh %r0, [%r1+2]\nexit\n")
    (tmp_path / "pkt.hex").write_text("0x0000:  0102 0304\n")
    test = conformance.parse_file(write(tmp_path, "-- asm @ prog.asm\n-- mem @ pkt.hex\n-- result\n0x403\n"))
    assert conformance.input_memory(test) == b"\x01\x02\x03\x04"
    program = conformance.build_program(test)
    assert program.lines[0].file.endswith("prog.asm") and program.lines[0].line == 1


def test_raw_accepts_numbers_and_byte_lines(tmp_path):
    test = conformance.parse_file(write(tmp_path, "-- raw\n0x00000001000000b7 149\n"
                                                  "b7 00 00 00 02 00 00 00\n-- result\n1\n"))
    assert conformance.build_program(test).insns == (Insn(0xB7, imm=1), Insn(0x95), Insn(0xB7, imm=2))


def test_result_is_hex_only_with_0x_and_compared_on_64_bits(tmp_path):
    test = conformance.parse_file(write(tmp_path, "-- asm\nexit\n-- result\n0x1\n10\n"))
    assert conformance.expected_retval(test) == 10
    test = conformance.parse_file(write(tmp_path, "-- asm\nexit\n-- result\n0xffffffffffffffff\n"))
    assert conformance.expected_retval(test) == 2**64 - 1


MALFORMED = [
    ("-- asm\nexit\n-- bogus\n-- result\n0\n", CheckError, 3, "unknown section '-- bogus'"),
    ("-- asm\nexit\n-- asm\nexit\n-- result\n0\n", CheckError, 3, "appears twice"),
    ("-- raw\n07 00 01 00 01 00 00\n-- result\n0\n", CheckError, 2, "truncated instruction: 7 bytes"),
    ("-- raw\nzz\n-- result\n0\n", CheckError, 2, "raw: not a number: 'zz'"),
    ("-- raw\n0x00000000000000ff\n-- result\n0\n", JitError, 2, "unknown opcode 0xff"),
    ("-- asm\nmov %r0, 1\nfrob %r0\nexit\n-- result\n0\n", JitError, 3, "Invalid mnemonic: frob"),
    ("-- mem\n0g\n-- asm\nexit\n-- result\n0\n", CheckError, 2, "mem: not hex bytes"),
    ("-- asm\nmov %r0, 1\nexit\n-- raw\n0x95\n-- result\n1\n", CheckError, 4, "give different programs"),
    ("-- asm\n-- result\n0\n", CheckError, None, "no instructions"),
    ("-- asm\nexit\n", CheckError, None, "neither a '-- result' nor an '-- error'"),
    ("-- result\nseven\n-- asm\nexit\n", CheckError, 2, "result is not a number"),
    ("exit\n-- result\n0\n", CheckError, 1, "text before the first section"),
]


@pytest.mark.parametrize("text,error,line,message", MALFORMED, ids=[m[3] for m in MALFORMED])
def test_malformed_files_raise_one_located_error(tmp_path, text, error, line, message):
    path = write(tmp_path, text)
    with pytest.raises(error) as info:
        conformance.DataCase("t.data", path).run(InterpEngine(), insn_limit=1000)
    assert message in info.value.message
    assert info.value.file == path and info.value.line == line


def test_unreadable_file(tmp_path):
    path = tmp_path / "t.data"
    path.write_bytes(b"\xff\xfe-- asm\n")
    with pytest.raises(CheckError, match="cannot read test file"):
        conformance.parse_file(str(path))


def test_expected_error_text_and_pattern(tmp_path):
    def run(text):
        return conformance.DataCase("t", write(tmp_path, text)).run(InterpEngine(), insn_limit=100)

    matched = run("-- asm\nmov %r0, %r11\nexit\n-- error\ninvalid register\n")
    assert (matched.status, matched.expect, matched.error_match) == ("pass", "failure", True)
    differs = run("-- asm\nmov %r0, %r11\nexit\n-- error\nsomething else\n")
    assert (differs.status, differs.error_match) == ("pass", False)
    pattern = run("-- asm\nstb [%r10], 0\nexit\n-- error pattern\ninvalid write of size \\d\n-- result\n-1\n")
    assert (pattern.status, pattern.error_match, pattern.expected_retval) == ("pass", True, None)
    ran = run("-- asm\nmov %r0, 3\nexit\n-- error\nanything\n")
    assert (ran.status, ran.retval) == ("fail", 3) and "expected an error" in ran.reason


def test_run_time_fault_is_a_failure_with_its_source_line(tmp_path):
    path = write(tmp_path, "-- asm\nmov %r0, 0\nldxw %r0, [%r1+8]\nexit\n-- mem\n00 00\n-- result\n0\n")
    result = conformance.DataCase("t", path).run(InterpEngine(), insn_limit=100)
    assert result.status == "fail"
    assert result.reason.startswith(f"{path}:3: invalid read of size 4 at {INPUT_BASE + 8:#x} by insn #1")


def test_ubpf_helpers():
    mem = Memory([Region("mem", 0x100, bytearray(b"abc\0abd\0\x01\x02"))])
    assert conformance.gather_bytes(mem, 1, 2, 3, 4, 0x105) == 0x0102030405
    assert conformance.strcmp_ext(mem, 0x100, 0x104) == 2**64 - 1
    assert conformance.strcmp_ext(mem, 0x104, 0x100) == 1
    assert conformance.strcmp_ext(mem, 0x100, 0x100) == 0
    assert conformance.sqrti(mem, 17) == 4 and conformance.sqrti(mem, 2**32 + 16) == 4
    assert conformance.memfrob(mem, 0x108, 2) == 0 and mem.read(0x108, 2) == bytes([1 ^ 42, 2 ^ 42])
    assert conformance.unwind(mem, 9) == 9 and conformance.no_op(mem, 1, 2, 3, 4, 5) == 0
