// SPDX-License-Identifier: MIT
/* Our own test object for the ELF loader, in the test_loader format so that the C importer
 * reads it too: several programs in one section, maps of each kind the loader decodes,
 * globals in .data/.bss/.rodata, bpf-to-bpf calls into .text (nested, shared by two
 * programs), a callback address, a tail call, a kfunc, and a C-bodied program. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

struct pair {
	long long a, b;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 8);
	__type(key, __u32);
	__type(value, __u64);
	__uint(map_flags, BPF_F_NO_PREALLOC);
} counts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, int);
	__type(value, struct pair);
} slots SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, int);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, 3);
		__type(key, int);
		__type(value, long long);
	});
} outer SEC(".maps");

void tail_a(void);
void tail_b(void);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(int));
	__array(values, void (void));
} jumps SEC(".maps") = {
	.values = {
		[1] = (void *)&tail_a,
		[3] = (void *)&tail_b,
	},
};

int counter = 5;
int second = 9;
long long zeroed;
const int limit = 42;

extern void bpf_rcu_read_lock(void) __attribute__((section(".ksyms")));

SEC("socket")
__description("map lookup, missing key")
__success __retval(0)
__naked void read_map(void)
{
	asm volatile ("					\
	r1 = 3;						\
	*(u32 *)(r10 - 4) = r1;				\
	r2 = r10;					\
	r2 += -4;					\
	r1 = %[counts] ll;				\
	call %[bpf_map_lookup_elem];			\
	if r0 == 0 goto l0_%=;				\
	r0 = *(u64 *)(r0 + 0);				\
l0_%=:	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm_addr(counts)
	: __clobber_all);
}

static __naked __noinline __attribute__((used))
void add_zero(void)
{
	asm volatile ("r0 = r1; exit;" ::: __clobber_all);
}

static __naked __noinline __attribute__((used))
void add_one(void)
{
	asm volatile ("					\
	r1 += 1;					\
	call add_zero;					\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("nested bpf2bpf calls")
__success __retval(7)
__naked void add_twice(void)
{
	asm volatile ("					\
	r1 = 5;						\
	call add_one;					\
	r1 = r0;					\
	call add_one;					\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("globals in .data and .rodata")
__success __retval(47)
__naked void globals(void)
{
	asm volatile ("					\
	r1 = %[counter] ll;				\
	r0 = *(u32 *)(r1 + 0);				\
	r1 = %[limit] ll;				\
	r2 = *(u32 *)(r1 + 0);				\
	r0 += r2;					\
	r1 = %[zeroed] ll;				\
	*(u64 *)(r1 + 0) = r0;				\
	exit;						\
"	:
	: __imm_addr(counter),
	  __imm_addr(limit),
	  __imm_addr(zeroed)
	: __clobber_all);
}

SEC("tc")
__description("second global and a shared subprogram")
__success __retval(10)
__naked void tc_prog(void)
{
	asm volatile ("					\
	r1 = %[second] ll;				\
	r1 = *(u32 *)(r1 + 0);				\
	call add_one;					\
	exit;						\
"	:
	: __imm_addr(second)
	: __clobber_all);
}

static __naked __noinline __attribute__((used))
void loop_body(void)
{
	asm volatile ("r0 = 0; exit;" ::: __clobber_all);
}

SEC("xdp")
__description("callback address for bpf_loop")
__success __retval(3)
__naked void callback_user(void)
{
	asm volatile ("					\
	r1 = 3;						\
	r2 = %[loop_body] ll;				\
	r3 = 0;						\
	r4 = 0;						\
	call %[bpf_loop];				\
	exit;						\
"	:
	: __imm(bpf_loop),
	  __imm_addr(loop_body)
	: __clobber_all);
}

SEC("socket")
__auxiliary
__naked void tail_a(void)
{
	asm volatile ("r0 = 1; exit;" ::: __clobber_all);
}

SEC("socket")
__auxiliary
__naked void tail_b(void)
{
	asm volatile ("r0 = 2; exit;" ::: __clobber_all);
}

SEC("socket")
__description("tail call through a prog array")
__success __retval(1)
__naked void do_tail(void)
{
	asm volatile ("					\
	r2 = %[jumps] ll;				\
	r3 = 1;						\
	call %[bpf_tail_call];				\
	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_tail_call),
	  __imm_addr(jumps)
	: __clobber_all);
}

SEC("socket")
__description("map-in-map slot nobody filled is NULL")
__success __retval(2)
__naked void in_outer(void)
{
	asm volatile ("					\
	r1 = 0;						\
	*(u32 *)(r10 - 4) = r1;				\
	r2 = r10;					\
	r2 += -4;					\
	r1 = %[outer] ll;				\
	call %[bpf_map_lookup_elem];			\
	if r0 != 0 goto l0_%=;				\
	r0 = 2;						\
	exit;						\
l0_%=:	r0 = 1;						\
	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm_addr(outer)
	: __clobber_all);
}

SEC("socket")
__description("a C body: only the compiler can build it")
__success
int c_body(void *ctx)
{
	return bpf_get_prandom_u32() & 1;
}

SEC("tc")
__description("kfunc call")
__success
int kfunc_user(void *ctx)
{
	bpf_rcu_read_lock();
	return 0;
}

SEC("socket")
__description("arm64 only")
__success __arch_arm64
__naked void arm_only(void)
{
	asm volatile ("r0 = 0; exit;" ::: __clobber_all);
}

SEC("?socket")
__description("rejected, messages in order")
__failure __msg("first message") __msg("first message") __msg("R1 !read_ok")
__flag(BPF_F_ANY_ALIGNMENT)
__naked void rejected(void)
{
	asm volatile ("r0 = r1; r0 = *(u64 *)(r9 + 0); exit;" ::: __clobber_all);
}

SEC("socket")
__description("call by label inside one function")
__success __retval(3)
__naked void local_call(void)
{
	asm volatile ("					\
	r1 = 2;						\
	call l0_%=;					\
	exit;						\
l0_%=:	r0 = r1;					\
	r0 += 1;					\
	exit;						\
"	::: __clobber_all);
}

char _license[] SEC("license") = "GPL";
