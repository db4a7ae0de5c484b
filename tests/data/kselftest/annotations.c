// SPDX-License-Identifier: MIT
/* Our own tests in the test_loader format: one program per annotation case. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

SEC("socket")
__description("plain success, privileged only")
__success __retval(7)
__naked void plain_success(void)
{
	asm volatile ("r0 = 7; exit;" ::: __clobber_all);
}

SEC("socket")
__failure __msg("first message") __msg("R{{[0-9]+}} second message")
__failure_unpriv __msg_unpriv("only when unprivileged")
__naked void failure_with_messages(void)
{
	asm volatile ("exit;" ::: __clobber_all);
}

SEC("socket")
__success __success_unpriv __retval(0xfffffffe)
__naked void unpriv_inherits_retval(void)
{
	asm volatile ("w0 = -2; exit;" ::: __clobber_all);
}

SEC("socket")
__success __retval(-12) __failure_unpriv __retval_unpriv(3)
__naked void own_unpriv_result(void)
{
	asm volatile ("r0 = -12; exit;" ::: __clobber_all);
}

SEC("socket")
__success __retval(INT_MIN)
__naked void retval_int_min(void)
{
	asm volatile ("w0 = 1; w0 <<= 31; exit;" ::: __clobber_all);
}

SEC("tc")
__success __retval(POINTER_VALUE)
__naked void retval_not_compared(void)
{
	asm volatile ("r0 = r1; exit;" ::: __clobber_all);
}

SEC("tc")
__success __retval(TEST_DATA_LEN)
__naked void retval_data_len(void)
{
	asm volatile ("r0 = 64; exit;" ::: __clobber_all);
}

SEC("xdp")
__success __flag(BPF_F_ANY_ALIGNMENT) __flag(0x40) __flag(!BPF_F_TEST_RND_HI32)
__log_level(2)
__naked void flags_and_log_level(void)
{
	asm volatile ("r0 = 2; exit;" ::: __clobber_all);
}

SEC("socket")
__auxiliary __auxiliary_unpriv
__naked void helper_program(void)
{
	asm volatile ("r0 = 3; exit;" ::: __clobber_all);
}

SEC("socket")
__success
__arch_arm64
__jited("	mov	x7, #0x0")
__arch_x86_64
__jited("	endbr64")
__jited("...")
__jited("	xorl	%eax, %eax")
__xlated("0: r0 = 0")
__xlated("1: exit")
__naked void jited_lines(void)
{
	asm volatile ("r0 = 0; exit;" ::: __clobber_all);
}

SEC("socket")
__success __arch_riscv64
__naked void riscv_only(void)
{
	asm volatile ("r0 = 0; exit;" ::: __clobber_all);
}

SEC("socket")
__success __btf_path("custom_btf.bpf.o") __caps_unpriv(CAP_BPF) __load_if_JITed()
__naked void unknown_annotations(void)
{
	asm volatile ("r0 = 0; exit;" ::: __clobber_all);
}

SEC("?raw_tp")
__attribute__((btf_decl_tag("comment:test_expect_failure")))
__attribute__((btf_decl_tag("comment:test_expect_msg=17=raw tag message")))
__attribute__((naked)) void raw_decl_tags(void)
{
	asm volatile ("exit;" ::: __clobber_all);
}

SEC("lsm.s/file_open")
__naked void no_expectation(void)
{
	asm volatile ("r0 = 0; exit;" ::: __clobber_all);
}

SEC("cgroup/skb")
__success __retval(1)
int c_body(struct __sk_buff *skb)
{
	return skb->len > 1;
}

char _license[] SEC("license") = "GPL";
