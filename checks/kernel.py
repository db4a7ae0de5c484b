"""`Kernel`: the emulated kernel one test runs in: maps, helpers, kfuncs, KASAN, and the run.

One per process is enough (they share the process's `Machine`; several may coexist, each
points the helper stubs its program calls at itself before every run). A test goes:

    kernel.begin(program, test="verifier_foo/bar")   # fresh heap, maps from program.maps
    ctx = kernel.kmalloc(192, "struct __sk_buff")     # whatever the caller's context needs
    run = kernel.execute(program, args=(ctx,))        # KernelRun: r0, findings, fault, error

`execute` compiles the program for the machine (cached per program object, KASAN mode and map
addresses), turning ld_imm64 map references into kernel addresses (PSEUDO_MAP_FD and MAP_IDX →
the map's kernel object, PSEUDO_MAP_VALUE and MAP_IDX_VALUE → value 0 + off), fills prog arrays
with the entry points of the functions `MapDef.values` names (tail-call targets linked into the
program), runs, and turns the `__asan_*` records into `Finding`s. Tags are computed per
function on the program as loaded (jit/tag.py): `execute(..., loaded_as=)` names the program
before the caller's rewrites (ctx conversion), whose slots the kernel tags.

KASAN modes: "inline" (shadow fast path in the image), "outline" (the kernel's exact
`call __asan_*` before every access), "off". Without multishot only the first report of the
Kernel's lifetime is kept, as the kernel does without kasan_multi_shot; with it, every run starts
untainted, so a test's reports never depend on what ran before it in the process. Every run
starts from the same heap (checks.slab): same test, same addresses. Helpers touch the
program's memory through `helper_access` (checks.helper_access): checked like instrumented C.

Hooks for other layers:
- `register_helper(id, fn, src=, name=)` with fn(kernel, r1..r5) -> r0; ids -1/-2/-4 (src 0)
  are the LD_ABS/LD_IND loaders the JIT calls with rdi = skb (r6), rsi = offset.
- `ctx_packet(kernel, ctx) -> (data address, length)`: the packet behind a context pointer, for
  bpf_skb_load_bytes; set it on the instance or, for every kernel, as the module attribute
  `checks.kernel.ctx_packet`.

Owns: run set-up and the helper/kfunc table of a run. Must not import github or bot/.
"""
from __future__ import annotations

import random
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import Callable, Mapping, Sequence

from checks import helpers as H
from checks.asan_routine import InstalledAsan
from checks.errors import CheckError
from checks.helper_access import HelperAccess, findings_of_run
from checks.interp import check_control_flow
from checks.kasan_records import ReportGate
from checks.machine import DEFAULT_TIME_LIMIT, HelperError, Machine, StopRun, shared_machine
from checks.maps import HashMap, MapObject, MapOfMaps, ProgArray, all_maps, make_map
from checks.native_helpers import bpf_loop_code, for_each_code, tail_call_adapter
from checks.report import Finding, ReportContext, Task
from checks.shadow import Verdict, check_region
from jit import isa
from jit.compile import compile_program
from jit.emit_mem import SKB_LOAD_STUB
from jit.image import KASAN_MODES, Image
from jit.program import Program
from jit.tag import func_tags

MASK64 = 0xFFFFFFFFFFFFFFFF
KernelHelper = Callable[..., int]           # fn(kernel, r1, r2, r3, r4, r5) -> r0
# The packet behind a context pointer; the contexts layer registers it (see module docstring).
ctx_packet: Callable[["Kernel", int], tuple[int, int]] | None = None
FOR_EACH_PREPARE = -100                    # private helper id of for_each's table builder
_MAP_OBJECT = (isa.PSEUDO_MAP_FD, isa.PSEUDO_MAP_IDX)
_MAP_VALUE = (isa.PSEUDO_MAP_VALUE, isa.PSEUDO_MAP_IDX_VALUE)
_CACHE_PROGRAMS = 128


@dataclass
class KernelRun:
    r0: int
    insns: int
    findings: list[Finding] = field(default_factory=list)
    fault: str | None = None                # the kernel-style oops text, when the run crashed
    fault_insn: int | None = None
    error: str | None = None                # why the run stopped without an oops
    duration_s: float = 0.0


@dataclass(frozen=True)
class _Compiled:
    image: Image
    calls: tuple[tuple[int, int], ...]      # (src, imm) of every helper, kfunc and LD_ABS stub


@dataclass
class _Loaded:
    """A program seen before: its map references and tags, and its images by resolution."""
    program: Program                        # kept alive so its id() stays unique
    refs: tuple[tuple[int, int, int, int], ...]     # (pc, pseudo src, map index, value offset)
    tags: tuple[str, ...]
    callx: bool
    images: dict = field(default_factory=dict)      # (kasan, unpriv, addresses) -> _Compiled
    tagged_from: Program | None = None              # the `loaded_as` the tags came from


class Kernel:
    def __init__(self, *, kasan: str = "inline", multishot: bool = True,
                 machine: Machine | None = None):
        if kasan not in KASAN_MODES:
            raise CheckError(f"unknown KASAN mode {kasan!r} (expected one of {', '.join(KASAN_MODES)})")
        self.machine = machine or shared_machine()
        self.kasan, self.multishot = kasan, multishot
        self.gate = ReportGate(multishot)
        self.asan = InstalledAsan(self.machine)
        self.helper_access = HelperAccess(self)      # helpers' checked reads and writes
        self.task = Task()
        self.ctx_packet: Callable[[Kernel, int], tuple[int, int]] | None = None
        self._helpers: dict[tuple[int, int], tuple[str, KernelHelper]] = {}
        self._adapters: dict[tuple[int, int], Callable] = {}    # machine-side wrappers, by key
        for helper_id, fn in H.HELPERS.items():
            self.register_helper(helper_id, fn)
        for k in H.KFUNCS.values():
            self.register_helper(k.id, k.fn, name=k.name, src=isa.PSEUDO_KFUNC_CALL)
        self.register_helper(FOR_EACH_PREPARE, H.for_each_table, name="bpf_for_each_map_elem table")
        self._install_natives()
        self._programs: OrderedDict[int, _Loaded] = OrderedDict()
        self.maps: list[MapObject] = []
        self.lookups: list[tuple[int, bytes]] = []
        self.trace_output: list[str] = []
        self.run_state: dict = {}                    # helpers' own per-run bookkeeping
        self._by_addr: dict[int, MapObject] = {}
        self._begun: Program | None = None
        self.test = self.variant = ""
        self.unpriv = False
        self._overrides: dict[str, list[int]] = {}
        self.rng = random.Random(0)
        self._ktime = H.KTIME_START

    # -- set-up ---------------------------------------------------------------------------------

    def register_helper(self, helper_id: int, fn: KernelHelper, *, name: str = "", src: int = 0) -> None:
        """Serve helper `helper_id` (src 0) or kfunc `helper_id` (src 2) with fn(kernel, r1..r5)."""
        label = name or (H.helper_label(helper_id) if src == 0 else f"kfunc #{helper_id}")
        self._helpers[(src, helper_id)] = (label, fn)
        self._adapters.pop((src, helper_id), None)

    def _install_natives(self) -> None:
        m = self.machine
        budget, stop = m.target().budget_address, m.budget_stop
        if not m.has_helper(0, H.LOOP):
            m.register_native(H.LOOP, bpf_loop_code(budget, stop), name="bpf_loop")
        if not m.has_helper(0, H.FOR_EACH_MAP_ELEM):
            prepare = m.register_helper(FOR_EACH_PREPARE, None, name="bpf_for_each_map_elem table")
            m.register_native(H.FOR_EACH_MAP_ELEM, for_each_code(budget, stop, prepare),
                              name="bpf_for_each_map_elem")

    def begin(self, program: Program, *, test: str = "", variant: str = "",
              helper_values: Mapping[str, Sequence[int]] | None = None,
              prefill: bool = False, map_fill: int | bytes | None = None, seed: int = 0,
              unpriv: bool = False) -> None:
        """Fresh run state for `program`: heap reset, its maps created (see module docstring).
        `unpriv`: the program was loaded unprivileged, so it runs with the verifier's tail-call
        index guard (`Target.tail_call_index_guard`)."""
        previous = self.lookups
        self.machine.reset()
        self.asan.begin_run()
        if self.multishot:            # each run reports as on a fresh boot: no taint from others
            self.gate = ReportGate(True)
        self.test, self.variant, self.unpriv = test, variant, unpriv
        self._overrides = {name: list(values) for name, values in (helper_values or {}).items()}
        self.rng, self._ktime = random.Random(seed), H.KTIME_START
        self.lookups, self.trace_output, self.run_state = [], [], {}
        self.maps = [make_map(self, i, d, map_fill) for i, d in enumerate(program.maps)]
        named = {m.name: m for m in self.maps}
        for m in self.maps:
            if isinstance(m, MapOfMaps):
                m.link(named.get)
        self._by_addr = {}
        self._begun = program
        if prefill:
            for index, key in previous:
                target = self.maps[index] if index < len(self.maps) else None
                if isinstance(target, HashMap) and len(key) == target.definition.key_size:
                    target.value_address(key, create=True)

    # -- memory, for helpers and contexts --------------------------------------------------------

    def kmalloc(self, size: int, label: str, *, stricter: str = "") -> int:
        """An unpoisoned, zeroed slab object with a redzone after it; freed at the next begin."""
        return self.machine.alloc(label, size, stricter=stricter)[0]

    def kfree(self, addr: int) -> None:
        bad = self.machine.slab.kfree(addr)
        if bad:
            raise CheckError(f"kfree({addr:#x}): {bad} inside the emulated kernel")

    def read(self, addr: int, size: int) -> bytes:
        return self.machine.read(addr & MASK64, size)

    def write(self, addr: int, data: bytes) -> None:
        self.machine.write(addr & MASK64, data)

    def read_checked(self, addr: int, size: int) -> bytes | None:
        """The bytes at `addr` if they are mapped and not poisoned (a nofault copy), else None."""
        if size == 0:
            return b""
        if check_region(self.machine.shadow, addr & MASK64, size) != Verdict.OK:
            return None
        try:
            return self.read(addr, size)
        except CheckError:
            return None

    def read_cstring(self, addr: int, limit: int = 256) -> bytes:
        out = bytearray()
        while len(out) < limit:
            byte = self.read(addr + len(out), 1)
            if byte == b"\0":
                break
            out += byte
        return bytes(out)

    def find_object(self, addr: int):
        return self.machine.find_object(addr & MASK64)

    def poison(self, addr: int, size: int, value: int) -> None:
        view = self.machine.shadow.view_for(addr)
        if view is None or not view.covers(addr, size):
            raise HelperError(f"cannot poison {addr:#x}+{size}: no shadow memory there")
        view.poison(addr, size, value)

    def unpoison(self, addr: int, size: int) -> None:
        view = self.machine.shadow.view_for(addr)
        if view is None or not view.covers(addr, size):
            raise HelperError(f"cannot unpoison {addr:#x}+{size}: no shadow memory there")
        view.unpoison(addr, size)

    # -- state helpers read ----------------------------------------------------------------------

    def map_at(self, addr: int) -> MapObject | None:
        """The map whose kernel object is at `addr` (inner maps of map-in-maps included)."""
        found = self._by_addr.get(addr)
        if found is None:
            self._by_addr = {m.addr: m for top in self.maps for m in all_maps(top)}
            found = self._by_addr.get(addr)
        return found

    def helper_result(self, name: str, default: Callable[[], int]) -> int:
        """The next exploration override for helper `name`, else `default()`."""
        values = self._overrides.get(name)
        return (values.pop(0) if values else default()) & MASK64

    def next_ktime(self) -> int:
        self._ktime += H.KTIME_STEP
        return self._ktime

    def packet_of(self, ctx: int) -> tuple[int, int]:
        hook = self.ctx_packet or ctx_packet
        if hook is None:
            raise HelperError("bpf_skb_load_bytes needs the packet behind the context, but no "
                              "ctx_packet hook is registered (checks.kernel.ctx_packet)")
        return hook(self, ctx)

    # -- running ---------------------------------------------------------------------------------

    def execute(self, program: Program, *, args: tuple[int, ...] = (), insn_limit: int = 1_000_000,
                time_limit: float = DEFAULT_TIME_LIMIT, loaded_as: Program | None = None) -> KernelRun:
        """Run `program`. `loaded_as`: the program as its loader handed it in, when `program` is
        a rewrite of it (ctx accesses converted...): function tags come from it, by name."""
        started = time.perf_counter()
        if self._begun is not program and len(self.maps) != len(program.maps):
            raise CheckError("Kernel.execute: call begin(program) first, so its maps exist",
                             file=program.file or None)
        loaded = self._loaded(program, loaded_as)
        compiled = self._compiled(loaded)
        self._point_helpers(compiled.calls, loaded.callx)
        self._link_prog_arrays(compiled.image)
        self.asan.begin_run()
        self.helper_access.begin_run()
        r = self.machine.run(compiled.image, args, insn_limit=insn_limit, time_limit=time_limit,
                             tag=loaded.tags)
        findings = self.findings_of(program, compiled.image)
        error = r.error
        if error and r.error_insn is not None and r.fault is None:
            error += f" at insn {r.error_insn}"
        return KernelRun(r0=r.r0 if r.r0 is not None else 0, insns=r.insns, findings=findings,
                         fault="\n".join(r.fault.lines) if r.fault else None,
                         fault_insn=r.fault.insn if r.fault else None, error=error,
                         duration_s=time.perf_counter() - started)

    def findings_of(self, program: Program, image: Image, *, test: str | None = None) -> list[Finding]:
        """The KASAN reports of the run of `image` that just ended (`program` as loaded: the
        tags come from it), through this kernel's multishot gate."""
        if self.kasan == "off":
            return []
        records = self.asan.records().records
        if not records:
            return []
        ctx = ReportContext(image, program, self.machine.shadow, self.machine.find_object, self.task)
        return findings_of_run(ctx, records, self.gate, self.helper_access.calls, test=self.test if test is None else test,
                               variant=self.variant)

    # -- compiling -------------------------------------------------------------------------------

    def _loaded(self, program: Program, loaded_as: Program | None = None) -> _Loaded:
        loaded = self._programs.get(id(program))
        if loaded is None or loaded.program is not program:
            loaded = _Loaded(program, _map_refs(program), func_tags(program),
                             any(i.is_call and i.source == isa.X for i in program.insns))
            self._programs[id(program)] = loaded
            if len(self._programs) > _CACHE_PROGRAMS:
                self._programs.popitem(last=False)
        self._programs.move_to_end(id(program))
        if loaded.tagged_from is not loaded_as:
            loaded.tags, loaded.tagged_from = tags_as_loaded(program, loaded_as), loaded_as
        return loaded

    def _address(self, program: Program, src: int, index: int, off: int, pc: int) -> int:
        if not 0 <= index < len(self.maps):
            raise CheckError(f"ld_imm64 refers to map #{index}, but the program has "
                             f"{len(self.maps)} maps", file=program.file or None, insn=pc)
        m = self.maps[index]
        if src in _MAP_OBJECT:
            return m.addr
        value = m.value_address(bytes(m.definition.key_size), create=True)
        if value is None:
            raise CheckError(f"ld_imm64 map_value of map {m.name} ({m.definition.type}): the map "
                             "has no value 0 to point at", file=program.file or None, insn=pc)
        return (value + off) & MASK64

    def _compiled(self, loaded: _Loaded) -> _Compiled:
        program = loaded.program
        addresses = tuple(self._address(program, src, index, off, pc)
                          for pc, src, index, off in loaded.refs)
        key = (self.kasan, self.unpriv, addresses)
        compiled = loaded.images.get(key)
        if compiled is None:
            insns = list(program.insns)
            for (pc, _, _, _), addr in zip(loaded.refs, addresses):
                insns[pc], insns[pc + 1] = isa.ld_imm64(insns[pc].dst, addr)
            compiled = loaded.images[key] = self._compile(replace(program, insns=tuple(insns)))
        return compiled

    def _compile(self, program: Program) -> _Compiled:
        isa.check(program.insns, file=program.file or None)
        check_control_flow(program)
        calls = called_helpers(program)
        for src, imm in calls:
            if not self.machine.has_helper(src, imm):
                self.machine.register_helper(imm, None, src=src)
        target = self.machine.target(kasan=self.kasan, asan_address=self.asan.address,
                                     tail_calls=True, unpriv=self.unpriv)
        return _Compiled(compile_program(program, target), calls)

    # -- per run ---------------------------------------------------------------------------------

    def _point_helpers(self, calls, callx: bool) -> None:
        """Point the machine's stubs for `calls` at this kernel's handlers (callx: every helper)."""
        keys = list(self._helpers) if callx else list(calls)
        if (0, H.FOR_EACH_MAP_ELEM) in calls:
            keys.append((0, FOR_EACH_PREPARE))
        for key in keys:
            if self.machine.is_native(*key):
                continue
            src, imm = key
            self.machine.register_helper(imm, self._adapter(key), src=src, name=self._label(key))

    def _label(self, key: tuple[int, int]) -> str:
        entry = self._helpers.get(key)
        if entry:
            return entry[0]
        src, imm = key
        return H.helper_label(imm) if src == 0 else f"kfunc #{imm}"

    def _adapter(self, key: tuple[int, int]) -> Callable:
        adapter = self._adapters.get(key)
        if adapter is None:
            adapter = self._adapters[key] = self._make_adapter(key)
        return adapter

    def _make_adapter(self, key: tuple[int, int]) -> Callable:
        src, imm = key
        entry = self._helpers.get(key)
        if entry is None:
            return lambda machine, *args: _unknown(src, imm)
        label, fn = entry

        def call(machine, r1, r2, r3, r4, r5):
            try:
                return fn(self, r1, r2, r3, r4, r5)
            except (StopRun, HelperError):
                raise
            except CheckError as e:
                raise HelperError(f"{label}: {e.message}") from None
        return call

    def _link_prog_arrays(self, image: Image) -> None:
        if any(isinstance(m, ProgArray) for m in self.maps):
            entries = {f.name: self._tail_call_entry(image, i) for i, f in enumerate(image.funcs)}
            for m in self.maps:
                if isinstance(m, ProgArray):
                    m.link(entries.get)

    def _tail_call_entry(self, image: Image, index: int) -> int:
        """Where a prog array points for function `index`: the function itself if it is the
        main program, else an adapter (the JIT compiled it as a subprog, see native_helpers)."""
        entry = image.base + image.funcs[index].offset
        if index == 0:
            return entry
        counter, _ = self.machine.data("tail call counter", 8)
        return self.machine.alloc_text(f"tail call to {image.funcs[index].name}@{entry:#x}",
                                       tail_call_adapter(counter, entry))


def _unknown(src: int, imm: int):
    if src == 0 and imm in SKB_LOAD_STUB.values():
        raise HelperError("LD_ABS/LD_IND needs a packet context, but no skb loader is registered "
                          f"(Kernel.register_helper({imm}, ...))")
    if src == isa.PSEUDO_KFUNC_CALL:
        raise HelperError(f"unknown kfunc #{imm}")
    name = H.helper_names().get(imm)
    raise HelperError(f"unknown helper {name} (#{imm})" if name else f"unknown helper #{imm}")


def _map_refs(program: Program) -> tuple[tuple[int, int, int, int], ...]:
    """(pc, src, map index, value offset) of every ld_imm64 map reference."""
    refs = []
    for pc, insn in enumerate(program.insns):
        if insn.is_ld_imm64 and insn.src in _MAP_OBJECT + _MAP_VALUE and pc + 1 < len(program.insns):
            off = program.insns[pc + 1].imm if insn.src in _MAP_VALUE else 0
            refs.append((pc, insn.src, insn.imm, off))
        elif insn.is_ld_imm64 and insn.src == isa.PSEUDO_BTF_ID:
            raise CheckError("ld_imm64 of a kernel symbol (PSEUDO_BTF_ID) is not emulated",
                             file=program.file or None, insn=pc)
    return tuple(refs)


def tags_as_loaded(program: Program, loaded_as: Program | None) -> tuple[str, ...]:
    """The tag of each function of `program`: over its slots in `loaded_as` (found by name) when
    given, as the kernel tags the instructions it was handed before rewriting them; a function
    `loaded_as` lacks is tagged over its own slots."""
    own = func_tags(program)
    if loaded_as is None:
        return own
    before = dict(zip((name for _, name in loaded_as.funcs), func_tags(loaded_as)))
    return tuple(before.get(name, tag) for (_, name), tag in zip(program.funcs, own))


def called_helpers(program: Program) -> tuple[tuple[int, int], ...]:
    """(src, imm) of every helper and kfunc `program` calls, and of the LD_ABS/LD_IND loaders."""
    calls = set()
    for insn in program.insns:
        if insn.is_call and insn.source == isa.K and insn.src in (isa.CALL_HELPER, isa.PSEUDO_KFUNC_CALL):
            calls.add((insn.src, insn.imm))
        elif insn.cls == isa.LD and insn.mode in (isa.ABS, isa.IND):
            calls.add((isa.CALL_HELPER, SKB_LOAD_STUB.get(insn.nbytes, -insn.nbytes)))
    return tuple(sorted(calls))
