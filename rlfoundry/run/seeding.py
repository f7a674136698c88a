"""One seed for everything: python, numpy, torch and the environments."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> np.random.Generator:
    """Seed the global generators (for user code and torch's initialisers) and return the
    algorithm's own numpy generator, which is saved in checkpoints."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def generator_state(generator: np.random.Generator) -> dict:
    """A JSON-ready copy of a numpy generator's state."""
    return generator.bit_generator.state


def restore_generator(state: dict) -> np.random.Generator:
    """A numpy generator continuing exactly from a saved state."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
