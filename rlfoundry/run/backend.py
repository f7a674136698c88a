"""Which code trains a model's networks: numba-compiled kernels or PyTorch (the `backend` option).

    'auto'      compiled kernels where they apply, PyTorch elsewhere (the default)
    'compiled'  compiled kernels; a ConfigError naming what stands in the way where they do not apply
    'torch'     PyTorch only

The compiled kernels (rlfoundry.networks.compiled_mlp, compiled_actor_critic, compiled_q_network)
cover MLPs with ReLU or tanh on float32 CPU tensors, and compute what the PyTorch code computes to
float32 rounding, not bitwise: a run is reproducible, and resumes exactly, with the backend it
started with. The algorithms' docs pages list what each covers.
"""

from __future__ import annotations

from rlfoundry.run.config import ConfigError

BACKENDS = ("auto", "compiled", "torch")


def use_compiled(backend: str, obstacle: str | None) -> bool:
    """Whether a model builds its compiled kernels: never for 'torch'; for 'auto' and 'compiled'
    where nothing stands in their way (obstacle None), which 'compiled' requires."""
    if backend == "torch":
        return False
    if obstacle is None:
        return True
    if backend == "compiled":
        raise ConfigError(f"backend='compiled' does not apply here: {obstacle}; use backend='auto' or 'torch'")
    return False
