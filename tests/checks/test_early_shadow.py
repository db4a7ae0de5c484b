"""A KASAN check of a kernel address outside the emulated regions reads the early shadow page
(zero), as in the kernel, so the access itself faults at its own address."""
from __future__ import annotations

from checks import layout
from checks.kernel import Kernel
from checks.machine import ZERO_SHADOW_PAGES

from _kernel_fixtures import program, run

BEYOND_RAM = layout.DIRECT_MAP + (1 << 32)        # direct map past the emulated memory


def test_an_access_past_the_emulated_memory_faults_at_its_address_not_its_shadow():
    kernel = Kernel()
    prog = program("r0 = *(u64 *)(r1 + 0)\nexit\n", maps=(), name="far")
    for _ in range(2):                             # the second run finds the page already there
        r = run(kernel, prog, args=(BEYOND_RAM,))
        assert r.findings == [] and r.error is None
        assert r.fault.splitlines()[0] == \
            f"BUG: unable to handle page fault for address: {BEYOND_RAM:016x}"
    assert layout.shadow(BEYOND_RAM) & ~0xFFF in kernel.machine._zero_shadow
    assert len(kernel.machine._zero_shadow) < ZERO_SHADOW_PAGES
