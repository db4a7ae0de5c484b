"""Input exploration: after a test's faithful run, run it again on N deterministic input variants.

What a variant changes (only what the program can see, so most programs get few variants):
- helpers whose results the program cannot predict (`bpf_get_prandom_u32`, `bpf_ktime_get_ns`)
  return one value on each of their first EDGE_CALLS calls: first the boundary values of the
  constants the program compares with (checks.boundary_values: `if r0 s> 24` → 24, 23, 25),
  then the edge values 0xffffffff, 0x80000000, 0x7fffffff, 0, 1 (the largest first: an
  unchecked random offset most often goes out of bounds at its top);
- maps: hash maps pre-filled with the keys the faithful run looked up (`prefill`), so the
  non-NULL path runs; for a program that compares, first with value bytes 00 01 02 ...
  (`map=ascending`) and each boundary value as a repeated u64 (`map=u64:0x18`); then values as
  created (zero), then every byte at 0xff, 0x80 and 0x7f (`map=0xff`...);
- socket lookups (bpf_sk_lookup_tcp/udp, bpf_skc_lookup_tcp), which find nothing in the test's
  namespace, find a socket whose only reference the program then holds (`sk_lookup=found`):
  bpf_sk_release frees it (checks.sock_helpers);
- the packet (program types that get one under BPF_PROG_TEST_RUN): 64 bytes of 0xff (the
  faithful packet is 64 zero bytes), the shortest frame (14 bytes), a full frame (1514 bytes);
- a ctx that is a plain buffer (tracepoint record, pt_regs, tracing arguments: values the kernel
  hands the program), zero in the faithful run: each boundary value as a repeated u64, then
  every byte 0xff (`ctx=0xff`).

Each dimension the program uses is an axis with an ordered list of settings. Variant i takes setting
`i mod len` of every axis (so the first few variants already move every axis), then the rest of
the cartesian product follows in order. The list is a pure function of the program: the first N
are the N explored, on every machine and in every shard, plus one more for each setting the
program's own values add to its longest axis (`budget`), so they never crowd out the edges.

Findings of variants get mode "explore" and name their variant; within a test they are deduplicated
by (title, insn), the first run that found one keeping it (the faithful run comes first).
The retval is judged on the faithful run only.

Owns: the variant list, the exploration runs and finding dedup. Must not import unicorn, github or
bot/; programs run through the case (`Explorable.run_variant`).
"""
from __future__ import annotations

import itertools
import traceback
from dataclasses import dataclass, replace
from typing import Callable, Iterable, Protocol, runtime_checkable

from checks.boundary_values import ascending, boundary_values, comparison_constants, reads_ctx, word
from checks.contexts import TEST_DATA_LEN
from checks.results import TestResult
from jit import isa
from jit.errors import BpfKasanError
from jit.program import Program

DEFAULT_EXPLORE = 4
MODE_EXPLORE = "explore"
EDGE_VALUES = (0xFFFFFFFF, 0x80000000, 0x7FFFFFFF, 0, 1)
# Helper id -> (kernel name, short name in variant names).
EDGE_HELPERS = {7: ("get_prandom_u32", "prandom"), 5: ("ktime_get_ns", "ktime")}
RESULT_BITS = {"get_prandom_u32": 32, "ktime_get_ns": 64}
SOCKET_LOOKUPS = frozenset({84, 85, 99})           # sk_lookup_tcp/udp, skc_lookup_tcp
SK_LOOKUP = "sk_lookup"                            # the override their emulation reads
MASK64 = 0xFFFFFFFFFFFFFFFF
MAP_HELPERS = frozenset({1, 2, 3})                 # map_lookup/update/delete_elem: maps in use
MAP_FILLS = (None, 0xFF, 0x80, 0x7F)               # value bytes: as created (zero), then extremes
EDGE_CALLS = 16                                    # calls that get the edge value, then defaults
PACKETS = (("packet=64x0xff", b"\xff" * TEST_DATA_LEN),
           ("packet=14", bytes(14)),                # ETH_HLEN: the shortest frame test_run takes
           ("packet=1514x0xff", b"\xff" * 1514))   # a full Ethernet frame


@dataclass(frozen=True)
class Variant:
    """One set of inputs. The faithful run is `FAITHFUL` (empty name, nothing changed)."""
    name: str
    helper_values: tuple[tuple[str, tuple[int, ...]], ...] = ()   # helper name -> results
    prefill: bool = False
    map_fill: int | bytes | None = None            # map value bytes: one byte, or a pattern
    packet: bytes | None = None                    # None: the test's own packet
    ctx_in: bytes | None = None                    # pattern for a plain-buffer ctx; None: zero

    def kernel_options(self) -> dict:
        """Keyword arguments for `Kernel.begin`."""
        helpers = {name: list(values) for name, values in self.helper_values}
        return {"variant": self.name, "helper_values": helpers or None,
                "prefill": self.prefill, "map_fill": self.map_fill}


FAITHFUL = Variant("")


@dataclass(frozen=True)
class Surface:
    """The inputs a program can observe, which decide its axes."""
    helpers: tuple[str, ...] = ()                  # EDGE_HELPERS kernel names it calls
    maps: bool = False                             # it calls a map helper on a map it declares
    packet: bool = False                           # its type sees a packet
    constants: tuple[int, ...] = ()                # what it compares with (boundary_values)
    sockets: bool = False                          # it looks sockets up
    ctx: bool = False                              # it reads values from a plain-buffer ctx


def surface_of(program: Program, *, packet: bool, ctx: bool = False) -> Surface:
    called = {i.imm for i in program.insns if i.is_call and i.src == isa.CALL_HELPER}
    helpers = tuple(name for hid, (name, _) in EDGE_HELPERS.items() if hid in called)
    return Surface(helpers=helpers, maps=bool(program.maps) and bool(called & MAP_HELPERS),
                   packet=packet, constants=comparison_constants(program),
                   sockets=bool(called & SOCKET_LOOKUPS), ctx=ctx and reads_ctx(program))


# A setting is (name, Variant fields); an axis is an ordered tuple of settings.
Setting = tuple[str, dict]


def _axes(surface: Surface) -> list[tuple[Setting, ...]]:
    axes = []
    boundary = boundary_values(surface.constants)
    if surface.maps:
        axes.append(_map_axis(boundary))
    short = {name: s for name, s in EDGE_HELPERS.values()}
    for helper in surface.helpers:
        mask = (1 << RESULT_BITS[helper]) - 1
        values = dict.fromkeys([v & mask for v in boundary] + list(EDGE_VALUES))
        axes.append(tuple((f"{short[helper]}={v:#x}",
                           {"helper_values": ((helper, (v,) * EDGE_CALLS),)}) for v in values))
    if surface.sockets:
        axes.append((("sk_lookup=found", {"helper_values": ((SK_LOOKUP, (1,) * EDGE_CALLS),)}),))
    if surface.packet:
        axes.append(tuple((name, {"packet": data}) for name, data in PACKETS))
    if surface.ctx:
        patterns = [(f"ctx=u64:{v & MASK64:#x}", word(v)) for v in boundary]
        axes.append(tuple((name, {"ctx_in": data})
                          for name, data in patterns + [("ctx=0xff", b"\xff")]))
    return axes


def _map_axis(boundary: tuple[int, ...]) -> tuple[Setting, ...]:
    """Pre-filled maps: the program's own patterns first (when it compares), then byte fills."""
    patterns = [("prefill, map=ascending", ascending())] if boundary else []
    patterns += [(f"prefill, map=u64:{v & MASK64:#x}", word(v)) for v in boundary]
    patterns += [(f"prefill, map={fill:#x}" if fill else "prefill", fill) for fill in MAP_FILLS]
    return tuple((name, {"prefill": True, "map_fill": fill}) for name, fill in patterns)


def _variant(settings: Iterable[Setting]) -> Variant:
    names, fields = [], {"helper_values": ()}
    for name, changes in settings:
        names.append(name)
        for key, value in changes.items():
            fields[key] = fields[key] + value if key == "helper_values" else value
    return Variant(", ".join(names), **fields)


def variants(surface: Surface) -> list[Variant]:
    """Every variant for a program with this surface, in exploration order (first: the diagonal,
    setting i of every axis; then the rest of the cartesian product)."""
    axes = _axes(surface)
    if not axes:
        return []
    longest = max(len(axis) for axis in axes)
    diagonal = [tuple(i % len(axis) for axis in axes) for i in range(longest)]
    order = diagonal + [p for p in itertools.product(*(range(len(a)) for a in axes))
                        if p not in diagonal]
    return [_variant(axis[i] for axis, i in zip(axes, picks)) for picks in order]


def budget(surface: Surface, n: int) -> int:
    """How many variants to run for `n` asked: n, plus one for each setting the program's own
    values (boundary values, found sockets) added to its longest axis, so that they never push
    the generic edge values out of the first n."""
    def longest(s: Surface) -> int:
        return max((len(axis) for axis in _axes(s)), default=0)
    return n + longest(surface) - longest(replace(surface, constants=(), sockets=False)) if n else 0


# -- running them --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Outcome:
    """What one run of a test program showed."""
    findings: tuple[dict, ...] = ()                # finding records (`Finding.to_json()` shape)
    fault: str | None = None                       # first line of the oops, when the run faulted
    error: str | None = None                       # the run could not be done (not a program bug)
    r0: int | None = None


RunVariant = Callable[[Variant], Outcome]


@runtime_checkable
class Explorable(Protocol):
    """A test case that can run its program on other inputs (the runner explores only these)."""
    msgs: tuple[str, ...]                  # expected verifier messages (what-if judges them)

    def surface(self) -> Surface | None:
        """What the program can observe; None when there is no program to run."""

    def run_variant(self, engine, variant: Variant, *, insn_limit: int) -> Outcome:
        """One run on `variant`'s inputs (FAITHFUL: the test's own), retval not judged."""


def variant_runner(case: Explorable, engine, insn_limit: int) -> RunVariant:
    """Run one variant of `case`; a limit of ours (an unemulated helper...) is that run's error,
    not the test's, and the other variants still run."""
    def run(variant: Variant) -> Outcome:
        try:
            return case.run_variant(engine, variant, insn_limit=insn_limit)
        except BpfKasanError as e:
            return Outcome(error=str(e))
    return run


def explore(run: RunVariant, candidates: list[Variant], n: int) -> list[tuple[Variant, Outcome]]:
    """Run the first `n` candidates, in order."""
    return [(variant, run(variant)) for variant in candidates[:max(n, 0)]]


def tagged(record: dict, *, variant: str, mode: str, label: str | None = None) -> dict:
    """A finding record marked with how it was found; the rest of the record (its `stricter`
    reason among them) is kept as it is."""
    out = dict(record, variant=variant, mode=mode)
    if label:
        out["label"] = label
    return out


def dedup(records: Iterable[dict]) -> list[dict]:
    """The first record of each (title, insn), in order."""
    seen, out = set(), []
    for record in records:
        key = (record.get("title"), record.get("insn"))
        if key not in seen:
            seen.add(key)
            out.append(record)
    return out


def explored_findings(faithful: Iterable[dict], runs: list[tuple[Variant, Outcome]], *,
                      mode: str = MODE_EXPLORE, label: str | None = None) -> list[dict]:
    """The faithful run's findings, then each variant's, tagged and deduplicated."""
    records = list(faithful)
    for variant, outcome in runs:
        records += [tagged(r, variant=variant.name, mode=mode, label=label)
                    for r in outcome.findings]
    return dedup(records)


EXPLORED = "explored"            # extra key: {"variants": N, "oops": [{variant, fault}], "errors"}


def explored_result(result: TestResult, runs: list[tuple[Variant, Outcome]]) -> TestResult:
    """`result` (a faithful judgement) with the findings of its exploration runs added. An oops in a
    variant is kept too: the verifier accepted the program, so a fault on any input is a bug."""
    entry = {"variants": len(runs),
             "oops": [{"variant": v.name, "fault": o.fault} for v, o in runs if o.fault],
             "errors": sorted({o.error for _, o in runs if o.error})}
    return result.with_findings(explored_findings(result.finding_records, runs),
                                extra={EXPLORED: entry})


def explore_case(case: Explorable, result: TestResult, engine, insn_limit: int,
                 n: int) -> TestResult:
    """`result` (the faithful judgement of an executed test) with the first `n` variants run."""
    surface = case.surface()
    if surface is None:
        return result
    try:
        runs = explore(variant_runner(case, engine, insn_limit), variants(surface),
                       budget(surface, n))
    except Exception as e:                # noqa: BLE001 - a crash of ours makes the test an error
        return crashed(result, e, "exploration")
    return explored_result(result, runs)


def crashed(result: TestResult, error: Exception, phase: str) -> TestResult:
    """`result` turned into an error: a `phase` run crashed our tool (our bug, not a finding)."""
    frame = traceback.extract_tb(error.__traceback__)[-1] if error.__traceback__ else None
    where = f" at {frame.filename}:{frame.lineno}" if frame else ""
    return replace(result, status="error",
                   reason=f"{phase} run crashed: {type(error).__name__}: {error}{where}")
