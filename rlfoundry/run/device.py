"""Where torch algorithms run, and with how many CPU threads.

Small MLP policies are faster on the CPU than on a GPU: each step moves a handful of numbers and
a kernel launch costs more than the arithmetic. So device="auto" picks the CPU for MLP policies
and CUDA (when present) only for image (CNN) policies.

Thread count: measured on the 2-core CI machine (benchmarks/RESULTS.md), one thread acts on a
[8, 4] batch with a 64x64 MLP in 66 us against 94 us with two, and trains a 64x64 MLP on a
batch of 256 in 1.39 ms against 1.75 ms; 256x256 networks tie. So the default is 1 thread.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from rlfoundry.run.config import ConfigError

DEFAULT_TORCH_THREADS = 1


def resolve_device(device: str, uses_images: bool = False) -> torch.device:
    """The torch device for "auto", "cpu" or "cuda"; "cuda" without a GPU is a clear error."""
    if device == "auto":
        return torch.device("cuda" if uses_images and torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"device={device!r} but torch sees no CUDA GPU: use device='cpu' or 'auto' (a checkpoint trained on a GPU "
            "loads onto the CPU with rlfoundry.load(path, device='cpu'), or rlf eval/resume --device cpu)"
        )
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ConfigError(f"device={device!r} is not allowed: choose 'auto', 'cpu' or 'cuda'")
    return torch.device(device)


def configure_threads(threads: int | None) -> None:
    """Set torch's intra-op thread count (None: the measured default)."""
    count = DEFAULT_TORCH_THREADS if threads is None else threads
    if torch.get_num_threads() != count:
        torch.set_num_threads(count)


def configure_blas_threads(threads: int | None) -> None:
    """Set the BLAS thread count of the compiled kernels (None: the measured default, as for torch).
    numba's np.dot calls scipy's OpenBLAS, which otherwise starts a thread per core and keeps them
    spinning between products: on 2 cores a compiled PPO run then used twice the CPU time and took
    longer (RESULTS.md, "Compiled backend"). threadpoolctl sets every BLAS loaded in the process,
    numpy's included."""
    import scipy.linalg.cython_blas  # noqa: F401  (loads the BLAS the kernels call, so that the limit reaches it)
    import threadpoolctl

    threadpoolctl.threadpool_limits(limits=DEFAULT_TORCH_THREADS if threads is None else threads, user_api="blas")


@contextlib.contextmanager
def denormals_flushed() -> Iterator[None]:
    """Treat denormal floats (magnitude below 1.2e-38) as zero inside; torch's default (off) after.

    Adam's second moments and the gradients of a trained network reach that range, where x86 CPUs
    compute each operation many times slower. The values are far below anything that changes a
    weight. Measured on this project's machine in benchmarks/RESULTS.md (DQN and SAC sections).
    """
    supported = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if supported:
            torch.set_flush_denormal(False)
