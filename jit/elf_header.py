"""Recognise a BPF object by its first bytes, without loading pyelftools: the runner asks this
of every file it walks.

Owns: the ELF identification test. Must not import unicorn, capstone, pyelftools, anything
from checks/ or bot/.
"""
from __future__ import annotations

import pathlib
import struct

EM_BPF = 247
HEAD_SIZE = 20               # e_ident (16 bytes), e_type, e_machine


def is_bpf_elf(head: bytes) -> bool:
    """Whether the first 20 bytes of a file are those of a little-endian 64-bit EM_BPF ELF."""
    return len(head) >= HEAD_SIZE and head[:4] == b"\x7fELF" and head[4] == 2 and head[5] == 1 \
        and struct.unpack_from("<H", head, 18)[0] == EM_BPF


def is_bpf_object(path: str | pathlib.Path) -> bool:
    """Whether `path` is a `.o` file (`x.o`, `x.bpf.o`) whose header says it is a BPF object."""
    path = pathlib.Path(path)
    if path.suffix != ".o":
        return False
    try:
        with open(path, "rb") as f:
            return is_bpf_elf(f.read(HEAD_SIZE))
    except OSError:
        return False
