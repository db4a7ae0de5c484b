"""Kernel functions the emulated kernel serves for the program types BPF_PROG_TEST_RUN runs, beyond
the generic helpers of `checks.helpers`: the legacy packet loads LD_ABS / LD_IND and the skb and
other helpers the 6.12 selftests call, each as it behaves on test_run's skb (checks.contexts):
the skb is linear with no checksum state. The socket helpers live in `checks.sock_helpers`; they
are registered here with the others. Memory the program points them at goes through
`kernel.helper_access` (checked like the kernel's instrumented C).

LD_ABS / LD_IND: the JIT (jit/emit_mem.py) calls `call_address(0, -size)` with rdi = r6 (the skb
ctx) and rsi = the offset, as the kernel's `bpf_gen_ld_abs` calls `bpf_skb_load_helper_{8,16,32}`;
a negative return makes the program return 0. A non-negative offset reads the linear data if
`headlen - offset >= size`; a negative one is SKF_NET_OFF / SKF_LL_OFF relative to the network /
MAC header and must stay within [head, tail); the value is big-endian; anything else is -EFAULT.

Owns: those functions, and the registration of them and of `checks.sock_helpers`. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import struct

from checks.contexts import SKB_DATA, SKB_DATA_END, SKB_DATA_META, Kernel, packet_of, skb_view
from checks.helpers import HELPERS, ktime_get_ns, neg_errno
from checks.sock_helpers import SOCK_HELPERS
from jit.isa import s32

ENOMEM, EFAULT, EINVAL, ERANGE, ENAMETOOLONG, EAFNOSUPPORT, ENOTSUPP = 12, 14, 22, 34, 36, 97, 524
MASK64 = 0xFFFFFFFFFFFFFFFF
SKF_NET_OFF = -0x100000
SKF_LL_OFF = -0x200000
LOAD_SIZES = (1, 2, 4)
BPF_F_RECOMPUTE_CSUM, BPF_F_INVALIDATE_HASH = 1, 2
FIB_LOOKUP_SIZE = 64                     # sizeof(struct bpf_fib_lookup)
AF_INET, AF_INET6 = 2, 10
BPF_FIB_LKUP_RET_NOT_FWDED = 4
INITIAL_JIFFIES = 0xFFFEDB08             # (unsigned int)(-300 * HZ), HZ = 250
STRTOX_BASE_MASK = 0x1F
FIRST_SOCKET_COOKIE = 1
LOOPBACK_MTU = 65536
BPF_MTU_CHK_SEGS = 1


# -- LD_ABS / LD_IND ----------------------------------------------------------------------------

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
        return neg_errno(EFAULT)
    return int.from_bytes(kernel.read(addr, size), "big")


def _loader(size: int):
    def load(kernel, r1: int, r2: int, _r3: int, _r4: int, _r5: int) -> int:
        return packet_load(kernel, r1, r2, size)
    return load


# -- skb helpers --------------------------------------------------------------------------------

def skb_store_bytes(kernel, skb, offset, from_ptr, length, flags):
    """Write into the linear packet; it must already hold offset + len bytes."""
    offset, length = offset & 0xFFFFFFFF, length & 0xFFFFFFFF
    if flags & ~(BPF_F_RECOMPUTE_CSUM | BPF_F_INVALIDATE_HASH):
        return neg_errno(EINVAL)
    data, size = packet_of(kernel, skb)
    if offset > 0x7FFFFFFF or offset + length > size:
        return neg_errno(EFAULT)
    kernel.write(data + offset, kernel.helper_access.read(from_ptr, length))
    return 0


def skb_change_head(kernel, skb, head_room, flags, *_):
    """Grow the packet at its front by `head_room` zero bytes (from the headroom; this emulation
    does not reallocate, so more than the headroom left is -ENOMEM) and reset the MAC header."""
    head_room &= 0xFFFFFFFF
    if flags or head_room > 0x7FFFFFFF:
        return neg_errno(EINVAL)
    view = skb_view(kernel, skb)
    if view.data - head_room < view.head:
        return neg_errno(ENOMEM)
    data = view.data - head_room
    kernel.write(data, bytes(head_room))
    kernel.write(skb, struct.pack("<I", view.len + head_room))
    kernel.write(skb + SKB_DATA, struct.pack("<Q", data))
    end = struct.unpack("<Q", kernel.read(skb + SKB_DATA_END, 8))[0]
    if end:                                    # direct packet access: pointers recomputed
        kernel.write(skb + SKB_DATA_META, struct.pack("<Q", data))
    return 0


def csum_update(kernel, skb, csum, *_):
    """Only CHECKSUM_COMPLETE skbs carry a csum; test_run's does not."""
    return neg_errno(ENOTSUPP)


def get_hash_recalc(kernel, skb, *_):
    """The flow hash of the packet: a seeded, never-zero value (the kernel's uses a boot-time
    random key)."""
    return kernel.helper_result("get_hash_recalc", lambda: kernel.rng.getrandbits(32) | 1)


def fib_lookup(kernel, ctx, params, plen, flags, _):
    """Only AF_INET / AF_INET6 lookups exist, and the test's namespace routes nothing: "not
    forwarded"."""
    if plen & 0xFFFFFFFF < FIB_LOOKUP_SIZE:
        return neg_errno(EINVAL)
    family = kernel.helper_access.read(params, 1)[0]
    return BPF_FIB_LKUP_RET_NOT_FWDED if family in (AF_INET, AF_INET6) else neg_errno(EAFNOSUPPORT)


# -- misc ---------------------------------------------------------------------------------------

def jiffies64(kernel, *_):
    return INITIAL_JIFFIES + (kernel.next_ktime() >> 22)


def ktime_get_coarse_ns(kernel, *args):
    """The same clock at tick resolution; the emulated clock has no finer ticks to hide."""
    return ktime_get_ns(kernel, *args)


def get_socket_cookie(kernel, ctx, *_):
    """The cookie of the skb's socket: the first one the namespace hands out."""
    return FIRST_SOCKET_COOKIE


def get_stack(kernel, ctx, buf, size, flags, _):
    """No stack trace is recorded for an emulated run: zero bytes written."""
    return 0


def skb_pull_data(kernel, skb, length, *_):
    """test_run's skb is linear and not cloned: pulling up to its length changes nothing (the
    packet pointers the verifier invalidates stay where they were); more is -ENOMEM."""
    return 0 if length & 0xFFFFFFFF <= skb_view(kernel, skb).len else neg_errno(ENOMEM)


def check_mtu(kernel, ctx, ifindex, mtu_len, len_diff, flags):
    """bpf_check_mtu on the loopback device: every length fits; *mtu_len gets its MTU."""
    if flags & ~BPF_MTU_CHK_SEGS:
        return neg_errno(EINVAL)
    kernel.helper_access.write(mtu_len, struct.pack("<I", LOOPBACK_MTU))
    return 0


def d_path(kernel, path, buf, size, *_):
    """Copies the path's name; a path the kernel cannot read (copy_from_kernel_nofault) is -EFAULT."""
    if kernel.helper_access.read_nofault(path, 16) is None:
        return neg_errno(EFAULT)
    if size & 0xFFFFFFFF < 2:
        return neg_errno(ENAMETOOLONG)
    kernel.helper_access.write(buf, b"/\0")
    return 2


def strtoul(kernel, buf, buf_len, flags, res, _):
    """bpf_strtoul: leading spaces, base from `flags` (0 = by prefix), the value into *res,
    the number of characters consumed, or -EINVAL / -ERANGE."""
    return _strtox(kernel, buf, buf_len, flags, res, signed=False)


def strtol(kernel, buf, buf_len, flags, res, _):
    """bpf_strtol: as bpf_strtoul, after an optional '-' (counted), within the s64 range."""
    return _strtox(kernel, buf, buf_len, flags, res, signed=True)


def _strtox(kernel, buf, buf_len, flags, res, *, signed: bool) -> int:
    buf_len = s32(buf_len)
    if flags & ~STRTOX_BASE_MASK or buf_len <= 0:
        return neg_errno(EINVAL)
    text = kernel.helper_access.read(buf, min(buf_len, 63)).split(b"\0")[0]
    body = text.lstrip(b" \t\n\r\v\f")
    negative = signed and body.startswith(b"-")
    parsed = parse_unsigned(body[1:] if negative else body, flags & STRTOX_BASE_MASK)
    if parsed is None:
        return neg_errno(EINVAL)
    value, consumed = parsed
    value = -value if negative else value
    if not (-(1 << 63) <= value < (1 << 63) if signed else value <= MASK64):
        return neg_errno(ERANGE)
    kernel.helper_access.write(res, struct.pack("<Q", value & MASK64))
    return consumed + len(text) - len(body) + negative


def parse_unsigned(text: bytes, base: int) -> tuple[int, int] | None:
    """(value, characters consumed) of the number at the start of `text`, as the kernel's
    _parse_integer_fixup_radix + _parse_integer read it; None when there is none."""
    start = len(text) - len(text.lstrip(b" \t\n\r\v\f"))
    body = text[start:]
    if body.startswith(b"-"):
        return None
    if base in (0, 16) and body[:2].lower() == b"0x" and body[2:3].isalnum():
        base, skip = 16, 2
    else:
        base, skip = (base or (8 if body[:1] == b"0" else 10)), 0
    digits = 0
    value = 0
    for ch in body[skip:].decode("latin-1"):
        d = int(ch, 36) if ch.isalnum() and ch.isascii() else 99
        if d >= base:
            break
        value, digits = value * base + d, digits + 1
    return (value, start + skip + digits) if digits else None


EXTRA_HELPERS = {
    9: ("skb_store_bytes", skb_store_bytes), 34: ("get_hash_recalc", get_hash_recalc),
    40: ("csum_update", csum_update), 43: ("skb_change_head", skb_change_head),
    39: ("skb_pull_data", skb_pull_data), 46: ("get_socket_cookie", get_socket_cookie),
    67: ("get_stack", get_stack), 69: ("fib_lookup", fib_lookup),
    105: ("strtol", strtol), 106: ("strtoul", strtoul), 118: ("jiffies64", jiffies64),
    147: ("d_path", d_path), 160: ("ktime_get_coarse_ns", ktime_get_coarse_ns),
    163: ("check_mtu", check_mtu), **SOCK_HELPERS,
}


def register_extra_helpers(kernel) -> None:
    """Serve, in `kernel`, the JIT's LD_ABS / LD_IND stubs (ids -1, -2, -4), the helpers above that
    the kernel does not serve itself, and the packet lookup bpf_skb_load_bytes needs."""
    for size in LOAD_SIZES:
        kernel.register_helper(-size, _loader(size), name=f"bpf_skb_load_helper_{8 * size}")
    for helper_id, (name, fn) in EXTRA_HELPERS.items():
        if helper_id not in HELPERS:
            kernel.register_helper(helper_id, fn, name=f"bpf_{name}")
    kernel.ctx_packet = packet_of
