"""TRPO: conjugate gradient, Fisher-vector products against the explicit KL Hessian, the line search, learning."""

import csv
import math

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch.func import functional_call
from torch.nn.utils import parameters_to_vector

from rlfoundry import TRPO
from rlfoundry.losses.natural_gradient import (
    backtracking_line_search,
    conjugate_gradient,
    fisher_vector_product,
    natural_step_size,
    surrogate_advantage,
)
from rlfoundry.losses.policy_gradient import policy_gradient_loss
from rlfoundry.networks.policies import PolicyNetwork
from rlfoundry.run.checkpoint import NonFiniteError
from rlfoundry.run.config import ConfigError

from learning_checks import preset_returns

BOX3 = spaces.Box(-np.inf, np.inf, (3,), np.float32)


def test_conjugate_gradient_solves_a_known_spd_system():
    generator = torch.Generator().manual_seed(0)
    factor = torch.randn(6, 6, generator=generator, dtype=torch.float64)
    matrix = factor @ factor.T + 0.5 * torch.eye(6, dtype=torch.float64)
    right_side = torch.randn(6, generator=generator, dtype=torch.float64)
    solution = conjugate_gradient(lambda vector: matrix @ vector, right_side, iterations=6, residual_tolerance=0.0)
    torch.testing.assert_close(solution, torch.linalg.solve(matrix, right_side), rtol=1e-9, atol=1e-9)
    # A diagonal matrix with 2 distinct eigenvalues is solved in 2 iterations.
    diagonal = torch.tensor([2.0, 2.0, 5.0, 5.0], dtype=torch.float64)
    two_steps = conjugate_gradient(lambda vector: diagonal * vector, torch.ones(4, dtype=torch.float64), iterations=2)
    torch.testing.assert_close(two_steps, 1.0 / diagonal)


def test_conjugate_gradient_stops_on_the_squared_residual():
    # |b|^2 = 2e-8: above the default tolerance 1e-10, so a small gradient is still solved (two
    # distinct eigenvalues: two products); a tolerance above |b|^2 returns x = 0 without a product.
    diagonal = torch.tensor([1.0, 4.0], dtype=torch.float64)
    right_side = torch.full((2,), 1e-4, dtype=torch.float64)
    products = []

    def product(vector):
        products.append(vector)
        return diagonal * vector

    torch.testing.assert_close(conjugate_gradient(product, right_side, iterations=10), right_side / diagonal)
    assert len(products) == 2
    products.clear()
    solution = conjugate_gradient(product, right_side, iterations=10, residual_tolerance=3e-8)
    assert torch.equal(solution, torch.zeros(2, dtype=torch.float64))
    assert products == []


@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-1.0, 1.0, (2,), np.float32)])
def test_fisher_vector_product_matches_the_explicit_hessian_of_the_kl(action_space):
    torch.manual_seed(0)
    policy = PolicyNetwork(BOX3, action_space, hidden_sizes=(4,), orthogonal=False).double()
    observations = torch.randn(7, 3, dtype=torch.float64)
    names = [name for name, _ in policy.named_parameters()]
    shapes = [parameter.shape for parameter in policy.parameters()]
    old_vector = parameters_to_vector(policy.parameters()).detach()
    old_distribution = policy(observations).detach()

    def mean_kl_of(flat: torch.Tensor) -> torch.Tensor:
        pieces, start = {}, 0
        for name, shape in zip(names, shapes):
            pieces[name] = flat[start : start + shape.numel()].view(shape)
            start += shape.numel()
        return old_distribution.kl(functional_call(policy, pieces, (observations,))).mean()

    hessian = torch.autograd.functional.hessian(mean_kl_of, old_vector)
    vector = torch.randn(old_vector.numel(), dtype=torch.float64)
    mean_kl = old_distribution.kl(policy(observations)).mean()
    product = fisher_vector_product(mean_kl, list(policy.parameters()), vector, damping=0.1)
    torch.testing.assert_close(product, hessian @ vector + 0.1 * vector, rtol=1e-8, atol=1e-10)
    assert (hessian @ vector).abs().max() > 1e-3


def test_natural_step_size_puts_the_quadratic_kl_model_on_the_limit():
    fisher = torch.tensor([[2.0, 0.5], [0.5, 1.0]], dtype=torch.float64)
    direction = torch.tensor([0.3, -1.2], dtype=torch.float64)
    beta = natural_step_size(direction, fisher @ direction, max_kl=0.01)
    step = beta * direction
    assert 0.5 * float(step @ fisher @ step) == pytest.approx(0.01, rel=1e-12)
    with pytest.raises(ValueError, match="not positive"):
        natural_step_size(direction, torch.zeros(2, dtype=torch.float64), max_kl=0.01)


def test_surrogate_gradient_at_theta_old_is_the_vanilla_gradient():
    torch.manual_seed(1)
    policy = PolicyNetwork(BOX3, spaces.Discrete(3), hidden_sizes=(8,), orthogonal=False)
    observations, advantages = torch.randn(16, 3), torch.randn(16)
    actions = policy(observations).sample()
    log_probs = policy(observations).log_prob(actions)
    surrogate = surrogate_advantage(log_probs, log_probs.detach(), advantages)
    ascent = torch.autograd.grad(surrogate, list(policy.parameters()))
    descent = torch.autograd.grad(policy_gradient_loss(policy(observations).log_prob(actions), advantages), list(policy.parameters()))
    for up, down in zip(ascent, descent):
        torch.testing.assert_close(up, -down)


def test_line_search_takes_the_first_step_inside_the_trust_region():
    # KL grows with the square of the step, the improvement linearly: the first acceptable try is
    # k = 4 (0.8^8 * 0.05 = 0.0084 <= 0.01, while 0.8^6 * 0.05 = 0.0131 is too far).
    tried = []

    def try_step(fraction):
        tried.append(fraction)
        return 0.05 * fraction**2, fraction

    result = backtracking_line_search(try_step, max_kl=0.01, shrink_factor=0.8, max_backtracks=10)
    assert result.accepted and result.backtracks == 4
    assert result.fraction == pytest.approx(0.8**4) and result.kl <= 0.01
    assert tried == pytest.approx([0.8**k for k in range(5)])
    # A step that never improves the surrogate is never accepted.
    refused = backtracking_line_search(lambda fraction: (0.0, -fraction), max_kl=0.01, max_backtracks=3)
    assert not refused.accepted and refused.fraction == 0.0 and refused.backtracks == 3


def test_line_search_bounds_are_inclusive_for_kl_and_strict_for_improvement():
    # Powers of two, so every KL below is exact. A KL exactly at the limit is accepted (KL <= delta):
    # 0.25 * 0.5^2 = 0.0625 at k = 1.
    at_limit = backtracking_line_search(lambda fraction: (0.25 * fraction**2, 1.0), max_kl=0.0625, shrink_factor=0.5)
    assert at_limit.accepted and at_limit.backtracks == 1 and at_limit.fraction == 0.5
    # No improvement is no reason to step: an improvement of exactly 0 is refused.
    flat = backtracking_line_search(lambda fraction: (0.0, 0.0), max_kl=0.01, max_backtracks=3)
    assert not flat.accepted
    # The last of max_backtracks tries (k = 3 here) is made and can be accepted.
    tried = []

    def try_step(fraction):
        tried.append(fraction)
        return 0.0, (1.0 if fraction == 0.125 else -1.0)

    last = backtracking_line_search(try_step, max_kl=0.01, shrink_factor=0.5, max_backtracks=4)
    assert tried == [1.0, 0.5, 0.25, 0.125]
    assert last.accepted and last.backtracks == 3 and last.fraction == 0.125


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_every_accepted_step_stays_within_the_kl_limit(env_id):
    model = TRPO(env_id, n_envs=2, n_steps=64, batch_size=64, value_epochs=1, target_kl=0.005, seed=1, quiet=True)
    accepted = 0
    for _ in range(6):
        model.learn(128)
        # A fresh rollout's data with some advantages that are not all equal.
        rollout = model.collector.rollout
        batch = rollout.training_batch(rollout.rewards - rollout.values, np.zeros_like(rollout.values))
        old_parameters = parameters_to_vector(model.network.policy_parameters()).detach().clone()
        with torch.no_grad():
            old_distribution = model.network.distribution(batch.observations)
        result = model.update_policy(batch)
        with torch.no_grad():
            exact_kl = old_distribution.kl(model.network.distribution(batch.observations)).mean().item()
        if result.accepted:
            accepted += 1
            assert exact_kl <= 0.005 and exact_kl == pytest.approx(result.kl, rel=1e-4, abs=1e-9)
        else:
            assert torch.equal(parameters_to_vector(model.network.policy_parameters()), old_parameters)
    assert accepted >= 3


def test_value_epochs_0_logs_the_value_loss_it_did_not_compute_as_nan(tmp_path):
    TRPO("CartPole-v1", n_envs=2, n_steps=32, value_epochs=0, run_dir=tmp_path / "run", quiet=True).learn(64)
    with open(tmp_path / "run" / "progress.csv", newline="") as handle:
        logged = [row["train/value_loss"] for row in csv.DictReader(handle)]
    assert logged and all(math.isnan(float(value)) for value in logged)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy's overflow warnings on the way to the NaN
def test_rewards_too_large_for_float32_are_named_as_divergence_not_a_broken_fisher_product():
    def huge_rewards():
        return gym.wrappers.TransformReward(gym.make("CartPole-v1"), lambda reward: reward * 1e38)

    with pytest.raises(NonFiniteError, match="trpo diverged at step 64: the policy gradient's norm is nan"):
        TRPO(huge_rewards, quiet=True, n_steps=64, batch_size=32).learn(200)


def test_shared_torso_is_refused():
    with pytest.raises(ConfigError, match="shared_torso"):
        TRPO("CartPole-v1", shared_torso=True)


@pytest.mark.slow
def test_solves_cartpole_on_two_of_three_seeds():
    returns = preset_returns("trpo", "CartPole-v1")
    assert sum(value >= 475 for value in returns) >= 2, returns
