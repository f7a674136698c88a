"""Text pictures of greedy paths on Gymnasium's grid worlds and the seeds' chain."""

from __future__ import annotations

import gymnasium as gym
import numpy as np

# Arrow per action index, for the grid worlds whose action meanings Gymnasium documents.
ARROWS = {
    "CliffWalkingEnv": "^>v<",  # 0 up, 1 right, 2 down, 3 left
    "FrozenLakeEnv": "<v>^",  # 0 left, 1 down, 2 right, 3 up
}


def grid_shape(env: gym.Env) -> tuple[int, int] | None:
    """(rows, columns) of a toy-text grid world, or None for other envs."""
    unwrapped = env.unwrapped
    if hasattr(unwrapped, "shape") and len(getattr(unwrapped, "shape")) == 2:
        return tuple(unwrapped.shape)
    if hasattr(unwrapped, "nrow") and hasattr(unwrapped, "ncol"):
        return int(unwrapped.nrow), int(unwrapped.ncol)
    return None


def path_picture(env: gym.Env, states: list[int], actions: list[int]) -> str | None:
    """The grid with the path's actions drawn as arrows, or None if env is not a known grid."""
    shape = grid_shape(env)
    arrows = ARROWS.get(type(env.unwrapped).__name__)
    if shape is None or arrows is None:
        return None
    rows, columns = shape
    cells = np.full(shape, ".", dtype="<U1")
    unwrapped = env.unwrapped
    if hasattr(unwrapped, "_cliff"):
        cells[np.asarray(unwrapped._cliff, dtype=bool)] = "C"
    if hasattr(unwrapped, "desc"):
        description = np.asarray(unwrapped.desc).astype(str)
        cells[description == "H"] = "H"
    for state, action in zip(states, actions):
        cells[state // columns, state % columns] = arrows[action]
    end = states[-1] if len(states) > len(actions) else None
    # A path that terminates reached the goal, unless it fell into a hole (which stays drawn as one).
    if end is not None and cells[end // columns, end % columns] != "H":
        cells[end // columns, end % columns] = "G"
    return "\n".join(" ".join(row) for row in cells)
