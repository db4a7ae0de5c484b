"""BPF instruction set, assemblers, and the x86-64 JIT that mirrors the kernel's."""
