"""Adam's step, global-norm gradient clipping and clearing gradients with less per-call bookkeeping
than torch's wrappers.

`torch.optim.Adam.step` and `torch.nn.utils.clip_grad_norm_` wrap their kernels in Python
bookkeeping (profiler records, parameter grouping, state checks) that costs more than the kernels
themselves for small networks: DQN on CartPole takes about 25k steps of a 67k-parameter network
(RESULTS.md, "DQN"). `step_optimizer` runs the same kernels in the same order, so its results are
bitwise Adam.step's. `clip_gradient_norm` takes the norm of the concatenated gradients in one
reduction where torch takes the norm of the per-tensor norms (equal up to rounding;
tests/test_optimizer_step.py), so that gradients laid out in one flat tensor
(networks.manual_mlp.gradient_views) are measured and scaled by one operation each, and bitwise as
gradients held apart: on the CPU torch's foreach norm and multiplication run one operation per
tensor (12 for PPO's actor-critic, 95 us of a 760 us gradient step).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.optim.adam import adam


def clear_gradients(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.zero_grad(set_to_none=True): every parameter's .grad becomes None. Without torch's
    profiler bookkeeping around it, 1 us instead of 13 to 21 us for twelve parameters."""
    for group in optimizer.param_groups:
        for parameter in group["params"]:
            parameter.grad = None


@torch.no_grad()
def clip_gradient_norm(
    parameters: Sequence[torch.Tensor], max_norm: float, flat_gradient: torch.Tensor | None = None
) -> None:
    """g <- g min(1, max_norm / (||g|| + 1e-6)) over the concatenation g of the parameters' gradients,
    as torch.nn.utils.clip_grad_norm_ (parameters without a gradient are left out), with ||g|| one
    reduction over the concatenation. flat_gradient: what networks.manual_mlp.gradient_views(parameters)
    returned; used while every .grad is still its view, with bitwise the result of gradients held apart."""
    gradients = [parameter.grad for parameter in parameters if parameter.grad is not None]
    if not gradients:
        return
    first = gradients[0]
    # The flat tensor stands for these gradients only while they are views into it that fill it.
    if (
        flat_gradient is not None
        and len(gradients) == len(parameters)
        and all(gradient._base is flat_gradient for gradient in gradients)
        and sum(gradient.numel() for gradient in gradients) == flat_gradient.numel()
    ):
        total_norm = torch.linalg.vector_norm(flat_gradient)
        gradients = [flat_gradient]
    elif all(gradient.device == first.device and gradient.dtype == first.dtype for gradient in gradients):
        total_norm = torch.linalg.vector_norm(torch.cat([gradient.reshape(-1) for gradient in gradients]))
    else:
        total_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(gradients)))
    # On an accelerator reading the norm back would wait for it; other dtypes keep their own arithmetic.
    if total_norm.device.type != "cpu" or total_norm.dtype != torch.float32:
        torch._foreach_mul_(gradients, torch.clamp(max_norm / (total_norm + 1e-6), max=1.0))
        return
    # The same float32 arithmetic as above on the host (torch computes max_norm / x as
    # reciprocal(x) * max_norm), which spares four tensor operations and, when the norm is
    # within max_norm, the multiplication by exactly 1. NaN still propagates into the gradients.
    one, total = np.float32(1.0), np.float32(total_norm.item())
    coefficient = (one / (total + np.float32(1e-6))) * np.float32(max_norm)
    if not coefficient >= one:
        torch._foreach_mul_(gradients, float(coefficient))


@torch.no_grad()
def step_optimizer(optimizer: torch.optim.Optimizer) -> None:
    """optimizer.step(); for torch.optim.Adam through torch's functional `adam` on the optimizer's own
    state, or, for a fused group on one device and dtype, through the fused kernel that `adam` calls.
    As in Adam.step, only parameters with a gradient move. Other optimisers, a step that must create
    state (a parameter's first) and AMSGrad take optimizer.step() itself."""
    if type(optimizer) is not torch.optim.Adam:
        optimizer.step()
        return
    updates = []
    for group in optimizer.param_groups:
        parameters = [parameter for parameter in group["params"] if parameter.grad is not None]
        # No state yet (None, or {} once looked up): the parameter's first step, which optimizer.step() takes.
        states: list[dict[str, Any]] = [optimizer.state.get(parameter) or {} for parameter in parameters]
        if group["amsgrad"] or not all(states):
            optimizer.step()
            return
        if parameters:
            updates.append((group, parameters, states))
    for group, parameters, states in updates:
        gradients = [parameter.grad for parameter in parameters]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        steps = [state["step"] for state in states]
        beta1, beta2 = group["betas"]
        hyperparameters = {
            "lr": group["lr"],
            "beta1": beta1,
            "beta2": beta2,
            "weight_decay": group["weight_decay"],
            "eps": group["eps"],
            "maximize": group["maximize"],
        }
        if _fused_kernel_applies(group, parameters):
            # What torch's fused path runs for one device and dtype, without its per-call regrouping
            # of the lists (20 to 35 us a step for DQN's six-tensor network on this machine).
            _step_counters(states).add_(1)
            steps = [state["step"] for state in states]
            kernel = torch._fused_adamw_ if group["decoupled_weight_decay"] else torch._fused_adam_
            kernel(
                parameters, gradients, exp_avgs, exp_avg_sqs, [], steps,
                amsgrad=False, grad_scale=None, found_inf=None, **hyperparameters,
            )
            continue
        adam(
            parameters,
            gradients,
            exp_avgs,
            exp_avg_sqs,
            [],
            steps,
            foreach=group["foreach"],
            capturable=group["capturable"],
            differentiable=group["differentiable"],
            fused=group["fused"],
            decoupled_weight_decay=group["decoupled_weight_decay"],
            amsgrad=False,
            **hyperparameters,
        )


def _step_counters(states: list[dict]) -> torch.Tensor:
    """One tensor whose elements are these Adam states' step counters, each state's "step" a 0-dim
    view into it (made on first use, and again after a load replaced them): the counters then advance
    by one operation, where torch's foreach add runs one per tensor on the CPU (42 us a step for PPO's
    twelve). The values and the kernel that reads them are unchanged."""
    steps = [state["step"] for state in states]
    counters = steps[0]._base
    if counters is not None and counters.numel() == len(steps) and all(step._base is counters for step in steps):
        return counters
    counters = torch.stack(steps)
    for index, state in enumerate(states):
        state["step"] = counters[index]
    return counters


def _fused_kernel_applies(group: dict, parameters: list[torch.Tensor]) -> bool:
    """Whether a fused group's step is one call of the fused kernel: every parameter on one device
    with one real floating dtype, and the step size and betas plain numbers (the rest takes torch's
    own path)."""
    if not group["fused"] or group["differentiable"]:
        return False
    if any(isinstance(value, torch.Tensor) for value in (group["lr"], *group["betas"])):
        return False
    first = parameters[0]
    if not first.is_floating_point():
        return False
    return all(parameter.device == first.device and parameter.dtype == first.dtype for parameter in parameters)
