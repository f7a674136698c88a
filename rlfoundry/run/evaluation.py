"""Evaluation: run a trained model for a fixed number of whole episodes, once (`evaluate`) or
every so many env steps while it learns (`PeriodicEvaluation`).

Every evaluation episode ends: at the env's own end, or after a step cap. The cap is the caller's
`max_episode_steps` when given; otherwise an env with a time limit of its own (a TimeLimit, an ALE
game's frame limit) keeps it, and any other env gets DEFAULT_MAX_EPISODE_STEPS. An episode the cap
cuts counts with its return so far and is marked in `EvaluationResult.cut`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium.envs.registration import EnvSpec
from gymnasium.vector import VectorEnv

from rlfoundry.envs.vector import EnvSource, EpisodeTracker, builds_new_envs, make_env, step_vector
from rlfoundry.run.config import ConfigError, require_int, require_range
from rlfoundry.run.seeding import seeded_sampling
from rlfoundry.run.training_env import env_to_rebuild, require_model_spaces

# Evaluation envs are seeded apart from the training envs (`rlf train`'s final evaluation too).
EVALUATION_SEED_OFFSET = 10_000
# Without it, evaluating on an env with no time limit (CliffWalking-v1) never ends for a greedy
# policy that walks into a wall. 10,000 is far beyond the limits of the registered tasks that
# have one (classic control 200-500, toy text 100-200, MuJoCo 1000), yet plays in seconds.
DEFAULT_MAX_EPISODE_STEPS = 10_000


@dataclass(frozen=True)
class EvaluationResult:
    """Per-episode returns and lengths, in the order the episodes were assigned to envs, and which
    episodes the evaluation's step cap cut (their return is the return so far)."""

    returns: np.ndarray
    lengths: np.ndarray
    cut: np.ndarray

    @property
    def mean(self) -> float:
        return float(self.returns.mean())

    @property
    def std(self) -> float:
        return float(self.returns.std())

    def __str__(self) -> str:
        count = self.returns.size
        summary = f"mean return {self.mean:.2f} +/- {self.std:.2f} over {count} episode{'' if count == 1 else 's'}"
        cut_count = int(self.cut.sum())
        if cut_count:
            summary += f" ({cut_count} cut at the step cap, counted with their return so far)"
        return summary


def checked_episode_count(n_episodes: int) -> int:
    """n_episodes if it is an integer >= 1; ValueError naming it otherwise."""
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"n_episodes={n_episodes!r} is out of range: allowed integers >= 1")
    return n_episodes


def require_step_cap(name: str, max_episode_steps: int | None) -> None:
    """ConfigError naming `name` unless max_episode_steps is None or an integer >= 1."""
    if max_episode_steps is not None:
        require_int(name, max_episode_steps, 1)


def require_playing_options(deterministic: bool, seed: int | None, prefix: str = "") -> None:
    """ConfigError naming `prefix` + deterministic or seed unless deterministic is True or False
    and seed is None or an integer >= 0 (a truthy string would otherwise read as True)."""
    if not isinstance(deterministic, bool):
        raise ConfigError(f"{prefix}deterministic must be True or False, got {deterministic!r}")
    if seed is not None:
        require_int(f"{prefix}seed", seed, 0)


def episode_step_cap(
    max_episode_steps: int | None, specs: list[EnvSpec | None], default: int = DEFAULT_MAX_EPISODE_STEPS
) -> int | None:
    """The step at which evaluation cuts an episode its env has not ended: `max_episode_steps` when
    given; else None (no cut) when every env, by its spec, ends episodes after a limit of its own;
    else `default`."""
    if max_episode_steps is not None:
        return max_episode_steps
    # The ALE counts max_num_frames_per_episode only when positive (0 or less: no limit).
    limited = all(
        spec is not None and (spec.max_episode_steps is not None or (spec.kwargs.get("max_num_frames_per_episode") or 0) > 0)
        for spec in specs
    )
    return None if limited else default


def vector_env_specs(vector_env: VectorEnv) -> list[EnvSpec | None]:
    """The spec of a vector env made from an id, else those of its copies (None where unknown)."""
    if vector_env.spec is not None:
        return [vector_env.spec]
    get_attr = getattr(vector_env, "get_attr", None)
    return list(get_attr("spec")) if get_attr is not None else [None]


def evaluation_env_count(env: EnvSource, n_episodes: int, max_envs: int = 8) -> int:
    """How many env copies an evaluation runs: a vector env's own, 1 for an env object, else
    one per episode up to max_envs."""
    if isinstance(env, VectorEnv):
        return env.num_envs
    if isinstance(env, gym.Env):
        return 1
    return min(n_episodes, max_envs)


def evaluate(
    model: Any,
    env: EnvSource | None = None,
    n_episodes: int = 20,
    deterministic: bool = True,
    seed: int | None = None,
    max_envs: int = 8,
    max_episode_steps: int | None = None,
) -> EvaluationResult:
    """Run `n_episodes` whole episodes with model.predict and return their returns.

    `env` defaults to the env the model was trained on (its id, made with the keyword arguments it
    recorded); an env object passed in is left open.
    Episodes are spread over up to `max_envs` parallel envs with a fixed quota per env, so that
    short episodes are not over-counted (taking the first n episodes to finish would bias the mean
    towards them). `max_episode_steps` cuts each episode after that many steps (the env's own time
    limit still applies); None: the env's own time limit, or DEFAULT_MAX_EPISODE_STEPS (10,000)
    for an env without one. A cut episode counts with its return so far and is marked in `cut`;
    the env copy it ran in is reset (options={"reset_mask": ...}, as Gymnasium's vector envs take).
    With deterministic=False the actions are sampled from torch's global generator, started from
    `seed` for the evaluation and put back afterwards: the same seed plays the same episodes.
    """
    checked_episode_count(n_episodes)
    require_step_cap("max_episode_steps", max_episode_steps)
    require_playing_options(deterministic, seed)
    require_int("max_envs", max_envs, 1)
    env = env_to_rebuild(model, "pass env=... to evaluate") if env is None else env
    n_envs = evaluation_env_count(env, n_episodes, max_envs)
    # Reset once, below, with the seed (make_env would reset it a first time).
    vector_env = make_env(env, n_envs=n_envs)
    quotas = np.full(n_envs, n_episodes // n_envs)
    quotas[: n_episodes % n_envs] += 1
    cap = episode_step_cap(max_episode_steps, vector_env_specs(vector_env))
    training_env = getattr(model, "training_env", None)
    if training_env is not None:
        require_model_spaces(vector_env, env, training_env.observation_space, training_env.action_space)
    observations, _ = vector_env.reset(seed=seed)
    tracker = EpisodeTracker(n_envs)
    # Per env: (return, length, cut) of each of its episodes, in the order they ended.
    episodes: list[list[tuple[float, int, bool]]] = [[] for _ in range(n_envs)]
    try:
        with seeded_sampling(seed):
            while any(len(episodes[index]) < quotas[index] for index in range(n_envs)):
                actions = model.predict(observations, deterministic=deterministic)
                step = step_vector(vector_env, actions)
                cut = np.zeros(n_envs, dtype=bool) if cap is None else ~step.done & (tracker.lengths + 1 >= cap)
                ended = step.done | cut
                finished_returns, finished_lengths = tracker.update(step.rewards, ended)
                for position, index in enumerate(np.flatnonzero(ended)):
                    if len(episodes[index]) < quotas[index]:
                        episodes[index].append((float(finished_returns[position]), int(finished_lengths[position]), bool(cut[index])))
                observations = step.observations
                if cut.any():
                    # The env did not end these episodes, so it did not reset them either.
                    observations, _ = vector_env.reset(options={"reset_mask": cut})
    finally:
        if builds_new_envs(env):
            vector_env.close()
    returns, lengths, cuts = zip(*(episode for per_env in episodes for episode in per_env))
    return EvaluationResult(returns=np.array(returns), lengths=np.array(lengths), cut=np.array(cuts))


@dataclass(frozen=True)
class PeriodicEvaluation:
    """Evaluate the policy every `every` env steps while it learns, and keep the best one.

    Pass it as `evaluation=` to an algorithm or to `rlfoundry.load`. Evaluations happen at the
    first point between updates past each multiple of `every` (where periodic checkpoints are
    written too), each on the same seeded episodes, so their means compare like for like. They
    leave training exactly as it would have been without them: sampled actions draw only from
    torch's global generator, which is put back afterwards. With a run directory, each one is a row of
    RUN_DIR/evaluations.csv and `eval/*` scalars in TensorBoard, and every new best mean writes
    RUN_DIR/checkpoints/best; `model.evaluations` lists those of the model's learn() calls.
    With `stop_at`, learn() ends early, at the first evaluation that reaches it (the final
    checkpoint is written there as usual)."""

    every: int
    "env steps between evaluations"
    episodes: int = 10
    "whole episodes per evaluation"
    env: EnvSource | None = None
    "the env to evaluate on; None: the training env (a model trained on an env object its id does not rebuild needs one)"
    deterministic: bool = True
    "act with the policy's mode (or greedily), else sample"
    seed: int | None = None
    "seed of the evaluation envs, reset to it at every evaluation; None: the config's seed + 10,000"
    stop_at: float | None = None
    "end learn() at the first evaluation whose mean return is at least this; None: never"
    max_episode_steps: int | None = None
    "steps after which an evaluation episode is cut; None: the env's time limit, else 10,000 (see evaluate)"

    def __post_init__(self) -> None:
        require_int("evaluation every", self.every, 1)
        require_int("evaluation episodes", self.episodes, 1)
        require_playing_options(self.deterministic, self.seed, prefix="evaluation ")
        if self.stop_at is not None:
            require_range("evaluation stop_at", self.stop_at)
        require_step_cap("evaluation max_episode_steps", self.max_episode_steps)


def checked_evaluation(value: PeriodicEvaluation | None) -> PeriodicEvaluation | None:
    """None or a PeriodicEvaluation; ConfigError for anything else (e.g. a bare step count)."""
    if value is not None and not isinstance(value, PeriodicEvaluation):
        raise ConfigError(
            f"evaluation={value!r} is not allowed: pass rlfoundry.PeriodicEvaluation(every=...), e.g. "
            "PeriodicEvaluation(every=10_000, episodes=10), or None"
        )
    return value


class EvaluationPoint(NamedTuple):
    """One periodic evaluation: the env-step count it was made at, and its episodes."""

    step: int
    result: EvaluationResult


class PeriodicEvaluator:
    """Carries out a model's PeriodicEvaluation during one learn() call, on envs opened once."""

    def __init__(self, model: Any, plan: PeriodicEvaluation):
        env = plan.env if plan.env is not None else env_to_rebuild(model, "pass PeriodicEvaluation(..., env=...)")
        self.model = model
        self.plan = plan
        self.seed = plan.seed if plan.seed is not None else model.config.seed + EVALUATION_SEED_OFFSET
        # As many copies as evaluate() would open, so that the episodes are the same as its.
        # Unseeded and not reset here: each evaluation resets them with the seed.
        self.env = make_env(env, n_envs=evaluation_env_count(env, plan.episodes))
        # Envs made here from an id or a factory are closed at the end; an env object the caller
        # passed stays open for the next learn() call.
        self.owns_env = builds_new_envs(env)

    def due(self, previous_step: int, step: int) -> bool:
        """Whether the env-step count passed a multiple of `every` in (previous_step, step]."""
        return step // self.plan.every > previous_step // self.plan.every

    def run(self, step: int) -> EvaluationPoint:
        """Evaluate the model now. Sampled actions draw only from torch's global generator, which
        evaluate() puts back: the model's training generators are not touched."""
        model, plan = self.model, self.plan
        result = evaluate(model, self.env, plan.episodes, plan.deterministic, self.seed, max_episode_steps=plan.max_episode_steps)
        point = EvaluationPoint(step, result)
        model.evaluations.append(point)
        return point

    def close(self) -> None:
        if self.owns_env:
            self.env.close()
