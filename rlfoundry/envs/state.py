"""Capture and restore the state of vector environments, for checkpoints that resume exactly.

A Gymnasium env has no standard way to save its state. For the envs whose state lives in plain
Python and numpy attributes (toy-text, classic control, rlfoundry's finite MDPs) we copy every
such attribute of every wrapper layer (TimeLimit's step count, FrameStackObservation's frames)
and every random generator. For other envs (MuJoCo, Box2D, Atari keep state in native code), and
wherever a layer holds state in any other kind of object (Gymnasium's NormalizeObservation keeps
its statistics in a RunningMeanStd), `capture` returns None and a resumed run starts fresh
episodes, which the checkpoint records: restoring all but that state would go on in another env.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from gymnasium.vector import VectorEnv

from rlfoundry.run.seeding import restore_generator

# Modules whose envs keep all their state in plain attributes.
CAPTURABLE_MODULES = (
    "gymnasium.envs.toy_text",
    "gymnasium.envs.classic_control",
    "rlfoundry.",
)
# Attributes that are not state: how the env was built (its spec, the copy of it a wrapper caches
# once its spec is read, and arguments, the toy-text maps `desc` and transition tables `P`, the
# chain's MDP), links to the layers inside, and scratch space a step writes before it reads it
# (SyncVectorEnv's `_env_obs`, PassiveEnvChecker's data). Spaces and functions (a transforming
# wrapper's) are settings too.
_SETTINGS_ATTRIBUTES = {
    "spec", "_cached_spec", "metadata", "_metadata", "render_mode", "env", "envs", "_env", "env_fns",
    "autoreset_mode", "_saved_kwargs", "_env_obs", "_previous_data", "desc", "P", "mdp",
}


def capture(vector_env: VectorEnv) -> dict[str, Any] | None:
    """A JSON-ready snapshot of the env state, or None if this env cannot be captured exactly."""
    layers = _layers(vector_env)
    if layers is None:
        return None
    snapshot = []
    for layer in layers:
        attributes = _state_attributes(layer)
        if attributes is None:
            return None
        snapshot.append({"class": type(layer).__name__, "attributes": attributes})
    return {"layers": snapshot}


def restore(vector_env: VectorEnv, snapshot: dict[str, Any]) -> None:
    """Put a snapshot from `capture` back into an env built the same way."""
    layers = _layers(vector_env)
    saved = snapshot["layers"]
    if layers is None or [type(layer).__name__ for layer in layers] != [layer["class"] for layer in saved]:
        raise ValueError(
            "the environment is not built like the one in the checkpoint (different wrappers or "
            "vectorisation); create it the same way, or load without an env to let rlfoundry build it"
        )
    for layer, saved_layer in zip(layers, saved):
        for name, encoded in saved_layer["attributes"].items():
            current = getattr(layer, name, None)
            if isinstance(current, np.random.Generator):
                current.bit_generator.state = encoded["state"]
            else:
                setattr(layer, name, _decode(encoded))


def _layers(vector_env: VectorEnv) -> list[Any] | None:
    """Every object that holds state: vector wrappers, the vector env, each sub-env's wrappers."""
    layers: list[Any] = []
    current: Any = vector_env
    while isinstance(current, gym.vector.VectorWrapper):
        layers.append(current)
        current = current.env
    layers.append(current)
    if isinstance(current, gym.vector.SyncVectorEnv):
        for sub_env in current.envs:
            while isinstance(sub_env, gym.Wrapper):
                layers.append(sub_env)
                sub_env = sub_env.env
            layers.append(sub_env)
    elif isinstance(current, gym.vector.AsyncVectorEnv):
        return None
    innermost = layers[-1]
    if not type(innermost).__module__.startswith(CAPTURABLE_MODULES):
        return None
    return layers


def _state_attributes(layer: Any) -> dict[str, Any] | None:
    """Every state attribute of a layer, encoded; None if one of them cannot be."""
    attributes = {}
    for name, value in vars(layer).items():
        if name in _SETTINGS_ATTRIBUTES or isinstance(value, spaces.Space) or callable(value):
            continue
        encoded = _encode(value)
        if encoded is None:
            return None
        attributes[name] = encoded
    return attributes


def _encode(value: Any) -> dict[str, Any] | None:
    """JSON for numbers, bools, None, small numeric arrays, tuples, lists and deques of those,
    and generators; None for anything else."""
    if isinstance(value, np.random.Generator):
        return {"kind": "generator", "state": value.bit_generator.state}
    if value is None or isinstance(value, (bool, int, float, str)):
        return {"kind": "plain", "value": value}
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return {"kind": "scalar", "dtype": value.dtype.str, "value": value.item()}
    if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" and value.size <= 65536:
        return {"kind": "array", "dtype": value.dtype.str, "shape": list(value.shape), "value": value.ravel().tolist()}
    # Exactly these types: a subclass (a named tuple) would come back as its base class.
    if type(value) in (tuple, list, deque):
        items = [_encode(item) for item in value]
        if all(item is not None for item in items):
            encoded: dict[str, Any] = {"kind": type(value).__name__, "value": items}
            if isinstance(value, deque):
                encoded["maxlen"] = value.maxlen
            return encoded
    return None


def _decode(encoded: dict[str, Any]) -> Any:
    kind = encoded["kind"]
    if kind == "plain":
        return encoded["value"]
    if kind == "scalar":
        return np.dtype(encoded["dtype"]).type(encoded["value"])
    if kind == "array":
        return np.asarray(encoded["value"], dtype=np.dtype(encoded["dtype"])).reshape(encoded["shape"])
    if kind == "tuple":
        return tuple(_decode(item) for item in encoded["value"])
    if kind == "list":
        return [_decode(item) for item in encoded["value"]]
    if kind == "deque":
        return deque((_decode(item) for item in encoded["value"]), maxlen=encoded["maxlen"])
    if kind == "generator":
        return restore_generator(encoded["state"])
    raise ValueError(f"unknown encoded value kind {kind!r}")
