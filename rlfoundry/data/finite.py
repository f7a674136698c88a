"""The env's numbers checked where they enter training: a NaN or an infinity in a reward or an
observation is the env's fault, and saying so beats a loss that turns NaN steps later."""

from __future__ import annotations

import numpy as np

from rlfoundry.run.checkpoint import NonFiniteError


def require_finite_rewards(rewards: np.ndarray) -> None:
    """NonFiniteError if the rewards hold a NaN or an infinity."""
    if not np.isfinite(rewards).all():
        raise NonFiniteError("the env returned a NaN or infinite reward: check the env or its reward wrapper")


def require_finite_observations(observations: np.ndarray) -> None:
    """NonFiniteError if float observations hold a NaN or an infinity (integer ones cannot)."""
    if observations.dtype.kind == "f" and not np.isfinite(observations).all():
        raise NonFiniteError(
            "the env returned a NaN or infinite observation: check the env, or normalise/clip its observations"
        )
