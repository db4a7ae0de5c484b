"""The socket helpers, on the sockets of an emulated BPF_PROG_TEST_RUN (checks.contexts.build_sock).

Nothing is bound in the test's network namespace, so bpf_sk_lookup_tcp/udp and
bpf_skc_lookup_tcp find nothing (NULL) after reading the tuple. An exploration variant
(`checks.explore.SK_LOOKUP`) makes them find an established socket instead, one whose only
reference the program then holds: bpf_sk_release frees it, so a use after release is a
slab-use-after-free, the bug the verifier's reference tracking exists to prevent. The skb's own
socket is never freed. A socket object is laid out as `struct bpf_sock` followed by room for the
`bpf_tcp_sock` view, so bpf_tcp_sock / bpf_skc_to_tcp_sock return the socket itself.

Every field a helper reads goes through `kernel.helper_access` (a freed or NULL socket is a KASAN
report in the helper, then an oops if unmapped), as the kernel's instrumented C reads it.

Owns: the socket helpers. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

import struct

from checks.contexts import build_sock
from checks.explore import SK_LOOKUP

AF_INET = 2
IPPROTO_TCP, IPPROTO_UDP = 6, 17
SOCK_STREAM, SOCK_DGRAM = 1, 2
TCP_ESTABLISHED, TCP_TIME_WAIT, TCP_LISTEN, TCP_NEW_SYN_RECV = 1, 6, 10, 12
SOCK_TUPLE_SIZES = (12, 36)                  # sizeof(bpf_sock_tuple.ipv4), .ipv6
PROTOCOL, STATE = 12, 72                     # offsets in struct bpf_sock
FOUND = "sockets found by a lookup"          # Kernel.run_state key: the ones release frees


def _lookup(sock_type: int, protocol: int):
    def lookup(kernel, ctx, tuple_ptr, tuple_size, netns, flags):
        """bpf_sk_lookup_{tcp,udp}, bpf_skc_lookup_tcp: a tuple of neither size is NULL before
        it is read; then NULL, or (exploring) a socket the program holds the only reference to."""
        size = tuple_size & 0xFFFFFFFF
        if size not in SOCK_TUPLE_SIZES:
            return 0
        kernel.helper_access.read(tuple_ptr, size)
        if not kernel.helper_result(SK_LOOKUP, lambda: 0):
            return 0
        sk = build_sock(kernel, family=AF_INET, sock_type=sock_type, protocol=protocol,
                        state=TCP_ESTABLISHED)
        kernel.run_state.setdefault(FOUND, set()).add(sk)
        return sk
    return lookup


def sk_release(kernel, sk, *_):
    """Drops the program's reference: a socket it looked up is freed (it held the last one);
    others (the skb's own) stay."""
    found = kernel.run_state.get(FOUND, set())
    if sk in found:
        found.discard(sk)
        kernel.kfree(sk)
    return 0


def _field(kernel, sk: int, offset: int) -> int:
    return struct.unpack("<I", kernel.helper_access.read(sk + offset, 4))[0]


def sk_fullsock(kernel, sk, *_):
    return 0 if _field(kernel, sk, STATE) in (TCP_TIME_WAIT, TCP_NEW_SYN_RECV) else sk


def tcp_sock(kernel, sk, *_):
    """The socket as a bpf_tcp_sock if it is a full TCP socket (test_run's is not TCP)."""
    if not sk_fullsock(kernel, sk) or _field(kernel, sk, PROTOCOL) != IPPROTO_TCP:
        return 0
    return sk


def skc_to_tcp_sock(kernel, sk, *_):
    """bpf_skc_to_tcp_sock: as bpf_tcp_sock, and NULL for NULL."""
    return tcp_sock(kernel, sk) if sk else 0


def get_listener_sock(kernel, sk, *_):
    """The socket if it is a listener (none of the emulated ones is), else NULL."""
    return sk if _field(kernel, sk, STATE) == TCP_LISTEN else 0


def skc_to_tcp_request_sock(kernel, sk, *_):
    """The socket if it is a request socket (none of the emulated ones is), else NULL."""
    return sk if sk and _field(kernel, sk, STATE) == TCP_NEW_SYN_RECV else 0


SOCK_HELPERS = {
    84: ("sk_lookup_tcp", _lookup(SOCK_STREAM, IPPROTO_TCP)),
    85: ("sk_lookup_udp", _lookup(SOCK_DGRAM, IPPROTO_UDP)),
    86: ("sk_release", sk_release), 95: ("sk_fullsock", sk_fullsock), 96: ("tcp_sock", tcp_sock),
    98: ("get_listener_sock", get_listener_sock),
    99: ("skc_lookup_tcp", _lookup(SOCK_STREAM, IPPROTO_TCP)),
    137: ("skc_to_tcp_sock", skc_to_tcp_sock),
    139: ("skc_to_tcp_request_sock", skc_to_tcp_request_sock),
}
