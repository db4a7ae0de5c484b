"""The emulated kernel's maps and helpers, through programs run on a `Kernel` (KASAN inline)."""
from __future__ import annotations

import struct
from dataclasses import replace

import pytest

from _kernel_fixtures import MISS, program, run, value_of
from checks import kernel as kernel_module
from checks.kernel import Kernel
from checks.maps import ARRAY_STRICTER, HashMap
from jit.errors import BpfKasanError
from jit.program import MapDef

ARR = MapDef("arr", "array", 4, 8, 4, initial=((2, b"\x2a"),))
HASH = MapDef("h", "hash", 8, 8, 2)
LRU = MapDef("lru", "lru_hash", 8, 8, 2)
RB = MapDef("rb", "ringbuf", 0, 0, 4096)
ODD = MapDef("odd", "array", 4, 5, 1)


@pytest.fixture(scope="module")
def kernel() -> Kernel:
    return Kernel(kasan="inline")


def lookup(map_name: str, key: int, key_size: int = 4, then: str = "r0 = *(u64 *)(r0 + 0)") -> str:
    store = f"*(u{8 * key_size} *)(r10 - 8) = r1" if key_size in (4, 8) else ""
    return f"""
        r1 = {key}
        {store}
        r2 = r10
        r2 += -8
        r1 = {map_name} ll
        call 1
        if r0 == 0 goto null
        {then}
        exit
    null:
        r0 = 0xdead
        exit
    """


def test_array_lookup_in_range_sees_initial_contents_and_past_the_end_is_null(kernel):
    assert run(kernel, program(lookup("arr", 2), (ARR,))).r0 == 0x2A
    assert run(kernel, program(lookup("arr", 1), (ARR,))).r0 == 0
    assert run(kernel, program(lookup("arr", 4), (ARR,))).r0 == 0xDEAD
    assert run(kernel, program(lookup("arr", 1), (ARR,)), map_fill=0x7F).r0 == 0x7F7F7F7F7F7F7F7F


def test_hash_starts_empty_prefill_inserts_the_keys_looked_up_last_run(kernel):
    prog = program(lookup("h", 77, 8), (HASH,))
    assert run(kernel, prog).r0 == 0xDEAD
    assert kernel.lookups == [(0, (77).to_bytes(8, "little"))]
    assert run(kernel, prog, prefill=True, map_fill=0xFF).r0 == (1 << 64) - 1
    kernel.begin(prog)
    assert kernel.maps[0].update(77, (5).to_bytes(8, "little")) == 0
    assert kernel.execute(prog).r0 == 5 and kernel.maps[0].lookup(77) == (5).to_bytes(8, "little")


UPDATE = """
        r1 = 1
        *(u64 *)(r10 - 8) = r1
        *(u64 *)(r10 - 16) = r1
        r1 = h ll
        r2 = r10
        r2 += -8
        r3 = r10
        r3 += -16
        r4 = {flags}
        call 2
        exit
"""
DELETE = "r1 = 1\n*(u64 *)(r10 - 8) = r1\nr1 = h ll\nr2 = r10\nr2 += -8\ncall 3\nexit"


@pytest.mark.parametrize("text,present,expected", [
    (UPDATE.format(flags=1), (), 0),                 # BPF_NOEXIST on a new key
    (UPDATE.format(flags=1), (1,), -17),             # BPF_NOEXIST on a present key: -EEXIST
    (UPDATE.format(flags=2), (), -2),                # BPF_EXIST on a missing key: -ENOENT
    (UPDATE.format(flags=0), (2, 3), -7),            # full: -E2BIG
    (DELETE, (1,), 0),
    (DELETE, (), -2),
])
def test_map_update_and_delete_helpers_follow_the_kernel_flags(kernel, text, present, expected):
    prog = program(text, (HASH,))
    kernel.begin(prog)
    for key in present:
        kernel.maps[0].update(key, bytes(8))
    r = kernel.execute(prog)
    assert r.error is None and r.r0 == expected & 0xFFFFFFFFFFFFFFFF
    assert kernel.lookups == [(0, (1).to_bytes(8, "little"))]


def test_lru_hash_evicts_the_least_recently_used_key(kernel):
    kernel.begin(program("r0 = 0\nexit", (LRU,)))
    lru = kernel.maps[0]
    for key in (1, 2):
        assert lru.update(key, bytes(8)) == 0
    assert lru.lookup(1) is not None                  # 1 is now the most recent
    assert lru.update(3, bytes(8)) == 0
    assert lru.lookup(2) is None and lru.lookup(1) is not None and lru.lookup(3) is not None
    plain = HashMap(kernel, 0, HASH)
    assert plain.update(1, bytes(8)) == plain.update(2, bytes(8)) == 0
    assert plain.update(3, bytes(8)) == -7            # -E2BIG: a full hash map refuses


def test_one_byte_overrun_of_an_array_value_is_reported_as_stricter(kernel):
    body = value_of("odd") + "r0 = *(u8 *)(r6 + 5)\nexit\n" + MISS
    [f] = run(kernel, program(body, (ODD,))).findings
    assert f.bug_type == "slab-out-of-bounds" and f.mode == "faithful" and f.stricter == ARRAY_STRICTER
    assert f"bpf-kasan: stricter than the kernel: {ARRAY_STRICTER}" in f.report
    assert run(kernel, program(value_of("odd") + "r0 = *(u8 *)(r6 + 4)\nexit\n" + MISS,
                               (ODD,))).findings == []


def test_prandom_ktime_and_overrides_are_deterministic(kernel):
    body = """
        call 7
        r6 = r0
        call 5
        r7 = r0
        call 5
        r0 -= r7
        r0 <<= 32
        r0 |= r6
        exit
    """
    prog = program(body, ())
    first, again = run(kernel, prog, seed=1).r0, run(kernel, prog, seed=1).r0
    assert first == again and first >> 32 == 1000 and run(kernel, prog, seed=2).r0 != first
    forced = run(kernel, prog, helper_values={"get_prandom_u32": [0x7FFFFFFF]}).r0
    assert forced & 0xFFFFFFFF == 0x7FFFFFFF


def test_probe_read_of_a_bad_address_is_efault_and_zeroes_without_a_report(kernel):
    body = """
        r1 = -1
        *(u64 *)(r10 - 8) = r1
        r1 = r10
        r1 += -8
        r2 = 8
        r3 = {src}
        call 113
        r1 = *(u64 *)(r10 - 8)
        r0 <<= 32
        r0 |= r1
        exit
    """
    bad = run(kernel, program(body.format(src="0x1000"), ()))
    assert bad.r0 == ((-14) & 0xFFFFFFFF) << 32 and bad.findings == []
    good = run(kernel, program(body.format(src="r10\nr3 += -8"), ()))
    assert good.r0 == (1 << 64) - 1 and good.findings == []        # 0, then the bytes read


def test_trace_printk_formats_and_returns_the_length(kernel):
    text = b"n=%d x=%x\0"
    stores = "".join(f"*(u8 *)(r10 - {16 - i}) = {b}\n" for i, b in enumerate(text))
    body = stores + """
        r1 = r10
        r1 += -16
        r2 = 10
        r3 = -5
        r4 = 255
        call 6
        exit
    """
    r = run(kernel, program(body, ()))
    assert kernel.trace_output == ["n=-5 x=ff"] and r.r0 == len("n=-5 x=ff")


def test_ringbuf_reserve_submit_output_and_query(kernel):
    body = """
        r1 = rb ll
        r2 = 16
        r3 = 0
        call 131
        if r0 == 0 goto fail
        r1 = 0x1234
        *(u64 *)(r0 + 0) = r1
        r1 = r0
        r2 = 0
        call 132
        *(u64 *)(r10 - 8) = r0
        r1 = rb ll
        r2 = r10
        r2 += -8
        r3 = 8
        r4 = 0
        call 130
        r1 = rb ll
        r2 = 0
        call 134
        exit
    fail:
        r0 = -1
        exit
    """
    r = run(kernel, program(body, (RB,)))
    assert r.r0 == 24 + 16 and r.findings == []               # two records with 8-byte headers
    assert kernel.maps[0].submitted() == [struct.pack("<QQ", 0x1234, 0), bytes(8)]
    overrun = run(kernel, program(body.replace("*(u64 *)(r0 + 0) = r1", "*(u64 *)(r0 + 16) = r1"),
                                  (RB,)))
    assert [(f.bug_type, f.object) for f in overrun.findings] == [("slab-out-of-bounds",
                                                                   "ringbuf record")]


def test_tail_call_through_a_prog_array_filled_by_function_name(kernel):
    jumps = MapDef("jumps", "prog_array", 4, 4, 2, values=((1, "target"),))
    body = """
        r6 = r1
        r1 = r6
        r2 = jumps ll
        r3 = {index}
        call 12
        r0 = 1
        exit
    target:
        r0 = 42
        exit
    """
    def prog(index):
        p = program(body.format(index=index), (jumps,))
        return replace(p, funcs=((0, "main"), (8, "target")))
    assert run(kernel, prog(1)).r0 == 42
    assert run(kernel, prog(0)).r0 == 1                       # empty slot: falls through
    assert run(kernel, prog(5)).r0 == 1                       # past max_entries


def test_unprivileged_tail_call_guard_compares_the_whole_64_bit_index(kernel):
    """Privileged: the JIT compares the index as a u32, so r3 = 2**32 is index 0 and tail-calls.
    Unprivileged: the verifier's inserted `if r3 >= max_entries goto out` (64-bit) skips it."""
    jumps = MapDef("jumps", "prog_array", 4, 4, 1, values=((0, "target"),))
    body = """
        r2 = jumps ll
        r3 = {index} ll
        call 12
        r0 = 2
        exit
    target:
        r0 = 42
        exit
    """
    def prog(index):
        return replace(program(body.format(index=index), (jumps,)), funcs=((0, "main"), (7, "target")))
    assert run(kernel, prog(1 << 32)).r0 == 42                # u32 index 0: tail call
    assert run(kernel, prog(1 << 32), unpriv=True).r0 == 2    # guard: 2**32 >= max_entries
    assert run(kernel, prog(0), unpriv=True).r0 == 42         # in range: the guard lets it through
    assert run(kernel, prog(1), unpriv=True).r0 == 2          # index == max_entries
    assert run(kernel, prog(1 << 32)).r0 == 42                # the privileged image is kept apart


def test_a_linked_tail_call_target_keeps_counting_to_the_limit(kernel):
    jumps = MapDef("jumps", "prog_array", 4, 4, 1, values=((0, "again"),))
    calls = MapDef("calls", "array", 4, 8, 1)
    body = """
        r2 = jumps ll
        r3 = 0
        call 12
        r0 = 1
        exit
    again:
        r6 = map_value(1) ll
        r1 = 1
        lock *(u64 *)(r6 + 0) += r1
        r2 = jumps ll
        r3 = 0
        call 12
        r0 = *(u64 *)(r6 + 0)
        exit
    """
    prog = replace(program(body, (jumps, calls)), funcs=((0, "main"), (6, "again")))
    assert run(kernel, prog).r0 == 33                    # MAX_TAIL_CALL_CNT calls, then on


def with_callback(helper: int, r1: str, callback: str) -> str:
    """Call `helper`(r1, cb, ctx = a zeroed u64 on the stack, 0); r0 = result << 32 | *ctx."""
    return f"""
        r1 = 0
        *(u64 *)(r10 - 8) = r1
        r1 = {r1}
        r2 = cb ll
        r3 = r10
        r3 += -8
        r4 = 0
        call {helper}
        r1 = *(u64 *)(r10 - 8)
        r0 <<= 32
        r0 |= r1
        exit
    cb:
    """ + callback


def test_bpf_loop_calls_the_callback_until_it_returns_one(kernel):
    adds_index_stops_at_5 = """
        r3 = *(u64 *)(r2 + 0)
        r3 += r1
        *(u64 *)(r2 + 0) = r3
        r0 = 0
        if r1 != 5 goto +1
        r0 = 1
        exit
    """

    def loop(n: int) -> int:
        return run(kernel, program(with_callback(181, str(n), adds_index_stops_at_5), ())).r0
    assert loop(4) == (4 << 32) | (0 + 1 + 2 + 3)
    assert loop(100) == (6 << 32) | 15                    # i = 5 returned 1: six calls
    assert loop(1 << 24) >> 32 == (-7) & 0xFFFFFFFF       # -E2BIG past BPF_MAX_LOOPS


def test_for_each_map_elem_visits_every_array_element(kernel):
    arr = MapDef("arr", "array", 4, 8, 3, initial=((0, b"\x01"), (1, b"\x02"), (2, b"\x04")))
    sums_values = """
        r1 = *(u64 *)(r4 + 0)
        r2 = *(u64 *)(r3 + 0)
        r1 += r2
        *(u64 *)(r4 + 0) = r1
        r0 = 0
        exit
    """
    r = run(kernel, program(with_callback(164, "arr ll", sums_values), (arr,)))
    assert r.error is None and r.r0 == (3 << 32) | 7


def test_unknown_helper_is_a_per_test_error_naming_it(kernel):
    r = run(kernel, program("r1 = 0\ncall 86\nexit", ()))
    assert r.error == "unknown helper sk_release (#86) at insn 1"
    assert run(kernel, program("call 999\nexit", ())).error == "unknown helper #999 at insn 0"


def test_spin_lock_must_be_in_a_map_value(kernel):
    on_map = value_of("arr") + "r1 = r6\ncall 93\nr1 = r6\ncall 94\n" + MISS
    assert run(kernel, program(on_map, (ARR,))).error is None
    on_stack = run(kernel, program("r1 = r10\nr1 += -8\ncall 93\nexit", ()))
    assert on_stack.error.startswith("bpf_spin_lock/unlock:") and "not inside a map value" in on_stack.error


def test_skb_load_bytes_reads_the_packet_behind_the_context(kernel, monkeypatch):
    body = """
        r1 = r6
        r2 = {off}
        r3 = r10
        r3 += -8
        r4 = 4
        call 26
        r1 = *(u32 *)(r10 - 8)
        r0 <<= 32
        r0 |= r1
        exit
    """.replace("r1 = r6", "r6 = r1\nr1 = r6", 1)
    prog = program(body.format(off=2), ())
    kernel.begin(prog)
    packet = kernel.kmalloc(8, "packet")
    kernel.write(packet, bytes(range(1, 9)))
    monkeypatch.setattr(kernel_module, "ctx_packet", lambda k, ctx: (packet, 8))
    assert kernel.execute(prog, args=(0x1234,)).r0 == 0x06050403
    far = program(body.format(off=6), ())
    kernel.begin(far)
    assert kernel.execute(far).r0 == ((-14) & 0xFFFFFFFF) << 32


def test_csum_diff_pid_comm_and_callx_by_helper_id(kernel):
    csum = """
        r1 = 0x01020304
        *(u32 *)(r10 - 4) = r1
        r1 = 0
        r2 = 0
        r3 = r10
        r3 += -4
        r4 = 4
        r5 = 0
        call 28
        exit
    """
    assert run(kernel, program(csum, ())).r0 == 0x01020304
    assert run(kernel, program("call 14\nexit", ())).r0 == (1234 << 32) | 1234
    comm = "r1 = r10\nr1 += -16\nr2 = 16\ncall 16\nr0 = *(u64 *)(r10 - 16)\nexit"
    assert run(kernel, program(comm, ())).r0 == int.from_bytes(b"test_pro", "little")
    assert run(kernel, program("r1 = 14\ncallx r1\nexit", ())).r0 == (1234 << 32) | 1234
    assert "NULL pointer dereference" in run(kernel, program("r1 = 99999\ncallx r1\nexit", ())).fault


def test_ld_abs_goes_through_the_registered_loader():
    kernel = Kernel(kasan="off")
    prog = program("r6 = r1\nr0 = *(u16 *)skb[3]\nexit", ())
    assert "needs a packet context" in run(kernel, prog).error
    kernel.register_helper(-2, lambda k, skb, off, *_: 0xAB00 + off)
    assert run(kernel, prog).r0 == 0xAB03


def test_array_of_maps_slots_start_empty_and_lookup_returns_the_inner_map(kernel):
    inner = MapDef("inner", "array", 4, 8, 1, initial=((0, b"\x07"),))
    outer = MapDef("outer", "array_of_maps", 4, 4, 2, values=((0, "inner"),), inner=inner)
    body = lookup("outer", "{key}", then="""
        r1 = r0
        r2 = r10
        r2 += -8
        r3 = 0
        *(u32 *)(r10 - 8) = r3
        call 1
        if r0 == 0 goto null
        r0 = *(u64 *)(r0 + 0)""")
    maps = (outer, inner)
    assert run(kernel, program(body.format(key=0), maps)).r0 == 7       # .values = { [0] = &inner }
    assert run(kernel, program(body.format(key=1), maps)).r0 == 0xDEAD  # an empty slot
    prog = program(body.format(key=1), maps)
    kernel.begin(prog)
    assert kernel.maps[0].update(1) == 0 and kernel.execute(prog).r0 == 7       # a fresh inner map


def test_maps_of_kinds_that_need_sockets_exist_but_stay_empty(kernel):
    xsk = MapDef("xsk", "xskmap", 4, 4, 4)
    assert run(kernel, program(lookup("xsk", 0), (xsk,))).r0 == 0xDEAD
    with pytest.raises(BpfKasanError, match="unknown map type 'hsah'"):
        kernel.begin(program("r0 = 0\nexit", (MapDef("typo", "hsah", 4, 4, 1),)))


def test_native_helpers_disassemble_whole_and_return():
    """The hand-encoded loops are valid x86 from the first byte to the last `ret`."""
    import capstone
    from checks.native_helpers import bpf_loop_code, for_each_code
    md = capstone.Cs(capstone.CS_ARCH_X86, capstone.CS_MODE_64)
    for code in (bpf_loop_code(0xFFFFFFFF82000040, 0xFFFFFFFF81000100),
                 for_each_code(0xFFFFFFFF82000040, 0xFFFFFFFF81000100, 0xFFFFFFFF81001000)):
        listing = list(md.disasm(code, 0xFFFFFFFF81010000))
        assert sum(i.size for i in listing) == len(code)
        assert [i.mnemonic for i in listing].count("call") == (1 if code[:3] == b"\x48\x85\xc9" else 2)
        assert listing[-1].mnemonic == "ret"


def test_jit_engine_takes_kasan_settings_from_the_command_line():
    from checks.runner import EngineOptions, make_engine
    engine = make_engine("jit", EngineOptions(kasan="outline", multishot=False))
    assert engine.kasan == "outline" and engine.kernel.gate.multishot is False
    assert make_engine("jit").kasan == "inline"


def test_sk_storage_is_created_on_request_once_per_socket(kernel):
    storage = MapDef("st", "sk_storage", 4, 8, 0)
    get = "r1 = st ll\nr2 = {sk}\nr3 = 0\nr4 = {flags}\ncall 107\n"
    body = get.format(sk=0x100, flags=0) + "r6 = r0\n" + get.format(sk=0x100, flags=1) + \
        "r7 = r0\n" + get.format(sk=0x100, flags=0) + "r0 -= r7\nr0 |= r6\nexit"
    assert run(kernel, program(body, (storage,))).r0 == 0      # NULL, then the same value twice
    assert list(kernel.maps[0].values) == [0x100]
    created = run(kernel, program(get.format(sk=0x200, flags=1) + "exit", (storage,))).r0
    assert created == kernel.maps[0].values[0x200] and kernel.find_object(created).size == 8
