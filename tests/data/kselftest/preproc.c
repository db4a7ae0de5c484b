// SPDX-License-Identifier: MIT
/* Our own tests of the preprocessor: conditionals, macros that build asm, literal joining. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

#define FIRST_VALUE 5
#define TWICE(x) ((x) * 2)
#define LOAD_THEN_ADD(reg, value)		\
	/* a comment inside the macro */	\
	"r" #reg " = " #value ";"		\
	"r" #reg " += 1;"

#define MAKE_TEST(kind, suffix, ret)				\
	SEC(kind)						\
	__description("made by a macro: " #suffix)		\
	__success __retval(ret)					\
	__naked void generated_##suffix(void)			\
	{							\
		asm volatile ("r0 = %[v]; exit;"		\
		: : __imm_const(v, ret) : __clobber_all);	\
	}

SEC("socket")
__success __retval(10)
__naked void endian_branch(void)
{
	asm volatile (
	"r0 = 10;"
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	"*(u32 *)(r10 - 8) = r0;"
#else
	"*(u32 *)(r10 - 4) = r0;"
#endif
	"exit;"
	::: __clobber_all);
}

#if (defined(__TARGET_ARCH_arm64) || defined(__TARGET_ARCH_x86)) && __clang_major__ >= 18

SEC("socket")
__success __retval(1)
__naked void guarded_v4(void)
{
	asm volatile ("r0 = 0x101; r0 = (s8)r0; exit;" ::: __clobber_all);
}

#else

SEC("socket")
__success
int dummy_instead(void)
{
	return 0;
}

#endif

#ifdef SOME_MACRO_NOBODY_DEFINES
SEC("socket")
__success
__naked void never_compiled(void)
{
	asm volatile ("exit;" ::: __clobber_all);
}
#elif TWICE(FIRST_VALUE) == 10 && !defined(__TARGET_ARCH_s390)
SEC("socket")
__success __retval(6)
__naked void macro_built_body(void)
{
	asm volatile (
	LOAD_THEN_ADD(0, 5)
	"exit;"
	::: __clobber_all);
}
#endif

SEC("socket")
__success
__naked void continued_template(void)
{
	asm volatile ("					\
	r1 = 1;		/* first */			\
	r2 = 2;		/* second; with a semicolon */	\
	r0 = r1;					\
	r0 += r2;					\
	exit;						\
"	::: __clobber_all);
}

MAKE_TEST("xdp", alpha, 3);
MAKE_TEST("tc", beta, 20);

char _license[] SEC("license") = "GPL";
