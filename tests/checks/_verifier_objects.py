"""Build the kernel's progs/verifier_*.c into BPF objects with clang-19, in parallel, with an
on-disk cache, for the ELF-vs-importer cross-check.

Flags follow the selftests Makefile (selftests.md §3.7): -O2 -g -mcpu=v4, the x86 target arch
define, the selftests dir, tools/include/uapi, tools/lib and tools/include, and the host's
multiarch include dir after the others (as the Makefile's CLANG_SYS_INCLUDES add it).
bpf_helper_defs.h is generated with the tree's scripts/bpf_doc.py into the cache, never into
the tree. A cache entry is keyed by the compiler, the flags and the source; it holds the object
and the hash of every header clang read (its -MD list), and is used only while they all match.
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

CACHE = pathlib.Path(os.environ.get("BPF_KASAN_ELF_CACHE", pathlib.Path.home() / ".cache/bpf-kasan/elf-cache"))
FLAGS = ("-target", "bpf", "-O2", "-g", "-mcpu=v4", "-D__TARGET_ARCH_x86")
MULTIARCH = pathlib.Path("/usr/include/x86_64-linux-gnu")


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little") + p)
    return h.hexdigest()[:32]


@functools.lru_cache(maxsize=None)
def _file_digest(path: str) -> str:
    return _digest(pathlib.Path(path).read_bytes())


def helper_defs(root: pathlib.Path) -> pathlib.Path:
    """A directory holding bpf_helper_defs.h generated from the tree's bpf.h (bpf_helpers.h
    includes it by bare name)."""
    script, header = root / "scripts/bpf_doc.py", root / "include/uapi/linux/bpf.h"
    out = CACHE / f"helper-defs-{_digest(script.read_bytes(), header.read_bytes())}"
    target = out / "bpf_helper_defs.h"
    if not target.is_file():
        text = subprocess.run([sys.executable, str(script), "--header", "--file", str(header.relative_to(root))],
                              cwd=root, capture_output=True, text=True, check=True).stdout
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(text)
        tmp.replace(target)
    return out


class Builder:
    def __init__(self, clang: str, selftests: pathlib.Path):
        self.clang, self.selftests = clang, selftests
        root = selftests.parents[2]          # tools/
        includes = [selftests, root / "include/uapi", root / "lib", root / "include",
                    helper_defs(selftests.parents[3])]
        self.args = [*FLAGS, *(f"-I{p}" for p in includes)]
        if MULTIARCH.is_dir():
            self.args += ["-idirafter", str(MULTIARCH)]
        version = subprocess.run([clang, "--version"], capture_output=True, text=True).stdout
        self.salt = _digest(version.encode(), "\0".join(self.args).encode())

    def build(self, source: pathlib.Path) -> tuple[pathlib.Path | None, str]:
        """(object, "cached" | "built") or (None, the compiler's first error line)."""
        entry = CACHE / _digest(self.salt.encode(), source.name.encode(), source.read_bytes())
        if self._valid(entry):
            return entry / "object.o", "cached"
        with tempfile.TemporaryDirectory(dir=CACHE) as tmp:
            staged = pathlib.Path(tmp) / "entry"
            staged.mkdir()
            done = subprocess.run([self.clang, *self.args, "-MD", "-MF", str(staged / "deps.d"), "-c",
                                   str(source), "-o", str(staged / "object.o")],
                                  cwd=self.selftests, capture_output=True, text=True)
            if done.returncode:
                errors = [line for line in done.stderr.splitlines() if "error:" in line]
                return None, (errors or [done.stderr.strip() or "clang failed"])[0].split("error: ", 1)[-1]
            deps = _depfile(staged / "deps.d", self.selftests)
            (staged / "deps.json").write_text(json.dumps({d: _file_digest(d) for d in deps}))
            shutil.rmtree(entry, ignore_errors=True)
            try:
                staged.rename(entry)
            except OSError:                  # another run stored it first
                pass
        return entry / "object.o", "built"

    @staticmethod
    def _valid(entry: pathlib.Path) -> bool:
        try:
            deps = json.loads((entry / "deps.json").read_text())
            return (entry / "object.o").is_file() and all(_file_digest(p) == h for p, h in deps.items())
        except (OSError, ValueError):
            return False


def _depfile(path: pathlib.Path, cwd: pathlib.Path) -> list[str]:
    """The prerequisites of a make-style dependency file (no escaped spaces in our paths)."""
    text = path.read_text().replace("\\\n", " ")
    return [str((cwd / p).resolve()) for p in text.split(":", 1)[1].split()]


def build_all(clang: str, selftests: pathlib.Path):
    """{name: object} of every verifier_*.c that builds, {name: why} of the others, and how
    many came from the cache."""
    CACHE.mkdir(parents=True, exist_ok=True)
    builder = Builder(clang, selftests)
    sources = sorted((selftests / "progs").glob("verifier_*.c"))
    with concurrent.futures.ThreadPoolExecutor(os.cpu_count() or 2) as pool:  # clang runs as processes
        results = dict(zip((s.stem for s in sources), pool.map(builder.build, sources)))
    built = {name: obj for name, (obj, _) in results.items() if obj is not None}
    failed = {name: why for name, (obj, why) in results.items() if obj is None}
    cached = sum(1 for obj, how in results.values() if how == "cached")
    return built, failed, cached
