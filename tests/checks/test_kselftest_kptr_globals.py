"""The importer reads globals declared with libbpf's attribute-only macros (`__hidden`, the kptr
type tags), as kptr_xchg_inline.c declares its `ptr`."""
from __future__ import annotations

from checks.kselftest import load_cases

SOURCE = r'''
#include <bpf/bpf_helpers.h>
#include "bpf_misc.h"

struct bin_data { char blob[32]; };

SEC(".bss.kptr") __hidden __attribute__((aligned(8))) struct bin_data __kptr * ptr;

SEC("tc")
__success __retval(0)
__naked int load_the_global(void)
{
	asm volatile ("r1 = %[ptr] ll; r0 = 0; exit;" : : __imm_addr(ptr) : __clobber_all);
}
'''


def test_a_kptr_global_imports_as_a_value_of_its_section_map(tmp_path):
    path = tmp_path / "kptr_global.c"
    path.write_text(SOURCE)
    (case,) = load_cases(path)
    assert case.error is None and case.skip_reason is None
    assert [m.name for m in case.program.maps] == [".bss.kptr"]
    assert case.program.maps[0].value_size == 8


def test_the_kernel_kptr_xchg_inline_test_is_skipped_for_its_kfunc(kernel_selftests):
    (case,) = load_cases(kernel_selftests / "progs" / "kptr_xchg_inline.c")
    assert case.error is None
    assert case.skip_reason == "calls kfunc bpf_obj_drop_impl: needs kernel BTF"
