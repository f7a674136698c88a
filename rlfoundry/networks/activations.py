"""tanh for the MLPs, computed by numpy's kernel on CPU tensors.

    tanh(x) = (e^x - e^-x) / (e^x + e^-x),   d tanh(x)/dx = 1 - tanh(x)^2

Why: torch 2.13's CPU tanh takes 2.8 ns per float32 element on this project's AMD EPYC machine
(47 us for a [256, 64] hidden layer), numpy's 0.4 ns (7 us); tanh was a fifth of a PPO gradient
step on CartPole (benchmarks/RESULTS.md, "PPO"). numpy's float32 result is within 1.4 ulp of the exact
value (torch's within 0.6; tests/test_activations.py), but not always the same float: every tanh of
rlfoundry's networks therefore goes through `tanh` here, in the modules (with autograd) and in the
hand-differentiated passes (networks/manual_mlp.py) alike, so that both compute the same numbers
whatever the batch size. Tensors numpy cannot read (other devices, half precision), and tracing or
compiling, which cannot see numpy's work, take torch.tanh.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

NUMPY_DTYPES = (torch.float32, torch.float64)


def _numpy_applies(tensor: torch.Tensor) -> bool:
    """Whether numpy can compute on the tensor's memory in place of torch: a strided CPU tensor of
    float32 or float64, outside torch.jit.trace and torch.compile (which would record numpy's result
    as a constant: a traced or exported policy would ignore its input)."""
    return (
        tensor.dtype in NUMPY_DTYPES
        and tensor.device.type == "cpu"
        and tensor.layout == torch.strided
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
    )


def tanh_(tensor: torch.Tensor) -> torch.Tensor:
    """tensor <- tanh(tensor), in place and outside autograd (as Tensor.tanh_ under torch.no_grad)."""
    if not _numpy_applies(tensor):
        return tensor.tanh_()
    values = tensor.detach().numpy()
    np.tanh(values, out=values)
    return tensor


def _numpy_tanh(inputs: torch.Tensor) -> torch.Tensor:
    """tanh(inputs) as a new tensor, by numpy (where _numpy_applies), outside autograd."""
    outputs = torch.empty_like(inputs, requires_grad=False)
    np.tanh(inputs.detach().numpy(), out=outputs.numpy())
    return outputs


class _Tanh(torch.autograd.Function):
    """tanh with numpy's forward and torch's own derivative, tanh_backward(g, y) = g (1 - y^2), which is
    itself differentiable (TRPO's Fisher-vector products differentiate twice)."""

    @staticmethod
    def forward(context, inputs: torch.Tensor) -> torch.Tensor:
        outputs = _numpy_tanh(inputs)
        context.save_for_backward(outputs)
        return outputs

    @staticmethod
    def backward(context, output_gradient: torch.Tensor) -> torch.Tensor:
        (outputs,) = context.saved_tensors
        return torch.ops.aten.tanh_backward(output_gradient, outputs)


def tanh(inputs: torch.Tensor) -> torch.Tensor:
    """tanh(inputs), differentiable when autograd records."""
    if not _numpy_applies(inputs):
        return torch.tanh(inputs)
    if torch.is_grad_enabled() and inputs.requires_grad:
        return _Tanh.apply(inputs)
    return _numpy_tanh(inputs)


class Tanh(nn.Module):
    """nn.Tanh computed by `tanh` above."""

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return tanh(inputs)
