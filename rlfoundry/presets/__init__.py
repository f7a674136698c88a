"""Tuned hyperparameters per algorithm and environment, one YAML file per algorithm.

Each file maps an env id to {steps, source, config}: `steps` is the training budget, `source`
says where the numbers come from, `config` holds the algorithm's config fields.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class Preset:
    """A tuned configuration for one algorithm on one environment."""

    algorithm: str
    env_id: str
    steps: int
    source: str
    config: dict[str, Any] = field(default_factory=dict)


def _file_for(algorithm: str):
    return resources.files(__package__) / f"{algorithm}.yaml"


def load_preset(algorithm: str, env_id: str) -> Preset | None:
    """The preset for this algorithm and env, or None if there is none."""
    return all_presets(algorithm).get(env_id)


def all_presets(algorithm: str) -> dict[str, Preset]:
    """Every preset of one algorithm, by env id."""
    path = _file_for(algorithm)
    if not path.is_file():
        return {}
    entries = yaml.safe_load(path.read_text()) or {}
    return {
        env_id: Preset(
            algorithm=algorithm,
            env_id=env_id,
            steps=int(entry["steps"]),
            source=str(entry["source"]),
            config=dict(entry.get("config") or {}),
        )
        for env_id, entry in entries.items()
    }
