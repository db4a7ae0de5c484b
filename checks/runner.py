"""Find tests under the given paths, run them on an engine, yield `TestResult`s.

Two registries, both meant to grow:
- `ENGINES`: name -> factory of an object with `name` and
  `run(program, mem, *, helpers, insn_limit, unwind_helper) -> EngineResult`.
  `interp` is the reference interpreter; the JIT engine (`checks.jit_engine`, listed in
  `ENGINE_MODULES`) registers itself with `register_engine` when `make_engine("jit")` imports it.
- `FILE_TYPES`: which files hold tests and how to turn one into test cases. A case has `id`, `path`,
  `name` and `run(engine, *, insn_limit) -> TestResult`. `.data` (bpf_conformance / uBPF) is built in;
  `verifier_*.c` and ELF objects plug in with `register_file_type`.

Directories are walked recursively; files no registered type claims are ignored there, but a file
named explicitly must be claimed. A test that cannot be built or run (malformed file) becomes an
`error` result and the run goes on, unless the caller asks for `strict` (one explicit file), in which
case the error propagates and the CLI prints one line and exits 2.

Owns: discovery, dispatch and the engine/file-type registries. Must not import unicorn or bot/.
"""
from __future__ import annotations

import importlib
import pathlib
import time
from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Protocol

from checks.errors import CheckError
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


def make_engine(name: str) -> Engine:
    if name not in ENGINES and name in ENGINE_MODULES:
        importlib.import_module(ENGINE_MODULES[name])
    if name not in ENGINES:
        known = ", ".join(sorted(set(ENGINES) | set(ENGINE_MODULES)))
        raise CheckError(f"unknown engine {name!r} (known: {known})")
    return ENGINES[name]()


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


def _error_result(path: str, test_id: str, engine: Engine, error: BpfKasanError,
                  started: float) -> TestResult:
    return TestResult(id=test_id, file=path, name=pathlib.Path(path).stem, status="error",
                      reason=str(error), engine=engine.name,
                      duration_s=time.perf_counter() - started)


def run_tests(paths: Iterable[str], *, engine: Engine, insn_limit: int = 1_000_000,
              pattern: str | None = None, strict: bool = False) -> Iterator[TestResult]:
    """Yield one result per test, in collection order. `pattern` keeps tests whose id contains it
    (case-insensitive). With `strict`, a malformed test raises instead of becoming an error result."""
    needle = pattern.lower() if pattern else None
    for path, test_id, file_type in collect(paths):
        started = time.perf_counter()
        try:
            cases = file_type.cases(path, test_id)
        except BpfKasanError as e:
            if strict:
                raise
            yield _error_result(path, test_id, engine, e, started)
            continue
        for case in cases:
            if needle and needle not in case.id.lower():
                continue
            started = time.perf_counter()
            try:
                yield case.run(engine, insn_limit=insn_limit)
            except BpfKasanError as e:
                if strict:
                    raise
                yield _error_result(case.path, case.id, engine, e, started)
