"""An actor-critic's gradient step written out, without autograd: the policy and value MLPs
(rlfoundry.networks.manual_mlp) and the derivatives of the action distributions.

For a loss L = sum_t w_t log pi(a_t|s_t) + c sum_t H[pi(.|s_t)] + sum_t u_t V(s_t), where the
algorithm's loss gives the weights (w_t = dL/d log pi from losses.policy_gradient, c the entropy
weight, u_t = dL/dV), the chain rule through the distribution's parameters is

    Categorical, logits z, p = softmax(z), l = log p:
        dL/dz_tj = w_t (1[j = a_t] - p_tj) - c p_tj (l_tj + H_t)
    Diagonal Gaussian, mean mu, state-independent log-std s, x = (a - mu) exp(-s):
        dL/dmu_td = w_t x_td exp(-s_d)
        dL/ds_d  = sum_t w_t (x_td^2 - 1) + c B          (dH_t/ds_d = 1)

and the MLPs carry dL/dz (or dL/dmu) and u back to their weights.

Why: PPO's minibatch steps on small networks (CartPole: two 4 -> 64 -> 64 nets, 256 rows, 7,800
steps) spend more time in autograd's graph than in the matrix products; written out, a step is
the products, the activations' derivatives and a few elementwise operations (RESULTS.md, "PPO").
tests/test_manual_actor_critic.py checks every gradient against autograd. Networks it does not
cover (a shared torso, an MLP without hidden layers, the CNN, ELU or GELU, MultiDiscrete
actions) keep autograd.
"""

from __future__ import annotations

import copy
from typing import NamedTuple

import torch
from torch import nn

from rlfoundry.networks.manual_mlp import ManualMLP, copy_gradients, gradient_buffer, gradient_views
from rlfoundry.networks.policies import ActorCritic, Categorical, CategoricalHead, DiagonalGaussian, GaussianHead


class ActorCriticPass(NamedTuple):
    """What forward computed and backward reads: both MLPs' layer outputs, the distribution and V(s) [B]."""

    policy_outputs: list[torch.Tensor]
    value_outputs: list[torch.Tensor]
    distribution: Categorical | DiagonalGaussian
    values: torch.Tensor


class ManualActorCritic(NamedTuple):
    """An ActorCritic with separate policy and value MLPs, differentiated by hand. log_std is the
    Gaussian head's parameter (None for a Categorical head); gradient holds every parameter's .grad
    as a view, in the network's parameter order (manual_mlp.gradient_views)."""

    policy: ManualMLP
    value: ManualMLP
    log_std: nn.Parameter | None
    gradient: torch.Tensor

    @classmethod
    def of(cls, network: ActorCritic) -> "ManualActorCritic | None":
        """The written-out form of `network`; None for networks it does not cover."""
        head = network.policy_head
        if network.value_torso is None or not isinstance(head, (CategoricalHead, GaussianHead)):
            return None
        output, log_std = (head.logits, None) if isinstance(head, CategoricalHead) else (head.mean, head.log_std)
        policy = ManualMLP.of(network.policy_torso, output)
        value = ManualMLP.of(network.value_torso, network.value_head)
        if policy is None or value is None:
            return None
        return cls(policy, value, log_std, gradient_views(list(network.parameters())))

    def __deepcopy__(self, memo: dict) -> "ManualActorCritic":
        # The MLPs copy their parameters' .grad views (ManualMLP.__deepcopy__); log_std's is one too.
        copy_gradients(() if self.log_std is None else (self.log_std,), memo)
        return type(self)._make(copy.deepcopy(tuple(self), memo))

    def forward(self, observations: torch.Tensor) -> ActorCriticPass:
        """pi(.|s) and V(s) for observations [B, *obs], as ActorCritic computes them. Call under
        torch.no_grad()."""
        policy_outputs = self.policy.forward(observations)
        value_outputs = self.value.forward(observations)
        distribution = self._distribution(policy_outputs[-1])
        return ActorCriticPass(policy_outputs, value_outputs, distribution, value_outputs[-1].squeeze(-1))

    def distribution(self, observations: torch.Tensor) -> Categorical | DiagonalGaussian:
        """pi(.|s) alone (acting), as ActorCritic.distribution computes it. Call under torch.no_grad()."""
        return self._distribution(self.policy.forward(observations)[-1])

    def _distribution(self, parameters: torch.Tensor) -> Categorical | DiagonalGaussian:
        return Categorical(parameters) if self.log_std is None else DiagonalGaussian(parameters, self.log_std)

    def backward(
        self,
        forward: ActorCriticPass,
        actions: torch.Tensor,
        log_prob_weights: torch.Tensor,
        value_weights: torch.Tensor,
        entropy_weight: float = 0.0,
    ) -> None:
        """Write into every parameter's .grad the gradient of
        L = sum_t w_t log pi(a_t|s_t) + c sum_t H_t + sum_t u_t V(s_t), with w = log_prob_weights [B],
        u = value_weights [B] and c = entropy_weight. Call under torch.no_grad()."""
        distribution = forward.distribution
        if isinstance(distribution, Categorical):
            output_gradient = categorical_gradient(distribution, actions, log_prob_weights, entropy_weight)
        else:
            assert self.log_std is not None  # a Gaussian pass comes from a Gaussian head's log_std (_distribution)
            output_gradient, log_std_gradient = gaussian_gradient(distribution, actions, log_prob_weights, entropy_weight)
            gradient_buffer(self.log_std).copy_(log_std_gradient)
        self.policy.backward(forward.policy_outputs, output_gradient)
        self.value.backward(forward.value_outputs, value_weights.unsqueeze(-1))


def categorical_gradient(
    distribution: Categorical, actions: torch.Tensor, log_prob_weights: torch.Tensor, entropy_weight: float
) -> torch.Tensor:
    """dL/dz [B, n] = w_t (1[j = a_t] - p_tj) - c p_tj (l_tj + H_t) for the logits z."""
    log_probabilities = distribution.log_probabilities
    # d/dl of the loss, then log-softmax's backward g - p sum_j g_j (the order autograd uses).
    gradient = torch.zeros_like(log_probabilities).scatter_(-1, actions.long().unsqueeze(-1), log_prob_weights.unsqueeze(-1))
    if entropy_weight:
        # H = -sum_j p_j l_j with p = exp(l): dH/dl_j = -p_j (l_j + 1).
        gradient.sub_(distribution.probabilities * (log_probabilities + 1.0) * entropy_weight)
    return torch.ops.aten._log_softmax_backward_data(gradient, log_probabilities, -1, log_probabilities.dtype)


def gaussian_gradient(
    distribution: DiagonalGaussian, actions: torch.Tensor, log_prob_weights: torch.Tensor, entropy_weight: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """(dL/dmu [B, D], dL/ds [D]) = (w_t x_td exp(-s_d), sum_t w_t (x_td^2 - 1) + c B), x = (a - mu) exp(-s)."""
    inverse_std = torch.exp(-distribution.log_std)
    standardised = (actions - distribution.mean) * inverse_std
    weights = log_prob_weights.unsqueeze(-1)
    mean_gradient = weights * standardised * inverse_std
    log_std_gradient = (weights * (standardised.square() - 1.0)).sum(dim=0)
    if entropy_weight:
        log_std_gradient.add_(entropy_weight * len(actions))
    return mean_gradient, log_std_gradient
