"""Named constants the selftests take from headers we do not read: limits.h, errno.h, the
kernel's filter.h (register names, MAX_BPF_STACK), bpf_common.h (instruction fields, from
`jit.isa`), bpf_misc.h (TEST_DATA_LEN), each with its C type.

Owns: these values. Must not import unicorn, github or bot/.
"""
from __future__ import annotations

from checks.kselftest.cexpr import INT, LONG, UINT, ULONG, Value
from jit import isa

_LIMITS = {
    "CHAR_BIT": (8, INT), "SCHAR_MIN": (-128, INT), "SCHAR_MAX": (127, INT), "UCHAR_MAX": (255, INT),
    "CHAR_MIN": (-128, INT), "CHAR_MAX": (127, INT),
    "SHRT_MIN": (-0x8000, INT), "SHRT_MAX": (0x7FFF, INT), "USHRT_MAX": (0xFFFF, INT),
    "INT_MIN": (-0x80000000, INT), "INT_MAX": (0x7FFFFFFF, INT), "UINT_MAX": (0xFFFFFFFF, UINT),
    "LONG_MIN": (-(1 << 63), LONG), "LONG_MAX": ((1 << 63) - 1, LONG), "ULONG_MAX": ((1 << 64) - 1, ULONG),
    "LLONG_MIN": (-(1 << 63), LONG), "LLONG_MAX": ((1 << 63) - 1, LONG), "ULLONG_MAX": ((1 << 64) - 1, ULONG),
    "S8_MIN": (-128, INT), "S8_MAX": (127, INT), "U8_MAX": (255, INT),
    "S16_MIN": (-0x8000, INT), "S16_MAX": (0x7FFF, INT), "U16_MAX": (0xFFFF, INT),
    "S32_MIN": (-0x80000000, INT), "S32_MAX": (0x7FFFFFFF, INT), "U32_MAX": (0xFFFFFFFF, UINT),
    "S64_MIN": (-(1 << 63), LONG), "S64_MAX": ((1 << 63) - 1, LONG), "U64_MAX": ((1 << 64) - 1, ULONG),
}

# Linux errno numbers (asm-generic/errno-base.h, errno.h; ENOTSUPP is kernel-internal).
_ERRNO = dict(
    EPERM=1, ENOENT=2, ESRCH=3, EINTR=4, EIO=5, ENXIO=6, E2BIG=7, ENOEXEC=8, EBADF=9, ECHILD=10,
    EAGAIN=11, ENOMEM=12, EACCES=13, EFAULT=14, EBUSY=16, EEXIST=17, EXDEV=18, ENODEV=19,
    ENOTDIR=20, EISDIR=21, EINVAL=22, ENFILE=23, EMFILE=24, ENOTTY=25, EFBIG=27, ENOSPC=28,
    ESPIPE=29, EROFS=30, EMLINK=31, EPIPE=32, EDOM=33, ERANGE=34, EDEADLK=35, ENAMETOOLONG=36,
    ENOLCK=37, ENOSYS=38, ENOTEMPTY=39, ELOOP=40, ENOMSG=42, ENODATA=61, ETIME=62, EPROTO=71,
    EBADMSG=74, EOVERFLOW=75, EILSEQ=84, ENOTSOCK=88, EMSGSIZE=90, EPROTONOSUPPORT=93,
    EOPNOTSUPP=95, EAFNOSUPPORT=97, EADDRINUSE=98, EADDRNOTAVAIL=99, ENETDOWN=100,
    ENETUNREACH=101, ECONNRESET=104, ENOBUFS=105, EISCONN=106, ENOTCONN=107, ETIMEDOUT=110,
    ECONNREFUSED=111, EALREADY=114, EINPROGRESS=115, ECANCELED=125, ENOTSUPP=524,
)

_MISC = {
    "MAX_BPF_STACK": 512, "TEST_DATA_LEN": 64, "PAGE_SIZE": 4096, "__PAGE_SIZE": 4096,
    "NUMA_NO_NODE": -1, "true": 1, "false": 0, "NULL": 0,
    "BPF_REG_FP": isa.FP, "BPF_REG_ARG1": 1, "BPF_REG_ARG2": 2, "BPF_REG_ARG3": 3,
    "BPF_REG_ARG4": 4, "BPF_REG_ARG5": 5, "BPF_REG_CTX": 6, "BPF_REG_AX": 11,
    **{f"BPF_REG_{n}": n for n in range(11)},
}

# bpf_common.h / bpf.h instruction field names, taken from jit.isa so there is one truth.
_ISA = {
    **{f"BPF_{name.upper()}": n for n, name in enumerate(isa.CLASS_NAMES)},
    **{f"BPF_{name.upper()}": op for op, name in isa.ALU_OPS.items()},
    **{f"BPF_{name.upper()}": op for op, name in isa.JMP_CONDS.items()},
    "BPF_JA": isa.JA, "BPF_CALL": isa.CALL, "BPF_EXIT": isa.EXIT, "BPF_JCOND": isa.JCOND,
    "BPF_K": isa.K, "BPF_X": isa.X, "BPF_TO_LE": isa.TO_LE, "BPF_TO_BE": isa.TO_BE,
    "BPF_W": isa.W, "BPF_H": isa.H, "BPF_B": isa.B, "BPF_DW": isa.DW,
    "BPF_IMM": isa.IMM, "BPF_ABS": isa.ABS, "BPF_IND": isa.IND, "BPF_MEM": isa.MEM,
    "BPF_MEMSX": isa.MEMSX, "BPF_ATOMIC": isa.ATOMIC, "BPF_FETCH": isa.FETCH,
    "BPF_XCHG": isa.ATOMIC_XCHG, "BPF_CMPXCHG": isa.ATOMIC_CMPXCHG,
    "BPF_PSEUDO_MAP_FD": isa.PSEUDO_MAP_FD, "BPF_PSEUDO_MAP_VALUE": isa.PSEUDO_MAP_VALUE,
    "BPF_PSEUDO_BTF_ID": isa.PSEUDO_BTF_ID, "BPF_PSEUDO_FUNC": isa.PSEUDO_FUNC,
    "BPF_PSEUDO_MAP_IDX": isa.PSEUDO_MAP_IDX, "BPF_PSEUDO_MAP_IDX_VALUE": isa.PSEUDO_MAP_IDX_VALUE,
    "BPF_PSEUDO_CALL": isa.PSEUDO_CALL, "BPF_PSEUDO_KFUNC_CALL": isa.PSEUDO_KFUNC_CALL,
}

CONSTANTS: dict[str, Value] = {
    **{name: Value(v, t) for name, (v, t) in _LIMITS.items()},
    **{name: Value(v, INT) for name, v in {**_ERRNO, **_MISC, **_ISA}.items()},
}


def builtin(name: str) -> Value | None:
    """The value of a header constant the importer knows without reading the header."""
    return CONSTANTS.get(name)
