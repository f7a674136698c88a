"""Targets and losses of the continuous-action actor-critics: DDPG, TD3 and SAC.

Shapes: B transitions, K critics, A action dimensions. `terminated` is a float or bool [B] mask
of true terminal states; a truncated transition is not terminal and bootstraps from its true
next observation. Critic values are [K, B] (the QEnsemble layout).

The `_row` functions are the same targets for one transition, in float64 scalars, for the compiled
kernels (networks/compiled_continuous.py) that inline them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch


def q_target(
    rewards: torch.Tensor, terminated: torch.Tensor, next_q_values: torch.Tensor, discounts: torch.Tensor | float
) -> torch.Tensor:
    """y = r + gamma (1 - terminated) min_k Q'_k(s', a')

    DDPG's target with one target critic (K = 1, a' = mu'(s')); TD3's clipped double-Q target
    with two (a' the smoothed target action). rewards, terminated [B]; next_q_values [K, B];
    discounts: gamma, or [B] per sample (gamma^k for the k-step samples of ReplayBatch).
    """
    return rewards + discounts * (1.0 - terminated.to(rewards.dtype)) * next_q_values.min(dim=0).values


def smoothed_target_actions(target_actions: torch.Tensor, noise: torch.Tensor, noise_clip: float) -> torch.Tensor:
    """a' = clip(mu'(s') + clip(epsilon, -c, c), -1, 1),  epsilon ~ N(0, sigma^2)

    TD3's target policy smoothing: the target values a small neighbourhood of mu'(s'), so the
    critic cannot exploit a narrow peak. target_actions, noise: [B, A] (noise already scaled by sigma).
    """
    return (target_actions + noise.clamp(-noise_clip, noise_clip)).clamp(-1.0, 1.0)


def soft_q_target(
    rewards: torch.Tensor,
    terminated: torch.Tensor,
    next_q_values: torch.Tensor,
    next_log_probs: torch.Tensor,
    alpha: torch.Tensor | float,
    discounts: torch.Tensor | float,
) -> torch.Tensor:
    """y = r + gamma (1 - terminated) (min_k Q'_k(s', a') - alpha log pi(a'|s')),  a' ~ pi(.|s')

    SAC's soft Bellman target: the value of s' includes the entropy bonus -alpha log pi.
    rewards, terminated, next_log_probs [B]; next_q_values [K, B]; alpha a scalar; discounts as
    in q_target.
    """
    soft_values = next_q_values.min(dim=0).values - alpha * next_log_probs
    return rewards + discounts * (1.0 - terminated.to(rewards.dtype)) * soft_values


def q_target_row(reward: float, discount: float, terminated: bool, next_q_min: float) -> float:
    """y = r + gamma (1 - terminated) min_k Q'_k(s', a')

    q_target for one transition; next_q_min = min_k Q'_k(s', a').
    """
    return reward + discount * (0.0 if terminated else 1.0) * next_q_min


def smoothed_target_action_row(target_action: float, noise: float, noise_clip: float) -> float:
    """a' = clip(mu'(s') + clip(epsilon, -c, c), -1, 1)

    smoothed_target_actions for one action component (noise already scaled by sigma).
    """
    return min(max(target_action + min(max(noise, -noise_clip), noise_clip), -1.0), 1.0)


def soft_q_target_row(
    reward: float, discount: float, terminated: bool, next_q_min: float, alpha: float, next_log_prob: float
) -> float:
    """y = r + gamma (1 - terminated) (min_k Q'_k(s', a') - alpha log pi(a'|s'))

    soft_q_target for one transition; next_q_min = min_k Q'_k(s', a').
    """
    return reward + discount * (0.0 if terminated else 1.0) * (next_q_min - alpha * next_log_prob)


def critic_loss(q_values: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L(phi) = sum_k mean_i (Q_k(s_i, a_i) - y_i)^2

    q_values [K, B]; targets [B], held fixed (no gradient flows into the target). With Adam the
    overall scale (some codes halve this) changes almost nothing.
    """
    return (q_values - targets.detach()).square().mean(dim=1).sum()


def deterministic_actor_loss(q_values: torch.Tensor) -> torch.Tensor:
    """L(theta) = -mean_i Q_1(s_i, mu_theta(s_i))

    The deterministic policy gradient (Silver et al. 2014) as a loss: ascend the first critic
    along the action. q_values [1, B] or [B].
    """
    return -q_values.mean()


def soft_actor_loss(q_values: torch.Tensor, log_probs: torch.Tensor, alpha: torch.Tensor | float) -> torch.Tensor:
    """L(theta) = mean_i [alpha log pi(a_i|s_i) - min_k Q_k(s_i, a_i)],  a_i ~ pi_theta(.|s_i) reparameterised

    q_values [K, B] at the freshly sampled actions; log_probs [B]; alpha held fixed.
    """
    alpha = alpha.detach() if isinstance(alpha, torch.Tensor) else alpha
    return (alpha * log_probs - q_values.min(dim=0).values).mean()


def entropy_temperature_loss(log_alpha: torch.Tensor, log_probs: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """L(log alpha) = -mean_i log alpha (log pi(a_i|s_i) + H_target)

    Its gradient raises alpha while the policy's entropy -log pi is below H_target and lowers it
    above. Optimising log alpha (not alpha) keeps alpha positive, as in Haarnoja et al. (2018b)'s
    code and Stable-Baselines3. log_alpha: a scalar parameter; log_probs [B], held fixed.
    """
    return -(log_alpha * (log_probs.detach() + target_entropy)).mean()


def target_entropy_for(action_size: int) -> float:
    """H_target = -dim(A)

    The heuristic of Haarnoja et al. (2018b): one nat less per action dimension than a unit-width
    uniform density, whatever the dimension.
    """
    return -float(action_size)


@torch.no_grad()
def polyak_update(targets: Iterable[torch.Tensor], sources: Iterable[torch.Tensor], tau: float) -> None:
    """theta' <- tau theta + (1 - tau) theta'

    In place on every target tensor, as one fused lerp (theta' + tau (theta - theta')); tau = 1
    copies the sources exactly.
    """
    torch._foreach_lerp_(list(targets), list(sources), tau)
