"""Program type of a SEC("...") name, by libbpf's section table (6.12).

A name matches an entry exactly; an entry ending in '+' also matches "entry/anything"; one
ending in '/' matches any name it prefixes. A leading '?' (not autoloaded) is ignored, and
entries marked sleepable are the `.s` variants.

Owns: the table. Must not import anything from checks/ or bot/.
"""
from __future__ import annotations

from typing import NamedTuple


class Section(NamedTuple):
    prog_type: str           # "socket_filter", "sched_cls", "xdp", ...
    sleepable: bool
    autoload: bool           # False for "?name"


# (section pattern, program type); listed in libbpf's order, which decides ties.
_TABLE = [line.split() for line in """
socket socket_filter
sk_reuseport/migrate sk_reuseport
sk_reuseport sk_reuseport
kprobe+ kprobe
uprobe+ kprobe
uprobe.s+ kprobe
kretprobe+ kprobe
uretprobe+ kprobe
uretprobe.s+ kprobe
kprobe.multi+ kprobe
kretprobe.multi+ kprobe
kprobe.session+ kprobe
uprobe.multi+ kprobe
uretprobe.multi+ kprobe
uprobe.multi.s+ kprobe
uretprobe.multi.s+ kprobe
ksyscall+ kprobe
kretsyscall+ kprobe
usdt+ kprobe
usdt.s+ kprobe
tc/ingress sched_cls
tc/egress sched_cls
tcx/ingress sched_cls
tcx/egress sched_cls
tc sched_cls
classifier sched_cls
action sched_act
netkit/primary sched_cls
netkit/peer sched_cls
tracepoint+ tracepoint
tp+ tracepoint
raw_tracepoint+ raw_tracepoint
raw_tp+ raw_tracepoint
raw_tracepoint.w+ raw_tracepoint_writable
raw_tp.w+ raw_tracepoint_writable
tp_btf+ tracing
fentry+ tracing
fmod_ret+ tracing
fexit+ tracing
fentry.s+ tracing
fmod_ret.s+ tracing
fexit.s+ tracing
freplace+ ext
lsm+ lsm
lsm.s+ lsm
lsm_cgroup+ lsm
iter+ tracing
iter.s+ tracing
syscall syscall
xdp.frags/devmap xdp
xdp/devmap xdp
xdp.frags/cpumap xdp
xdp/cpumap xdp
xdp.frags xdp
xdp xdp
perf_event perf_event
lwt_in lwt_in
lwt_out lwt_out
lwt_xmit lwt_xmit
lwt_seg6local lwt_seg6local
sockops sock_ops
sk_skb/stream_parser sk_skb
sk_skb/stream_verdict sk_skb
sk_skb/verdict sk_skb
sk_skb sk_skb
sk_msg sk_msg
lirc_mode2 lirc_mode2
flow_dissector flow_dissector
cgroup_skb/ingress cgroup_skb
cgroup_skb/egress cgroup_skb
cgroup/skb cgroup_skb
cgroup/sock_create cgroup_sock
cgroup/sock_release cgroup_sock
cgroup/sock cgroup_sock
cgroup/post_bind4 cgroup_sock
cgroup/post_bind6 cgroup_sock
cgroup/bind4 cgroup_sock_addr
cgroup/bind6 cgroup_sock_addr
cgroup/connect4 cgroup_sock_addr
cgroup/connect6 cgroup_sock_addr
cgroup/connect_unix cgroup_sock_addr
cgroup/sendmsg4 cgroup_sock_addr
cgroup/sendmsg6 cgroup_sock_addr
cgroup/sendmsg_unix cgroup_sock_addr
cgroup/recvmsg4 cgroup_sock_addr
cgroup/recvmsg6 cgroup_sock_addr
cgroup/recvmsg_unix cgroup_sock_addr
cgroup/getpeername4 cgroup_sock_addr
cgroup/getpeername6 cgroup_sock_addr
cgroup/getpeername_unix cgroup_sock_addr
cgroup/getsockname4 cgroup_sock_addr
cgroup/getsockname6 cgroup_sock_addr
cgroup/getsockname_unix cgroup_sock_addr
cgroup/sysctl cgroup_sysctl
cgroup/getsockopt cgroup_sockopt
cgroup/setsockopt cgroup_sockopt
cgroup/dev cgroup_device
struct_ops+ struct_ops
struct_ops.s+ struct_ops
sk_lookup sk_lookup
netfilter netfilter
""".split("\n") if line]


def _matches(pattern: str, name: str) -> bool:
    if pattern.endswith("/"):
        return name.startswith(pattern)
    if pattern.endswith("+"):
        stem = pattern[:-1]
        return name == stem or name.startswith(stem + "/")
    return name == pattern


def section(sec: str) -> Section | None:
    """The program type SEC(`sec`) loads as, or None for a name libbpf does not know."""
    autoload = not sec.startswith("?")
    name = sec.lstrip("?")
    for pattern, prog_type in _TABLE:
        if _matches(pattern, name):
            stem = pattern.rstrip("+/")
            return Section(prog_type, stem.endswith(".s") or stem == "syscall", autoload)
    return None
