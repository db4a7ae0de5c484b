// test_loader's judgement, written for bpf-kasan-ci (MIT licence). The file is named like the
// kernel's verifier_array_access.c because test_loader keys its pre-execution callback on that
// name: element 0 of map_array_ro becomes {.index = 28, .foo[6] = 0xabcdef12} before the run.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

#define MAX_ENTRIES 11

struct test_val {
	unsigned int index;
	int foo[MAX_ENTRIES];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, struct test_val);
	__uint(map_flags, BPF_F_RDONLY_PROG);
} map_array_ro SEC(".maps");

void target_3(void);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 2);
	__uint(key_size, sizeof(int));
	__array(values, void (void));
} map_progs SEC(".maps") = {
	.values = {
		[1] = (void *)&target_3,
	},
};

SEC("socket")
__auxiliary __auxiliary_unpriv
__naked void target_3(void)
{
	asm volatile ("					\
	r0 = *(u32*)(r1 + %[len]);			\
	r0 -= 47;					\
	exit;						\
"	:
	: __imm_const(len, offsetof(struct __sk_buff, len))
	: __clobber_all);
}

SEC("socket")
__description("pre-execution callback fills map_array_ro")
__success __retval(0xabcdef12)
__naked void prefilled_value(void)
{
	asm volatile ("					\
	r1 = 0;						\
	*(u64*)(r10 - 8) = r1;				\
	r2 = r10;					\
	r2 += -8;					\
	r1 = %[map_array_ro] ll;			\
	call %[bpf_map_lookup_elem];			\
	if r0 == 0 goto l0_%=;				\
	r1 = *(u32*)(r0 + 0);				\
	if r1 != 28 goto l0_%=;				\
	r0 = *(u32*)(r0 + 28);				\
	exit;						\
l0_%=:	r0 = -1;					\
	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm_addr(map_array_ro)
	: __clobber_all);
}

SEC("socket")
__description("tail call into an auxiliary program that reads the ctx")
__success __success_unpriv __retval(3)
__naked void tail_call_target(void)
{
	asm volatile ("					\
	r3 = 1;						\
	r2 = %[map_progs] ll;				\
	call %[bpf_tail_call];				\
	r0 = -1;					\
	exit;						\
"	:
	: __imm(bpf_tail_call),
	  __imm_addr(map_progs)
	: __clobber_all);
}

SEC("socket")
__description("retvals compare as 32-bit ints")
__success __retval(-1)
__naked void retval_low_32_bits(void)
{
	asm volatile ("					\
	r0 = 0x1ffffffff ll;				\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("a dead write to the frame pointer does not stop the load")
__success __retval(0)
__naked void dead_fp_write(void)
{
	asm volatile ("					\
	r0 = 0;						\
	if r0 == 0 goto l0_%=;				\
	r10 = 0;					\
l0_%=:	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("POINTER_VALUE is not compared")
__success __retval(POINTER_VALUE)
__naked void pointer_value(void)
{
	asm volatile ("					\
	r0 = r10;					\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("a wrong retval fails")
__success __retval(2)
__naked void wrong_retval(void)
{
	asm volatile ("					\
	r0 = 1;						\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("success without retval: any value passes")
__success
__naked void no_retval(void)
{
	asm volatile ("					\
	r0 = 12345;					\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("expected rejection is not executed")
__failure __msg("invalid access to map value")
__naked void expected_rejection(void)
{
	asm volatile ("					\
	r0 = *(u64*)(r10 + 8);				\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("accepted privileged, rejected unprivileged: two results")
__success __failure_unpriv __msg_unpriv("R0 leaks addr")
__retval(0)
__naked void unpriv_differs(void)
{
	asm volatile ("					\
	r0 = 0;						\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("same expectation in both modes: one result")
__success __success_unpriv __retval(0)
__naked void unpriv_same(void)
{
	asm volatile ("					\
	r0 = 0;						\
	exit;						\
"	::: __clobber_all);
}

SEC("tc")
__description("a KASAN report on an accepted program fails it (read past the skb's buffer)")
__success __retval(0)
__naked void kasan_on_success(void)
{
	asm volatile ("					\
	r2 = *(u32*)(r1 + %[data]);			\
	r0 = *(u8*)(r2 + 460);				\
	r0 = 0;						\
	exit;						\
"	:
	: __imm_const(data, offsetof(struct __sk_buff, data))
	: __clobber_all);
}

char _license[] SEC("license") = "GPL";
