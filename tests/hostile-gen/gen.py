#!/usr/bin/env python3
"""Test-only generator of hostile task components (issue #9), run by `make test-tasks`.

    python3 tests/hostile-gen/gen.py BASE.wasm OUTDIR

BASE is the built `hostile-tasks` component (mode `normal`). Writes, each via a
temporary file and a rename (a worker watching OUTDIR never sees half a file):

  OUTDIR/hostile.wasm            BASE itself: the call-time attacks
  OUTDIR/modes/<mode>.wasm       BASE with its tasks() mode patched (see tests/hostile-tasks/README.md)
  OUTDIR/bombs/ifs<N>.wasm       BASE plus an extra core module: one function of N nested `if`s
  OUTDIR/bombs/funcs<N>.wasm     BASE plus an extra core module of N tiny functions
  OUTDIR/bad/*.wasm              truncated, garbage, empty, not wasm, a core module

Only the standard library: no wasm tools needed. A component is a sequence of
sections and may hold core modules that nothing instantiates; the compiler still
compiles them, so appending one core-module section (id 1) to a valid component
keeps it a valid task component whose compilation costs what the module costs.
Sparse files, FIFOs and symlinks are made by the tests themselves, in their own
temporary directories.
"""

import os
import random
import sys
from pathlib import Path

MARKER = b"@@HOSTILE-MODE@@"
MODES = ["normal", "dup4m", "uniq4m", "max1000", "over1001", "dotted", "colon", "newline", "control",
         "long129", "dupes", "empty", "bigname", "trap", "spin"]
#: Nested-`if` depths. 60 000 is the issue's start-up blocker (quadratic in the
#: compiler: 61 s at d7e317c); the smaller ones compile in a few seconds, for
#: "tasks wait for a component that is still compiling".
IF_DEPTHS = [60_000, 20_000]
#: Tiny functions: wasmtime's limit is 1 000 000 per module (the issue: 111 s, 6.9 GB).
FUNC_COUNTS = [999_000]


def leb(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def section(sid: int, payload: bytes) -> bytes:
    return bytes([sid]) + leb(len(payload)) + payload


def vec(items: list[bytes]) -> bytes:
    return leb(len(items)) + b"".join(items)


CORE_HEADER = b"\0asm\x01\0\0\0"
COMPONENT_HEADER = b"\0asm\x0d\0\x01\0"


def core_module(types: list[bytes], funcs: list[int], bodies_code: bytes, count: int) -> bytes:
    return (CORE_HEADER + section(1, vec(types)) + section(3, vec([leb(t) for t in funcs]))
            + section(10, leb(count) + bodies_code))


def nested_ifs_module(depth: int) -> bytes:
    """One function (param i32) whose body is `depth` nested `if`s."""
    body = b"\x00" + b"\x20\x00\x04\x40" * depth + b"\x0b" * depth + b"\x0b"
    code = leb(len(body)) + body
    return core_module([b"\x60\x01\x7f\x00"], [0], code, 1)


def many_funcs_module(count: int) -> bytes:
    """`count` functions () -> () each `i32.const 0; drop`."""
    body = b"\x00\x41\x00\x1a\x0b"
    one = leb(len(body)) + body
    return (CORE_HEADER + section(1, vec([b"\x60\x00\x00"])) + section(3, leb(count) + b"\x00" * count)
            + section(10, leb(count) + one * count))


def with_extra_module(component: bytes, module: bytes) -> bytes:
    assert component[:8] == COMPONENT_HEADER, "BASE is not a component"
    return component + section(1, module)


def patched(base: bytes, mode: str) -> bytes:
    i = base.find(MARKER)
    assert i >= 0 and base.find(MARKER, i + 1) < 0, "mode marker must appear exactly once"
    field = mode.encode().ljust(16, b"\0")
    assert len(field) == 16, mode
    j = i + len(MARKER)
    return base[:j] + field + base[j + 16:]


def write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def main() -> None:
    base_path, out = Path(sys.argv[1]), Path(sys.argv[2])
    base = base_path.read_bytes()
    write(out / "hostile.wasm", base)
    for mode in MODES:
        write(out / "modes" / f"{mode}.wasm", patched(base, mode))
    for depth in IF_DEPTHS:
        write(out / "bombs" / f"ifs{depth // 1000}k.wasm", with_extra_module(base, nested_ifs_module(depth)))
    for count in FUNC_COUNTS:
        write(out / "bombs" / f"funcs{count // 1000}k.wasm", with_extra_module(base, many_funcs_module(count)))
    rng = random.Random(9)
    write(out / "bad" / "truncated.wasm", base[: len(base) // 2])
    write(out / "bad" / "garbage.wasm", COMPONENT_HEADER + bytes(rng.randrange(256) for _ in range(4096)))
    write(out / "bad" / "empty.wasm", b"")
    write(out / "bad" / "notwasm.wasm", b"#!/bin/sh\necho this is not wasm\n")
    write(out / "bad" / "core-module.wasm", nested_ifs_module(3))
    # A component section claiming 4 GiB of payload (a lying length prefix).
    write(out / "bad" / "lying-length.wasm", COMPONENT_HEADER + b"\x01" + leb(0xFFFF_FFF0) + b"\0asm")


if __name__ == "__main__":
    main()
