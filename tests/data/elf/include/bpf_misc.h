/* SPDX-License-Identifier: MIT */
/* Our own stand-in for the selftests' annotation header. Each annotation is a BTF decl tag
 * on the function, spelled the way test_loader reads it: "comment:test_<key>[=<value>]";
 * repeatable messages carry a counter so that equal texts stay distinct tags. */
#ifndef TEST_ELF_BPF_MISC_H
#define TEST_ELF_BPF_MISC_H

#define TEST_TAG(text) __attribute__((btf_decl_tag("comment:test_" text)))
#define TEST_STR(x) #x
#define TEST_XSTR(x) TEST_STR(x)

#define __description(text) TEST_TAG("description=" text)
#define __success TEST_TAG("expect_success")
#define __failure TEST_TAG("expect_failure")
#define __success_unpriv TEST_TAG("expect_success_unpriv")
#define __failure_unpriv TEST_TAG("expect_failure_unpriv")
#define __msg(text) TEST_TAG("expect_msg=" TEST_XSTR(__COUNTER__) "=" text)
#define __retval(value) TEST_TAG("retval=" #value)
#define __flag(flag) TEST_TAG("prog_flags=" #flag)
#define __auxiliary TEST_TAG("auxiliary")
#define __arch_arm64 TEST_TAG("arch=ARM64")

#define __naked __attribute__((naked))
#define __noinline __attribute__((noinline))
#define __clobber_all "r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7", "r8", "r9", "memory"
#define __imm(name) [name]"i"(name)
#define __imm_addr(name) [name]"i"(&name)

#define POINTER_VALUE 0xcafe4a

#endif
