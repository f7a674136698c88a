"""DQN's temporal-difference targets and loss (seed 003, section 5; van Hasselt et al., 2016).

Tensors have a leading batch dimension B. `discounts` is gamma^k for a sample spanning k steps
(gamma for one-step transitions; see rlfoundry.data.replay.ReplayBatch), and the next Q-values are
taken at the TRUE next observations: a truncated episode bootstraps from its final observation,
only `terminated` cuts the bootstrap.

`td_error_row` (the loss of one TD error with its derivative) and `double_dqn_target_row` are in
plain float arithmetic: numba compiles them into the compiled backend's gradient steps
(rlfoundry.networks.compiled_q_network).
"""

from __future__ import annotations

from typing import Any

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


def double_dqn_target_row(reward: float, discount: float, terminated: bool, next_q_values_online: Any,
                          next_q_values_target: Any) -> float:
    """y = r + gamma^k (1 - terminated) Q(s', argmax_a' Q(s', a'; theta); theta^-)

    One row of double_dqn_targets: next_q_values_online and next_q_values_target are that row's
    [A] values. The argmax takes the lowest index on ties, as torch's.
    """
    best = 0
    for action in range(1, len(next_q_values_online)):
        if next_q_values_online[action] > next_q_values_online[best]:
            best = action
    return reward + discount * (0.0 if terminated else 1.0) * next_q_values_target[best]


def td_errors(q_values: torch.Tensor, action_index: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """delta_i = Q(s_i, a_i; theta) - y_i

    q_values [B, A] = Q(s, .; theta), action_index [B, 1] int64 (the actions a_i), targets [B, 1]
    held fixed; returns [B, 1].
    """
    return q_values.gather(-1, action_index) - targets


def td_error_loss(errors: torch.Tensor, loss: str = "huber") -> torch.Tensor:
    """L = mean_i l(delta_i),  l(x) = x^2 ("squared"), or Huber ("huber"): x^2 / 2 for |x| <= 1, |x| - 1/2 beyond

    errors: the TD errors delta (any shape; the mean is over all of them). "squared" is the seed's
    loss; "huber" (the Nature DQN's error clipping, Stable-Baselines3's default) keeps the gradient
    of a large TD error at magnitude 1.
    """
    if loss == "huber":
        return functional.smooth_l1_loss(errors, torch.zeros_like(errors))
    if loss == "squared":
        return functional.mse_loss(errors, torch.zeros_like(errors))
    raise ValueError(f"loss={loss!r} is not allowed: choose one of {', '.join(map(repr, LOSSES))}")


def q_value_loss(q_values: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor, loss: str = "huber") -> torch.Tensor:
    """L(theta) = mean_i l(y_i - Q(s_i, a_i; theta)),  l as in td_error_loss (l is even)

    q_values [B, A] = Q(s, .; theta) with gradients, actions [B] int64, targets [B] held fixed.
    """
    return td_error_loss(td_errors(q_values, actions.long().unsqueeze(-1), targets.unsqueeze(-1)), loss)


def chosen_action_weights(actions: torch.Tensor, n_actions: int, batch_size: int) -> torch.Tensor:
    """w_ia = 1[a = a_i] / B

    actions [N] (or [N, 1]) integers, for N >= B rows: a burst's minibatches of B rows each can be
    weighted at once. Returns [N, n_actions].
    """
    index = actions.long().reshape(-1, 1)
    return torch.zeros(len(index), n_actions, device=actions.device).scatter_(-1, index, 1.0 / batch_size)


def q_value_loss_gradient(errors: torch.Tensor, weights: torch.Tensor, loss: str = "huber") -> torch.Tensor:
    """dL/dQ(s_i, a) = w_ia l'(delta_i) = 1[a = a_i] l'(delta_i) / B,  l'(x) = 2x ("squared"), clip(x, -1, 1) ("huber")

    The gradient of q_value_loss with respect to its q_values [B, A], for networks differentiated
    without autograd (rlfoundry.networks.manual_mlp). errors [B, 1] = td_errors, weights [B, A] =
    chosen_action_weights. Autograd multiplies l'(delta_i) by 1/B and scatters it into zeros; the
    product with w is the same float32 arithmetic, so the two agree bitwise.
    """
    if loss == "huber":
        return weights * errors.clamp(-1.0, 1.0)
    if loss == "squared":
        return weights * (2.0 * errors)
    raise ValueError(f"loss={loss!r} is not allowed: choose one of {', '.join(map(repr, LOSSES))}")


def td_error_row(error: float, huber: bool) -> tuple[float, float]:
    """l(delta) and l'(delta): Huber, x^2 / 2 for |x| <= 1 and |x| - 1/2 beyond, with l'(x) = clip(x, -1, 1); or squared, x^2 with l'(x) = 2x

    One TD error's term of td_error_loss (its mean over rows is the loss) and its derivative.
    """
    if not huber:
        return error * error, 2.0 * error
    if abs(error) <= 1.0:
        return 0.5 * error * error, error
    return abs(error) - 0.5, error / abs(error)  # a NaN error stays NaN
