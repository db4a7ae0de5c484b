"""ctx access conversion: which loads are ctx loads (the dataflow), and the one-for-one rewrite."""
from __future__ import annotations

import pytest

from checks.contexts import SKB_DATA, SKB_DATA_END, SKB_DATA_META, XDP_DATA, XDP_DATA_END
from checks.ctx_convert import convert, ctx_loads
from jit import isa
from jit.llvm_asm import assemble
from jit.program import MapDef, Program


def program(text: str, prog_type: str = "sched_cls") -> Program:
    return Program("t", tuple(assemble(text).insns), prog_type=prog_type)


def load_slots(text: str) -> list[int]:
    return ctx_loads(program(text))


# (description, program, slots of the ctx loads)
DATAFLOW = [
    ("r1 at entry", "r2 = *(u32 *)(r1 + 76); r0 = 0; exit", [0]),
    ("copy through mov", "r6 = r1; r2 = *(u32 *)(r6 + 80); r0 = 0; exit", [1]),
    ("mov32 does not copy a pointer", "w6 = w1; r2 = *(u32 *)(r6 + 80); r0 = 0; exit", []),
    ("arithmetic ends it", "r1 += 8; r2 = *(u32 *)(r1 + 0); r0 = 0; exit", []),
    ("overwritten by a load", "r1 = *(u64 *)(r1 + 8); r2 = *(u32 *)(r1 + 76); r0 = 0; exit", [0]),
    ("spill and fill", "*(u64 *)(r10 - 8) = r1; r1 = 0; r3 = *(u64 *)(r10 - 8);"
                       "r2 = *(u32 *)(r3 + 76); r0 = 0; exit", [3]),
    ("a 32-bit fill is not the pointer", "*(u64 *)(r10 - 8) = r1; r3 = *(u32 *)(r10 - 8);"
                                          "r2 = *(u32 *)(r3 + 76); r0 = 0; exit", []),
    ("spill through a copy of r10", "r6 = r10; r6 += -16; *(u64 *)(r6 + 8) = r1; r1 = 0;"
                                    "r3 = *(u64 *)(r10 - 8); r2 = *(u32 *)(r3 + 76); r0 = 0; exit", [5]),
    ("each path's spill counts", "r6 = r10; if r2 == 0 goto l1; r6 += -8; l1: r6 += -8;"
                                 "*(u64 *)(r6 + 0) = r1; r3 = *(u64 *)(r10 - 8); r4 = *(u64 *)(r10 - 16);"
                                 "r0 = *(u32 *)(r3 + 76); r0 = *(u32 *)(r4 + 76); exit", [7, 8]),
    ("a store over the spill ends it", "*(u64 *)(r10 - 8) = r1; *(u8 *)(r10 - 5) = r2;"
                                       "r3 = *(u64 *)(r10 - 8); r2 = *(u32 *)(r3 + 76); r0 = 0; exit", []),
    ("a helper call clobbers r1-r5", "r2 = r1; call 5; r3 = *(u32 *)(r2 + 76); r0 = 0; exit", []),
    ("callee-saved registers survive calls", "r6 = r1; call 5; r3 = *(u32 *)(r6 + 76); r0 = 0; exit", [2]),
    ("joins are unions", "if r2 == 0 goto l1; r3 = r1; goto l2; l1: r3 = 0; l2: r0 = *(u32 *)(r3 + 76); exit",
     [4]),
    ("unreachable code is not analysed", "r0 = 0; exit; r2 = *(u32 *)(r1 + 76); exit", []),
    ("ld_imm64 overwrites", "r1 = 0x1234 ll; r2 = *(u32 *)(r1 + 0); r0 = 0; exit", []),
    ("LD_ABS clobbers r1-r5 but not r6", "r6 = r1; r2 = r1; r0 = *(u8 *)skb[0];"
                                         "r3 = *(u32 *)(r6 + 0); r4 = *(u32 *)(r2 + 0); exit", [3]),
]


@pytest.mark.parametrize("text, expected", [(t, e) for _, t, e in DATAFLOW],
                         ids=[d for d, _, _ in DATAFLOW])
def test_which_loads_are_ctx_loads(text, expected):
    assert load_slots(text) == expected


def test_bpf2bpf_callee_gets_ctx_only_when_passed_in_r1():
    passes = program("call f; r0 = 0; exit; f: r2 = *(u32 *)(r1 + 76); r0 = 0; exit")
    assert ctx_loads(passes) == [3]
    other = program("r6 = r1; r1 = 0; call f; r0 = 0; exit; f: r2 = *(u32 *)(r1 + 76); r0 = 0; exit")
    assert ctx_loads(other) == []


def test_prog_array_targets_start_with_ctx_in_r1():
    insns = assemble("r0 = 0; exit; r2 = *(u32 *)(r1 + 76); r0 = 0; exit").insns
    target = MapDef("progs", "prog_array", 4, 4, 1, values=((0, "target"),))
    linked = Program("main", tuple(insns), (target,), "sched_cls", funcs=((0, "main"), (2, "target")))
    assert ctx_loads(linked) == [2]
    plain = Program("main", tuple(insns), (), "sched_cls", funcs=((0, "main"), (2, "target")))
    assert ctx_loads(plain) == []


def test_callee_stack_is_its_own_frame():
    """The caller's spill at r10-8 is not the callee's r10-8."""
    text = ("*(u64 *)(r10 - 8) = r1; call f; r0 = 0; exit;"
            "f: r2 = *(u64 *)(r10 - 8); r0 = *(u32 *)(r2 + 76); exit")
    assert ctx_loads(program(text)) == []


def test_skb_pointer_loads_become_64_bit_slot_loads():
    text = ("r2 = *(u32 *)(r1 + 76); r3 = *(u32 *)(r1 + 80); r4 = *(u32 *)(r1 + 140);"
            "r5 = *(u32 *)(r1 + 0); r0 = 0; exit")
    before = program(text)
    after = convert(before)
    assert len(after.insns) == len(before.insns)
    assert [(i.size, i.off) for i in after.insns[:4]] == [
        (isa.DW, SKB_DATA), (isa.DW, SKB_DATA_END), (isa.DW, SKB_DATA_META), (isa.W, 0)]
    assert after.insns[4:] == before.insns[4:]


def test_xdp_pointer_loads_and_only_ctx_ones():
    text = ("r2 = *(u32 *)(r1 + 0); r3 = *(u32 *)(r1 + 4); r0 = *(u32 *)(r2 + 0);"
            "r0 = *(u32 *)(r1 + 12); exit")
    after = convert(program(text, "xdp"))
    assert [(i.size, i.off) for i in after.insns[:4]] == [
        (isa.DW, XDP_DATA), (isa.DW, XDP_DATA_END), (isa.W, 0), (isa.W, 12)]


def test_types_without_pointer_fields_are_returned_as_is():
    before = program("r2 = *(u64 *)(r1 + 0); r0 = 0; exit", "raw_tracepoint")
    assert convert(before) is before
    same = program("r0 = 0; exit", "xdp")
    assert convert(same) is same
