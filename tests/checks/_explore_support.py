"""Support for the exploration, what-if and shard tests: a fake case that records the variants it
runs (unit tests of ordering and dedup), and a selftest file of our own whose bugs only
exploration or what-if can reach (end-to-end tests on the emulated kernel)."""
from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from checks.explore import Outcome, Surface
from checks.results import EXECUTED, TestResult

PRANDOM = "get_prandom_u32"


def finding(title, insn, mode="faithful", ident=None, stricter=None):
    return {"id": ident or f"{title}@{insn}", "title": title, "insn": insn, "mode": mode,
            "stricter": stricter}


@dataclass
class FakeCase:
    """A case that records the variants it is asked to run; variant runs find one bug each."""
    id: str = "f.c::t"
    path: str = "f.c"
    name: str = "t"
    expect: str = "success"
    executed: bool = True
    program_surface: Surface | None = field(default_factory=lambda: Surface(helpers=(PRANDOM,)))
    msgs: tuple = ()
    ran: list = field(default_factory=list)

    def run(self, engine, *, insn_limit):
        return TestResult(id=self.id, file=self.path, name=self.name, status="pass",
                          expect=self.expect, extra={EXECUTED: self.executed})

    def surface(self):
        return self.program_surface

    def run_variant(self, engine, variant, *, insn_limit):
        self.ran.append(variant.name)
        title = "KASAN: slab-out-of-bounds Read in bpf_prog_t"
        oops = variant.name.endswith("0x0")
        return Outcome(findings=(finding(title, 5, ident=f"id-{variant.name}"),),
                       fault="BUG: unable to handle page fault" if oops else None)


# Our own test_loader-format file. Faithful runs find nothing: hash maps start empty and the default
# random numbers are not 0xffffffff. `prefill` reaches the overread, `prandom=0xffffffff` the
# overwrite; the __failure tests are what-if material (two about memory, one not).
DEMO_NAME = "verifier_explore_demo.c"
_HEADER = """// SPDX-License-Identifier: MIT
/* Written for bpf-kasan-ci's exploration and what-if tests. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, long long);
	__type(value, long long);
} map_hash_8b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, long long);
} map_array_8b SEC(".maps");
"""
_LOOKUP_HASH = ["r1 = 0;", "*(u64*)(r10 - 8) = r1;", "r2 = r10;", "r2 += -8;",
                "r1 = %[map_hash_8b] ll;", "call %[bpf_map_lookup_elem];"]
_HASH_OPERANDS = ["__imm(bpf_map_lookup_elem)", "__imm_addr(map_hash_8b)"]
_OVERREAD = _LOOKUP_HASH + ["if r0 == 0 goto l0_%=;", "r0 = *(u64*)(r0 + 8);",
                            "l0_%=: r0 = 0;", "exit;"]
_RANDOM_OVERWRITE = ["call %[bpf_get_prandom_u32];", "r6 = r0;", "r1 = 0;",
                     "*(u32*)(r10 - 4) = r1;", "r2 = r10;", "r2 += -4;",
                     "r1 = %[map_array_8b] ll;", "call %[bpf_map_lookup_elem];",
                     "if r0 == 0 goto l0_%=;", "if w6 != -1 goto l0_%=;",
                     "*(u32*)(r0 + 8) = r6;", "l0_%=: r0 = 0;", "exit;"]


def _naked(name: str, description: str, expect: str, body: list[str], operands: list[str]) -> str:
    """One test function in the kernel's format: annotations, then one asm statement."""
    asm = "".join(f"\t{line}\t\\\n" for line in body)
    inputs = ",\n\t  ".join(operands)
    return (f'\nSEC("socket")\n__description("{description}")\n{expect}\n'
            f'__naked void {name}(void)\n{{\n\tasm volatile ("\t\\\n{asm}"\t:\n'
            f'\t: {inputs}\n\t: __clobber_all);\n}}\n')


DEMO_SOURCE = _HEADER + "".join([
    _naked("hash_overread", "explore: only a found element is read past its end",
           "__success __retval(0)", _OVERREAD, _HASH_OPERANDS),
    _naked("random_overwrite", "explore: only the largest random number overruns",
           "__success __retval(0)", _RANDOM_OVERWRITE,
           ["__imm(bpf_get_prandom_u32)", "__imm(bpf_map_lookup_elem)", "__imm_addr(map_array_8b)"]),
    _naked("refused_overread", "what-if: the overread the verifier refuses",
           '__failure __msg("invalid access to map value, value_size=8 off=8 size=8")',
           _OVERREAD, _HASH_OPERANDS),
    _naked("refused_null_deref", "what-if: no NULL check",
           "__failure __msg(\"R0 invalid mem access 'map_value_or_null'\")",
           _LOOKUP_HASH + ["r0 = *(u64*)(r0 + 0);", "exit;"], _HASH_OPERANDS),
    _naked("refused_uninit", "what-if: refused for a reason that is not about memory",
           '__failure __msg("R0 !read_ok")', ["exit;"], ["__imm(bpf_map_lookup_elem)"]),
])


def write_demo(directory: pathlib.Path) -> pathlib.Path:
    path = directory / DEMO_NAME
    path.write_text(DEMO_SOURCE)
    return path
