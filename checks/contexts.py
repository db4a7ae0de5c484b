"""The context a program gets under BPF_PROG_TEST_RUN, per program type: the kernel-side ctx
object, the packet behind it, and where the verifier's ctx conversion finds each field.

Facts carried over from net/bpf/test_run.c and net/core/filter.c (6.12, see kasan-jit.md §4.3-4.4):
- skb programs: one kzalloc holds headroom (NET_SKB_PAD + NET_IP_ALIGN = 64 on x86-64), the data
  (rounded up to SKB_DATA_ALIGN) and the tailroom (SKB_DATA_ALIGN(sizeof(skb_shared_info)) = 320);
  build_skb takes ksize() of it, so the whole kmalloc slot is usable. eth_type_trans pulls the
  14-byte Ethernet header: socket filters, cgroup_skb and lwt see data at +14 and len = size - 14;
  tc (sched_cls/act) pushes it back, so data is the Ethernet header and len = size. Only tc and lwt
  get direct packet access (`bpf_compute_data_pointers`); for the others data_end in skb->cb stays
  zero, as in 6.12. The device is the loopback (ifindex 1); an all-zero frame is PACKET_HOST and
  its protocol is htons(ETH_P_802_2).
- xdp: one 4096-byte kzalloc (256 headroom, the data, the rest up to a page); data_end = data +
  size, data_meta = data, the rx queue is loopback's queue 0. A packet longer than the page can
  hold linearly continues in frags, which direct packet access cannot see (not emulated).
- a packet shorter than an Ethernet header, or an skb packet that does not fit one page with its
  headroom and tailroom, is refused (-EINVAL) as bpf_test_init refuses it.
- tracing-like types get a zeroed buffer as large as the verifier lets them read (so an access it
  accepts can never be a false finding); syscall programs run with a NULL ctx (no ctx_in).
  BPF_PROG_TEST_RUN itself runs none of fentry/fexit (unattached: retval 0), LSM, iterator or
  other tracing programs; the buffers serve runs outside test_run (what-if).

Consequence worth knowing: a small overread past data_end lands in the tailroom, which is inside
the allocation, so real KASAN (and this emulator) stay silent on it.

Our own object layouts: the first bytes mirror the UAPI struct (__sk_buff, xdp_md, bpf_sock), so
plain and narrow ctx loads need no rewrite; the 32-bit UAPI packet pointers are 64-bit slots
after it, which `checks.ctx_convert` redirects loads to.

Owns: ctx layouts and building them in the emulated kernel. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Protocol

from checks.errors import CheckError
from checks.layout import PAGE
from checks.shadow import round_up
from checks.slab import kmalloc_size

TEST_DATA_LEN = 64                 # test_loader's data_in: 64 zero bytes
ETH_HLEN = 14
SKB_HEADROOM = 64                  # NET_SKB_PAD + NET_IP_ALIGN (x86-64)
SKB_TAILROOM = 320                 # SKB_DATA_ALIGN(sizeof(struct skb_shared_info))
SKB_DATA_ALIGN = 64                # SMP_CACHE_BYTES
XDP_HEADROOM = 256                 # XDP_PACKET_HEADROOM
XDP_FRAME = 4096                   # headroom + max data + tailroom: one page
XDP_MAX_LINEAR = XDP_FRAME - XDP_HEADROOM - SKB_TAILROOM    # a bigger packet continues in frags
LOOPBACK_IFINDEX = 1
ETH_P_802_2_BE = 0x0400            # htons(ETH_P_802_2), as skb->protocol holds it
ETH_P_802_3_BE = 0x0100            # htons(ETH_P_802_3)
TCP_CLOSE = 7                      # sock_init_data's state
MAX_BPF_FUNC_ARGS = 12
PERF_MAX_TRACE_SIZE = 2048

# Kernel-side skb object: __sk_buff (192 bytes) as values, then our private 64-bit slots.
SKB_DATA, SKB_DATA_END, SKB_DATA_META = 192, 200, 208
SKB_HEAD, SKB_MAC, SKB_NETWORK, SKB_TAIL = 216, 224, 232, 240
SKB_OBJECT_SIZE = 256
# Kernel-side xdp object: xdp_md (24 bytes) as values, then the three pointers.
XDP_DATA, XDP_DATA_END, XDP_DATA_META = 24, 32, 40
XDP_OBJECT_SIZE = 48
SOCK_OBJECT_SIZE = 112             # struct bpf_sock (80), room for the bpf_tcp_sock view (112)


class Kernel(Protocol):
    """What this module needs from `checks.kernel.Kernel`."""

    def kmalloc(self, size: int, label: str, *, stricter: str = "") -> int: ...
    def read(self, addr: int, size: int) -> bytes: ...
    def write(self, addr: int, data: bytes) -> None: ...


@dataclass(frozen=True)
class CtxLayout:
    """A ctx object as we lay it out: which 32-bit UAPI pointer fields the verifier turns into
    64-bit pointer loads, and where those pointers live in our object."""
    struct: str
    uapi_size: int
    pointers: dict[int, int] = field(default_factory=dict)   # UAPI offset -> our 64-bit slot


SKB_LAYOUT = CtxLayout("__sk_buff", 192, {76: SKB_DATA, 80: SKB_DATA_END, 140: SKB_DATA_META})
XDP_LAYOUT = CtxLayout("xdp_md", 24, {0: XDP_DATA, 4: XDP_DATA_END, 8: XDP_DATA_META})


@dataclass(frozen=True)
class SkbKind:
    l2: bool                       # data at the Ethernet header (tc) rather than after it
    direct: bool                   # data_end computed: direct packet access


@dataclass(frozen=True)
class BufferKind:
    size: int                      # bytes the verifier lets the program read
    what: str                      # the label of the zeroed buffer


class XdpKind:
    pass


class SyscallKind:
    pass


_TRACING_ARGS = BufferKind(8 * MAX_BPF_FUNC_ARGS, "ctx: tracing program arguments (u64[12])")
KINDS: dict[str, object] = {
    "socket_filter": SkbKind(l2=False, direct=False),
    "cgroup_skb": SkbKind(l2=False, direct=False),
    "sched_cls": SkbKind(l2=True, direct=True),
    "sched_act": SkbKind(l2=True, direct=True),
    "lwt_in": SkbKind(l2=False, direct=True),
    "lwt_out": SkbKind(l2=False, direct=True),
    "lwt_xmit": SkbKind(l2=False, direct=True),
    "xdp": XdpKind(),
    "syscall": SyscallKind(),
    "tracepoint": BufferKind(PERF_MAX_TRACE_SIZE, "ctx: tracepoint record"),
    "raw_tracepoint": _TRACING_ARGS,
    "raw_tracepoint_writable": _TRACING_ARGS,
    "tracing": _TRACING_ARGS,
    "lsm": _TRACING_ARGS,
    "kprobe": BufferKind(168, "ctx: struct pt_regs"),
    "perf_event": BufferKind(184, "ctx: struct bpf_perf_event_data"),
}


def layout_of(prog_type: str) -> CtxLayout | None:
    """The object layout whose pointer fields need converting, or None (loads stay as written)."""
    kind = KINDS.get(prog_type)
    if isinstance(kind, SkbKind):
        return SKB_LAYOUT
    if isinstance(kind, XdpKind):
        return XDP_LAYOUT
    return None


def has_packet(prog_type: str) -> bool:
    """Whether the program type sees the test_run packet (skb and xdp types)."""
    return isinstance(KINDS.get(prog_type), (SkbKind, XdpKind))


def unsupported(prog_type: str | None, sec: str = "") -> str | None:
    """Why BPF_PROG_TEST_RUN cannot run this program (type, SEC name) here, or None. Tracing
    programs other than fentry/fexit, LSM and iterator programs have no test run (the kernel
    answers -ENOTSUPP or -EFAULT); the types we have no context for say so."""
    name = sec.lstrip("?")
    if prog_type == "tracing" and not name.startswith(_FENTRY_FEXIT):
        return f"BPF_PROG_TEST_RUN does not run {name.split('/')[0]} tracing programs"
    if prog_type == "lsm":
        return "BPF_PROG_TEST_RUN does not run LSM programs"
    if prog_type in KINDS:
        return None
    return f"BPF_PROG_TEST_RUN: no emulated context for program type {prog_type or 'unknown'}"


def unattached(prog_type: str | None, sec: str = "") -> bool:
    """Whether BPF_PROG_TEST_RUN leaves the program itself alone: for fentry/fexit it calls the
    kernel's bpf_fentry_test* functions, which run the program only when it is attached, and
    test_loader never attaches it; the retval is then 0."""
    return prog_type == "tracing" and sec.lstrip("?").startswith(_FENTRY_FEXIT)


_FENTRY_FEXIT = ("fentry/", "fexit/", "fentry.s/", "fexit.s/")


@dataclass(frozen=True)
class Context:
    """What a test run built: r1 for the program, and the packet if there is one."""
    ctx: int                       # address of the ctx object (0 for a NULL ctx)
    data: int | None = None        # first byte of packet data the program sees
    data_end: int | None = None
    packet: int | None = None      # the packet allocation itself (headroom included)


def build(kernel: Kernel, prog_type: str, data_in: bytes = bytes(TEST_DATA_LEN)) -> Context:
    """Allocate and fill the ctx of `prog_type` in `kernel` as BPF_PROG_TEST_RUN would, with
    `data_in` as the packet. (Helpers find the packet behind an skb ctx with `packet_of`.)"""
    kind = KINDS.get(prog_type)
    if isinstance(kind, (SkbKind, XdpKind)):
        _check_size(len(data_in), skb=isinstance(kind, SkbKind))
    if isinstance(kind, SkbKind):
        return _build_skb(kernel, kind, data_in)
    if isinstance(kind, XdpKind):
        return _build_xdp(kernel, data_in[:XDP_MAX_LINEAR])
    if isinstance(kind, BufferKind):
        return Context(kernel.kmalloc(kind.size, kind.what))
    if isinstance(kind, SyscallKind):
        return Context(0)
    raise ValueError(unsupported(prog_type))


def _check_size(size: int, skb: bool) -> None:
    """bpf_test_init's bounds: at least an Ethernet header; an skb must fit one page with its
    headroom and tailroom (xdp keeps only the first page's worth linear, the rest goes to frags)."""
    if size < ETH_HLEN or (skb and size > PAGE - SKB_HEADROOM - SKB_TAILROOM):
        raise CheckError(f"BPF_PROG_TEST_RUN refuses a {size}-byte packet (-EINVAL)")


def _build_skb(kernel: Kernel, kind: SkbKind, data_in: bytes) -> Context:
    size = len(data_in)
    alloc = SKB_HEADROOM + round_up(size, SKB_DATA_ALIGN) + SKB_TAILROOM
    head = kernel.kmalloc(_kmalloc_slot(alloc), "skb data (headroom, packet, skb_shared_info)")
    mac = head + SKB_HEADROOM
    kernel.write(mac, data_in)
    network = mac + ETH_HLEN
    data = mac if kind.l2 else network
    tail = mac + size
    sk = build_sock(kernel)
    skb = kernel.kmalloc(SKB_OBJECT_SIZE, "sk_buff (ctx)")
    fields = bytearray(SKB_OBJECT_SIZE)
    struct.pack_into("<I", fields, 0, tail - data)                                   # len
    struct.pack_into("<I", fields, 16, _protocol(data_in))                           # protocol
    struct.pack_into("<I", fields, 40, LOOPBACK_IFINDEX)                             # ifindex
    struct.pack_into("<Q", fields, 168, sk)                                          # sk
    pointers = (data, tail if kind.direct else 0, data if kind.direct else 0)
    struct.pack_into("<3Q", fields, SKB_DATA, *pointers)
    struct.pack_into("<4Q", fields, SKB_HEAD, head, mac, network, tail)
    kernel.write(skb, bytes(fields))
    return Context(skb, data, tail, head)


def _kmalloc_slot(size: int) -> int:
    """build_skb uses ksize(): the packet object is the whole kmalloc slot (or whole pages)."""
    return kmalloc_size(size) or round_up(size, PAGE)


def _protocol(frame: bytes) -> int:
    """eth_type_trans on `frame` (loopback, no DSA): the EtherType if it is one, else 802.3
    raw or 802.2, as the big-endian value skb->protocol holds (read back little-endian)."""
    if len(frame) < ETH_HLEN:
        return ETH_P_802_2_BE
    proto = int.from_bytes(frame[12:14], "big")
    if proto >= 0x600:
        return int.from_bytes(frame[12:14], "little")
    if frame[ETH_HLEN:ETH_HLEN + 2] == b"\xff\xff":
        return ETH_P_802_3_BE
    return ETH_P_802_2_BE


def build_sock(kernel: Kernel, *, family: int = 0, sock_type: int = 0, protocol: int = 0,
               state: int = TCP_CLOSE) -> int:
    """A socket as `struct bpf_sock` shows it (test_run's sk_alloc(AF_UNSPEC) + sock_init_data:
    everything zero but the state, and rx_queue_mapping -1 for "not recorded")."""
    sk = kernel.kmalloc(SOCK_OBJECT_SIZE, "sock")
    fields = bytearray(SOCK_OBJECT_SIZE)
    struct.pack_into("<3I", fields, 4, family, sock_type, protocol)
    struct.pack_into("<Ii", fields, 72, state, -1)
    kernel.write(sk, bytes(fields))
    return sk


def _build_xdp(kernel: Kernel, data_in: bytes) -> Context:
    head = kernel.kmalloc(XDP_FRAME, "xdp frame (headroom, packet, tailroom)")
    data = head + XDP_HEADROOM
    kernel.write(data, data_in)
    end = data + len(data_in)
    xdp = kernel.kmalloc(XDP_OBJECT_SIZE, "xdp_buff (ctx)")
    fields = bytearray(XDP_OBJECT_SIZE)
    struct.pack_into("<3I", fields, 12, LOOPBACK_IFINDEX, 0, 0)   # ingress, rx queue, egress
    struct.pack_into("<3Q", fields, XDP_DATA, data, end, data)
    kernel.write(xdp, bytes(fields))
    return Context(xdp, data, end, head)


@dataclass(frozen=True)
class SkbView:
    """The parts of an skb ctx the packet helpers need."""
    data: int
    len: int
    head: int
    mac: int
    network: int
    tail: int


def skb_view(kernel: Kernel, ctx_addr: int) -> SkbView:
    raw = kernel.read(ctx_addr, SKB_OBJECT_SIZE)
    length = struct.unpack_from("<I", raw, 0)[0]
    data = struct.unpack_from("<Q", raw, SKB_DATA)[0]
    head, mac, network, tail = struct.unpack_from("<4Q", raw, SKB_HEAD)
    return SkbView(data, length, head, mac, network, tail)


def packet_of(kernel: Kernel, ctx_addr: int) -> tuple[int, int]:
    """(address of data, len) of the skb whose ctx is at `ctx_addr` (for bpf_skb_load_bytes)."""
    view = skb_view(kernel, ctx_addr)
    return view.data, view.len
