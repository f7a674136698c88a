"""Two threads running one compiled update: each runs its part in one kernel call (the kernels
release the GIL), and the parts meet at barriers.

A thread hand-over costs about 0.1 ms on this project's machine, so an update hands over once and
its parts then synchronise inside the kernels: `meet` marks a phase of this part done and spins
until the other part has marked it too, on atomic loads and stores with acquire/release ordering
(numba has no atomics of its own: `atomic_load`, `atomic_store`). A part that fails sets the abort
flag, and its partner leaves its barrier instead of spinning forever.

Most of a hand-over is not the worker's waking: the worker's part starts 83 to 87 us after the
update is posted whether it sleeps on the queue or spins for it, because each thread's call first
types and unboxes the update's arguments (about 160 arrays in nested tuples: 12 to 15 us a call
in a tight loop, more in a training loop's cold caches) and the GIL lets the two calls do that
one after the other (benchmarks/RESULTS.md, "2026-12-04, afternoon"; a spinning worker was measured
and not kept, again with its arguments bound once: "2026-12-04, night"). The worker is a plain
thread on a queue and a lock rather than a ThreadPoolExecutor, whose future, condition and work
item made SAC's step 0.4 to 1.0% slower at the median, 2.2 to 2.6% in the mean, and a two-thread
DQN step on CartPole with one gradient step per env step 7% slower ("2026-12-04, night").
"""

from __future__ import annotations

import queue
import threading
import weakref
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from numba.core import cgutils, types
from numba.extending import intrinsic

from rlfoundry.networks.compiled_mlp import FLOAT, adam_span, inline_kernel, kernel

ABORT = 2
"""progress[ABORT] != 0: the other part failed; a part waiting at a barrier returns."""


@intrinsic
def atomic_load(typingctx, array, index):
    """array[index] (an int64 array) read with acquire ordering: what the other thread wrote before
    its atomic_store of this value is visible after it, and the compiler cannot hoist it out of a loop."""

    def codegen(context, builder, signature, arguments):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, arguments[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [arguments[1]])
        return builder.load_atomic(pointer, "acquire", 8)

    return types.int64(array, index), codegen


@intrinsic
def atomic_store(typingctx, array, index, value):
    """array[index] = value (an int64 array) with release ordering (see atomic_load)."""

    def codegen(context, builder, signature, arguments):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, arguments[0])
        pointer = cgutils.get_item_pointer(context, builder, array_type, view, [arguments[1]])
        builder.store_atomic(arguments[2], pointer, "release", 8)
        return context.get_dummy_value()

    return types.void(array, index, value), codegen


@inline_kernel
def wait_for(progress, other, phase):
    """Wait until part `other` has marked `phase` (or a later one) done; False where a part failed instead."""
    while atomic_load(progress, other) < phase:
        if atomic_load(progress, ABORT) != 0:
            return False
    return True


@inline_kernel
def meet(progress, part, parts, phase):
    """Mark this part's `phase` done and wait until the other part's is (parts = 1: nothing to wait
    for). Returns False where the other part failed instead. Phases only grow within an update."""
    if parts == 1:
        return True
    atomic_store(progress, part, np.int64(phase))
    return wait_for(progress, 1 - part, phase)


@inline_kernel
def halfway(parameters, size):
    """Where split_clipped_adam's halves meet: near size / 2, at a multiple of 64 elements into the
    parameter there. The Adam sweep (fast-math) takes vector instructions through each parameter
    and scalar ones for its last elements, which round differently; met there, each element takes
    the path it takes in one sweep of the parameter, so the step is clipped_adam's, bitwise."""
    start = 0
    for parameter in parameters:
        stop = start + parameter.shape[0]
        if stop > size // 2:
            return start + (size // 2 - start) // 64 * 64
        start = stop
    return size


@kernel
def split_clipped_adam(part, progress, phase, adam, partner_gradient, squares):
    """compiled_mlp.clipped_adam on two threads. With a partner gradient (part 0 wrote its rows'
    gradient into the flat gradient, part 1 its rows' into partner_gradient, laid out the same),
    each part first adds the two in its half of the flat gradient; with none (no elements), the flat
    gradient is whole already. The halves' squared norms meet, and each part takes Adam's step on
    its half (elementwise: with max_norm inf, bitwise clipped_adam's step; see halfway). Phases phase and
    phase + 1, after which the parameters are whole; False where the other part failed."""
    parameters, flat_gradient, first_moments, second_moments, counters, max_norm, learning_rate, beta_1, beta_2, epsilon = adam
    size = flat_gradient.shape[0]
    middle = halfway(parameters, size)
    low, high = (0, middle) if part == 0 else (middle, size)
    partnered = partner_gradient.shape[0] > 0
    total = FLOAT(0)
    for index in range(low, high):
        value = flat_gradient[index] + partner_gradient[index] if partnered else flat_gradient[index]
        flat_gradient[index] = value
        total += value * value
    squares[part] = total
    step = float(counters[0] + 1)  # read before the barrier, after which part 0 advances the counters
    if not meet(progress, part, 2, phase):
        return False
    coefficient = (FLOAT(1) / (np.sqrt(squares[0] + squares[1]) + FLOAT(1e-6))) * max_norm
    scale = FLOAT(1) if coefficient >= FLOAT(1) else coefficient
    if part == 0:
        for index in range(counters.shape[0]):
            counters[index] += 1
    adam_span(parameters, flat_gradient, first_moments, second_moments, scale, step, learning_rate, beta_1, beta_2,
              epsilon, low, high)
    return meet(progress, part, 2, phase + 1)


def same_layout_views(arrays: tuple[np.ndarray, ...], flat: np.ndarray, buffer: np.ndarray) -> tuple[np.ndarray, ...]:
    """Views of `buffer` (as long as `flat`) placed as `arrays`, views of `flat`, are placed in it:
    where part 1 of a row split writes its share of a gradient (split_clipped_adam's partner)."""

    def view(array: np.ndarray) -> np.ndarray:
        offset = (array.ctypes.data - flat.ctypes.data) // flat.itemsize
        if not 0 <= offset <= len(flat) - array.size:
            raise ValueError("the network's gradients are not views of the optimiser's flat gradient")
        return buffer[offset : offset + array.size].reshape(array.shape)

    return tuple(view(array) for array in arrays)


Request = tuple[Callable[..., None], tuple] | None
"""An update and its arguments for the worker; None ends it."""


class KernelThreads:
    """Runs an update kernel's parts: update(part, parts, progress, *arguments) with part 0 on the
    calling thread and part 1 on a worker thread at once (the kernels release the GIL), or the whole
    update as part 0 of 1. One hand-over per update; inside, the parts meet at barriers (`meet`).

    The worker is a thread of its own (started at the first two-part update, ended when this
    object is collected) that takes each update from a queue and releases a lock when its part is
    done. It flushes denormals to zero, as learn() does on the calling thread
    (run.device.denormals_flushed)."""

    def __init__(self, threads: int):
        self.parts = 2 if threads > 1 else 1
        self.progress = np.zeros(3, np.int64)
        self.requests: queue.SimpleQueue[Request] | None = None
        self.finished = threading.Lock()  # held while the worker's part runs
        self.errors: list[BaseException] = []  # the worker's, for the calling thread to raise

    def run(self, update: Callable[..., None], *arguments: Any) -> None:
        progress = self.progress
        progress[:] = 0
        if self.parts == 1:
            update(0, 1, progress, *arguments)
            return
        requests = self.requests or self._start_worker()
        self.finished.acquire()
        requests.put((update, arguments))
        try:
            update(0, 2, progress, *arguments)
        except BaseException:
            progress[ABORT] = 1
            self._wait_for_worker()  # it leaves its barrier; its error, if any, gives way to this one
            self.errors.clear()
            raise
        self._wait_for_worker()
        if self.errors:
            raise self.errors.pop()  # after which part 0 returned early

    def _wait_for_worker(self) -> None:
        self.finished.acquire()
        self.finished.release()

    def _start_worker(self) -> queue.SimpleQueue[Request]:
        requests: queue.SimpleQueue[Request] = queue.SimpleQueue()
        self.requests = requests
        worker = threading.Thread(target=serve_parts, args=(requests, self.finished, self.progress, self.errors),
                                  name="rlfoundry-kernels", daemon=True)
        worker.start()
        weakref.finalize(self, requests.put, None)  # the worker ends with this object
        return requests


def serve_parts(requests: queue.SimpleQueue[Request], finished: threading.Lock, progress: np.ndarray,
                errors: list[BaseException]) -> None:
    """KernelThreads' worker: runs part 1 of 2 of each (update, arguments) from `requests` and
    releases `finished` after it (an error goes to `errors`, with the abort flag set for part 0);
    None ends it. It holds no reference to its KernelThreads, which can then be collected."""
    torch.set_flush_denormal(True)
    # This thread's OpenMP regions (oneDNN's bfloat16 products) take torch's thread count, one where
    # kernels run, as the calling thread's do; a thread OpenMP did not start would get one per core.
    torch.set_num_threads(torch.get_num_threads())
    while (request := requests.get()) is not None:
        update, arguments = request
        try:
            update(1, 2, progress, *arguments)
        except BaseException as error:
            progress[ABORT] = 1
            errors.append(error)
        del request, update, arguments  # no minibatch kept alive between updates
        finished.release()
