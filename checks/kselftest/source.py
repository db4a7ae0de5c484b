"""A small C preprocessor for the selftest sources: `#define` (object- and function-like, with
`#` and `##`), `#undef`, and `#if`/`#ifdef`/`#ifndef`/`#elif`/`#else`/`#endif`.

`#include` is not followed: what the headers would give (helper ids, UAPI constants and
structs) comes from `uapi`, and the annotation macros of bpf_misc.h stay unexpanded so that
`annotations` can read them. `#if` sees the compiler the selftests are built with: clang ≥ 18
targeting BPF on x86-64 (`__TARGET_ARCH_x86`), little endian; unknown names are 0.

Tokens produced by a macro carry the line of the macro's use.

Owns: preprocessing. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from dataclasses import dataclass

from checks.errors import CheckError
from checks.kselftest.cexpr import evaluate
from checks.kselftest.tokens import Directive, Tok, spell, split_top, tokenize


@dataclass(frozen=True)
class Macro:
    name: str
    params: tuple[str, ...] | None        # None: object-like
    body: tuple[Tok, ...]
    variadic: bool = False


def _object(name: str, text: str) -> Macro:
    return Macro(name, None, tuple(tokenize(text)))


# What `clang -target bpf -D__TARGET_ARCH_x86` (the selftests' build, clang 18 or later) defines,
# plus the bpf_misc.h and bpf_helpers.h conveniences that reach constant expressions.
COMPILER_MACROS = {m.name: m for m in (
    _object("__clang__", "1"), _object("__clang_major__", "19"), _object("__clang_minor__", "1"),
    _object("__bpf__", "1"), _object("__BPF__", "1"), _object("__BPF_CPU_VERSION__", "4"),
    _object("__BPF_FEATURE_ADDR_SPACE_CAST", "1"), _object("__TARGET_ARCH_x86", "1"),
    _object("__ORDER_LITTLE_ENDIAN__", "1234"), _object("__ORDER_BIG_ENDIAN__", "4321"),
    _object("__BYTE_ORDER__", "__ORDER_LITTLE_ENDIAN__"), _object("__LP64__", "1"),
    _object("__CHAR_BIT__", "8"), _object("SYS_PREFIX", '"__x64_"'), _object("SYSCALL_WRAPPER", "1"),
    Macro("ARRAY_SIZE", ("x",), tuple(tokenize("(sizeof(x) / sizeof((x)[0]))"))),
)}


class Preprocessor:
    """Runs over one file's text; `macros` starts with what is already defined."""

    def __init__(self, file: str | None, macros: dict[str, Macro] | None = None):
        self.file = file
        self.macros = dict(COMPILER_MACROS if macros is None else macros)
        self.includes: list[str] = []         # what #include lines name, in order

    def run(self, text: str) -> list[Tok]:
        out: list[Tok] = []
        pending: list[Tok] = []
        # Each open conditional: [this branch active, a branch already taken, enclosing active, line]
        stack: list[list[bool]] = []
        for item in tokenize(text):
            active = not stack or stack[-1][0]
            if isinstance(item, Directive):
                out.extend(self.expand(pending))
                pending = []
                self.directive(item, stack, active)
            elif active:
                pending.append(item)
        if stack:
            raise CheckError("#if without #endif", file=self.file, line=stack[-1][3])
        out.extend(self.expand(pending))
        return out

    # -- directives ---------------------------------------------------------------------------
    def directive(self, d: Directive, stack: list[list[bool]], active: bool) -> None:
        name = d.name
        if name in ("if", "ifdef", "ifndef"):
            taken = active and self.condition(d)
            stack.append([taken, taken, active, d.line])
        elif name in ("elif", "else", "endif"):
            if not stack:
                raise CheckError(f"#{name} without #if", file=self.file, line=d.line)
            top = stack[-1]
            if name == "endif":
                stack.pop()
            elif top[1] or not top[2]:
                top[0] = False
            else:
                top[0] = name == "else" or self.condition(d)
                top[1] = top[0]
        elif not active:
            return
        elif name == "define":
            self.define(d)
        elif name == "undef" and d.toks:
            self.macros.pop(d.toks[0].text, None)
        elif name == "include":
            self.includes.append(d.raw.strip('<>"'))
        elif name == "error":
            raise CheckError(f"#error {d.raw}", file=self.file, line=d.line)
        # pragma, line, warning, and the null directive change nothing we read.

    def condition(self, d: Directive) -> bool:
        if d.name in ("ifdef", "ifndef"):
            if not d.toks or d.toks[0].kind != "id":
                raise CheckError(f"#{d.name} needs a name", file=self.file, line=d.line)
            return (d.toks[0].text in self.macros) == (d.name == "ifdef")
        toks = self.expand(self.replace_defined(d.toks))
        if not toks:
            raise CheckError(f"#{d.name} without a condition", file=self.file, line=d.line)
        return bool(evaluate(toks, lookup=lambda name: None, file=self.file,
                             undefined_is_zero=True).value)

    def replace_defined(self, toks: list[Tok]) -> list[Tok]:
        out = []
        i = 0
        while i < len(toks):
            t = toks[i]
            if t.text != "defined":
                out.append(t)
                i += 1
                continue
            paren = i + 1 < len(toks) and toks[i + 1].text == "("
            name = toks[i + 2 if paren else i + 1] if i + (2 if paren else 1) < len(toks) else None
            if name is None or name.kind != "id":
                raise CheckError("'defined' needs a name", file=self.file, line=t.line)
            out.append(Tok("num", "1" if name.text in self.macros else "0", t.line))
            i += 4 if paren else 2
        return out

    def define(self, d: Directive) -> None:
        toks = d.toks
        if not toks or toks[0].kind != "id":
            raise CheckError("#define needs a name", file=self.file, line=d.line)
        name = toks[0].text
        # Function-like only when '(' touches the name: "#define F(x)" vs "#define F (x)".
        if len(toks) > 1 and toks[1].text == "(" and d.raw[len(name):len(name) + 1] == "(":
            close = next((i for i, t in enumerate(toks) if t.text == ")"), None)
            if close is None:
                raise CheckError(f"#define {name}: missing ')'", file=self.file, line=d.line)
            params, variadic = _parameters(toks[2:close])
            self.macros[name] = Macro(name, params, tuple(toks[close + 1:]), variadic)
        else:
            self.macros[name] = Macro(name, None, tuple(toks[1:]))

    # -- expansion ----------------------------------------------------------------------------
    def expand(self, toks: list[Tok], hidden: frozenset = frozenset()) -> list[Tok]:
        macros = self.macros
        if not any(t.kind == "id" and t.text in macros for t in toks):
            return toks
        out: list[Tok] = []
        i = 0
        while i < len(toks):
            t = toks[i]
            macro = macros.get(t.text) if t.kind == "id" and t.text not in hidden else None
            if macro is None or (macro.params is not None
                                 and (i + 1 >= len(toks) or toks[i + 1].text != "(")):
                out.append(t)
                i += 1
                continue
            if macro.params is None:
                body, i = self.substitute(macro, [], t.line), i + 1
            else:
                args, i = self.arguments(toks, i + 2, macro, t)
                body = self.substitute(macro, args, t.line)
            out.extend(self.expand(body, hidden | {macro.name}))
        return out

    def arguments(self, toks: list[Tok], i: int, macro: Macro, at: Tok) -> tuple[list[list[Tok]], int]:
        """The arguments of a function-like macro call whose '(' is just before `toks[i]`."""
        args: list[list[Tok]] = [[]]
        depth = 0
        while i < len(toks):
            t = toks[i]
            if t.text in ("(", "[", "{"):
                depth += 1
            elif t.text in (")", "]", "}"):
                if depth == 0 and t.text == ")":
                    break
                depth -= 1
            elif t.text == "," and depth == 0 and not (macro.variadic and len(args) == len(macro.params)):
                args.append([])
                i += 1
                continue
            args[-1].append(t)
            i += 1
        else:
            raise CheckError(f"unterminated call of macro {macro.name}", file=self.file, line=at.line)
        if args == [[]] and not macro.params:
            args = []
        if len(args) != len(macro.params) and not (macro.variadic and len(args) == len(macro.params) - 1):
            raise CheckError(f"macro {macro.name} takes {len(macro.params)} arguments, given {len(args)}",
                             file=self.file, line=at.line)
        return args, i + 1

    def substitute(self, macro: Macro, args: list[list[Tok]], line: int) -> list[Tok]:
        """The macro body with parameters replaced, `#` and `##` applied, at the caller's line."""
        index = {p: n for n, p in enumerate(macro.params or ())}
        body = macro.body
        out: list[Tok] = []
        paste = False
        i = 0
        while i < len(body):
            t = body[i]
            if t.text == "##":
                paste = True
                i += 1
                continue
            if t.text == "#" and macro.params is not None and i + 1 < len(body) and body[i + 1].text in index:
                piece = [_stringize(args[index[body[i + 1].text]], line)]
                i += 2
            elif t.kind == "id" and t.text in index:
                arg = args[index[t.text]] if index[t.text] < len(args) else []
                next_pastes = i + 1 < len(body) and body[i + 1].text == "##"
                piece = [a._replace(line=line) for a in
                         (arg if paste or next_pastes else self.expand(arg))]
                i += 1
            else:
                piece = [t._replace(line=line)]
                i += 1
            gnu_comma = paste and macro.variadic and out and out[-1].text == "," \
                and t.text == (macro.params or ("",))[-1]
            if gnu_comma and not piece:
                out.pop()                 # GNU `, ## args`: no args, no comma; else no pasting
            elif paste and out and piece and not gnu_comma:
                piece = self.paste(out.pop(), piece[0]) + piece[1:]
            paste = False
            out.extend(piece)
        return out

    def paste(self, a: Tok, b: Tok) -> list[Tok]:
        toks = tokenize(a.text + b.text, first_line=a.line)
        if len(toks) != 1 or not isinstance(toks[0], Tok):
            raise CheckError(f"pasting '{a.text}' and '{b.text}' does not give one token",
                             file=self.file, line=a.line)
        return toks


def _parameters(toks: list[Tok]) -> tuple[tuple[str, ...], bool]:
    """Parameter names of a function-like macro; `...` is __VA_ARGS__, GNU `name...` is name."""
    names = [[t.text for t in group] for group in split_top(toks, ",")] if toks else []
    variadic = bool(names) and names[-1][-1] == "..."
    if variadic:
        names[-1] = names[-1][:-1] or ["__VA_ARGS__"]
    return tuple(n[0] for n in names if n), variadic


def _stringize(arg: list[Tok], line: int) -> Tok:
    text = spell(arg).replace("\\", "\\\\").replace('"', '\\"')
    return Tok("str", f'"{text}"', line)


def preprocess(text: str, *, file: str | None = None, macros: dict[str, Macro] | None = None) -> list[Tok]:
    """The tokens of `text` after preprocessing."""
    return Preprocessor(file, macros).run(text)
