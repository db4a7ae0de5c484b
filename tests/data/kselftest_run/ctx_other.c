// xdp, tracing and syscall contexts under BPF_PROG_TEST_RUN, written for bpf-kasan-ci (MIT licence).

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

SEC("xdp")
__description("xdp: 64 bytes of packet, data_meta at data, loopback queue 0")
__success __retval(65)
__naked void xdp_span(void)
{
	asm volatile ("					\
	r2 = *(u32*)(r1 + %[data]);			\
	r3 = *(u32*)(r1 + %[data_end]);			\
	r4 = *(u32*)(r1 + %[data_meta]);		\
	r0 = r3;					\
	r0 -= r2;					\
	r2 -= r4;					\
	r0 += r2;					\
	r2 = *(u32*)(r1 + %[ifindex]);			\
	r0 += r2;					\
	r2 = *(u32*)(r1 + %[queue]);			\
	r0 += r2;					\
	exit;						\
"	:
	: __imm_const(data, offsetof(struct xdp_md, data)),
	  __imm_const(data_end, offsetof(struct xdp_md, data_end)),
	  __imm_const(data_meta, offsetof(struct xdp_md, data_meta)),
	  __imm_const(ifindex, offsetof(struct xdp_md, ingress_ifindex)),
	  __imm_const(queue, offsetof(struct xdp_md, rx_queue_index))
	: __clobber_all);
}

SEC("xdp")
__description("xdp: a map value's first word is not a packet pointer")
__success __retval(0)
__naked void xdp_not_ctx(void)
{
	asm volatile ("					\
	r1 = 0;						\
	*(u64*)(r10 - 8) = r1;				\
	r2 = r10;					\
	r2 += -8;					\
	r0 = *(u32*)(r2 + 0);				\
	exit;						\
"	::: __clobber_all);
}

SEC("raw_tp")
__description("raw_tp: the arguments are zero")
__success __retval(0)
__naked void raw_tp_args(void)
{
	asm volatile ("					\
	r0 = *(u64*)(r1 + 88);				\
	exit;						\
"	::: __clobber_all);
}

SEC("tracepoint")
__description("tracepoint: the record is zero as far as the verifier lets it read")
__success __retval(0)
__naked void tracepoint_record(void)
{
	asm volatile ("					\
	r0 = *(u64*)(r1 + 2040);			\
	exit;						\
"	::: __clobber_all);
}

SEC("kprobe")
__description("kprobe: pt_regs are zero")
__success __retval(0)
__naked void kprobe_regs(void)
{
	asm volatile ("					\
	r0 = *(u64*)(r1 + 160);				\
	exit;						\
"	::: __clobber_all);
}

SEC("syscall")
__description("syscall: no ctx_in, so ctx is NULL")
__success __retval(0)
__naked void syscall_null_ctx(void)
{
	asm volatile ("					\
	r0 = r1;					\
	exit;						\
"	::: __clobber_all);
}

SEC("fentry/bpf_fentry_test1")
__description("fentry: test_run does not run an unattached program (this one would fault)")
__success __retval(0)
__naked void fentry_not_attached(void)
{
	asm volatile ("					\
	r1 = *(u64*)(r1 + 0);				\
	r0 = *(u64*)(r1 + 0);				\
	exit;						\
"	::: __clobber_all);
}

SEC("lsm/file_open")
__description("lsm: test_run has no LSM programs")
__success
__naked void lsm_skipped(void)
{
	asm volatile ("					\
	r0 = 0;						\
	exit;						\
"	::: __clobber_all);
}

SEC("sk_msg")
__description("sk_msg: test_run cannot run it")
__success
__naked void sk_msg_skipped(void)
{
	asm volatile ("					\
	r0 = 1;						\
	exit;						\
"	::: __clobber_all);
}

char _license[] SEC("license") = "GPL";
