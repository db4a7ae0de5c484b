// SPDX-License-Identifier: MIT
/* Our own test object with a bug the verifier would catch: a read past an 8-byte map value.
 * Its KASAN report must name this file and the line of the asm statement. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, long long);
} small SEC(".maps");

SEC("socket")
__description("reads past an 8-byte map value")
__success __retval(0)
__naked void past_value(void)
{
	asm volatile ("					\
	r1 = 0;						\
	*(u32 *)(r10 - 4) = r1;				\
	r2 = r10;					\
	r2 += -4;					\
	r1 = %[small] ll;				\
	call %[bpf_map_lookup_elem];			\
	if r0 == 0 goto l0_%=;				\
	r0 = *(u64 *)(r0 + 8);				\
l0_%=:	r0 = 0;						\
	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm_addr(small)
	: __clobber_all);
}
