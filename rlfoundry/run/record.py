"""A run directory's record, RUN_DIR/config.json: what was trained (algorithm, env id, config) and
how the run came about. `rlf plot --aggregate` groups runs by its algorithm and env id, and
`rlf resume` goes on with its periodic evaluation and checkpoint_every.

The record is written once, when the run directory is made: by `rlf train` (details: the
--steps asked and the preset's source), by `rlf resume` into a new directory (the steps asked,
the checkpoint resumed from and its step), and by the first learn() call of a Python model with a
run_dir, with the same keys: total_steps is the steps that call asked for (learn() rounds it up,
later calls train more: progress.csv and the checkpoints count what was trained), and
preset_source is None, or for a loaded model resumed_from and resumed_at_step. Later learn()
calls and resumed runs that go on in the directory leave it as it is, except for config changes
made at load (rlfoundry.load(path, learning_rate=...), `rlf resume --set`): `config` becomes the
config in force, and `config_changes` lists each change with the step from which it applies; and
except for the run options `rlf resume` is given anew in the directory (--eval-every,
--eval-episodes, --checkpoint-every), which replace the recorded ones.
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any

from rlfoundry.envs.registry import RegisteredEnv
from rlfoundry.run.config import ConfigError, config_to_dict, jsonable
from rlfoundry.version import __version__

RECORD = "config.json"
# How the record names an evaluation env that JSON cannot hold (an env object, a function that makes one).
NOT_AN_ENV_ID = "(not an env id)"


def write_run_record(run_dir: Path, model: Any, **details: Any) -> None:
    """Write RUN_DIR/config.json (making the directory if missing): the algorithm, env id and the
    keyword arguments the env was made with, `details` (how the run came about), the config, the
    config changes made at load, any periodic evaluation, checkpoint_every and the rlfoundry
    version."""
    record = {
        "algorithm": model.name,
        "env_id": model.env_id,
        "env_kwargs": model.training_env.env_kwargs,
        **details,
        "config": config_to_dict(model.config),
        "config_changes": _take_changes(model),
        "periodic_evaluation": _evaluation_record(model),
        "checkpoint_every": model.checkpoint_every,
        "rlfoundry_version": __version__,
    }
    run_dir.mkdir(parents=True, exist_ok=True)
    _write_atomically(run_dir / RECORD, record)


def record_run_options(run_dir: Path, model: Any) -> None:
    """Rewrite the record's periodic evaluation and checkpoint_every with the model's: `rlf resume`
    given --eval-every, --eval-episodes or --checkpoint-every goes on with them, and so does the
    next resume, which takes them from here. A run without a record keeps none."""
    if not (run_dir / RECORD).is_file():
        return
    record = read_run_record(run_dir)
    record["periodic_evaluation"], record["checkpoint_every"] = _evaluation_record(model), model.checkpoint_every
    _write_atomically(run_dir / RECORD, record)


def _evaluation_record(model: Any) -> dict[str, Any] | None:
    """The model's periodic evaluation as JSON holds it (an env object or function as its kind)."""
    if model.evaluation is None:
        return None
    evaluation = dataclasses.asdict(model.evaluation)
    if not (model.evaluation.env is None or isinstance(model.evaluation.env, (str, RegisteredEnv))):
        evaluation["env"] = f"a {type(model.evaluation.env).__name__} {NOT_AN_ENV_ID}"
    return evaluation


def record_learn_call(model: Any, asked_steps: int) -> None:
    """At the start of a learn() call with a run directory: write the run's record if it has none
    yet (the first call of a Python run), else add the config changes made at load to it."""
    if model.run_dir is None:
        return
    path = model.run_dir / RECORD
    if not path.is_file():
        origin = (
            {"preset_source": None} if model.loaded_from is None
            else {"resumed_from": model.loaded_from, "resumed_at_step": model.steps}
        )
        write_run_record(model.run_dir, model, total_steps=asked_steps, **origin)
    elif model.config_changes:
        record = read_run_record(model.run_dir)
        record["config"] = config_to_dict(model.config)
        record["config_changes"] = record.get("config_changes", []) + _take_changes(model)
        _write_atomically(path, record)


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """RUN_DIR/config.json as written by write_run_record; ConfigError if it is not valid JSON."""
    path = run_dir / RECORD
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not valid JSON ({error}): repair it or move it away") from None


def recorded_evaluation_settings(evaluation: dict[str, Any], remedy: str) -> dict[str, Any]:
    """The PeriodicEvaluation fields of a recorded periodic evaluation besides every, episodes and
    stop_at: the env it evaluated on, whether it acted greedily, its seed and its step cap, as
    PeriodicEvaluation takes them, so that an evaluation made from the record plays the episodes
    the run's did. ConfigError ending in `remedy` when the record names its env but does not hold it."""
    env = evaluation.get("env")
    if isinstance(env, str) and env.endswith(NOT_AN_ENV_ID):
        raise ConfigError(f"the run evaluated on {env.removesuffix(NOT_AN_ENV_ID).strip()}, which its {RECORD} cannot hold: {remedy}")
    # dataclasses.asdict wrote a RegisteredEnv as its fields.
    settings = {"env": RegisteredEnv(**env) if isinstance(env, dict) else env}
    return {**settings, **{name: evaluation[name] for name in ("deterministic", "seed", "max_episode_steps") if name in evaluation}}


def _take_changes(model: Any) -> list[dict[str, Any]]:
    """The model's config changes not yet recorded, as record entries; afterwards there are none."""
    entries = [
        {"step": model.steps, "field": change.name, "from": jsonable(change.before), "to": jsonable(change.after)}
        for change in model.config_changes
    ]
    model.config_changes = []
    return entries


def _write_atomically(path: Path, record: dict[str, Any]) -> None:
    """Write the JSON to a temporary sibling, then rename it over `path`: a reader never sees half a record."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(temporary, "w") as handle:
        handle.write(json.dumps(record, indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
