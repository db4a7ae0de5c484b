"""UAPI facts for when no kernel tree is next to the selftests: struct layouts as
(member, offset, size[, array length]) rows, helper ids, and constants.

ALWAYS_STRUCTS are never in include/uapi/linux/bpf.h and are used in every case.

Owns: these numbers. Must not import anything.
"""
_PT_REGS = ("r15 r14 r13 r12 bp bx r11 r10 r9 r8 ax cx dx si di orig_ax ip cs flags sp ss").split()

ALWAYS_STRUCTS = {
    # x86-64 struct pt_regs: 21 unsigned longs.
    "struct pt_regs": (168, 8, [(name, 8 * i, 8) for i, name in enumerate(_PT_REGS)]),
    # bpf_perf_event_data: bpf_user_pt_regs_t (pt_regs on x86-64), then two __u64.
    "struct bpf_perf_event_data": (184, 8, [("regs", 0, 168, 21), ("sample_period", 168, 8),
                                            ("addr", 176, 8)]),
    # Kernel-internal context of netfilter programs: two pointers.
    "struct bpf_nf_ctx": (16, 8, [("state", 0, 8), ("skb", 8, 8)]),
}

# Generated once from the 6.12 include/uapi/linux/bpf.h by this package's own layout code;
# tests/checks/test_kselftest_import.py checks them against the tree when it is present.
FALLBACK_STRUCTS = {
    "struct __sk_buff": (192, 8, [
        ('len', 0, 4), ('pkt_type', 4, 4), ('mark', 8, 4), ('queue_mapping', 12, 4),
        ('protocol', 16, 4), ('vlan_present', 20, 4), ('vlan_tci', 24, 4), ('vlan_proto', 28, 4),
        ('priority', 32, 4), ('ingress_ifindex', 36, 4), ('ifindex', 40, 4), ('tc_index', 44, 4),
        ('cb', 48, 20, 5), ('hash', 68, 4), ('tc_classid', 72, 4), ('data', 76, 4),
        ('data_end', 80, 4), ('napi_id', 84, 4), ('family', 88, 4), ('remote_ip4', 92, 4),
        ('local_ip4', 96, 4), ('remote_ip6', 100, 16, 4), ('local_ip6', 116, 16, 4),
        ('remote_port', 132, 4), ('local_port', 136, 4), ('data_meta', 140, 4),
        ('flow_keys', 144, 8), ('tstamp', 152, 8), ('wire_len', 160, 4), ('gso_segs', 164, 4),
        ('sk', 168, 8), ('gso_size', 176, 4), ('tstamp_type', 180, 1), ('hwtstamp', 184, 8),
    ]),
    "struct xdp_md": (24, 4, [
        ('data', 0, 4), ('data_end', 4, 4), ('data_meta', 8, 4), ('ingress_ifindex', 12, 4),
        ('rx_queue_index', 16, 4), ('egress_ifindex', 20, 4),
    ]),
    "struct bpf_sock": (80, 4, [
        ('bound_dev_if', 0, 4), ('family', 4, 4), ('type', 8, 4), ('protocol', 12, 4),
        ('mark', 16, 4), ('priority', 20, 4), ('src_ip4', 24, 4), ('src_ip6', 28, 16, 4),
        ('src_port', 44, 4), ('dst_port', 48, 2), ('dst_ip4', 52, 4), ('dst_ip6', 56, 16, 4),
        ('state', 72, 4), ('rx_queue_mapping', 76, 4),
    ]),
    "struct bpf_tcp_sock": (112, 8, [
        ('snd_cwnd', 0, 4), ('srtt_us', 4, 4), ('rtt_min', 8, 4), ('snd_ssthresh', 12, 4),
        ('rcv_nxt', 16, 4), ('snd_nxt', 20, 4), ('snd_una', 24, 4), ('mss_cache', 28, 4),
        ('ecn_flags', 32, 4), ('rate_delivered', 36, 4), ('rate_interval_us', 40, 4),
        ('packets_out', 44, 4), ('retrans_out', 48, 4), ('total_retrans', 52, 4),
        ('segs_in', 56, 4), ('data_segs_in', 60, 4), ('segs_out', 64, 4), ('data_segs_out', 68, 4),
        ('lost_out', 72, 4), ('sacked_out', 76, 4), ('bytes_received', 80, 8),
        ('bytes_acked', 88, 8), ('dsack_dups', 96, 4), ('delivered', 100, 4),
        ('delivered_ce', 104, 4), ('icsk_retransmits', 108, 4),
    ]),
    "struct sk_msg_md": (80, 8, [
        ('data', 0, 8), ('data_end', 8, 8), ('family', 16, 4), ('remote_ip4', 20, 4),
        ('local_ip4', 24, 4), ('remote_ip6', 28, 16, 4), ('local_ip6', 44, 16, 4),
        ('remote_port', 60, 4), ('local_port', 64, 4), ('size', 68, 4), ('sk', 72, 8),
    ]),
    "struct bpf_sock_tuple": (36, 4, [
        ('ipv4', 0, 12), ('ipv4.saddr', 0, 4), ('ipv4.daddr', 4, 4), ('ipv4.sport', 8, 2),
        ('ipv4.dport', 10, 2), ('ipv6', 0, 36), ('ipv6.saddr', 0, 16, 4), ('ipv6.daddr', 16, 16, 4),
        ('ipv6.sport', 32, 2), ('ipv6.dport', 34, 2),
    ]),
    "struct bpf_sock_addr": (72, 8, [
        ('user_family', 0, 4), ('user_ip4', 4, 4), ('user_ip6', 8, 16, 4), ('user_port', 24, 4),
        ('family', 28, 4), ('type', 32, 4), ('protocol', 36, 4), ('msg_src_ip4', 40, 4),
        ('msg_src_ip6', 44, 16, 4), ('sk', 64, 8),
    ]),
    "struct bpf_sysctl": (8, 4, [
        ('write', 0, 4), ('file_pos', 4, 4),
    ]),
    "struct bpf_sock_ops": (224, 8, [
        ('op', 0, 4), ('args', 4, 16, 4), ('reply', 4, 4), ('replylong', 4, 16, 4),
        ('family', 20, 4), ('remote_ip4', 24, 4), ('local_ip4', 28, 4), ('remote_ip6', 32, 16, 4),
        ('local_ip6', 48, 16, 4), ('remote_port', 64, 4), ('local_port', 68, 4),
        ('is_fullsock', 72, 4), ('snd_cwnd', 76, 4), ('srtt_us', 80, 4),
        ('bpf_sock_ops_cb_flags', 84, 4), ('state', 88, 4), ('rtt_min', 92, 4),
        ('snd_ssthresh', 96, 4), ('rcv_nxt', 100, 4), ('snd_nxt', 104, 4), ('snd_una', 108, 4),
        ('mss_cache', 112, 4), ('ecn_flags', 116, 4), ('rate_delivered', 120, 4),
        ('rate_interval_us', 124, 4), ('packets_out', 128, 4), ('retrans_out', 132, 4),
        ('total_retrans', 136, 4), ('segs_in', 140, 4), ('data_segs_in', 144, 4),
        ('segs_out', 148, 4), ('data_segs_out', 152, 4), ('lost_out', 156, 4),
        ('sacked_out', 160, 4), ('sk_txhash', 164, 4), ('bytes_received', 168, 8),
        ('bytes_acked', 176, 8), ('sk', 184, 8), ('skb_data', 192, 8), ('skb_data_end', 200, 8),
        ('skb_len', 208, 4), ('skb_tcp_flags', 212, 4), ('skb_hwtstamp', 216, 8),
    ]),
    "struct sk_reuseport_md": (56, 8, [
        ('data', 0, 8), ('data_end', 8, 8), ('len', 16, 4), ('eth_protocol', 20, 4),
        ('ip_protocol', 24, 4), ('bind_inany', 28, 4), ('hash', 32, 4), ('sk', 40, 8),
        ('migrating_sk', 48, 8),
    ]),
    "struct bpf_sk_lookup": (72, 8, [
        ('sk', 0, 8), ('cookie', 0, 8), ('family', 8, 4), ('protocol', 12, 4),
        ('remote_ip4', 16, 4), ('remote_ip6', 20, 16, 4), ('remote_port', 36, 2),
        ('local_ip4', 40, 4), ('local_ip6', 44, 16, 4), ('local_port', 60, 4),
        ('ingress_ifindex', 64, 4),
    ]),
    "struct bpf_flow_keys": (56, 4, [
        ('nhoff', 0, 2), ('thoff', 2, 2), ('addr_proto', 4, 2), ('is_frag', 6, 1),
        ('is_first_frag', 7, 1), ('is_encap', 8, 1), ('ip_proto', 9, 1), ('n_proto', 10, 2),
        ('sport', 12, 2), ('dport', 14, 2), ('ipv4_src', 16, 4), ('ipv4_dst', 20, 4),
        ('ipv6_src', 16, 16, 4), ('ipv6_dst', 32, 16, 4), ('flags', 48, 4), ('flow_label', 52, 4),
    ]),
    "struct bpf_sockopt": (40, 8, [
        ('sk', 0, 8), ('optval', 8, 8), ('optval_end', 16, 8), ('level', 24, 4), ('optname', 28, 4),
        ('optlen', 32, 4), ('retval', 36, 4),
    ]),
    "struct bpf_xdp_sock": (4, 4, [
        ('queue_id', 0, 4),
    ]),
    "struct bpf_spin_lock": (4, 4, [
        ('val', 0, 4),
    ]),
    "struct bpf_timer": (16, 8, [
        ('__opaque', 0, 16, 2),
    ]),
    "struct bpf_cgroup_storage_key": (16, 8, [
        ('cgroup_inode_id', 0, 8), ('attach_type', 8, 4),
    ]),
}

# The helpers the 6.12 selftests call, and a few common ones; the full list comes from the tree.
FALLBACK_HELPERS = {
    "bpf_map_lookup_elem": 1, "bpf_map_update_elem": 2, "bpf_map_delete_elem": 3,
    "bpf_probe_read": 4, "bpf_trace_printk": 6, "bpf_get_prandom_u32": 7,
    "bpf_get_smp_processor_id": 8, "bpf_ktime_get_ns": 5, "bpf_tail_call": 12,
    "bpf_skb_store_bytes": 9, "bpf_skb_load_bytes": 26, "bpf_csum_diff": 28, "bpf_csum_update": 40,
    "bpf_get_hash_recalc": 34, "bpf_get_stack": 67, "bpf_get_local_storage": 81,
    "bpf_sk_release": 86, "bpf_sk_lookup_tcp": 84, "bpf_sk_lookup_udp": 85,
    "bpf_skc_lookup_tcp": 99, "bpf_sk_fullsock": 95, "bpf_tcp_sock": 96, "bpf_spin_lock": 93,
    "bpf_spin_unlock": 94, "bpf_sk_storage_get": 107, "bpf_get_listener_sock": 98,
    "bpf_skb_change_head": 43, "bpf_xdp_adjust_meta": 54, "bpf_strtoul": 106,
    "bpf_probe_read_kernel": 113, "bpf_ringbuf_output": 130, "bpf_ringbuf_reserve": 131,
    "bpf_ringbuf_submit": 132, "bpf_ringbuf_discard": 133, "bpf_get_netns_cookie": 122,
    "bpf_skc_to_tcp_sock": 137, "bpf_skc_to_tcp_request_sock": 139, "bpf_get_task_stack": 141,
    "bpf_d_path": 147, "bpf_seq_write": 127, "bpf_loop": 181, "bpf_timer_init": 169,
    "bpf_ktime_get_coarse_ns": 160, "bpf_jiffies64": 118, "bpf_getsockopt": 57,
    "bpf_get_socket_cookie": 46, "bpf_fib_lookup": 69, "bpf_sk_select_reuseport": 82,
    "bpf_redirect_map": 51, "bpf_xdp_adjust_head": 44, "bpf_perf_event_output": 25,
    "bpf_get_current_pid_tgid": 14,
}

# enum bpf_map_type, and the map and program-load flags.
FALLBACK_CONSTANTS = {
    "BPF_MAP_TYPE_UNSPEC": 0, "BPF_MAP_TYPE_HASH": 1, "BPF_MAP_TYPE_ARRAY": 2,
    "BPF_MAP_TYPE_PROG_ARRAY": 3, "BPF_MAP_TYPE_PERF_EVENT_ARRAY": 4, "BPF_MAP_TYPE_PERCPU_HASH": 5,
    "BPF_MAP_TYPE_PERCPU_ARRAY": 6, "BPF_MAP_TYPE_STACK_TRACE": 7, "BPF_MAP_TYPE_CGROUP_ARRAY": 8,
    "BPF_MAP_TYPE_LRU_HASH": 9, "BPF_MAP_TYPE_LRU_PERCPU_HASH": 10, "BPF_MAP_TYPE_LPM_TRIE": 11,
    "BPF_MAP_TYPE_ARRAY_OF_MAPS": 12, "BPF_MAP_TYPE_HASH_OF_MAPS": 13, "BPF_MAP_TYPE_DEVMAP": 14,
    "BPF_MAP_TYPE_SOCKMAP": 15, "BPF_MAP_TYPE_CPUMAP": 16, "BPF_MAP_TYPE_XSKMAP": 17,
    "BPF_MAP_TYPE_SOCKHASH": 18, "BPF_MAP_TYPE_CGROUP_STORAGE_DEPRECATED": 19,
    "BPF_MAP_TYPE_CGROUP_STORAGE": 19, "BPF_MAP_TYPE_REUSEPORT_SOCKARRAY": 20,
    "BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE_DEPRECATED": 21, "BPF_MAP_TYPE_PERCPU_CGROUP_STORAGE": 21,
    "BPF_MAP_TYPE_QUEUE": 22, "BPF_MAP_TYPE_STACK": 23, "BPF_MAP_TYPE_SK_STORAGE": 24,
    "BPF_MAP_TYPE_DEVMAP_HASH": 25, "BPF_MAP_TYPE_STRUCT_OPS": 26, "BPF_MAP_TYPE_RINGBUF": 27,
    "BPF_MAP_TYPE_INODE_STORAGE": 28, "BPF_MAP_TYPE_TASK_STORAGE": 29,
    "BPF_MAP_TYPE_BLOOM_FILTER": 30, "BPF_MAP_TYPE_USER_RINGBUF": 31,
    "BPF_MAP_TYPE_CGRP_STORAGE": 32, "BPF_MAP_TYPE_ARENA": 33, "BPF_F_NO_PREALLOC": 1,
    "BPF_F_NO_COMMON_LRU": 2, "BPF_F_NUMA_NODE": 4, "BPF_F_RDONLY": 8, "BPF_F_WRONLY": 16,
    "BPF_F_STACK_BUILD_ID": 32, "BPF_F_ZERO_SEED": 64, "BPF_F_RDONLY_PROG": 128,
    "BPF_F_WRONLY_PROG": 256, "BPF_F_CLONE": 512, "BPF_F_MMAPABLE": 1024,
    "BPF_F_STRICT_ALIGNMENT": 1, "BPF_F_ANY_ALIGNMENT": 2, "BPF_F_TEST_RND_HI32": 4,
    "BPF_F_TEST_STATE_FREQ": 8, "BPF_F_SLEEPABLE": 16, "BPF_F_XDP_HAS_FRAGS": 32,
    "BPF_F_TEST_REG_INVARIANTS": 128, "BPF_ANY": 0, "BPF_NOEXIST": 1, "BPF_EXIST": 2,
    "BPF_F_LOCK": 4,
}
