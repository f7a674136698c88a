"""The study notes' 3-state chain, as an exact FiniteMDP and as a Gymnasium env.

    S1 --Right--> S2 --Right (+1)--> S3 (terminal)
    S1 <--Left--- S2

With gamma = 0.9: Q*(S2, Right) = 1, Q*(S1, Right) = 0.9, Q*(S1, Left) = Q*(S2, Left) = 0.81.
"""

from __future__ import annotations

import gymnasium
import numpy as np

from rlfoundry.mdp import FiniteMDP, FiniteMDPEnv

__all__ = ["CHAIN_ENV_ID", "LEFT", "RIGHT", "STATE_NAMES", "ChainEnv", "chain_mdp", "register_chain_env"]

# Action indices follow the notes' table, whose columns are Right, Left.
RIGHT = 0
LEFT = 1
STATE_NAMES = ("S1", "S2", "S3")
CHAIN_ENV_ID = "rlfoundry/Chain-v0"
CHAIN_MAX_EPISODE_STEPS = 100


def chain_mdp(gamma: float = 0.9) -> FiniteMDP:
    """The chain as a FiniteMDP (see :class:`ChainEnv` for the dynamics); 3 states, 2 actions."""
    s1, s2, s3 = 0, 1, 2
    transitions = np.zeros((3, 2, 3))
    rewards = np.zeros((3, 2, 3))
    transitions[s1, RIGHT, s2] = 1.0
    transitions[s1, LEFT, s1] = 1.0  # not in the notes: our choice, see ChainEnv
    transitions[s2, RIGHT, s3] = 1.0
    rewards[s2, RIGHT, s3] = 1.0
    transitions[s2, LEFT, s1] = 1.0
    # S3 is terminal, so its rows never matter; a zero-reward self-loop keeps them well-formed.
    transitions[s3, :, s3] = 1.0
    return FiniteMDP(
        transitions,
        rewards,
        gamma,
        initial_distribution=np.array([1.0, 0.0, 0.0]),
        terminal_states=np.array([False, False, True]),
    )


class ChainEnv(FiniteMDPEnv):
    """The notes' chain S1 -> S2 -> S3. Observations 0, 1, 2 are S1, S2, S3; actions RIGHT = 0, LEFT = 1.

    * Every episode starts at S1.
    * Right at S1 -> S2, reward 0. Right at S2 -> S3, reward +1, and the episode terminates.
    * Left at S2 -> S1, reward 0.
    * Left at S1: the notes do not say. Here it stays at S1 with reward 0 (bumping into the wall).

    Exposes ``P`` and ``initial_state_distrib`` like the toy-text envs, so
    ``FiniteMDP.from_gymnasium(env, gamma)`` gives ``chain_mdp(gamma)``. Registered as
    ``rlfoundry/Chain-v0`` (100 steps per episode at most) by :func:`register_chain_env`.
    """

    def __init__(self, render_mode: str | None = None) -> None:
        # gamma is not part of the env's dynamics; the FiniteMDP just needs one.
        super().__init__(chain_mdp(), render_mode=render_mode)

    def render(self) -> str | None:
        if self.render_mode != "ansi":
            return None
        cells = [f"[{name}]" if state == self.s else f" {name} " for state, name in enumerate(STATE_NAMES)]
        last = "" if self.lastaction is None else f"  ({('Right', 'Left')[self.lastaction]})"
        return " ".join(cells) + last + "\n"


def register_chain_env() -> None:
    """Register ``rlfoundry/Chain-v0`` with Gymnasium; calling it again does nothing."""
    if CHAIN_ENV_ID in gymnasium.registry:
        return
    gymnasium.register(
        id=CHAIN_ENV_ID,
        entry_point="rlfoundry.envs.chain:ChainEnv",
        max_episode_steps=CHAIN_MAX_EPISODE_STEPS,
    )

