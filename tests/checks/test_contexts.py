"""Contexts as BPF_PROG_TEST_RUN builds them, on the real emulated kernel: layouts, packet placement,
KASAN behaviour around the packet, the LD_ABS / LD_IND loads and the skb helpers."""
from __future__ import annotations

import struct

import pytest

from checks import contexts
from checks.contexts import (SKB_DATA, SKB_DATA_END, SKB_DATA_META, SKB_HEAD, TEST_DATA_LEN,
                             XDP_DATA, XDP_DATA_END, XDP_DATA_META, build, packet_of, skb_view)
from checks.ctx_convert import convert
from checks.errors import CheckError
from checks.extra_helpers import (EFAULT, EINVAL, MASK64, SKF_LL_OFF, SKF_NET_OFF, packet_load,
                                  parse_unsigned, skb_change_head, skb_store_bytes)
from checks.sock_helpers import sk_fullsock, tcp_sock
from checks.test_run import new_kernel
from jit.llvm_asm import assemble
from jit.program import Program

ZEROS = bytes(TEST_DATA_LEN)


@pytest.fixture(scope="module")
def kernel():
    return new_kernel()


def fresh(kernel, prog_type: str = "sched_cls") -> Program:
    program = Program("t", tuple(assemble("r0 = 0; exit").insns), prog_type=prog_type)
    kernel.begin(program, test="contexts")
    return program


def u32(kernel, addr: int) -> int:
    return struct.unpack("<I", kernel.read(addr, 4))[0]


def u64(kernel, addr: int) -> int:
    return struct.unpack("<Q", kernel.read(addr, 8))[0]


@pytest.mark.parametrize("prog_type, offset, length, end_set", [
    ("socket_filter", 78, 50, False),      # eth_type_trans pulled the Ethernet header
    ("cgroup_skb", 78, 50, False),
    ("lwt_xmit", 78, 50, True),            # direct packet access, still after the header
    ("sched_cls", 64, 64, True),           # tc pushes the header back
    ("sched_act", 64, 64, True),
])
def test_skb_packet_placement(kernel, prog_type, offset, length, end_set):
    fresh(kernel, prog_type)
    ctx = build(kernel, prog_type, ZEROS)
    view = skb_view(kernel, ctx.ctx)
    assert view.data == view.head + offset == ctx.data
    assert u32(kernel, ctx.ctx) == length                          # __sk_buff.len
    assert u64(kernel, ctx.ctx + SKB_DATA_END) == (view.data + length if end_set else 0)
    assert u64(kernel, ctx.ctx + SKB_DATA_META) == (view.data if end_set else 0)
    assert packet_of(kernel, ctx.ctx) == (view.data, length)
    assert u32(kernel, ctx.ctx + 40) == contexts.LOOPBACK_IFINDEX


@pytest.mark.parametrize("frame, protocol", [
    (ZEROS, 0x0400),                                               # htons(ETH_P_802_2)
    (bytes(12) + b"\x08\x00" + bytes(50), 0x0008),                 # htons(ETH_P_IP)
    (bytes(14) + b"\xff\xff" + bytes(48), 0x0100),                 # raw 802.3
])
def test_skb_protocol_is_eth_type_trans(kernel, frame, protocol):
    fresh(kernel)
    ctx = build(kernel, "sched_cls", frame)
    assert u32(kernel, ctx.ctx + 16) == protocol


def test_skb_socket_is_closed_and_unbound(kernel):
    fresh(kernel)
    ctx = build(kernel, "socket_filter", ZEROS)
    sk = u64(kernel, ctx.ctx + 168)
    assert sk
    family, state, rx_queue = u32(kernel, sk + 4), u32(kernel, sk + 72), u32(kernel, sk + 76)
    assert (family, state, rx_queue) == (0, contexts.TCP_CLOSE, 0xFFFFFFFF)


def test_xdp_frame(kernel):
    fresh(kernel, "xdp")
    ctx = build(kernel, "xdp", b"\x01" * TEST_DATA_LEN)
    data, end, meta = (u64(kernel, ctx.ctx + off) for off in (XDP_DATA, XDP_DATA_END, XDP_DATA_META))
    assert data == ctx.packet + contexts.XDP_HEADROOM and meta == data
    assert end - data == TEST_DATA_LEN
    assert kernel.read(data, TEST_DATA_LEN) == b"\x01" * TEST_DATA_LEN
    assert u32(kernel, ctx.ctx + 12) == contexts.LOOPBACK_IFINDEX


def test_packet_bigger_than_the_default_gets_a_bigger_buffer(kernel):
    fresh(kernel)
    frame = bytes(range(256)) * 6
    ctx = build(kernel, "sched_cls", frame[:1514])
    assert packet_of(kernel, ctx.ctx)[1] == 1514
    assert kernel.read(ctx.data, 1514) == frame[:1514]


@pytest.mark.parametrize("prog_type, size", [("socket_filter", 13), ("sched_cls", 3713), ("xdp", 13)])
def test_packets_bpf_test_init_refuses(kernel, prog_type, size):
    fresh(kernel, prog_type)
    with pytest.raises(CheckError, match="-EINVAL"):
        build(kernel, prog_type, bytes(size))


def test_xdp_keeps_a_page_linear(kernel):
    fresh(kernel, "xdp")
    ctx = build(kernel, "xdp", bytes(9000))
    assert ctx.data_end - ctx.data == contexts.XDP_MAX_LINEAR


@pytest.mark.parametrize("prog_type, size", [("tracepoint", 2048), ("raw_tracepoint", 96),
                                             ("tracing", 96), ("kprobe", 168), ("perf_event", 184)])
def test_buffer_contexts_are_zero_and_as_large_as_the_verifier_allows(kernel, prog_type, size):
    fresh(kernel, prog_type)
    ctx = build(kernel, prog_type)
    assert kernel.read(ctx.ctx, size) == bytes(size)
    assert ctx.data is None


def test_syscall_ctx_is_null_and_unknown_types_say_why(kernel):
    fresh(kernel, "syscall")
    assert build(kernel, "syscall").ctx == 0
    assert "sk_msg" in contexts.unsupported("sk_msg")
    assert contexts.unsupported("sched_cls") is None
    assert "iter tracing" in contexts.unsupported("tracing", "iter/task")
    assert "LSM" in contexts.unsupported("lsm", "lsm/file_open")
    assert contexts.unsupported("tracing", "fentry/bpf_fentry_test1") is None
    assert contexts.unattached("tracing", "fentry/bpf_fentry_test1")
    assert not contexts.unattached("raw_tracepoint", "raw_tp/sys_enter")


def run_tc(kernel, text: str):
    program = convert(Program("t", tuple(assemble(text).insns), prog_type="sched_cls"))
    kernel.begin(program, test="contexts")
    ctx = build(kernel, "sched_cls", ZEROS)
    return kernel.execute(program, args=(ctx.ctx,))


def test_overread_past_data_end_lands_in_tailroom_silently(kernel):
    """The kernel's skb buffer continues with skb_shared_info: no KASAN report there."""
    run = run_tc(kernel, "r2 = *(u32 *)(r1 + 80); r0 = *(u64 *)(r2 + 8); exit")
    assert run.error is None and run.fault is None
    assert run.findings == []


def test_read_past_the_skb_buffer_is_reported(kernel):
    run = run_tc(kernel, "r2 = *(u32 *)(r1 + 76); r0 = *(u8 *)(r2 + 460); exit")
    assert [(f.bug_type, f.mode) for f in run.findings] == [("slab-out-of-bounds", "faithful")]


def test_ctx_fields_are_kasan_clean(kernel):
    text = "; ".join(f"r0 = *(u32 *)(r1 + {off})" for off in range(0, 192, 4)) + "; exit"
    assert run_tc(kernel, text).findings == []


def packet(kernel, prog_type: str, frame: bytes) -> int:
    fresh(kernel, prog_type)
    return build(kernel, prog_type, frame).ctx


@pytest.mark.parametrize("prog_type, offset, size, expected", [
    ("socket_filter", 0, 1, 0xAA),                     # data is the byte after the MAC header
    ("socket_filter", 0, 4, 0xAABBCCDD),               # big-endian
    ("socket_filter", 46, 4, 0),                       # the last word of 50
    ("socket_filter", 47, 4, -EFAULT & MASK64),        # one past
    ("sched_cls", 0, 2, 0x0102),                       # tc: data is the MAC header
    ("sched_cls", 14, 1, 0xAA),
    ("socket_filter", SKF_NET_OFF, 2, 0xAABB),         # network header
    ("socket_filter", SKF_LL_OFF, 2, 0x0102),          # MAC header
    ("socket_filter", SKF_LL_OFF - 1, 1, -EFAULT & MASK64),
    ("socket_filter", SKF_NET_OFF + 62, 4, -EFAULT & MASK64),  # past the tail
])
def test_ld_abs_loads(kernel, prog_type, offset, size, expected):
    frame = b"\x01\x02" + bytes(12) + b"\xaa\xbb\xcc\xdd" + bytes(46)
    ctx = packet(kernel, prog_type, frame)
    assert packet_load(kernel, ctx, offset & 0xFFFFFFFF, size) == expected


def test_skb_object_keeps_head_for_packet_helpers(kernel):
    ctx = packet(kernel, "sched_cls", ZEROS)
    assert u64(kernel, ctx + SKB_HEAD) == skb_view(kernel, ctx).head
    assert u64(kernel, ctx + SKB_DATA) == skb_view(kernel, ctx).data


# -- the skb and socket helpers test_run programs call -------------------------------------------

@pytest.mark.parametrize("text, base, expected", [
    (b"600", 0, (600, 3)), (b"  42x", 10, (42, 4)), (b"0x1f", 0, (31, 4)), (b"017", 0, (15, 3)),
    (b"ff", 16, (255, 2)), (b"-1", 0, None), (b"", 0, None), (b"z", 10, None),
])
def test_strtoul_parsing(text, base, expected):
    assert parse_unsigned(text, base) == expected


def test_skb_store_bytes_stays_inside_the_packet(kernel):
    ctx = packet(kernel, "sched_cls", ZEROS)
    src = kernel.kmalloc(8, "source")
    kernel.write(src, b"\x11" * 8)
    assert skb_store_bytes(kernel, ctx, 60, src, 4, 0) == 0
    assert kernel.read(skb_view(kernel, ctx).data + 60, 4) == b"\x11" * 4
    assert skb_store_bytes(kernel, ctx, 61, src, 4, 0) == -EFAULT & MASK64
    assert skb_store_bytes(kernel, ctx, 0, src, 4, 0x80) == -EINVAL & MASK64


def test_skb_change_head_grows_the_packet_into_the_headroom(kernel):
    ctx = packet(kernel, "lwt_xmit", ZEROS)
    before = skb_view(kernel, ctx)
    assert skb_change_head(kernel, ctx, 34, 0) == 0
    after = skb_view(kernel, ctx)
    assert (after.data, after.len) == (before.data - 34, before.len + 34)
    assert u64(kernel, ctx + SKB_DATA_END) == before.data + before.len      # unchanged end
    assert skb_change_head(kernel, ctx, 64, 0) != 0                        # no headroom left


def test_test_run_socket_is_full_but_not_tcp(kernel):
    ctx = packet(kernel, "socket_filter", ZEROS)
    sk = u64(kernel, ctx + 168)
    assert sk_fullsock(kernel, sk) == sk
    assert tcp_sock(kernel, sk) == 0
