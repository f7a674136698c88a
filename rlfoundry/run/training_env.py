"""The environment side of a training run: the vector env, where each copy stands, and how to
save and restore that position so that a resumed run continues exactly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv

from rlfoundry.envs import state as env_state
from rlfoundry.envs.spaces import SpaceError, describe, space_from_dict, space_to_dict
from rlfoundry.envs.vector import EnvSource, EpisodeTracker, VectorStep, builds_new_envs, env_id_of, make_env, step_vector


class TrainingEnv:
    """A vector env plus its current observations and the running return of each episode.

    The env is built from `source` only when first needed, so a loaded model that is only
    used for predictions never creates one.
    """

    def __init__(
        self,
        source: EnvSource | None,
        n_envs: int,
        seed: int,
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
    ):
        self.source = source
        self.n_envs = n_envs
        self.seed = seed
        self.env_id = env_id_of(source) if source is not None else None
        self.env: VectorEnv | None = None
        self.observations: np.ndarray | None = None
        self.episodes = EpisodeTracker(n_envs)
        # Set on a model loaded from a checkpoint written mid-episode that holds no env position:
        # its next learn() says once that training goes on from fresh episodes.
        self.position_lost = False
        # Given (a loaded model's), they are what the env built later must have.
        self.model_spaces = None if observation_space is None or action_space is None else (observation_space, action_space)
        if observation_space is None or action_space is None:
            env = self.open()
            observation_space, action_space = env.single_observation_space, env.single_action_space
        self.observation_space: spaces.Space = observation_space
        self.action_space: spaces.Space = action_space

    def open(self) -> VectorEnv:
        """The vector env, built on first use."""
        if self.env is None:
            if self.source is None:
                raise ValueError(
                    "this model has no environment to train on: pass env=... to rlfoundry.load, or "
                    "create the model with an env"
                )
            if self.model_spaces is not None and isinstance(self.source, VectorEnv) and self.source.num_envs != self.n_envs:
                # make_env would say to pass n_envs, which a checkpoint fixes: its env position,
                # replay buffer and rollout are per env.
                raise ValueError(
                    f"this vector env runs {self.source.num_envs} envs, but the model was trained with "
                    f"n_envs={self.n_envs}: pass a vector env of {self.n_envs} envs, or an env id or a function that makes one env"
                )
            env = make_env(self.source, n_envs=self.n_envs)
            if self.model_spaces is not None:
                require_model_spaces(env, self.source, *self.model_spaces)
            self.env = env
        return self.env

    def start(self) -> np.ndarray:
        """The current observations [N, *obs]; the first call resets the env with the seed."""
        if self.observations is None:
            env = self.open()
            self.observations, _ = env.reset(seed=self.seed)
            env.action_space.seed(self.seed)
            self.episodes = EpisodeTracker(self.n_envs)
        return self.observations

    def step(self, actions: np.ndarray) -> tuple[VectorStep, np.ndarray, np.ndarray]:
        """Step every env: (the step, returns and lengths of the episodes that ended)."""
        step = step_vector(self.open(), actions)
        self.observations = step.observations
        finished_returns, finished_lengths = self.episodes.update(step.rewards, step.done)
        return step, finished_returns, finished_lengths

    def checkpoint_state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(JSON, arrays) for a checkpoint: env id, spaces, env snapshot and current position."""
        # The env with a position to save; None before its first reset.
        env = self.env if self.observations is not None else None
        state = {
            "env_id": self.env_id,
            "n_envs": self.n_envs,
            "observation_space": space_to_dict(self.observation_space),
            "action_space": space_to_dict(self.action_space),
            "env_snapshot": env_state.capture(env) if env is not None else None,
        }
        arrays = {}
        if env is not None:
            arrays = {
                "env.observations": np.asarray(self.observations),
                "env.episode_returns": self.episodes.returns,
                "env.episode_lengths": self.episodes.lengths,
            }
        return state, arrays

    @classmethod
    def from_checkpoint(
        cls, state: dict[str, Any], arrays: Mapping[str, np.ndarray], source: EnvSource | None, seed: int
    ) -> "TrainingEnv":
        """Rebuild from checkpoint_state's output. The position is restored exactly when the env
        snapshot exists (toy-text and classic-control envs); otherwise training restarts episodes."""
        training_env = cls(
            source if source is not None else state["env_id"],
            n_envs=state["n_envs"],
            seed=seed,
            observation_space=space_from_dict(state["observation_space"]),
            action_space=space_from_dict(state["action_space"]),
        )
        if state["env_id"] is not None and training_env.env_id is None:
            training_env.env_id = state["env_id"]
        snapshot = state.get("env_snapshot")
        if snapshot is not None and training_env.source is not None and "env.observations" in arrays:
            env_state.restore(training_env.open(), snapshot)
            training_env.observations = arrays["env.observations"].copy()
            training_env.episodes.returns[:] = arrays["env.episode_returns"]
            training_env.episodes.lengths[:] = arrays["env.episode_lengths"]
        else:
            training_env.position_lost = "env.observations" in arrays
        return training_env

    @property
    def resumed_exactly(self) -> bool:
        """Whether a position was restored (False: the next learn() starts fresh episodes)."""
        return self.observations is not None


def require_model_spaces(
    env: VectorEnv, source: EnvSource, observation_space: spaces.Space, action_space: spaces.Space
) -> None:
    """SpaceError naming both pairs unless the vector env, made by make_env(source), observes and
    acts in the model's spaces; an env it built (from an id or a factory) is closed first."""
    spaces_now = (env.single_observation_space, env.single_action_space)
    if spaces_now != (observation_space, action_space):
        if builds_new_envs(source):
            env.close()
        raise SpaceError(
            f"this env observes {describe(spaces_now[0])} and acts in {describe(spaces_now[1])}, but the "
            f"model was trained on observations {describe(observation_space)} and actions "
            f"{describe(action_space)}: pass an env with the same spaces"
        )
