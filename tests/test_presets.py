"""The tuned presets: every algorithm's has a source and a budget and builds a model on its env, and
each issue's list of environments is covered."""

import pytest

from rlfoundry.algorithms import ALGORITHMS
from rlfoundry.presets import all_presets

EVERY_PRESET = [(name, env_id) for name in ALGORITHMS for env_id in all_presets(name)]

# The environments each family's presets must cover (the issues that asked for them).
ACTOR_CRITIC_ENVS = {"CartPole-v1", "Acrobot-v1", "LunarLander-v3", "Pendulum-v1", "HalfCheetah-v5", "Hopper-v5"}
CONTINUOUS_ENVS = {
    "Pendulum-v1", "MountainCarContinuous-v0", "LunarLanderContinuous-v3", "BipedalWalker-v3",
    "HalfCheetah-v5", "Hopper-v5", "Walker2d-v5", "Ant-v5",
}
REQUIRED_ENVS = {
    "ppo": ACTOR_CRITIC_ENVS,
    "a2c": ACTOR_CRITIC_ENVS,
    "trpo": ACTOR_CRITIC_ENVS,
    "dqn": {"CartPole-v1", "Acrobot-v1", "MountainCar-v0", "LunarLander-v3", "ALE/Pong-v5", "ALE/Breakout-v5"},
    "sac": CONTINUOUS_ENVS,
    "td3": CONTINUOUS_ENVS,
}


@pytest.mark.parametrize("algorithm, env_id", EVERY_PRESET, ids=[f"{name}-{env_id}" for name, env_id in EVERY_PRESET])
def test_a_preset_has_a_source_and_builds_a_model_on_its_env(algorithm, env_id):
    """Building checks the config's fields and ranges and the env's spaces against them (a CNN's
    input size, a Box action's bounds), as `rlf train` would before training."""
    preset = all_presets(algorithm)[env_id]
    assert preset.source.strip() and preset.steps > 0
    ALGORITHMS[algorithm](env_id, quiet=True, **preset.config)


@pytest.mark.parametrize("algorithm", sorted(REQUIRED_ENVS))
def test_the_presets_cover_the_environments_their_issue_lists(algorithm):
    assert REQUIRED_ENVS[algorithm] <= set(all_presets(algorithm))
