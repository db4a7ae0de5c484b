// SPDX-License-Identifier: MIT
/* Our own broken tests: each must fail alone, with file and line, and leave the others be. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

SEC("socket")
__success __retval(1)
__naked void good_before(void)
{
	asm volatile ("r0 = 1; exit;" ::: __clobber_all);
}

SEC("socket")
__success
__naked void bad_statement(void)
{
	asm volatile ("					\
	r0 = 0;						\
	r0 =+* r1;					\
	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__success
__naked void undeclared_operand(void)
{
	asm volatile ("r0 = %[nowhere]; exit;" ::: __clobber_all);
}

SEC("socket")
__success
__naked void unknown_constant(void)
{
	asm volatile ("r0 = %[v]; exit;" :: __imm_const(v, NOT_A_CONSTANT + 1) : __clobber_all);
}

SEC("socket")
__success
__naked void unterminated_string(void)
{
	asm volatile ("r0 = 0;
	exit;" ::: __clobber_all);
}

SEC("not_a_section")
__success
__naked void unknown_section(void)
{
	asm volatile ("r0 = 0; exit;" ::: __clobber_all);
}

SEC("socket")
__success __retval(one)
__naked void bad_retval(void)
{
	asm volatile ("r0 = 1; exit;" ::: __clobber_all);
}

SEC("socket")
__success __jited("	nop")
__naked void jited_without_arch(void)
{
	asm volatile ("r0 = 1; exit;" ::: __clobber_all);
}

SEC("socket")
__success
__naked void unknown_symbol(void)
{
	asm volatile ("r1 = no_such_thing ll; r0 = 0; exit;" ::: __clobber_all);
}

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(colour, 3);
} odd_map SEC(".maps");

SEC("socket")
__success
__naked void unknown_map_attribute(void)
{
	asm volatile ("r1 = %[odd_map] ll; r0 = 0; exit;" :: __imm_addr(odd_map) : __clobber_all);
}

SEC("socket")
__success __retval(2)
__naked void good_after(void)
{
	asm volatile ("r0 = 2; exit;" ::: __clobber_all);
}

char _license[] SEC("license") = "GPL";
