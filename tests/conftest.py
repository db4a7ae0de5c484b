"""Shared fixtures: where the bundled suites and the kernel's selftests are."""
from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED = pathlib.Path(os.environ.get("BPF_KASAN_SHARED", ROOT.parent / "shared"))
CONFORMANCE = SHARED / "conformance" / "bpf_conformance"
UBPF = SHARED / "conformance" / "ubpf"


@pytest.fixture(scope="session")
def conformance_dir() -> pathlib.Path:
    if not (CONFORMANCE / "tests").is_dir():
        pytest.skip(f"bpf_conformance suite not found at {CONFORMANCE} (set BPF_KASAN_SHARED)")
    return CONFORMANCE


@pytest.fixture(scope="session")
def ubpf_dir() -> pathlib.Path:
    if not (UBPF / "tests").is_dir():
        pytest.skip(f"uBPF tests not found at {UBPF} (set BPF_KASAN_SHARED)")
    return UBPF


@pytest.fixture(scope="session")
def kernel_selftests() -> pathlib.Path:
    """tools/testing/selftests/bpf of Linux 6.12, downloaded and cached by shared/tools/kernel-selftests."""
    env = os.environ.get("BPF_KASAN_KERNEL_SELFTESTS")
    if env and pathlib.Path(env, "progs").is_dir():
        return pathlib.Path(env)
    tool = SHARED / "tools" / "kernel-selftests"
    if not tool.exists():
        pytest.skip(f"kernel selftests: {tool} not found and BPF_KASAN_KERNEL_SELFTESTS not set")
    try:
        out = subprocess.run([str(tool)], capture_output=True, text=True, timeout=900)
    except (OSError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"kernel selftests: {tool} failed: {e}")
    path = pathlib.Path(out.stdout.strip())
    if out.returncode or not (path / "progs").is_dir():
        pytest.skip(f"kernel selftests: linux-source-6.12 unavailable ({out.stderr.strip()[:200]})")
    return path
