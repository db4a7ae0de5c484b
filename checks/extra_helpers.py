"""Kernel functions the emulated kernel serves for skb programs that are not BPF helpers proper:
the legacy packet loads LD_ABS / LD_IND.

The JIT (jit/emit_mem.py) calls `call_address(0, -size)` with rdi = r6 (the skb ctx) and rsi = the
offset, as the kernel's `bpf_gen_ld_abs` calls `bpf_skb_load_helper_{8,16,32}`; a negative return
makes the program return 0. Semantics (net/core/filter.c): a non-negative offset reads the linear
data if `headlen - offset >= size`; a negative one is SKF_NET_OFF / SKF_LL_OFF relative to the
network / MAC header and must stay within [head, tail); the value is big-endian; anything else
is -EFAULT.

Owns: those handlers and their registration. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from checks.contexts import Kernel, packet_of, skb_view
from jit.isa import s32

EFAULT = 14
MASK64 = 0xFFFFFFFFFFFFFFFF
SKF_NET_OFF = -0x100000
SKF_LL_OFF = -0x200000
LOAD_SIZES = (1, 2, 4)


def packet_load(kernel: Kernel, ctx: int, offset: int, size: int) -> int:
    """bpf_skb_load_helper_{8,16,32}(skb, offset): the value, or -EFAULT (as a u64)."""
    skb = skb_view(kernel, ctx)
    off = s32(offset)
    if off >= 0:
        addr = skb.data + off if skb.len - off >= size else None
    else:
        if off >= SKF_NET_OFF:
            addr = skb.network + off - SKF_NET_OFF
        elif off >= SKF_LL_OFF:
            addr = skb.mac + off - SKF_LL_OFF
        else:
            addr = None
        if addr is not None and not (skb.head <= addr and addr + size <= skb.tail):
            addr = None
    if addr is None:
        return -EFAULT & MASK64
    return int.from_bytes(kernel.read(addr, size), "big")


def _loader(size: int):
    def load(kernel, r1: int, r2: int, _r3: int, _r4: int, _r5: int) -> int:
        return packet_load(kernel, r1, r2, size)
    return load


def register_extra_helpers(kernel) -> None:
    """Serve, in `kernel`, the JIT's LD_ABS / LD_IND stubs (ids -1, -2, -4) and the packet lookup
    bpf_skb_load_bytes needs (`Kernel.ctx_packet`)."""
    for size in LOAD_SIZES:
        kernel.register_helper(-size, _loader(size), name=f"bpf_skb_load_helper_{8 * size}")
    kernel.ctx_packet = packet_of
