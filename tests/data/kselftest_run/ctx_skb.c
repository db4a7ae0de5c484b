// skb contexts under BPF_PROG_TEST_RUN, written for bpf-kasan-ci (MIT licence).
// Kernel test_loader format: one naked function per test, expectations as annotations.
// The packet is test_loader's 64 zero bytes.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

SEC("socket")
__description("socket filter: len excludes the Ethernet header")
__success __retval(50)
__naked void socket_len(void)
{
	asm volatile ("					\
	r0 = *(u32*)(r1 + %[len]);			\
	exit;						\
"	:
	: __imm_const(len, offsetof(struct __sk_buff, len))
	: __clobber_all);
}

SEC("socket")
__description("socket filter: a narrow load of len")
__success __retval(50)
__naked void socket_len_narrow(void)
{
	asm volatile ("					\
	r0 = *(u8*)(r1 + %[len]);			\
	exit;						\
"	:
	: __imm_const(len, offsetof(struct __sk_buff, len))
	: __clobber_all);
}

SEC("socket")
__description("socket filter: loopback ifindex, 802.2 protocol, cb writable")
__success __retval(1025)
__naked void socket_ifindex_protocol(void)
{
	asm volatile ("					\
	r2 = 0;						\
	*(u32*)(r1 + %[cb0]) = r2;			\
	r0 = *(u32*)(r1 + %[ifindex]);			\
	r2 = *(u32*)(r1 + %[protocol]);			\
	r0 += r2;					\
	r2 = *(u32*)(r1 + %[cb0]);			\
	r0 += r2;					\
	exit;						\
"	:
	: __imm_const(ifindex, offsetof(struct __sk_buff, ifindex)),
	  __imm_const(protocol, offsetof(struct __sk_buff, protocol)),
	  __imm_const(cb0, offsetof(struct __sk_buff, cb[0]))
	: __clobber_all);
}

SEC("socket")
__description("socket filter: LD_ABS within len reads, past it ends the program with 0")
__success __retval(0)
__naked void socket_ld_abs_bounds(void)
{
	asm volatile ("					\
	r6 = r1;					\
	r0 = *(u32*)skb[46];				\
	r0 = *(u32*)skb[47];				\
	r0 = 7;						\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("socket filter: LD_ABS at the last word")
__success __retval(7)
__naked void socket_ld_abs_last_word(void)
{
	asm volatile ("					\
	r6 = r1;					\
	r0 = *(u32*)skb[46];				\
	r0 = 7;						\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("socket filter: the skb's socket is a full, non-TCP socket")
__success __retval(7)
__naked void socket_sk(void)
{
	asm volatile ("					\
	r1 = *(u64*)(r1 + %[sk]);			\
	if r1 == 0 goto l0_%=;				\
	r0 = *(u32*)(r1 + %[state]);			\
	exit;						\
l0_%=:	r0 = -1;					\
	exit;						\
"	:
	: __imm_const(sk, offsetof(struct __sk_buff, sk)),
	  __imm_const(state, offsetof(struct bpf_sock, state))
	: __clobber_all);
}

SEC("tc")
__description("tc: len and the packet span the whole frame")
__success __retval(128)
__naked void tc_len_and_span(void)
{
	asm volatile ("					\
	r2 = *(u32*)(r1 + %[data]);			\
	r3 = *(u32*)(r1 + %[data_end]);			\
	r0 = *(u32*)(r1 + %[len]);			\
	r3 -= r2;					\
	r0 += r3;					\
	exit;						\
"	:
	: __imm_const(data, offsetof(struct __sk_buff, data)),
	  __imm_const(data_end, offsetof(struct __sk_buff, data_end)),
	  __imm_const(len, offsetof(struct __sk_buff, len))
	: __clobber_all);
}

SEC("tc")
__description("tc: data_meta equals data, direct packet read")
__success __retval(0)
__naked void tc_meta(void)
{
	asm volatile ("					\
	r2 = *(u32*)(r1 + %[data]);			\
	r3 = *(u32*)(r1 + %[data_meta]);		\
	r4 = *(u32*)(r1 + %[data_end]);			\
	r0 = r2;					\
	r0 += 14;					\
	if r0 > r4 goto l0_%=;				\
	r0 = *(u16*)(r2 + 12);				\
	r2 -= r3;					\
	r0 |= r2;					\
	exit;						\
l0_%=:	r0 = -1;					\
	exit;						\
"	:
	: __imm_const(data, offsetof(struct __sk_buff, data)),
	  __imm_const(data_meta, offsetof(struct __sk_buff, data_meta)),
	  __imm_const(data_end, offsetof(struct __sk_buff, data_end))
	: __clobber_all);
}

SEC("tc")
__description("tc: ctx spilled, filled through another register, passed to a subprog")
__success __retval(64)
__naked void tc_ctx_spill_subprog(void)
{
	asm volatile ("					\
	r6 = r10;					\
	r6 += -16;					\
	*(u64*)(r6 + 8) = r1;				\
	r1 = 0;						\
	r1 = *(u64*)(r10 - 8);				\
	call packet_span;				\
	exit;						\
"	::: __clobber_all);
}

static __naked __noinline __attribute__((used))
void packet_span(void)
{
	asm volatile ("					\
	r2 = *(u32*)(r1 + %[data]);			\
	r0 = *(u32*)(r1 + %[data_end]);			\
	r0 -= r2;					\
	exit;						\
"	:
	: __imm_const(data, offsetof(struct __sk_buff, data)),
	  __imm_const(data_end, offsetof(struct __sk_buff, data_end))
	: __clobber_all);
}

SEC("cgroup/skb")
__description("cgroup_skb: len after the Ethernet header, no data_end under test_run")
__success __retval(50)
__naked void cgroup_skb_len(void)
{
	asm volatile ("					\
	r0 = *(u32*)(r1 + %[len]);			\
	r3 = *(u32*)(r1 + %[data_end]);			\
	if r3 == 0 goto l0_%=;				\
	r0 = -1;					\
l0_%=:	exit;						\
"	:
	: __imm_const(len, offsetof(struct __sk_buff, len)),
	  __imm_const(data_end, offsetof(struct __sk_buff, data_end))
	: __clobber_all);
}

SEC("lwt_in")
__description("lwt_in: direct packet access from the network header")
__success __retval(50)
__naked void lwt_span(void)
{
	asm volatile ("					\
	r2 = *(u32*)(r1 + %[data]);			\
	r0 = *(u32*)(r1 + %[data_end]);			\
	r0 -= r2;					\
	exit;						\
"	:
	: __imm_const(data, offsetof(struct __sk_buff, data)),
	  __imm_const(data_end, offsetof(struct __sk_buff, data_end))
	: __clobber_all);
}

char _license[] SEC("license") = "GPL";
