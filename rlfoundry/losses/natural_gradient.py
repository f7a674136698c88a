"""TRPO's pieces: the importance-sampled surrogate, Fisher-vector products, conjugate gradient,
the natural step size and the backtracking line search (Schulman et al., 2015, appendix C).

TRPO maximises the surrogate L(theta) subject to mean KL(pi_old || pi_theta) <= delta. With the
KL approximated to second order, 1/2 s^T F s, the best step is s = beta F^{-1} g, where g is the
surrogate's gradient, F the Fisher matrix (the Hessian of the mean KL at theta_old) and
beta = sqrt(2 delta / (x^T F x)) with x = F^{-1} g. Conjugate gradient finds x from products F v
alone, so F is never formed; the line search then shrinks the step until the exact KL is within
delta and the surrogate improved.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch


def surrogate_advantage(log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """L(theta) = mean_t pi_theta(a_t|s_t) / pi_old(a_t|s_t) A_t

    log_probs, old_log_probs, advantages: [B]. To be maximised; at theta = theta_old its gradient
    is the vanilla policy gradient mean_t grad log pi(a_t|s_t) A_t.
    """
    return (torch.exp(log_probs - old_log_probs) * advantages).mean()


def fisher_vector_product(
    mean_kl: torch.Tensor, parameters: Sequence[torch.Tensor], vector: torch.Tensor, damping: float = 0.0
) -> torch.Tensor:
    """F v + damping v,  F v = grad_theta (grad_theta KL . v), the Hessian-vector product of the mean KL

    mean_kl: the scalar mean KL(pi_old || pi_theta) as a function of `parameters` (pi_old detached),
    evaluated at theta = theta_old, where its Hessian is the Fisher information matrix. vector: [P],
    P the total number of parameters. Double backpropagation: two gradient passes, no P x P matrix.
    The graph of mean_kl is kept, so one KL can serve every product of a conjugate-gradient run.
    """
    gradients = torch.autograd.grad(mean_kl, parameters, create_graph=True)
    flat_gradient = torch.cat([gradient.reshape(-1) for gradient in gradients])
    products = torch.autograd.grad(flat_gradient @ vector, parameters, retain_graph=True)
    return torch.cat([product.reshape(-1) for product in products]) + damping * vector


def conjugate_gradient(
    matrix_vector_product: Callable[[torch.Tensor], torch.Tensor],
    vector: torch.Tensor,
    iterations: int,
    residual_tolerance: float = 1e-10,
) -> torch.Tensor:
    """x ~= A^{-1} b for a symmetric positive-definite A given only as v -> A v (b = `vector`)

    Conjugate gradient from x = 0; stops after `iterations` steps or when the squared residual
    |b - A x|^2 falls below residual_tolerance. In exact arithmetic it solves a P-dimensional
    system in at most P iterations.
    """
    solution = torch.zeros_like(vector)
    residual = vector.clone()
    direction = vector.clone()
    residual_norm = residual @ residual
    for _ in range(iterations):
        if residual_norm < residual_tolerance:
            break
        product = matrix_vector_product(direction)
        step = residual_norm / (direction @ product)
        solution += step * direction
        residual -= step * product
        new_residual_norm = residual @ residual
        direction = residual + (new_residual_norm / residual_norm) * direction
        residual_norm = new_residual_norm
    return solution


def natural_step_size(direction: torch.Tensor, fisher_direction: torch.Tensor, max_kl: float) -> float:
    """beta = sqrt(2 delta / (x^T F x))

    The scale at which the quadratic KL model 1/2 (beta x)^T F (beta x) equals delta = max_kl.
    direction: x = F^{-1} g [P]; fisher_direction: F x [P].
    """
    curvature = float(direction @ fisher_direction)
    if not curvature > 0.0:
        raise ValueError(f"x^T F x = {curvature} is not positive: the Fisher product or the CG solution is broken")
    return math.sqrt(2.0 * max_kl / curvature)


class LineSearchResult(NamedTuple):
    """accepted: a step was taken; fraction: the shrink factor of the accepted step (0 if none);
    kl, improvement: measured at the accepted step (at the last one tried if none was accepted)."""

    accepted: bool
    fraction: float
    kl: float
    improvement: float
    backtracks: int


def backtracking_line_search(
    try_step: Callable[[float], tuple[float, float]],
    max_kl: float,
    shrink_factor: float = 0.8,
    max_backtracks: int = 10,
) -> LineSearchResult:
    """fraction = shrink_factor^k for the first k with KL(fraction) <= delta and improvement(fraction) > 0

    try_step(fraction) moves the parameters to theta_old + fraction * full_step and returns the
    exact (kl, surrogate improvement) there. Tries k = 0, 1, ..., max_backtracks - 1; when none is
    acceptable the caller must restore theta_old (result.accepted is False).
    """
    kl = improvement = math.nan
    for backtrack in range(max_backtracks):
        fraction = shrink_factor**backtrack
        kl, improvement = try_step(fraction)
        if kl <= max_kl and improvement > 0.0:
            return LineSearchResult(True, fraction, kl, improvement, backtrack)
    return LineSearchResult(False, 0.0, kl, improvement, max_backtracks)
