"""A fully connected network's forward and backward pass written out, without autograd.

    forward:   h_0 = x,   h_l = f(h_{l-1} W_l^T + b_l)   (l < L),   h_L = h_{L-1} W_L^T + b_L
    backward:  g_L = dL/dh_L,   dL/dW_l = g_l^T h_{l-1},   dL/db_l = sum_rows g_l,
               g_{l-1} = (g_l W_l) * f'(h_{l-1})

For ReLU f'(h) = 1[h > 0] and for tanh f'(h) = 1 - h^2, both read from the stored output h.

Why: DQN's networks on vector observations are small (CartPole: 4 -> 256 -> 256 -> 2, 64 rows),
and eager autograd spends more time recording and replaying its graph than the matrix products
take. Written out, a gradient step is one product per layer each way plus a few elementwise
operations (RESULTS.md, "DQN"). The operations are the ones autograd runs, in the same order, so
the gradients are bitwise equal to autograd's (tests/test_manual_mlp.py checks this).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn
from torch.nn import functional

from rlfoundry.networks.activations import Tanh, tanh_
from rlfoundry.networks.policies import VectorTorso

DIFFERENTIATED_ACTIVATIONS = {nn.ReLU: "relu", Tanh: "tanh"}


class ManualMLP(NamedTuple):
    """output(torso(x)) for a VectorTorso: its input encoder, the weights W_l and biases b_l of its
    Linear layers plus the output layer, and its activation. The parameters themselves are held
    (optimisers update them in place), which spares a module attribute lookup per use."""

    encoder: nn.Module | None
    weights: tuple[torch.Tensor, ...]
    biases: tuple[torch.Tensor, ...]
    activation: str

    @classmethod
    def of(cls, torso: nn.Module, output: nn.Linear) -> "ManualMLP | None":
        """The written-out form of `output(torso(x))`; None for torsos it does not cover (the CNN, or
        activations other than ReLU and tanh), which then keep autograd."""
        if not isinstance(torso, VectorTorso):
            return None
        activations = {type(module) for module in torso.mlp if not isinstance(module, nn.Linear)}
        if len(activations) != 1 or not activations <= DIFFERENTIATED_ACTIVATIONS.keys():
            return None
        layers = tuple(module for module in torso.mlp if isinstance(module, nn.Linear)) + (output,)
        weights = tuple(layer.weight for layer in layers)
        biases = tuple(layer.bias for layer in layers)
        return cls(torso.encoder, weights, biases, DIFFERENTIATED_ACTIVATIONS[activations.pop()])

    def __deepcopy__(self, memo: dict) -> "ManualMLP":
        copy_gradients((*self.weights, *self.biases), memo)
        return type(self)._make(copy.deepcopy(tuple(self), memo))

    def forward(self, observations: torch.Tensor, workspace: Sequence[torch.Tensor] = ()) -> list[torch.Tensor]:
        """[h_0, h_1, ..., h_L] for observations [B, *obs]: h_0 the encoded input, h_L the output.
        Hidden layer l writes h_l into workspace[l - 1][:B] where one is given: buffers kept between
        calls, so a pass over thousands of rows takes no fresh memory (whose page faults cost more
        than its products, RESULTS.md "DQN"); h_l is then valid until the workspace's next use.
        Call under torch.no_grad()."""
        hidden = observations if self.encoder is None else self.encoder(observations)
        outputs = [hidden]
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if index < len(workspace):
                # What nn.Linear computes (addmm), into the kept buffer.
                hidden = torch.addmm(bias, hidden, weight.t(), out=workspace[index][: len(hidden)])
            else:
                hidden = functional.linear(hidden, weight, bias)  # what nn.Linear computes
            if index < last:
                hidden = hidden.relu_() if self.activation == "relu" else tanh_(hidden)
            outputs.append(hidden)
        return outputs

    def workspace(self, rows: int) -> list[torch.Tensor]:
        """Buffers for forward's hidden layers, for passes of up to `rows` rows."""
        return [weight.new_empty(rows, len(weight)) for weight in self.weights[:-1]]

    def backward(self, outputs: list[torch.Tensor], output_gradient: torch.Tensor) -> None:
        """Write dL/dW and dL/db into each layer's .grad (overwriting it), given forward's outputs
        and g_L = dL/dh_L [B, out]. Call under torch.no_grad()."""
        gradient = output_gradient
        for index in range(len(self.weights) - 1, -1, -1):
            weight, below = self.weights[index], outputs[index]
            torch.mm(gradient.t(), below, out=gradient_buffer(weight))
            torch.sum(gradient, dim=0, out=gradient_buffer(self.biases[index]))
            if index > 0:
                gradient = gradient.mm(weight)
                if self.activation == "relu":
                    gradient = torch.ops.aten.threshold_backward(gradient, below, 0)
                else:
                    gradient = torch.ops.aten.tanh_backward(gradient, below)


def gradient_buffer(parameter: torch.Tensor) -> torch.Tensor:
    """The parameter's .grad, allocated on first use; backward overwrites it in place after that (so
    that a .grad made a view by gradient_views stays one)."""
    if parameter.grad is None:
        parameter.grad = torch.empty_like(parameter)
    return parameter.grad


def copy_gradients(parameters: Sequence[torch.Tensor], memo: dict[int, Any]) -> None:
    """Within copy.deepcopy: give the copies of `parameters` (made through `memo` if not yet) copies of
    their .grad. nn.Parameter's deepcopy leaves .grad out, and a tensor copied through the same memo
    keeps sharing memory with the others copied there: so a .grad made a view of a flat gradient by
    gradient_views becomes a view of that flat tensor's copy, as the original was."""
    for parameter in parameters:
        copied = copy.deepcopy(parameter, memo)
        if parameter.grad is not None and copied.grad is None:
            copied.grad = copy.deepcopy(parameter.grad, memo)


def gradient_views(parameters: Sequence[torch.Tensor]) -> torch.Tensor:
    """Give every parameter a zeroed .grad that is a view into one new flat tensor, in the parameters'
    order, and return that tensor (all parameters on one device with one dtype).
    run.optimizer_step.clip_gradient_norm measures and scales such gradients in one operation each
    while every .grad still is its view: code that fills them writes into .grad in place, as
    ManualMLP.backward does."""
    first = parameters[0]
    if any(parameter.device != first.device or parameter.dtype != first.dtype for parameter in parameters):
        raise ValueError("gradient_views needs parameters on one device with one dtype")
    flat = first.new_zeros(sum(parameter.numel() for parameter in parameters))
    offset = 0
    for parameter in parameters:
        parameter.grad = flat[offset : offset + parameter.numel()].view_as(parameter)
        offset += parameter.numel()
    return flat
