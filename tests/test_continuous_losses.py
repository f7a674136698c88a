"""Exact checks of the continuous-control targets, losses and networks (losses/continuous.py,
networks/continuous.py): hand-computed numbers, brute-force loops and numerical change of variables."""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from off_policy_checks import loop_q_values
from rlfoundry.envs.spaces import SpaceError, require_box_actions
from rlfoundry.losses.continuous import (
    critic_loss,
    deterministic_actor_loss,
    entropy_temperature_loss,
    polyak_update,
    q_target,
    smoothed_target_actions,
    soft_actor_loss,
    soft_q_target,
    target_entropy_for,
)
from rlfoundry.networks.continuous import (
    ActionScale,
    DeterministicActor,
    QEnsemble,
    SquashedGaussianActor,
    squashed_gaussian_log_prob,
)


def tensor(values):
    return torch.tensor(values, dtype=torch.float64)


# -- targets ----------------------------------------------------------------------------------------


def test_q_target_takes_the_minimum_over_the_twin_critics_and_masks_terminal_states():
    rewards = tensor([1.0, 2.0, -1.0])
    terminated = torch.tensor([False, True, False])
    next_q_values = tensor([[3.0, 5.0, -2.0], [4.0, 1.0, -6.0]])  # [K=2, B=3]
    # min over k: [3, 1, -6]; the second transition is terminal, so its next value is dropped.
    expected = tensor([1.0 + 0.5 * 3.0, 2.0, -1.0 + 0.5 * -6.0])
    assert torch.equal(q_target(rewards, terminated, next_q_values, 0.5), expected)


def test_q_target_with_one_critic_is_ddpgs_target_and_accepts_per_sample_discounts():
    rewards, terminated = tensor([1.0, 1.0]), torch.tensor([False, False])
    discounts = tensor([0.5, 0.25])  # gamma^k of k-step samples
    assert torch.equal(q_target(rewards, terminated, tensor([[4.0, 8.0]]), discounts), tensor([3.0, 3.0]))


def test_smoothed_target_actions_clip_the_noise_then_the_action():
    target_actions = tensor([[0.8, -0.9, 0.0, 0.1]])
    noise = tensor([[0.7, -0.3, -0.6, 0.25]])
    # noise clipped to [-0.5, 0.5]: [0.5, -0.3, -0.5, 0.25]; sums [1.3, -1.2, -0.5, 0.35] clipped to [-1, 1].
    expected = tensor([[1.0, -1.0, -0.5, 0.35]])
    assert torch.allclose(smoothed_target_actions(target_actions, noise, 0.5), expected, rtol=0, atol=1e-15)


def test_td3_target_with_seeded_smoothing_noise_equals_a_per_sample_loop():
    generator = torch.Generator().manual_seed(3)
    batch, action_size = 5, 2
    target_actions = torch.rand(batch, action_size, generator=generator, dtype=torch.float64) * 2 - 1
    noise = 0.2 * torch.randn(batch, action_size, generator=generator, dtype=torch.float64)
    rewards = torch.randn(batch, generator=generator, dtype=torch.float64)
    terminated = torch.tensor([False, True, False, False, True])
    critics = [lambda action: float(3 * action[0] - action[1]), lambda action: float(action[0] ** 2 + 1)]
    smoothed = smoothed_target_actions(target_actions, noise, 0.3)
    next_q_values = torch.stack([tensor([critic(action) for action in smoothed]) for critic in critics])
    targets = q_target(rewards, terminated, next_q_values, 0.9)
    for index in range(batch):
        action = [min(max(float(target_actions[index, j]) + min(max(float(noise[index, j]), -0.3), 0.3), -1.0), 1.0)
                  for j in range(action_size)]
        bootstrap = 0.0 if terminated[index] else 0.9 * min(critic(action) for critic in critics)
        assert float(targets[index]) == pytest.approx(float(rewards[index]) + bootstrap, abs=1e-12)


def test_soft_q_target_subtracts_the_entropy_term_and_masks_terminal_states():
    rewards = tensor([1.0, -1.0])
    terminated = torch.tensor([False, True])
    next_q_values = tensor([[2.0, 3.0], [4.0, 0.0]])  # min over k: [2, 0]
    next_log_probs = tensor([-1.5, 0.5])
    # y_0 = 1 + 0.9 (2 - 0.2 * -1.5) = 3.07;  y_1 = -1: terminal, neither Q nor entropy term.
    targets = soft_q_target(rewards, terminated, next_q_values, next_log_probs, 0.2, 0.9)
    assert torch.allclose(targets, tensor([3.07, -1.0]), rtol=0, atol=1e-12)


# -- losses -----------------------------------------------------------------------------------------


def test_critic_loss_sums_the_mean_squared_errors_of_the_critics_and_holds_the_target_fixed():
    q_values = tensor([[1.0, 2.0], [3.0, 5.0]]).requires_grad_()
    targets = tensor([1.0, 1.0]).requires_grad_()
    loss = critic_loss(q_values, targets)
    assert float(loss.detach()) == (0.0 + 1.0) / 2 + (4.0 + 16.0) / 2
    loss.backward()
    assert torch.equal(q_values.grad, tensor([[0.0, 1.0], [2.0, 4.0]]))  # d/dQ = 2 (Q - y) / B
    assert targets.grad is None


def test_actor_losses():
    assert float(deterministic_actor_loss(tensor([[1.0, 3.0]]))) == -2.0
    q_values = tensor([[2.0, 5.0], [3.0, 1.0]])  # min: [2, 1]
    log_probs = tensor([-1.0, 0.5])
    alpha = torch.tensor(0.5, requires_grad=True)
    loss = soft_actor_loss(q_values, log_probs, alpha)
    assert float(loss) == ((0.5 * -1.0 - 2.0) + (0.5 * 0.5 - 1.0)) / 2
    assert not loss.requires_grad  # alpha is held fixed in the actor's loss


def test_entropy_temperature_loss_raises_alpha_only_below_the_target_entropy():
    log_alpha = torch.tensor(0.5, requires_grad=True)
    log_probs = tensor([-1.0, -3.0])  # entropy estimate 2
    loss = entropy_temperature_loss(log_alpha, log_probs, target_entropy=-1.0)
    assert float(loss.detach()) == pytest.approx(-0.5 * ((-1.0 - 1.0) + (-3.0 - 1.0)) / 2)
    loss.backward()
    assert float(log_alpha.grad) == 3.0  # > 0: gradient descent lowers alpha, entropy 2 > target -1
    log_alpha.grad = None
    entropy_temperature_loss(log_alpha, log_probs, target_entropy=5.0).backward()
    assert float(log_alpha.grad) == -3.0  # entropy 2 < target 5: alpha goes up


@pytest.mark.parametrize("action_size", [1, 2, 6, 17])
def test_target_entropy_is_minus_the_action_dimension(action_size):
    assert target_entropy_for(action_size) == -action_size


def test_polyak_update_is_exact():
    targets = [tensor([1.0, 2.0]), tensor([[-4.0]])]
    sources = [tensor([3.0, -2.0]), tensor([[4.0]])]
    polyak_update(targets, sources, 0.25)  # dyadic numbers: every product and sum is exact
    assert torch.equal(targets[0], tensor([1.5, 1.0])) and torch.equal(targets[1], tensor([[-2.0]]))
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(100, generator=generator, dtype=torch.float64)
    source = torch.randn(100, generator=generator, dtype=torch.float64)
    expected = 0.005 * source + 0.995 * target
    polyak_update([target], [source], 0.005)
    assert torch.allclose(target, expected, rtol=0, atol=1e-15)
    polyak_update([target], [source], 1.0)
    assert torch.equal(target, source)  # tau = 1 copies exactly


# -- the tanh-Gaussian policy -------------------------------------------------------------------------


def normal_log_density(values, mean, std):
    return -0.5 * ((values - mean) / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def test_tanh_gaussian_log_prob_equals_a_numerical_change_of_variables():
    mean, log_std = tensor([[0.3, -1.2, 0.0]]), tensor([[-0.5, 0.2, 1.0]])
    pre_tanh = tensor([[0.7, -2.5, 4.0]])
    step = 1e-6
    total = 0.0
    for index in range(3):
        u, mu, sigma = float(pre_tanh[0, index]), float(mean[0, index]), math.exp(float(log_std[0, index]))
        derivative = (math.tanh(u + step) - math.tanh(u - step)) / (2 * step)  # da/du by central differences
        total += normal_log_density(u, mu, sigma) - math.log(derivative)
    assert float(squashed_gaussian_log_prob(pre_tanh, mean, log_std)[0]) == pytest.approx(total, abs=1e-8)
    reference = torch.distributions.TransformedDistribution(
        torch.distributions.Normal(mean, log_std.exp()), [torch.distributions.TanhTransform()]
    )
    assert float(squashed_gaussian_log_prob(pre_tanh, mean, log_std)[0]) == pytest.approx(
        float(reference.log_prob(torch.tanh(pre_tanh)).sum()), abs=1e-9
    )


def test_tanh_gaussian_density_integrates_to_one_over_the_action_interval():
    actions = torch.linspace(-1, 1, 400_001, dtype=torch.float64)[1:-1]
    pre_tanh = torch.atanh(actions)[:, None]
    density = squashed_gaussian_log_prob(pre_tanh, tensor([[0.4]]), tensor([[-0.3]])).exp()
    assert float(torch.trapezoid(density, actions)) == pytest.approx(1.0, abs=1e-4)


def test_tanh_correction_stays_finite_where_tanh_rounds_to_one():
    log_prob = squashed_gaussian_log_prob(torch.tensor([[20.0, -30.0]]), torch.zeros(1, 2), torch.zeros(1, 2))
    naive = torch.log(1 - torch.tanh(torch.tensor([20.0])) ** 2)
    assert torch.isinf(naive).all() and torch.isfinite(log_prob).all()
    # log(1 - tanh(u)^2) = log 4 - 2|u| - 2 log(1 + e^{-2|u|}) ~ log 4 - 2|u| for large |u|.
    expected = normal_log_density(20.0, 0, 1) + normal_log_density(-30.0, 0, 1) - (math.log(4) - 40) - (math.log(4) - 60)
    assert float(log_prob[0]) == pytest.approx(expected, rel=1e-6)


def test_squashed_gaussian_actor_samples_by_reparameterisation_and_reports_its_log_prob():
    torch.manual_seed(0)
    actor = SquashedGaussianActor(3, 2, (16,))
    observations = torch.randn(64, 3)
    torch.manual_seed(1)
    actions, log_probs = actor(observations)
    mean, log_std = actor.distribution(observations)
    torch.manual_seed(1)
    pre_tanh = mean + log_std.exp() * torch.randn_like(mean)
    assert torch.equal(actions, torch.tanh(pre_tanh))
    assert torch.allclose(log_probs, squashed_gaussian_log_prob(pre_tanh, mean, log_std))
    assert ((actions > -1) & (actions < 1)).all()
    actions.sum().backward()  # gradients reach the parameters through the sampled action
    assert all(parameter.grad is not None for parameter in actor.parameters())
    assert torch.equal(actor.mode(observations), torch.tanh(mean))
    torch.manual_seed(1)
    assert torch.equal(actor.sample(observations), actions)  # acting draws exactly what forward draws


def test_squashed_gaussian_actor_bounds_log_std():
    # Head outputs far outside [-20, 2] are clamped: sigma = e^50 would overflow a float32 sample and
    # sigma = e^-50 the log-density's 1 / sigma.
    actor = SquashedGaussianActor(3, 2, (4,))
    with torch.no_grad():
        actor.head.weight.zero_()
        actor.head.bias.copy_(torch.tensor([0.5, -0.5, 50.0, -50.0]))  # the means, then the log stds
    mean, log_std = actor.distribution(torch.zeros(1, 3))
    assert mean.tolist() == [[0.5, -0.5]] and log_std.tolist() == [[2.0, -20.0]]


def test_deterministic_actor_acts_in_the_unit_box():
    actor = DeterministicActor(3, 2, (8, 8))
    actions = actor(100 * torch.randn(50, 3))
    assert actions.shape == (50, 2) and (actions.abs() <= 1).all()


# -- the batched critics ------------------------------------------------------------------------------


def test_q_ensemble_equals_independent_critics_computed_by_loops():
    torch.manual_seed(0)
    critics = QEnsemble(3, 2, (5, 4), n_critics=3)
    observations, actions = torch.randn(6, 3), torch.rand(6, 2) * 2 - 1
    expected = loop_q_values(critics, observations.double().numpy(), actions.double().numpy())
    assert np.allclose(critics(observations, actions).detach().numpy(), expected, atol=1e-5)
    assert np.allclose(critics(observations, actions, count=1).detach().numpy(), expected[:1], atol=1e-5)


def test_q_ensemble_initialises_each_layer_like_nn_linear():
    critics = QEnsemble(10, 2, (64,), n_critics=2)
    for weight, bias in zip(critics.weights, critics.biases):
        bound = 1 / math.sqrt(weight.shape[1])
        assert weight.abs().max() <= bound and bias.abs().max() <= bound
        assert weight.abs().max() > 0.9 * bound  # uniform over the whole interval
    assert not torch.equal(critics.weights[1][0], critics.weights[1][1])  # the critics are independent


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_q_ensemble_gradients_match_finite_differences(activation):
    # Checks the in-place ReLU and the product-and-sum output layer against numerical derivatives,
    # for the parameters and the actions (the actor loss's path).
    torch.manual_seed(0)
    critics = QEnsemble(3, 2, (5, 4), n_critics=2, activation=activation).double()
    names = [name for name, _ in critics.named_parameters()]
    parameters = [parameter.detach().clone().requires_grad_() for parameter in critics.parameters()]
    observations = torch.randn(6, 3, dtype=torch.float64)
    actions = (torch.rand(6, 2, dtype=torch.float64) * 2 - 1).requires_grad_()

    def q_values(actions, *parameters):
        return torch.func.functional_call(critics, dict(zip(names, parameters)), (observations, actions))

    assert torch.autograd.gradcheck(q_values, (actions, *parameters))


def test_frozen_critics_pass_gradients_to_the_actions_only():
    torch.manual_seed(0)
    critics = QEnsemble(3, 1, (8,), n_critics=2)
    observations, actions = torch.randn(4, 3), torch.zeros(4, 1, requires_grad=True)
    frozen = critics(observations, actions, frozen=True)
    assert torch.equal(frozen, critics(observations, actions).detach())
    frozen.sum().backward()
    assert actions.grad is not None and actions.grad.abs().sum() > 0
    assert all(parameter.grad is None for parameter in critics.parameters())


# -- action bounds ------------------------------------------------------------------------------------


def test_action_scale_maps_the_unit_box_onto_the_bounds():
    scale = ActionScale(np.array([-2.0, 0.0], dtype=np.float32), np.array([2.0, 1.0], dtype=np.float32))
    unit = np.array([[-1.0, -1.0], [0.0, 0.0], [1.0, 1.0], [0.5, -0.5]], dtype=np.float32)
    expected = np.array([[-2.0, 0.0], [0.0, 0.5], [2.0, 1.0], [1.0, 0.25]], dtype=np.float32)
    env_actions = scale.to_env(unit)
    assert np.array_equal(env_actions, expected) and env_actions.dtype == np.float32


def test_require_box_actions_names_the_space_it_rejects():
    low, high = require_box_actions(spaces.Box(-2.0, 2.0, (1,)), "SAC", "DQN")
    assert low.tolist() == [-2.0] and high.tolist() == [2.0]
    with pytest.raises(SpaceError, match=r"Discrete\(3\).*use DQN"):
        require_box_actions(spaces.Discrete(3), "SAC", "DQN")
    with pytest.raises(SpaceError, match=r"inf.*finite"):
        require_box_actions(spaces.Box(-np.inf, np.inf, (2,)), "TD3", "DQN")
    with pytest.raises(SpaceError, match="1-D"):
        require_box_actions(spaces.Box(-1.0, 1.0, (2, 2)), "TD3", "DQN")
    with pytest.raises(SpaceError, match=r"int64.*float Box.*MultiDiscrete"):
        require_box_actions(spaces.Box(0, 4, (2,), np.int64), "SAC", "DQN")
