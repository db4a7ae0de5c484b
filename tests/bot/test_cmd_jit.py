"""`bpf-kasan jit` on a verifier-style selftest: the listing of one test's program, checks included."""
from __future__ import annotations

from _git_fixtures import EXAMPLE_TEST, EXAMPLE_TREE
from bot.cli import main


def test_a_selftest_program_is_listed_with_its_kasan_checks(capsys):
    path = str(EXAMPLE_TREE / EXAMPLE_TEST)
    assert main(["jit", path, "--test", "example_map_value_read"]) == 0
    listing = capsys.readouterr().out
    assert listing.splitlines()[0].endswith("_example_map_value_read:")
    assert "; r0 = *(u64 *)(r0 + 0x0)" in listing and "cmp byte ptr [r11 + r10], 0" in listing
    assert main(["jit", path, "--test", "example_map_value_read", "--no-kasan"]) == 0
    assert "r11 + r10" not in capsys.readouterr().out
