"""Feature extractors: an MLP for vector observations, the Nature CNN for stacked frames."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from rlfoundry.networks.activations import Tanh

ACTIVATIONS = {"tanh": Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU}


def require_activation(name: str) -> None:
    """ValueError naming the allowed activations unless `name` is one of ACTIVATIONS."""
    if name not in ACTIVATIONS:
        raise ValueError(f"activation={name!r} is not allowed: choose one of {', '.join(ACTIVATIONS)}")


def activation_layer(name: str) -> nn.Module:
    """A new module of ACTIVATIONS[name], to follow a linear layer; ReLU works in place: autograd
    keeps the linear layer's inputs, not its output, and ReLU's derivative reads its own result, so
    the output's copy would only cost memory (for SAC's [2, 256, 256] critic layers 13 against 6 us)."""
    require_activation(name)
    return nn.ReLU(inplace=True) if name == "relu" else ACTIVATIONS[name]()


def orthogonal_init(module: nn.Module, gain: float = math.sqrt(2)) -> None:
    """Orthogonal weights with `gain` and zero biases for every Linear and Conv2d layer inside
    (a layer made with bias=False has none to zero)."""
    for layer in module.modules():
        if isinstance(layer, (nn.Linear, nn.Conv2d)):
            nn.init.orthogonal_(layer.weight, gain=gain)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)


class MLP(nn.Sequential):
    """Linear layers of the given widths with an activation after each; output size = widths[-1]."""

    def __init__(self, input_size: int, widths: Sequence[int], activation: str = "tanh"):
        require_activation(activation)
        layers: list[nn.Module] = []
        size = input_size
        for width in widths:
            layers += [nn.Linear(size, width), activation_layer(activation)]
            size = width
        super().__init__(*layers)
        self.output_size = size


# The smallest frame side that NatureCNN's three convolutions (kernel 8 stride 4, 4 stride 2,
# 3 stride 1) leave at least one pixel of: 36 -> 8 -> 3 -> 1.
NATURE_CNN_MIN_SIDE = 36


class NatureCNN(nn.Module):
    """The DQN Nature paper's convolutional torso (Mnih et al., 2015) for [C, 84, 84] uint8 frames.

    Scales pixels to [0, 1] inside, so observations can be stored as uint8.
    """

    def __init__(self, channels: int, height: int = 84, width: int = 84, features: int = 512):
        super().__init__()
        self.convolutions = nn.Sequential(
            nn.Conv2d(channels, 32, kernel_size=8, stride=4),
            nn.ReLU(),
            nn.Conv2d(32, 64, kernel_size=4, stride=2),
            nn.ReLU(),
            nn.Conv2d(64, 64, kernel_size=3, stride=1),
            nn.ReLU(),
            nn.Flatten(),
        )
        with torch.no_grad():
            flat = self.convolutions(torch.zeros(1, channels, height, width)).shape[1]
        self.linear = nn.Sequential(nn.Linear(flat, features), nn.ReLU())
        self.output_size = features

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.linear(self.convolutions(frames.float() / 255.0))
