"""Find tests under the given paths, run them on an engine, yield `TestResult`s.

Two registries, both meant to grow:
- `ENGINES`: name -> factory of an object with `name` and
  `run(program, mem, *, helpers, insn_limit, unwind_helper) -> EngineResult`.
  `interp` is the reference interpreter; the JIT engine (`checks.jit_engine`, listed in
  `ENGINE_MODULES`) registers itself with `register_engine` when `make_engine("jit")` imports it.
  An engine with settings (KASAN mode...) defines `configure(EngineOptions)`.
- `FILE_TYPES`: which files hold tests and how to turn one into test cases. A case has `id`, `path`,
  `name` and `run(engine, *, insn_limit) -> TestResult`. `.data` (bpf_conformance / uBPF) is built in;
  `verifier_*.c` and ELF objects plug in with `register_file_type`.

Selection (`RunOptions`): `-k` keeps ids containing a pattern; a `Shard` keeps the ids that hash to
it. After a case's faithful run, a case that is `checks.explore.Explorable` gets more runs: the
first `explore` input variants when it executed, or (with `what_if`) the plain run plus those
variants when it expects a verifier rejection (`checks.whatif`). `checks.parallel` spreads files
over processes with `run_file`.

Directories are walked recursively; files no registered type claims are ignored there, but a file
named explicitly must be claimed. A test that cannot be built or run (malformed file) becomes an
`error` result and the run goes on, unless the caller asks for `strict` (one explicit file), in which
case the error propagates and the CLI prints one line and exits 2.

Owns: discovery, dispatch and the engine/file-type registries. Must not import unicorn or bot/.
"""
from __future__ import annotations

import hashlib
import importlib
import pathlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

from checks.errors import CheckError
from checks.explore import DEFAULT_EXPLORE, Explorable, explore_case
from checks.whatif import what_if_case
from checks.results import TestResult
from jit.errors import BpfKasanError
from jit.program import Program


@dataclass(frozen=True)
class EngineResult:
    """What every engine reports about one run; compared across engines on r0 and mem."""
    r0: int
    insns: int
    mem: bytes
    error: str | None = None
    error_insn: int | None = None


class Engine(Protocol):
    name: str

    def run(self, program: Program, mem: bytes, *, helpers=None, insn_limit: int = ...,
            unwind_helper: int | None = None) -> EngineResult: ...


class InterpEngine:
    """The reference interpreter behind the engine interface."""
    name = "interp"

    def run(self, program: Program, mem: bytes, *, helpers=None, insn_limit: int = 1_000_000,
            unwind_helper: int | None = None) -> EngineResult:
        from checks import interp
        r = interp.run(program, mem=mem, helpers=helpers, insn_limit=insn_limit,
                       unwind_helper=unwind_helper)
        return EngineResult(r.r0, r.insns, r.mem, r.error, r.error_insn)


ENGINES: dict[str, Callable[[], Engine]] = {"interp": InterpEngine}
# Engines in modules of their own that call `register_engine` when imported; imported only when
# asked for, because they load Unicorn.
ENGINE_MODULES = {"jit": "checks.jit_engine"}


def register_engine(name: str, factory: Callable[[], Engine]) -> None:
    ENGINES[name] = factory


@dataclass(frozen=True)
class EngineOptions:
    """Engine settings from the command line. An engine that has settings defines
    `configure(options)`; `make_engine` calls it once, before the first run."""
    kasan: str = "inline"                 # "off" | "inline" | "outline"
    multishot: bool = True                # every KASAN report, not only the first


def make_engine(name: str, options: EngineOptions | None = None) -> Engine:
    if name not in ENGINES and name in ENGINE_MODULES:
        importlib.import_module(ENGINE_MODULES[name])
    if name not in ENGINES:
        known = ", ".join(sorted(set(ENGINES) | set(ENGINE_MODULES)))
        raise CheckError(f"unknown engine {name!r} (known: {known})")
    engine = ENGINES[name]()
    configure = getattr(engine, "configure", None)
    if options is not None and configure is not None:
        configure(options)
    return engine


class Case(Protocol):
    id: str
    path: str
    name: str

    def run(self, engine: Engine, *, insn_limit: int) -> TestResult: ...


@dataclass(frozen=True)
class FileType:
    name: str
    claims: Callable[[pathlib.Path], bool]
    cases: Callable[[str, str], list[Case]]      # (path, id) -> the tests in that file


def _data_cases(path: str, test_id: str) -> list[Case]:
    from checks.conformance import DataCase
    return [DataCase(test_id, path)]


FILE_TYPES: list[FileType] = [
    FileType("bpf_conformance/uBPF .data", lambda p: p.suffix == ".data", _data_cases),
    FileType("kernel selftest .c (test_loader)", lambda p: importlib.import_module("checks.kselftest").is_selftest_source(p), lambda path, test_id: importlib.import_module("checks.kselftest.run").c_file_cases(path, test_id)),
    FileType("BPF ELF object (clang -target bpf)", lambda p: importlib.import_module("jit.elf_header").is_bpf_object(p), lambda path, test_id: importlib.import_module("checks.kselftest.elf_cases").runner_cases(path, test_id)),
]


def register_file_type(file_type: FileType) -> None:
    FILE_TYPES.append(file_type)


def _file_type(path: pathlib.Path) -> FileType | None:
    return next((t for t in FILE_TYPES if t.claims(path)), None)


def collect(paths: Iterable[str]) -> list[tuple[str, str, FileType]]:
    """(path, id, file type) of every test file, in a stable order. A test's id is its path below
    the directory it was found in (or its file name when given directly), unique within the run."""
    found, seen = [], set()
    for given in paths:
        root = pathlib.Path(given)
        if root.is_dir():
            files = [(p, p.relative_to(root).as_posix()) for p in sorted(root.rglob("*"))
                     if p.is_file() and _file_type(p)]
        elif root.is_file():
            if not _file_type(root):
                known = ", ".join(t.name for t in FILE_TYPES)
                raise CheckError(f"no test format claims this file (known: {known})", file=given)
            files = [(root, root.name)]
        else:
            raise CheckError("no such file or directory", file=given)
        for path, test_id in files:
            test_id = test_id if test_id not in seen else str(path)
            seen.add(test_id)
            found.append((str(path), test_id, _file_type(path)))
    return found


@dataclass(frozen=True)
class Shard:
    """Part `index` (1-based) of `count`: the tests whose id hashes to it. A hash of the id, not a
    position, so adding a test never moves the others to another shard of a CI matrix."""
    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> "Shard":
        index, slash, count = text.partition("/")
        if not (slash and index.isdigit() and count.isdigit() and 1 <= int(index) <= int(count)):
            raise CheckError(f"shard must be I/N with 1 <= I <= N, not {text!r}")
        return cls(int(index), int(count))

    def __contains__(self, test_id: str) -> bool:
        digest = hashlib.sha1(test_id.encode("utf-8", "surrogateescape")).digest()
        return int.from_bytes(digest[:8], "big") % self.count == self.index - 1


@dataclass(frozen=True)
class RunOptions:
    """How to run the collected tests; the same in every worker process."""
    insn_limit: int = 1_000_000
    pattern: str | None = None            # keep ids containing it (case-insensitive)
    strict: bool = False                  # a malformed test raises instead of becoming an error
    explore: int = DEFAULT_EXPLORE        # input variants after each executed test's faithful run
    what_if: bool = False                 # also run the tests that expect a verifier rejection
    shard: Shard | None = None

    def selects(self, test_id: str) -> bool:
        if self.pattern and self.pattern.lower() not in test_id.lower():
            return False
        return self.shard is None or test_id in self.shard


def _error_result(path: str, test_id: str, engine: Engine, error: BpfKasanError,
                  started: float) -> TestResult:
    return TestResult(id=test_id, file=path, name=pathlib.Path(path).stem, status="error",
                      reason=str(error), engine=engine.name,
                      duration_s=time.perf_counter() - started)


def run_file(path: str, test_id: str, file_type: FileType, engine: Engine,
             options: RunOptions) -> Iterator[TestResult]:
    """The results of the selected tests of one file. A file that cannot be read as a whole is
    one error result (unless the shard leaves its id to another part)."""
    started = time.perf_counter()
    try:
        cases = file_type.cases(path, test_id)
    except BpfKasanError as e:
        if options.strict:
            raise
        if options.shard is None or test_id in options.shard:
            yield _error_result(path, test_id, engine, e, started)
        return
    for case in cases:
        if options.selects(case.id):
            yield run_case(case, engine, options)


def run_case(case: Case, engine: Engine, options: RunOptions) -> TestResult:
    """The faithful run, then (for cases that can run input variants) what-if or exploration."""
    started = time.perf_counter()
    try:
        result = case.run(engine, insn_limit=options.insn_limit)
    except BpfKasanError as e:
        if options.strict:
            raise
        return _error_result(case.path, case.id, engine, e, started)
    if not isinstance(case, Explorable) or result.status == "error":
        return result
    if result.expect == "failure":
        return what_if_case(case, result, engine, options.insn_limit, options.explore) \
            if options.what_if else result
    if options.explore and result.executed:
        return explore_case(case, result, engine, options.insn_limit, options.explore)
    return result


def run_tests(paths: Iterable[str], *, engine: Engine, insn_limit: int = 1_000_000,
              pattern: str | None = None, strict: bool = False, explore: int = DEFAULT_EXPLORE,
              what_if: bool = False, shard: Shard | None = None) -> Iterator[TestResult]:
    """Yield one result per selected test, in collection order, in this process (`checks.parallel`
    spreads the same work over processes)."""
    options = RunOptions(insn_limit=insn_limit, pattern=pattern, strict=strict, explore=explore,
                         what_if=what_if, shard=shard)
    for path, test_id, file_type in collect(paths):
        yield from run_file(path, test_id, file_type, engine, options)
