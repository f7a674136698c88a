"""Environments: vector envs with one autoreset rule, space checks, env state, the seeds' toy MDPs."""

from rlfoundry.envs.registry import RegisteredEnv, check_env_id, register_optional_envs
from rlfoundry.envs.vector import EpisodeTracker, VectorStep, make_env, step_vector

__all__ = ["EpisodeTracker", "RegisteredEnv", "VectorStep", "check_env_id", "make_env", "register_optional_envs", "step_vector"]
