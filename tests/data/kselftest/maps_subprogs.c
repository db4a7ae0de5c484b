// SPDX-License-Identifier: MIT
/* Our own tests of map definitions, global variables and bpf-to-bpf calls. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

struct record {
	unsigned int id;
	int scores[5];
	struct bpf_spin_lock lock;
};

typedef struct record record_t;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 16);
	__type(key, long long);
	__type(value, record_t);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__uint(pinning, LIBBPF_PIN_BY_NAME);
} records SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 4096);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, int);
	__array(values, struct {
		__uint(type, BPF_MAP_TYPE_ARRAY);
		__uint(max_entries, 1);
		__type(key, int);
		__type(value, int);
	});
} outer SEC(".maps");

void jump_target_a(void);
void jump_target_b(void);

struct {
	__uint(type, BPF_MAP_TYPE_PROG_ARRAY);
	__uint(max_entries, 4);
	__uint(key_size, sizeof(int));
	__array(values, void (void));
} jumps SEC(".maps") = {
	.values = {
		[1] = (void *)&jump_target_a,
		[3] = (void *)&jump_target_b,
	},
};

struct {
	__uint(type, BPF_MAP_TYPE_SPARKLY_NEW);
	__uint(max_entries, 1);
} not_a_map_type SEC(".maps");

int zeroed;
long answer = 42;
const volatile short limit = 7;
char note[] SEC(".data.notes") = "hi";
unsigned char bytes[4] = {1, 2, 3};

SEC("socket")
__auxiliary
__naked void jump_target_a(void)
{
	asm volatile ("r0 = 1; exit;" ::: __clobber_all);
}

SEC("socket")
__auxiliary
__naked void jump_target_b(void)
{
	asm volatile ("r0 = 2; exit;" ::: __clobber_all);
}

SEC("socket")
__success
__naked void uses_maps(void)
{
	asm volatile ("					\
	r1 = %[events] ll;				\
	r2 = %[records] ll;				\
	r3 = %[events] ll;				\
	r4 = %[outer] ll;				\
	r2 = %[jumps] ll;				\
	r0 = 0;						\
	exit;						\
"	:
	: __imm_addr(records), __imm_addr(events), __imm_addr(outer), __imm_addr(jumps)
	: __clobber_all);
}

SEC("socket")
__success
__naked void uses_globals(void)
{
	asm volatile ("					\
	r1 = %[answer] ll;				\
	r2 = %[zeroed] ll;				\
	r3 = %[limit] ll;				\
	r4 = %[note] ll;				\
	r5 = %[bytes] ll;				\
	r0 = 0;						\
	exit;						\
"	:
	: __imm_addr(answer), __imm_addr(zeroed), __imm_addr(limit), __imm_addr(note),
	  __imm_addr(bytes)
	: __clobber_all);
}

SEC("socket")
__failure __msg("unknown map type")
__naked void uses_bad_map(void)
{
	asm volatile ("r1 = %[not_a_map_type] ll; r0 = 0; exit;" :: __imm_addr(not_a_map_type)
		      : __clobber_all);
}

static __naked __noinline __attribute__((used))
void leaf(void)
{
	asm volatile ("r0 += 1; exit;" ::: __clobber_all);
}

static __naked __noinline __attribute__((used))
void middle(void)
{
	asm volatile ("					\
	call leaf;					\
	call middle_again;				\
	exit;						\
"	::: __clobber_all);
}

static __naked __noinline __attribute__((used))
void middle_again(void)
{
	asm volatile ("call leaf; exit;" ::: __clobber_all);
}

static __noinline int c_helper(int x)
{
	return x + 1;
}

SEC("socket")
__success __retval(3)
__naked void nested_calls(void)
{
	asm volatile ("					\
	r0 = 0;						\
	call middle;					\
	call leaf;					\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__success
__naked void calls_c_function(void)
{
	asm volatile ("call c_helper; exit;" ::: __clobber_all);
}

SEC("socket")
__success __retval(5)
__naked void tail_call(void)
{
	asm volatile ("					\
	r2 = %[jumps] ll;				\
	r3 = 1;						\
	call %[bpf_tail_call];				\
	r0 = 5;						\
	exit;						\
"	:
	: __imm_addr(jumps), __imm(bpf_tail_call)
	: __clobber_all);
}

char _license[] SEC("license") = "GPL";
