// SPDX-License-Identifier: MIT
/* Written for bpf-kasan-ci: expected rejections whose bug only a what-if run on the right inputs
 * reaches (a boundary value, a map pattern, a found socket), helpers handed bad memory, and a
 * program whose report must not depend on what ran before it. Not taken from the kernel. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

/* r0 = the value of key 0 in `map`, or NULL */
#define LOOKUP_KEY_0(map)		\
	"r1 = 0;"			\
	"*(u64*)(r10 - 8) = r1;"	\
	"r2 = r10;"			\
	"r2 += -8;"			\
	"r1 = %[" #map "] ll;"		\
	"call %[bpf_map_lookup_elem];"

struct test_val {
	unsigned int index;
	int foo[11];
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, long long);
	__type(value, long long);
} map_hash_8b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 1);
	__type(key, long long);
	__type(value, struct test_val);
} map_hash_48b SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, long long);
} map_array_8b SEC(".maps");

SEC("tracepoint")
__description("what-if: a random offset bounded one too high")
__failure __msg("invalid access to map value, value_size=48 off=41 size=8")
__naked void random_bound_off_by_one(void)
{
	asm volatile (
	LOOKUP_KEY_0(map_hash_48b)
"	if r0 == 0 goto l0_%=;				\
	r7 = r0;					\
	call %[bpf_get_prandom_u32];			\
	if r0 s> 41 goto l0_%=;				\
	if r0 s< 0 goto l0_%=;				\
	r7 += r0;					\
	r0 = *(u64*)(r7 + 0);				\
l0_%=:	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm(bpf_get_prandom_u32),
	  __imm_addr(map_hash_48b)
	: __clobber_all);
}

SEC("tracepoint")
__description("what-if: an index from a map value, checked against a register")
__failure __msg("invalid access to map value, value_size=48 off=44 size=8")
__naked void map_index_register_bound(void)
{
	asm volatile (
	LOOKUP_KEY_0(map_hash_48b)
"	if r0 == 0 goto l0_%=;				\
	r1 = *(u32*)(r0 + 0);				\
	r2 = 12;					\
	if r1 >= r2 goto l0_%=;				\
	r1 <<= 2;					\
	r0 += r1;					\
	r0 = *(u64*)(r0 + 0);				\
l0_%=:	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm_addr(map_hash_48b)
	: __clobber_all);
}

SEC("tracepoint")
__description("what-if: the difference of two map bytes as an index")
__failure __msg("R0 max value is outside of the allowed memory range")
__naked void map_byte_difference(void)
{
	asm volatile (
	LOOKUP_KEY_0(map_hash_8b)
"	if r0 == 0 goto l0_%=;				\
	r1 = *(u8*)(r0 + 1);				\
	r3 = *(u8*)(r0 + 0);				\
	r1 -= r3;					\
	if r1 > 1 goto l0_%=;				\
	r1 <<= 3;					\
	r0 += r1;					\
	r0 = *(u64*)(r0 + 0);				\
l0_%=:	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm_addr(map_hash_8b)
	: __clobber_all);
}

SEC("tracepoint")
__description("what-if: a length from the ctx, bounded one too high")
__failure __msg("invalid access to map value, value_size=48 off=0 size=49")
__naked void ctx_length_off_by_one(void)
{
	asm volatile ("					\
	r6 = *(u64*)(r1 + 8);				\
"	LOOKUP_KEY_0(map_hash_48b)
"	if r0 == 0 goto l0_%=;				\
	if r6 > 49 goto l0_%=;				\
	r1 = r0;					\
	r2 = r6;					\
	r3 = 0;						\
	call %[bpf_probe_read_kernel];			\
l0_%=:	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm(bpf_probe_read_kernel),
	  __imm_addr(map_hash_48b)
	: __clobber_all);
}

SEC("tc")
__description("what-if: a found socket used after its release")
__failure __msg("invalid mem access")
__naked void socket_after_release(void)
{
	asm volatile ("					\
	r1 = 0;						\
	*(u64*)(r10 - 8) = r1;				\
	*(u64*)(r10 - 16) = r1;				\
	r2 = r10;					\
	r2 += -16;					\
	r3 = 12;					\
	r4 = -1;					\
	r5 = 0;						\
	call %[bpf_sk_lookup_tcp];			\
	if r0 == 0 goto l0_%=;				\
	r6 = r0;					\
	r1 = r0;					\
	call %[bpf_sk_release];				\
	r0 = *(u32*)(r6 + 0);				\
l0_%=:	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_sk_lookup_tcp),
	  __imm(bpf_sk_release)
	: __clobber_all);
}

SEC("tracepoint")
__description("what-if: a map key read past the end of a map value")
__failure __msg("invalid access to map value, value_size=8 off=4 size=8")
__naked void helper_key_overread(void)
{
	asm volatile (
	LOOKUP_KEY_0(map_array_8b)
"	if r0 == 0 goto l0_%=;				\
	r2 = r0;					\
	r2 += 4;					\
	r1 = %[map_hash_8b] ll;				\
	call %[bpf_map_lookup_elem];			\
l0_%=:	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm_addr(map_array_8b),
	  __imm_addr(map_hash_8b)
	: __clobber_all);
}

SEC("tracepoint")
__description("what-if: a NULL map key")
__failure __msg("R2 type=scalar expected=fp")
__naked void helper_null_key(void)
{
	asm volatile ("					\
	r2 = 0;						\
	r1 = %[map_hash_8b] ll;				\
	call %[bpf_map_lookup_elem];			\
	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm_addr(map_hash_8b)
	: __clobber_all);
}

SEC("tracepoint")
__description("what-if: a helper zero-fills past the frame over the return address")
__failure __msg("invalid indirect access to stack R1 off=-16 size=26")
__naked void helper_smashes_return(void)
{
	asm volatile ("					\
	r1 = r10;					\
	r1 += -16;					\
	r2 = 26;					\
	r3 = 0;						\
	call %[bpf_probe_read_kernel];			\
	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_probe_read_kernel)
	: __clobber_all);
}

SEC("tc")
__description("what-if: a huge length makes the helper clear the stack to its end")
__failure __msg("R4 min value is negative")
__naked void helper_huge_length(void)
{
	asm volatile ("					\
	r2 = 0;						\
	r3 = r10;					\
	r3 += -8;					\
	r4 = -1;					\
	call %[bpf_skb_load_bytes];			\
	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_skb_load_bytes)
	: __clobber_all);
}

SEC("tc")
__description("what-if: a read far past the ctx, wherever the heap puts it")
__failure __msg("dereference of modified ctx ptr R6 off=65535 disallowed")
__naked void far_past_ctx(void)
{
	asm volatile ("					\
	r6 = r1;					\
	w1 = 0xffff0000;				\
	r1 >>= 16;					\
	r6 += r1;					\
	r0 = *(u32*)(r6 + 0);				\
	r0 = 0;						\
	exit;						\
"	::: __clobber_all);
}

SEC("tracepoint")
__description("what-if: an endless loop stops at the runner's budget")
__failure __msg("infinite loop detected")
__naked void endless_loop(void)
{
	asm volatile ("					\
l0_%=:	r0 = 0;						\
	goto l0_%=;					\
"	::: __clobber_all);
}
