"""`SelftestCase`: one program of a test_loader-format selftest file, with what it expects.

Owns: the case record. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from checks.errors import CheckError
from jit.program import Program


@dataclass(frozen=True)
class SelftestCase:
    """A test (or an `__auxiliary` program loaded alongside tests) and its expectations.

    Unprivileged fields follow test_loader: `expect_unpriv` is None when the test has no
    unprivileged run, and an unprivileged run inherits the privileged result, retval and
    messages when it declares none of its own (already applied here)."""
    id: str                         # "<file name>::<function name>"
    file: str                       # path of the C file
    name: str                       # function (program) name
    line: int                       # line of the function's name
    description: str                # __description, else the function name
    sec: str                        # SEC("...") as written, "?" included
    prog_type: str | None           # "socket_filter", "sched_cls", "xdp", ...; None if SEC unknown
    expect: str                     # "success" | "failure" (privileged run)
    expect_unpriv: str | None       # "success" | "failure", or None: no unprivileged run
    retval: int | None              # expected r0 as a 32-bit int; None: not run, or POINTER_VALUE
    retval_unpriv: int | None
    msgs: tuple[str, ...] = ()      # __msg, in order ({{regex}} kept as written)
    msgs_unpriv: tuple[str, ...] = ()
    xlated: tuple[str, ...] = ()
    xlated_unpriv: tuple[str, ...] = ()
    jited: tuple[str, ...] = ()     # only the lines after an __arch_x86_64
    jited_unpriv: tuple[str, ...] = ()
    flags: tuple[str, ...] = ()     # __flag values as written ("BPF_F_ANY_ALIGNMENT", "!1", ...)
    log_level: int = 0
    arch: tuple[str, ...] = ()      # __arch_*: "X86_64", "ARM64", "RISCV64"; () = any
    auxiliary: bool = False
    auxiliary_unpriv: bool = False
    btf_path: str | None = None
    runs_priv: bool = True          # test_loader's mode mask
    runs_unpriv: bool = False
    executes: bool = False          # __retval given: BPF_PROG_TEST_RUN after loading
    executes_unpriv: bool = False
    naked: bool = False             # a __naked function whose body is one asm statement
    unknown_annotations: tuple[str, ...] = ()   # "unknown: NAME" for each annotation not understood
    program: Program | None = None
    skip_reason: str | None = None  # why `program` is None although the test is well formed
    # The refusal when this test's source is malformed; the rest of its file still imports.
    error: CheckError | None = field(default=None, compare=False)
