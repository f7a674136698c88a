"""Shared by the learning tests: train an algorithm with its preset on several seeds, evaluate each."""

import rlfoundry
from rlfoundry.algorithms import ALGORITHMS
from rlfoundry.presets import load_preset

EVALUATION_EPISODES = 20
EVALUATION_SEED = 99


def preset_returns(algorithm: str, env_id: str, seeds=(1, 2, 3), steps: int | None = None, **overrides) -> list[float]:
    """Mean deterministic evaluation return over 20 episodes after training with the preset (and
    `overrides` of its config), per seed."""
    preset = load_preset(algorithm, env_id)
    returns = []
    for seed in seeds:
        model = ALGORITHMS[algorithm](env_id, seed=seed, quiet=True, **{**preset.config, **overrides}).learn(steps or preset.steps)
        returns.append(rlfoundry.evaluate(model, n_episodes=EVALUATION_EPISODES, seed=EVALUATION_SEED).mean)
    print(f"{algorithm} {env_id}: evaluation returns {returns} for seeds {list(seeds)}")  # shown by pytest -rA
    return returns
