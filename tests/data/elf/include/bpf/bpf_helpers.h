/* SPDX-License-Identifier: MIT */
/* Our own stand-in for libbpf's helper header: the map-definition encodings and the few
 * helpers our test objects call, declared as pointers whose value is the helper id. */
#ifndef TEST_ELF_BPF_HELPERS_H
#define TEST_ELF_BPF_HELPERS_H

#define SEC(name) __attribute__((section(name), used))

/* Map attributes live in member types: a pointer to an array of N elements carries N. */
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name
#define __array(name, val) typeof(val) *name[]

static void *(* const bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static __u64 (* const bpf_ktime_get_ns)(void) = (void *)5;
static __u32 (* const bpf_get_prandom_u32)(void) = (void *)7;
static long (* const bpf_tail_call)(void *ctx, void *map, __u32 index) = (void *)12;
static long (* const bpf_loop)(__u32 n, void *fn, void *ctx, __u64 flags) = (void *)181;

#endif
