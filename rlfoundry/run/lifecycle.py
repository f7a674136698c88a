"""The steps every algorithm takes to be created, saved and loaded, written once.

An algorithm object keeps `config`, `run_dir`, `quiet`, `rng` (its numpy generator) and
`training_env`; these functions fill and persist them. Torch modules and optimisers are passed
by name, so a checkpoint holds e.g. `network.*`, `optimizer.*` and the model's torch generator.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from rlfoundry.envs.vector import EnvSource
from rlfoundry.run.checkpoint import Checkpoint, checkpoint_steps, load_checkpoint, run_checkpoints, save_checkpoint
from rlfoundry.run.config import ConfigError, check_keys, config_from_dict, config_to_dict, override_config, require_int
from rlfoundry.run.device import configure_threads, resolve_device
from rlfoundry.run.evaluation import PeriodicEvaluation, checked_evaluation
from rlfoundry.run.monitor import existing_run_files
from rlfoundry.run.seeding import generator_state, restore_generator, seed_everything
from rlfoundry.run.torch_state import (
    generator_tensors,
    load_module,
    load_optimizer,
    module_tensors,
    optimizer_state,
    restore_generator_tensors,
)
from rlfoundry.run.training_env import TrainingEnv

# Config fields that belong to the machine a model is loaded on, not to its training, so a load
# may set them (a model trained on a GPU loads onto the CPU; a buffer too big for this machine's
# memory check loads anyway); for each, what a model without it is, for the error.
MACHINE_FIELDS = {
    "device": "learns a table, not networks: it has no device to load onto",
    "check_replay_memory": "keeps no replay buffer: it has no memory check to skip",
}


# What rlfoundry.load takes besides the checkpoint's config fields (which it takes as overrides);
# replay_buffer=False leaves a saved replay buffer unread (restore_replay in run/off_policy.py).
LOAD_OPTIONS = ("run_dir", "quiet", "checkpoint_every", "evaluation", "replay_buffer", *MACHINE_FIELDS)


def initialise(
    model: Any,
    env: EnvSource | None,
    run_dir: str | Path | None,
    quiet: bool,
    config: dict,
    checkpoint_every: int | None = None,
    evaluation: PeriodicEvaluation | None = None,
) -> TrainingEnv:
    """Validate the config, seed everything, and open the training env (not yet reset).

    run_dir: where the run's logs and checkpoints go; a missing or empty directory, not one that
    already holds a run.
    checkpoint_every: write RUN_DIR/checkpoints/latest every this many env steps (at the first
    point between updates past each multiple), besides the final checkpoint; needs run_dir.
    evaluation: evaluate the policy periodically while learning (see PeriodicEvaluation)."""
    check_keys(model.Config, config)
    model.config = model.Config(**config)
    set_run_options(model, run_dir, quiet, checkpoint_every, evaluation)
    model.rng = seed_everything(model.config.seed)
    return TrainingEnv(env, model.config.n_envs, model.config.seed)


def set_run_options(
    model: Any,
    run_dir: str | Path | None,
    quiet: bool,
    checkpoint_every: int | None,
    evaluation: PeriodicEvaluation | None,
    checkpoint: str | Path | None = None,
) -> None:
    """The options of a run that are not config (not saved in a checkpoint): a new model's and a
    loaded one's (`checkpoint`: the path it was loaded from, kept as `loaded_from`) alike, with no
    evaluations made and no config changes to record yet. Checked before anything is trained or written."""
    if run_dir is not None:
        require_run_dir_for(Path(run_dir), checkpoint)
    if checked_checkpoint_every(checkpoint_every) is not None and run_dir is None:
        raise ConfigError(
            f"checkpoint_every={checkpoint_every} writes RUN_DIR/checkpoints/latest, but no run_dir was given: "
            "pass run_dir=... as well, or leave checkpoint_every out"
        )
    model.run_dir = Path(run_dir) if run_dir is not None else None
    model.quiet = quiet
    model.checkpoint_every = checkpoint_every
    model.evaluation = checked_evaluation(evaluation)
    model.evaluations = []
    model.loaded_from = None if checkpoint is None else str(checkpoint)
    # Config changes made at load that the run directory's record does not list yet (run/record.py).
    model.config_changes = []


def require_run_dir_for(run_dir: Path, checkpoint: str | Path | None) -> None:
    """Refuse a run_dir that is a file, or that already holds a run (any of config.json,
    progress.csv, evaluations.csv, learning_curve.png, checkpoints/ or a TensorBoard event file)
    unless `checkpoint` is one of that run's own checkpoints (RUN_DIR/checkpoints/NAME), which
    continues it. A missing or empty directory holds nothing to mix with."""
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir={run_dir} is a file: pass a directory (it is created if missing)")
    found = existing_run_files(run_dir)
    if not found:
        return
    if checkpoint is not None and Path(checkpoint).resolve().parent == (run_dir / "checkpoints").resolve():
        further = max(run_checkpoints(run_dir), key=checkpoint_steps, default=None)
        steps = checkpoint_steps(Path(checkpoint))
        if further is not None and checkpoint_steps(further) > steps:
            raise ConfigError(
                f"{checkpoint} (step {steps}) is behind {further} (step {checkpoint_steps(further)}): going on from it in run_dir={run_dir} would replace that further "
                "checkpoint and take the run's logs back in time; pass a new run_dir (rlf resume does)"
            )
        return
    newcomer = "a new model" if checkpoint is None else f"a model loaded from {checkpoint}, not one of its checkpoints,"
    raise ConfigError(
        f"run_dir={run_dir} already holds a run ({', '.join(found)}): {newcomer} would mix its logs and checkpoints "
        f"with that run's; pass a new or empty directory, or continue that run from its own checkpoint with "
        f"rlfoundry.load('{run_dir / 'checkpoints' / 'final'}', run_dir='{run_dir}') (or checkpoints/latest) "
        f"or `rlf resume {run_dir}`"
    )


def checked_checkpoint_every(value: int | None) -> int | None:
    """None (no periodic checkpoints) or an integer >= 1; ConfigError otherwise."""
    if value is not None:
        require_int("checkpoint_every", value, 1)
    return value


def attach_env(model: Any, training_env: TrainingEnv, uses_images: bool) -> torch.device:
    """Give a torch algorithm its env and spaces, set torch's thread count, and pick its device."""
    configure_threads(model.config.torch_threads)
    model.training_env = training_env
    model.observation_space = training_env.observation_space
    model.action_space = training_env.action_space
    return resolve_device(model.config.device, uses_images=uses_images)


def save_model(
    model: Any,
    path: str | Path,
    counters: dict[str, int],
    modules: dict[str, nn.Module] | None = None,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    state: dict[str, Any] | None = None,
    arrays: dict[str, np.ndarray] | None = None,
    generator: torch.Generator | None = None,
) -> Path:
    """Checkpoint the model: config, counters, env position, RNGs (its numpy generator and
    `generator`, its torch one where it draws from torch), modules and optimisers by name."""
    env_json, env_arrays = model.training_env.checkpoint_state()
    tensors: dict[str, torch.Tensor] = {}
    optimizer_json: dict[str, Any] = {}
    for name, module in (modules or {}).items():
        tensors.update(module_tensors(name, module))
    for name, optimizer in (optimizers or {}).items():
        optimizer_tensors, optimizer_json[name] = optimizer_state(name, optimizer)
        tensors.update(optimizer_tensors)
    if generator is not None:
        tensors.update(generator_tensors(generator))
    checkpoint = Checkpoint(
        algorithm=model.name,
        config=config_to_dict(model.config),
        counters=counters,
        state={"env": env_json, "rng": generator_state(model.rng), "optimizers": optimizer_json, **(state or {})},
        tensors=tensors,
        arrays={**env_arrays, **(arrays or {})},
    )
    return save_checkpoint(path, checkpoint)


def load_model(cls: type[Any], path: str | Path, env: EnvSource | None, options: dict[str, Any]) -> tuple[Any, Checkpoint, TrainingEnv]:
    """An un-built instance of cls with config, run_dir, quiet and rng restored, the checkpoint,
    and the training env at its saved position (built from `env` if given, else the saved id).
    `options` are LOAD_OPTIONS (the MACHINE_FIELDS among them are set without counting as config
    changes) and config fields to change (override_config: only those that leave the saved
    state's shapes and meaning as they are), printed once unless quiet."""
    replay_buffer = options.get("replay_buffer")
    if replay_buffer is not None and not isinstance(replay_buffer, bool):
        # Only False leaves the buffer unread: 0 or "no" would read it all.
        raise ConfigError(
            f"replay_buffer={replay_buffer!r} is not allowed: pass False to leave the saved replay buffer unread, "
            "or True (the default) to load it"
        )
    checkpoint = load_checkpoint(path, algorithm=cls.name, skipped_arrays="replay." if replay_buffer is False else None)
    model = object.__new__(cls)  # no __init__: the model is built from the checkpoint
    config = config_from_dict(cls.Config, checkpoint.config)
    for name, lacking in MACHINE_FIELDS.items():
        if options.get(name) is not None:
            if not hasattr(config, name):
                raise ConfigError(f"{cls.name} {lacking}, leave {name} out")
            config = dataclasses.replace(config, **{name: options[name]})
    if options.get("replay_buffer") is not None and not hasattr(config, "buffer_size"):
        raise ConfigError(f"{cls.name} keeps no replay buffer: leave replay_buffer out")
    overrides = {name: value for name, value in options.items() if name not in LOAD_OPTIONS}
    check_keys(cls.Config, overrides, load_options=LOAD_OPTIONS)  # a mistyped load option is named as one
    model.config, changes = override_config(config, overrides)
    set_run_options(
        model, options.get("run_dir"), options.get("quiet", False), options.get("checkpoint_every"), options.get("evaluation"),
        checkpoint=path,
    )
    model.config_changes = changes
    if changes and not model.quiet:
        print(f"{cls.name}: {path} loaded with {', '.join(map(str, changes))}")
    model.rng = restore_generator(checkpoint.state["rng"])
    # Without a saved env position, fresh episodes start from a seed that differs from step 0's.
    seed = model.config.seed + checkpoint.counters["steps"]
    training_env = TrainingEnv.from_checkpoint(checkpoint.state["env"], checkpoint.arrays, env, seed=seed)
    return model, checkpoint, training_env


def restore_torch(
    checkpoint: Checkpoint,
    modules: dict[str, nn.Module],
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
) -> None:
    """Load modules and optimisers saved under the same names (the optimisers' step sizes and
    other settings stay those they were built with from the model's config: see load_optimizer)."""
    for name, module in modules.items():
        load_module(name, module, checkpoint.tensors)
    for name, optimizer in (optimizers or {}).items():
        load_optimizer(name, optimizer, checkpoint.tensors, checkpoint.state["optimizers"][name])


def restore_torch_generator(checkpoint: Checkpoint, generator: torch.Generator) -> None:
    """The model's torch generator as saved; from a checkpoint of another device type, reseeded
    with the config's seed plus the step count (as the env is without a saved position)."""
    reseed = checkpoint.config["seed"] + checkpoint.counters["steps"]
    restore_generator_tensors(generator, checkpoint.tensors, reseed)
