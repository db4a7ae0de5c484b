"""Differential test against LLVM: a few hundred statements go through `llvm-mc-14 -triple bpf
-show-encoding` and through our assembler, and the bytes must agree.

The statements are printed by our disassembler from random valid instructions (so LLVM also
vouches for the printer's spelling), plus hand-written spellings whose meaning LLVM decides
(spacing, literal forms, clang's s32 truncation). llvm-mc-14 is older than the selftests' clang:
it refuses `-mcpu=v4` ("not a recognized processor"), so we run it at v3 and leave out, by a
named rule each, the forms it cannot assemble."""
from __future__ import annotations

import random
import re
import shutil
import subprocess

import pytest

from jit import isa
from jit.errors import JitError
from jit.isa import Insn
from jit.llvm_asm import assemble
from jit.llvm_disasm import disassemble

LLVM_MC = shutil.which("llvm-mc-14")

# (reason, pattern on our printed statement): what llvm-mc-14 cannot assemble (each checked by hand).
LEFT_OUT = [
    ("cpu v4 forms (sdiv/smod, movsx, bswap, gotol, ldsx); llvm-mc-14 has no v4",
     re.compile(r"s/=|s%=|= \(s\d+\)|bswap|^gotol|\*\(s\d+ \*\)")),
    ("`%=`: llvm-mc-14 says 'invalid operand' for every modulo", re.compile(r"%=")),
    ("jset: llvm-mc-14 says 'invalid operand' for `if rX & ...`", re.compile(r"^if \S+ & ")),
    ("added after LLVM 14: callx, may_goto, addr_space_cast, fetch/xchg/cmpxchg, acquire/release",
     re.compile(r"^callx|^may_goto|addr_space_cast|atomic_fetch|xchg|load_acquire|store_release")),
    ("ST with an immediate: llvm-mc-14 has no syntax for it (clang-19 has)",
     re.compile(r"^\*\(u\d+ \*\)\(r\d+ [+-] 0x[0-9a-f]+\) = -?\d+$")),
    ("our own spellings (see jit/llvm_asm.py)",
     re.compile(r"^probe_|call pc|call kfunc|\w\(-?\d+\)( [+-] 0x[0-9a-f]+)? ll$|skb\[r\d+ [+-]")),
]

# Spellings whose bytes LLVM, not our table, decides.
SPELLINGS = [
    "r0=*(u32*)(r1+4)", "*(u64*)(r10-8)=r1", "r0 = 0xffffffff", "w0 = 0xffffffff",
    "r1 = 4294967296", "r1 = -2147483649", "r0 = 010", "r0 = 0b101", "r0 = 8 - 1",
    "r1 = 1ll", "r1 = 1LL", "r1 = 1ULL", "r1 = 0xffffffff00000000LL ll",
    "r0 = -9223372036854775808ULL ll", "r1 = 18446744073709551615 ll", "if r1 > 0xffffffff goto +1",
    "r0 = *(u32 *)skb[-5]", "goto +32767", "goto -32768", "call -1", "lock *(u32 *)(r1 + 0) += r2",
    "w0 = *(u8 *)(r1 + 0)", "*(u8 *)(r1 + 0) = w2", "r0 = - 1", "r1 = be64 r1",
]


def _left_out(stmt: str) -> str | None:
    return next((reason for reason, pattern in LEFT_OUT if pattern.search(stmt)), None)


def _random_valid(rng: random.Random, code: int) -> Insn | None:
    """A random instruction with this opcode that `check` accepts, if one turns up quickly."""
    for _ in range(60):
        field = lambda lo, hi: 0 if rng.random() < 0.5 else rng.randint(lo, hi)  # noqa: E731
        imm = rng.choice([16, 32, 64, field(-(1 << 31), (1 << 31) - 1), field(-300, 300)])
        insn = Insn(code, field(0, 10), field(0, 10), field(-(1 << 15), (1 << 15) - 1), imm)
        try:
            isa.check([insn, Insn(0, imm=rng.randint(-5, 5))] if insn.is_ld_imm64 else [insn])
        except JitError:
            continue
        return insn
    return None


def generated_statements(seed: int = 12, per_opcode: int = 4) -> list[str]:
    rng = random.Random(seed)
    out = []
    for code, _ in ((c, n) for c in range(256) for n in range(per_opcode)):
        insn = _random_valid(rng, code)
        if insn is None:
            continue
        prog = [insn, Insn(0, imm=rng.randint(-(1 << 31), (1 << 31) - 1))] if insn.is_ld_imm64 else [insn]
        out.extend(disassemble(prog))
    return out


def llvm_encodings(statements: list[str], tmp_path) -> list[bytes]:
    source = tmp_path / "in.s"
    source.write_text("\n".join(statements) + "\n")
    run = subprocess.run([LLVM_MC, "-triple", "bpf", "-mcpu=v3", "-show-encoding", str(source)],
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0 and not run.stderr, run.stderr[:2000]
    return [bytes(int(b, 16) for b in m.split(","))
            for m in re.findall(r"encoding: \[([0-9a-fx,]+)\]", run.stdout)]


@pytest.mark.skipif(LLVM_MC is None, reason="llvm-mc-14 is not installed")
def test_our_bytes_match_llvm_mc(tmp_path):
    statements = [s for s in generated_statements() if _left_out(s) is None]
    assert len(statements) >= 300, len(statements)       # the rules must not eat the sample
    statements += SPELLINGS
    theirs = llvm_encodings(statements, tmp_path)
    assert len(theirs) == len(statements)
    ours = [isa.encode(assemble(s).insns) for s in statements]
    mismatches = [(s, o.hex(), t.hex()) for s, o, t in zip(statements, ours, theirs) if o != t]
    assert not mismatches, mismatches[:10]


def test_every_left_out_rule_is_used():
    """A rule that matches nothing hides no form; it is stale and should go."""
    statements = generated_statements()
    for reason, pattern in LEFT_OUT:
        assert any(pattern.search(s) for s in statements), reason
