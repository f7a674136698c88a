"""bfloat16 matrix products for the compiled updates (matmul_precision="bfloat16"): oneDNN's GEMM.

    C = round_bf16(A) round_bf16(B)     each product of two bfloat16 numbers exact in float32,
                                        the sums in float32;  round_bf16: to 8 significant bits,
                                        to nearest, ties to even (torch's Tensor.bfloat16())

Why: a CPU with AVX-512 BF16 (this project's AMD EPYC, Zen 4) does twice the multiply-adds per cycle
on bfloat16 pairs that it does in float32. oneDNN's bfloat16 GEMM, which torch links in, takes a
256x256 by 256x256 product in 0.16 ms (207 GFLOP/s) against 0.34 ms in float32 (benchmarks/RESULTS.md,
"2026-12-04, late"), and a SAC or TD3 update of 256-unit networks is mostly such products. torch
reaches that GEMM only through its own operators, whose per-call cost the kernels exist to avoid;
libtorch_cpu does not export `dnnl_gemm_bf16bf16f32`, but its symbol table lists it. `enable` reads
its offset from there, adds the library's load address (known from an exported function's), checks
it on a product whose exact value is known, and stores it where the kernels' `gemm` calls read it.

What it costs: each operand loses the bits past its 8th significant one (a relative error up to
2^-9), so a product of 256 terms is off by about 0.2% of its largest entries; SAC and TD3 on
Pendulum-v1 reach the returns of float32 training (RESULTS.md). Acting and predict stay float32.
"""

from __future__ import annotations

import ctypes
import functools
import os
import struct
from pathlib import Path

import numpy as np
import torch
from llvmlite import binding, ir  # type: ignore[import-untyped]
from numba.core import types
from numba.extending import intrinsic

ADDRESS_SYMBOL = "rlfoundry_bfloat16_gemm_address"
"""A global the kernels read the GEMM's address from (0 until `enable` finds it)."""
GEMM = "dnnl_gemm_bf16bf16f32"
ANCHOR = "cblas_gemm_bf16bf16f32"
"""A function libtorch_cpu exports: its load address minus its symbol-table value is the library's."""
ROW_MAJOR, TRANSPOSED = np.uint8(ord("N")), np.uint8(ord("T"))
"""oneDNN's gemm is row-major: 'N' takes an operand as stored, 'T' its transpose."""

_gemm_address = ctypes.c_uint64(0)
binding.add_symbol(ADDRESS_SYMBOL, ctypes.addressof(_gemm_address))


@intrinsic
def gemm_address(typingctx):
    """The address `enable` stored for the GEMM (0 before)."""

    def codegen(context, builder, signature, arguments):
        size = ir.IntType(64)
        address = builder.module.globals.get(ADDRESS_SYMBOL) or ir.GlobalVariable(builder.module, size, ADDRESS_SYMBOL)
        return builder.load(address)

    return types.int64(), codegen


@intrinsic
def gemm(typingctx, address, transpose_a, transpose_b, m, n, k, a, lda, b, ldb, c, ldc):
    """C [m, n] (a float32 array, row stride ldc) = op(A) op(B) by dnnl_gemm_bf16bf16f32 at `address`
    (gemm_address), A and B uint16 arrays of bfloat16 bits, op ROW_MAJOR or TRANSPOSED. Returns
    oneDNN's status (0: done). The arrays themselves are passed, so that they live through the call."""
    signature = types.int32(types.int64, types.uint8, types.uint8, types.int64, types.int64, types.int64, a, types.int64,
                            b, types.int64, c, types.int64)

    def codegen(context, builder, signature, arguments):
        byte, size, single = ir.IntType(8), ir.IntType(64), ir.FloatType()
        pointer = byte.as_pointer()
        function_type = ir.FunctionType(ir.IntType(32), [byte, byte, size, size, size, single, pointer, size, pointer,
                                                         size, single, single.as_pointer(), size])
        function_address, op_a, op_b, rows, columns, inner, a_array, a_stride, b_array, b_stride, c_array, c_stride = arguments

        def data(index: int, value: ir.Value, to: ir.Type) -> ir.Value:
            return builder.bitcast(context.make_array(signature.args[index])(context, builder, value).data, to)

        function = builder.inttoptr(function_address, function_type.as_pointer())
        return builder.call(function, [
            op_a, op_b, rows, columns, inner, ir.Constant(single, 1.0), data(6, a_array, pointer), a_stride,
            data(8, b_array, pointer), b_stride, ir.Constant(single, 0.0), data(10, c_array, single.as_pointer()),
            c_stride,
        ])

    return signature, codegen


@intrinsic
def float_bits(typingctx, value):
    """The bits of a float32 as a uint32."""

    def codegen(context, builder, signature, arguments):
        return builder.bitcast(arguments[0], ir.IntType(32))

    return types.uint32(types.float32), codegen


def symbol_values(path: Path, names: tuple[str, ...]) -> dict[str, int]:
    """Each name's value (its offset from the load address) in an ELF64 shared library's symbol table
    (.symtab, which a stripped library lacks); names it does not list are left out."""
    with open(path, "rb") as file:
        header = file.read(64)
        if header[:5] != b"\x7fELF\x02":
            return {}
        (section_offset,) = struct.unpack_from("<Q", header, 0x28)
        entry_size, count = struct.unpack_from("<HH", header, 0x3A)
        file.seek(section_offset)
        # (name, type, flags, address, offset, size, link, info, alignment, entry size)
        sections = [struct.unpack("<IIQQQQIIQQ", file.read(entry_size)) for _ in range(count)]
        symbol_tables = [section for section in sections if section[1] == 2]  # SHT_SYMTAB
        if not symbol_tables:
            return {}
        table, strings = symbol_tables[0], sections[symbol_tables[0][6]]
        file.seek(strings[4])
        names_blob = file.read(strings[5])
        file.seek(table[4])
        symbols = np.frombuffer(file.read(table[5]), dtype=np.dtype([
            ("name", "<u4"), ("info", "u1"), ("other", "u1"), ("section", "<u2"), ("value", "<u8"), ("size", "<u8"),
        ]))
    found = {}
    for name in names:
        position = names_blob.find(b"\0" + name.encode() + b"\0")
        if position < 0:
            continue
        matches = np.flatnonzero(symbols["name"] == position + 1)
        if len(matches):
            found[name] = int(symbols["value"][matches[0]])
    return found


def cpu_flags() -> set[str]:
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return next((set(line.split(":", 1)[1].split()) for line in text.splitlines() if line.startswith("flags")), set())


@functools.cache
def enable() -> str | None:
    """Make the kernels' bfloat16 products callable: None when they are, else why not (for the error
    that refuses matmul_precision='bfloat16')."""
    if "avx512_bf16" not in cpu_flags():
        return "this CPU has no AVX-512 BF16 instructions (/proc/cpuinfo lists no avx512_bf16)"
    library = Path(torch.__file__).parent / "lib" / "libtorch_cpu.so"
    try:
        values = symbol_values(library, (GEMM, ANCHOR))
    except (OSError, ValueError, struct.error) as error:  # missing, unreadable or not a whole ELF file
        return f"torch {torch.__version__}'s {library.name} could not be read for its symbol table ({error})"
    if len(values) < 2:
        return f"torch {torch.__version__}'s {library.name} lists no {GEMM} in a symbol table"
    anchor = ctypes.cast(getattr(ctypes.CDLL(os.fspath(library)), ANCHOR), ctypes.c_void_p).value
    assert anchor is not None  # an exported function's address
    _gemm_address.value = anchor - values[ANCHOR] + values[GEMM]
    if not gemm_checks_out():
        _gemm_address.value = 0
        return f"{GEMM} in torch {torch.__version__} did not compute a known product"
    return None


def gemm_checks_out() -> bool:
    """Whether the GEMM at the stored address computes a product of small integers (exact in bfloat16
    and in float32 sums) in both layouts of each operand."""
    from rlfoundry.networks.compiled_mlp import product  # the kernels import this module

    generator = np.random.default_rng(0)
    a = generator.integers(-8, 9, (40, 48)).astype(np.float32)
    b = generator.integers(-8, 9, (48, 36)).astype(np.float32)
    expected = a @ b
    results = []
    for left, right in ((a, b), (np.ascontiguousarray(a.T).T, np.ascontiguousarray(b.T).T)):
        out = np.zeros((40, 36), np.float32)
        product(left, right, out, True)
        results.append(np.array_equal(out, expected))
    return all(results)
