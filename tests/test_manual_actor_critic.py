"""The hand-written actor-critic gradient step (networks/manual_actor_critic.py and the loss
gradients in losses/policy_gradient.py) against autograd and against hand-computed numbers.

Where autograd's own operation order is followed (Categorical policies without an entropy bonus
or value clipping: the CartPole presets) the result is bitwise autograd's, so PPO and A2C train to
identical weights either way; elsewhere the two differ by float rounding only."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from rlfoundry.algorithms.a2c import A2C
from rlfoundry.algorithms.ppo import PPO
from rlfoundry.losses.policy_gradient import (
    clipped_surrogate_loss,
    clipped_surrogate_loss_and_gradient,
    policy_gradient_loss,
    policy_gradient_loss_gradient,
    value_loss,
    value_loss_and_gradient,
)
from rlfoundry.networks.manual_actor_critic import ManualActorCritic
from rlfoundry.networks.policies import ActorCritic

VECTOR = spaces.Box(-np.inf, np.inf, (5,), np.float32)
ROWS = 37  # not a power of two, so that a division by B rounds


def autograd_gradient(loss_function, first, *rest):
    leaf = first.clone().requires_grad_()
    loss_function(leaf, *rest).backward()
    return leaf.grad


def test_clipped_surrogate_gradient_by_hand():
    # ratios 1.0 (inside the clip range), 1.5 with A > 0 and 0.5 with A < 0 (clipped: no gradient),
    # 1.5 with A < 0 (the unclipped term is the minimum: full gradient).
    ratios = torch.tensor([1.0, 1.5, 0.5, 1.5])
    advantages = torch.tensor([1.0, 1.0, -1.0, -1.0])
    old_log_probs = torch.zeros(4)
    loss, gradient = clipped_surrogate_loss_and_gradient(ratios.log(), old_log_probs, advantages, 0.2)
    # -mean of the minima: -(1.0 + 1.2 - 0.8 - 1.5) / 4, the clipped terms 1.2 and -0.8 being the
    # smaller in the second and third rows.
    assert loss.item() == pytest.approx(0.025)
    torch.testing.assert_close(gradient, torch.tensor([-0.25, 0.0, 0.0, 0.375]))
    assert torch.equal(gradient, autograd_gradient(clipped_surrogate_loss, ratios.log(), old_log_probs, advantages, 0.2))


def test_loss_gradients_equal_autograd_bitwise():
    generator = torch.Generator().manual_seed(0)
    log_probs = torch.randn(ROWS, generator=generator) * 0.3 - 1.0
    old_log_probs = log_probs + torch.randn(ROWS, generator=generator) * 0.3  # ratios on both sides of the clip
    advantages = torch.randn(ROWS, generator=generator)
    values, returns = torch.randn(ROWS, generator=generator), torch.randn(ROWS, generator=generator)
    assert torch.equal(
        policy_gradient_loss_gradient(advantages), autograd_gradient(policy_gradient_loss, log_probs, advantages)
    )
    policy_loss, policy_gradient = clipped_surrogate_loss_and_gradient(log_probs, old_log_probs, advantages, 0.2)
    assert torch.equal(policy_gradient, autograd_gradient(clipped_surrogate_loss, log_probs, old_log_probs, advantages, 0.2))
    assert torch.equal(policy_loss, clipped_surrogate_loss(log_probs, old_log_probs, advantages, 0.2))
    critic_loss, value_gradient = value_loss_and_gradient(values, returns)
    assert torch.equal(value_gradient, autograd_gradient(value_loss, values, returns))
    torch.testing.assert_close(critic_loss, value_loss(values, returns), rtol=1e-6, atol=0.0)


def test_clipped_value_loss_gradient_equals_autograd():
    generator = torch.Generator().manual_seed(1)
    values, returns = torch.randn(ROWS, generator=generator), torch.randn(ROWS, generator=generator)
    old_values = values + torch.randn(ROWS, generator=generator) * 0.3  # steps inside and beyond the clip
    loss, gradient = value_loss_and_gradient(values, returns, old_values, 0.2)
    torch.testing.assert_close(gradient, autograd_gradient(value_loss, values, returns, old_values, 0.2), rtol=1e-6, atol=1e-8)
    assert torch.equal(loss, value_loss(values, returns, old_values, 0.2))
    assert (gradient == 0).any() and (gradient != 0).any()  # both branches met
    with pytest.raises(ValueError, match="old_values"):
        value_loss_and_gradient(values, returns, None, 0.2)


def test_clipped_value_loss_gradient_at_ties_by_hand():
    # Random data never ties; these rows do (V_old = 0, c = 1, B = 4, all numbers exact):
    # row 0: V = 3 clipped to 1, R = 2: errors 1 and -1 tie beyond the clip, torch.max halves 2 * 1 / 4;
    # row 1: V - V_old = c exactly: both errors -2, the clamp still passes its gradient: 2 * -2 / 4;
    # row 2: the clipped error -2 is the larger: no gradient; row 3: the unclipped error 3 is: 2 * 3 / 4.
    values, returns = torch.tensor([3.0, 1.0, 2.0, 3.0]), torch.tensor([2.0, 3.0, 3.0, 0.0])
    old_values = torch.zeros(4)
    loss, gradient = value_loss_and_gradient(values, returns, old_values, 1.0)
    assert loss.item() == (1.0 + 4.0 + 4.0 + 9.0) / 4
    assert gradient.tolist() == [0.25, -1.0, 0.0, 1.5]
    assert torch.equal(gradient, autograd_gradient(value_loss, values, returns, old_values, 1.0))


def network_and_manual(action_space, activation="tanh", **options):
    torch.manual_seed(0)
    network = ActorCritic(VECTOR, action_space, (16, 8), activation, **options)
    return network, ManualActorCritic.of(network)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("entropy_weight", [0.0, -0.013])
@pytest.mark.parametrize("action_space", [spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)], ids=["categorical", "gaussian"])
def test_backward_equals_autograd(action_space, entropy_weight, activation):
    network, manual = network_and_manual(action_space, activation, log_std_init=-0.5)
    generator = torch.Generator().manual_seed(2)
    observations = torch.randn(ROWS, 5, generator=generator)
    log_prob_weights = torch.randn(ROWS, generator=generator)
    value_weights = torch.randn(ROWS, generator=generator)
    with torch.no_grad():
        actions = network.distribution(observations).sample()
    distribution, values = network(observations)
    loss = (log_prob_weights * distribution.log_prob(actions)).sum() + entropy_weight * distribution.entropy().sum()
    (loss + (value_weights * values).sum()).backward()
    expected = [parameter.grad.clone() for parameter in network.parameters()]
    for parameter in network.parameters():
        parameter.grad.fill_(float("nan"))  # backward must overwrite, not accumulate
    with torch.no_grad():
        forward = manual.forward(observations)
        assert torch.equal(forward.values, values)
        manual.backward(forward, actions, log_prob_weights, value_weights, entropy_weight)
    for parameter, gradient in zip(network.parameters(), expected):
        torch.testing.assert_close(parameter.grad, gradient, rtol=1e-5, atol=1e-7)


def test_forward_is_the_network_bitwise():
    for action_space in (spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)):
        network, manual = network_and_manual(action_space)
        observations = torch.randn(11, 5)
        with torch.no_grad():
            distribution, values = network(observations)
            forward = manual.forward(observations)
        assert torch.equal(forward.values, values)
        expected = distribution.log_probabilities if isinstance(action_space, spaces.Discrete) else distribution.mean
        actual = forward.distribution.log_probabilities if isinstance(action_space, spaces.Discrete) else forward.distribution.mean
        assert torch.equal(actual, expected)


def test_networks_it_does_not_cover_keep_autograd():
    assert network_and_manual(spaces.Discrete(3), shared_torso=True)[1] is None
    assert network_and_manual(spaces.Discrete(3), "gelu")[1] is None
    assert network_and_manual(spaces.MultiDiscrete([2, 3]))[1] is None
    image = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    assert ManualActorCritic.of(ActorCritic(image, spaces.Discrete(3), shared_torso=True)) is None
    assert PPO("CartPole-v1", quiet=True, shared_torso=True).collector.manual is None


def trained_weights(algorithm, env_id, manual, config):
    model = algorithm(env_id, quiet=True, backend="torch", **config)
    assert model.collector.manual is not None
    if not manual:
        model.collector.manual = None
    model.learn(3 * model.config.rollout_size)
    return [parameter.detach().clone() for parameter in model.network.parameters()]


BITWISE = [
    (PPO, "CartPole-v1", {"n_envs": 2, "n_steps": 50, "batch_size": 30, "n_epochs": 3, "gamma": 0.98}),
    (PPO, "CartPole-v1", {"n_envs": 2, "n_steps": 32, "batch_size": 64, "n_epochs": 4, "activation": "relu"}),
    (A2C, "CartPole-v1", {"n_envs": 4, "n_steps": 5}),
]
CLOSE = [
    (PPO, "CartPole-v1", {"n_envs": 2, "n_steps": 50, "batch_size": 30, "n_epochs": 3, "entropy_coef": 0.01}),
    (PPO, "CartPole-v1", {"n_envs": 2, "n_steps": 50, "batch_size": 30, "n_epochs": 3, "value_clip_range": 0.2, "value_coef": 0.37}),
    (PPO, "Pendulum-v1", {"n_envs": 2, "n_steps": 64, "batch_size": 32, "n_epochs": 3, "entropy_coef": 0.01, "log_std_init": -1.0}),
    (A2C, "CartPole-v1", {"n_envs": 4, "n_steps": 5, "entropy_coef": 0.01, "optimizer": "adam"}),
    (A2C, "Pendulum-v1", {"n_envs": 4, "n_steps": 8}),
]


@pytest.mark.parametrize("algorithm, env_id, config", BITWISE, ids=lambda value: getattr(value, "__name__", None))
def test_training_equals_autograd_training_bitwise(algorithm, env_id, config):
    for written, automatic in zip(trained_weights(algorithm, env_id, True, config), trained_weights(algorithm, env_id, False, config)):
        assert torch.equal(written, automatic)


@pytest.mark.parametrize("algorithm, env_id, config", CLOSE, ids=lambda value: getattr(value, "__name__", None))
def test_training_equals_autograd_training_to_rounding(algorithm, env_id, config):
    for written, automatic in zip(trained_weights(algorithm, env_id, True, config), trained_weights(algorithm, env_id, False, config)):
        torch.testing.assert_close(written, automatic, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "compiled"])
@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_written_out_gradients_stay_views_of_one_flat_tensor_through_training(env_id, backend):
    """What lets clipping measure and scale them as one tensor (run.optimizer_step.clip_gradient_norm),
    and the compiled kernels write them through numpy views of the same memory."""
    model = PPO(env_id, quiet=True, n_envs=2, n_steps=16, batch_size=16, n_epochs=2, backend=backend)
    model.learn(2 * model.config.rollout_size)
    flat = model.collector.manual.gradient
    parameters = list(model.network.parameters())
    assert flat.numel() == sum(parameter.numel() for parameter in parameters)
    assert all(parameter.grad._base is flat for parameter in parameters)
    assert flat.abs().sum() > 0
