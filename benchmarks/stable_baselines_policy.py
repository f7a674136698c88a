"""What the side-by-side scripts share: a Stable-Baselines3 (or SBX) model as rlfoundry.evaluate
plays it, so that both libraries are scored on the same seeded episodes."""

from __future__ import annotations


class StableBaselinesPolicy:
    """A Stable-Baselines3 or SBX model behind rlfoundry's predict(observations, deterministic) -> actions."""

    def __init__(self, model, env_id: str):
        self.model = model
        self.env_id = env_id

    def predict(self, observations, deterministic=True):
        actions, _ = self.model.predict(observations, deterministic=deterministic)  # (actions, recurrent state)
        return actions
