# SPDX-License-Identifier: MIT
# Our own assembly-only object: no BTF, no line info. A program calls a global .text
# function and reads a global of .data through relocations.
	.text
	.globl	twice
	.type	twice,@function
twice:
	r0 = r1
	r0 += r1
	exit
	.size	twice, .-twice

	.section	socket,"ax",@progbits
	.globl	main_prog
	.type	main_prog,@function
main_prog:
	r1 = value ll
	r1 = *(u32 *)(r1 + 4)
	call twice
	exit
	.size	main_prog, .-main_prog

	.data
	.globl	value
	.type	value,@object
value:
	.long	3
	.long	21
	.size	value, 8
