"""The open-coded iterator kfuncs of the emulated kernel, `fn(kernel, r1..r5) -> r0` each, and
the stable ids programs call them by (BTF ids we chose; `KFUNC_IDS` is what the ELF linker
resolves kfunc names with).

Facts (kernel/bpf/bpf_iter.c and kernel/bpf/helpers.c, 6.12), re-expressed:
- bpf_iter_num: the 8-byte iterator on the program's stack is {s32 cur; s32 end}. `new(start,
  end)` fails with -EINVAL when start > end and with -E2BIG when end - start (in 64 bits) is over
  BPF_MAX_LOOPS, both leaving {0, 0}; otherwise cur = start - 1. `next` gives NULL (and {0, 0})
  once cur + 1 >= end, else increments cur (int arithmetic, wrapping) and returns its address.
  `destroy` zeroes it.
- bpf_iter_bits: the 16-byte iterator is {u64 words pointer, or the word itself when nr_bits is
  64; s32 nr_bits; s32 bit}. `new(ptr, nr_words)` first sets {0, 0, -1}; NULL or no words is
  -EINVAL, more than 511 words -E2BIG. One word is copied into the iterator; more go into a
  kernel allocation. The copy is a nofault read: an unreadable source gives -EFAULT (and the
  allocation is freed again, nr_bits staying 0). `next` finds the next set bit after `bit`
  below nr_bits (bit i is bit i % 64 of little-endian word i / 64), stores it in `bit` and
  returns the address of `bit`; NULL when there is none. `destroy` frees a multi-word copy.

Owns: these kfuncs and their ids. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import struct

from jit.frame import BPF_MAX_LOOPS
from jit.isa import PSEUDO_KFUNC_CALL, s32

MASK64 = 0xFFFFFFFFFFFFFFFF
EINVAL, EFAULT, E2BIG = 22, 14, 7
BITS_MAX_WORDS = 511
NUM = struct.Struct("<ii")                     # bpf_iter_num_kern: cur, end
BITS = struct.Struct("<Qii")                   # bpf_iter_bits_kern: bits (or the copy), nr_bits, bit
BIT_FIELD = 12                                 # offsetof(bpf_iter_bits_kern, bit)


def _neg(errno: int) -> int:
    return -errno & MASK64


# -- bpf_iter_num ----------------------------------------------------------------------------------

def iter_num_new(kernel, it, start, end, *_):
    start, end = s32(start), s32(end)
    if start > end or end - start > BPF_MAX_LOOPS:
        kernel.write(it, NUM.pack(0, 0))
        return _neg(EINVAL if start > end else E2BIG)
    kernel.write(it, NUM.pack(s32(start - 1), end))
    return 0


def iter_num_next(kernel, it, *_):
    cur, end = NUM.unpack(kernel.read(it, NUM.size))
    cur = s32(cur + 1)                         # int arithmetic: wraps, as the kernel's does
    if cur >= end:
        kernel.write(it, NUM.pack(0, 0))
        return 0
    kernel.write(it, NUM.pack(cur, end))
    return it


def iter_num_destroy(kernel, it, *_):
    kernel.write(it, NUM.pack(0, 0))
    return 0


# -- bpf_iter_bits ---------------------------------------------------------------------------------

def iter_bits_new(kernel, it, words, nr_words, *_):
    nr_words &= 0xFFFFFFFF
    kernel.write(it, BITS.pack(0, 0, -1))
    if not words or not nr_words:
        return _neg(EINVAL)
    if nr_words > BITS_MAX_WORDS:
        return _neg(E2BIG)
    data = kernel.read_checked(words, 8 * nr_words)
    if nr_words == 1:
        if data is None:
            return _neg(EFAULT)
        kernel.write(it, BITS.pack(int.from_bytes(data, "little"), 64, -1))
        return 0
    copy = kernel.kmalloc(8 * nr_words, f"bpf_iter_bits copy of {nr_words} words")
    if data is None:
        kernel.kfree(copy)
        kernel.write(it, BITS.pack(copy, 0, -1))
        return _neg(EFAULT)
    kernel.write(copy, data)
    kernel.write(it, BITS.pack(copy, 64 * nr_words, -1))
    return 0


def iter_bits_next(kernel, it, *_):
    bits, nr_bits, bit = BITS.unpack(kernel.read(it, BITS.size))
    if not nr_bits or bit >= nr_bits:
        return 0
    found = _next_set_bit(kernel, bits, nr_bits, bit + 1)
    kernel.write(it + BIT_FIELD, struct.pack("<i", found))
    return it + BIT_FIELD if found < nr_bits else 0


def _next_set_bit(kernel, bits: int, nr_bits: int, start: int) -> int:
    """The first set bit at or after `start`, else nr_bits; `bits` is the word itself for a
    one-word iterator, else the address of the copy. Reads one word at a time."""
    for word_index in range(start // 64, nr_bits // 64):
        word = bits if nr_bits == 64 else int.from_bytes(kernel.read(bits + 8 * word_index, 8), "little")
        word &= MASK64 << (start % 64) if word_index == start // 64 else MASK64
        if word:
            return 64 * word_index + (word & -word).bit_length() - 1
    return nr_bits


def iter_bits_destroy(kernel, it, *_):
    bits, nr_bits, _ = BITS.unpack(kernel.read(it, BITS.size))
    if nr_bits > 64:
        kernel.kfree(bits)
    return 0


# -- the table ---------------------------------------------------------------------------------------

ITER_KFUNCS = {
    "bpf_iter_num_new": (0x7E0101, iter_num_new),
    "bpf_iter_num_next": (0x7E0102, iter_num_next),
    "bpf_iter_num_destroy": (0x7E0103, iter_num_destroy),
    "bpf_iter_bits_new": (0x7E0111, iter_bits_new),
    "bpf_iter_bits_next": (0x7E0112, iter_bits_next),
    "bpf_iter_bits_destroy": (0x7E0113, iter_bits_destroy),
}
KFUNC_IDS = {name: kfunc_id for name, (kfunc_id, _) in ITER_KFUNCS.items()}


def register_iter_kfuncs(kernel) -> None:
    """Serve the kfuncs above in `kernel` (a `checks.kernel.Kernel`)."""
    for name, (kfunc_id, fn) in ITER_KFUNCS.items():
        kernel.register_helper(kfunc_id, fn, name=name, src=PSEUDO_KFUNC_CALL)
