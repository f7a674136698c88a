"""Which code trains a model's networks: numba-compiled kernels or PyTorch (the `backend` option).

    'auto'      compiled kernels where they apply, PyTorch elsewhere (the default)
    'compiled'  compiled kernels; a ConfigError naming what stands in the way where they do not apply
    'torch'     PyTorch only

The compiled kernels (rlfoundry.networks.compiled_mlp, compiled_actor_critic, compiled_q_network,
compiled_continuous) cover MLPs with ReLU or tanh on float32 CPU tensors, and compute what the PyTorch code computes to
float32 rounding, not bitwise: a run is reproducible, and resumes exactly, with the backend it
started with. The algorithms' docs pages list what each covers.
"""

from __future__ import annotations

import torch

from rlfoundry.run.config import ConfigError
from rlfoundry.run.device import configure_blas_threads

BACKENDS = ("auto", "compiled", "torch")


def compiled_backend(backend: str, device: torch.device, uncovered: str | None) -> bool:
    """Whether a model builds its compiled kernels: never for 'torch'; for 'auto' and 'compiled'
    when its network is on the CPU and the kernels cover it (`uncovered` None; else the setting in
    their way), which 'compiled' requires (a ConfigError names what stands in the way). When the
    answer is yes, the BLAS the kernels call gets one thread (run.device.configure_blas_threads):
    their products are small, and on two BLAS threads a PPO run with torch_threads=2 took 15.0 s
    against 5.0 s (RESULTS.md, "2026-12-04, morning"); the algorithms that use a second core run
    kernels on two threads of their own instead."""
    if backend == "torch":
        return False
    obstacle = f"the kernels run on the CPU and the network is on {device}" if device.type != "cpu" else uncovered
    if obstacle is not None:
        if backend == "compiled":
            raise ConfigError(f"backend='compiled' does not apply here: {obstacle}; use backend='auto' or 'torch'")
        return False
    configure_blas_threads(1)
    return True


def mlp_obstacle(image_observations: bool, activation: str, hidden_sizes: tuple[int, ...]) -> str:
    """Which setting keeps a network that the written-out MLP passes do not cover (ManualMLP.of gave
    None) from the kernels, named for compiled_backend's error."""
    if image_observations:
        return "image observations (the kernels cover MLPs, not the CNN)"
    if activation not in ("relu", "tanh"):
        return f"activation={activation!r} (the kernels cover relu and tanh)"
    if not hidden_sizes:
        return "hidden_sizes=() (the kernels cover MLPs with hidden layers)"
    return "a network the kernels do not cover (they cover MLPs with relu or tanh)"
