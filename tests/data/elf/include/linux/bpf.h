/* SPDX-License-Identifier: MIT */
/* Our own stand-in for the UAPI header: only the numbers our test objects use. */
#ifndef TEST_ELF_LINUX_BPF_H
#define TEST_ELF_LINUX_BPF_H

typedef unsigned char __u8;
typedef unsigned int __u32;
typedef unsigned long long __u64;

enum bpf_map_type {
	BPF_MAP_TYPE_HASH = 1,
	BPF_MAP_TYPE_ARRAY = 2,
	BPF_MAP_TYPE_PROG_ARRAY = 3,
	BPF_MAP_TYPE_ARRAY_OF_MAPS = 12,
	BPF_MAP_TYPE_RINGBUF = 27,
};

#define BPF_F_NO_PREALLOC 1

#endif
