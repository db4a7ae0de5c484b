"""Fakes for the exploration and what-if unit tests: a case that records the variants it runs."""
from __future__ import annotations

from dataclasses import dataclass, field

from checks.explore import Outcome, Surface
from checks.results import EXECUTED, TestResult

PRANDOM = "get_prandom_u32"


def finding(title, insn, mode="faithful", ident=None):
    return {"id": ident or f"{title}@{insn}", "title": title, "insn": insn, "mode": mode}


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
        return Outcome(findings=(finding(title, 5, ident=f"id-{variant.name}"),),
                       fault="BUG: unable to handle page fault" if variant.name.endswith("0x0") else None)
