"""Actor-critic losses: the policy-gradient surrogate, PPO's clipped surrogate, the value loss.

Every loss is a mean over a batch of B steps and is *minimised*: the policy terms carry a minus
sign because the policy gradient ascends J(theta). Inputs are torch tensors of shape [B].

The `_row` functions are the same losses for one row t, before the mean's 1/B, with their
derivatives, in plain float arithmetic: numba compiles them into the compiled backend's gradient
step (rlfoundry.networks.compiled_actor_critic), and tests pin each to its tensor form.
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional


def normalize_advantages(advantages: torch.Tensor, epsilon: float = 1e-8) -> torch.Tensor:
    """A_hat = (A - mean(A)) / (std(A) + epsilon)

    std is the unbiased sample standard deviation, so it needs B >= 2 rows (with B = 1 it is NaN:
    a config that allows one-row minibatches must not normalise).
    """
    return (advantages - advantages.mean()) / (advantages.std() + epsilon)


def policy_gradient_loss(log_probs: torch.Tensor, advantages: torch.Tensor) -> torch.Tensor:
    """L^PG = -mean_t log pi_theta(a_t|s_t) A_t

    Its gradient is minus the policy-gradient estimate (1/B) sum_t grad log pi(a_t|s_t) A_t; the
    advantages must not carry gradients (they are data).
    """
    return -(log_probs * advantages).mean()


def clipped_surrogate_loss(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> torch.Tensor:
    """L^CLIP = -mean_t min(rho_t A_t, clip(rho_t, 1 - epsilon, 1 + epsilon) A_t),  rho_t = pi_theta(a_t|s_t) / pi_old(a_t|s_t)

    At rho = 1 its gradient equals that of policy_gradient_loss; where the clip is active (rho
    beyond 1 + epsilon with A > 0, or below 1 - epsilon with A < 0) a row contributes no gradient.
    """
    ratios = torch.exp(log_probs - old_log_probs)
    unclipped = ratios * advantages
    clipped = torch.clamp(ratios, 1.0 - clip_range, 1.0 + clip_range) * advantages
    return -torch.min(unclipped, clipped).mean()


def value_loss(
    values: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor | None = None,
    clip_range: float | None = None,
) -> torch.Tensor:
    """L^V = mean_t (V(s_t) - R_t)^2,  or with clip_range c: mean_t max((V - R)^2, (V_old + clip(V - V_old, -c, c) - R)^2)

    The clipped form (PPO's optional value clipping) keeps the new value within c of the value
    at collection time unless that moves it further from the target. No factor 1/2: the
    algorithms' value coefficient carries the scale.
    """
    if clip_range is None:
        return functional.mse_loss(values, returns)  # one fused op for mean (V - R)^2
    squared_errors = (values - returns).square()
    if old_values is None:
        raise ValueError("value clipping needs old_values (the values at collection time)")
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    return torch.max(squared_errors, (clipped_values - returns).square()).mean()


def policy_gradient_loss_gradient(advantages: torch.Tensor) -> torch.Tensor:
    """dL^PG/d log pi_theta(a_t|s_t) = -A_t / B

    The gradient of policy_gradient_loss with respect to its log_probs [B], for networks
    differentiated without autograd (rlfoundry.networks.manual_actor_critic); computed in the
    order autograd computes it.
    """
    return _mean_weight(advantages, -1.0) * advantages


def clipped_surrogate_loss_and_gradient(
    log_probs: torch.Tensor, old_log_probs: torch.Tensor, advantages: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """dL^CLIP/d log pi_theta(a_t|s_t) = -(A_t / B) rho_t 1[rho_t A_t <= clip(rho_t, 1 - epsilon, 1 + epsilon) A_t]

    (L^CLIP, its gradient with respect to log_probs [B]) from one pass over the rows: the loss
    equals clipped_surrogate_loss's bitwise, and the gradient is the one autograd computes for it
    (d rho / d log pi = rho). A row counts where the unclipped term is the minimum (always while
    rho is inside the clip range), and gives nothing where the clipped constant is smaller.
    """
    ratios = torch.exp(log_probs - old_log_probs)
    unclipped = ratios * advantages
    clipped = torch.clamp(ratios, 1.0 - clip_range, 1.0 + clip_range) * advantages
    loss = -torch.min(unclipped, clipped).mean()
    return loss, (_mean_weight(advantages, -1.0) * advantages).mul_(unclipped <= clipped).mul_(ratios)


def value_loss_and_gradient(
    values: torch.Tensor,
    returns: torch.Tensor,
    old_values: torch.Tensor | None = None,
    clip_range: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """dL^V/dV(s_t) = 2 (V_t - R_t) / B,  or with clip_range c: 2 (V_t - R_t) / B where the unclipped error is the larger, else 2 (V_clip,t - R_t) / B 1[|V_t - V_old,t| <= c]

    (L^V as value_loss defines it, its gradient with respect to values [B]) from the same errors;
    the gradient is bitwise autograd's, the loss equal to value_loss's up to the rounding of its mean.
    Where the two squared errors tie beyond the clip range the row gets half, as autograd's
    torch.max splits a tie's gradient between its arguments.
    """
    if clip_range is None:
        errors = values - returns
        return errors.square().mean(), errors.mul_(2.0 / len(values))
    if old_values is None:
        raise ValueError("value clipping needs old_values (the values at collection time)")
    errors = values - returns
    steps = values - old_values
    clipped_errors = old_values + torch.clamp(steps, -clip_range, clip_range) - returns
    squared_errors, clipped_squared_errors = errors.square(), clipped_errors.square()
    unclipped_larger = squared_errors >= clipped_squared_errors
    inside = steps.abs() <= clip_range
    # A tie beyond the clip range (V and its clipped value on either side of R): torch.max gives each
    # side half the gradient, and the clipped side's is 0 there, so the row gets half of 2 (V - R) / B.
    halved = (squared_errors == clipped_squared_errors) & ~inside
    loss = torch.max(squared_errors, clipped_squared_errors).mean()
    gradient = torch.where(unclipped_larger, errors, clipped_errors * inside)
    return loss, torch.where(halved, gradient * 0.5, gradient).mul_(2.0 / len(values))


def _mean_weight(rows: torch.Tensor, sign: float) -> torch.Tensor:
    """sign / B as the tensor autograd's mean backward produces: a division in the rows' dtype."""
    return torch.tensor(sign, dtype=rows.dtype, device=rows.device).div(len(rows))


def approximate_kl(log_probs: torch.Tensor, old_log_probs: torch.Tensor) -> torch.Tensor:
    """KL(pi_old || pi_theta) ~= mean_t (rho_t - 1) - log rho_t,  rho_t = pi_theta(a_t|s_t) / pi_old(a_t|s_t), a_t ~ pi_old

    An unbiased, never negative estimate of the KL from samples of the old policy (Schulman's
    "k3" estimator); it is what PPO's target_kl is compared with.
    """
    log_ratios = log_probs - old_log_probs
    return (torch.expm1(log_ratios) - log_ratios).mean()


def policy_gradient_row(log_prob: float, advantage: float) -> tuple[float, float]:
    """l_t = -A_t log pi_theta(a_t|s_t),  dl_t/d log pi_theta(a_t|s_t) = -A_t

    One row of policy_gradient_loss (its mean over rows is the loss) and its derivative.
    """
    return -advantage * log_prob, -advantage


def clipped_surrogate_row(log_prob: float, old_log_prob: float, advantage: float, clip_range: float) -> tuple[float, float]:
    """l_t = -min(rho_t A_t, clip(rho_t, 1 - epsilon, 1 + epsilon) A_t),  dl_t/d log pi_theta(a_t|s_t) = -rho_t A_t 1[rho_t A_t <= clip(rho_t, 1 - epsilon, 1 + epsilon) A_t]

    One row of clipped_surrogate_loss_and_gradient (its mean over rows is L^CLIP) and its derivative
    (d rho / d log pi = rho): no gradient where the clipped constant is the smaller term.
    """
    ratio = math.exp(log_prob - old_log_prob)
    unclipped = ratio * advantage
    clipped = min(max(ratio, 1.0 - clip_range), 1.0 + clip_range) * advantage
    if unclipped <= clipped:
        return -unclipped, -unclipped
    return -clipped, 0.0


def value_row(value: float, target: float, old_value: float, clip_range: float) -> tuple[float, float]:
    """l_t = (V_t - R_t)^2,  or with clip range c: max((V_t - R_t)^2, (V_old,t + clip(V_t - V_old,t, -c, c) - R_t)^2); and dl_t/dV_t

    One row of value_loss_and_gradient (its mean over rows is L^V) and its derivative, with the same
    rule for a tie beyond the clip range (half of 2 (V - R)). clip_range = inf: no clipping.
    """
    error = value - target
    if math.isinf(clip_range):
        return error * error, 2.0 * error
    step = value - old_value
    clipped_error = old_value + min(max(step, -clip_range), clip_range) - target
    squared, clipped_squared = error * error, clipped_error * clipped_error
    inside = abs(step) <= clip_range
    if squared > clipped_squared or (squared == clipped_squared and inside):
        return squared, 2.0 * error
    if squared == clipped_squared:
        return squared, error
    return clipped_squared, 2.0 * clipped_error if inside else 0.0


def approximate_kl_row(log_prob: float, old_log_prob: float) -> float:
    """k_t = (rho_t - 1) - log rho_t,  rho_t = pi_theta(a_t|s_t) / pi_old(a_t|s_t)

    One row of approximate_kl (its mean over rows is the estimate).
    """
    log_ratio = log_prob - old_log_prob
    return math.expm1(log_ratio) - log_ratio
