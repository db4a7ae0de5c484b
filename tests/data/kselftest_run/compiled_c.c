// Tests with plain C bodies, written for bpf-kasan-ci (MIT licence), in the kernel's test_loader
// format: the C importer skips them ("needs a compiler") and the compiled route builds them with
// clang and runs them from the object. One naked test still comes from the source. The headers
// are our own stand-ins, shared with the ELF loader's tests.

#include "../elf/include/linux/bpf.h"
#include "../elf/include/bpf/bpf_helpers.h"
#include "../elf/include/bpf_misc.h"

char _license[] SEC("license") = "GPL";

struct bpf_iter_num {
	__u64 opaque[1];
} __attribute__((aligned(8)));

struct bpf_iter_bits {
	__u64 opaque[2];
} __attribute__((aligned(8)));

extern int bpf_iter_num_new(struct bpf_iter_num *it, int start, int end) __attribute__((section(".ksyms")));
extern int *bpf_iter_num_next(struct bpf_iter_num *it) __attribute__((section(".ksyms")));
extern void bpf_iter_num_destroy(struct bpf_iter_num *it) __attribute__((section(".ksyms")));
extern int bpf_iter_bits_new(struct bpf_iter_bits *it, const __u64 *words, __u32 nr_words) __attribute__((section(".ksyms")));
extern int *bpf_iter_bits_next(struct bpf_iter_bits *it) __attribute__((section(".ksyms")));
extern void bpf_iter_bits_destroy(struct bpf_iter_bits *it) __attribute__((section(".ksyms")));
extern void bpf_rcu_read_lock(void) __attribute__((section(".ksyms")));

struct inner_map {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, int);
	__type(value, long long);
} inner SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY_OF_MAPS);
	__uint(max_entries, 2);
	__type(key, int);
	__array(values, struct inner_map);
} outer SEC(".maps") = {
	.values = { [1] = &inner },
};

struct flags {
	unsigned int low : 3;
	unsigned int mid : 9;
	unsigned int high : 20;
};

SEC("socket")
__description("C loop: 1 + 2 + ... + n")
__success __retval(55)
int c_sum_loop(void *ctx)
{
	volatile int n = 10;
	int i, sum = 0;

	for (i = 1; i <= n; i++)
		sum += i;
	return sum;
}

SEC("socket")
__description("C bitfields: each field written and read back")
__success __retval(433)
int c_bitfield_roundtrip(void *ctx)
{
	volatile struct flags f = {};

	f.low = 5;
	f.mid = 0x1ab;
	f.high = 0xfffff;
	return f.low + f.mid + (f.high == 0xfffff);
}

SEC("syscall")
__description("bpf_iter_num: 0 + 1 + ... + 9")
__success __retval(45)
int c_iter_num_sum(void *ctx)
{
	struct bpf_iter_num it;
	int *v, sum = 0;

	bpf_iter_num_new(&it, 0, 10);
	while ((v = bpf_iter_num_next(&it)))
		sum += *v;
	bpf_iter_num_destroy(&it);
	return sum;
}

SEC("syscall")
__description("bpf_iter_num: an inverted range is -EINVAL and yields nothing")
__success __retval(-22)
int c_iter_num_inverted(void *ctx)
{
	struct bpf_iter_num it;
	int err;

	err = bpf_iter_num_new(&it, 5, 3);
	if (bpf_iter_num_next(&it))
		err = 1;
	bpf_iter_num_destroy(&it);
	return err;
}

SEC("syscall")
__description("bpf_iter_num: more than BPF_MAX_LOOPS steps is -E2BIG")
__success __retval(-7)
int c_iter_num_too_long(void *ctx)
{
	struct bpf_iter_num it;
	int err;

	err = bpf_iter_num_new(&it, -1, 8 * 1024 * 1024);
	bpf_iter_num_destroy(&it);
	return err;
}

SEC("socket")
__description("array of maps: slot 0, not in .values, is NULL; slot 1 holds the inner map")
__success __retval(2)
int c_map_in_map_slots(void *ctx)
{
	int empty = 0, filled = 1;

	return (bpf_map_lookup_elem(&outer, &empty) == 0) + (bpf_map_lookup_elem(&outer, &filled) != 0);
}

SEC("syscall")
__description("bpf_iter_bits: one word, the indexes of its set bits")
__success __retval(1234)
int c_bits_one_word(void *ctx)
{
	__u64 word = (1ULL << 1) | (1ULL << 2) | (1ULL << 3) | (1ULL << 4);
	struct bpf_iter_bits it;
	int *bit, digits = 0;

	bpf_iter_bits_new(&it, &word, 1);
	while ((bit = bpf_iter_bits_next(&it)))
		digits = digits * 10 + *bit;
	bpf_iter_bits_destroy(&it);
	return digits;
}

SEC("syscall")
__description("bpf_iter_bits: three words, set bits across word ends")
__success __retval(318)
int c_bits_three_words(void *ctx)
{
	__u64 words[3] = {1, 1ULL << 63, 1ULL << 63};
	struct bpf_iter_bits it;
	int *bit, sum = 0;

	bpf_iter_bits_new(&it, words, 3);
	while ((bit = bpf_iter_bits_next(&it)))
		sum += *bit;
	bpf_iter_bits_destroy(&it);
	return sum;         /* 0 + 127 + 191 */
}

SEC("syscall")
__description("bpf_iter_bits: NULL is -EINVAL, 512 words -E2BIG, an unreadable address -EFAULT")
__success __retval(0)
int c_bits_errors(void *ctx)
{
	__u64 words[2] = {3, 3};
	struct bpf_iter_bits it;
	int err;

	err = bpf_iter_bits_new(&it, 0, 1);
	bpf_iter_bits_destroy(&it);
	if (err != -22)
		return 1;
	err = bpf_iter_bits_new(&it, words, 512);
	bpf_iter_bits_destroy(&it);
	if (err != -7)
		return 2;
	err = bpf_iter_bits_new(&it, (void *)-4095, 2);
	if (err != -14 || bpf_iter_bits_next(&it))
		return 3;
	bpf_iter_bits_destroy(&it);
	return 0;
}

SEC("syscall")
__description("a kfunc the emulated kernel does not serve: skipped with the object's reason")
__success
int c_unserved_kfunc(void *ctx)
{
	bpf_rcu_read_lock();
	return 0;
}

SEC("socket")
__description("a naked test still comes from the source")
__success __retval(7)
__naked void naked_from_source(void)
{
	asm volatile ("			\
	r0 = 7;				\
	exit;				\
"	::: __clobber_all);
}
