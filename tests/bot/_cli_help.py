"""The flags a `bpf-kasan` command really has, read from its `--help` (the installed command), and
the flag-shaped words of a piece of text, for checking what workflows and the README pass to it."""
from __future__ import annotations

import functools
import re
import subprocess

FLAG = re.compile(r"(?<![\w$/.-])(--?[A-Za-z][\w-]*)")


def flags_in(text: str) -> set[str]:
    return set(FLAG.findall(text))


@functools.lru_cache(maxsize=None)
def help_flags(command: str) -> frozenset[str]:
    done = subprocess.run(["bpf-kasan", command, "--help"], capture_output=True, text=True, timeout=60, check=True)
    return frozenset(flags_in(done.stdout))
