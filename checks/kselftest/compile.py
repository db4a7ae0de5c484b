"""Build a test_loader-format selftest C file into a BPF object with clang, the way the 6.12
selftests Makefile builds its test_progs-cpuv4 objects, into an on-disk cache.

Flags (facts from the Makefile's BPF_CFLAGS, CLANG_SYS_INCLUDES and CPUV4 rule): -g -O2
--target=bpf -mcpu=v4 -mlittle-endian -D__TARGET_ARCH_x86 -DENABLE_ATOMICS_TESTS; include
dirs: the generated headers first (bpf_helper_defs.h, vmlinux.h), then the selftests dir,
tools/include/uapi, tools/lib and tools/include, and the host compiler's own search list
after everything (`-idirafter`, as get_sys_includes does). -Werror is left out on purpose: a
newer clang's new warning must not cost a test. A file outside a kernel tree gets only its own
directory and the system search list.

Generated headers never go into the kernel tree: bpf_helper_defs.h comes from the tree's
scripts/bpf_doc.py, and vmlinux.h from `bpftool btf dump file /sys/kernel/btf/vmlinux format c`
when both exist; each into a cache directory named after the hash of its inputs.

The cache (~/.cache/bpf-kasan/elf-cache, or $BPF_KASAN_ELF_CACHE): an entry is keyed by the
compiler's version, the arguments and the source; it holds the object and the hash of every
header clang read (its -MD list), and is used only while they all still match; a failed build
is cached too (with its message), so a broken file costs one compile per change, not one per run.
Every build is staged in a temporary directory and renamed into place, so concurrent runs and
worker processes never see half an entry.

Each failure is a `Built` with the reason a skipped test shows ("needs a compiler: clang-19
failed: <first error line>"), never an exception.

Owns: finding the compiler, the generated headers and the object cache. Must not import
unicorn, github or bot/.
"""
from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from typing import Iterable

CACHE_ENV = "BPF_KASAN_ELF_CACHE"
NO_COMPILE_ENV = "BPF_KASAN_NO_COMPILE"        # set (non-empty, not "0") by `bpf-kasan run --no-compile`
FLAGS = ("--target=bpf", "-mlittle-endian", "-O2", "-g", "-mcpu=v4", "-D__TARGET_ARCH_x86",
         "-DENABLE_ATOMICS_TESTS", "-Wno-compare-distinct-pointer-types")
PREFERRED = ("clang-19", "clang")              # the selftests' compiler first
VMLINUX_BTF = pathlib.Path("/sys/kernel/btf/vmlinux")
SELFTESTS = ("tools", "testing", "selftests", "bpf")
POOL = 2                                       # clang processes at once: CI machines have 2 cores
TIMEOUT_S = 300
NEEDS = "needs a compiler"


def default_cache() -> pathlib.Path:
    return pathlib.Path(os.environ.get(CACHE_ENV) or pathlib.Path.home() / ".cache/bpf-kasan/elf-cache")


def compiling_enabled() -> bool:
    """False when the run asked for no compiling (`--no-compile`)."""
    return os.environ.get(NO_COMPILE_ENV, "") in ("", "0")


@functools.lru_cache(maxsize=None)
def find_clang() -> str | None:
    """clang-19 on PATH, else a `clang` that has the BPF target; None when there is neither."""
    for name in PREFERRED:
        path = shutil.which(name)
        if path and _has_bpf_target(path):
            return path
    return None


def _has_bpf_target(clang: str) -> bool:
    done = _run([clang, "--print-targets"])
    return done is not None and any(line.split()[:1] == ["bpf"] for line in done.stdout.splitlines())


def _run(argv: list[str], **kwargs) -> subprocess.CompletedProcess | None:
    """The finished process, or None when it could not be started or ran too long."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=TIMEOUT_S, **kwargs)
    except (OSError, subprocess.TimeoutExpired):
        return None


def digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little") + p)
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=None)
def _file_digest(path: str) -> str:
    return digest(pathlib.Path(path).read_bytes())


@dataclass(frozen=True)
class Tree:
    """The kernel tree a selftest source sits in: `<root>/tools/testing/selftests/bpf`."""
    root: pathlib.Path

    @property
    def selftests(self) -> pathlib.Path:
        return self.root.joinpath(*SELFTESTS)

    @classmethod
    def of(cls, source: pathlib.Path) -> "Tree | None":
        for parent in source.resolve().parents:
            if parent.parts[-len(SELFTESTS):] == SELFTESTS:
                return cls(parent.parents[len(SELFTESTS) - 1])
        return None

    def includes(self) -> list[pathlib.Path]:
        tools = self.root / "tools"
        return [self.selftests, tools / "include/uapi", tools / "lib", tools / "include"]


@dataclass(frozen=True)
class Built:
    """One build: the object, or None and why not."""
    object: pathlib.Path | None
    how: str                   # "cached" | "built", or the skip reason of a failure

    @property
    def ok(self) -> bool:
        return self.object is not None


class GenerationError(Exception):
    """A generated header could not be made; the text says why."""


class Compiler:
    """clang with the selftests' flags, building into `cache`."""

    def __init__(self, clang: str, *, cache: pathlib.Path | None = None):
        self.clang = clang
        self.name = pathlib.Path(clang).name
        self.cache = cache or default_cache()
        done = _run([clang, "--version"])
        self.version = done.stdout if done is not None else ""

    @functools.cached_property
    def system_includes(self) -> tuple[str, ...]:
        """The host compiler's `#include <...>` search list, in order (get_sys_includes)."""
        done = _run([self.clang, "-v", "-E", "-x", "c", os.devnull])
        lines = (done.stderr if done is not None else "").splitlines()
        try:
            start, end = lines.index("#include <...> search starts here:"), lines.index("End of search list.")
        except ValueError:
            return ()
        return tuple(line.strip() for line in lines[start + 1:end])

    def arguments(self, source: pathlib.Path) -> list[str]:
        """Everything but the input and output; GenerationError when a generated header fails."""
        tree = Tree.of(source)
        includes = [] if tree is None else [*generated_includes(tree, self.cache), *tree.includes()]
        return [*FLAGS, *(f"-I{p}" for p in includes),
                *(arg for p in self.system_includes for arg in ("-idirafter", p))]

    def build(self, source: pathlib.Path) -> Built:
        source = pathlib.Path(source).resolve()
        try:
            args = self.arguments(source)
            text = source.read_bytes()
        except (GenerationError, OSError) as e:
            return Built(None, f"{NEEDS}: {e}")
        entry = self.cache / digest(self.version.encode(), "\0".join(args).encode(),
                                    source.name.encode(), text)
        cached = _cached(entry)
        if cached is not None:
            return cached
        self.cache.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=self.cache, prefix="build-") as tmp:
            staged = pathlib.Path(tmp) / "entry"
            staged.mkdir()
            failure = self._compile(source, args, staged)
            if failure is not None:
                (staged / "error.txt").write_text(failure)
            _store(staged, entry)
        return _cached(entry, fresh=True) or Built(None, f"{NEEDS}: cannot store the object in {self.cache}")

    def _compile(self, source: pathlib.Path, args: list[str], staged: pathlib.Path) -> str | None:
        """None when the object was written into `staged`, else the skip reason."""
        done = _run([self.clang, *args, "-MD", "-MF", str(staged / "deps.d"), "-c", str(source),
                     "-o", str(staged / "object.o")], cwd=source.parent)
        if done is None:
            return f"{NEEDS}: {self.name} did not finish within {TIMEOUT_S} s"
        if done.returncode:
            errors = [line for line in done.stderr.splitlines() if "error:" in line]
            first = (errors or [done.stderr.strip() or f"exit status {done.returncode}"])[0]
            return f"{NEEDS}: {self.name} failed: {first.split('error: ', 1)[-1]}"
        deps = _depfile(staged / "deps.d", source.parent)
        (staged / "deps.json").write_text(json.dumps({d: _file_digest(d) for d in deps}))
        return None

    def build_all(self, sources: Iterable[pathlib.Path], *, jobs: int = POOL) -> dict[pathlib.Path, Built]:
        """`build` of each source, `jobs` compilers at a time (threads: clang runs as processes)."""
        sources = list(sources)
        with concurrent.futures.ThreadPoolExecutor(max(1, jobs)) as pool:
            return dict(zip(sources, pool.map(self.build, sources)))


def _cached(entry: pathlib.Path, *, fresh: bool = False) -> Built | None:
    """The entry's result while every header it was built from is unchanged; else None."""
    try:
        if (entry / "error.txt").is_file():
            return Built(None, (entry / "error.txt").read_text())
        deps = json.loads((entry / "deps.json").read_text())
        if (entry / "object.o").is_file() and all(_file_digest(p) == h for p, h in deps.items()):
            return Built(entry / "object.o", "built" if fresh else "cached")
    except (OSError, ValueError):
        pass
    return None


def _store(staged: pathlib.Path, entry: pathlib.Path) -> None:
    """Put `staged` in place of `entry`. An entry another process stored meanwhile is kept (it is
    as good as ours); only a stale one (a header changed since) is replaced."""
    try:
        staged.rename(entry)
        return
    except OSError:
        if _cached(entry) is not None:
            return
    shutil.rmtree(entry, ignore_errors=True)
    try:
        staged.rename(entry)
    except OSError:
        pass


def _depfile(path: pathlib.Path, cwd: pathlib.Path) -> list[str]:
    """The prerequisites of a make-style dependency file (no escaped spaces in our paths)."""
    text = path.read_text().replace("\\\n", " ")
    return [str((cwd / p).resolve()) for p in text.split(":", 1)[1].split()]


# -- generated headers ------------------------------------------------------------------------------

def generated_includes(tree: Tree, cache: pathlib.Path) -> list[pathlib.Path]:
    """Directories holding the headers the selftests build generates: bpf_helper_defs.h always
    (GenerationError if the tree cannot make it), vmlinux.h when bpftool and the running kernel's
    BTF exist (without it, the files that include it fail to build, each with that reason)."""
    out = [helper_defs(tree, cache)]
    vmlinux = vmlinux_header(cache)
    return out + ([vmlinux] if vmlinux is not None else [])


@functools.lru_cache(maxsize=None)
def helper_defs(tree: Tree, cache: pathlib.Path) -> pathlib.Path:
    script, header = tree.root / "scripts/bpf_doc.py", tree.root / "include/uapi/linux/bpf.h"
    try:
        key = digest(script.read_bytes(), header.read_bytes())
    except OSError as e:
        raise GenerationError(f"cannot generate bpf_helper_defs.h: {e.filename}: {e.strerror}") from None
    return _generated(cache / f"helper-defs-{key}", "bpf_helper_defs.h",
                      [sys.executable, str(script), "--header", "--file", "include/uapi/linux/bpf.h"],
                      cwd=tree.root)


@functools.lru_cache(maxsize=None)
def vmlinux_header(cache: pathlib.Path) -> pathlib.Path | None:
    bpftool = shutil.which("bpftool")
    if bpftool is None or not VMLINUX_BTF.is_file():
        return None
    version = _run([bpftool, "--version"])
    try:
        key = digest((version.stdout if version else "").encode(), VMLINUX_BTF.read_bytes())
        return _generated(cache / f"vmlinux-{key}", "vmlinux.h",
                          [bpftool, "btf", "dump", "file", str(VMLINUX_BTF), "format", "c"])
    except (OSError, GenerationError):
        return None


def _generated(directory: pathlib.Path, name: str, argv: list[str], **kwargs) -> pathlib.Path:
    """`directory`, holding `name` = the output of `argv` (made once, written atomically)."""
    target = directory / name
    if target.is_file():
        return directory
    done = _run(argv, **kwargs)
    if done is None or done.returncode or not done.stdout:
        why = (done.stderr.strip().splitlines() or ["no output"])[0] if done else "could not run"
        raise GenerationError(f"cannot generate {name}: {pathlib.Path(argv[0]).name}: {why}")
    directory.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(f".{os.getpid()}.tmp")
    tmp.write_text(done.stdout)
    tmp.replace(target)
    return directory


def default_compiler() -> Compiler | None:
    """A Compiler on the default cache, or None without a clang that targets BPF."""
    clang = find_clang()
    return _compiler(clang, default_cache()) if clang is not None else None


@functools.lru_cache(maxsize=None)
def _compiler(clang: str, cache: pathlib.Path) -> Compiler:
    return Compiler(clang, cache=cache)
