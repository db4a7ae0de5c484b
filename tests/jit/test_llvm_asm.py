"""The pseudo-C assembler and printer: statement table, labels, symbols, raw data, errors, the
printed style, and every asm body of the kernel 6.12 `progs/verifier_*.c` files.

Expected encodings are written as the bytes of each slot (`code regs off imm`), taken from the
selftests reference table and from `llvm-mc-14 -show-encoding` where it knows the form."""
from __future__ import annotations

import pathlib
import re

import pytest

from jit import isa
from jit.errors import JitError
from jit.isa import Insn
from jit.llvm_asm import assemble
from jit.llvm_disasm import disassemble, format_insn


def slots(*hexes: str) -> list[Insn]:
    """Slots from their bytes, e.g. "b7 00 0000 01000000"."""
    return [Insn.from_bytes(bytes.fromhex(h)) for h in hexes]


STATEMENTS = [
    # moves and ALU
    ("r0 = 1", "b7 00 0000 01000000"),
    ("w0 = 1", "b4 00 0000 01000000"),
    ("r0 = r1", "bf 10 0000 00000000"),
    ("w0 = w1", "bc 10 0000 00000000"),
    ("r0 += 1", "07 00 0000 01000000"),
    ("r0 -= r1", "1f 10 0000 00000000"),
    ("r0 *= 3", "27 00 0000 03000000"),
    ("r0 /= r1", "3f 10 0000 00000000"),
    ("r0 %= 5", "97 00 0000 05000000"),
    ("r0 |= r1", "4f 10 0000 00000000"),
    ("r0 &= 7", "57 00 0000 07000000"),
    ("r0 ^= r1", "af 10 0000 00000000"),
    ("r0 <<= 3", "67 00 0000 03000000"),
    ("r0 >>= r1", "7f 10 0000 00000000"),
    ("r0 s>>= 2", "c7 00 0000 02000000"),
    ("w0 += w1", "0c 10 0000 00000000"),
    ("w0 s>>= 3", "c4 00 0000 03000000"),
    ("w2 %= w1", "9c 12 0000 00000000"),
    ("r0 s/= r1", "3f 10 0100 00000000"),
    ("r0 s%= r1", "9f 10 0100 00000000"),
    ("w0 s/= 2", "34 00 0100 02000000"),
    ("w0 s%= -2", "94 00 0100 feffffff"),
    ("r0 = -r0", "87 00 0000 00000000"),
    ("w0 = -w0", "84 00 0000 00000000"),
    ("r1 = (s8)r2", "bf 21 0800 00000000"),
    ("r1 = (s16)r2", "bf 21 1000 00000000"),
    ("r1 = (s32)r2", "bf 21 2000 00000000"),
    ("w1 = (s8)w2", "bc 21 0800 00000000"),
    ("w1 = (s16)w2", "bc 21 1000 00000000"),
    ("r1 = be16 r1", "dc 01 0000 10000000"),
    ("r1 = be32 r1", "dc 01 0000 20000000"),
    ("r1 = be64 r1", "dc 01 0000 40000000"),
    ("r1 = le16 r1", "d4 01 0000 10000000"),
    ("r1 = bswap16 r1", "d7 01 0000 10000000"),
    ("r1 = bswap64 r1", "d7 01 0000 40000000"),
    ("r1 = addr_space_cast(r2, 0, 1)", "bf 21 0100 01000000"),
    ("r1 = addr_space_cast(r2, 1, 0)", "bf 21 0100 00000100"),
    # loads and stores
    ("r0 = *(u8 *)(r1 + 0)", "71 10 0000 00000000"),
    ("r0 = *(u16 *)(r1 + 2)", "69 10 0200 00000000"),
    ("r0 = *(u32 *)(r1 + 4)", "61 10 0400 00000000"),
    ("r0 = *(u64 *)(r1 - 8)", "79 10 f8ff 00000000"),
    ("w0 = *(u32 *)(r1 + 4)", "61 10 0400 00000000"),
    ("r0 = *(s8 *)(r1 + 0)", "91 10 0000 00000000"),
    ("r0 = *(s16 *)(r1 + 0)", "89 10 0000 00000000"),
    ("r0 = *(s32 *)(r1 + 0)", "81 10 0000 00000000"),
    ("*(u64 *)(r10 - 8) = r1", "7b 1a f8ff 00000000"),
    ("*(u32 *)(r10 - 4) = w1", "63 1a fcff 00000000"),
    ("*(u16 *)(r10 - 2) = r1", "6b 1a feff 00000000"),
    ("*(u8 *)(r10 - 1) = r1", "73 1a ffff 00000000"),
    ("*(u32 *)(r10 - 8) = 5", "62 0a f8ff 05000000"),
    ("*(u64 *)(r10 - 8) = -5", "7a 0a f8ff fbffffff"),
    ("r0 = *(u8 *)skb[0]", "30 00 0000 00000000"),
    ("r0 = *(u16 *)skb[12]", "28 00 0000 0c000000"),
    ("r0 = *(u32 *)skb[-5]", "20 00 0000 fbffffff"),
    ("r0 = *(u16 *)skb[r1]", "48 10 0000 00000000"),
    ("r0 = *(u8 *)skb[r9]", "50 90 0000 00000000"),
    ("r0 = *(u32 *)skb[r1 - 0x200000]", "40 10 0000 0000e0ff"),
    # jumps and calls
    ("if r1 == 3 goto +2", "15 01 0200 03000000"),
    ("if r1 != 3 goto +2", "55 01 0200 03000000"),
    ("if r1 > 3 goto +2", "25 01 0200 03000000"),
    ("if r1 >= 3 goto +2", "35 01 0200 03000000"),
    ("if r1 < 3 goto +2", "a5 01 0200 03000000"),
    ("if r1 <= 3 goto +2", "b5 01 0200 03000000"),
    ("if r1 s> 3 goto +2", "65 01 0200 03000000"),
    ("if r1 s>= 3 goto +2", "75 01 0200 03000000"),
    ("if r1 s< 3 goto +2", "c5 01 0200 03000000"),
    ("if r1 s<= 3 goto +2", "d5 01 0200 03000000"),
    ("if r1 & 3 goto +2", "45 01 0200 03000000"),
    ("if r1 == r2 goto -1", "1d 21 ffff 00000000"),
    ("if w1 == 3 goto +1", "16 01 0100 03000000"),
    ("if w1 s< w2 goto -3", "ce 21 fdff 00000000"),
    ("if r1 > 0xffffffff goto +1", "25 01 0100 ffffffff"),
    ("goto +1", "05 00 0100 00000000"),
    ("goto -1", "05 00 ffff 00000000"),
    ("gotol +1", "06 00 0000 01000000"),
    ("may_goto +1", "e5 00 0100 00000000"),
    ("call 1", "85 00 0000 01000000"),
    ("callx r1", "8d 01 0000 00000000"),
    ("exit", "95 00 0000 00000000"),
    # atomics
    ("lock *(u64 *)(r1 + 0) += r2", "db 21 0000 00000000"),
    ("lock *(u64 *)(r1 + 0) &= r2", "db 21 0000 50000000"),
    ("lock *(u64 *)(r1 + 0) |= r2", "db 21 0000 40000000"),
    ("lock *(u64 *)(r1 + 0) ^= r2", "db 21 0000 a0000000"),
    ("lock *(u32 *)(r1 + 0) += w2", "c3 21 0000 00000000"),
    ("r2 = atomic_fetch_add((u64 *)(r1 + 0), r2)", "db 21 0000 01000000"),
    ("r2 = atomic_fetch_and((u64 *)(r1 + 0), r2)", "db 21 0000 51000000"),
    ("r2 = atomic_fetch_or((u64 *)(r1 + 0), r2)", "db 21 0000 41000000"),
    ("r2 = atomic_fetch_xor((u64 *)(r1 + 0), r2)", "db 21 0000 a1000000"),
    ("w2 = atomic_fetch_add((u32 *)(r1 + 0), w2)", "c3 21 0000 01000000"),
    ("r2 = xchg_64(r1 + 0, r2)", "db 21 0000 e1000000"),
    ("w2 = xchg32_32(r1 + 0, w2)", "c3 21 0000 e1000000"),
    ("r0 = cmpxchg_64(r1 + 0, r0, r2)", "db 21 0000 f1000000"),
    ("w0 = cmpxchg32_32(r1 - 8, w0, w2)", "c3 21 f8ff f1000000"),
    # the kernel's own examples of load-acquire / store-release (commit 880442305a39)
    ("r0 = load_acquire((u64 *)(r1 + 0x0))", "db 10 0000 00010000"),
    ("store_release((u16 *)(r1 + 0x0), w2)", "cb 21 0000 10010000"),
    # raw data
    (".8byte 0x95", "95 00 0000 00000000"),
    (".byte 0xe5; .byte 0; .short -3; .long 0", "e5 00 fdff 00000000"),
    (".byte 0xb7, 0x01; .short 0; .long 7", "b7 01 0000 07000000"),
    # clang's non-ll immediates: low 32 bits as s32
    ("r0 = 0xffffffff", "b7 00 0000 ffffffff"),
    ("w0 = 0xffffffff", "b4 00 0000 ffffffff"),
    ("r1 = 4294967296", "b7 01 0000 00000000"),
    ("r1 = -2147483649", "b7 01 0000 ffffff7f"),
    ("r0 = 010", "b7 00 0000 08000000"),
    ("r0 = 8 - 1", "b7 00 0000 07000000"),
    ("r1 = 1LL", "b7 01 0000 01000000"),
    # spelling variants LLVM reads the same way
    ("r0=*(u32*)(r1+4)", "61 10 0400 00000000"),
    ("*(u64*)(r10-8)=r1", "7b 1a f8ff 00000000"),
    ("r0 = *(u8 *)(r1 + -4)", "71 10 fcff 00000000"),
    # extensions (see the module docstring)
    ("call pc+3", "85 10 0000 03000000"),
    ("call kfunc(5)", "85 20 0000 05000000"),
    ("probe_mem r0 = *(u32 *)(r1 + 4)", "21 10 0400 00000000"),
    ("probe_mem r0 = *(s16 *)(r1 + 4)", "49 10 0400 00000000"),
    ("probe_mem32 r0 = *(u64 *)(r1 + 4)", "b9 10 0400 00000000"),
    ("probe_mem32 *(u64 *)(r1 + 0) = r2", "bb 21 0000 00000000"),
    ("probe_mem32 *(u8 *)(r1 + 0) = 7", "b2 01 0000 07000000"),
    ("probe_atomic lock *(u64 *)(r1 + 0) += r2", "fb 21 0000 00000000"),
]

LD_IMM64 = [
    ("r1 = 0x1122334455667788 ll", "18 01 0000 88776655", "00 00 0000 44332211"),
    ("r1 = 0xffffffff00000000LL ll", "18 01 0000 00000000", "00 00 0000 ffffffff"),
    ("r0 = -9223372036854775808ULL ll", "18 00 0000 00000000", "00 00 0000 00000080"),
    ("r1 = 18446744073709551615 ll", "18 01 0000 ffffffff", "00 00 0000 ffffffff"),
    ("r1 = 1ll", "18 01 0000 01000000", "00 00 0000 00000000"),
    ("r1 = map_fd(3) ll", "18 11 0000 03000000", "00 00 0000 00000000"),
    ("r1 = map_value(2) + 8 ll", "18 21 0000 02000000", "00 00 0000 08000000"),
    ("r1 = btf_id(9) ll", "18 31 0000 09000000", "00 00 0000 00000000"),
]


@pytest.mark.parametrize("text,expected", STATEMENTS, ids=[t for t, _ in STATEMENTS])
def test_statement(text, expected):
    assert assemble(text).insns == slots(expected)


@pytest.mark.parametrize("text,first,second", LD_IMM64, ids=[t for t, *_ in LD_IMM64])
def test_ld_imm64(text, first, second):
    out = assemble(text)
    assert out.insns == slots(first, second)
    assert out.lines == [1, 1]


def test_rept_repeats_statements():
    out = assemble("r0 = 0\n.rept 3\nr0 += 1\n.endr\nexit")
    assert out.insns == slots("b7 00 0000 00000000", *["07 00 0000 01000000"] * 3, "95 00 0000 00000000")
    assert out.lines == [1, 3, 3, 3, 5]


# ------------------------------------------------------------------ labels and symbols

def test_forward_and_backward_labels():
    out = assemble("goto l1; r0 = 1\nl1: r0 += 1; if r0 < 10 goto l1; exit")
    assert out.insns == [Insn(0x05, off=1), Insn(0xB7, imm=1), Insn(0x07, imm=1),
                         Insn(0xA5, 0, 0, -2, 10), Insn(0x95)]
    assert out.labels == {"l1": 2}


def test_numeric_local_labels():
    out = assemble("1: r0 += 1; if r0 < 3 goto 1b; goto 1f; r0 = 0; 1: goto 1b; exit")
    assert [i.off for i in out.insns] == [0, -2, 1, 0, -1, 0]
    assert out.labels == {}


def test_several_labels_on_one_line_and_percent_suffix():
    out = assemble("a: b:c: r0 = 0\nl0_%=: exit\ngoto l0_%=\ngotol a\nmay_goto b")
    assert out.labels == {"a": 0, "b": 0, "c": 0, "l0_%=": 1}
    assert out.insns[2].off == -2
    assert out.insns[3] == Insn(isa.JMP32 | isa.JA, imm=-4)
    assert out.insns[4] == Insn(isa.JMP | isa.JCOND, off=-5)


def test_label_after_ld_imm64_and_at_end():
    out = assemble("r1 = 1 ll; l: exit; goto end; end:")
    assert out.labels == {"l": 2, "end": 4}
    assert out.insns[3].off == 0


def test_call_label_is_bpf2bpf_and_ld_label_is_pseudo_func():
    out = assemble("r1 = cb ll\ncall cb\nexit\ncb: r0 = 1\nexit")
    assert out.insns[0] == Insn(isa.LD_IMM64, 1, isa.PSEUDO_FUNC, 0, 3)
    assert out.insns[2] == Insn(isa.JMP | isa.CALL, 0, isa.PSEUDO_CALL, 0, 1)
    assert isa.subprog_starts(out.insns) == [0, 4]


def test_resolver_answers_for_helpers_kfuncs_and_maps():
    table = {"bpf_map_lookup_elem": (0, 1), "bpf_kfunc": (2, 77), "map_hash_8b": (1, 0),
             "tmp_var": (isa.PSEUDO_MAP_VALUE, 1)}
    out = assemble("call bpf_map_lookup_elem; call bpf_kfunc\nr1 = map_hash_8b ll\nr2 = tmp_var + 8 ll",
                   resolve=table.__getitem__)
    assert out.insns == [Insn(0x85, imm=1), Insn(0x85, src=2, imm=77),
                         Insn(0x18, 1, 1, 0, 0), Insn(0, imm=0),
                         Insn(0x18, 2, 2, 0, 1), Insn(0, imm=8)]


# ------------------------------------------------------------------ comments and lines

def test_comments_and_line_numbers():
    text = "/* a\n b */ r0 = 1; // x; y\n# z; w\nexit /* q */ ; r1 = 2 ll"
    out = assemble(text, first_line=10)
    assert out.insns[:2] == slots("b7 00 0000 01000000", "95 00 0000 00000000")
    assert out.lines == [11, 13, 13, 13]


# ------------------------------------------------------------------ errors

def _missing(name):
    raise KeyError(name)


ERRORS = [
    ("r0 = 0\nr0 =+ 1", "f.c:6: cannot parse 'r0 =+ 1'"),
    ("r0 = = 1", "f.c:5: cannot parse 'r0 = = 1'"),
    ("goto nowhere", "f.c:5: undefined label 'nowhere' in 'goto nowhere'"),
    ("exit\nif r0 > 0 goto 1f", "f.c:6: no label '1' after '1f'"),
    ("goto 1b", "no label '1' before '1b'"),
    ("r0 = *(u32 *)(r1 + 40000)", "offset 40000 out of s16 range"),
    ("r0 = *(u32 *)(r1 4)", "offset needs '+' or '-'"),
    ("goto +40000", "jump displacement 40000 out of s16 range"),
    ("goto 3", "jump displacement needs '+' or '-'"),
    (".byte 1; exit", "f.c:5: cannot parse 'exit': instruction inside a partly filled raw slot"),
    ("exit\n.byte 1", "f.c:6: raw data leaves 1 bytes short of a whole slot"),
    (".byte 256", ".byte 256 out of range"),
    ("w0 = r1", "r and w registers mixed"),
    ("r0 = -r1", "negation is in place"),
    ("w1 = (s32)w2", "no sign-extending move from s32"),
    ("r0 = *(u64 *)skb[0]", "packet loads are"),
    ("w0 = *(u64 *)(r1 + 0)", "a 64-bit access needs an r register"),
    ("lock *(u64 *)(r1 + 0) -= r2", "lock takes"),
    ("lock *(u8 *)(r1 + 0) += r2", "atomic operations take u32 or u64"),
    ("r1 = cmpxchg_64(r1 + 0, r1, r2)", "cmpxchg compares with and returns in r0"),
    ("w2 = xchg_64(r1 + 0, w2)", "xchg_64 takes r registers"),
    ("r2 = atomic_fetch_add((u64 *)(r1 + 0), r3)", "atomic_fetch_<op>"),
    ("probe_mem exit", "probe_mem applies only to loads, stores and atomics"),
    ("probe_atomic r0 = *(u32 *)(r1 + 0)", "probe_atomic does not apply to this access"),
    ("l: exit; l: exit", "label 'l' defined twice"),
    (".rept 2\nexit", "f.c:5: cannot parse '.rept 2': .rept without .endr"),
    (".endr", ".endr without .rept"),
    ("r1 = 08", "cannot parse 'r1 = 08'"),
    ("r11 = 1", "cannot parse 'r11 = 1'"),
    ("r1 = 18446744073709551616 ll", "does not fit 64 bits"),
    ("call foo", "f.c:5: undefined symbol 'foo' (no resolver given) in 'call foo'"),
]


@pytest.mark.parametrize("text,message", ERRORS, ids=[t for t, _ in ERRORS])
def test_errors_name_file_line_and_statement(text, message):
    with pytest.raises(JitError) as err:
        assemble(text, file="f.c", first_line=5)
    assert message in str(err.value)
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("f.c:")


def test_resolver_failure_is_a_located_error():
    with pytest.raises(JitError, match=r"^f\.c:7: cannot resolve symbol 'nope'"):
        assemble("exit\nr1 = nope ll", file="f.c", first_line=6, resolve=_missing)

    def refuse(name):
        raise JitError(f"no map called {name}")
    with pytest.raises(JitError, match=r"^f\.c:6: no map called m$"):
        assemble("r1 = m ll", file="f.c", first_line=6, resolve=refuse)


# ------------------------------------------------------------------ the printer

PRINTED = [
    ("b7 00 0000 ffffffff", "r0 = -1"),
    ("bc 21 1000 00000000", "w1 = (s16)w2"),
    ("9f 10 0100 00000000", "r0 s%= r1"),
    ("d7 01 0000 20000000", "r1 = bswap32 r1"),
    ("dc 01 0000 10000000", "r1 = be16 r1"),
    ("bf 21 0100 01000000", "r1 = addr_space_cast(r2, 0, 1)"),
    ("61 10 0400 00000000", "r0 = *(u32 *)(r1 + 0x4)"),
    ("81 10 f8ff 00000000", "r0 = *(s32 *)(r1 - 0x8)"),
    ("7a 0a f8ff fbffffff", "*(u64 *)(r10 - 0x8) = -5"),
    ("63 1a fcff 00000000", "*(u32 *)(r10 - 0x4) = r1"),
    ("20 00 0000 fbffffff", "r0 = *(u32 *)skb[-5]"),
    ("40 10 0000 0000e0ff", "r0 = *(u32 *)skb[r1 - 0x200000]"),
    ("ce 21 fdff 00000000", "if w1 s< w2 goto -3"),
    ("45 01 0200 03000000", "if r1 & 3 goto +2"),
    ("06 00 0000 05000000", "gotol +5"),
    ("e5 00 0100 00000000", "may_goto +1"),
    ("85 00 0000 01000000", "call 1"),
    ("85 10 0000 feffffff", "call pc-2"),
    ("85 20 0000 05000000", "call kfunc(5)"),
    ("8d 03 0000 00000000", "callx r3"),
    ("c3 21 0000 00000000", "lock *(u32 *)(r1 + 0x0) += w2"),
    ("db 21 0000 51000000", "r2 = atomic_fetch_and((u64 *)(r1 + 0x0), r2)"),
    ("c3 21 0000 e1000000", "w2 = xchg32_32(r1 + 0x0, w2)"),
    ("db 21 0800 f1000000", "r0 = cmpxchg_64(r1 + 0x8, r0, r2)"),
    ("cb 21 0000 10010000", "store_release((u16 *)(r1 + 0x0), w2)"),
    ("db 10 0000 00010000", "r0 = load_acquire((u64 *)(r1 + 0x0))"),
    ("21 10 0400 00000000", "probe_mem r0 = *(u32 *)(r1 + 0x4)"),
    ("fb 21 0000 00000000", "probe_atomic lock *(u64 *)(r1 + 0x0) += r2"),
    ("95 00 0000 00000000", "exit"),
    ("95 01 0000 00000000", ".8byte 0x0000000000000195"),
    ("18 01 0000 05000000", ".8byte 0x0000000500000118"),     # ld_imm64 without its second slot
]


@pytest.mark.parametrize("raw,text", PRINTED, ids=[t for _, t in PRINTED])
def test_printed_style(raw, text):
    assert format_insn(*slots(raw)) == text


def test_ld_imm64_prints_as_one_line():
    assert disassemble(slots("18 01 0000 88776655", "00 00 0000 44332211", "95 00 0000 00000000")) == \
        ["r1 = 0x1122334455667788 ll", "exit"]
    assert format_insn(*slots("18 21 0000 02000000", "00 00 0000 08000000")) == "r1 = map_value(2) + 0x8 ll"


def test_labels_name_targets_that_start_a_line():
    prog = assemble("r1 = 5 ll; if r1 > 3 goto l; call f; r2 = f ll; l: exit; f: r0 = 0; exit").insns
    assert disassemble(prog) == ["r1 = 0x5 ll", "if r1 > 3 goto +3", "call pc+3", "r2 = func(2) ll",
                                 "exit", "r0 = 0", "exit"]
    assert disassemble(prog, labels=True) == ["r1 = 0x5 ll", "if r1 > 3 goto L6", "call L7", "r2 = L7 ll",
                                              "L6: exit", "L7: r0 = 0", "exit"]


# ------------------------------------------------------------------ the kernel selftests

_ASM_START = re.compile(r"\basm\s+volatile\s*\(")
_MACRO = re.compile(r"^#define\s+(\w+)\(([^)]*)\)[ \t]*((?:.*\\\n)*.*)", re.M)
_CALL = re.compile(r"(\w+)\s*\(([^()]*)\)")
_OPERAND = re.compile(r"(__imm|__imm_const|__imm_addr|__imm_ptr|__imm_insn)\(\s*(\w+)|\[(\w+)\]\s*\"(\w+)\"")
_STATEMENT = re.compile(r"[^;\n]*[^;\n\s][^;\n]*")
_C_ESCAPES = {"\n": "\n", "n": "\n", "t": "\t", '"': '"', "\\": "\\"}
# Values of the names __imm_const expressions use (limits.h, errno, filter.h).
_C_NAMES = {"INT_MIN": -(1 << 31), "INT_MAX": (1 << 31) - 1, "LLONG_MIN": -(1 << 63),
            "LLONG_MAX": (1 << 63) - 1, "SHRT_MIN": -(1 << 15), "SHRT_MAX": (1 << 15) - 1,
            "EINVAL": 22, "MAX_BPF_STACK": 512}
_C_CALLS = re.compile(r"\b(?:offsetof|offsetofend|sizeof|sizeof_field|ARRAY_SIZE)\s*\((?:[^()]|\([^()]*\))*\)")


def _string_literal(text: str, i: int) -> tuple[str, int]:
    out, j = [], i + 1
    while text[j] != '"':
        if text[j] == "\\":
            out.append(_C_ESCAPES.get(text[j + 1], text[j + 1]))
            j += 2
        else:
            out.append(text[j])
            j += 1
    return "".join(out), j + 1


def _template(text: str, pos: int, macros: dict) -> tuple[str, str]:
    """The joined string literals of an asm statement from `pos`, and its operand text.
    Rough on purpose: takes the first branch of any #if, expands the file's string macros."""
    out, skipping, i = [], [], pos
    while i < len(text):
        c = text[i]
        if c.isspace() or text.startswith("\\\n", i):
            i += 1
        elif text.startswith("/*", i):
            i = text.index("*/", i) + 2
        elif text.startswith("//", i):
            i = text.index("\n", i)
        elif c == "#":
            j = text.index("\n", i)
            word = text[i:j].split()[0]
            if word.startswith("#if"):
                skipping.append(False)
            elif word == "#else":
                skipping[-1] = True
            elif word == "#endif":
                skipping.pop()
            i = j
        elif c == '"':
            literal, i = _string_literal(text, i)
            if not any(skipping):
                out.append(literal)
        elif (m := _CALL.match(text, i)) and m.group(1) in macros:
            params, body = macros[m.group(1)]
            for p, a in zip(params, (a.strip() for a in m.group(2).split(","))):
                body = re.sub(rf"#\s*{p}\b", f'"{a}"', body)
                body = re.sub(rf"\b{p}\b", a, body)
            out.append(_template(body + ")", 0, macros)[0])
            i = m.end()
        elif c == ")":
            return "".join(out), ""
        elif c == ":":
            depth, j = 1, i
            while depth:
                j += 1
                depth += {"(": 1, ")": -1}.get(text[j], 0)
            return "".join(out), text[i:j]
        else:
            raise AssertionError(f"extraction: unexpected {text[i:i + 30]!r}")
    raise AssertionError("extraction: unterminated asm statement")


def _const_value(expr: str, defines: dict[str, str]) -> str:
    """A plausible value for an __imm_const expression (offsetof/sizeof count as 8)."""
    expr = _C_CALLS.sub("8", expr)
    expr = re.sub(r"\b[A-Za-z_]\w*\b", lambda m: str(_C_NAMES.get(m.group(), defines.get(m.group(), m.group()))), expr)
    if re.fullmatch(r"[\s\d()+\-*/<>~|&^x a-fA-F]*", expr):
        try:
            # eval is safe here: the text is only digits, hex letters and C operators
            return str(int(eval(expr.replace("/", "//"), {"__builtins__": {}})))  # noqa: S307
        except (SyntaxError, ZeroDivisionError, TypeError, NameError):
            pass
    return "4"


def _operands(ops: str, defines: dict[str, str]) -> dict[str, str]:
    """%[name] -> substitute text, by the kind of operand."""
    subst = {}
    for m in _OPERAND.finditer(ops):
        kind, name = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        if kind == "__imm_const":
            args = ops[m.end():]
            depth, j = 1, args.index(",") + 1
            for j in range(j, len(args)):
                depth += {"(": 1, ")": -1}.get(args[j], 0)
                if depth == 0:
                    break
            subst[name] = _const_value(args[args.index(",") + 1:j], defines)
        elif kind == "__imm":
            subst[name] = "1" if name.startswith("bpf_") else name    # helper id / kfunc symbol
        elif kind in ("__imm_addr", "i"):
            subst[name] = name
        elif kind == "__imm_insn":
            subst[name] = "0x95"           # some instruction: `exit`
        elif kind == "m":
            subst[name] = "(r10 - 8)"
        else:                      # __imm_ptr / "r": a register the compiler picks
            subst[name] = "r9"
    return subst


def _substitute(template: str, subst: dict[str, str]) -> str:
    def one(m: re.Match) -> str:
        if m.group(1) in "%=":
            return "%" if m.group(1) == "%" else "0"
        return subst[m.group(1)[1:-1]]
    return re.sub(r"%(%|=|\[\w+\])", one, template)


def asm_bodies(path: pathlib.Path):
    """(first line, asm text after operand substitution) for each asm statement of a file."""
    text = path.read_text()
    macros = {m.group(1): ([p.strip() for p in m.group(2).split(",")], m.group(3).replace("\\\n", "\n"))
              for m in _MACRO.finditer(text)}
    defines = dict(re.findall(r"^#define\s+(\w+)\s+(\S+)\s*$", text, re.M))
    for m in _ASM_START.finditer(text):
        template, ops = _template(text, m.end(), macros)
        yield text.count("\n", 0, m.start()) + 1, _substitute(template, _operands(ops, defines))


def test_every_verifier_asm_body_assembles(kernel_selftests):
    files = sorted(pathlib.Path(kernel_selftests, "progs").glob("verifier_*.c"))
    bodies = statements = 0
    failures = []
    for path in files:
        for line, text in asm_bodies(path):
            bodies += 1
            statements += len(_STATEMENT.findall(re.sub(r"/\*.*?\*/", " ", text, flags=re.S)))
            try:
                out = assemble(text, file=path.name, first_line=line, resolve=lambda name: (1, 0))
                if ".8byte" not in text:          # those hold our __imm_insn placeholder
                    isa.check(out.insns, file=path.name)    # what we emit, the kernel could decode
            except JitError as e:
                failures.append(str(e))
    assert not failures, "\n".join(failures[:20])
    # 6.12 has 1,227 asm statements in 95 verifier_*.c files: a much smaller count means
    # the extraction broke, not that the assembler got better.
    assert len(files) >= 90 and bodies >= 1200 and statements >= 12000, (len(files), bodies, statements)
