"""The importance-sampled (off-policy) policy gradient of seed 002.

Episodes were sampled by an older policy pi_theta; the gradient is taken at the current policy
pi_theta'. Arrays follow losses/reinforce.py: [T, m], column i is one episode from row 0, and
``mask`` marks its steps. With rho_k = pi_theta'(a_k|s_k) / pi_theta(a_k|s_k):

    "trajectory"  w_t = prod_{k=0}^{T-1} rho_k   p_theta'(tau) / p_theta(tau): exact, high variance
    "prefix"      w_t = prod_{k=0}^{t} rho_k     drops the future ratios (seed 002, question 2)
    "per_step"    w_t = rho_t                    also drops the past ones (question 3): the seed's formula

and ``max_weight`` = c truncates any of them to min(w_t, c).
"""

from __future__ import annotations

import math

import torch

from rlfoundry.losses.reinforce import reinforce_loss

__all__ = ["IMPORTANCE_RATIOS", "importance_weights", "off_policy_pg_loss"]

IMPORTANCE_RATIOS = ("trajectory", "prefix", "per_step")


def importance_weights(
    log_probs: torch.Tensor,
    behaviour_log_probs: torch.Tensor,
    mask: torch.Tensor,
    ratio: str,
    max_weight: float | None = None,
) -> torch.Tensor:
    """w_t = min(c, prod_{k in K_t} pi_theta'(a_k|s_k) / pi_theta(a_k|s_k)),  K_t = all steps, k <= t, or {t}

    log_probs log pi_theta' [T, m], behaviour_log_probs log pi_theta [T, m], mask [T, m] bool.
    Returns w [T, m], detached (a constant of the gradient step). Products are sums of log
    ratios, exponentiated once at the end; truncation is applied in log space, so a truncated
    weight never overflows. Without ``max_weight`` a long trajectory's product can be inf or 0.
    """
    if ratio not in IMPORTANCE_RATIOS:
        raise ValueError(f"ratio={ratio!r} is not allowed: choose one of {', '.join(map(repr, IMPORTANCE_RATIOS))}")
    zero = torch.zeros((), dtype=log_probs.dtype, device=log_probs.device)
    log_ratios = torch.where(mask, log_probs.detach() - behaviour_log_probs, zero)
    if ratio == "trajectory":
        log_weights = log_ratios.sum(dim=0, keepdim=True).expand_as(log_ratios)
    elif ratio == "prefix":
        log_weights = log_ratios.cumsum(dim=0)
    else:
        log_weights = log_ratios
    if max_weight is not None:
        log_weights = log_weights.clamp(max=math.log(max_weight))
    return torch.where(mask, log_weights.exp(), zero)


def off_policy_pg_loss(
    log_probs: torch.Tensor,
    behaviour_log_probs: torch.Tensor,
    weights: torch.Tensor,
    mask: torch.Tensor,
    ratio: str,
    max_weight: float | None = None,
) -> torch.Tensor:
    """L(theta') = -(1/m) sum_{i=1}^{m} sum_t w_t^(i) log pi_theta'(a_t^(i) | s_t^(i)) Psi_t^(i),  w held fixed

    log_probs [T, m] (with gradient), behaviour_log_probs [T, m], weights Psi [T, m] (the
    REINFORCE weights of losses/reinforce.py), mask [T, m] bool. -grad L is seed 002's
    E_{tau ~ theta}[sum_t w_t grad log pi_theta'(a_t|s_t) Psi_t]; at theta' = theta every w_t is
    exactly 1 and this is reinforce_loss.
    """
    importance = importance_weights(log_probs, behaviour_log_probs, mask, ratio, max_weight)
    return reinforce_loss(log_probs, importance * weights, mask)
