"""Networks for continuous actions: deterministic and tanh-Gaussian actors, a batched Q ensemble.

Every actor acts in the unit box [-1, 1]^A; `ActionScale` maps those actions to the env's
bounds, and it is the only place where that happens (the replay buffer stores unit actions).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.nn import functional

from rlfoundry.networks.torsos import MLP, activation_layer

# Bounds of log sigma for the tanh-Gaussian actor (Haarnoja et al. 2018's code, Stable-Baselines3):
# sigma in [2e-9, 7.4] keeps exp() and the log-density finite.
LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0
_HALF_LOG_TWO_PI = 0.5 * math.log(2.0 * math.pi)
LOG_TWO = math.log(2.0)


@dataclass(frozen=True)
class ActionScale:
    """The affine map from unit actions in [-1, 1]^A to a Box's bounds [low, high].

    low, high: [A] arrays in the action space's dtype, finite, low < high (as
    envs.spaces.require_box_actions returns them).
    """

    low: np.ndarray
    high: np.ndarray

    def to_env(self, unit_actions: np.ndarray) -> np.ndarray:
        """a_env = low + (a + 1) (high - low) / 2, for unit actions a in [-1, 1]^A ([N, A] or [A])."""
        return (self.low + (np.asarray(unit_actions) + 1.0) * (0.5 * (self.high - self.low))).astype(self.low.dtype)


def squashed_gaussian_log_prob(pre_tanh: torch.Tensor, mean: torch.Tensor, log_std: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) = sum_i [log N(u_i; mu_i, sigma_i^2) - log(1 - tanh(u_i)^2)],  a = tanh(u)

    The change of variables a = tanh(u) divides the density by |da/du| = prod_i (1 - tanh(u_i)^2).
    log(1 - tanh(u)^2) is computed as 2 (log 2 - u - softplus(-2u)), which stays finite where
    tanh(u) rounds to +-1. pre_tanh, mean, log_std: [B, A]; returns [B].
    """
    standardised = (pre_tanh - mean) * torch.exp(-log_std)
    gaussian = -0.5 * standardised.square() - log_std - _HALF_LOG_TWO_PI
    log_tanh_derivative = 2.0 * (LOG_TWO - pre_tanh - functional.softplus(-2.0 * pre_tanh))
    return (gaussian - log_tanh_derivative).sum(dim=-1)


def squashed_gaussian_row(head: np.ndarray, noise: np.ndarray, actions: np.ndarray, standard_deviations: np.ndarray) -> float:
    """log pi(a|s) = sum_i [log N(u_i; mu_i, sigma_i^2) - log(1 - tanh(u_i)^2)],  a = tanh(u),  u = mu + sigma epsilon

    SquashedGaussianActor.forward for one row, for the compiled kernels (networks/compiled_continuous.py):
    head [2A] the output layer's values (mu, then log sigma before its clamp), noise epsilon [A];
    writes a into actions [A] and sigma into standard_deviations [A], returns log pi(a|s). The
    standardised sample (u - mu) / sigma is epsilon itself.
    """
    size = len(noise)
    total = 0.0
    for index in range(size):
        log_std = min(max(float(head[size + index]), LOG_STD_MIN), LOG_STD_MAX)
        standard_deviation = math.exp(log_std)
        epsilon = float(noise[index])
        pre_tanh = float(head[index]) + standard_deviation * epsilon
        actions[index] = math.tanh(pre_tanh)
        standard_deviations[index] = standard_deviation
        # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), softplus as torch's (x beyond 20: x).
        softplus = -2.0 * pre_tanh if -2.0 * pre_tanh > 20.0 else math.log1p(math.exp(-2.0 * pre_tanh))
        total += -0.5 * epsilon * epsilon - log_std - _HALF_LOG_TWO_PI - 2.0 * (LOG_TWO - pre_tanh - softplus)
    return total


def squashed_gaussian_gradient_row(
    head: np.ndarray, noise: np.ndarray, actions: np.ndarray, standard_deviations: np.ndarray,
    action_gradient: np.ndarray, log_prob_weight: float, head_gradient: np.ndarray,
) -> None:
    """dL/dmu_i = w 2 a_i + g_i (1 - a_i^2),  dL/dlog sigma_i = [w (2 a_i sigma_i epsilon_i - 1) + g_i (1 - a_i^2) sigma_i epsilon_i] 1[clamp passes]

    The gradient of L = w log pi(a|s) + (a term whose gradient with respect to a is g) for one row,
    through a = tanh(mu + sigma epsilon): d log pi / d mu_i = 2 a_i (the Gaussian term depends on
    epsilon alone) and d log pi / d log sigma_i = 2 a_i sigma_i epsilon_i - 1. The clamp of log sigma
    passes the gradient where the raw value lies in [LOG_STD_MIN, LOG_STD_MAX], as torch's clamp.
    head, noise, actions, standard_deviations as squashed_gaussian_row; action_gradient g [A];
    writes head_gradient [2A].
    """
    size = len(noise)
    for index in range(size):
        action = float(actions[index])
        spread = float(standard_deviations[index]) * float(noise[index])
        through_action = float(action_gradient[index]) * (1.0 - action * action)
        head_gradient[index] = log_prob_weight * 2.0 * action + through_action
        raw_log_std = float(head[size + index])
        passes = LOG_STD_MIN <= raw_log_std <= LOG_STD_MAX
        head_gradient[size + index] = (log_prob_weight * (2.0 * action * spread - 1.0) + through_action * spread) if passes else 0.0


def _reparameterised(mean: torch.Tensor, log_std: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """u = mu + sigma * epsilon, epsilon ~ N(0, I) drawn with `generator` (None: torch's global one):
    a sample of N(mu, diag sigma^2) through which gradients reach mu and sigma."""
    return mean + torch.exp(log_std) * torch.empty_like(mean).normal_(generator=generator)


class DeterministicActor(nn.Module):
    """mu(s) = tanh(W h(s) + b): DDPG's and TD3's policy, an action in [-1, 1]^A."""

    def __init__(self, observation_size: int, action_size: int, hidden_sizes: Sequence[int], activation: str = "relu"):
        super().__init__()
        self.torso = MLP(observation_size, hidden_sizes, activation)
        self.head = nn.Linear(self.torso.output_size, action_size)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        """[B, O] -> [B, A] unit actions."""
        return torch.tanh(self.head(self.torso(observations)))


class SquashedGaussianActor(nn.Module):
    """a = tanh(u), u ~ N(mu(s), diag sigma(s)^2): SAC's policy, sampled with the reparameterisation
    u = mu + sigma * epsilon, epsilon ~ N(0, I), so that gradients flow through the action."""

    def __init__(self, observation_size: int, action_size: int, hidden_sizes: Sequence[int], activation: str = "relu"):
        super().__init__()
        self.torso = MLP(observation_size, hidden_sizes, activation)
        # Mean and log sigma come from one layer: one matrix product instead of two.
        self.head = nn.Linear(self.torso.output_size, 2 * action_size)

    def distribution(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean, log_std) of u, each [B, A]; log_std clamped to [LOG_STD_MIN, LOG_STD_MAX]."""
        mean, log_std = self.head(self.torso(observations)).chunk(2, dim=-1)
        return mean, log_std.clamp(LOG_STD_MIN, LOG_STD_MAX)

    def forward(
        self, observations: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A reparameterised sample drawn with `generator`: (unit actions [B, A], log pi(a|s) [B])."""
        mean, log_std = self.distribution(observations)
        pre_tanh = _reparameterised(mean, log_std, generator)
        return torch.tanh(pre_tanh), squashed_gaussian_log_prob(pre_tanh, mean, log_std)

    def sample(self, observations: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The unit actions [B, A] of forward, from the same random draw, without their log-density:
        what acting needs (for one observation the log-density is about a third of the pass)."""
        return torch.tanh(_reparameterised(*self.distribution(observations), generator))

    def mode(self, observations: torch.Tensor) -> torch.Tensor:
        """tanh(mu(s)), the deterministic action used for evaluation: [B, A]."""
        return torch.tanh(self.distribution(observations)[0])


class QEnsemble(nn.Module):
    """K independent critics Q_k(s, a) = MLP_k([s, a]), evaluated together as batched matrix
    products: hidden layer l of all K critics is one torch.baddbmm over a [K, fan_in, fan_out]
    weight; the output layer, one unit per critic, is Q_k = sum_i h_ki w_ki + b_k, a product and
    a sum over the last axis.

    Why the output layer differs: torch's batched product with a single output column runs a slow
    path on the CPU (torch 2.13: 144 us for [2, 256, 256] x [2, 256, 1] on one thread, 498 us with
    its backward pass), the elementwise form takes 25 us (115 us with backward): about 0.7 ms of a
    SAC update of 256-unit critics (benchmarks/RESULTS.md, "SAC and TD3").

    Each critic is initialised like a stack of nn.Linear layers (uniform in +-1/sqrt(fan_in)),
    so K = 2 is numerically the same model as two separate MLP critics.
    """

    def __init__(
        self,
        observation_size: int,
        action_size: int,
        hidden_sizes: Sequence[int],
        n_critics: int,
        activation: str = "relu",
    ):
        super().__init__()
        self.n_critics = n_critics
        self.activation = activation_layer(activation)
        sizes = [observation_size + action_size, *hidden_sizes, 1]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for fan_in, fan_out in zip(sizes, sizes[1:]):
            bound = 1.0 / math.sqrt(fan_in)
            self.weights.append(nn.Parameter(torch.empty(n_critics, fan_in, fan_out).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n_critics, 1, fan_out).uniform_(-bound, bound)))

    def forward(
        self, observations: torch.Tensor, actions: torch.Tensor, count: int | None = None, frozen: bool = False
    ) -> torch.Tensor:
        """Q_k(s, a) for k < count (default all K): [count, B].

        frozen=True uses detached weights: gradients reach the actions but not the critics'
        parameters, which is all an actor loss needs (and saves their weight-gradient products).
        """
        count = self.n_critics if count is None else count
        hidden = torch.cat([observations, actions], dim=-1).expand(count, -1, -1)
        last = len(self.weights) - 1
        for index, (weight, bias) in enumerate(zip(self.weights, self.biases)):
            if count < self.n_critics:  # slicing costs a zero-filled gradient copy in the backward pass
                weight, bias = weight[:count], bias[:count]
            if frozen:
                weight, bias = weight.detach(), bias.detach()
            if index < last:
                hidden = self.activation(torch.baddbmm(bias, hidden, weight))
            else:
                # [K, B, H] * [K, 1, H] summed over H: the one-column product without torch's slow path.
                hidden = (hidden * weight.transpose(1, 2)).sum(-1) + bias.squeeze(-1)
        return hidden
