"""DQN's temporal-difference targets and loss (seed 003, section 5; van Hasselt et al., 2016).

Tensors have a leading batch dimension B. `discounts` is gamma^k for a sample spanning k steps
(gamma for one-step transitions; see rlfoundry.data.replay.ReplayBatch), and the next Q-values are
taken at the TRUE next observations: a truncated episode bootstraps from its final observation,
only `terminated` cuts the bootstrap.
"""

from __future__ import annotations

import torch
from torch.nn import functional

LOSSES = ("huber", "squared")


def dqn_targets(
    rewards: torch.Tensor, discounts: torch.Tensor, terminated: torch.Tensor, next_q_values_target: torch.Tensor
) -> torch.Tensor:
    """y = r + gamma^k (1 - terminated) max_a' Q(s', a'; theta^-)

    rewards [B] (an n-step sample's discounted reward sum), discounts [B] = gamma^k,
    terminated [B] bool, next_q_values_target [B, A] = Q(s', .; theta^-) from the target network.
    """
    return rewards + discounts * ~terminated * next_q_values_target.max(dim=-1).values


def double_dqn_targets(
    rewards: torch.Tensor,
    discounts: torch.Tensor,
    terminated: torch.Tensor,
    next_q_values_online: torch.Tensor,
    next_q_values_target: torch.Tensor,
) -> torch.Tensor:
    """y = r + gamma^k (1 - terminated) Q(s', argmax_a' Q(s', a'; theta); theta^-)

    The online network picks the next action and the target network values it, which removes most
    of the over-estimation of taking a max over noisy estimates. next_q_values_online [B, A] =
    Q(s', .; theta), next_q_values_target [B, A] = Q(s', .; theta^-); the rest as dqn_targets.
    """
    best_actions = next_q_values_online.argmax(dim=-1, keepdim=True)
    return rewards + discounts * ~terminated * next_q_values_target.gather(-1, best_actions).squeeze(-1)


def q_value_loss(q_values: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor, loss: str = "huber") -> torch.Tensor:
    """L(theta) = mean_i l(y_i - Q(s_i, a_i; theta)),  l(x) = x^2 ("squared"), or Huber ("huber"): x^2 / 2 for |x| <= 1, |x| - 1/2 beyond

    q_values [B, A] = Q(s, .; theta) with gradients, actions [B] int64, targets [B] held fixed.
    "squared" is the seed's loss; "huber" (the Nature DQN's error clipping, Stable-Baselines3's
    default) keeps the gradient of a large TD error at magnitude 1.
    """
    taken = q_values.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)
    if loss == "huber":
        return functional.smooth_l1_loss(taken, targets)
    if loss == "squared":
        return functional.mse_loss(taken, targets)
    raise ValueError(f"loss={loss!r} is not allowed: choose one of {', '.join(map(repr, LOSSES))}")


def q_value_loss_gradient(
    q_values: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor, loss: str = "huber"
) -> torch.Tensor:
    """dL/dQ(s_i, a) = 1[a = a_i] l'(Q(s_i, a_i; theta) - y_i) / B,  l'(x) = 2x ("squared"), clip(x, -1, 1) ("huber")

    The gradient of q_value_loss with respect to its q_values [B, A], for networks differentiated
    without autograd (rlfoundry.networks.manual_mlp); computed as autograd computes it, so the two
    agree bitwise.
    """
    index = actions.long().unsqueeze(-1)
    errors = q_values.gather(-1, index).squeeze(-1) - targets
    if loss == "huber":
        slopes = errors.clamp_(-1.0, 1.0).mul_(1.0 / len(targets))
    elif loss == "squared":
        slopes = errors.mul_(2.0 / len(targets))
    else:
        raise ValueError(f"loss={loss!r} is not allowed: choose one of {', '.join(map(repr, LOSSES))}")
    return torch.zeros_like(q_values).scatter_(-1, index, slopes.unsqueeze(-1))
