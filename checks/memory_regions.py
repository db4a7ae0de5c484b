"""Named memory regions for the reference interpreter: the only memory a program may touch.

Every byte a program can reach lives in a `Region` (a stack frame, the input buffer, and later map
values, ctx objects, packets). An access must lie wholly inside one region; anything else is a
`MemoryFault` that names the access and lists every region, so the reader sees what was near.

Owns: region bookkeeping and little-endian loads/stores. Must not import unicorn or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from checks import layout

MASK64 = 0xFFFFFFFFFFFFFFFF

# Where the interpreter puts things. The same kernel address ranges as the emulated machine, so a
# pointer a program returns looks alike in both engines (the values need not be equal).
INPUT_BASE = layout.DIRECT_MAP + 0x10000
STACK_SIZE = 512                           # MAX_BPF_STACK: every frame gets exactly this much
STACK_TOP = layout.VMALLOC + 0x100000
FRAME_STRIDE = 0x2000                      # unmapped gap between frames: one frame can't reach another


@dataclass
class Region:
    """A contiguous run of bytes at `base`. `data` is mutated in place by stores."""
    name: str
    base: int
    data: bytearray
    writable: bool = True

    @property
    def end(self) -> int:
        return self.base + len(self.data)

    def holds(self, addr: int, size: int) -> bool:
        return self.base <= addr and addr + size <= self.end

    def describe(self) -> str:
        return f"{self.name} [{self.base:#x}, {self.end:#x})"


class MemoryFault(Exception):
    """An access outside every region, or a store to a read-only one. Caught by the interpreter,
    which turns it into the run's error; it never escapes `checks.interp.run`."""

    def __init__(self, kind: str, addr: int, size: int, why: str):
        super().__init__(f"invalid {kind} of size {size} at {addr:#x}: {why}")
        self.kind, self.addr, self.size, self.why = kind, addr, size, why


def frame_top(depth: int) -> int:
    """r10 of the frame at call depth `depth` (0 = the main program)."""
    return STACK_TOP - depth * FRAME_STRIDE


class Memory:
    """The set of regions of one run, looked up by address."""

    def __init__(self, regions=()):
        self.regions: list[Region] = []
        self._last: Region | None = None       # most accesses hit the region the previous one did
        for region in regions:
            self.add(region)

    def add(self, region: Region) -> Region:
        for other in self.regions:
            if region.base < other.end and other.base < region.end:
                raise ValueError(f"region {region.describe()} overlaps {other.describe()}")
        self.regions.append(region)
        return region

    def remove(self, region: Region) -> None:
        self.regions.remove(region)
        if self._last is region:
            self._last = None

    def named(self, name: str) -> Region | None:
        return next((r for r in self.regions if r.name == name), None)

    def region_for(self, addr: int, size: int, kind: str = "read") -> Region:
        last = self._last
        if last is not None and last.holds(addr, size):
            return last
        for region in self.regions:
            if region.holds(addr, size):
                self._last = region
                return region
        raise MemoryFault(kind, addr, size, "not in any region (" + self.describe() + ")")

    def describe(self) -> str:
        return ", ".join(r.describe() for r in self.regions) or "no regions"

    def read(self, addr: int, size: int) -> bytes:
        region = self.region_for(addr, size, "read")
        start = addr - region.base
        return bytes(region.data[start:start + size])

    def write(self, addr: int, data: bytes) -> None:
        region = self.region_for(addr, len(data), "write")
        if not region.writable:
            raise MemoryFault("write", addr, len(data), f"{region.describe()} is read-only")
        start = addr - region.base
        region.data[start:start + len(data)] = data

    def load(self, addr: int, size: int, signed: bool = False) -> int:
        """A little-endian integer; signed loads come back as u64 two's complement."""
        value = int.from_bytes(self.read(addr, size), "little", signed=signed)
        return value & MASK64

    def store(self, addr: int, size: int, value: int) -> None:
        self.write(addr, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))

    def read_cstring(self, addr: int, limit: int = 4096) -> bytes:
        """Bytes up to (not including) a NUL, for helpers such as strcmp."""
        out = bytearray()
        while len(out) < limit:
            byte = self.read(addr + len(out), 1)
            if byte == b"\0":
                return bytes(out)
            out += byte
        raise MemoryFault("read", addr, limit, f"no NUL within {limit} bytes")
