"""The emulated kernel's address map: where each kind of memory lives.

Mirrors x86-64 Linux with 4-level paging, so reports show familiar addresses. Every data
region gets shadow memory at `shadow(addr) = (addr >> 3) + KASAN_SHADOW_OFFSET`; code does not.
"""
from jit.image import KASAN_SHADOW_OFFSET

PAGE = 0x1000

KERNEL_TEXT = 0xFFFFFFFF81000000     # helper, kfunc and __asan_* stubs (native x86 code)
KERNEL_TEXT_SIZE = 0x100000
KERNEL_DATA = 0xFFFFFFFF82000000     # report records and other machine bookkeeping
KERNEL_DATA_SIZE = 0x100000
MODULES = 0xFFFFFFFFA0000000         # JIT images (bpf_jit_binary_alloc uses the module area)
MODULES_SIZE = 0x1000000
DIRECT_MAP = 0xFFFF888000000000      # slab objects: maps, ctx, packets, kmalloc
DIRECT_MAP_SIZE = 0x4000000
VMALLOC = 0xFFFFC90000000000         # task stacks (VMAP_STACK: guard pages around each)
VMALLOC_SIZE = 0x400000

KASAN_SHADOW_START = 0xFFFFEC0000000000   # the shadow region itself starts here
KASAN_METADATA_START = 0xFFFF800000000000 # memory for shadow(START); below it an access is wild
TASK_SIZE = 0x00007FFFFFFFF000            # user space ends here (user-memory-access below it)


def shadow(addr: int) -> int:
    return (((addr & 0xFFFFFFFFFFFFFFFF) >> 3) + KASAN_SHADOW_OFFSET) & 0xFFFFFFFFFFFFFFFF
