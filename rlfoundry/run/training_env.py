"""The environment side of a training run: the vector env, where each copy stands, and how to
save and restore that position so that a resumed run continues exactly."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv

from rlfoundry.envs import state as env_state
from rlfoundry.envs.atari import is_atari_id
from rlfoundry.envs.registry import RegisteredEnv, UnknownEnvironmentError
from rlfoundry.envs.spaces import SpaceError, describe, space_from_dict, space_to_dict
from rlfoundry.envs.vector import (
    EnvSource,
    EpisodeTracker,
    VectorStep,
    builds_new_envs,
    env_id_of,
    env_kwargs_of,
    make_env,
    step_vector,
)
from rlfoundry.run.config import ConfigError


class TrainingEnv:
    """A vector env plus its current observations and the running return of each episode.

    The env is built from `source` only when first needed, so a loaded model that is only
    used for predictions never creates one. `env_id` and `env_kwargs` say what it is, for
    checkpoints and for new copies (evaluation, videos); env_kwargs is None when the id with
    keyword arguments cannot rebuild it (see env_kwargs_of).
    """

    def __init__(
        self,
        source: EnvSource | None,
        n_envs: int,
        seed: int,
        observation_space: spaces.Space | None = None,
        action_space: spaces.Space | None = None,
        vectorization: str = "auto",
    ):
        self.source = source
        self.n_envs = n_envs
        self.seed = seed
        # make_env's vectorization for an id or a factory (a checkpoint's env is rebuilt as it was).
        self.vectorization = vectorization
        self.env_id = env_id_of(source) if source is not None else None
        self.env_kwargs = None if source is None or self.env_id is None else env_kwargs_of(source)
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
                if self.env_id is not None:
                    raise ConfigError(unbuildable_env_message(self.env_id, "pass env=... to rlfoundry.load"))
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
            env = make_env(self.source, n_envs=self.n_envs, vectorization=self.vectorization)
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
        """(JSON, arrays) for a checkpoint: env id and keyword arguments, spaces, env snapshot and
        current position."""
        # The env with a position to save; None before its first reset.
        env = self.env if self.observations is not None else None
        state = {
            "env_id": self.env_id,
            "env_kwargs": self.env_kwargs,
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
        """Rebuild from checkpoint_state's output, on `source` if given, else on the recorded id
        and keyword arguments (none without a recorded id, or with one that cannot rebuild the env:
        then training and evaluation ask for env=). The position is restored exactly when the env
        snapshot exists (toy-text and classic-control envs); otherwise training restarts episodes."""
        env_id = state["env_id"]
        # Schema 1 checkpoints predate env_kwargs: their envs were rebuilt from the id alone.
        env_kwargs = state.get("env_kwargs", {})
        rebuilt = source is None and env_id is not None and env_kwargs is not None
        if rebuilt:
            source = RegisteredEnv(env_id, env_kwargs)
        snapshot = state.get("env_snapshot")
        # An id makes a numpy-batched CartPole of 4 or more copies by default: a snapshot of a
        # SyncVectorEnv (make_env(..., vectorization="sync")) is restored into one.
        sync = snapshot is not None and snapshot["layers"][0]["class"] == "SyncVectorEnv"
        training_env = cls(
            source,
            n_envs=state["n_envs"],
            seed=seed,
            observation_space=space_from_dict(state["observation_space"]),
            action_space=space_from_dict(state["action_space"]),
            vectorization="sync" if sync else "auto",
        )
        if env_id is not None and training_env.env_id is None:
            # A factory given for the recorded env (or none at all): it is still that env.
            training_env.env_id, training_env.env_kwargs = env_id, env_kwargs
        if snapshot is not None and training_env.source is not None and "env.observations" in arrays:
            try:
                env = training_env.open()
            except UnknownEnvironmentError as error:
                if not rebuilt:
                    raise  # an id the caller passed as env=
                raise UnknownEnvironmentError(
                    f"{error}: the checkpoint (whose env position is restored now) was trained on it; register it in "
                    "this process (import the module that calls gymnasium.register) before loading, or pass env=..."
                ) from None
            env_state.restore(env, snapshot)
            training_env.observations = arrays["env.observations"].copy()
            training_env.episodes.returns[:] = arrays["env.episode_returns"]
            training_env.episodes.lengths[:] = arrays["env.episode_lengths"]
        else:
            training_env.position_lost = "env.observations" in arrays
        return training_env

    @property
    def rebuild_source(self) -> RegisteredEnv | None:
        """What new copies of this env are made from: its id with its keyword arguments; None when
        they cannot be (see env_kwargs_of)."""
        if self.env_id is None or self.env_kwargs is None:
            return None
        return RegisteredEnv(self.env_id, self.env_kwargs)

    @property
    def stacks_atari_frames(self) -> bool:
        """Whether the observations are the frame stacks (2 frames or more) make_env builds for an
        ALE id, which a replay buffer may keep one frame each of; an ALE env object's are not known to be."""
        shape = self.observation_space.shape or ()
        source = self.rebuild_source
        return source is not None and is_atari_id(source.env_id) and len(shape) > 0 and shape[0] > 1

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


def unbuildable_env_message(env_id: str | None, remedy: str) -> str:
    """Why new copies of a model's env cannot be made from what it recorded, and `remedy`."""
    if env_id is None:
        return f"this model was trained on an env without a registered id (an env object or a function): {remedy}"
    return (
        f"this model was trained on an env object made from {env_id} with wrappers or keyword arguments that its "
        f"checkpoint cannot record, so {env_id} alone would make another env: {remedy} (rlfoundry.RegisteredEnv(id, "
        "kwargs) is an id with keyword arguments that checkpoints record)"
    )


def env_to_rebuild(model: Any, remedy: str) -> EnvSource:
    """What new copies of the env a model trained on are made from (evaluation, videos): its id with
    the keyword arguments it was made with; ConfigError ending in `remedy` when there is none."""
    training_env = getattr(model, "training_env", None)
    # A stand-in model without a training env (a policy that knows its env id) has only the id.
    source = model.env_id if training_env is None else training_env.rebuild_source
    if source is None:
        raise ConfigError(unbuildable_env_message(model.env_id, remedy))
    return source
