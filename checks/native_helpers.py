"""Native x86 code of the helpers that call back into BPF (bpf_loop, bpf_for_each_map_elem), and
of the prog-array entries of tail-call targets linked into their caller's image.

A Python helper cannot call a BPF callback, because Unicorn is not re-entrant. So these two
helpers are x86 routines in kernel text that loop and `call` the callback (a JITed BPF function,
whose address the program passed in r2 via `ld_imm64 PSEUDO_FUNC`), as the kernel's C code does.
We chose native loops over the verifier's inline_bpf_loop rewrite because they also serve
bpf_for_each_map_elem and keep the program's instructions (and so its tag) untouched.

bpf_loop(nr_loops, callback, ctx, flags), kernel/bpf/bpf_iter.c facts: flags != 0 → -EINVAL;
nr_loops > BPF_MAX_LOOPS (1 << 23) → -E2BIG; callback(i, ctx) for i = 0..nr_loops-1, stopping
after the first non-zero return; the result is the number of calls made.

bpf_for_each_map_elem(map, callback, ctx, flags): first calls a Python helper (`prepare`, via
its ordinary stub) that returns the address of a table `{u64 count; {u64 key, value}[count]}`
of the map's elements (or a negative errno), then calls callback(map, key, value, ctx) per
element with the same stop rule; the result is the number of calls.

Every iteration subtracts one from the run's instruction budget (the callback's own loops and
calls charge themselves), so a huge nr_loops still ends at the budget.

The bytes come from jit/x86.py's encoder, each instruction with its assembly beside it.
Must not import unicorn or bot/.
"""
from __future__ import annotations

from jit.frame import BPF_MAX_LOOPS, MAX_TAIL_CALL_CNT, TAIL_CALL_OFFSET
from jit.x86 import (OP_CMP, OP_TEST, OP_XOR, Cond, Ext, Reg, emit_alu_ri, emit_call_reg, emit_jcc8,
                     emit_jcc32, emit_jmp32, emit_jmp_reg, emit_load, emit_mov_ri32, emit_mov_rr,
                     emit_movabs, emit_op_rr, emit_pop, emit_push, emit_ret, emit_shift_ri, emit_store,
                     emit_sub_abs_imm)

EINVAL, E2BIG = 22, 7
MAX_ERRNO = 4095
SAVED = (Reg.RBX, Reg.R12, Reg.R13, Reg.R14, Reg.R15)
COUNT, CALLBACK, CTX, TABLE, INDEX = Reg.RBX, Reg.R12, Reg.R13, Reg.R14, Reg.R15


class _Code:
    """Bytes with forward/backward rel32 jumps to named labels, resolved by `bytes()`."""

    def __init__(self, budget: int, budget_stop: int):
        self.out, self.labels, self.fixups = bytearray(), {}, []
        self.budget, self.budget_stop = budget, budget_stop

    def __call__(self, emit, *args) -> "_Code":
        emit(self.out, *args)
        return self

    def label(self, name: str) -> None:
        self.labels[name] = len(self.out)

    def jump(self, cond: Cond | None, name: str) -> None:
        if cond is None:
            emit_jmp32(self.out, 0)                   # jmp name
        else:
            emit_jcc32(self.out, cond, 0)             # j<cond> name
        self.fixups.append((len(self.out) - 4, name))

    def charge(self) -> None:
        """sub qword [budget], 1; js <budget stop> (via movabs: the stop is in kernel text)."""
        emit_sub_abs_imm(self.out, self.budget, 1)
        emit_jcc32(self.out, Cond.NS, 12)             # jns +12 (over movabs + jmp rax)
        emit_movabs(self.out, Reg.RAX, self.budget_stop)   # movabs rax, budget_stop
        self.out += b"\xff\xe0"                       # jmp rax

    def bytes(self) -> bytes:
        for at, name in self.fixups:
            rel = self.labels[name] - (at + 4)
            self.out[at:at + 4] = (rel & 0xFFFFFFFF).to_bytes(4, "little")
        return bytes(self.out)


def _prologue(c: _Code) -> None:
    for reg in SAVED:
        c(emit_push, reg)                             # push rbx, r12, r13, r14, r15


def _epilogue(c: _Code) -> None:
    for reg in reversed(SAVED):
        c(emit_pop, reg)                              # pop r15 ... rbx
    c(emit_ret)                                       # ret


def _loop(c: _Code, set_args) -> None:
    """for (i = 0; i < COUNT; ) { charge; args; r = callback(); i++; if (r) break; } rax = i"""
    c(emit_op_rr, OP_XOR, INDEX, INDEX, False)        # xor r15d, r15d      ; i = 0
    c.label("loop")
    c(emit_op_rr, OP_CMP, INDEX, COUNT, True)         # cmp r15, rbx
    c.jump(Cond.AE, "done")                           # jae done
    c.charge()
    set_args(c)
    c(emit_call_reg, CALLBACK)                        # call r12
    c(emit_alu_ri, Ext.ADD, INDEX, 1, True)           # add r15, 1
    c(emit_op_rr, OP_TEST, Reg.RAX, Reg.RAX, True)    # test rax, rax
    c.jump(Cond.E, "loop")                            # jz loop
    c.label("done")
    c(emit_mov_rr, Reg.RAX, INDEX, True)              # mov rax, r15


def _return_errno(c: _Code, name: str, errno: int) -> None:
    c.label(name)
    c(emit_mov_ri32, Reg.RAX, -errno, True)           # mov rax, -errno (sign-extended)
    c(emit_ret)                                       # ret


def bpf_loop_code(budget: int, budget_stop: int) -> bytes:
    c = _Code(budget, budget_stop)
    c(emit_op_rr, OP_TEST, Reg.RCX, Reg.RCX, True)    # test rcx, rcx       ; flags
    c.jump(Cond.NE, "einval")                         # jnz einval
    c(emit_mov_rr, Reg.RDI, Reg.RDI, False)           # mov edi, edi        ; nr_loops is a u32
    c(emit_alu_ri, Ext.CMP, Reg.RDI, BPF_MAX_LOOPS, True)   # cmp rdi, BPF_MAX_LOOPS
    c.jump(Cond.A, "e2big")                           # ja e2big
    _prologue(c)
    c(emit_mov_rr, COUNT, Reg.RDI, True)              # mov rbx, rdi
    c(emit_mov_rr, CALLBACK, Reg.RSI, True)           # mov r12, rsi
    c(emit_mov_rr, CTX, Reg.RDX, True)                # mov r13, rdx

    def args(c: _Code) -> None:
        c(emit_mov_rr, Reg.RDI, INDEX, True)          # mov rdi, r15        ; i
        c(emit_mov_rr, Reg.RSI, CTX, True)            # mov rsi, r13        ; ctx
    _loop(c, args)
    _epilogue(c)
    _return_errno(c, "einval", EINVAL)
    _return_errno(c, "e2big", E2BIG)
    return c.bytes()


def for_each_code(budget: int, budget_stop: int, prepare: int) -> bytes:
    """`prepare`: the stub of the Python helper that builds the element table."""
    c = _Code(budget, budget_stop)
    _prologue(c)
    c(emit_push, Reg.RDI)                             # push rdi            ; map
    c(emit_mov_rr, CALLBACK, Reg.RSI, True)           # mov r12, rsi
    c(emit_mov_rr, CTX, Reg.RDX, True)                # mov r13, rdx
    c(emit_movabs, Reg.RAX, prepare)                  # movabs rax, prepare
    c(emit_call_reg, Reg.RAX)                         # call rax            ; rdi..rcx unchanged
    c(emit_alu_ri, Ext.CMP, Reg.RAX, -MAX_ERRNO, True)  # cmp rax, -4095
    c.jump(Cond.AE, "out")                            # jae out             ; an errno (IS_ERR)
    c(emit_mov_rr, TABLE, Reg.RAX, True)              # mov r14, rax
    c(emit_load, COUNT, TABLE, 0, 8)                  # mov rbx, [r14]      ; count

    def args(c: _Code) -> None:
        c(emit_mov_rr, Reg.RAX, INDEX, True)          # mov rax, r15
        c(emit_shift_ri, Ext.SHL, Reg.RAX, 4, True)   # shl rax, 4
        c(emit_op_rr, 0x01, Reg.RAX, TABLE, True)     # add rax, r14
        c(emit_load, Reg.RSI, Reg.RAX, 8, 8)          # mov rsi, [rax + 8]  ; key
        c(emit_load, Reg.RDX, Reg.RAX, 16, 8)         # mov rdx, [rax + 16] ; value
        c(emit_load, Reg.RDI, Reg.RSP, 0, 8)          # mov rdi, [rsp]      ; map
        c(emit_mov_rr, Reg.RCX, CTX, True)            # mov rcx, r13        ; ctx
    _loop(c, args)
    c.label("out")
    c(emit_pop, Reg.RDI)                              # pop rdi
    _epilogue(c)
    return c.bytes()


def tail_call_adapter(counter: int, target: int) -> bytes:
    """A prog-array entry for a tail-call target that the JIT compiled as a subprog (a program
    linked into its caller's image). The JIT's inline tail call jumps to entry + TAIL_CALL_OFFSET
    with rax = the tail-call count (from a main program) or a pointer to it (from a subprog); a
    subprog's prologue wants the pointer. So a count is moved to the `counter` cell in kernel
    data and rax points there; a pointer passes through. Then on to `target` + TAIL_CALL_OFFSET."""
    out = bytearray(b"\xcc" * TAIL_CALL_OFFSET)       # int3 padding up to the tail-call entry
    convert = bytearray()
    emit_movabs(convert, Reg.R11, counter)            # movabs r11, counter
    emit_store(convert, Reg.R11, 0, Reg.RAX, 8)       # mov [r11], rax
    emit_mov_rr(convert, Reg.RAX, Reg.R11, True)      # mov rax, r11
    emit_alu_ri(out, Ext.CMP, Reg.RAX, MAX_TAIL_CALL_CNT, True, rax_short=False)  # cmp rax, 33
    emit_jcc8(out, Cond.A, len(convert))              # ja on                ; a pointer
    out += convert
    emit_movabs(out, Reg.R11, target + TAIL_CALL_OFFSET)   # on: movabs r11, target + 12
    emit_jmp_reg(out, Reg.R11)                        # jmp r11
    return bytes(out)
