// SPDX-License-Identifier: MIT
/* Our own tests of every inline-asm operand form the importer understands. */
#include <linux/bpf.h>
#include <limits.h>
#include <errno.h>
#include <bpf/bpf_helpers.h>
#include "../../../include/linux/filter.h"
#include "bpf_misc.h"

#define SLOTS 3

struct pair {
	char tag;
	long long value;
	unsigned short ports[SLOTS];
};

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 2);
	__type(key, int);
	__type(value, struct pair);
} pairs SEC(".maps");

extern void bpf_made_up_kfunc(void) __ksym;

SEC("socket")
__success
__naked void helper_and_map(void)
{
	asm volatile ("					\
	r1 = 0;						\
	*(u32 *)(r10 - 4) = r1;				\
	r2 = r10;					\
	r2 += -4;					\
	r1 = %[pairs] ll;				\
	call %[bpf_map_lookup_elem];			\
	call %[bpf_get_prandom_u32];			\
	exit;						\
"	:
	: __imm(bpf_map_lookup_elem),
	  __imm(bpf_get_prandom_u32),
	  __imm_addr(pairs)
	: __clobber_all);
}

SEC("tc")
__success
__naked void constants(void)
{
	asm volatile ("					\
	r0 = *(u32 *)(r1 + %[skb_mark]);		\
	r0 = *(u32 *)(r1 + %[skb_cb2]);			\
	r2 = %[pair_size];				\
	r3 = %[ports_off];				\
	r4 = %[int_min];				\
	r5 = %[llong_min] ll;				\
	r6 = %[minus_einval];				\
	r7 = %[uint_minus_one];				\
	r8 = %[uint_minus_one] ll;			\
	r9 = %[casted] ll;				\
	r1 = %[shifted] ll;				\
	r2 = %[slots];					\
	r3 = %[raw_i] ll;				\
	w0 %%= 3;					\
	exit;						\
"	:
	: __imm_const(skb_mark, offsetof(struct __sk_buff, mark)),
	  __imm_const(skb_cb2, offsetof(struct __sk_buff, cb[2])),
	  __imm_const(pair_size, sizeof(struct pair)),
	  __imm_const(ports_off, offsetof(struct pair, ports[1])),
	  __imm_const(int_min, INT_MIN),
	  __imm_const(llong_min, LLONG_MIN),
	  __imm_const(minus_einval, -EINVAL),
	  __imm_const(uint_minus_one, 0xffffffff - 1),
	  __imm_const(casted, (__u32)-1 + 0ull),
	  __imm_const(shifted, 1ull << 40 | 5),
	  __imm_const(slots, SLOTS * sizeof(int)),
	  [raw_i]"i"(0x1122334455667788ull)
	: __clobber_all);
}

SEC("socket")
__success
__naked void raw_instructions(void)
{
	asm volatile ("					\
	r6 = r1;					\
	.8byte %[ld_abs];				\
	.8byte %[st_mem];				\
	.8byte %[ld_map_fd];				\
	.8byte 0;					\
	.8byte %[jmp_imm];				\
	r0 = 0;						\
	exit;						\
"	:
	: __imm_insn(ld_abs, BPF_LD_ABS(BPF_H, 12)),
	  __imm_insn(st_mem, BPF_ST_MEM(BPF_DW, BPF_REG_10, -16, 99)),
	  __imm_insn(ld_map_fd, BPF_RAW_INSN(BPF_LD | BPF_DW | BPF_IMM, BPF_REG_1, BPF_PSEUDO_MAP_FD, 0, 0)),
	  __imm_insn(jmp_imm, BPF_JMP_IMM(BPF_JSET, BPF_REG_0, 0x10, 0))
	: __clobber_all);
}

SEC("socket")
__success
__naked void unique_labels_one(void)
{
	asm volatile ("					\
	r0 = 0;						\
l0_%=:	if r0 > 2 goto l1_%=;				\
	r0 += 1;					\
	goto l0_%=;					\
l1_%=:	exit;						\
"	::: __clobber_all);
}

SEC("socket")
__success
__naked void unique_labels_two(void)
{
	asm volatile (
	"r0 = 1;"
	"l0_%=:"
	"exit;"
	::: __clobber_all);
}

int counter;

SEC("socket")
__success
__naked void pointer_operand(void)
{
	asm volatile ("r1 = %[counter]; r0 = 0; exit;" :: __imm_ptr(counter) : __clobber_all);
}

SEC("socket")
__success
__naked void unused_pointer_operand(void)
{
	asm volatile ("r0 = 0; exit;" :: __imm_ptr(counter) : __clobber_all);
}

SEC("socket")
__success
__naked void register_constraint(void)
{
	asm volatile ("r2 = %[value]; r0 = 0; exit;" :: [value]"r"(counter) : __clobber_all);
}

SEC("syscall")
__success
__naked void kfunc_call(void)
{
	asm volatile ("call %[bpf_made_up_kfunc]; r0 = 0; exit;" :: __imm(bpf_made_up_kfunc) : __clobber_all);
}

char _license[] SEC("license") = "GPL";
