"""rlfoundry.load(path, field=value) and `rlf resume --set`: config fields changed at load train as
a model built with them would, fields fixed by the checkpoint are refused without losing anything,
and the run's config.json records each change."""

import json
import re
import shutil

import pytest
import torch

import rlfoundry
from checkpoint_checks import assert_same_checkpoints
from rlfoundry.cli import main
from rlfoundry.run.config import ConfigError

DQN_SETTINGS = dict(
    buffer_size=1000, batch_size=16, train_freq=1, target_update_interval=50, hidden_sizes=(16,), quiet=True,
)
SAC_SETTINGS = dict(
    buffer_size=1000, batch_size=16, actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), quiet=True,
)
PPO_SETTINGS = dict(n_steps=32, batch_size=16, n_epochs=2, hidden_sizes=(16,), quiet=True)


@pytest.mark.parametrize(
    "algorithm, env_id, settings, before, after",
    [
        # The optimiser's learning rate and the replay buffer's gamma used to be put back from the checkpoint.
        ("DQN", "CartPole-v1", DQN_SETTINGS, dict(learning_rate=1e-3, gamma=0.99), dict(learning_rate=3e-4, gamma=0.9)),
        # One Adam over three parameter groups, each with its own rate.
        ("SAC", "Pendulum-v1", SAC_SETTINGS, dict(critic_learning_rate=1e-3, alpha_learning_rate=1e-3),
         dict(critic_learning_rate=2e-4, alpha_learning_rate=5e-3)),
    ],
)
def test_changed_fields_train_as_a_model_built_with_them(tmp_path, algorithm, env_id, settings, before, after):
    """The first 100 steps come before learning_starts, so no value of these fields changes them:
    a model built with `after`, trained 100 + 150 steps, is the reference, bit for bit, for one
    built with `before`, saved at 100 and loaded with `after`."""
    cls = getattr(rlfoundry, algorithm)
    cls(env_id, learning_starts=120, **settings, **before).learn(100).save(tmp_path / "saved")
    cls.load(tmp_path / "saved", quiet=True, **after).learn(150).save(tmp_path / "changed")
    cls(env_id, learning_starts=120, **settings, **after).learn(100).learn(150).save(tmp_path / "built")
    assert_same_checkpoints(tmp_path / "changed", tmp_path / "built")


def test_a_change_is_checked_printed_once_and_saved(tmp_path, capsys):
    rlfoundry.PPO("CartPole-v1", **PPO_SETTINGS).learn(32).save(tmp_path / "saved")
    changes = dict(learning_rate=1e-3, adam_epsilon=1e-7, n_epochs=3, clip_range=0.1)
    model = rlfoundry.load(tmp_path / "saved", **changes)
    assert capsys.readouterr().out == (
        f"ppo: {tmp_path / 'saved'} loaded with learning_rate 0.0003 -> 0.001, adam_epsilon 1e-05 -> 1e-07, "
        "n_epochs 2 -> 3, clip_range 0.2 -> 0.1\n"
    )
    assert model.optimizer.param_groups[0]["eps"] == 1e-7  # Adam's own setting, not the checkpoint's
    model.learn(32).save(tmp_path / "changed")
    assert "loaded with" not in capsys.readouterr().out
    assert {name: json.loads((tmp_path / "changed" / "manifest.json").read_text())["config"][name] for name in changes} == changes
    # A checkpoint saved with those values (its manifest edited) trains the same.
    shutil.copytree(tmp_path / "saved", tmp_path / "edited")
    manifest = json.loads((tmp_path / "edited" / "manifest.json").read_text())
    manifest["config"].update(changes)
    (tmp_path / "edited" / "manifest.json").write_text(json.dumps(manifest))
    rlfoundry.load(tmp_path / "edited", quiet=True).learn(32).save(tmp_path / "reference")
    assert_same_checkpoints(tmp_path / "changed", tmp_path / "reference")

    with pytest.raises(ConfigError, match=re.escape("learning_rate=-1.0 is out of range")):
        rlfoundry.load(tmp_path / "saved", learning_rate=-1.0)
    with pytest.raises(ConfigError, match="normalize_advantage=True needs minibatches of at least 2 rows"):
        rlfoundry.load(tmp_path / "saved", batch_size=31)
    with pytest.raises(ConfigError) as built:
        rlfoundry.PPO("CartPole-v1", lerning_rate=1e-3)
    with pytest.raises(ConfigError) as loaded:
        rlfoundry.load(tmp_path / "saved", lerning_rate=1e-3)
    assert str(loaded.value) == str(built.value)


def test_a_new_start_of_a_linear_schedule_applies_from_where_the_schedule_stands(tmp_path):
    """Schedules count the run's steps: a linear learning rate changed to 1e-3 at step 64 updates
    the rollout that ends at step 96 at 1e-3 * (1 - 96 / 256), as a model built with 1e-3 would,
    not at 1e-3."""
    schedule = dict(learning_rate_schedule="linear", schedule_steps=256)
    rlfoundry.PPO("CartPole-v1", **PPO_SETTINGS, **schedule).learn(64).save(tmp_path / "saved")
    model = rlfoundry.load(tmp_path / "saved", quiet=True, learning_rate=1e-3).learn(32)
    assert model.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 * (1 - 96 / 256), rel=1e-12)


@pytest.mark.parametrize(
    "algorithm, env_id, settings, field, value, reason",
    [
        ("PPO", "CartPole-v1", PPO_SETTINGS, "hidden_sizes", (32,), "it shapes the saved networks"),
        ("PPO", "CartPole-v1", PPO_SETTINGS, "normalize_observations", True, "decides whether the checkpoint holds observation statistics"),
        ("A2C", "CartPole-v1", dict(quiet=True), "optimizer", "adam", "chooses the optimiser whose state the checkpoint holds"),
        ("DQN", "CartPole-v1", DQN_SETTINGS, "buffer_size", 2000, "sets the layout of the saved replay buffer"),
        ("SAC", "Pendulum-v1", SAC_SETTINGS, "alpha", 0.5, "only sets the initial entropy temperature"),
        ("REINFORCE", "CartPole-v1", dict(n_envs=2, quiet=True), "baseline", "none", "decides whether the checkpoint holds a value network"),
        ("QLearning", "FrozenLake-v1", dict(quiet=True), "initial_q", 1.0, "only sets the initial Q table"),
        ("QLearning", "FrozenLake-v1", dict(quiet=True), "seed", 3, "seeded the generators and envs"),
    ],
)
def test_a_field_fixed_by_the_checkpoint_is_refused_and_nothing_is_lost(tmp_path, algorithm, env_id, settings, field, value, reason):
    getattr(rlfoundry, algorithm)(env_id, **settings).save(tmp_path / "saved")
    saved = {file.name: file.read_bytes() for file in (tmp_path / "saved").rglob("*") if file.is_file()}
    with pytest.raises(ConfigError, match=re.escape(f"{field} cannot change when a checkpoint is loaded")) as refused:
        rlfoundry.load(tmp_path / "saved", run_dir=tmp_path / "run", **{field: value})
    assert reason in str(refused.value) and f"train a new model with {field}=" in str(refused.value)
    assert {file.name: file.read_bytes() for file in (tmp_path / "saved").rglob("*") if file.is_file()} == saved
    assert not (tmp_path / "run").exists()
    # The value the checkpoint has is no change (a list as JSON gives it, too).
    unchanged = json.loads((tmp_path / "saved" / "manifest.json").read_text())["config"][field]
    assert rlfoundry.load(tmp_path / "saved", quiet=True, **{field: unchanged}).config_changes == []


@pytest.mark.parametrize(
    "keyword, suggested",
    [("replay_bufer", "replay_buffer"), ("checkpoint_evry", "checkpoint_every"), ("rundir", "run_dir"), ("evaluations", "evaluation")],
)
def test_a_mistyped_load_option_is_named_with_the_option_meant(tmp_path, keyword, suggested):
    """The load options were left out of the spellings offered: replay_bufer=False suggested
    replay_storage and check_replay_memory, config fields that mean something else."""
    rlfoundry.DQN("CartPole-v1", **DQN_SETTINGS).save(tmp_path / "dqn")
    with pytest.raises(ConfigError, match=f"unknown DQNConfig config key {keyword!r}; did you mean {suggested}\\b"):
        rlfoundry.load(tmp_path / "dqn", **{keyword: False})


def test_rlf_resume_set_changes_fields_and_records_them(tmp_path, capsys):
    root = tmp_path / "runs"
    assert main(["train", "q-learning", "FrozenLake-v1", "--steps", "200", "--runs-dir", str(root), "--quiet"]) == 0
    (run_dir,) = list(root.iterdir())
    record = json.loads((run_dir / "config.json").read_text())
    assert record["config_changes"] == []
    rate = record["config"]["learning_rate"]  # the preset's

    assert main(["resume", str(run_dir), "--steps", "100", "--set", "learning_rate=0.25", "--set", "epsilon_end=0.2"]) == 0
    assert f"q-learning: {run_dir / 'checkpoints' / 'final'} loaded with learning_rate {rate} -> 0.25, epsilon_end" in capsys.readouterr().out
    changed = json.loads((run_dir / "config.json").read_text())
    assert changed["config"] == {**record["config"], "learning_rate": 0.25, "epsilon_end": 0.2}
    assert changed["config_changes"] == [
        {"step": 200, "field": "learning_rate", "from": rate, "to": 0.25},
        {"step": 200, "field": "epsilon_end", "from": record["config"]["epsilon_end"], "to": 0.2},
    ]
    assert {key: value for key, value in changed.items() if key not in ("config", "config_changes")} == {
        key: value for key, value in record.items() if key not in ("config", "config_changes")
    }
    assert rlfoundry.load(run_dir / "checkpoints" / "final").config.learning_rate == 0.25

    # A checkpoint outside a run goes on in a new run directory, whose record lists the change.
    shutil.copytree(run_dir / "checkpoints" / "final", tmp_path / "saved")
    assert main(["resume", str(tmp_path / "saved"), "--steps", "100", "--set", "gamma=0.9", "--runs-dir", str(root), "--quiet"]) == 0
    (branch,) = [directory for directory in root.iterdir() if directory != run_dir]
    branched = json.loads((branch / "config.json").read_text())
    assert branched["config"]["gamma"] == 0.9 and branched["resumed_at_step"] == 300
    assert branched["config_changes"] == [{"step": 300, "field": "gamma", "from": record["config"]["gamma"], "to": 0.9}]

    final = {file.name: file.read_bytes() for file in (run_dir / "checkpoints" / "final").iterdir() if file.is_file()}
    progress = (run_dir / "progress.csv").read_text()
    capsys.readouterr()
    rlfoundry.PPO("CartPole-v1", **PPO_SETTINGS).save(tmp_path / "ppo")
    for checkpoint, flag, message in [
        (run_dir, "initial_q=1", "initial_q cannot change when a checkpoint is loaded (it has 0.0): it only sets"),
        (run_dir, "lerning_rate=1", "unknown TabularConfig config key 'lerning_rate'; did you mean learning_rate"),
        (tmp_path / "ppo", "device=cpu", "load onto a device with --device cpu, not with --set device=..."),
    ]:
        assert main(["resume", str(checkpoint), "--steps", "100", "--set", flag, "--runs-dir", str(root)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"rlf resume: error: {message}") and len(err.strip().splitlines()) == 1
    assert {file.name: file.read_bytes() for file in (run_dir / "checkpoints" / "final").iterdir() if file.is_file()} == final
    assert (run_dir / "progress.csv").read_text() == progress
    assert json.loads((run_dir / "config.json").read_text()) == changed
    assert len(list(root.iterdir())) == 2


def test_a_refused_resume_prints_its_error_alone(tmp_path, capsys):
    """rlf resume says what it takes from the run's config.json, and that a checkpoint behind the
    run's final goes on in a new run directory, once the checkpoint has loaded: a refused field
    prints its one line of error, not notes of a resume that does not happen."""
    root = tmp_path / "runs"
    flags = ["--steps", "200", "--eval-every", "100", "--eval-episodes", "1", "--checkpoint-every", "100"]
    assert main(["train", "q-learning", "FrozenLake-v1", *flags, "--runs-dir", str(root), "--quiet"]) == 0
    (run_dir,) = list(root.iterdir())
    assert rlfoundry.load(run_dir / "checkpoints" / "best").steps == 100  # behind final
    capsys.readouterr()
    for checkpoint in (run_dir, run_dir / "checkpoints" / "best"):
        assert main(["resume", str(checkpoint), "--steps", "100", "--set", "initial_q=1", "--runs-dir", str(root)]) == 2
        out, err = capsys.readouterr()
        assert out == "" and err.startswith("rlf resume: error: initial_q cannot change when a checkpoint is loaded")
        assert len(err.splitlines()) == 1
    assert list(root.iterdir()) == [run_dir]


def test_learning_rates_reach_the_optimisers_of_every_algorithm(tmp_path):
    """Each learning-rate field changed at load is the rate its optimiser steps with."""
    cases = [
        ("A2C", "CartPole-v1", dict(n_steps=8), dict(learning_rate=1e-2, rmsprop_alpha=0.9, optimizer_epsilon=1e-3)),
        ("TRPO", "CartPole-v1", dict(n_steps=64), dict(learning_rate=1e-2, adam_epsilon=1e-3)),
        ("REINFORCE", "CartPole-v1", dict(n_envs=2), dict(learning_rate=1e-2, value_learning_rate=2e-2, optimizer_epsilon=1e-3)),
        ("TD3", "Pendulum-v1", dict(buffer_size=100), dict(actor_learning_rate=1e-2, critic_learning_rate=2e-2)),
    ]
    for algorithm, env_id, settings, changes in cases:
        cls = getattr(rlfoundry, algorithm)
        cls(env_id, quiet=True, **settings).save(tmp_path / algorithm)
        model = cls.load(tmp_path / algorithm, quiet=True, **changes)
        built = cls(env_id, quiet=True, **settings, **changes)
        assert optimizers(model), algorithm
        for loaded_optimizer, built_optimizer in zip(optimizers(model), optimizers(built), strict=True):
            settings_of = [{k: v for k, v in group.items() if k != "params"} for group in loaded_optimizer.param_groups]
            assert settings_of == [{k: v for k, v in group.items() if k != "params"} for group in built_optimizer.param_groups]


def optimizers(model):
    """The model's torch optimisers, in attribute order."""
    found = [value for value in vars(model).values() if isinstance(value, torch.optim.Optimizer)]
    collector = getattr(model, "collector", None)
    found += [value for value in vars(collector).values() if isinstance(value, torch.optim.Optimizer)] if collector else []
    return found
