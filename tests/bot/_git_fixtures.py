"""Real git repositories for the series-in tests: the bundled example tree, commits, format-patch mboxes."""
from __future__ import annotations

import os
import pathlib
import shutil
import subprocess

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "bot" / "examples"
EXAMPLE_TREE = EXAMPLES / "tree"
EXAMPLE_MBOX = EXAMPLES / "oob-map-value.mbox"
EXAMPLE_TEST = "tools/testing/selftests/bpf/progs/verifier_example.c"

_ENV = {"GIT_AUTHOR_NAME": "Test Author", "GIT_AUTHOR_EMAIL": "author@example.org",
        "GIT_COMMITTER_NAME": "Test Author", "GIT_COMMITTER_EMAIL": "author@example.org",
        "GIT_CONFIG_NOSYSTEM": "1", "HOME": "/nonexistent"}


def git(repo: pathlib.Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | _ENV
    done = subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True)
    return done.stdout


def make_repo(where: pathlib.Path) -> pathlib.Path:
    """A repository holding the bundled example tree as its first commit."""
    shutil.copytree(EXAMPLE_TREE, where)
    git(where, "init", "-q", "--initial-branch=main")
    git(where, "add", "-A")
    git(where, "commit", "-q", "-m", "example tree")
    return where


def commit(repo: pathlib.Path, message: str, edit) -> str:
    """Apply `edit(text) -> text` to the example test file and commit it; returns the commit id."""
    path = repo / EXAMPLE_TEST
    path.write_text(edit(path.read_text()))
    git(repo, "commit", "-q", "-a", "-m", message)
    return git(repo, "rev-parse", "HEAD").strip()


def format_patch(repo: pathlib.Path, since: str, *extra: str) -> bytes:
    """`git format-patch --stdout` of since..HEAD, as one mbox."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")} | _ENV
    return subprocess.run(["git", "format-patch", "--stdout", "--thread", *extra, since],
                          cwd=repo, env=env, capture_output=True, check=True).stdout


def insert_test(block: str):
    """An edit that adds a test (its full text) before the licence line of the example file."""
    return lambda text: text.replace("char _license[]", block + "\n" + "char _license[]")


def simple_test(name: str, expect: str = "__success __retval(0)", insns: str = "r0 = 0;") -> str:
    return (f'SEC("socket")\n__description("{name}")\n{expect}\n__naked void {name}(void)\n{{\n'
            f'\tasm volatile ("{insns} exit;" ::: __clobber_all);\n}}\n')


# A map value is 8 bytes; this reads the 8 bytes after it.
OOB_TEST = """SEC("socket")
__description("example: read past the map value")
__success __retval(0)
__naked void example_map_value_oob(void)
{
	asm volatile ("					\\
	r1 = 0;						\\
	*(u32*)(r10 - 4) = r1;				\\
	r2 = r10;					\\
	r2 += -4;					\\
	r1 = %[map_example_8b] ll;			\\
	call %[bpf_map_lookup_elem];			\\
	if r0 == 0 goto l0_%=;				\\
	r0 = *(u64*)(r0 + 8);				\\
l0_%=:	exit;						\\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm_addr(map_example_8b)
	: __clobber_all);
}
"""
OOB_LOAD_LINE = "r0 = *(u64*)(r0 + 8);"
