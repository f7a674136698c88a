"""Space checks with errors that say what to use instead, and spaces as JSON for checkpoints."""

from __future__ import annotations

from typing import Any

import numpy as np
from gymnasium import spaces

from rlfoundry.run.checkpoint import NonFiniteError


class SpaceError(ValueError):
    """An observation or action space that an algorithm cannot handle."""


def describe(space: spaces.Space) -> str:
    """A short human description of a space, e.g. Box(-inf, inf, (4,), float32)."""
    return repr(space)


def array_layout(space: spaces.Space, user: str) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) of a space's values; SpaceError naming `user` for a space whose values are not
    arrays of one shape (Dict, Tuple, Text, Sequence, Graph)."""
    if space.shape is None or space.dtype is None:
        raise SpaceError(
            f"{user} takes arrays of one shape, which the values of {describe(space)} are not: use a Box, "
            "Discrete, MultiDiscrete or MultiBinary space (gymnasium.wrappers.FlattenObservation turns Dict "
            "and Tuple observations into a Box)"
        )
    return space.shape, space.dtype


def require_discrete_observations(space: spaces.Space, algorithm: str) -> int:
    """The number of states of a Discrete observation space; SpaceError otherwise."""
    if not isinstance(space, spaces.Discrete):
        raise SpaceError(
            f"{algorithm} is tabular and needs a Discrete observation space, but this env observes "
            f"{describe(space)}: use DQN (or PPO) for continuous observations, or wrap the env so that "
            "it observes a discrete state index (e.g. a discretising wrapper)"
        )
    require_zero_start(space, f"{algorithm}'s Discrete observations")
    return int(space.n)


def require_zero_start(space: spaces.Discrete | spaces.MultiDiscrete, what: str) -> None:
    """SpaceError unless a Discrete or MultiDiscrete space counts from 0: networks and tables index
    by the value itself."""
    if np.any(space.start != 0):
        raise SpaceError(
            f"{what} must be numbered from 0, got {describe(space)}: wrap the env so that it subtracts "
            "start from them (gymnasium.wrappers.TransformObservation or TransformAction)"
        )


def require_discrete_actions(space: spaces.Space, algorithm: str, instead: str) -> int:
    """The number of actions of a Discrete action space; SpaceError naming `instead` otherwise."""
    if not isinstance(space, spaces.Discrete):
        raise SpaceError(
            f"{algorithm} needs a Discrete action space, but this env's actions are {describe(space)}: "
            f"use {instead} for this action space"
        )
    require_zero_start(space, f"{algorithm}'s Discrete actions")
    return int(space.n)


def require_box_actions(space: spaces.Space, algorithm: str, instead: str) -> tuple[np.ndarray, np.ndarray]:
    """(low, high), in the space's dtype, of a 1-D Box action space with finite bounds; SpaceError otherwise."""
    if not isinstance(space, spaces.Box):
        raise SpaceError(
            f"{algorithm} needs a Box (continuous) action space, but this env's actions are {describe(space)}: "
            f"use {instead} for this action space"
        )
    if len(space.shape) != 1:
        raise SpaceError(
            f"{algorithm} needs a 1-D Box action space, got {describe(space)}: flatten the actions with a "
            "gymnasium.ActionWrapper whose action_space is a 1-D Box"
        )
    if not np.issubdtype(space.dtype, np.floating):
        # Unit actions mapped onto integer bounds would be truncated, not the actions the critics scored.
        raise SpaceError(
            f"{algorithm} acts continuously and needs a float Box action space, got {describe(space)}: wrap "
            "the env in a gymnasium.ActionWrapper whose action_space is a float Box (rounding in its action()), "
            "or use PPO or A2C with a MultiDiscrete action space"
        )
    low, high = space.low.copy(), space.high.copy()
    if not (np.isfinite(low).all() and np.isfinite(high).all() and (low < high).all()):
        raise SpaceError(
            f"{algorithm} maps its actions in [-1, 1] onto the action space's bounds, but {describe(space)} "
            "has an infinite or empty bound: wrap the env in a gymnasium.ActionWrapper whose action_space "
            "declares the finite range of sensible actions (low < high in every dimension)"
        )
    return low, high


def observation_batch(observations: Any, space: spaces.Space) -> tuple[np.ndarray, bool]:
    """(batch [B, *shape] in the space's dtype, whether one unbatched observation came in), for a
    model's predict(). Numbers become the space's dtype where that changes no value's meaning
    (ints or float64 to float32; whole numbers that fit to uint8 frames or int64 states). A wrong
    shape, a non-number or a value the dtype does not hold exactly raises SpaceError, and a NaN or
    infinite value NonFiniteError, instead of a torch error about matrix shapes or a meaningless action."""
    if isinstance(observations, tuple) and len(observations) == 2 and isinstance(observations[1], dict):
        raise SpaceError("pass the observation alone, not the (observation, info) pair that env.reset() returns")
    shape, dtype = array_layout(space, "predict()")
    try:
        batch = np.asarray(observations)
    except ValueError as error:  # ragged nested sequences
        raise SpaceError(
            f"observations must be one array of shape {shape} or (B, {', '.join(map(str, shape))}) "
            f"({describe(space)}): {error}"
        ) from None
    single = batch.shape == shape
    if single:
        batch = batch[None]
    elif batch.shape[1:] != shape:
        raise SpaceError(
            f"observations of shape {batch.shape} do not fit this model, which observes shape {shape} "
            f"({describe(space)}): pass one observation of shape {shape} or a batch of shape "
            f"(B, {', '.join(map(str, shape))})"
        )
    if batch.dtype != dtype:
        fits = batch.dtype.kind in "biuf"
        if fits and dtype.kind in "iu":
            fits = np.array_equal(batch.astype(dtype), batch)
        if not fits:
            raise SpaceError(
                f"observations of dtype {batch.dtype} do not fit this model, which observes {dtype} "
                f"({describe(space)}): pass numbers that {dtype} holds exactly"
            )
        batch = batch.astype(dtype)
    if batch.dtype.kind == "f" and not np.isfinite(batch).all():
        raise NonFiniteError("observations hold NaN or infinity: a policy's action for them means nothing")
    return batch, single


def space_to_dict(space: spaces.Space) -> dict[str, Any]:
    """A JSON-ready description of a space, enough to rebuild it without the env."""
    if isinstance(space, spaces.Discrete):
        return {"type": "Discrete", "n": int(space.n), "start": int(space.start), "dtype": str(space.dtype)}
    if isinstance(space, spaces.Box):
        return {
            "type": "Box",
            "low": space.low.tolist(),
            "high": space.high.tolist(),
            "shape": list(space.shape),
            "dtype": str(space.dtype),
        }
    if isinstance(space, spaces.MultiDiscrete):
        return {"type": "MultiDiscrete", "nvec": space.nvec.tolist(), "dtype": str(space.dtype)}
    if isinstance(space, spaces.MultiBinary):
        return {"type": "MultiBinary", "n": list(np.atleast_1d(space.n))}
    raise SpaceError(f"cannot save a space of type {type(space).__name__} in a checkpoint: {describe(space)}")


def space_from_dict(description: dict[str, Any]) -> spaces.Space:
    """Rebuild a space saved by space_to_dict."""
    kind = description["type"]
    if kind == "Discrete":
        # Checkpoints written before the dtype was saved hold gymnasium's default, int64.
        return spaces.Discrete(description["n"], start=description.get("start", 0), dtype=description.get("dtype", "int64"))
    if kind == "Box":
        dtype = np.dtype(description["dtype"])
        return spaces.Box(
            low=np.asarray(description["low"], dtype=dtype),
            high=np.asarray(description["high"], dtype=dtype),
            shape=tuple(description["shape"]),
            dtype=dtype,
        )
    if kind == "MultiDiscrete":
        return spaces.MultiDiscrete(description["nvec"], dtype=description.get("dtype", "int64"))
    if kind == "MultiBinary":
        return spaces.MultiBinary(description["n"])
    raise SpaceError(f"unknown space type {kind!r} in checkpoint")
