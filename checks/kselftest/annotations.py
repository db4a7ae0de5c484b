"""The test_loader annotations on a selftest function (bpf_misc.h, 6.12), read from its C tokens.

Each annotation macro is turned into the BTF decl tag it stands for ("comment:test_expect_msg=…"),
and the tags are interpreted by the rules of test_loader's parse_test_spec, so a raw
`__attribute__((btf_decl_tag("comment:…")))` means the same as the macro. Annotations we do not
know are kept as "unknown: NAME" and never stop the import.

Owns: annotations and the expectations they give. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from checks.errors import CheckError
from checks.kselftest.constants import builtin
from checks.kselftest.ctypes_layout import BUILTIN_TYPEDEFS
from checks.kselftest.tokens import Tok, spell, string_value

_P = "comment:test_"
# Annotations without arguments, and the tag each one stands for.
_BARE = {
    "__success": _P + "expect_success", "__failure": _P + "expect_failure",
    "__success_unpriv": _P + "expect_success_unpriv", "__failure_unpriv": _P + "expect_failure_unpriv",
    "__auxiliary": _P + "auxiliary", "__auxiliary_unpriv": _P + "auxiliary_unpriv",
    "__arch_x86_64": _P + "arch=X86_64", "__arch_arm64": _P + "arch=ARM64",
    "__arch_riscv64": _P + "arch=RISCV64",
}
# Annotations taking a string, and their tag prefix.
_STRING = {
    "__description": "description=", "__msg": "expect_msg=", "__msg_unpriv": "expect_msg_unpriv=",
    "__xlated": "expect_xlated=", "__xlated_unpriv": "expect_xlated_unpriv=",
    "__jited": "jited=", "__jited_unpriv": "jited_unpriv=", "__btf_path": "btf_path=", "__arch": "arch=",
}
# Annotations whose argument is stringized (`#val`).
_STRINGIZED = {"__retval": "retval=", "__retval_unpriv": "retval_unpriv=", "__flag": "prog_flags=",
               "__log_level": "log_level="}
# Words of a function's declaration that are not annotations.
_ATTRIBUTES = frozenset("static inline extern const volatile unsigned signed void int long short char "
                        "_Bool struct union enum __noinline __always_inline __weak __used __hidden "
                        "__naked __inline __attribute_used__ __maybe_unused".split())
_POINTER_VALUE = "POINTER_VALUE"          # __retval(POINTER_VALUE): the result is not compared
ARCH = "X86_64"                          # the arch this importer emulates


@dataclass
class Annotated:
    """What a function's declaration says besides its name and type."""
    sec: str | None = None
    sec_line: int | None = None
    tags: list[tuple[str, int]] = field(default_factory=list)     # (BTF decl tag, source line)
    naked: bool = False
    unknown: list[str] = field(default_factory=list)
    error: CheckError | None = None       # the declaration could not be read


def read(prefix: tuple[Tok, ...] | list[Tok], *, file: str | None = None) -> Annotated:
    """SEC, tags, `__naked` and unknown annotations from the tokens before a function's name."""
    out = Annotated()
    i = 0
    while i < len(prefix):
        t = prefix[i]
        args, end = _call_args(prefix, i)
        if t.kind != "id":
            i += 1
            continue
        name = t.text
        if name == "SEC" and args is not None:
            out.sec, out.sec_line = _strings(args, name, file), t.line
        elif name == "__attribute__" and args is not None:
            _attribute(args, out, file)
        elif name in _BARE:
            out.tags.append((_BARE[name], t.line))
        elif name in _STRING and args is not None:
            out.tags.append((_P + _STRING[name] + _strings(args, name, file), t.line))
        elif name in _STRINGIZED and args is not None:
            out.tags.append((_P + _STRINGIZED[name] + spell(args), t.line))
        elif name == "__naked":
            out.naked = True
        elif name.startswith("__") and name not in _ATTRIBUTES and name not in BUILTIN_TYPEDEFS:
            out.unknown.append(f"unknown: {name}")
        i = end
    return out


def _call_args(toks, i: int) -> tuple[list[Tok] | None, int]:
    """The tokens inside `name( ... )` at toks[i], and where the call ends; (None, i+1) if no call."""
    if i + 1 >= len(toks) or toks[i + 1].text != "(":
        return None, i + 1
    depth = 0
    for j in range(i + 1, len(toks)):
        if toks[j].text == "(":
            depth += 1
        elif toks[j].text == ")":
            depth -= 1
            if depth == 0:
                return list(toks[i + 2:j]), j + 1
    return list(toks[i + 2:]), len(toks)


def _strings(args: list[Tok], name: str, file: str | None) -> str:
    if not args or any(a.kind != "str" for a in args):
        at = args[0].line if args else None
        raise CheckError(f"{name} expects a string literal, got '{spell(args)}'", file=file, line=at)
    return "".join(string_value(a) for a in args)


def _attribute(args: list[Tok], out: Annotated, file: str | None) -> None:
    """`__attribute__((naked, btf_decl_tag("…"), section("…")))`."""
    for i, a in enumerate(args):
        inner, _ = _call_args(args, i)
        if a.text in ("naked", "__naked__"):
            out.naked = True
        elif a.text == "btf_decl_tag" and inner is not None:
            out.tags.append((_strings(inner, a.text, file), a.line))
        elif a.text == "section" and inner is not None:
            out.sec = _strings(inner, a.text, file)


@dataclass
class _Mode:
    """What one run (privileged or unprivileged) expects."""
    expect_failure: bool = False
    msgs: list[str] = field(default_factory=list)
    xlated: list[str] = field(default_factory=list)
    jited: list[str] = field(default_factory=list)
    retval: int | None = None
    execute: bool = False


class _Spec:
    """test_loader's parse_test_spec: tags in, SelftestCase fields out."""

    def __init__(self, name: str, file: str | None):
        self.file = file
        self.priv, self.unpriv = _Mode(), _Mode()
        self.modes: set[str] = set()
        self.own_unpriv_result = self.own_unpriv_retval = self.collect_jit = False
        self.spec = dict(description=name, flags=[], log_level=0, arch=[], auxiliary=False,
                         auxiliary_unpriv=False, btf_path=None, unknown=[])

    def mode(self, key: str) -> _Mode:
        """The run a tag is about; using a tag turns that run on."""
        unpriv = key.endswith("_unpriv")
        self.modes.add("unpriv" if unpriv else "priv")
        return self.unpriv if unpriv else self.priv

    def add(self, tag: str, line: int) -> None:
        key, _, value = tag[len(_P):].partition("=")
        if not tag.startswith(_P):
            self.spec["unknown"].append(f"unknown: tag {tag}")
        elif key.startswith(("expect_success", "expect_failure")):
            self.mode(key).expect_failure = key.startswith("expect_failure")
            self.own_unpriv_result |= key.endswith("_unpriv")
        elif key in ("auxiliary", "auxiliary_unpriv"):
            self.mode(key)
            self.spec[key] = True
        elif key.startswith(("expect_msg", "expect_xlated")):
            mode = self.mode(key)
            (mode.msgs if key.startswith("expect_msg") else mode.xlated).append(_skip_counter(value))
        elif key in ("jited", "jited_unpriv"):
            self.jited(key, value, line)
        elif key in ("retval", "retval_unpriv"):
            mode = self.mode(key)
            mode.retval, mode.execute = _retval(value, self.file, line), True
            self.own_unpriv_retval |= key.endswith("_unpriv")
        else:
            self.setting(tag, key, value, line)

    def jited(self, key: str, value: str, line: int) -> None:
        if not self.spec["arch"]:
            raise CheckError(f"__{key} used before __arch_*", file=self.file, line=line)
        if self.collect_jit:          # only the lines after an __arch_ of the arch we emulate
            self.mode(key).jited.append(_skip_counter(value))

    def setting(self, tag: str, key: str, value: str, line: int) -> None:
        if key == "log_level":
            self.spec["log_level"] = _int(value, "__log_level", self.file, line)
        elif key == "prog_flags":
            self.spec["flags"].append(value)
        elif key == "arch":
            if value not in ("X86_64", "ARM64", "RISCV64"):
                raise CheckError(f"bad arch spec '{value}'", file=self.file, line=line)
            self.spec["arch"].append(value)
            self.collect_jit = value == ARCH
        elif key in ("btf_path", "description"):
            self.spec[key] = value
        else:
            self.spec["unknown"].append(f"unknown: tag {tag}")

    def fields(self) -> dict:
        """The unprivileged run inherits what it does not set itself."""
        priv, unpriv, spec = self.priv, self.unpriv, self.spec
        modes = self.modes or {"priv"}
        if not self.own_unpriv_result:
            unpriv.expect_failure = priv.expect_failure
        if not self.own_unpriv_retval:
            unpriv.retval, unpriv.execute = priv.retval, priv.execute
        for attr in ("msgs", "xlated", "jited"):
            if not getattr(unpriv, attr):
                setattr(unpriv, attr, list(getattr(priv, attr)))
        runs_unpriv = "unpriv" in modes
        return dict(
            description=spec["description"], flags=tuple(spec["flags"]), log_level=spec["log_level"],
            arch=tuple(spec["arch"]), auxiliary=spec["auxiliary"], auxiliary_unpriv=spec["auxiliary_unpriv"],
            btf_path=spec["btf_path"], runs_priv="priv" in modes, runs_unpriv=runs_unpriv,
            expect="failure" if priv.expect_failure else "success",
            expect_unpriv=("failure" if unpriv.expect_failure else "success") if runs_unpriv else None,
            retval=priv.retval, retval_unpriv=unpriv.retval if runs_unpriv else None,
            executes=priv.execute, executes_unpriv=unpriv.execute and runs_unpriv,
            msgs=tuple(priv.msgs), msgs_unpriv=tuple(unpriv.msgs) if runs_unpriv else (),
            xlated=tuple(priv.xlated), xlated_unpriv=tuple(unpriv.xlated) if runs_unpriv else (),
            jited=tuple(priv.jited), jited_unpriv=tuple(unpriv.jited) if runs_unpriv else (),
            unknown_tags=tuple(spec["unknown"]),
        )


def expectations(tags: list[tuple[str, int]], name: str, *, file: str | None = None) -> dict:
    """SelftestCase fields from (tag, line) pairs, by the rules of test_loader's parse_test_spec."""
    spec = _Spec(name, file)
    for tag, line in tags:
        spec.add(tag, line)
    return spec.fields()


def _skip_counter(value: str) -> str:
    """BTF tags carry `<__COUNTER__>=` before the text so that equal messages stay distinct."""
    head, sep, rest = value.partition("=")
    return rest if sep and head.isdigit() else value


def _int(text: str, what: str, file, line) -> int:
    """strtol-style: "0x" prefix is hex, else decimal; anything left over is an error."""
    try:
        value = int(text[2:], 16) if text.startswith("0x") else int(text, 10)
    except ValueError:
        raise CheckError(f"cannot parse {what} from '{text}'", file=file, line=line) from None
    return value


def _retval(text: str, file, line) -> int | None:
    """__retval's value as the 32-bit int test_loader compares; None for POINTER_VALUE."""
    if text == _POINTER_VALUE:
        return None
    named = builtin(text)
    value = named.value if named is not None else _int(text, "__retval", file, line)
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >> 31 else value
