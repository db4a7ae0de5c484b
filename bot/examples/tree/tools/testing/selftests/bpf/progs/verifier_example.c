// Example verifier-style selftests, written for bpf-kasan-ci (MIT licence).
// Same shape as the kernel's progs/verifier_*.c: one naked function per test,
// annotated with what the verifier and a test run should give.

#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, long long);
} map_example_8b SEC(".maps");

SEC("socket")
__description("example: return a constant")
__success __retval(7)
__naked void example_constant(void)
{
	asm volatile ("					\
	r0 = 7;						\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__description("example: read the whole map value")
__success __retval(0)
__naked void example_map_value_read(void)
{
	asm volatile ("					\
	r1 = 0;						\
	*(u32*)(r10 - 4) = r1;				\
	r2 = r10;					\
	r2 += -4;					\
	r1 = %[map_example_8b] ll;			\
	call %[bpf_map_lookup_elem];			\
	if r0 == 0 goto l0_%=;				\
	r0 = *(u64*)(r0 + 0);				\
l0_%=:	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm_addr(map_example_8b)
	: __clobber_all);
}

SEC("socket")
__description("example: read an uninitialised register")
__failure __msg("R2 !read_ok")
__naked void example_uninit_reg(void)
{
	asm volatile ("					\
	r0 = r2;					\
	exit;						\
"	::: __clobber_all);
}

char _license[] SEC("license") = "GPL";
