"""checks.kselftest building blocks: C constant expressions, the preprocessor, struct layout,
sections, instruction macros and asm templates."""
from __future__ import annotations

import pytest

from checks.errors import CheckError
from checks.kselftest.cexpr import INT, LONG, UINT, ULONG, Value, asm_immediate, evaluate
from checks.kselftest.constants import builtin
from checks.kselftest.ctypes_layout import Layouts
from checks.kselftest.decls import Declaration, Function, split
from checks.kselftest.insn_macros import as_long, instruction
from checks.kselftest.sections import section
from checks.kselftest.source import preprocess
from checks.kselftest.template import Template
from checks.kselftest.tokens import Tok, string_pieces, tokenize
from jit import isa
from jit.isa import Insn


def toks(text: str) -> list[Tok]:
    return tokenize(text)


def layouts_of(source: str) -> Layouts:
    layouts = Layouts(lookup=builtin)
    for item in split(preprocess(source)):
        if isinstance(item, Declaration):
            layouts.declare(list(item.toks))
    return layouts


# ------------------------------------------------------------------ constant expressions
EXPRESSIONS = [
    # text, value, C type, what clang prints for an "i" operand
    ("1", 1, INT, 1),
    ("0xffffffff", 0xFFFFFFFF, UINT, -1),
    ("0xffffffff - 1", 0xFFFFFFFE, UINT, -2),
    ("4294967295", 4294967295, LONG, 4294967295),          # decimal never becomes unsigned int
    ("~0", -1, INT, -1),
    ("~0u", 0xFFFFFFFF, UINT, -1),
    ("1ull << 40 | 5", (1 << 40) | 5, ULONG, (1 << 40) | 5),
    ("0xffffff80 >> 1", 0x7FFFFFC0, UINT, 0x7FFFFFC0),
    ("-8 >> 1", -4, INT, -4),                                # arithmetic shift of a signed value
    ("-7 / 2", -3, INT, -3),                                 # C division truncates
    ("-7 % 2", -1, INT, -1),
    ("1 << 31", -0x80000000, INT, -0x80000000),
    ("(unsigned char)300", 44, None, 44),
    ("(__u32)-1", 0xFFFFFFFF, UINT, -1),
    ("(long long)-1 + 0u", -1, LONG, -1),
    ("-1 < 0u", 0, INT, 0),                                  # -1 converts to UINT_MAX
    ("-1 < 0l", 1, INT, 1),
    ("3 > 2 ? 10 : 20", 10, INT, 10),
    ("!0 && (2 || 0)", 1, INT, 1),
    ("'A' + 1", 66, INT, 66),
    ("INT_MIN", -0x80000000, INT, -0x80000000),
    ("LLONG_MIN", -(1 << 63), LONG, -(1 << 63)),
    ("-EINVAL", -22, INT, -22),
    ("MAX_BPF_STACK - 8", 504, INT, 504),
    ("sizeof(int) * 3", 12, ULONG, 12),
    ("sizeof(long long)", 8, ULONG, 8),
]


@pytest.mark.parametrize("text,value,ctype,printed", EXPRESSIONS, ids=[e[0] for e in EXPRESSIONS])
def test_constant_expressions_keep_c_types(text, value, ctype, printed):
    v = evaluate(toks(text), lookup=builtin, layouts=Layouts(lookup=builtin))
    assert v.value == value
    if ctype is not None:
        assert v.type == ctype
    assert asm_immediate(v) == printed


@pytest.mark.parametrize("text,message", [
    ("1 / 0", "division by zero"),
    ("1 << 40", "shift count 40 is out of range"),
    ("NOPE + 1", "unknown name 'NOPE'"),
    ("1 +", "expression ends too early"),
    ("(1", "expected '\\)'"),
])
def test_bad_expressions_are_located_errors(text, message):
    with pytest.raises(CheckError, match=message) as e:
        evaluate(tokenize(text, first_line=7), lookup=builtin, file="x.c")
    assert str(e.value).startswith("x.c:7: ")


def test_sizeof_expressions():
    layouts = layouts_of("struct s { short a; int b[3]; };")
    layouts.variables["table"] = layouts.type_at(toks("int[5]"), 0)[0]
    for text, size in [("sizeof(((struct s *)0)->b)", 12), ("sizeof(table) / sizeof((table)[0])", 5),
                       ("sizeof table", 20), ("sizeof(struct s)", 16), ("_Alignof(struct s)", 4)]:
        assert evaluate(toks(text), lookup=builtin, layouts=layouts).value == size, text


# ------------------------------------------------------------------ preprocessor
def texts(source: str) -> list[str]:
    return [t.text for t in preprocess(source)]


@pytest.mark.parametrize("source,expected", [
    ("#define N 4\nint a[N];", "int a [ 4 ] ;"),
    ("#define SQ(x) ((x) * (x))\nSQ(1 + 2)", "( ( 1 + 2 ) * ( 1 + 2 ) )"),
    ("#define S(x) #x\nS(a  +  \"b\")", '"a + \\"b\\""'),
    ("#define CAT(a, b) a ## b ## _end\nCAT(foo, bar)", "foobar_end"),
    ("#define F(x, rest...) g(x, ##rest)\nF(1) F(1, 2)", "g ( 1 ) g ( 1 , 2 )"),
    ("#define V(...) h(__VA_ARGS__)\nV(1, 2)", "h ( 1 , 2 )"),
    ("#define F (x)\nF", "( x )"),                       # a space makes it object-like
    ("#define SELF SELF + 1\nSELF", "SELF + 1"),          # no recursion
    ("#define A 1\n#undef A\nA", "A"),
])
def test_macros(source, expected):
    assert " ".join(texts(source)) == expected


@pytest.mark.parametrize("condition,taken", [
    ("__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__", True),
    ("defined(__TARGET_ARCH_x86) && __clang_major__ >= 18", True),
    ("defined __TARGET_ARCH_arm64 || defined(__TARGET_ARCH_riscv)", False),
    ("UNKNOWN_MACRO", False),
    ("!defined(UNKNOWN_MACRO) && (2 * 3 == 6)", True),
    ("defined(__BPF_FEATURE_ADDR_SPACE_CAST)", True),
])
def test_if_conditions(condition, taken):
    assert texts(f"#if {condition}\nyes\n#else\nno\n#endif") == (["yes"] if taken else ["no"])


def test_nested_conditionals_and_elif():
    source = "#ifdef X\na\n#elif 1\n#if 0\nb\n#else\nc\n#endif\n#else\nd\n#endif\n#ifndef X\ne\n#endif"
    assert texts(source) == ["c", "e"]


def test_macro_tokens_carry_the_line_of_their_use():
    out = preprocess("#define TWO \\\n  r0 = 2\n\n\nTWO")
    assert {t.line for t in out} == {5}


def test_directive_errors():
    with pytest.raises(CheckError, match="#endif without #if"):
        preprocess("#endif\n", file="y.c")
    with pytest.raises(CheckError, match="y.c:2: #error stop here"):
        preprocess("\n#error stop here\n", file="y.c")
    with pytest.raises(CheckError, match="takes 2 arguments, given 1"):
        preprocess("#define F(a, b) a\nF(1)", file="y.c")


# ------------------------------------------------------------------ struct layout
LAYOUT = """
struct inner { char c; long long q; };
struct outer {
	char a;
	struct inner in;
	union { int u32; short u16[3]; };
	unsigned int bits : 3, more : 30;
	int after;
	int tail[];
};
struct __attribute__((packed)) tight { char a; int b; };
struct wide { char a; } __attribute__((aligned(16)));
struct flags { unsigned char f1 : 1; unsigned char : 0; unsigned char f2 : 2; };
typedef struct { __u16 port; __be32 addr; } endpoint_t;
enum colour { RED, GREEN = 5, BLUE };
"""


@pytest.mark.parametrize("struct,member,offset", [
    ("struct outer", ["in"], 8), ("struct outer", ["in", "q"], 16), ("struct outer", ["u16", 2], 28),
    ("struct outer", ["after"], 40), ("struct outer", ["tail"], 44),
    ("struct tight", ["b"], 1), ("endpoint_t", ["addr"], 4),
])
def test_member_offsets(struct, member, offset):
    layouts = layouts_of(LAYOUT)
    t = layouts.type_at(toks(struct), 0)[0]
    assert layouts.offset_of(t, member) == offset


@pytest.mark.parametrize("struct,size,align", [
    ("struct inner", 16, 8), ("struct outer", 48, 8), ("struct tight", 5, 1),
    ("struct wide", 16, 16), ("struct flags", 2, 1), ("endpoint_t", 8, 4),
])
def test_struct_sizes(struct, size, align):
    t = layouts_of(LAYOUT).type_at(toks(struct), 0)[0]
    assert (t.size, t.align) == (size, align)


def test_bitfields_and_enums():
    layouts = layouts_of(LAYOUT)
    outer = layouts.tag("struct outer")
    bits = {f.name: (f.offset, f.bit_size) for f in outer.fields if f.bit_size}
    assert bits == {"bits": (32, 3), "more": (36, 30)}     # 3 + 30 bits do not share a unit
    assert layouts.enum_values == {"RED": 0, "GREEN": 5, "BLUE": 6}
    with pytest.raises(CheckError, match="offsetof a bitfield"):
        layouts.offset_of(outer, ["bits"])


# ------------------------------------------------------------------ sections, macros, templates
@pytest.mark.parametrize("sec,prog_type,sleepable,autoload", [
    ("socket", "socket_filter", False, True), ("tc", "sched_cls", False, True),
    ("tc/ingress", "sched_cls", False, True), ("xdp", "xdp", False, True),
    ("cgroup/skb", "cgroup_skb", False, True), ("cgroup/sendmsg6", "cgroup_sock_addr", False, True),
    ("cgroup/post_bind4", "cgroup_sock", False, True), ("?raw_tp", "raw_tracepoint", False, False),
    ("raw_tp/kfree", "raw_tracepoint", False, True),
    ("raw_tracepoint.w", "raw_tracepoint_writable", False, True),
    ("tp_btf/task_newtask", "tracing", False, True), ("fentry/vfs_open", "tracing", False, True),
    ("lsm.s/file_open", "lsm", True, True), ("iter.s/bpf_map", "tracing", True, True),
    ("?uprobe.s", "kprobe", True, False), ("syscall", "syscall", True, True),
    ("sk_msg", "sk_msg", False, True), ("netfilter", "netfilter", False, True),
    ("struct_ops/test_1", "struct_ops", False, True),
])
def test_sections(sec, prog_type, sleepable, autoload):
    assert section(sec) == (prog_type, sleepable, autoload)


@pytest.mark.parametrize("sec", ["sockets", "tcx", "kprobefoo", "cgroup/skbx", ""])
def test_unknown_sections(sec):
    assert section(sec) is None


@pytest.mark.parametrize("expr,insn", [
    ("BPF_MOV64_IMM(BPF_REG_3, -1)", Insn(isa.ALU64 | isa.MOV, 3, 0, 0, -1)),
    ("BPF_ALU32_REG(BPF_ADD, BPF_REG_1, BPF_REG_2)", Insn(isa.ALU | isa.ADD | isa.X, 1, 2)),
    ("BPF_LD_IND(BPF_W, BPF_REG_7, -0x200000)", Insn(isa.LD | isa.W | isa.IND, 0, 7, 0, -0x200000)),
    ("BPF_STX_MEM(BPF_B, BPF_REG_FP, BPF_REG_0, -1)", Insn(isa.STX | isa.B | isa.MEM, 10, 0, -1)),
    ("BPF_RAW_INSN(BPF_JMP | BPF_JCOND, 0, 0, +1, 0)", Insn(isa.JMP | isa.JCOND, 0, 0, 1)),
    ("BPF_ATOMIC_OP(BPF_DW, BPF_ADD | BPF_FETCH, BPF_REG_1, BPF_REG_2, 8)",
     Insn(isa.STX | isa.DW | isa.ATOMIC, 1, 2, 8, isa.ADD | isa.FETCH)),
    ("BPF_EXIT_INSN()", Insn(isa.JMP | isa.EXIT)),
])
def test_instruction_macros(expr, insn):
    assert instruction(toks(expr), lambda t: evaluate(t, lookup=builtin).value) == insn
    assert as_long(insn) == int.from_bytes(insn.to_bytes(), "little", signed=True)


def test_unknown_instruction_macro():
    with pytest.raises(CheckError, match="unsupported instruction expression"):
        instruction(toks("BPF_NOT_A_MACRO(1)"), lambda t: 0, file="z.c")


def test_template_lines_operands_and_comments():
    source = '"\\\n\tr0 = %[a]; /* c; d */ \\\n l%=: w1 %%= 3;\\\n\tr2 = %[b]\\n exit"'
    literal = tokenize(source, first_line=10)
    assert [line for _, line in string_pieces(literal[0])] == [10, 11, 12, 13]
    template = Template(literal, file="t.c")
    assert template.names() == {"a", "b"}
    statements = template.statements({"a": "5", "b": "-1"}, number=4)
    assert statements == [("r0 = 5", 11), ("l4: w1 %= 3", 12), ("r2 = -1", 13), ("exit", 13)]
    with pytest.raises(CheckError, match="t.c:11: asm operand %\\[a\\] is not among"):
        template.statements({}, number=0)


def test_top_level_split():
    items = split(preprocess("""
int x = 1, y;
static __naked int f(void) __attribute__((used)) { asm volatile ("exit;"); }
extern int k(int a) __ksym;
int BPF_PROG(named, int a) { return 0; }
;
struct { int a; } m SEC(".maps") = { .a = 1 };
"""))
    kinds = [(type(i).__name__, getattr(i, "name", None), getattr(i, "body", 0) is None) for i in items]
    assert kinds == [("Declaration", None, False), ("Function", "f", False), ("Function", "k", True),
                     ("Function", "named", False), ("Declaration", None, False)]
    assert isinstance(items[1], Function) and [t.text for t in items[1].body][:2] == ["asm", "volatile"]


def test_values_print_as_clang_prints_them():
    assert asm_immediate(Value(0x80000000, UINT)) == -0x80000000
    assert asm_immediate(Value((1 << 64) - 1, ULONG)) == -1
    assert asm_immediate(Value(0x80000000, LONG)) == 0x80000000
