"""Cross-check of the two ways into a kernel selftest: every 6.12 progs/verifier_*.c that
clang builds (checks.kselftest.compile, the selftests' flags) is read back from its object
(jit.elf + checks.kselftest.elf_cases) and compared with what the C importer reads from the
source, case by case: the expectations field by field and, wherever the importer built a
program, the instructions slot by slot.

Objects are cached under ~/.cache/bpf-kasan/elf-cache (BPF_KASAN_ELF_CACHE), so a rerun only
compares. Skips, saying why, without clang or the kernel tree."""
from __future__ import annotations

import collections

import pytest

from checks.kselftest import load_cases
from checks.kselftest.compile import Compiler, find_clang
from checks.kselftest.elf_cases import differences, load_elf_cases
from jit.errors import JitError

# selftests.md §3.7: 64 of 95 files build with the selftests dir and tools/ headers alone; with
# the system headers and vmlinux.h (bpftool) all of them do.
MIN_BUILT = 64
# Objects our loader refuses whole although libbpf loads them, and why.
UNLOADABLE = {
    "verifier_arena_large": "arena globals live in section .addr_space.1, which jit.elf does not map",
}


@pytest.fixture(scope="module")
def objects(kernel_selftests):
    clang = find_clang()
    if clang is None:
        pytest.skip("no clang with the BPF target (apt-get install clang-19): it builds the selftest objects")
    root = kernel_selftests.parents[3]
    if not (root / "scripts/bpf_doc.py").is_file() or not (root / "include/uapi/linux/bpf.h").is_file():
        pytest.skip(f"kernel tree at {root} lacks scripts/bpf_doc.py or include/uapi/linux/bpf.h "
                    "(needed to generate bpf_helper_defs.h)")
    results = Compiler(clang).build_all(sorted((kernel_selftests / "progs").glob("verifier_*.c")))
    built = {source.stem: b.object for source, b in results.items() if b.ok}
    failed = {source.stem: b.how for source, b in results.items() if not b.ok}
    return built, failed, sum(1 for b in results.values() if b.how == "cached")


def test_every_built_verifier_object_matches_the_importer(objects, kernel_selftests):
    built, failed, cached = objects
    compared = elf_only = 0
    mismatches: list[str] = []
    skipped = collections.Counter()
    refused = {}
    for name, obj in sorted(built.items()):
        from_source = {c.name: c for c in load_cases(kernel_selftests / "progs" / f"{name}.c")}
        try:
            from_object = {c.name: c for c in load_elf_cases(obj)}
        except JitError as e:
            refused[name] = e.message
            continue
        for missing in sorted(from_source.keys() ^ from_object.keys()):
            mismatches.append(f"{name}::{missing}: in only one of source and object")
        for func in sorted(from_source.keys() & from_object.keys()):
            c, e = from_source[func], from_object[func]
            mismatches += [f"{name}::{func}: {d}" for d in differences(c, e)]
            if c.program is not None and e.program is not None:
                compared += 1
            elif e.program is not None:
                elf_only += 1
            else:
                skipped[e.skip_reason or str(e.error)] += 1
    print(f"\nverifier objects: {len(built)} built ({cached} from cache), {len(failed)} did not build; "
          f"{compared} programs compared slot by slot, {elf_only} only the object could build")
    for name, why in sorted(failed.items()):
        print(f"  not built: {name}: {why}")
    for why, n in skipped.most_common():
        print(f"  neither built {n}: {why}")
    for name, why in sorted(refused.items()):
        print(f"  object refused: {name}: {why}")
    assert len(built) >= MIN_BUILT, failed
    assert refused.keys() <= UNLOADABLE.keys(), refused
    assert compared >= 1000
    assert not mismatches, "\n".join(mismatches)
