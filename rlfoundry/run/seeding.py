"""One seed for everything: python, numpy, torch and the environments."""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch


# The SeedSequence key of a model's own torch generator, so that its draws are not the raw stream
# that initialised the networks from the global generator seeded with the same seed.
TORCH_STREAM = 1


def seed_everything(seed: int) -> np.random.Generator:
    """Seed the global generators (for user code and torch's initialisers) and return the
    algorithm's own numpy generator, which is saved in checkpoints."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return np.random.default_rng(seed)


def torch_generator(seed: int, device: torch.device) -> torch.Generator:
    """A model's own torch generator on its device. Training draws from it (sampled actions, SAC's
    reparameterisation noise, TD3's target smoothing noise), so its draws depend on nothing else
    in the process (another model training, the caller's torch.randn), and checkpoints hold it."""
    generator = torch.Generator(device=device)
    generator.manual_seed(int(np.random.SeedSequence([seed, TORCH_STREAM]).generate_state(1, np.uint64)[0]))
    return generator


def prediction_generator() -> np.random.Generator:
    """The numpy generator of one predict(deterministic=False) call (epsilon-greedy, Gaussian
    exploration noise), seeded from torch's global generator: sampled predictions draw nothing
    from a model's own generators, and `torch.manual_seed` (or evaluate's seed) repeats them."""
    return np.random.default_rng(int(torch.randint(0, 2**62, (1,)).item()))


@contextmanager
def seeded_sampling(seed: int | None) -> Iterator[None]:
    """Inside, torch's global generator (all sampled predictions draw from it) starts from `seed`
    (None: from where it stands); afterwards it is put back, so the caller's stream is unchanged."""
    with torch.random.fork_rng():
        if seed is not None:
            torch.manual_seed(seed)
        yield


def generator_state(generator: np.random.Generator) -> dict[str, Any]:
    """A JSON-ready copy of a numpy generator's state."""
    return dict(generator.bit_generator.state)


def restore_generator(state: dict) -> np.random.Generator:
    """A numpy generator continuing exactly from a saved state."""
    bit_generator = getattr(np.random, state["bit_generator"])()
    bit_generator.state = state
    return np.random.Generator(bit_generator)
