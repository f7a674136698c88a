"""Env ids: checking them against Gymnasium's registry, and the keyword arguments an env is made with.

An env made from an id with keyword arguments (`gym.make("CartPole-v1", max_episode_steps=1000)`,
`ALE/Breakout-v5` with `fire_on_reset=True`) is another env than the id's: a checkpoint that kept
only the id would rebuild the wrong one. `RegisteredEnv(env_id, kwargs)` is an id with its keyword
arguments, JSON values that a checkpoint records beside the id, so loading rebuilds the same env.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Optional, Union

import gymnasium as gym
from gymnasium.envs.registration import load_env_creator

from rlfoundry.envs.atari import FIXED_MAKE_KWARGS, is_atari_id, make_atari_env
from rlfoundry.run.config import ConfigError, parse_assignments, unknown_name_message

# gym.make's own keyword arguments; the others go to the env's constructor.
MAKE_KEYWORDS = {"max_episode_steps": Optional[int], "disable_env_checker": Optional[bool]}
# The type a value given on the command line for a keyword without an annotation is read as: the
# first of these that it parses as ("1000" an int, "0.5" a float, "false" a bool, "8x8" a string).
UNANNOTATED = Optional[Union[int, float, bool, str]]


class UnknownEnvironmentError(ValueError):
    """An environment id that Gymnasium does not know."""


def register_optional_envs(env_id: str = "") -> None:
    """Register rlfoundry's own envs, and Atari's (only for ALE ids: importing ale-py is slow)."""
    from rlfoundry.envs.chain import register_chain_env

    register_chain_env()
    if env_id.startswith("ALE/"):
        try:
            import ale_py

            gym.register_envs(ale_py)
        except ImportError:
            pass


def check_env_id(env_id: str) -> None:
    """Raise UnknownEnvironmentError, naming the closest registered ids, for an unknown id."""
    register_optional_envs(env_id)
    if env_id not in gym.registry:
        hint = ""
        if env_id.startswith("ALE/") and importlib.util.find_spec("ale_py") is None:
            hint = " (Atari ids need the extra: pip install 'rlfoundry[atari]')"
        elif "NoFrameskip" in env_id or "Deterministic" in env_id:
            # Stable-Baselines3's Atari ids: here the games are ALE/<Game>-v5, preprocessed for DQN.
            hint = " (Atari games are named ALE/<Game>-v5 here, e.g. ALE/Pong-v5, with DQN's preprocessing)"
        raise UnknownEnvironmentError(unknown_name_message("environment id", env_id, gym.registry.keys()) + hint)


def env_keywords(env_id: str) -> tuple[dict[str, Any], bool]:
    """(the keyword arguments that make_env takes by name for `env_id`, each with its type (None where
    the env does not annotate it): gym.make's, the env constructor's and, for ALE ids, those of
    rlfoundry's Atari preprocessing; whether the constructor takes any other keyword too (**kwargs,
    as MuJoCo's do), so that no name can be refused)."""
    check_env_id(env_id)
    entry_point = gym.spec(env_id).entry_point
    creator = load_env_creator(entry_point) if isinstance(entry_point, str) else entry_point
    if creator is None:  # a spec without an entry point: nothing to check against
        return {}, True
    takes_any = any(parameter.kind is parameter.VAR_KEYWORD for parameter in inspect.signature(creator).parameters.values())
    keywords = {**_named_keywords(creator), **MAKE_KEYWORDS}
    if is_atari_id(env_id):
        keywords.update(_named_keywords(make_atari_env))
        del keywords["env_id"]
    return keywords, takes_any


def _named_keywords(function: Any) -> dict[str, Any]:
    """The parameters of a function or class that can be passed by name, with their annotations."""
    try:
        # A class's own constructor (mypy flags __init__ read off an instance; here it is read off the class).
        hints = typing.get_type_hints(function.__init__ if isinstance(function, type) else function)  # type: ignore[misc]
    except (NameError, TypeError):
        hints = {}  # annotations that do not resolve here: the values' types are guessed
    return {
        parameter.name: hints.get(parameter.name)
        for parameter in inspect.signature(function).parameters.values()
        if parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY)
    }


def check_env_kwargs(env_id: str, kwargs: typing.Mapping[str, Any]) -> None:
    """ConfigError for the first keyword argument that make_env cannot pass on for `env_id`: one its
    env does not take (naming the closest it does), or one rlfoundry's Atari preprocessing fixes."""
    keywords, takes_any = env_keywords(env_id)
    for key in kwargs:
        if is_atari_id(env_id) and key in FIXED_MAKE_KWARGS:
            raise ConfigError(f"{env_id} does not take {key}: {FIXED_MAKE_KWARGS[key]}")
        if not takes_any and key not in keywords:
            raise ConfigError(unknown_name_message(f"keyword argument of {env_id}", key, keywords))


def parse_env_kwargs(env_id: str, assignments: typing.Iterable[str]) -> dict[str, Any]:
    """Parse the CLI's `--env-kwarg key=value` strings into values of the types the env's keyword
    arguments take (see UNANNOTATED for those without an annotation); a tuple becomes a list, the
    JSON value a checkpoint records."""
    keywords, _ = env_keywords(env_id)

    def keyword_type(key: str) -> Any:
        check_env_kwargs(env_id, {key: None})
        return keywords.get(key) or UNANNOTATED

    parsed = parse_assignments("--env-kwarg", assignments, keyword_type)
    return {key: list(value) if isinstance(value, tuple) else value for key, value in parsed.items()}


def is_json_value(value: Any) -> bool:
    """Whether JSON holds `value` exactly: numbers (finite), strings, booleans, None, and lists
    and string-keyed dicts of them (a tuple would come back a list)."""
    try:
        return json.loads(json.dumps(value, allow_nan=False)) == value
    except (TypeError, ValueError):
        return False


def describe_kwargs(kwargs: typing.Mapping[str, Any]) -> str:
    """key=value, ... as a call would write them."""
    return ", ".join(f"{key}={value!r}" for key, value in kwargs.items())


@dataclass(frozen=True)
class RegisteredEnv:
    """A registered env id and the keyword arguments to make it with, an env source every algorithm,
    make_env, evaluate and rlfoundry.load take: gym.make's (`max_episode_steps`), the env's own
    (FrozenLake's `is_slippery`, ALE's `repeat_action_probability`) and, for ALE ids, those of
    rlfoundry's Atari preprocessing (`terminal_on_life_loss`, `fire_on_reset`, ...: see
    rlfoundry.envs.atari.make_atari_env). Checkpoints record the keyword arguments beside the id, so
    they must be JSON values; make_env checks them against the env's constructor (not done here: a
    loaded model that only predicts needs no env, nor its id registered)."""

    env_id: str
    kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.env_id, str):
            raise TypeError(f"RegisteredEnv's env_id must be an env id string, got {type(self.env_id).__name__}")
        if not isinstance(self.kwargs, dict) or not all(isinstance(key, str) for key in self.kwargs):
            raise TypeError(f"RegisteredEnv's kwargs must be a dict of keyword arguments by name, got {self.kwargs!r}")
        for key, value in self.kwargs.items():
            if not is_json_value(value):
                raise ConfigError(
                    f"{key}={value!r} cannot be recorded in a checkpoint, which holds JSON values (numbers, strings, "
                    "booleans, None, lists and dicts of them): pass a function that makes the env instead (and the "
                    "same function as env= to rlfoundry.load)"
                )
        # A copy: the caller's dict may change later, the recorded arguments may not.
        object.__setattr__(self, "kwargs", dict(self.kwargs))

    def __str__(self) -> str:
        return f"{self.env_id}({describe_kwargs(self.kwargs)})" if self.kwargs else self.env_id
