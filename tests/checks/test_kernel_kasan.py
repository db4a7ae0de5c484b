"""KASAN in real runs: the kernel's KASAN selftest scenarios (prog_tests/kasan.c, re-expressed in
LLVM asm with our testmod kfuncs), multishot, and inline == outline on every program here.

Every scenario runs in both KASAN modes; `test_inline_and_outline_agree_on_every_program`
runs all of them (and the KASAN-free ones) in both and requires identical findings.
"""
from __future__ import annotations

import pathlib

import pytest

from _kernel_fixtures import (FIELD, MISS, OOB_ALLOC, POISON, UNPOISON, poisoned, program, run,
                              shape, value_of)
from checks.conformance import (SKIPPED, UBPF_HELPERS, UBPF_UNWIND_HELPER, build_program,
                                input_memory, parse_file)
from checks.jit_engine import JitEngine
from checks.kernel import Kernel
from jit.errors import BpfKasanError
from jit.tag import func_tags

MODES = ("inline", "outline")
SIZES = (1, 2, 4, 8)
T = {1: "u8", 2: "u16", 4: "u32", 8: "u64"}
W = {1: "w", 2: "w", 4: "w", 8: "r"}


@pytest.fixture(scope="module", params=MODES)
def kernel(request) -> Kernel:
    return Kernel(kasan=request.param)


def access(size: int, kind: str) -> str:
    off, t, w = FIELD[size], T[size], W[size]
    return {"st": f"*({t} *)(r6 + {off}) = 7",
            "stx": f"{w}1 = 7\n*({t} *)(r6 + {off}) = {w}1",
            "ldx": f"{w}1 = *({t} *)(r6 + {off})",
            "load_acquire": f"{w}1 = load_acquire(({t} *)(r6 + {off}))",
            "store_release": f"{w}1 = 7\nstore_release(({t} *)(r6 + {off}), {w}1)"}[kind]


SIMPLE = [(kind, size) for kind in ("st", "stx", "ldx", "load_acquire", "store_release")
          for size in SIZES]
ATOMICS = {
    "add": "lock *({t} *)(r6 + {off}) += {w}1",
    "fetch_add": "{w}1 = atomic_fetch_add(({t} *)(r6 + {off}), {w}1)",
    "fetch_or": "{w}1 = atomic_fetch_or(({t} *)(r6 + {off}), {w}1)",
    "xchg": "{w}1 = xchg{x}(r6 + {off}, {w}1)",
    "cmpxchg": "{w}0 = cmpxchg{x}(r6 + {off}, {w}0, {w}1)",
}


def atomic(op: str, size: int) -> str:
    text = ATOMICS[op].format(t=T[size], off=FIELD[size], w=W[size],
                              x="_64" if size == 8 else "32_32")
    return f"{W[size]}1 = 1\n{text}"


@pytest.mark.parametrize("kind,size", SIMPLE)
def test_access_to_a_poisoned_map_value_is_a_use_after_free(kernel, kind, size):
    r = run(kernel, program(poisoned(access(size, kind), size), name=f"{kind}_{size}"))
    assert r.error is None and r.fault is None and r.r0 == 0
    is_write = kind in ("st", "stx", "store_release")
    [f] = r.findings
    assert (f.bug_type, f.access, f.size) == ("slab-use-after-free", "write" if is_write else "read",
                                              size)
    assert f"{'Write' if is_write else 'Read'} of size {size} at addr" in f.report
    assert f.function.startswith("bpf_prog_") and f.function.endswith(f"_{kind}_{size}")
    assert f.object == "map value of not_on_stack[0]" and f.mode == "faithful"


@pytest.mark.parametrize("op", sorted(ATOMICS))
@pytest.mark.parametrize("size", (4, 8))
def test_atomics_are_reported_as_writes(kernel, op, size):
    r = run(kernel, program(poisoned(atomic(op, size), size), name=f"atomic_{op}"))
    assert [(f.bug_type, f.access, f.size) for f in r.findings] == \
        [("slab-use-after-free", "write", size)]


@pytest.mark.parametrize("kind,size", SIMPLE)
def test_the_same_access_on_the_stack_is_not_reported(kernel, kind, size):
    off = -16 + FIELD[size]
    body = f"""
        r1 = r10
        r1 += -16
        r2 = 16
        call kfunc({POISON})
    """ + access(size, kind).replace(f"r6 + {FIELD[size]}", f"r10 - {-off}") + MISS
    r = run(kernel, program(body, name="on_stack"))
    assert r.findings == [] and r.error is None and r.r0 == 0


def test_unpoison_makes_the_access_clean_again(kernel):
    body = access(8, "ldx").join(["", f"""
        r1 = r6
        r1 += 8
        r2 = 8
        call kfunc({UNPOISON})
    """]).join(["", access(8, "ldx")])
    r = run(kernel, program(poisoned(body, 8)))
    assert len(r.findings) == 1                      # only the read before the unpoison


def stack_or_map(choose_map: int) -> str:
    """One STX whose base is the stack on one path and a (poisoned) map value on the other."""
    return f"r7 = {choose_map}\n" + value_of() + f"""
        r1 = r6
        r2 = 1
        call kfunc({POISON})
        r2 = r10
        r2 += -8
        if r7 == 0 goto store
        r2 = r6
    store:
        w1 = 1
        *(u8 *)(r2 + 0) = w1
    """ + MISS


def test_one_store_reaching_the_stack_or_a_map_is_checked_on_the_map_path(kernel):
    on_map = run(kernel, program(stack_or_map(1), name="paths"))
    assert [(f.bug_type, f.access, f.size) for f in on_map.findings] == \
        [("slab-use-after-free", "write", 1)]
    assert run(kernel, program(stack_or_map(0), name="paths")).findings == []


@pytest.mark.parametrize("size", SIZES)
def test_read_past_an_object_allocated_smaller_than_its_type(kernel, size):
    body = f"""
        call kfunc({OOB_ALLOC})
        if r0 == 0 goto out
        {W[size]}1 = *({T[size]} *)(r0 + 8)
    out:
        r0 = 0
        exit
    """
    [f] = run(kernel, program(body, maps=(), name="ldx_oob")).findings
    assert (f.bug_type, f.access, f.size) == ("slab-out-of-bounds", "read", size)
    assert "located 7 bytes to the right of\n allocated 1-byte region" in f.report


def test_load_through_a_copy_of_the_frame_pointer_is_not_reported(kernel):
    body = """
        r1 = r10
        r1 += -8
        r1 = *(u64 *)(r1 + 0)
        r0 = 0
        exit
    """
    r = run(kernel, program(body, maps=(), name="self_alias"))
    assert r.findings == [] and r.error is None


THREE_BAD = poisoned("""
        r1 = *(u64 *)(r6 + 8)
        *(u64 *)(r6 + 8) = r1
        lock *(u64 *)(r6 + 8) += r1
""")


@pytest.mark.parametrize("mode", MODES)
def test_multishot_keeps_every_report_and_single_shot_only_the_first(mode):
    prog = program(THREE_BAD, name="three")
    many = run(Kernel(kasan=mode), prog)
    assert [(f.access, f.insn) for f in many.findings] == [("read", 13), ("write", 14), ("write", 15)]
    assert "Not tainted" in many.findings[0].report and "Tainted: G    B" in many.findings[1].report
    once = Kernel(kasan=mode, multishot=False)
    assert [(f.access, f.insn) for f in run(once, prog).findings] == [("read", 13)]
    assert run(once, prog).findings == []            # the first report of the process is gone


def test_kasan_off_reports_nothing_and_the_access_still_happens():
    r = run(Kernel(kasan="off"), program(poisoned("r0 = *(u64 *)(r6 + 8)\nexit\n")))
    assert r.findings == [] and r.r0 == 0


def test_findings_name_each_function_by_its_own_tag(kernel):
    text = poisoned("""
        r1 = r6
        call sub
    """) + """
    sub:
        r0 = *(u64 *)(r1 + 8)
        r0 = 0
        exit
    """
    prog = program(text, name="main")
    [f] = run(kernel, prog, variant="v1").findings
    tags = func_tags(prog)
    assert tags[0] != tags[1] and f.function == f"bpf_prog_{tags[1]}_sub"
    assert (f.insn, f.variant, f.test) == (0, "v1", "main")


def test_guard_page_past_a_slab_is_an_oops():
    kernel = Kernel(kasan="off")
    prog = program("r0 = *(u64 *)(r1 + 8)\nexit\n", maps=())
    kernel.begin(prog)
    kernel.kmalloc(16, "some object")
    guard = kernel.machine.slab.guard_ranges()[1][0]          # after the first slab
    r = kernel.execute(prog, args=(guard,))
    assert r.fault.splitlines()[0] == f"BUG: unable to handle page fault for address: {guard + 8:016x}"
    assert r.fault_insn == 0 and r.error is None


# -- inline == outline on every program of ours --------------------------------------------------

def every_program():
    progs = [program(poisoned(access(s, k), s), name=f"{k}_{s}") for k, s in SIMPLE]
    progs += [program(poisoned(atomic(op, s), s), name=op) for op in ATOMICS for s in (4, 8)]
    progs += [program(stack_or_map(c), name="paths") for c in (0, 1)]
    progs += [program(THREE_BAD, name="three")]
    progs += [program(f"call kfunc({OOB_ALLOC})\nr1 = *(u{8 * s} *)(r0 + 8)\nr0 = 0\nexit",
                      maps=(), name="oob") for s in SIZES]
    # Wild addresses (one whose shadow would alias the direct map), and ranges that wrap past 2**64:
    # reported, then the oops.
    progs += [program(f"r1 = {addr:#x} ll\nr0 = *(u{8 * s} *)(r1 + 0)\nexit", maps=(),
                      name=f"wild_{addr:x}_{s}")
              for addr in (0x10, 0xFFFC640000000000, 0xFFFFFFFFFFFFFFFC) for s in SIZES]
    return progs


def test_inline_and_outline_agree_on_every_program():
    inline, outline = Kernel(kasan="inline"), Kernel(kasan="outline")
    reporting = 0
    for prog in every_program():
        a, b = run(inline, prog), run(outline, prog)
        assert (a.r0, a.error, a.fault is None) == (b.r0, b.error, b.fault is None), prog.name
        assert shape(a) == shape(b), prog.name
        reporting += bool(a.findings)
    # All but the stack path of `paths`, and the 1- and 2-byte reads at 0xff..fc, which do not
    # wrap and have (zero) shadow: those only oops, in both modes, as in the kernel.
    assert reporting == len(every_program()) - 3


def findings_of_suite(root: pathlib.Path, engine: JitEngine) -> tuple[int, list, list]:
    """(programs run, findings in tests expecting success, findings in tests expecting failure)."""
    ran, in_passing, in_failing = 0, [], []
    for path in sorted(root.rglob("*.data")):
        test = parse_file(str(path))
        if any(test.has(s) for s in SKIPPED):
            continue
        try:
            r = engine.run(build_program(test), input_memory(test), helpers=UBPF_HELPERS,
                           unwind_helper=UBPF_UNWIND_HELPER)
        except BpfKasanError:
            continue                                  # refused: nothing ran
        ran += 1
        found = [(path.name, f.title) for f in r.findings]
        (in_failing if test.expects_failure else in_passing).extend(found)
    return ran, in_passing, in_failing


@pytest.mark.parametrize("mode", MODES)
def test_conformance_suites_give_no_findings(conformance_dir, ubpf_dir, mode):
    engine = JitEngine(kasan=mode)
    ran, passing, failing = findings_of_suite(conformance_dir / "tests", engine)
    assert ran > 280 and passing == failing == []
    ran, passing, failing = findings_of_suite(ubpf_dir / "tests", engine)
    assert ran >= 60 and passing == []
    # uBPF's bad-address tests expect an error; KASAN reports the access before it faults.
    assert ("err-address-overflow-offset.data",
            "KASAN: null-ptr-deref Write in bpf_prog_ADDR_err-address-overflow-offset") in failing


def test_jit_engine_reports_findings_of_a_bad_program():
    engine = JitEngine(kasan="inline")
    prog = program("r0 = *(u64 *)(r1 + 8)\nexit\n", maps=())
    r = engine.run(prog, bytes(8))                  # 8-byte input, 8-byte read past it
    [f] = r.findings
    assert f.access == "read" and f.size == 8 and f.bug_type == "slab-out-of-bounds"
    assert JitEngine(kasan="off").run(prog, bytes(8)).findings == ()
