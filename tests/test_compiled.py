"""The compiled backend (networks/compiled_mlp.py, compiled_actor_critic.py, compiled_q_network.py and
the losses' row functions) against autograd, torch's Adam and the tensor losses.

The kernels use another BLAS, reassociated sums and a rational tanh, so they agree with PyTorch to
float32 rounding, not bitwise: gradients are compared with rtol 1e-4 (a handful of float32 roundings
through three layers), the row functions, which are float64 scalar code, with the tensor losses to
float32 precision."""

import copy
import math
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import gymnasium

import numpy as np
import pytest
import torch
from gymnasium import spaces
from torch import nn

from off_policy_checks import TINY
from rlfoundry.algorithms.a2c import A2C
from rlfoundry.algorithms.dqn import DQN
from rlfoundry.algorithms.ppo import PPO
from rlfoundry.algorithms.td3 import TD3
from rlfoundry.data.rollout import RolloutBatch
from rlfoundry.losses.dqn import double_dqn_target_row, double_dqn_targets, q_value_loss, q_value_loss_gradient, td_error_loss
from rlfoundry.losses.dqn import td_error_row
from rlfoundry.losses.policy_gradient import (
    approximate_kl,
    approximate_kl_row,
    clipped_surrogate_loss,
    clipped_surrogate_loss_and_gradient,
    clipped_surrogate_row,
    normalize_advantages,
    policy_gradient_loss,
    policy_gradient_row,
    value_loss,
    value_loss_and_gradient,
    value_row,
)
from rlfoundry.networks.compiled_actor_critic import CompiledActorCritic
from rlfoundry.networks.compiled_mlp import FLOAT, CompiledAdam, CompiledMLP, tanh32_array
from rlfoundry.networks.compiled_q_network import CompiledQNetwork
from rlfoundry.networks.manual_actor_critic import ManualActorCritic
from rlfoundry.networks.manual_mlp import ManualMLP, gradient_views
from rlfoundry.networks.policies import ActorCritic, make_torso
from rlfoundry.run.config import ConfigError
from rlfoundry.run.optimizer_step import clip_gradient_norm, step_optimizer

VECTOR = spaces.Box(-np.inf, np.inf, (5,), np.float32)
ROWS = 37  # not a power of two, so that a division by B rounds
CATEGORICAL, GAUSSIAN = spaces.Discrete(3), spaces.Box(-1, 1, (2,), np.float32)


def assert_gradients_close(actual, expected):
    """Each parameter's gradient to rtol 1e-4, with atol 1e-4 of that gradient's largest entry."""
    for got, want in zip(actual, expected):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-9)


# -- tanh32 and the MLP passes -------------------------------------------------------------------


def test_tanh32_is_within_five_ulp_of_float64_tanh():
    inputs = np.concatenate([np.linspace(-12.0, 12.0, 2_000_001, dtype=FLOAT), np.array([0.0, -0.0, 1e-30, -1e-30], FLOAT)])
    outputs = np.empty_like(inputs)
    tanh32_array(inputs, outputs)
    exact = np.tanh(inputs.astype(np.float64))
    spacing = np.spacing(np.abs(exact).astype(FLOAT)).astype(np.float64)
    assert np.max(np.abs(outputs - exact) / spacing) <= 5.0
    assert np.all(np.abs(outputs) <= 1.0)
    special = np.array([np.inf, -np.inf, np.nan], FLOAT)
    tanh32_array(special, outputs[:3])
    # +-inf land on the clamp (within 5 ulp of +-1 as above); NaN stays NaN.
    assert outputs[0] == -outputs[1] and 1.0 - outputs[0] <= 5 * np.spacing(FLOAT(0.9))
    assert np.isnan(outputs[2])


def mlp(observation_space, hidden_sizes, activation, outputs=3):
    torch.manual_seed(0)
    torso = make_torso(observation_space, hidden_sizes, activation)
    head = nn.Linear(torso.output_size, outputs)
    manual = ManualMLP.of(torso, head)
    gradient_views(list(torso.parameters()) + list(head.parameters()))
    return torso, head, manual


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("hidden_sizes", [(7,), (16, 8), (5, 9, 6)])
@pytest.mark.parametrize("observation_space", [VECTOR, spaces.Discrete(6)], ids=["vector", "one-hot"])
def test_mlp_passes_equal_autograd(observation_space, hidden_sizes, activation):
    torso, head, manual = mlp(observation_space, hidden_sizes, activation)
    compiled = CompiledMLP(manual, rows=4)  # fewer rows than the batch: the buffers grow
    generator = torch.Generator().manual_seed(1)
    if isinstance(observation_space, spaces.Discrete):
        observations = torch.randint(0, 6, (ROWS,), generator=generator)
    else:
        observations = torch.randn(ROWS, 5, generator=generator) * 2.0
    output_gradient = torch.randn(ROWS, 3, generator=generator)
    parameters = list(torso.parameters()) + list(head.parameters())
    outputs = head(torso(observations))
    (outputs * output_gradient).sum().backward()
    expected = [parameter.grad.clone() for parameter in parameters]
    for parameter in parameters:
        parameter.grad.fill_(math.nan)  # backward must overwrite, not accumulate
    inputs = compiled.inputs(observations)
    compiled_outputs = np.zeros((ROWS, 3), FLOAT)
    compiled.forward(inputs, compiled_outputs)
    torch.testing.assert_close(torch.from_numpy(compiled_outputs), outputs.detach(), rtol=1e-5, atol=1e-6)
    compiled.backward(inputs, output_gradient.numpy())
    assert_gradients_close([parameter.grad for parameter in parameters], expected)


@pytest.mark.parametrize("activation", ["tanh", "relu"])
def test_a_nan_input_reaches_the_outputs(activation):
    _, _, manual = mlp(VECTOR, (8, 8), activation)
    compiled = CompiledMLP(manual, rows=2)
    inputs = np.zeros((2, 5), FLOAT)
    inputs[1, 3] = np.nan
    outputs = np.zeros((2, 3), FLOAT)
    compiled.forward(inputs, outputs)
    assert np.isfinite(outputs[0]).all() and np.isnan(outputs[1]).all()


# -- Adam -----------------------------------------------------------------------------------------


def adam_pair(**options):
    """Two identical networks, one for torch's fused Adam and one for CompiledAdam, with flat gradients."""
    networks, optimizers, flats = [], [], []
    for _ in range(2):
        torch.manual_seed(3)
        network = nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3))
        flats.append(gradient_views(list(network.parameters())))
        optimizers.append(torch.optim.Adam(network.parameters(), lr=1e-2, eps=1e-5, fused=True, **options))
        networks.append(network)
    return networks, optimizers, flats


@pytest.mark.parametrize("max_norm", [None, 0.05, 100.0], ids=["unclipped", "clipping", "within-norm"])
def test_compiled_adam_equals_torch_adam(max_norm):
    (reference, network), (torch_adam, optimizer), (reference_flat, flat) = adam_pair()
    compiled = CompiledAdam(optimizer, flat)
    generator = torch.Generator().manual_seed(4)
    for step in range(6):
        gradient = torch.randn(flat.numel(), generator=generator) * 0.1
        reference_flat.copy_(gradient)
        flat.copy_(gradient)
        learning_rate = 1e-2 if step < 3 else 3e-3
        torch_adam.param_groups[0]["lr"] = learning_rate
        if max_norm is not None:
            clip_gradient_norm(list(reference.parameters()), max_norm, reference_flat)
        step_optimizer(torch_adam)
        compiled.step(max_norm, learning_rate)
        torch.testing.assert_close(flat, reference_flat, rtol=1e-5, atol=1e-8)  # the clipped gradient stays in .grad
    for ours, theirs in zip(network.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-6)
    ours, theirs = optimizer.state_dict(), torch_adam.state_dict()
    assert optimizer.param_groups[0]["lr"] == 3e-3
    for index in theirs["state"]:
        assert float(ours["state"][index]["step"]) == float(theirs["state"][index]["step"]) == 6.0
        for moment in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(ours["state"][index][moment], theirs["state"][index][moment], rtol=1e-4, atol=1e-9)


def test_compiled_adam_follows_a_loaded_state_and_torch_continues_it():
    (reference, network), (torch_adam, optimizer), (reference_flat, flat) = adam_pair()
    compiled = CompiledAdam(optimizer, flat)
    generator = torch.Generator().manual_seed(5)
    gradients = [torch.randn(flat.numel(), generator=generator) for _ in range(6)]
    for gradient in gradients[:3]:
        flat.copy_(gradient)
        compiled.step(None)
    # torch's Adam takes over from the compiled steps' state (copies: a loaded optimiser keeps the
    # given tensors, which the two optimisers would then share)...
    reference.load_state_dict(network.state_dict())
    torch_adam.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    # ...and the compiled Adam from a state loaded into its optimiser (new tensors: its views must follow).
    optimizer.load_state_dict(copy.deepcopy(torch_adam.state_dict()))
    for gradient in gradients[3:]:
        flat.copy_(gradient)
        reference_flat.copy_(gradient)
        compiled.step(None)
        step_optimizer(torch_adam)
    for ours, theirs in zip(network.parameters(), reference.parameters()):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-7)
    assert float(optimizer.state_dict()["state"][0]["step"]) == 6.0


def test_a_nan_gradient_makes_every_parameter_nan_as_torch_clipping_does():
    (_, network), (_, optimizer), (_, flat) = adam_pair()
    flat.fill_(0.1)
    flat[0] = math.nan
    CompiledAdam(optimizer, flat).step(0.5)
    assert all(torch.isnan(parameter).all() for parameter in network.parameters())


def test_optimisers_compiled_adam_does_not_cover_are_named():
    network = nn.Linear(3, 2)
    flat = gradient_views(list(network.parameters()))
    assert "RMSprop" in CompiledAdam.obstacle(torch.optim.RMSprop(network.parameters()))
    assert "AMSGrad" in CompiledAdam.obstacle(torch.optim.Adam(network.parameters(), amsgrad=True))
    assert "weight decay" in CompiledAdam.obstacle(torch.optim.Adam(network.parameters(), weight_decay=0.1))
    assert CompiledAdam.obstacle(torch.optim.Adam(network.parameters())) is None
    with pytest.raises(ValueError, match="RMSprop"):
        CompiledAdam(torch.optim.RMSprop(network.parameters()), flat)


# -- the losses' row functions against their tensor forms ------------------------------------------


def rows_of(function, *columns):
    """(losses, derivatives) of a row function over columns of floats."""
    results = [function(*values) for values in zip(*(column.tolist() for column in columns))]
    return torch.tensor([loss for loss, _ in results]), torch.tensor([derivative for _, derivative in results])


def test_policy_rows_equal_the_tensor_losses():
    generator = torch.Generator().manual_seed(6)
    log_probs = torch.randn(ROWS, generator=generator) * 0.3 - 1.0
    old_log_probs = log_probs + torch.randn(ROWS, generator=generator) * 0.3  # ratios on both sides of the clip
    advantages = torch.randn(ROWS, generator=generator)
    loss, gradient = clipped_surrogate_loss_and_gradient(log_probs, old_log_probs, advantages, 0.2)
    row_losses, row_derivatives = rows_of(lambda *row: clipped_surrogate_row(*row, 0.2), log_probs, old_log_probs, advantages)
    torch.testing.assert_close(row_losses.mean(), loss)
    torch.testing.assert_close(row_derivatives / ROWS, gradient)
    assert (row_derivatives == 0).any() and (row_derivatives != 0).any()  # both branches met
    row_losses, row_derivatives = rows_of(policy_gradient_row, log_probs, advantages)
    torch.testing.assert_close(row_losses.mean(), policy_gradient_loss(log_probs, advantages))
    torch.testing.assert_close(row_derivatives, -advantages)
    kls = torch.tensor([approximate_kl_row(*row) for row in zip(log_probs.tolist(), old_log_probs.tolist())])
    torch.testing.assert_close(kls.mean(), approximate_kl(log_probs, old_log_probs))


@pytest.mark.parametrize("clip_range", [None, 0.2])
def test_value_rows_equal_the_tensor_loss(clip_range):
    generator = torch.Generator().manual_seed(7)
    values, returns = torch.randn(ROWS, generator=generator), torch.randn(ROWS, generator=generator)
    old_values = values + torch.randn(ROWS, generator=generator) * 0.3
    loss, gradient = value_loss_and_gradient(values, returns, old_values, clip_range)
    row = lambda *columns: value_row(*columns, math.inf if clip_range is None else clip_range)  # noqa: E731
    row_losses, row_derivatives = rows_of(row, values, returns, old_values)
    torch.testing.assert_close(row_losses.mean(), loss)
    torch.testing.assert_close(row_derivatives / ROWS, gradient)


def test_value_row_at_the_clip_ties_by_hand():
    # The rows of test_manual_actor_critic's tie test (V_old = 0, c = 1): a tie beyond the clip
    # halves 2 (V - R); a step of exactly c keeps the gradient; the larger clipped error gives none.
    rows = [(3.0, 2.0, 0.0), (1.0, 3.0, 0.0), (2.0, 3.0, 0.0), (3.0, 0.0, 0.0)]
    assert [value_row(*row, 1.0) for row in rows] == [(1.0, 1.0), (4.0, -4.0), (4.0, 0.0), (9.0, 6.0)]


@pytest.mark.parametrize("loss", ["huber", "squared"])
def test_td_error_row_equals_the_tensor_loss(loss):
    errors = torch.tensor([-3.0, -1.0, -0.4, 0.0, 0.7, 1.0, 2.5]).unsqueeze(-1)
    row_losses, row_derivatives = rows_of(lambda error: td_error_row(error, loss == "huber"), errors[:, 0])
    torch.testing.assert_close(row_losses.mean(), td_error_loss(errors, loss))
    weights = torch.ones(len(errors), 1)
    torch.testing.assert_close(row_derivatives, q_value_loss_gradient(errors, weights, loss)[:, 0])
    assert math.isnan(td_error_row(math.nan, loss == "huber")[1])


# -- the actor-critic's gradient and acting ---------------------------------------------------------


def actor_critic(action_space, activation="tanh"):
    torch.manual_seed(0)
    network = ActorCritic(VECTOR, action_space, (16, 8), activation, log_std_init=-0.5)
    manual = ManualActorCritic.of(network)
    return network, manual, CompiledActorCritic(manual, rows=4)


def rollout_batch(network, seed=8):
    generator = torch.Generator().manual_seed(seed)
    observations = torch.randn(ROWS, 5, generator=generator)
    with torch.no_grad():
        distribution, values = network(observations)
        actions = distribution.sample(generator)
        log_probs = distribution.log_prob(actions)
    noise = lambda scale: torch.randn(ROWS, generator=generator) * scale  # noqa: E731
    return RolloutBatch(observations, actions, log_probs + noise(0.3), values + noise(0.3), noise(1.0), values + noise(1.0))


@pytest.mark.parametrize("activation", ["tanh", "relu"])
@pytest.mark.parametrize("action_space", [CATEGORICAL, GAUSSIAN], ids=["categorical", "gaussian"])
@pytest.mark.parametrize(
    "options",
    [
        {"clipped": True, "value_clip_range": None, "entropy_coef": 0.0, "normalize": True},
        {"clipped": True, "value_clip_range": 0.2, "entropy_coef": 0.03, "normalize": False},
        {"clipped": False, "value_clip_range": None, "entropy_coef": 0.01, "normalize": True},
        {"clipped": False, "value_clip_range": None, "entropy_coef": 0.0, "normalize": False},
    ],
    ids=["ppo", "ppo-value-clip-entropy", "a2c-entropy", "a2c-plain"],
)
def test_actor_critic_gradient_equals_autograd(action_space, activation, options):
    network, _, compiled = actor_critic(action_space, activation)
    batch = rollout_batch(network)
    clip_range, value_coef = 0.2, 0.37
    distribution, values = network(batch.observations)
    log_probs = distribution.log_prob(batch.actions)
    advantages = normalize_advantages(batch.advantages) if options["normalize"] else batch.advantages
    if options["clipped"]:
        policy_loss = clipped_surrogate_loss(log_probs, batch.old_log_probs, advantages, clip_range)
    else:
        policy_loss = policy_gradient_loss(log_probs, advantages)
    critic_loss = value_loss(values, batch.returns, batch.old_values, options["value_clip_range"])
    entropy = distribution.entropy().mean()
    (policy_loss + value_coef * critic_loss - options["entropy_coef"] * entropy).backward()
    expected = [parameter.grad.clone() for parameter in network.parameters()]
    for parameter in network.parameters():
        parameter.grad.fill_(math.nan)  # the kernel must overwrite, not accumulate
    step = compiled.gradient(batch, clip_range=clip_range, value_coef=value_coef, **options)
    assert_gradients_close([parameter.grad for parameter in network.parameters()], expected)
    assert step.policy_loss == pytest.approx(policy_loss.item(), rel=1e-5, abs=1e-6)
    assert step.value_loss == pytest.approx(critic_loss.item(), rel=1e-5)
    assert step.entropy == pytest.approx(entropy.item(), rel=1e-5)
    assert step.approximate_kl == pytest.approx(approximate_kl(log_probs.detach(), batch.old_log_probs).item(), rel=1e-4)
    assert not step.skipped


def test_a_minibatch_beyond_the_kl_limit_gets_no_gradient():
    network, _, compiled = actor_critic(CATEGORICAL)
    batch = rollout_batch(network)
    for parameter in network.parameters():
        parameter.grad.fill_(7.0)
    options = {"clipped": True, "clip_range": 0.2, "value_clip_range": None, "value_coef": 0.5, "entropy_coef": 0.0, "normalize": True}
    step = compiled.gradient(batch, kl_limit=1e-6, **options)
    assert step.skipped and step.approximate_kl > 1e-6
    assert all((parameter.grad == 7.0).all() for parameter in network.parameters())
    assert not compiled.gradient(batch, kl_limit=step.approximate_kl * 2, **options).skipped


@pytest.mark.parametrize("action_space", [CATEGORICAL, GAUSSIAN], ids=["categorical", "gaussian"])
def test_acting_draws_what_the_torch_distribution_draws(action_space):
    network, _, compiled = actor_critic(action_space, "relu")
    observations = np.random.default_rng(9).normal(size=(200, 5)).astype(FLOAT)
    torch_generator, compiled_generator = torch.Generator().manual_seed(10), torch.Generator().manual_seed(10)
    with torch.no_grad():
        distribution = network.distribution(torch.from_numpy(observations))
        expected_actions = distribution.sample(torch_generator)
        expected_log_probs = distribution.log_prob(expected_actions)
    actions, log_probs = compiled.act(observations, compiled_generator)
    if isinstance(action_space, spaces.Discrete):
        assert actions.dtype == np.int64 and np.array_equal(actions, expected_actions.numpy())
    else:
        assert actions.dtype == np.float32 and actions.shape == (200, 2)
        np.testing.assert_allclose(actions, expected_actions.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(log_probs, expected_log_probs.numpy(), rtol=1e-5, atol=1e-5)
    # The same number of draws: the generators go on together.
    assert torch.equal(torch.rand(3, generator=torch_generator), torch.rand(3, generator=compiled_generator))


# -- DQN's gradient step and greedy actions -----------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("loss", ["huber", "squared"])
def test_q_gradient_equals_autograd(loss, activation):
    torso, head, manual = mlp(VECTOR, (16, 8), activation, outputs=4)
    compiled = CompiledQNetwork(manual, rows=4)
    generator = torch.Generator().manual_seed(11)
    observations = torch.randn(ROWS, 5, generator=generator)
    actions = torch.randint(0, 4, (ROWS,), generator=generator)
    targets = torch.randn(ROWS, generator=generator) * 3.0  # TD errors on both sides of Huber's kink
    q_values = head(torso(observations))
    expected_loss = q_value_loss(q_values, actions, targets, loss)
    expected_loss.backward()
    parameters = list(torso.parameters()) + list(head.parameters())
    expected = [parameter.grad.clone() for parameter in parameters]
    computed_loss, errors = compiled.gradient(observations, actions.unsqueeze(-1), targets.unsqueeze(-1), loss == "huber")
    assert_gradients_close([parameter.grad for parameter in parameters], expected)
    assert computed_loss == pytest.approx(expected_loss.item(), rel=1e-5)
    expected_errors = q_values.detach().gather(-1, actions.unsqueeze(-1)) - targets.unsqueeze(-1)
    torch.testing.assert_close(errors, expected_errors, rtol=1e-5, atol=1e-5)
    with torch.no_grad():
        outputs = np.empty((ROWS, 4), FLOAT)
        compiled.network.forward(compiled.network.inputs(observations), outputs)
        np.testing.assert_allclose(outputs, q_values.numpy(), rtol=1e-5, atol=1e-6)
        assert np.array_equal(compiled.greedy(observations.numpy()), q_values.argmax(dim=1).numpy())


def acting_model(algorithm: str):
    """(act on observations [64, O], the acting buffers, the PyTorch network's answer, observation size)."""
    if algorithm == "td3":
        model = TD3("LunarLanderContinuous-v3", backend="compiled", quiet=True, **TINY)

        def expected(states: np.ndarray) -> np.ndarray:
            return model.actor(torch.from_numpy(states)).numpy()

        return model.compiled.act, model.compiled.acting, expected, 8
    model = DQN("CartPole-v1", backend="compiled", hidden_sizes=(32, 16), quiet=True, buffer_size=1000)

    def greedy(states: np.ndarray) -> np.ndarray:
        return model.q_network(torch.from_numpy(states)).argmax(dim=1).numpy()

    return model.compiled.greedy, model.compiled.acting, greedy, 4


@pytest.mark.parametrize("algorithm", ["td3", "dqn"])
def test_threads_acting_at_once_each_get_their_own_buffers(algorithm):
    """The kernels release the GIL, so predict() on several threads at once (or beside training)
    must not share memory: each thread acts in buffers of its own and gets the network's answer."""
    act, acting, expected, size = acting_model(algorithm)
    states = [np.random.default_rng(seed).normal(size=(64, size)).astype(np.float32) for seed in range(4)]
    with torch.no_grad():
        wanted = [expected(batch) for batch in states]
    start = threading.Barrier(4)
    results: list = [None] * 4

    def act_repeatedly(index: int) -> None:
        start.wait()
        actions = [act(states[index]) for _ in range(200)]
        results[index] = actions, acting.buffers(64)[0][0]

    threads = [threading.Thread(target=act_repeatedly, args=(index,)) for index in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(buffer) for _, buffer in results}) == 4
    for (actions, _), answer in zip(results, wanted):
        for action in actions:
            np.testing.assert_allclose(action, answer, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_burst_in_one_call_equals_its_steps_one_by_one(threads):
    """threads=2: each minibatch's rows split between two threads whose gradients are summed."""
    generator = torch.Generator().manual_seed(12)
    observations = torch.randn(3 * ROWS, 5, generator=generator)
    actions = torch.randint(0, 4, (3 * ROWS, 1), generator=generator)
    targets = torch.randn(3 * ROWS, 1, generator=generator)
    parameters, errors = [], []
    for in_one_call in (True, False):
        torso, head, manual = mlp(VECTOR, (16, 8), "relu", outputs=4)
        flat = list(torso.parameters())[0].grad._base
        optimizer = torch.optim.Adam(list(torso.parameters()) + list(head.parameters()), lr=1e-2)
        compiled = CompiledQNetwork(manual, ROWS, optimizer, flat, threads if in_one_call else 1)
        if in_one_call:
            errors.append(compiled.gradient_steps(observations, actions, targets, ROWS, True, 0.5))
        else:
            steps = zip(observations.split(ROWS), actions.split(ROWS), targets.split(ROWS))
            errors.append(torch.cat([compiled.gradient(*step, True, 0.5)[1] for step in steps]))
        parameters.append([parameter.detach().clone() for parameter in list(torso.parameters()) + list(head.parameters())])
    # Two threads sum the minibatch's gradient from its halves: another rounding.
    tolerance = {"rtol": 1e-6, "atol": 1e-7} if threads == 1 else {"rtol": 1e-5, "atol": 1e-6}
    torch.testing.assert_close(errors[0], errors[1], **tolerance)
    for ours, theirs in zip(*parameters):
        torch.testing.assert_close(ours, theirs, **tolerance)
    with pytest.raises(ValueError, match="not a whole number of minibatches of 10"):
        compiled.gradient_steps(observations, actions, targets, 10, True, 0.5)
    with pytest.raises(ValueError, match="build the CompiledQNetwork with its optimizer"):
        CompiledQNetwork(manual, ROWS).gradient_steps(observations, actions, targets, ROWS, True, 0.5)


def test_dqn_on_two_threads_follows_one_thread_and_repeats_itself_bitwise():
    """torch_threads=2: the bursts' minibatches split between two kernel threads and the target
    network's passes through the kernels. The same run as on one thread to rounding (early, before
    a different greedy action could change the data), and the same numbers every time."""

    def trained(threads: int) -> list[torch.Tensor]:
        model = DQN("CartPole-v1", learning_starts=100, train_freq=50, gradient_steps=4, batch_size=33, seed=3,
                    hidden_sizes=(32, 32), torch_threads=threads, quiet=True)
        assert model.compiled.threads.parts == threads
        model.learn(300)
        state = [group for group in model.optimizer.state.values()]
        return [*model.q_network.parameters(), *(value for group in state for value in group.values())]

    one, two, again = trained(1), trained(2), trained(2)
    for ours, theirs in zip(two, one):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)
    assert all(torch.equal(ours, theirs) for ours, theirs in zip(two, again))


def test_the_compiled_target_pass_equals_the_target_network():
    model = DQN("CartPole-v1", hidden_sizes=(32, 16), activation="tanh", torch_threads=2, quiet=True)
    observations = torch.randn(2500, 4, generator=torch.Generator().manual_seed(5))  # 2 full blocks and a part
    model.target_q_values.block_rows = model.compiled.block_rows = 1024
    with torch.no_grad():
        expected = model.target_network(observations)
    torch.testing.assert_close(model.target_q_values(observations), expected, rtol=1e-5, atol=1e-6)
    keys = np.arange(2500) % 7  # rows with equal keys are evaluated once
    torch.testing.assert_close(model.target_q_values(observations[keys], keys), expected[keys], rtol=1e-5, atol=1e-6)


def test_double_dqn_row_equals_the_tensor_targets():
    generator = torch.Generator().manual_seed(13)
    rewards, discounts = torch.randn(ROWS, generator=generator), torch.full((ROWS,), 0.97)
    terminated = torch.rand(ROWS, generator=generator) < 0.3
    online = torch.randint(0, 3, (ROWS, 4), generator=generator).float()  # ties: the lowest index wins
    target = torch.randn(ROWS, 4, generator=generator)
    expected = double_dqn_targets(rewards, discounts, terminated, online, target)
    rows = [double_dqn_target_row(*row) for row in zip(rewards.tolist(), discounts.tolist(), terminated.tolist(), online, target)]
    torch.testing.assert_close(torch.tensor(rows), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_double_dqn_burst_makes_each_steps_targets_with_the_network_it_finds(threads):
    """One call equals, to rounding, steps one by one whose targets the online network of that
    moment picks (torch's double_dqn_targets) and the target network's values price."""
    generator = torch.Generator().manual_seed(14)
    observations, next_observations = torch.randn(3 * ROWS, 5, generator=generator), torch.randn(3 * ROWS, 5, generator=generator)
    actions = torch.randint(0, 4, (3 * ROWS, 1), generator=generator)
    rewards, discounts = torch.randn(3 * ROWS, generator=generator), torch.full((3 * ROWS,), 0.9)
    terminated = torch.rand(3 * ROWS, generator=generator) < 0.2
    next_target_values = torch.randn(3 * ROWS, 4, generator=generator)
    parameters, errors = [], []
    for in_one_call in (True, False):
        torso, head, manual = mlp(VECTOR, (16, 8), "tanh", outputs=4)
        network = list(torso.parameters()) + list(head.parameters())
        optimizer = torch.optim.Adam(network, lr=3e-2)  # large steps: stale targets would show
        compiled = CompiledQNetwork(manual, ROWS, optimizer, network[0].grad._base, threads if in_one_call else 1)
        if in_one_call:
            double_q = (rewards, discounts, terminated, next_observations, next_target_values)
            errors.append(compiled.gradient_steps(observations, actions, None, ROWS, False, 1.0, double_q))
        else:
            step_errors = []
            for rows in (slice(start, start + ROWS) for start in range(0, 3 * ROWS, ROWS)):
                with torch.no_grad():
                    online = head(torso(next_observations[rows]))
                targets = double_dqn_targets(rewards[rows], discounts[rows], terminated[rows], online, next_target_values[rows])
                step_errors.append(compiled.gradient(observations[rows], actions[rows], targets, False, 1.0)[1])
            errors.append(torch.cat(step_errors))
        parameters.append([parameter.detach().clone() for parameter in network])
    torch.testing.assert_close(errors[0], errors[1], rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(*parameters):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-6)


# -- the backend option in the algorithms --------------------------------------------------------


def test_backend_option_picks_the_kernels_where_they_apply():
    assert PPO("CartPole-v1", quiet=True).collector.compiled is not None
    assert PPO("CartPole-v1", quiet=True).compiled_optimizer is not None
    assert DQN("CartPole-v1", quiet=True, buffer_size=1000).compiled.adam is not None
    assert PPO("CartPole-v1", quiet=True, backend="torch").collector.compiled is None
    assert PPO("CartPole-v1", quiet=True, shared_torso=True).collector.compiled is None  # auto: torch
    rmsprop = A2C("CartPole-v1", quiet=True)
    assert rmsprop.collector.compiled is not None and rmsprop.compiled_optimizer is None  # torch's RMSprop steps
    assert DQN("CartPole-v1", quiet=True, buffer_size=1000).compiled is not None
    assert DQN("CartPole-v1", quiet=True, buffer_size=1000, backend="torch").compiled is None
    with pytest.raises(ConfigError, match="backend='compiled' does not apply here: .*shared_torso"):
        PPO("CartPole-v1", quiet=True, shared_torso=True, backend="compiled")
    with pytest.raises(ConfigError, match="backend='compiled' does not apply here: activation='gelu'"):
        DQN("CartPole-v1", quiet=True, buffer_size=1000, activation="gelu", backend="compiled")
    with pytest.raises(ConfigError, match="backend='fast' is not allowed"):
        PPO("CartPole-v1", quiet=True, backend="fast")


def trained_parameters(algorithm, backend, config, steps):
    model = algorithm("CartPole-v1", quiet=True, backend=backend, **config)
    model.learn(steps)
    network = model.network if hasattr(model, "network") else model.q_network
    return [parameter.detach().clone() for parameter in network.parameters()]


@pytest.mark.parametrize(
    "algorithm, config, steps",
    [
        (PPO, {"n_envs": 2, "n_steps": 32, "batch_size": 16, "n_epochs": 2, "entropy_coef": 0.01}, 128),
        (A2C, {"n_envs": 4, "n_steps": 5, "optimizer": "adam"}, 200),
        (DQN, {"buffer_size": 1000, "learning_starts": 64, "batch_size": 16, "train_freq": 4, "hidden_sizes": (32, 32)}, 400),
        (DQN, {"buffer_size": 1000, "learning_starts": 64, "batch_size": 16, "train_freq": 8, "gradient_steps": 2,
               "double_q": True, "loss": "squared", "activation": "tanh", "hidden_sizes": (32, 32)}, 400),
    ],
    ids=["PPO", "A2C", "DQN", "DoubleDQN"],
)
def test_compiled_training_follows_torch_training(algorithm, config, steps):
    """The same seed trains the same model with either backend, to rounding: the same actions are
    drawn from the same noise, and every step's gradient agrees to float32 precision."""
    compiled, reference = trained_parameters(algorithm, "compiled", config, steps), trained_parameters(algorithm, "torch", config, steps)
    for ours, theirs in zip(compiled, reference):
        torch.testing.assert_close(ours, theirs, rtol=1e-3, atol=1e-4)


def test_the_kernels_blas_runs_one_thread_whatever_torch_threads_says():
    """Otherwise scipy's OpenBLAS starts a thread per core, which spins between products: PPO with
    torch_threads=2 took 15.0 s instead of 5.0 s."""
    import threadpoolctl

    def blas_threads():
        return {library["num_threads"] for library in threadpoolctl.threadpool_info() if library["user_api"] == "blas"}

    for model in (lambda: PPO("CartPole-v1", quiet=True, torch_threads=2),
                  lambda: DQN("CartPole-v1", quiet=True, buffer_size=1000, torch_threads=2)):
        threadpoolctl.threadpool_limits(2, user_api="blas")
        model()
        assert blas_threads() == {1}


def test_the_kernels_compile_where_numba_has_no_writable_cache_directory():
    """A read-only install with a read-only home leaves numba no cache directory (numba's
    IPythonCacheLocator alone finds none for a file); the kernels then compile in each process
    instead of failing to import, which made backend='auto' raise."""
    program = (
        "import numpy as np\n"
        "import rlfoundry.networks.compiled_actor_critic, rlfoundry.networks.compiled_q_network\n"
        "from rlfoundry.networks.compiled_mlp import tanh32_array\n"
        "out = np.empty(1, np.float32)\n"
        "tanh32_array(np.zeros(1, np.float32), out)\n"
        "print(out[0])\n"
    )
    environment = {**os.environ, "NUMBA_CACHE_LOCATOR_CLASSES": "IPythonCacheLocator"}
    environment.pop("NUMBA_CACHE_DIR", None)
    result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=environment, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "0.0"


def test_an_edit_to_a_loss_row_recompiles_the_kernels_that_inline_it(tmp_path):
    """numba stamps a function's cache with its own file alone, so an edited row function in losses/
    left the cached kernels of networks/ that inline it running the old code (and their tests
    passing on it); the kernels' cache is stamped with every kernel source instead. A copy of the
    package, its DQN gradient kernel run, cached, and run again after squared loss's row triples."""
    package = tmp_path / "rlfoundry"
    shutil.copytree(Path(__file__).resolve().parent.parent / "rlfoundry", package, ignore=shutil.ignore_patterns("__pycache__"))
    program = (
        "import torch\n"
        "from gymnasium import spaces\n"
        "from torch import nn\n"
        "from rlfoundry.networks.compiled_q_network import CompiledQNetwork\n"
        "from rlfoundry.networks.manual_mlp import ManualMLP, gradient_views\n"
        "from rlfoundry.networks.policies import make_torso\n"
        "torch.manual_seed(0)\n"
        "torso, head = make_torso(spaces.Box(-1, 1, (3,)), (8,), 'relu'), nn.Linear(8, 2)\n"
        "gradient_views(list(torso.parameters()) + list(head.parameters()))\n"
        "network = CompiledQNetwork(ManualMLP.of(torso, head), 4)\n"
        "print(network.gradient(torch.ones(4, 3), torch.zeros(4, 1, dtype=torch.int64), torch.full((4, 1), 2.0), False)[0])\n"
    )
    environment = {**os.environ, "PYTHONPATH": str(tmp_path)}
    environment.pop("NUMBA_CACHE_DIR", None)

    def loss() -> float:
        result = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, env=environment,
                                cwd=tmp_path, timeout=300)
        assert result.returncode == 0, result.stderr
        return float(result.stdout)

    first = loss()
    assert list((package / "networks" / "__pycache__").glob("compiled_q_network.q_gradient-*.nbi"))  # cached
    assert loss() == first
    rows = package / "losses" / "dqn.py"
    rows.write_text(rows.read_text().replace("return error * error, 2.0 * error", "return 3.0 * error * error, 2.0 * error"))
    assert loss() == pytest.approx(3.0 * first)


@pytest.mark.parametrize("optimizer", ["rmsprop", "adam"])
def test_a2c_trains_on_after_zero_grad_replaced_the_gradient_views(optimizer):
    """network.zero_grad() sets every .grad to None; the kernels write into the views it dropped, so
    RMSprop, which steps on .grad, stopped moving the parameters without a word. The views are put
    back: training is the same as without the call."""
    config = {"n_envs": 2, "n_steps": 5, "optimizer": optimizer}
    straight = A2C("CartPole-v1", quiet=True, backend="compiled", **config).learn(40)
    cleared = A2C("CartPole-v1", quiet=True, backend="compiled", **config).learn(20)
    cleared.network.zero_grad()
    cleared.learn(20)
    for ours, theirs in zip(cleared.network.parameters(), straight.network.parameters()):
        assert torch.equal(ours, theirs)


class MultiDiscreteActions(gymnasium.ActionWrapper):
    """CartPole with a MultiDiscrete([2, 2]) action space whose first entry is the action."""

    def __init__(self, env):
        super().__init__(env)
        self.action_space = spaces.MultiDiscrete([2, 2])

    def action(self, action):
        return int(action[0])


@pytest.mark.parametrize(
    "make, obstacle",
    [
        (lambda: PPO("CartPole-v1", quiet=True, shared_torso=True, backend="compiled"), "shared_torso=True"),
        (lambda: PPO(lambda: MultiDiscreteActions(gymnasium.make("CartPole-v1")), quiet=True, backend="compiled"),
         "MultiDiscrete actions"),
        (lambda: A2C("CartPole-v1", quiet=True, activation="elu", backend="compiled"), "activation='elu'"),
        (lambda: PPO("CartPole-v1", quiet=True, hidden_sizes=(), backend="compiled"), r"hidden_sizes=\(\)"),
        (lambda: DQN("CartPole-v1", quiet=True, buffer_size=1000, activation="gelu", backend="compiled"), "activation='gelu'"),
    ],
    ids=["shared_torso", "MultiDiscrete", "elu", "no_hidden_layers", "DQN_gelu"],
)
def test_backend_compiled_names_the_one_thing_in_its_way(make, obstacle):
    """As docs/algorithms/ppo.md says: the error names what stands in the way (it listed every
    case the kernels do not cover, whichever it was)."""
    with pytest.raises(ConfigError, match=f"does not apply here: {obstacle} ") as error:
        make()
    assert "not shared_torso, image observations" not in str(error.value)


def test_ppo_trains_on_after_vector_to_parameters_gave_the_parameters_new_memory():
    """torch.nn.utils.vector_to_parameters sets param.data: the kernels kept acting with, and
    training, the memory the network no longer reads, so its parameters stopped changing without a
    word. The parameters get the kernels' memory back, with the values written: training is the
    same as without the call."""
    config = {"n_envs": 2, "n_steps": 32, "batch_size": 16, "n_epochs": 2}
    straight = PPO("CartPole-v1", quiet=True, backend="compiled", **config).learn(128)
    rewritten = PPO("CartPole-v1", quiet=True, backend="compiled", **config).learn(64)
    parameters = list(rewritten.network.parameters())
    torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(parameters).detach().clone(), parameters)
    rewritten.learn(64)
    for ours, theirs in zip(rewritten.network.parameters(), straight.network.parameters()):
        assert torch.equal(ours, theirs)


def test_dqn_trains_on_after_vector_to_parameters_gave_the_parameters_new_memory():
    """As for PPO above: the greedy actions and the gradient steps must follow the network's memory."""
    config = {"buffer_size": 1000, "learning_starts": 50, "batch_size": 16, "train_freq": 4, "hidden_sizes": (16, 16)}
    straight = DQN("CartPole-v1", quiet=True, backend="compiled", **config).learn(300)
    rewritten = DQN("CartPole-v1", quiet=True, backend="compiled", **config).learn(150)
    parameters = list(rewritten.q_network.parameters())
    torch.nn.utils.vector_to_parameters(torch.nn.utils.parameters_to_vector(parameters).detach().clone(), parameters)
    rewritten.q_network.zero_grad()
    rewritten.learn(150)
    for ours, theirs in zip(rewritten.q_network.parameters(), straight.q_network.parameters()):
        assert torch.equal(ours, theirs)
