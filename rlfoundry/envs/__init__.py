"""Environments: vector envs with one autoreset rule, space checks, env state, the seeds' toy MDPs."""

from rlfoundry.envs.vector import (
    EpisodeTracker,
    VectorStep,
    check_env_id,
    make_env,
    register_optional_envs,
    step_vector,
)

__all__ = ["EpisodeTracker", "VectorStep", "check_env_id", "make_env", "register_optional_envs", "step_vector"]
