"""Torch modules, optimisers and the torch RNG as flat tensors + JSON, for safetensors checkpoints."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rlfoundry.run.checkpoint import CheckpointCorruptError


def module_tensors(prefix: str, module: nn.Module) -> dict[str, torch.Tensor]:
    """A module's state dict with every key prefixed by `prefix.`."""
    return {f"{prefix}.{name}": tensor for name, tensor in module.state_dict().items()}


def load_module(prefix: str, module: nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Load the tensors saved by module_tensors(prefix, ...) into module (strict)."""
    start = len(prefix) + 1
    try:
        module.load_state_dict({name[start:]: tensor for name, tensor in tensors.items() if name.startswith(prefix + ".")})
    except RuntimeError as error:
        # The manifest's config (the network's sizes) is not covered by the files' hashes.
        raise CheckpointCorruptError(
            f"the saved {prefix} does not fit the network its manifest's config describes ("
            f"{str(error).splitlines()[-1].strip()}): was manifest.json edited, or mixed with another checkpoint's files?"
        ) from None


def optimizer_state(prefix: str, optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """(tensors, JSON) of an optimiser: moment tensors go to safetensors, the rest to JSON."""
    state_dict = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for parameter_index, parameter_state in state_dict["state"].items():
        for name, value in parameter_state.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{parameter_index}.{name}"] = value
            else:
                scalars.setdefault(str(parameter_index), {})[name] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def load_optimizer(
    prefix: str, optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], saved: dict[str, Any]
) -> None:
    """Restore the state of an optimiser saved by optimizer_state(prefix, ...): its moments and
    step counts. Its settings (learning rate, epsilon, ...) stay those it was built with, from the
    loading model's config: the saved ones came from the same config (a scheduled rate is set
    anew before each step), unless the config was changed at load (rlfoundry.load(path,
    learning_rate=...)), whose new values must not be put back."""
    settings = [{name: value for name, value in group.items() if name != "params"} for group in optimizer.param_groups]
    state: dict[int, dict[str, Any]] = {}
    start = len(prefix) + 1
    for key, tensor in tensors.items():
        if key.startswith(prefix + "."):
            parameter_index, name = key[start:].split(".", 1)
            state.setdefault(int(parameter_index), {})[name] = tensor
    for parameter_index, values in saved["scalars"].items():
        state.setdefault(int(parameter_index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": saved["param_groups"]})
    for group, built_with in zip(optimizer.param_groups, settings):
        group.update(built_with)


def generator_tensors(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """A model's torch generator as a tensor, named by its device type ("rng.torch_cpu")."""
    return {f"rng.torch_{generator.device.type}": generator.get_state()}


def restore_generator_tensors(generator: torch.Generator, tensors: dict[str, torch.Tensor], reseed: int) -> None:
    """Put a saved generator state back. A checkpoint from another device type (a CUDA generator's
    state does not fit a CPU one) reseeds it with `reseed` instead: its draws go on, not as saved."""
    saved = tensors.get(f"rng.torch_{generator.device.type}")
    if saved is None:
        generator.manual_seed(reseed)
    else:
        generator.set_state(saved)
