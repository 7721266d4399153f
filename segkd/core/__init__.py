"""Foundation: what every other part of segkd may import and that imports nothing of segkd but
itself: errors, registries, the checkpoint format, run locks, writable-path checks, rank-zero,
constants and the command line's consoles."""
