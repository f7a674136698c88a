"""The compiled updates of SAC, TD3 and DDPG (networks/compiled_continuous.py): every gradient
against autograd on the same minibatch and random draws, both activations, a learned and a fixed
alpha; the Polyak steps; two threads bitwise equal to one (SAC) or to rounding (TD3, DDPG); a
failing part that stops its partner instead of leaving it waiting; which settings keep PyTorch."""

from __future__ import annotations

import gc
import threading

import numpy as np
import pytest
import torch

from off_policy_checks import TINY, hand_batch
from rlfoundry import DDPG, SAC, TD3
from rlfoundry.losses.continuous import (
    critic_loss,
    deterministic_actor_loss,
    entropy_temperature_loss,
    q_target,
    smoothed_target_actions,
    soft_actor_loss,
    soft_q_target,
)
from rlfoundry.networks.kernel_threads import ABORT, KernelThreads, meet
from rlfoundry.networks.compiled_mlp import CompiledAdam, kernel
from rlfoundry.run.config import ConfigError


class RecordingMonitor:
    """The monitor's record(), keeping the last value of each metric."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def record(self, name: str, value: float) -> None:
        self.values[name] = value


def frozen_learning_rates(model) -> None:
    """Learning rates 0: an update leaves the parameters as they were and its gradients in .grad."""
    for group in model.optimizer.param_groups:
        group["lr"] = 0.0


def assert_gradients_equal(parameters, expected) -> None:
    for parameter, gradient in zip(parameters, expected, strict=True):
        torch.testing.assert_close(parameter.grad, gradient, rtol=1e-4, atol=1e-6)


def batch_of(observation_size: int, action_size: int):
    """hand_batch's six transitions (two terminated, one truncated), with per-sample discounts."""
    batch = hand_batch(observation_size, action_size, gamma=0.9, seed=3)
    return batch._replace(discounts=torch.tensor([0.9, 0.9, 0.81, 0.9, 0.729, 0.9]))


@pytest.mark.parametrize(
    "activation, learn_alpha, threads, smaller_critic",
    [("relu", True, 1, None), ("relu", False, 1, None), ("tanh", True, 1, None), ("tanh", False, 1, None),
     ("relu", True, 2, None), ("relu", True, 2, 0), ("tanh", True, 1, 1), ("relu", False, 2, 1)],
)
def test_sac_update_gradients_equal_autograd(activation, learn_alpha, threads, smaller_critic):
    """smaller_critic k: critic k's output (and its target's, which the targets below are computed
    from after the update's Polyak step) is lowered by 100, so the actor's loss, through the smaller
    critic at each row, reaches critic k at every row and the other critic at none (the kernel takes
    each critic's backward pass through its own rows only)."""
    model = SAC("LunarLanderContinuous-v3", backend="compiled", activation=activation, learn_alpha=learn_alpha,
                alpha=0.3, torch_threads=threads, **TINY)
    assert model.compiled.threads.parts == threads
    frozen_learning_rates(model)
    if smaller_critic is not None:
        with torch.no_grad():
            for critics in (model.critics, model.target_critics):
                critics.biases[-1][smaller_critic] -= 100.0
    batch = batch_of(8, 2)
    model.collector.torch_rng.manual_seed(7)
    target_before = [parameter.clone() for parameter in model.target_critics.parameters()]
    monitor = RecordingMonitor()
    model.update(batch, monitor)

    # The same losses by autograd, with the update's two draws (the actions' noise, then the next actions').
    generator = torch.Generator().manual_seed(7)
    actor, critics = model.actor, model.critics
    alpha = model.temperature()
    actions, log_probs = actor(batch.observations, generator)
    with torch.no_grad():
        next_actions, next_log_probs = actor(batch.next_observations, generator)
        targets = soft_q_target(batch.rewards, batch.terminated, model.target_critics(batch.next_observations, next_actions),
                                next_log_probs, alpha, batch.discounts)
    critic_value = critic_loss(critics(batch.observations, batch.actions), targets)
    actor_value = soft_actor_loss(critics(batch.observations, actions, frozen=True), log_probs, alpha)
    temperature_value = entropy_temperature_loss(model.temperature.log_alpha, log_probs, model.target_entropy)
    parameters = [*actor.parameters(), *critics.parameters()]
    total = critic_value + actor_value + (temperature_value if learn_alpha else 0.0)
    expected = torch.autograd.grad(total, parameters + ([model.temperature.log_alpha] if learn_alpha else []))
    assert_gradients_equal(parameters + ([model.temperature.log_alpha] if learn_alpha else []), expected)
    assert monitor.values["train/critic_loss"] == pytest.approx(float(critic_value.detach()), rel=1e-5)
    assert monitor.values["train/actor_loss"] == pytest.approx(float(actor_value.detach()), rel=1e-5, abs=1e-6)
    assert monitor.values["train/entropy"] == pytest.approx(-float(log_probs.detach().mean()), rel=1e-5)
    # The Polyak step of the critics' targets (their sources unchanged at learning rate 0).
    for target, before, source in zip(model.target_critics.parameters(), target_before, critics.parameters()):
        torch.testing.assert_close(target, torch.lerp(before, source.detach(), model.config.tau))
    assert learn_alpha == (model.temperature.log_alpha in model.optimizer.state)


@pytest.mark.parametrize("algorithm", [TD3, DDPG])
@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("threads", [1, 2])
def test_deterministic_update_gradients_equal_autograd(algorithm, activation, threads):
    """threads=2 splits the six rows of every actor pass (and of DDPG's lone critic's passes) three
    and three, each part writing its share of the gradient, which the Adam step's halves then add;
    the reported losses are the whole minibatch's."""
    options = dict(target_policy_noise=0.4, target_noise_clip=0.3) if algorithm is TD3 else {}
    model = algorithm("LunarLanderContinuous-v3", backend="compiled", activation=activation, torch_threads=threads,
                      **options, **TINY)
    assert model.compiled.threads.parts == threads
    frozen_learning_rates(model)
    batch = batch_of(8, 2)
    model.collector.torch_rng.manual_seed(11)
    monitor = RecordingMonitor()
    model.update(batch, monitor)  # update 0: the actor's step is due

    actor, critics = model.actor, model.critics
    with torch.no_grad():
        next_actions = model.target_actor(batch.next_observations)
        if algorithm is TD3:
            noise = 0.4 * torch.randn(6, 2, generator=torch.Generator().manual_seed(11))
            next_actions = smoothed_target_actions(next_actions, noise, 0.3)
        targets = q_target(batch.rewards, batch.terminated, model.target_critics(batch.next_observations, next_actions),
                           batch.discounts)
    critic_parameters = list(critics.parameters())
    critic_value = critic_loss(critics(batch.observations, batch.actions), targets)
    assert_gradients_equal(critic_parameters, torch.autograd.grad(critic_value, critic_parameters))
    actor_value = deterministic_actor_loss(critics(batch.observations, actor(batch.observations), count=1, frozen=True))
    actor_parameters = list(actor.parameters())
    assert_gradients_equal(actor_parameters, torch.autograd.grad(actor_value, actor_parameters))
    assert monitor.values["train/critic_loss"] == pytest.approx(critic_value.item(), rel=1e-5)
    assert monitor.values["train/actor_loss"] == pytest.approx(actor_value.item(), rel=1e-5)


def test_adam_steps_match_torch_through_a_short_run():
    """Whole updates with real learning rates: the first ten of a run equal the PyTorch backend's
    to float32 rounding (before rounding differences compound through Adam's normalisation)."""
    for algorithm in (SAC, TD3):
        models = [algorithm("Pendulum-v1", backend=backend, seed=4, **{**TINY, "learning_starts": 40})
                  for backend in ("torch", "compiled")]
        for model in models:
            model.learn(50)
        for compiled, reference in zip(models[1].actor.parameters(), models[0].actor.parameters()):
            torch.testing.assert_close(compiled, reference, rtol=1e-3, atol=2e-5)


def trained_modules(algorithm, threads: int, steps: int = 150) -> dict[str, torch.nn.Module]:
    model = algorithm("Pendulum-v1", backend="compiled", torch_threads=threads, seed=2, quiet=True, **TINY)
    model.learn(steps)
    assert model.compiled.threads.parts == threads
    return {name: part for name, part in model.parts().items() if isinstance(part, torch.nn.Module)}


def test_two_threads_compute_what_one_does_bitwise_in_sac():
    """SAC's parts split no sum: each critic's passes, each sample's, each weight gradient whole."""
    one, two = (trained_modules(SAC, threads) for threads in (1, 2))
    for name, module in one.items():
        for first, second in zip(module.parameters(), two[name].parameters(), strict=True):
            assert torch.equal(first, second), name


@pytest.mark.parametrize("algorithm", [TD3, DDPG])
def test_two_threads_follow_one_to_rounding_and_repeat_bitwise(algorithm):
    """TD3's and DDPG's parts split the actor's rows, so its gradient is the sum of two halves' (another
    order of the same sum): 100 updates stay within float32 rounding of one thread's, and two
    two-thread runs are bitwise equal."""
    one, two, again = trained_modules(algorithm, 1), trained_modules(algorithm, 2), trained_modules(algorithm, 2)
    differs = False
    for name, module in one.items():
        for first, second, third in zip(module.parameters(), two[name].parameters(), again[name].parameters(),
                                        strict=True):
            torch.testing.assert_close(second, first, rtol=1e-4, atol=1e-6)
            assert torch.equal(second, third), name
            differs |= not torch.equal(first, second)
    assert differs  # the halves' sum really is another order: this test compares what it says


@kernel
def failing_part(part, parts, progress, failing):
    """Part `failing` raises before the first barrier; the other waits there."""
    if part == failing:
        raise ValueError("this part failed")
    if not meet(progress, part, parts, 1):
        return


@pytest.mark.parametrize("failing", [0, 1])
def test_a_failing_part_stops_its_partner_and_raises(failing):
    threads = KernelThreads(2)
    with pytest.raises(ValueError, match="this part failed"):
        threads.run(failing_part, failing)
    assert threads.progress[ABORT] == 1
    threads.run(failing_part, 5)  # no part fails: both pass the barrier, and no earlier error comes back


def test_the_worker_thread_ends_with_its_kernel_threads():
    threads, before = KernelThreads(2), set(threading.enumerate())
    threads.run(failing_part, 5)
    (worker,) = set(threading.enumerate()) - before  # started by the first two-part update
    assert worker.name == "rlfoundry-kernels" and worker.daemon
    del threads
    gc.collect()
    worker.join(timeout=10)
    assert not worker.is_alive()


def test_compiled_adam_steps_one_group_and_leaves_the_others():
    first, second = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
    optimizer = torch.optim.Adam([{"params": first.parameters(), "lr": 0.1}, {"params": second.parameters(), "lr": 0.01}])
    reference = torch.optim.Adam([{"params": [p.detach().clone().requires_grad_() for p in second.parameters()], "lr": 0.01}])
    from rlfoundry.networks.manual_mlp import gradient_views

    flat = gradient_views(list(second.parameters()))
    compiled = CompiledAdam(optimizer, flat, group=1)
    before = [parameter.detach().clone() for parameter in first.parameters()]
    for step in range(3):
        flat.copy_(torch.linspace(-1.0, 1.0, flat.numel()) * (step + 1))
        for parameter, gradient in zip(reference.param_groups[0]["params"], flat.split([2, 1])):
            parameter.grad = gradient.view_as(parameter).clone()
        compiled.step(None)
        reference.step()
    for parameter, expected in zip(second.parameters(), reference.param_groups[0]["params"]):
        torch.testing.assert_close(parameter, expected, rtol=1e-5, atol=1e-7)
    assert all(torch.equal(parameter, old) for parameter, old in zip(first.parameters(), before))
    assert CompiledAdam.obstacle(optimizer) == "it has more than one parameter group"
    assert CompiledAdam.obstacle(optimizer, 1) is None


def test_settings_the_kernels_do_not_cover_keep_pytorch():
    assert SAC("Pendulum-v1", update_order="sequential", **TINY).compiled is None  # auto
    with pytest.raises(ConfigError, match="update_order='sequential'"):
        SAC("Pendulum-v1", update_order="sequential", backend="compiled", **TINY)
    with pytest.raises(ConfigError, match="activation='elu'"):
        TD3("Pendulum-v1", activation="elu", backend="compiled", **TINY)
    assert TD3("Pendulum-v1", activation="elu", **TINY).compiled is None
    assert DDPG("Pendulum-v1", backend="torch", **TINY).compiled is None
    assert isinstance(SAC("Pendulum-v1", **TINY).compiled.threads.progress, np.ndarray)  # auto: compiled here


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_compiled_acting_equals_the_actors(activation):
    observations = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))
    states = observations.numpy()
    sac = SAC("LunarLanderContinuous-v3", backend="compiled", activation=activation, **TINY)
    td3 = TD3("LunarLanderContinuous-v3", backend="compiled", activation=activation, **TINY)
    with torch.no_grad():
        mode = sac.actor.mode(observations)
        sampled = sac.actor.sample(observations, torch.Generator().manual_seed(3))  # the same draw of epsilon
        mean = td3.actor(observations)
    compiled_mode = sac.compiled.act(states, True, None)
    torch.testing.assert_close(torch.from_numpy(compiled_mode), mode, rtol=1e-5, atol=1e-6)
    compiled_sample = sac.compiled.act(states, False, torch.Generator().manual_seed(3))
    torch.testing.assert_close(torch.from_numpy(compiled_sample), sampled, rtol=1e-5, atol=1e-6)
    compiled_mean = td3.compiled.act(states)
    torch.testing.assert_close(torch.from_numpy(compiled_mean), mean, rtol=1e-5, atol=1e-6)
    # Acting reuses its buffers; what it returned before stays as it was.
    sac.compiled.act(2 * states, True, None)
    td3.compiled.act(2 * states)
    torch.testing.assert_close(torch.from_numpy(compiled_mode), mode, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(compiled_mean), mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(torch.from_numpy(td3.compiled.act(states[:2])), mean[:2], rtol=1e-5, atol=1e-6)
    assert sac.predict(states).shape == (5, 2)  # predict and training act through it
