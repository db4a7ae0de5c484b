"""checks.test_run around a run: the pre-execution map fill keyed by the file's stem (so objects
get it too), and oops symbols tagged over the program as loaded, not as ctx-converted."""
from __future__ import annotations

import pytest
from _kernel_fixtures import program, value_of

from checks import test_run
from checks.kernel import tags_as_loaded
from jit.program import MapDef
from jit.tag import func_tags

MAP_ARRAY_RO = MapDef("map_array_ro", "array", 4, 48, 1)
FOO_6 = """
        r0 = *(u32 *)(r6 + 28)
        exit
    miss:
        r0 = 1
        exit
"""
# A socket filter that reads __sk_buff.data (offset 76, a load ctx conversion rewrites), then
# dereferences NULL.
CONVERTED_THEN_OOPS = """
        r2 = *(u32 *)(r1 + 76)
        r1 = 0
        r0 = *(u64 *)(r1 + 0)
        exit
"""


@pytest.fixture(scope="module")
def kernel():
    return test_run.new_kernel()


@pytest.mark.parametrize("file, filled", [
    ("progs/verifier_array_access.c", True),
    ("verifier_array_access.o", True),
    ("/objs/verifier_array_access.bpf.o", True),
    ("verifier_array_access_more.c", False),
    ("other.o", False),
])
def test_pre_execution_fill_is_keyed_by_the_file_stem(kernel, file, filled):
    prog = program(value_of("map_array_ro") + FOO_6, maps=(MAP_ARRAY_RO,))
    done = test_run.run(kernel, prog, file=file)
    assert done.retval == (-0x543210EE if filled else 0)           # foo[6] = 0xabcdef12


def test_an_oops_names_the_tag_of_the_program_as_loaded(kernel):
    loaded = program(CONVERTED_THEN_OOPS, maps=())
    prepared = test_run.prepare(loaded)
    assert func_tags(prepared) != func_tags(loaded)                 # conversion changed a slot
    fault = test_run.run(kernel, prepared, loaded_as=loaded).run.fault
    assert f"bpf_prog_{func_tags(loaded)[0]}_prog+" in fault
    fault = test_run.run(kernel, prepared).run.fault                 # without it: its own slots
    assert f"bpf_prog_{func_tags(prepared)[0]}_prog+" in fault


def test_functions_missing_from_the_loaded_program_keep_their_own_tags():
    main = program("r0 = 0\nexit", maps=())
    two = program("call f\nexit\nf:\nr0 = 1\nexit", maps=())
    assert tags_as_loaded(two, main) == (func_tags(main)[0], func_tags(two)[1])
    assert tags_as_loaded(two, None) == func_tags(two)
