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

FALLBACK_STRUCTS = {}
FALLBACK_HELPERS = {}
FALLBACK_CONSTANTS = {}
