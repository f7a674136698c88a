"""OffPolicyPG: REINFORCE at epochs=1, the importance-weighted steps after it, resume, learning.

The exact tests of the importance-sampled estimator (the full-trajectory ratio gives the exact
gradient at theta', the dropped-ratio variants their predicted surrogates) are in
test_policy_gradient_exact.py.
"""

from __future__ import annotations

import copy

import pytest
import torch

import rlfoundry
from rlfoundry import REINFORCE, OffPolicyPG
from rlfoundry.run.on_policy import adam, gradient_step
from rlfoundry.losses.off_policy_pg import IMPORTANCE_RATIOS, off_policy_pg_loss
from rlfoundry.losses.reinforce import reinforce_loss
from rlfoundry.run.config import ConfigError
from rlfoundry.run.monitor import TrainingMonitor

from learning_checks import preset_returns

SOLVED = 475.0


def quiet_monitor() -> TrainingMonitor:
    return TrainingMonitor(None, 1, quiet=True)


def assert_same_parameters(first: torch.nn.Module, second: torch.nn.Module) -> None:
    for (name, expected), actual in zip(first.state_dict().items(), second.state_dict().values()):
        assert torch.equal(expected, actual), name


@pytest.mark.parametrize("ratio", IMPORTANCE_RATIOS)
@pytest.mark.parametrize("max_weight", [None, 1.5])
def test_with_one_epoch_it_is_reinforce_step_for_step(ratio, max_weight):
    options = dict(seed=2, n_envs=4, hidden_sizes=(16,))
    reinforce = REINFORCE("CartPole-v1", quiet=True, **options).learn(800)
    off_policy = OffPolicyPG("CartPole-v1", quiet=True, epochs=1, ratio=ratio, max_weight=max_weight, **options).learn(800)
    assert off_policy.steps == reinforce.steps
    assert_same_parameters(reinforce.policy, off_policy.policy)
    assert_same_parameters(reinforce.value_function, off_policy.value_function)


def scattered_log_probs(policy: torch.nn.Module, batch) -> torch.Tensor:
    log_probs = policy(batch.observations).log_prob(batch.actions)
    return torch.zeros(batch.mask.shape).masked_scatter(batch.mask, log_probs)


@pytest.mark.parametrize("ratio", IMPORTANCE_RATIOS)
def test_later_epochs_weight_by_the_ratio_to_the_sampling_policy(ratio):
    """Three steps written out: a REINFORCE step at theta, then two steps of theta' whose
    weights compare with the policy that SAMPLED the batch (not with the previous step's)."""
    model = OffPolicyPG("CartPole-v1", quiet=True, seed=5, n_envs=4, epochs=3, ratio=ratio, learning_rate=0.05, baseline="none")
    batch = model.collector.batch(model.collector.collect(quiet_monitor()))
    by_hand, wrong = copy.deepcopy(model.policy), copy.deepcopy(model.policy)
    for policy, fixed_behaviour in ((by_hand, True), (wrong, False)):
        optimizer = adam(policy.parameters(), model.config.learning_rate, model.config.optimizer_epsilon)
        behaviour = scattered_log_probs(policy, batch).detach()
        gradient_step(optimizer, reinforce_loss(scattered_log_probs(policy, batch), batch.weights, batch.mask), None)
        for _ in range(2):
            log_probs = scattered_log_probs(policy, batch)
            if not fixed_behaviour:  # the mistake: a ratio to the policy of the previous step
                behaviour = log_probs.detach()
            gradient_step(optimizer, off_policy_pg_loss(log_probs, behaviour, batch.weights, batch.mask, ratio), None)
    model.update_policy(batch, quiet_monitor())
    for expected, actual, mistaken in zip(by_hand.parameters(), model.policy.parameters(), wrong.parameters()):
        torch.testing.assert_close(actual, expected, rtol=0, atol=1e-6)
    assert any((actual - mistaken).abs().max() > 1e-4 for actual, mistaken in zip(model.policy.parameters(), wrong.parameters()))


def test_save_load_and_resume_equal_a_straight_run(tmp_path):
    options = dict(seed=7, n_envs=4, hidden_sizes=(16,), epochs=3, ratio="trajectory", max_weight=2.0)
    straight = OffPolicyPG("CartPole-v1", quiet=True, **options).learn(1000)
    first = OffPolicyPG("CartPole-v1", quiet=True, **options).learn(500)
    first.save(tmp_path / "half")
    torch.manual_seed(999)
    resumed = rlfoundry.load(tmp_path / "half")
    assert isinstance(resumed, OffPolicyPG) and resumed.config == first.config
    resumed.learn(500)
    assert resumed.steps == straight.steps
    assert_same_parameters(straight.policy, resumed.policy)
    assert_same_parameters(straight.value_function, resumed.value_function)


@pytest.mark.parametrize(
    "options, message",
    [
        (dict(ratio="per_decision"), "ratio='per_decision' is not allowed"),
        (dict(max_weight=0.0), "max_weight=0.0 is out of range"),
        (dict(epochs=0), "epochs=0 is out of range"),
        (dict(returns="trajectory", baseline="value"), "baseline='value' needs returns='reward_to_go'"),
    ],
)
def test_bad_config_is_a_clear_error(options, message):
    with pytest.raises(ConfigError, match=message):
        OffPolicyPG("CartPole-v1", **options)


@pytest.mark.slow
def test_solves_cartpole_on_two_of_three_seeds():
    returns = preset_returns("off-policy-pg", "CartPole-v1")
    print(f"evaluation means on seeds 1, 2, 3: {returns}")
    assert sum(value >= SOLVED for value in returns) >= 2, returns
