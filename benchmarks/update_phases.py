"""Where the time of one compiled SAC or TD3 update goes, phase by phase, inside a training run
(benchmarks/RESULTS.md: "Inside a SAC update", "Inside a TD3 update").

A copy of the update kernel (sac_update or deterministic_update, compiled from its source) reads
the cycle counter (llvm.readcyclecounter) at its first statement, before each barrier between the
two threads' phases (`if not meet(...)`, `split_mlp_backward`, `adam_in_parts`) and before each
return. A training run on Pendulum-v1 with torch_threads=2 calls the copy in place of the kernel.
For each path through the update (TD3: with and without the actor's step), the table gives each
stamp's median time after `run()` was called and the median phase before it, in ms, per thread.

    .venv/bin/python benchmarks/update_phases.py sac
    .venv/bin/python benchmarks/update_phases.py td3 --steps 4000
    .venv/bin/python benchmarks/update_phases.py sac --precision bfloat16
"""

from __future__ import annotations

import argparse
import ast
import inspect
import statistics
import time
from collections import defaultdict
from typing import Any

import numba
import numpy as np
from llvmlite import ir  # type: ignore[import-untyped]
from numba.core import cgutils, types
from numba.extending import intrinsic

import rlfoundry
from rlfoundry.networks import compiled_continuous
from rlfoundry.networks.compiled_mlp import kernel

BARRIERS = ("meet", "split_mlp_backward", "adam_in_parts")
KERNELS = {"sac": "sac_update", "td3": "deterministic_update"}


@intrinsic
def cycle_counter(typingctx):
    """The CPU's cycle counter (rdtsc on x86)."""

    def codegen(context, builder, signature, arguments):
        function = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.IntType(64), []),
                                                  "llvm.readcyclecounter")
        return builder.call(function, [])

    return types.int64(), codegen


@numba.njit
def read_cycle_counter():
    return cycle_counter()


def barrier_call(test: ast.expr) -> ast.Call | None:
    """The first barrier call of an `if not barrier(...)` test (or `not barrier(...) or not ...`)."""
    for term in test.values if isinstance(test, ast.BoolOp) else [test]:
        if (isinstance(term, ast.UnaryOp) and isinstance(term.op, ast.Not) and isinstance(term.operand, ast.Call)
                and getattr(term.operand.func, "id", "") in BARRIERS):
            return term.operand
    return None


def stamp_points(function: ast.FunctionDef) -> list[tuple[int, int, str]]:
    """(line, indentation, label) of each stamp: the first statement after the docstring, each
    barrier `if not <barrier>(...)` and each return but those after a failed barrier (which never
    run in a healthy run)."""
    points = [(function.body[1].lineno, function.body[1].col_offset, "first statement")]
    abort_returns: set[int] = set()
    for node in ast.walk(function):
        call = barrier_call(node.test) if isinstance(node, ast.If) else None
        if isinstance(node, ast.If) and call is not None:
            phase = ast.unparse(call.args[3]) if len(call.args) > 3 else ""
            points.append((node.lineno, node.col_offset, f"{ast.unparse(call.func)} {phase}".strip()))
            abort_returns.update(id(statement) for statement in node.body)
    for node in ast.walk(function):
        if isinstance(node, ast.Return) and id(node) not in abort_returns:
            points.append((node.lineno, node.col_offset, "return"))
    return sorted(points)


def stamped_kernel(name: str) -> tuple[Any, list[str]]:
    """compiled_continuous.<name> compiled with stamps[part, k] = cycle counter at stamp_points,
    and an end stamp; its first argument is stamps [2, K] (int64). Returns it and the labels."""
    source = inspect.getsource(getattr(compiled_continuous, name).py_func)
    lines = [line for line in source.splitlines() if not line.startswith("@")]
    lines[0] = lines[0].replace(f"def {name}(", "def stamped(stamps, ", 1)
    function = ast.parse("\n".join(lines)).body[0]
    assert isinstance(function, ast.FunctionDef)
    points = stamp_points(function)
    for index, (line, indentation, _) in reversed(list(enumerate(points))):
        lines.insert(line - 1, " " * indentation + f"stamps[part, {index}] = cycle_counter()")
    lines.append(f"    stamps[part, {len(points)}] = cycle_counter()")
    namespace = dict(vars(compiled_continuous), cycle_counter=cycle_counter)
    exec(compile("\n".join(lines), f"<stamped {name}>", "exec"), namespace)
    return kernel(namespace["stamped"]), [label for _, _, label in points] + ["end"]


def cycles_per_ms() -> float:
    start_cycles, start = read_cycle_counter(), time.perf_counter()
    time.sleep(0.5)
    return (read_cycle_counter() - start_cycles) / (time.perf_counter() - start) / 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("algorithm", choices=sorted(KERNELS))
    parser.add_argument("--steps", type=int, default=2000, help="timed env steps (one update each)")
    parser.add_argument("--warm-up", type=int, default=400, help="env steps before the timed ones")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32", help="matmul_precision")
    arguments = parser.parse_args()
    stamped, labels = stamped_kernel(KERNELS[arguments.algorithm])
    model = getattr(rlfoundry, arguments.algorithm.upper())("Pendulum-v1", seed=arguments.seed, torch_threads=2, quiet=True,
                                                            matmul_precision=arguments.precision)
    model.learn(arguments.warm_up)
    threads = model.compiled.threads
    if threads.parts != 2:
        raise SystemExit("the compiled update runs on one thread here: nothing to split into two parts")
    stamps = np.zeros((2, len(labels)), np.int64)
    records = []
    original_run = threads.run

    def run_stamped(update, *update_arguments) -> None:
        stamps[:] = 0
        start = read_cycle_counter()
        original_run(lambda part, parts, progress, *rest: stamped(stamps, part, parts, progress, *rest), *update_arguments)
        records.append((stamps - start, read_cycle_counter() - start))

    threads.run = run_stamped
    model.learn(arguments.steps)
    rate = cycles_per_ms()
    paths = defaultdict(list)
    for part_stamps, whole in records[len(records) // 20:]:  # the first updates warm the caches up
        reached = tuple(int(k) for k in np.flatnonzero((part_stamps > 0).all(axis=0)))
        paths[reached].append((part_stamps, whole))
    for reached, path in sorted(paths.items(), key=lambda item: -len(item[1])):
        whole = statistics.median(record[1] for record in path) / rate
        print(f"\n{arguments.algorithm.upper()}: {len(path)} updates on this path; whole run() {whole:.3f} ms (median)")
        print("| stamp | part 0: at (ms) | phase before | part 1: at | phase before |")
        print("|---|---|---|---|---|")
        for position, stamp in enumerate(reached):
            cells = []
            for part in range(2):
                at = np.array([record[0][part, stamp] for record in path]) / rate
                before = at - (np.array([record[0][part, reached[position - 1]] for record in path]) / rate if position else 0)
                cells += [f"{np.median(at):.3f}", f"{np.median(before):.3f}"]
            print(f"| {labels[stamp]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
