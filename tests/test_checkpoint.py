"""Checkpoints: round trips, every error, atomic saves, exact resume in a new process."""

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
import torch

import rlfoundry
from checkpoint_checks import assert_same_checkpoints
from rlfoundry import SARSA, ExpectedSARSA, QLearning
from rlfoundry.run import checkpoint as checkpoint_module
from rlfoundry.run.checkpoint import (
    Checkpoint,
    CheckpointError,
    CheckpointAlgorithmError,
    CheckpointCorruptError,
    CheckpointNotFoundError,
    CheckpointVersionError,
    NonFiniteError,
    SCHEMA_VERSION,
    load_checkpoint,
    save_checkpoint,
)
from rlfoundry.envs.registry import UnknownEnvironmentError
from rlfoundry.envs.spaces import SpaceError
from rlfoundry.run.config import ConfigError
from rlfoundry.run.torch_state import load_optimizer, module_tensors, load_module, optimizer_state


def trained(cls=QLearning, steps=300, **config):
    return cls("FrozenLake-v1", quiet=True, gamma=0.9, **config).learn(steps)


def test_round_trip_of_tensors_arrays_and_json(tmp_path):
    original = Checkpoint(
        algorithm="demo",
        config={"learning_rate": 0.1, "sizes": [64, 64]},
        counters={"steps": 7},
        state={"nested": {"big": 2**70}},
        tensors={"weights": torch.arange(6.0).reshape(2, 3), "scalar": torch.tensor(3.5)},
        arrays={"table": np.arange(12).reshape(3, 4), "flags": np.array([True, False]), "count": np.array(2.5)},
    )
    save_checkpoint(tmp_path / "ckpt", original)
    loaded = load_checkpoint(tmp_path / "ckpt", algorithm="demo")
    assert (loaded.config, loaded.counters, loaded.state) == (original.config, original.counters, original.state)
    assert torch.equal(loaded.tensors["weights"], original.tensors["weights"])
    assert torch.equal(loaded.tensors["scalar"], original.tensors["scalar"])
    np.testing.assert_array_equal(loaded.arrays["table"], original.arrays["table"])
    np.testing.assert_array_equal(loaded.arrays["flags"], original.arrays["flags"])
    assert loaded.arrays["count"].shape == () and loaded.arrays["count"] == 2.5  # 0-d stays 0-d
    manifest = json.loads((tmp_path / "ckpt" / "manifest.json").read_text())
    assert manifest["schema_version"] == SCHEMA_VERSION == 2 and set(manifest["files"]) == {
        "tensors.safetensors", "arrays/table.npy", "arrays/flags.npy", "arrays/count.npy"
    }


@pytest.mark.parametrize("cls", [QLearning, SARSA, ExpectedSARSA])
def test_model_round_trip_and_load_picks_the_class(tmp_path, cls):
    model = trained(cls)
    model.save(tmp_path / "model")
    loaded = rlfoundry.load(tmp_path / "model")
    assert type(loaded) is cls
    np.testing.assert_array_equal(loaded.q_table, model.q_table)
    assert loaded.config == model.config and loaded.steps == model.steps
    states = np.arange(16)
    np.testing.assert_array_equal(loaded.predict(states), model.predict(states))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(CheckpointNotFoundError, match="no checkpoint at"):
        rlfoundry.load(tmp_path / "nothing")


def test_wrong_algorithm(tmp_path):
    trained(QLearning).save(tmp_path / "q")
    with pytest.raises(CheckpointAlgorithmError, match="holds a q-learning model, not sarsa"):
        SARSA.load(tmp_path / "q")


def test_corrupted_file_is_detected(tmp_path):
    trained().save(tmp_path / "q")
    table = tmp_path / "q" / "arrays" / "q_table.npy"
    data = bytearray(table.read_bytes())
    data[-1] ^= 0xFF
    table.write_bytes(bytes(data))
    with pytest.raises(CheckpointCorruptError, match="q_table.npy does not match the hash"):
        rlfoundry.load(tmp_path / "q")


def test_missing_file_and_broken_manifest(tmp_path):
    trained().save(tmp_path / "q")
    (tmp_path / "q" / "arrays" / "visits.npy").unlink()
    with pytest.raises(CheckpointCorruptError, match="missing arrays/visits.npy"):
        rlfoundry.load(tmp_path / "q")
    (tmp_path / "q" / "manifest.json").write_text('{"schema_version": 1, "alg')
    with pytest.raises(CheckpointCorruptError, match="not valid JSON"):
        rlfoundry.load(tmp_path / "q")


@pytest.mark.parametrize(
    "edit, complaint",
    [
        (lambda manifest: [{"Config": "config.json", "RepoTags": ["app:1"]}], " is a JSON list, not an object: it is not an rlfoundry checkpoint's manifest"),
        (lambda manifest: {**manifest, "algorithm": ["q-learning"]}, ": its algorithm is a JSON list, not a string: the checkpoint is corrupt"),
        (lambda manifest: {**manifest, "config": 3}, ": its config is a JSON number, not an object: the checkpoint is corrupt"),
        (lambda manifest: {**manifest, "files": ["arrays/q_table.npy"]}, ": its files is a JSON list, not an object: the checkpoint is corrupt"),
    ],
)
def test_a_manifest_of_the_wrong_shape_is_a_corrupt_checkpoint(tmp_path, edit, complaint):
    """A manifest.json of another shape (docker save writes a list) used to raise AttributeError or TypeError."""
    trained().save(tmp_path / "q")
    manifest_path = tmp_path / "q" / "manifest.json"
    manifest_path.write_text(json.dumps(edit(json.loads(manifest_path.read_text()))))
    with pytest.raises(CheckpointCorruptError, match=f"manifest.json{complaint}"):
        rlfoundry.load(tmp_path / "q")


def test_newer_schema_is_refused(tmp_path):
    trained().save(tmp_path / "q")
    manifest_path = tmp_path / "q" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 99
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointVersionError, match="schema 99, newer than"):
        rlfoundry.load(tmp_path / "q")


@pytest.mark.parametrize("version", [0, -1, True, "2", None])
def test_a_schema_version_that_is_not_a_whole_number_from_one_is_corrupt(tmp_path, version):
    """0, a negative number and true loaded as if they were the current schema."""
    trained().save(tmp_path / "q")
    manifest_path = tmp_path / "q" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = version
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptError, match=f"schema_version {re.escape(json.dumps(version))}, not a whole number"):
        rlfoundry.load(tmp_path / "q")


def test_object_arrays_are_never_unpickled(tmp_path):
    trained().save(tmp_path / "q")
    path = tmp_path / "q" / "arrays" / "q_table.npy"
    np.save(path, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    manifest_path = tmp_path / "q" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["files"]["arrays/q_table.npy"] = checkpoint_module._sha256(path)
    manifest_path.write_text(json.dumps(manifest))
    with pytest.raises(CheckpointCorruptError, match="cannot be read safely"):
        rlfoundry.load(tmp_path / "q")


def rewrite_array(checkpoint: Path, name: str, data: bytes) -> None:
    """Replace arrays/NAME.npy of a checkpoint and record its new hash, as if it had been saved so."""
    path = checkpoint / "arrays" / f"{name}.npy"
    path.write_bytes(data)
    manifest = json.loads((checkpoint / "manifest.json").read_text())
    manifest["files"][f"arrays/{name}.npy"] = checkpoint_module._sha256(path)
    (checkpoint / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize("cut", [1, 100])
def test_a_truncated_array_file_is_a_corrupt_checkpoint(tmp_path, cut):
    trained().save(tmp_path / "q")
    data = (tmp_path / "q" / "arrays" / "q_table.npy").read_bytes()
    rewrite_array(tmp_path / "q", "q_table", data[:-cut])
    with pytest.raises(CheckpointCorruptError, match="cannot be read safely: q_table.npy holds"):
        rlfoundry.load(tmp_path / "q")


def test_arrays_are_read_when_asked_for_whole_or_into_an_array_in_either_order(tmp_path):
    table = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    save_checkpoint(tmp_path / "c", Checkpoint("demo", {}, {}, arrays={"table": table, "other": table}))
    buffer = io.BytesIO()
    np.save(buffer, np.asfortranarray(table), allow_pickle=False)  # another tool's file: Fortran order
    rewrite_array(tmp_path / "c", "other", buffer.getvalue())
    arrays = load_checkpoint(tmp_path / "c").arrays
    assert sorted(arrays) == ["other", "table"] and "table" in arrays and "missing" not in arrays
    for name in ("table", "other"):
        np.testing.assert_array_equal(arrays[name], table)
        into = np.zeros_like(table)
        checkpoint_module.copy_array(arrays, name, into)
        np.testing.assert_array_equal(into, table)
    with pytest.raises(ValueError, match="'table' holds float32 values of shape \\(2, 3, 4\\), where float64"):
        checkpoint_module.copy_array(arrays, "table", np.zeros((2, 3, 4)))


def test_an_array_file_replaced_after_the_load_is_not_read(tmp_path):
    """A save over the checkpoint (another process resuming the run, say) between loading the
    manifest and reading the arrays must not mix two checkpoints."""
    save_checkpoint(tmp_path / "c", Checkpoint("demo", {}, {}, arrays={"table": np.arange(4.0)}))
    arrays = load_checkpoint(tmp_path / "c").arrays
    save_checkpoint(tmp_path / "c", Checkpoint("demo", {}, {}, arrays={"table": np.arange(4.0) + 1}))
    with pytest.raises(CheckpointCorruptError, match="table.npy: the file changed after the checkpoint was loaded"):
        arrays["table"]


def test_interrupted_write_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    model = trained()
    model.save(tmp_path / "q")
    before = model.q_table.copy()
    model.learn(200)
    calls = {"count": 0}
    real_save = np.save

    def crash_on_second_array(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_save(*args, **kwargs)

    monkeypatch.setattr(checkpoint_module.np, "save", crash_on_second_array)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "q")
    np.testing.assert_array_equal(rlfoundry.load(tmp_path / "q").q_table, before)
    assert [entry.name for entry in tmp_path.iterdir()] == ["q"]


def test_crash_between_the_renames_keeps_a_loadable_checkpoint(tmp_path, monkeypatch):
    model = trained()
    model.save(tmp_path / "q")
    before = model.q_table.copy()
    model.learn(200)
    real_replace = os.replace
    calls = {"count": 0}

    def crash_on_second_rename(source, destination):
        calls["count"] += 1
        if calls["count"] == 2:
            raise KeyboardInterrupt("simulated crash")
        return real_replace(source, destination)

    monkeypatch.setattr(checkpoint_module.os, "replace", crash_on_second_rename)
    with pytest.raises(KeyboardInterrupt):
        model.save(tmp_path / "q")
    monkeypatch.setattr(checkpoint_module.os, "replace", real_replace)
    np.testing.assert_array_equal(rlfoundry.load(tmp_path / "q").q_table, before)
    model.save(tmp_path / "q")  # the next save completes and clears the leftover
    np.testing.assert_array_equal(rlfoundry.load(tmp_path / "q").q_table, model.q_table)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["q"]


def test_saves_over_a_symbolic_link_to_a_checkpoint_replace_the_link_and_keep_what_it_points_to(tmp_path):
    model = trained()
    model.save(tmp_path / "real")
    before = model.q_table.copy()
    (tmp_path / "link").symlink_to(tmp_path / "real")
    for _ in range(2):  # the second save used to fail on the first one's parked link
        model.learn(100)
        model.save(tmp_path / "link")
        np.testing.assert_array_equal(rlfoundry.load(tmp_path / "link").q_table, model.q_table)
    np.testing.assert_array_equal(rlfoundry.load(tmp_path / "real").q_table, before)
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["link", "real"]


def test_nan_values_are_never_saved_over_a_good_checkpoint(tmp_path):
    model = trained()
    model.save(tmp_path / "q")
    model.q_table[0, 0] = np.nan
    with pytest.raises(NonFiniteError, match="q_table.*NaN.*previous checkpoint is kept"):
        model.save(tmp_path / "q")
    assert np.isfinite(rlfoundry.load(tmp_path / "q").q_table).all()


def test_a_save_never_writes_over_what_is_not_a_checkpoint(tmp_path):
    model = trained()
    notes = tmp_path / "notes.txt"
    notes.write_text("a user's file")
    project = tmp_path / "project"
    project.mkdir()
    (project / "data.csv").write_text("1,2,3")
    stray = tmp_path / "q.previous"  # where a save parks the checkpoint it replaces
    stray.write_text("not ours either")
    for target in (notes, project, tmp_path / "q"):
        with pytest.raises(CheckpointError, match="is not an rlfoundry checkpoint.*not writing over it"):
            model.save(target)
    assert notes.read_text() == "a user's file" and (project / "data.csv").read_text() == "1,2,3"
    assert stray.read_text() == "not ours either" and not (tmp_path / "q").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    model.save(empty)  # an empty directory holds nothing to lose
    model.save(empty)  # and then a checkpoint, which a save replaces
    np.testing.assert_array_equal(rlfoundry.load(empty).q_table, model.q_table)


@pytest.mark.parametrize("target", [".", ""])
def test_a_save_to_a_path_without_a_name_says_to_name_a_directory(tmp_path, monkeypatch, target):
    """save(".") used to raise "ValueError: PosixPath('.') has an empty name"; replacing the
    working directory would leave the process in a deleted one."""
    monkeypatch.chdir(tmp_path)
    with pytest.raises(CheckpointError, match=f"cannot save to {target!r}: .*name the checkpoint's directory, e.g. checkpoints/NAME"):
        trained().save(target)
    assert list(tmp_path.iterdir()) == []


def test_a_run_dir_that_is_a_file_is_refused_before_training(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("a user's file")
    with pytest.raises(ConfigError, match="run_dir=.*notes.txt is a file: pass a directory"):
        rlfoundry.QLearning("FrozenLake-v1", run_dir=notes)
    trained().save(tmp_path / "q")
    with pytest.raises(ConfigError, match="is a file"):
        rlfoundry.load(tmp_path / "q", run_dir=notes)
    assert notes.read_text() == "a user's file"


def files_under(directory):
    """Every file under `directory`: relative path -> bytes."""
    return {path.relative_to(directory): path.read_bytes() for path in directory.rglob("*") if path.is_file()}


def holds_a_run_message(run_dir, found, newcomer="a new model"):
    return (
        f"run_dir={run_dir} already holds a run ({found}): {newcomer} would mix its logs and checkpoints with that "
        f"run's; pass a new or empty directory, or continue that run from its own checkpoint with "
        f"rlfoundry.load('{run_dir}/checkpoints/final', run_dir='{run_dir}') (or checkpoints/latest) or `rlf resume {run_dir}`"
    )


def test_a_new_model_refuses_a_run_directory_that_holds_a_run_before_writing_anything(tmp_path):
    """The walkthrough's mix-ups: a second seed, or another algorithm, in a run's directory would
    continue its progress.csv and evaluations.csv and replace its final and best checkpoints."""
    run_dir = tmp_path / "run"
    evaluation = rlfoundry.PeriodicEvaluation(every=32, episodes=1)
    config = dict(n_envs=2, n_steps=16, batch_size=16, n_epochs=1, hidden_sizes=(16,))
    rlfoundry.PPO("CartPole-v1", run_dir=run_dir, quiet=True, evaluation=evaluation, **config).learn(64)
    before = files_under(run_dir)
    found = "checkpoints, config.json, evaluations.csv, events.out.tfevents.*, learning_curve.png, progress.csv"
    for make in (
        lambda: rlfoundry.PPO("CartPole-v1", run_dir=run_dir, seed=1, evaluation=evaluation, **config),
        lambda: rlfoundry.DQN("CartPole-v1", run_dir=str(run_dir), evaluation=evaluation),
    ):
        with pytest.raises(ConfigError) as error:
            make()
        assert str(error.value) == holds_a_run_message(run_dir, found)
    assert files_under(run_dir) == before


@pytest.mark.parametrize(
    "entry, found",
    [
        ("config.json", "config.json"),
        ("progress.csv", "progress.csv"),
        ("evaluations.csv", "evaluations.csv"),
        ("learning_curve.png", "learning_curve.png"),
        ("events.out.tfevents.1.host.1.0", "events.out.tfevents.*"),
        ("checkpoints/final/notes.txt", "checkpoints"),  # not a checkpoint: found before training, not after it
    ],
)
def test_any_file_a_run_writes_marks_a_run_directory(tmp_path, entry, found):
    (tmp_path / entry).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / entry).write_text("a user's file")
    with pytest.raises(ConfigError) as error:
        rlfoundry.PPO("CartPole-v1", run_dir=tmp_path)
    assert str(error.value) == holds_a_run_message(tmp_path, found)
    assert files_under(tmp_path) == {Path(entry): b"a user's file"}


def test_new_empty_and_unrelated_directories_are_run_directories(tmp_path):
    for run_dir in (tmp_path / "new", tmp_path / "empty", tmp_path / "notes"):
        run_dir.mkdir(exist_ok=run_dir.name == "new")  # "new" is left missing
        if run_dir.name == "notes":
            (run_dir / "notes.txt").write_text("a user's file")
        QLearning("FrozenLake-v1", run_dir=run_dir, quiet=True).learn(50)
        assert load_checkpoint(run_dir / "checkpoints" / "final").counters["steps"] == 50
    assert (tmp_path / "notes" / "notes.txt").read_text() == "a user's file"


def test_a_loaded_model_continues_only_its_own_run(tmp_path):
    """A model loaded from RUN/checkpoints/final or latest goes on in RUN, unless the other one is
    further (going on would replace it and take the logs back in time, which rlf resume also
    avoids); one loaded from anywhere else is refused there, as a new model is."""
    run_dir = tmp_path / "run"
    latest, final = run_dir / "checkpoints" / "latest", run_dir / "checkpoints" / "final"
    QLearning("FrozenLake-v1", run_dir=run_dir, quiet=True, checkpoint_every=40).learn(100)
    assert load_checkpoint(latest).counters["steps"] == 80
    before = files_under(run_dir)
    with pytest.raises(ConfigError, match=rf"{latest} \(step 80\) is behind {final} \(step 100\)"):
        rlfoundry.load(latest, run_dir=run_dir)
    assert files_under(run_dir) == before
    rlfoundry.load(final, run_dir=run_dir, quiet=True).learn(100)
    assert load_checkpoint(final).counters["steps"] == 200
    shutil.rmtree(final)  # a run that crashed before its final checkpoint: latest goes on
    rlfoundry.load(latest, run_dir=run_dir, quiet=True).learn(100)
    assert load_checkpoint(final).counters["steps"] == 180
    trained().save(tmp_path / "elsewhere")
    before = files_under(run_dir)
    found = "checkpoints, config.json, events.out.tfevents.*, learning_curve.png, progress.csv"
    newcomer = f"a model loaded from {tmp_path / 'elsewhere'}, not one of its checkpoints,"
    with pytest.raises(ConfigError) as error:
        rlfoundry.load(tmp_path / "elsewhere", run_dir=run_dir)
    assert str(error.value) == holds_a_run_message(run_dir, found, newcomer)
    assert files_under(run_dir) == before


def test_loading_onto_an_env_with_other_spaces_names_both(tmp_path):
    trained().save(tmp_path / "q")  # FrozenLake: 16 states, 4 actions
    with pytest.raises(SpaceError, match=r"this env observes Discrete\(500\) and acts in Discrete\(6\), but the model "
                       r"was trained on observations Discrete\(16\) and actions Discrete\(4\)"):
        rlfoundry.load(tmp_path / "q", env="Taxi-v4").learn(10)
    assert rlfoundry.load(tmp_path / "q", env="FrozenLake-v1").learn(10).steps == 310


class Int32Actions(gymnasium.Env):
    """Ten steps of noise observations; actions in an int32 Discrete or MultiDiscrete space."""

    observation_space = gymnasium.spaces.Box(-1.0, 1.0, (3,), np.float32)

    def __init__(self, action_space):
        self.action_space = action_space

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.time = 0
        return self.observation_space.sample(), {}

    def step(self, action):
        self.time += 1
        return self.observation_space.sample(), 1.0, False, self.time == 10, {}


@pytest.mark.parametrize(
    "action_space",
    [gymnasium.spaces.Discrete(3, dtype=np.int32), gymnasium.spaces.MultiDiscrete([3, 2], dtype=np.int32)],
    ids=["Discrete", "MultiDiscrete"],
)
def test_a_model_of_int32_actions_goes_on_training_on_its_own_env(tmp_path, action_space):
    """The checkpoint used to drop the dtype of (Multi)Discrete spaces, so the loaded model took
    its own env for one with other spaces: "acts in MultiDiscrete([3 2]), but the model was
    trained on ... actions MultiDiscrete([3 2])"."""
    make = lambda: Int32Actions(action_space)  # noqa: E731
    rlfoundry.PPO(make, n_steps=16, batch_size=16, n_epochs=1, quiet=True).learn(16).save(tmp_path / "ppo")
    loaded = rlfoundry.load(tmp_path / "ppo", env=make, quiet=True)
    assert loaded.training_env.action_space == action_space
    assert loaded.learn(16).steps == 32


def test_loading_onto_a_vector_env_of_another_size_says_what_to_pass(tmp_path):
    """The message used to say "pass n_envs=3 with it", which rlfoundry.load does not take: a
    checkpoint's n_envs is fixed (its env position, replay buffer and rollout are per env)."""
    trained(n_envs=2).save(tmp_path / "q")
    with pytest.raises(ValueError) as error:
        rlfoundry.load(tmp_path / "q", env=rlfoundry.make_env("FrozenLake-v1", 3)).learn(10)
    assert str(error.value) == (
        "this vector env runs 3 envs, but the model was trained with n_envs=2: pass a vector env of 2 envs, "
        "or an env id or a function that makes one env"
    )
    assert rlfoundry.load(tmp_path / "q", env=rlfoundry.make_env("FrozenLake-v1", 2), quiet=True).learn(10).steps == 310


def slips(vector_env) -> bool:
    """Whether the first FrozenLake of a vector env slips: three outcomes per action, not one."""
    return len(vector_env.envs[0].unwrapped.P[0][0]) == 3


@pytest.mark.parametrize(
    "make", [lambda: gymnasium.make("FrozenLake-v1", is_slippery=False), lambda: rlfoundry.RegisteredEnv("FrozenLake-v1", {"is_slippery": False})],
    ids=["env object", "RegisteredEnv"],
)
def test_the_keyword_arguments_of_the_env_survive_save_and_load(tmp_path, make):
    """Loaded without env=, a model trained on FrozenLake that does not slip used to train and
    evaluate on FrozenLake-v1 as registered, which slips: the same spaces, so nothing said so."""
    QLearning(make(), quiet=True).learn(20).save(tmp_path / "q")
    manifest = json.loads((tmp_path / "q" / "manifest.json").read_text())
    assert manifest["state"]["env"]["env_kwargs"] == {"is_slippery": False}
    loaded = rlfoundry.load(tmp_path / "q", quiet=True)
    assert loaded.training_env.rebuild_source == rlfoundry.RegisteredEnv("FrozenLake-v1", {"is_slippery": False})
    assert not slips(loaded.learn(10).training_env.env)


def test_an_env_its_id_does_not_rebuild_is_asked_for_after_loading(tmp_path):
    doubled = gymnasium.wrappers.TransformReward(gymnasium.make("FrozenLake-v1"), lambda reward: 2 * reward)
    QLearning(doubled, quiet=True).learn(10).save(tmp_path / "q")
    loaded = rlfoundry.load(tmp_path / "q", quiet=True)
    assert loaded.env_id == "FrozenLake-v1" and loaded.predict(0) == 0  # predicting needs no env
    unbuildable = r"made from FrozenLake-v1 with wrappers or keyword arguments that its checkpoint cannot record"
    with pytest.raises(ConfigError, match=unbuildable + r".*: pass env=\.\.\. to rlfoundry.load"):
        loaded.learn(10)
    with pytest.raises(ConfigError, match=unbuildable + r".*: pass env=\.\.\. to evaluate"):
        rlfoundry.evaluate(loaded)
    again = gymnasium.wrappers.TransformReward(gymnasium.make("FrozenLake-v1"), lambda reward: 2 * reward)
    assert rlfoundry.load(tmp_path / "q", env=again, quiet=True).learn(10).steps == 20


def test_a_checkpoint_of_an_env_id_this_process_has_not_registered_says_to_register_it_or_pass_env(tmp_path):
    """Restoring the env position makes the env: the error used to be a bare "unknown environment
    id 'SmallLake-v0'; did you mean ..." as if the caller had mistyped an id."""
    gymnasium.register("SmallLake-v0", entry_point="gymnasium.envs.toy_text:FrozenLakeEnv", kwargs={"map_name": "4x4"})
    try:
        QLearning("SmallLake-v0", quiet=True).learn(10).save(tmp_path / "q")
    finally:
        del gymnasium.registry["SmallLake-v0"]  # as in a new process that has not imported the registering module
    with pytest.raises(
        UnknownEnvironmentError,
        match=r"unknown environment id 'SmallLake-v0'.*: the checkpoint .* was trained on it; register it in this process "
        r"\(import the module that calls gymnasium.register\) before loading, or pass env=",
    ):
        rlfoundry.load(tmp_path / "q")
    gymnasium.register("SmallLake-v0", entry_point="gymnasium.envs.toy_text:FrozenLakeEnv", kwargs={"map_name": "4x4"})
    try:
        assert rlfoundry.load(tmp_path / "q", quiet=True).learn(10).steps == 20
    finally:
        del gymnasium.registry["SmallLake-v0"]


def test_a_schema_1_checkpoint_rebuilds_its_env_from_the_id_alone(tmp_path):
    trained().save(tmp_path / "q")
    manifest_path = tmp_path / "q" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["schema_version"] = 1
    del manifest["state"]["env"]["env_kwargs"]
    manifest_path.write_text(json.dumps(manifest))
    loaded = rlfoundry.load(tmp_path / "q", quiet=True)
    assert loaded.training_env.rebuild_source == rlfoundry.RegisteredEnv("FrozenLake-v1")
    assert slips(loaded.learn(10).training_env.env)


def test_optimizer_state_round_trip_continues_identically():
    torch.manual_seed(0)

    def build():
        network = torch.nn.Linear(3, 2)
        return network, torch.optim.Adam(network.parameters(), lr=0.01)

    def train(network, optimizer, steps, seed):
        generator = torch.Generator().manual_seed(seed)
        for _ in range(steps):
            optimizer.zero_grad()
            network(torch.randn(4, 3, generator=generator)).square().mean().backward()
            optimizer.step()

    network, optimizer = build()
    train(network, optimizer, 5, seed=1)
    # Cloned, as reading them back from a safetensors file would: state_dict() returns live tensors.
    tensors = {name: tensor.clone() for name, tensor in module_tensors("net", network).items()}
    optimizer_tensors, optimizer_json = optimizer_state("adam", optimizer)
    optimizer_tensors = {name: tensor.clone() for name, tensor in optimizer_tensors.items()}
    optimizer_json = json.loads(json.dumps(optimizer_json))
    copy_network, copy_optimizer = build()
    load_module("net", copy_network, tensors)
    load_optimizer("adam", copy_optimizer, optimizer_tensors, optimizer_json)
    train(network, optimizer, 5, seed=2)
    train(copy_network, copy_optimizer, 5, seed=2)
    for original, copy in zip(network.parameters(), copy_network.parameters()):
        assert torch.equal(original, copy)


def blackjack():
    """Blackjack keeps the hands in lists; flattened, its observations suit PPO."""
    return gymnasium.wrappers.FlattenObservation(gymnasium.make("Blackjack-v1"))


def frame_stacked_cartpole():
    """FrameStackObservation keeps the last frames in a deque."""
    return gymnasium.wrappers.FrameStackObservation(gymnasium.make("CartPole-v1"), 3)


def normalised_cartpole():
    """Gymnasium's NormalizeObservation keeps its statistics in a RunningMeanStd object."""
    return gymnasium.wrappers.NormalizeObservation(gymnasium.make("CartPole-v1"))


TINY_PPO = dict(hidden_sizes=(8,), n_steps=8, n_envs=2, batch_size=8, n_epochs=1, quiet=True)


@pytest.mark.parametrize("make_env", [blackjack, frame_stacked_cartpole])
def test_env_state_held_in_lists_and_deques_resumes_exactly(tmp_path, make_env):
    """The env snapshot used to skip lists and deques without a word: a resumed Blackjack run
    failed on its first step (no dealer's hand), a frame stack went on from blank padding frames."""
    rlfoundry.PPO(make_env, **TINY_PPO).learn(64).save(tmp_path / "straight")
    rlfoundry.PPO(make_env, **TINY_PPO).learn(32).save(tmp_path / "first")
    rlfoundry.load(tmp_path / "first", env=make_env, quiet=True).learn(32).save(tmp_path / "resumed")
    assert load_checkpoint(tmp_path / "first").state["env"]["env_snapshot"] is not None
    assert_same_checkpoints(tmp_path / "resumed", tmp_path / "straight")


def test_a_sync_vector_cartpole_of_four_copies_loads_and_resumes_exactly_without_env(tmp_path):
    """Rebuilt from its id, four CartPoles became the numpy-batched vector env, whose layers the
    saved SyncVectorEnv snapshot did not fit: rlfoundry.load raised "not built like the one in the
    checkpoint ... or load without an env", which it had been."""
    def sync_cartpoles():
        return rlfoundry.make_env("CartPole-v1", n_envs=4, vectorization="sync")

    options = dict(TINY_PPO, n_envs=4)
    rlfoundry.PPO(sync_cartpoles(), **options).learn(64).save(tmp_path / "straight")
    rlfoundry.PPO(sync_cartpoles(), **options).learn(32).save(tmp_path / "first")
    rlfoundry.load(tmp_path / "first", quiet=True).learn(32).save(tmp_path / "resumed")
    assert_same_checkpoints(tmp_path / "resumed", tmp_path / "straight")


def test_a_model_on_a_gym_make_env_object_saves_its_position_and_resumes_exactly(tmp_path):
    """Reading the env object's spec (for its id and keyword arguments) left gymnasium's cached
    copy in each wrapper (`_cached_spec`), an object the snapshot cannot hold: the checkpoint saved
    no position and the loaded model went on from fresh episodes."""
    options = dict(TINY_PPO, n_envs=1)
    rlfoundry.PPO(gymnasium.make("CartPole-v1"), **options).learn(64).save(tmp_path / "straight")
    rlfoundry.PPO(gymnasium.make("CartPole-v1"), **options).learn(32).save(tmp_path / "first")
    assert load_checkpoint(tmp_path / "first").state["env"]["env_snapshot"] is not None
    rlfoundry.load(tmp_path / "first", quiet=True).learn(32).save(tmp_path / "resumed")
    assert_same_checkpoints(tmp_path / "resumed", tmp_path / "straight")


def test_an_env_with_state_a_checkpoint_cannot_hold_is_not_restored_without_it(tmp_path):
    """Restoring everything but NormalizeObservation's statistics would continue in another env
    than the saved one: the checkpoint saves no position, and a loaded model starts fresh episodes."""
    rlfoundry.PPO(normalised_cartpole, **TINY_PPO).learn(32).save(tmp_path / "ppo")
    assert load_checkpoint(tmp_path / "ppo").state["env"]["env_snapshot"] is None
    assert not rlfoundry.load(tmp_path / "ppo", env=normalised_cartpole).training_env.resumed_exactly


def test_a_loaded_model_says_once_that_training_goes_on_from_fresh_episodes(tmp_path, capsys):
    rlfoundry.PPO(normalised_cartpole, **TINY_PPO).learn(32).save(tmp_path / "ppo")
    loaded = rlfoundry.load(tmp_path / "ppo", env=normalised_cartpole)
    capsys.readouterr()
    loaded.learn(32).learn(32)
    assert capsys.readouterr().out.count("the checkpoint holds no env position") == 1
    # A checkpoint with the env's position says nothing.
    rlfoundry.PPO("CartPole-v1", **TINY_PPO).learn(32).save(tmp_path / "cartpole")
    rlfoundry.load(tmp_path / "cartpole").learn(32)
    assert "env position" not in capsys.readouterr().out


RESUME_SCRIPT = """
import sys, numpy as np, rlfoundry
cls = {"q": rlfoundry.QLearning, "sarsa": rlfoundry.SARSA, "expected": rlfoundry.ExpectedSARSA}[sys.argv[1]]
mode, path, steps = sys.argv[2], sys.argv[3], int(sys.argv[4])
env = sys.argv[5]
if mode == "start":
    model = cls(env, n_envs=2, gamma=0.95, epsilon_decay_steps=3000, seed=4, quiet=True)
else:
    model = rlfoundry.load(path, quiet=True)
model.learn(steps)
model.save(path)
"""


@pytest.mark.parametrize("algorithm, env_id", [("q", "FrozenLake-v1"), ("sarsa", "CliffWalking-v1"), ("expected", "Taxi-v4")])
def test_train_save_load_in_a_new_process_train_equals_straight_training(tmp_path, algorithm, env_id):
    script = tmp_path / "resume.py"
    script.write_text(RESUME_SCRIPT)

    def run(mode, path, steps):
        subprocess.run([sys.executable, str(script), algorithm, mode, str(path), str(steps), env_id], check=True)

    run("start", tmp_path / "halves", 1500)
    run("resume", tmp_path / "halves", 1500)
    run("start", tmp_path / "straight", 3000)
    halves = rlfoundry.load(tmp_path / "halves")
    straight = rlfoundry.load(tmp_path / "straight")
    assert halves.steps == straight.steps == 3000
    np.testing.assert_array_equal(halves.q_table, straight.q_table)
    np.testing.assert_array_equal(halves.visits, straight.visits)
    assert halves.rng.bit_generator.state == straight.rng.bit_generator.state


def test_a_model_trained_on_a_gpu_loads_onto_the_cpu(tmp_path, capsys):
    """Its checkpoint's config says device='cuda' (written here by hand, as no GPU is at hand)."""
    from rlfoundry.cli import main

    model = rlfoundry.PPO("CartPole-v1", **TINY_PPO).learn(32)
    model.save(tmp_path / "gpu")
    manifest_path = tmp_path / "gpu" / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    manifest["config"]["device"] = "cuda"
    manifest_path.write_text(json.dumps(manifest))
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"rlfoundry.load\(path, device='cpu'\)"):
            rlfoundry.load(tmp_path / "gpu")
        assert main(["eval", str(tmp_path / "gpu"), "--episodes", "1"]) == 2
        assert "--device cpu" in capsys.readouterr().err
    loaded = rlfoundry.load(tmp_path / "gpu", device="cpu")
    observations = np.zeros((3, 4), np.float32)
    np.testing.assert_array_equal(loaded.predict(observations), model.predict(observations))
    assert main(["eval", str(tmp_path / "gpu"), "--episodes", "1", "--device", "cpu"]) == 0
    rlfoundry.QLearning("FrozenLake-v1", quiet=True).learn(10).save(tmp_path / "table")
    with pytest.raises(ConfigError, match="it has no device"):
        rlfoundry.load(tmp_path / "table", device="cpu")


def edited_copy(source, target, edit):
    """A copy of a checkpoint whose manifest.json `edit` changed (the files' hashes do not cover it)."""
    shutil.copytree(source, target)
    manifest = json.loads((target / "manifest.json").read_text())
    edit(manifest)
    (target / "manifest.json").write_text(json.dumps(manifest))
    return target


def test_a_manifest_edited_to_misfit_its_files_is_a_corrupt_checkpoint(tmp_path, capsys):
    """It gave a RuntimeError from load_state_dict, a ValueError from the replay buffer or a
    KeyError, as tracebacks from the CLI."""
    from rlfoundry.cli import main

    ppo = rlfoundry.PPO("CartPole-v1", **TINY_PPO).learn(16).save(tmp_path / "ppo")
    dqn = rlfoundry.DQN("CartPole-v1", hidden_sizes=(8,), buffer_size=64, learning_starts=16, quiet=True)
    dqn = dqn.learn(32).save(tmp_path / "dqn")
    cases = {
        "sizes": (ppo, lambda manifest: manifest["config"].update(hidden_sizes=[16]), "does not fit the network"),
        "buffer": (dqn, lambda manifest: manifest["config"].update(buffer_size=128), "manifest.json edited"),
        "counters": (ppo, lambda manifest: manifest.pop("counters"), "lacks counters"),
    }
    for name, (source, edit, message) in cases.items():
        edited = edited_copy(source, tmp_path / name, edit)
        with pytest.raises(CheckpointCorruptError, match=message):
            rlfoundry.load(edited)
        # rlf resume reads every part (rlf eval leaves the replay buffer unread).
        assert main(["resume", str(edited), "--steps", "1", "--runs-dir", str(tmp_path / "runs")]) == 2
        assert len(capsys.readouterr().err.strip().splitlines()) == 1
