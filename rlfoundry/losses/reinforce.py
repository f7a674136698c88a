"""REINFORCE, the likelihood-ratio policy gradient (seeds 000, 001 and 004).

Every array here is [T, m] and time-major, and column i holds ONE episode tau^(i) from its
first step (row 0): ``mask[t, i]`` is True on the steps of that episode and False on the rows
after it ended (padding, whose values are ignored). So the row index t is the time step of
the episode, which the gamma^t weighting needs, and m (the number of columns) is the number of
sampled episodes of the seeds' 1/m average.

The weights Psi_t are constants (numpy, computed from rewards and a baseline); only the log
probabilities carry gradients.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["leave_one_out_baseline", "reinforce_loss", "reinforce_weights"]


def reinforce_weights(
    returns: np.ndarray,
    mask: np.ndarray,
    gamma: float,
    step_discount: bool,
    baselines: np.ndarray | None = None,
) -> np.ndarray:
    """Psi_t = gamma^t (G_t - b_t)  (step_discount),   Psi_t = G_t - b_t  (otherwise)

    returns G [T, m]: the reward-to-go G(tau_{t:T}) of each step, or R(tau) on every step.
    mask [T, m] bool; baselines b [T, m] or [m] (broadcast over t) or None (no baseline).
    Returns Psi [T, m] float64, zero on padding.

    Both are unbiased for the discounted objective J when nothing is dropped that the
    derivation keeps: R(tau) without gamma^t (seeds 000/001: the discount is inside R), and the
    reward-to-go with gamma^t (seed 004: E[sum_t grad log pi(a_t|s_t) gamma^t G(tau_{t:T})] =
    dJ/dtheta). The reward-to-go WITHOUT gamma^t, the form most libraries use, weights a state by
    its undiscounted visit count instead of its discounted visitation, so with gamma < 1 it is
    biased for J (docs/algorithms/reinforce.md gives the measured size).
    """
    centred = returns if baselines is None else returns - baselines
    if step_discount:
        steps = np.arange(returns.shape[0], dtype=np.float64)[:, None]
        centred = gamma**steps * centred
    return np.where(mask, centred, 0.0)


def leave_one_out_baseline(returns: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """b_i = 1/(m-1) sum_{j != i} (1/L_j) sum_t G_t^(j)   (the mean return of the OTHER episodes)

    returns G [T, m], mask [T, m] bool with every column holding at least one step; m >= 2.
    Returns b [m]. With trajectory returns (G_t = R(tau) on every step) this is the mean R of the
    other episodes. Leaving episode i out keeps b_i independent of tau^(i), so the estimator stays
    unbiased; the plain batch mean (1/m) sum_j would shrink the expected gradient by (1 - 1/m).
    """
    episodes = returns.shape[1]
    if episodes < 2:
        raise ValueError(f"a leave-one-out baseline needs at least 2 episodes in the batch, got {episodes}")
    lengths = mask.sum(axis=0)
    if np.any(lengths == 0):
        raise ValueError("every column of mask must hold at least one step of its episode")
    episode_means = np.where(mask, returns, 0.0).sum(axis=0) / lengths
    return (episode_means.sum() - episode_means) / (episodes - 1)


def reinforce_loss(log_probs: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L(theta) = -(1/m) sum_{i=1}^{m} sum_t log pi_theta(a_t^(i) | s_t^(i)) Psi_t^(i)

    log_probs [T, m] (with gradient), weights Psi [T, m] (constants), mask [T, m] bool.
    -grad L is seeds 000/001's estimate g = (1/m) sum_i sum_t grad log pi(a_t|s_t) R(tau^(i))
    when Psi_t = R(tau), and seed 004's when Psi_t = gamma^t G(tau_{t:T}).
    Padding rows are selected away (not multiplied by 0), so NaN there cannot leak in.
    """
    terms = torch.where(mask, log_probs * weights, torch.zeros((), dtype=log_probs.dtype, device=log_probs.device))
    return -terms.sum() / mask.shape[1]
