// SPDX-License-Identifier: MIT
/* Our own object whose annotations are wrong in two programs: reading it gives those two
 * cases an error naming this file and line, and the third case still imports. */
#include <linux/bpf.h>
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

SEC("socket")
__success __retval(twelve)
__naked void unparsable_retval(void)
{
	asm volatile ("r0 = 12; exit;" ::: __clobber_all);
}

SEC("no_such_program_type")
__success
__naked void unknown_section(void)
{
	asm volatile ("r0 = 0; exit;" ::: __clobber_all);
}

SEC("socket")
__success __retval(1)
__naked void fine(void)
{
	asm volatile ("r0 = 1; exit;" ::: __clobber_all);
}
