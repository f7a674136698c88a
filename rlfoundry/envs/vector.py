"""Vector environments and the one place where autoreset and final observations are handled.

Every rlfoundry vector env resets a finished sub-environment in the same step (Gymnasium's
SAME_STEP autoreset): the observation returned for that env starts the next episode, and the
true last observation of the finished episode travels in `infos["final_obs"]`. `step_vector`
turns that into two arrays, `observations` (what to act on next) and `next_observations` (the
true s_{t+1} of each transition), so that no algorithm ever bootstraps from a reset observation.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Union

import gymnasium as gym
import numpy as np
from gymnasium.envs.classic_control.cartpole import CartPoleVectorEnv
from gymnasium.vector import AutoresetMode, VectorEnv, VectorWrapper

from rlfoundry.envs.atari import atari_factory, is_atari_id
from rlfoundry.envs.registry import RegisteredEnv, check_env_id, check_env_kwargs, describe_kwargs, is_json_value
from rlfoundry.run.config import ConfigError

EnvSource = Union[str, RegisteredEnv, gym.Env, VectorEnv, Callable[[], gym.Env]]
"""What an algorithm accepts as its environment: an id (with keyword arguments: a RegisteredEnv), an
env, a vector env or an env factory."""

# Ids whose Gymnasium registration has a native (numpy-batched) vector env we know how to adapt.
NATIVE_VECTOR_IDS = ("CartPole-v0", "CartPole-v1")
# Below this many copies a SyncVectorEnv of plain CartPoles steps faster than the numpy-batched one
# (measured per vector step: 1 env 52 against 121 us, 3 envs 96 against 106, 4 envs 123 against 103).
NATIVE_VECTOR_MIN_ENVS = 4


class AutoresetModeError(ValueError):
    """A vector env that does not reset finished episodes in the same step."""


def make_env(
    env: EnvSource,
    n_envs: int = 1,
    seed: int | None = None,
    vectorization: str = "auto",
    **env_kwargs: Any,
) -> VectorEnv:
    """A Gymnasium vector env of `n_envs` copies with same-step autoreset, reset with `seed`.

    `env` is an env id (with `env_kwargs`, or a RegisteredEnv holding both), a factory returning a
    gymnasium.Env, a single gymnasium.Env (then n_envs must be 1) or a vector env (returned as it is
    after checking its autoreset mode, and that it was built with copy=True: one built with
    copy=False overwrites the observations it returned). `ALE/...` ids are built with the standard
    Atari preprocessing of rlfoundry.envs.atari, whose options are keyword arguments too.
    `vectorization` is "auto" (the native batched CartPole for 4 or more copies, else "sync"),
    "sync" (all copies in this process) or "async" (one process per copy). A keyword argument the
    env does not take, or a value it refuses, raises a ConfigError naming it.
    """
    if vectorization not in ("auto", "sync", "async"):
        raise ValueError(f"vectorization={vectorization!r} is not allowed: choose 'auto', 'sync' or 'async'")
    if isinstance(n_envs, bool) or not isinstance(n_envs, int) or n_envs < 1:
        raise ValueError(f"n_envs={n_envs!r} is out of range: allowed integers >= 1")
    if isinstance(env, RegisteredEnv):
        if env_kwargs:
            raise TypeError(f"pass the keyword arguments ({describe_kwargs(env_kwargs)}) inside the RegisteredEnv, which has its own")
        env_kwargs = env.kwargs
        env = env.env_id
    if isinstance(env, str):
        check_env_id(env)
        check_env_kwargs(env, env_kwargs)
    elif env_kwargs:
        raise TypeError(f"keyword arguments ({describe_kwargs(env_kwargs)}) make an env from an id, not from a {type(env).__name__}")
    try:
        vector_env = _vector_env(env, n_envs, vectorization, env_kwargs)
    except ConfigError:
        raise
    except Exception as error:
        if not env_kwargs:
            raise
        # The env's own complaint (a RuntimeError from the ALE, say), as one line that names the arguments.
        raise ConfigError(f"{env} cannot be made with {describe_kwargs(env_kwargs)}: {type(error).__name__}: {error}") from error
    if seed is not None:
        vector_env.reset(seed=seed)
        vector_env.action_space.seed(seed)
    return vector_env


def _vector_env(env: EnvSource, n_envs: int, vectorization: str, env_kwargs: dict[str, Any]) -> VectorEnv:
    """make_env's vector env, not yet reset."""
    if isinstance(env, str) and is_atari_id(env):
        # Atari ids get the standard DQN preprocessing; pass a factory for raw ALE frames.
        env, env_kwargs = atari_factory(env, **env_kwargs), {}
    if isinstance(env, VectorEnv):
        check_autoreset_mode(env)
        if getattr(env.unwrapped, "copy", True) is False:
            # Observations acted on are stored after the next step, which would have written over them.
            raise ValueError(
                "this vector env was built with copy=False: it returns one observation buffer that its next "
                "step overwrites, so stored observations would be the next ones; build it with copy=True "
                "(the default), or pass the env id to rlfoundry.make_env"
            )
        if env.num_envs != n_envs:
            raise ValueError(
                f"this vector env runs {env.num_envs} envs but n_envs={n_envs}: pass "
                f"n_envs={env.num_envs} with it (the config records how many envs trained)"
            )
        return env
    if isinstance(env, str):
        native = env in NATIVE_VECTOR_IDS and n_envs >= NATIVE_VECTOR_MIN_ENVS and not env_kwargs
        if vectorization == "auto" and native:
            return CartPoleSameStep(gym.make_vec(env, num_envs=n_envs, vectorization_mode="vector_entry_point"))
        return gym.make_vec(
            env,
            num_envs=n_envs,
            vectorization_mode="sync" if vectorization == "auto" else vectorization,
            vector_kwargs={"autoreset_mode": AutoresetMode.SAME_STEP},
            **env_kwargs,
        )
    if isinstance(env, gym.Env):
        if n_envs != 1:
            raise ValueError(
                f"n_envs={n_envs} needs a way to build {n_envs} copies: pass an env id or a function "
                "that returns a new env instead of a single env instance"
            )
        single_env = env
        return gym.vector.SyncVectorEnv([lambda: single_env], autoreset_mode=AutoresetMode.SAME_STEP)
    if callable(env):
        vector_class = gym.vector.AsyncVectorEnv if vectorization == "async" else gym.vector.SyncVectorEnv
        return vector_class([env] * n_envs, autoreset_mode=AutoresetMode.SAME_STEP)
    raise TypeError(f"env must be an env id, a gymnasium.Env, a vector env or a factory, got {type(env).__name__}")


def builds_new_envs(env: EnvSource) -> bool:
    """Whether make_env(env) creates the envs it returns (from an id or a factory), which its caller
    then closes. A gymnasium.Env or vector env object stays its owner's: wrapping it in a vector env
    must not close it."""
    return not isinstance(env, (gym.Env, VectorEnv))


def env_id_of(env: EnvSource) -> str | None:
    """The registered id behind an env source, when there is one (used to rebuild it on load)."""
    if isinstance(env, str):
        return env
    if isinstance(env, RegisteredEnv):
        return env.env_id
    return getattr(_spec_of(env), "id", None)


# The keys under which gym.make_vec records its own arguments in the spec of the vector env it makes.
VECTOR_SPEC_KEYS = ("num_envs", "vectorization_mode", "vector_kwargs")


def env_kwargs_of(env: EnvSource) -> dict[str, Any] | None:
    """The keyword arguments that rebuild `env` from env_id_of(env) through make_env: none for an
    id, a RegisteredEnv's own, and for an env object those its spec records (gym.make's and the
    env's, not render_mode: how it draws, not what it does). None when the id cannot rebuild it: a
    factory; an ALE env object (make_env builds ALE ids with rlfoundry's preprocessing, whatever the
    object had); an object wrapped beyond its registration, wrappers a spec does not describe
    (vector wrappers) or values that are not JSON."""
    if isinstance(env, str):
        return {}
    if isinstance(env, RegisteredEnv):
        return dict(env.kwargs)
    spec = _spec_of(env)
    wrapped = isinstance(env, VectorWrapper) and not isinstance(env, CartPoleSameStep)
    if spec is None or wrapped or is_atari_id(spec.id) or spec.id not in gym.registry:
        return None
    registered = gym.spec(spec.id)
    # make_vec records its own arguments among the env's, and gym.make's max_episode_steps there too.
    made = {key: value for key, value in spec.kwargs.items() if key not in VECTOR_SPEC_KEYS and key != "render_mode"}
    max_episode_steps = made.pop("max_episode_steps", spec.max_episode_steps)
    if spec.entry_point != registered.entry_point or spec.additional_wrappers != registered.additional_wrappers or "wrappers" in made:
        return None
    kwargs = {key: value for key, value in made.items() if key not in registered.kwargs or registered.kwargs[key] != value}
    if max_episode_steps != registered.max_episode_steps:
        kwargs["max_episode_steps"] = max_episode_steps
    return kwargs if all(is_json_value(value) for value in kwargs.values()) else None


def _spec_of(env: EnvSource):
    """The EnvSpec of an env object or vector env (None for a factory or an env made without one)."""
    spec = getattr(env, "spec", None)
    if spec is None and isinstance(env, VectorEnv):
        spec = getattr(env.unwrapped, "spec", None)
    return spec


def check_autoreset_mode(vector_env: VectorEnv) -> None:
    """Raise AutoresetModeError unless the vector env resets finished envs in the same step."""
    mode = vector_env.metadata.get("autoreset_mode")
    if mode not in (AutoresetMode.SAME_STEP, AutoresetMode.SAME_STEP.value):
        raise AutoresetModeError(
            f"this vector env uses autoreset_mode={mode}; rlfoundry needs SAME_STEP so that the final "
            "observation of every episode is kept: build it with rlfoundry.make_env(env_id, n_envs) or "
            "gym.make_vec(..., vector_kwargs={'autoreset_mode': gym.vector.AutoresetMode.SAME_STEP})"
        )


class CartPoleSameStep(VectorWrapper):
    """Gymnasium's numpy-batched CartPole with same-step autoreset.

    The native env resets a finished copy only on the next call to step (NEXT_STEP), which
    wastes that step and hides the reset observation. This adapter resets finished copies
    right after the step that ended them, with the env's own generator and reset bounds, and
    reports their last observations in `infos["final_obs"]` exactly as SyncVectorEnv does.
    """

    def __init__(self, env: VectorEnv):
        _native_cartpole(env)
        super().__init__(env)
        self.metadata = {**env.metadata, "autoreset_mode": AutoresetMode.SAME_STEP}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        """Reset every copy, or only those of options["reset_mask"] ([N] bool, as SyncVectorEnv
        takes it: the others go on), which continue from the env's generator."""
        if options is None or "reset_mask" not in options:
            return self.env.reset(seed=seed, options=options)
        if seed is not None:
            raise ValueError("CartPoleSameStep resets some copies from the env's own generator: pass seed=None with a reset_mask")
        self._reset_copies(options["reset_mask"])
        return _cartpole_state(_native_cartpole(self.env)).T.astype(np.float32), {}

    def step(self, actions: np.ndarray):
        observations, rewards, terminated, truncated, infos = self.env.step(actions)
        done = terminated | truncated
        if done.any():
            final_observations = np.full(self.num_envs, None, dtype=object)
            for index in np.flatnonzero(done):
                final_observations[index] = observations[index].copy()
            observations[done] = self._reset_copies(done)
            infos = {**infos, "final_obs": final_observations, "_final_obs": done.copy()}
        return observations, rewards, terminated, truncated, infos

    def _reset_copies(self, mask: np.ndarray) -> np.ndarray:
        """Reset the copies where mask [N] is True with the env's own generator and reset bounds;
        returns their new observations [count, 4]."""
        cartpole = _native_cartpole(self.env)
        state = _cartpole_state(cartpole)
        state[:, mask] = cartpole.np_random.uniform(low=cartpole.low, high=cartpole.high, size=(4, int(mask.sum())))
        cartpole.steps[mask] = 0
        # The native env would reset finished copies on the next step; they are reset already.
        cartpole.prev_done[:] = False
        return state[:, mask].T.astype(np.float32)


def _native_cartpole(env: VectorEnv) -> CartPoleVectorEnv:
    """The CartPoleVectorEnv inside `env`; TypeError for another env."""
    cartpole = env.unwrapped
    if not isinstance(cartpole, CartPoleVectorEnv):
        raise TypeError(f"CartPoleSameStep wraps CartPoleVectorEnv, got {type(cartpole).__name__}")
    return cartpole


def _cartpole_state(cartpole: CartPoleVectorEnv) -> np.ndarray:
    """The copies' states [4, N], once reset."""
    # gymnasium's __init__ sets state to None without an annotation, so mypy takes it for always None.
    return cartpole.state  # type: ignore[return-value]


@dataclass(frozen=True)
class VectorStep:
    """One step of N environments.

    observations:      [N, *obs]  what to act on next (a reset observation where an episode ended)
    next_observations: [N, *obs]  the true s_{t+1} of each transition (the final observation where
                                  an episode ended); the same array as `observations` when none did
    rewards:           [N] float32
    terminated:        [N] bool   s_{t+1} is terminal: no bootstrap
    truncated:         [N] bool   the episode was cut (e.g. a time limit): bootstrap from s_{t+1}
    infos:             Gymnasium's info dict
    """

    observations: np.ndarray
    next_observations: np.ndarray
    rewards: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    infos: dict

    @property
    def done(self) -> np.ndarray:
        """[N] bool: the episode ended (terminated or truncated) at this step."""
        return self.terminated | self.truncated


def step_vector(env: VectorEnv, actions: np.ndarray) -> VectorStep:
    """Step a same-step-autoreset vector env and recover the true next observations."""
    if steps_directly(env):
        return step_sync_directly(env, actions)  # type: ignore[arg-type]
    observations, rewards, terminated, truncated, infos = env.step(actions)
    terminated = np.asarray(terminated, dtype=bool)
    truncated = np.asarray(truncated, dtype=bool)
    next_observations = observations
    final_mask = infos.get("_final_obs")
    if final_mask is not None and final_mask.any():
        next_observations = np.array(observations, copy=True)
        final_observations = infos["final_obs"]
        for index in np.flatnonzero(final_mask):
            next_observations[index] = final_observations[index]
    return VectorStep(
        observations=observations,
        next_observations=next_observations,
        rewards=np.asarray(rewards, dtype=np.float32),
        terminated=terminated,
        truncated=truncated,
        infos=infos,
    )


def steps_directly(env: VectorEnv) -> bool:
    """Whether step_sync_directly can stand in for env.step: a plain SyncVectorEnv with same-step
    autoreset, one Box of observations and Box or Discrete actions."""
    return (
        type(env) is gym.vector.SyncVectorEnv
        and env.autoreset_mode == AutoresetMode.SAME_STEP
        and type(env.single_observation_space) is gym.spaces.Box
        and type(env.single_action_space) in (gym.spaces.Box, gym.spaces.Discrete)
    )


def step_sync_directly(env: gym.vector.SyncVectorEnv, actions: np.ndarray) -> VectorStep:
    """SyncVectorEnv.step and step_vector in one pass, for the envs of steps_directly: the same calls
    to the sub-envs, the same infos and the same state left in the vector env, without its helpers
    for any space (iterate, concatenate, a deepcopy of the observations), which took 10 of a
    CartPole step's 17 us. tests/test_envs.py holds it equal to env.step."""
    infos: dict[str, Any] = {}
    observations = np.empty_like(env._observations)
    # Made once an episode ends: then the rows of next_observations and observations differ.
    next_observations: np.ndarray | None = None
    for index, sub_env in enumerate(env.envs):
        observation, reward, terminated, truncated, info = sub_env.step(actions[index])
        env._rewards[index] = reward
        env._terminations[index] = terminated
        env._truncations[index] = truncated
        if terminated or truncated:
            if next_observations is None:
                next_observations = np.empty_like(observations)
                next_observations[:index] = observations[:index]
            next_observations[index] = observation
            infos = env._add_info(infos, {"final_obs": observation, "final_info": info}, index)
            observation, info = sub_env.reset()
        elif next_observations is not None:
            next_observations[index] = observation
        observations[index] = observation
        env._env_obs[index] = observation
        infos = env._add_info(infos, info, index)
    np.copyto(env._observations, observations)
    env._autoreset_envs = env._terminations | env._truncations
    return VectorStep(
        observations=observations,
        next_observations=observations if next_observations is None else next_observations,
        rewards=env._rewards.astype(np.float32),
        terminated=env._terminations.copy(),
        truncated=env._truncations.copy(),
        infos=infos,
    )


class EpisodeTracker:
    """Running return and length of the current episode of each of N envs."""

    def __init__(self, n_envs: int):
        self.returns = np.zeros(n_envs, dtype=np.float64)
        self.lengths = np.zeros(n_envs, dtype=np.int64)

    def update(self, rewards: np.ndarray, done: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add one step; return (returns, lengths) of the episodes that ended at it."""
        self.returns += rewards
        self.lengths += 1
        if not done.any():
            return _EMPTY_FLOATS, _EMPTY_INTS
        finished_returns = self.returns[done].copy()
        finished_lengths = self.lengths[done].copy()
        self.returns[done] = 0.0
        self.lengths[done] = 0
        return finished_returns, finished_lengths


_EMPTY_FLOATS = np.zeros(0, dtype=np.float64)
_EMPTY_INTS = np.zeros(0, dtype=np.int64)
