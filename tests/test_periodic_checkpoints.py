"""Periodic checkpoints: `checkpoint_every` writes RUN_DIR/checkpoints/latest at a point between
updates, so that training on from it equals training straight through, bit for bit."""

import csv
import json
import shutil

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import rlfoundry
from checkpoint_checks import assert_same_checkpoints
from rlfoundry.cli import main
from rlfoundry.run.checkpoint import load_checkpoint
from rlfoundry.run.config import ConfigError

# (algorithm, env, config, total steps, checkpoint_every): `latest` lands strictly inside the run.
CASES = {
    "q-learning": ("FrozenLake-v1", {}, 1000, 300),
    "dqn": ("CartPole-v1", dict(hidden_sizes=(16,), batch_size=8, learning_starts=16, buffer_size=500, train_freq=4), 200, 70),
    "ppo": ("CartPole-v1", dict(n_envs=2, n_steps=16, batch_size=16, n_epochs=2, hidden_sizes=(16,)), 96, 64),
    "sac": ("Pendulum-v1", dict(actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), batch_size=16, learning_starts=50), 200, 150),
    # Batches of whole episodes: `latest` used to record the step target of the learn() call it was
    # written in, ahead of its steps, so that learning the remaining steps from it went past that target.
    "reinforce": ("CartPole-v1", dict(n_envs=2, max_episode_steps=40, hidden_sizes=(8,)), 400, 110),
    "off-policy-pg": ("CartPole-v1", dict(n_envs=2, max_episode_steps=40, hidden_sizes=(8,)), 400, 110),
}


@pytest.mark.parametrize("name", list(CASES))
def test_training_on_from_the_latest_checkpoint_equals_training_straight(tmp_path, name):
    env_id, config, total, every = CASES[name]
    cls = rlfoundry.ALGORITHMS[name]
    cls(env_id, run_dir=tmp_path / "straight", quiet=True, checkpoint_every=every, **config).learn(total)
    latest = tmp_path / "straight" / "checkpoints" / "latest"
    steps_at_latest = load_checkpoint(latest).counters["steps"]
    assert every <= steps_at_latest < total

    resumed = rlfoundry.load(latest, run_dir=tmp_path / "resumed", quiet=True)
    resumed.learn(total - steps_at_latest)
    assert_same_checkpoints(tmp_path / "resumed" / "checkpoints" / "final", tmp_path / "straight" / "checkpoints" / "final")


def test_checkpoint_every_without_a_run_directory_and_bad_values_are_refused(tmp_path, monkeypatch):
    """It used to be ignored without a run directory: the checkpoints asked for were never written."""
    monkeypatch.chdir(tmp_path)
    rlfoundry.QLearning("FrozenLake-v1", quiet=True).learn(50).save(tmp_path / "q")
    for make in (
        lambda: rlfoundry.PPO("CartPole-v1", checkpoint_every=64),
        lambda: rlfoundry.load(tmp_path / "q", checkpoint_every=64),
    ):
        with pytest.raises(ConfigError) as error:
            make()
        assert str(error.value) == (
            "checkpoint_every=64 writes RUN_DIR/checkpoints/latest, but no run_dir was given: "
            "pass run_dir=... as well, or leave checkpoint_every out"
        )
    assert [path.name for path in tmp_path.iterdir()] == ["q"]
    with pytest.raises(ConfigError, match="checkpoint_every=0 is out of range"):
        rlfoundry.QLearning("FrozenLake-v1", checkpoint_every=0)
    with pytest.raises(ConfigError, match="checkpoint_every"):
        rlfoundry.PPO("CartPole-v1", checkpoint_every=2.5)


def test_rlf_train_and_resume_write_periodic_checkpoints(tmp_path, capsys):
    """--checkpoint-every reaches the model with its run directory: a new timestamped one for
    `rlf train` and for a checkpoint outside a run, the run's own for `rlf resume RUN_DIR`."""
    root = tmp_path / "runs"
    assert main(["train", "q-learning", "FrozenLake-v1", "--steps", "200", "--checkpoint-every", "150",
                 "--runs-dir", str(root), "--quiet"]) == 0
    (run_dir,) = list(root.iterdir())
    assert run_dir.name.startswith("q-learning-FrozenLake-v1-s0-")
    assert load_checkpoint(run_dir / "checkpoints" / "latest").counters["steps"] == 150
    assert main(["resume", str(run_dir), "--steps", "200", "--checkpoint-every", "150", "--quiet"]) == 0
    assert load_checkpoint(run_dir / "checkpoints" / "latest").counters["steps"] == 300
    assert load_checkpoint(run_dir / "checkpoints" / "final").counters["steps"] == 400

    rlfoundry.QLearning("FrozenLake-v1", quiet=True).learn(100).save(tmp_path / "saved")
    assert main(["resume", str(tmp_path / "saved"), "--steps", "100", "--checkpoint-every", "75",
                 "--runs-dir", str(root), "--quiet"]) == 0
    (branch,) = [directory for directory in root.iterdir() if directory != run_dir]
    assert load_checkpoint(branch / "checkpoints" / "latest").counters["steps"] == 150
    assert json.loads((branch / "config.json").read_text())["resumed_from"] == str(tmp_path / "saved")


def test_rlf_resume_picks_the_furthest_checkpoint_of_a_run(tmp_path, capsys):
    """A run that has a `latest` further on than its `final` (a resumed run that then crashed)
    resumes from `latest`."""
    assert main(["train", "q-learning", "FrozenLake-v1", "--steps", "200", "--runs-dir", str(tmp_path), "--quiet"]) == 0
    (run_dir,) = list(tmp_path.iterdir())
    further = rlfoundry.load(run_dir / "checkpoints" / "final", quiet=True).learn(100)
    further.save(run_dir / "checkpoints" / "latest")
    capsys.readouterr()
    assert main(["resume", str(run_dir), "--steps", "100", "--quiet"]) == 0
    assert rlfoundry.load(run_dir / "checkpoints" / "final").steps == 400


def test_a_checkpoint_whose_save_stopped_between_its_renames_still_counts_as_the_runs(tmp_path, capsys):
    """A save that stops between its two renames leaves latest.previous, which load reads for
    latest; run_checkpoints used to miss it, so `rlf resume RUN` went on from the older final
    (then deleted the further latest.previous with its next save of latest) and a load of that
    final into RUN was not refused."""
    assert main(["train", "q-learning", "FrozenLake-v1", "--steps", "200", "--runs-dir", str(tmp_path), "--quiet"]) == 0
    (run_dir,) = list(tmp_path.iterdir())
    checkpoints = run_dir / "checkpoints"
    rlfoundry.load(checkpoints / "final", quiet=True).learn(100).save(checkpoints / "latest")
    (checkpoints / "latest").rename(checkpoints / "latest.previous")  # the state after the first rename
    with pytest.raises(ConfigError, match="final \\(step 200\\) is behind .*latest \\(step 300\\)"):
        rlfoundry.load(checkpoints / "final", run_dir=run_dir, quiet=True)
    capsys.readouterr()
    assert main(["resume", str(run_dir), "--steps", "100", "--quiet"]) == 0
    assert rlfoundry.load(checkpoints / "final").steps == 400


def test_rlf_resume_from_a_checkpoint_behind_its_run_goes_on_in_a_new_run_directory(tmp_path, capsys):
    """Going on from `best` inside its run directory would replace the run's further `final` and
    send progress.csv back in time: that continuation gets its own run directory."""
    root = tmp_path / "runs"
    assert main(["train", "q-learning", "FrozenLake-v1", "--steps", "300", "--eval-every", "100",
                 "--eval-episodes", "2", "--runs-dir", str(root), "--quiet"]) == 0
    (run_dir,) = list(root.iterdir())
    best, final = run_dir / "checkpoints" / "best", run_dir / "checkpoints" / "final"
    assert load_checkpoint(best).counters["steps"] < 300, "the test needs a best behind the final checkpoint"
    final_bytes = {file.name: file.read_bytes() for file in final.iterdir() if file.is_file()}
    progress = (run_dir / "progress.csv").read_text()
    capsys.readouterr()

    assert main(["resume", str(best), "--steps", "50", "--runs-dir", str(root), "--quiet"]) == 0
    assert "is behind" in capsys.readouterr().out
    assert {file.name: file.read_bytes() for file in final.iterdir() if file.is_file()} == final_bytes
    assert (run_dir / "progress.csv").read_text() == progress
    (branch,) = [directory for directory in root.iterdir() if directory != run_dir]
    assert load_checkpoint(branch / "checkpoints" / "final").counters["steps"] == load_checkpoint(best).counters["steps"] + 50
    recorded = json.loads((branch / "config.json").read_text())
    assert (recorded["algorithm"], recorded["env_id"], recorded["resumed_from"]) == ("q-learning", "FrozenLake-v1", str(best))
    assert recorded["resumed_at_step"] == load_checkpoint(best).counters["steps"]

    # The run's own furthest checkpoint goes on in place.
    assert main(["resume", str(final), "--steps", "50", "--runs-dir", str(root), "--quiet"]) == 0
    assert load_checkpoint(final).counters["steps"] == 350
    assert len(list(root.iterdir())) == 2


def logged_steps(run_dir):
    """The steps of progress.csv's and evaluations.csv's rows, and of TensorBoard's points per tag."""
    steps = {}
    for name in ("progress.csv", "evaluations.csv"):
        with open(run_dir / name, newline="") as handle:
            steps[name] = [int(float(row["step"])) for row in csv.DictReader(handle)]
    events = EventAccumulator(str(run_dir))
    events.Reload()
    for tag in events.Tags()["scalars"]:
        steps[tag] = [event.step for event in events.Scalars(tag)]
    return steps


def test_rlf_resume_after_a_crash_drops_the_logs_of_the_steps_it_trains_again(tmp_path, capsys):
    """A run that crashed after its last `latest` logged steps that `rlf resume` trains again:
    those rows and points belong to the lost steps and go, so that every log moves forward in
    time, and evaluations.csv ends as the uninterrupted run's."""
    options = ["--checkpoint-every", "150", "--eval-every", "50", "--eval-episodes", "2", "--quiet"]
    assert main(["train", "q-learning", "FrozenLake-v1", "--steps", "400", "--runs-dir", str(tmp_path / "straight"), *options]) == 0
    assert main(["train", "q-learning", "FrozenLake-v1", "--steps", "380", "--runs-dir", str(tmp_path / "crashed"), *options]) == 0
    (straight,), (crashed,) = (list((tmp_path / name).iterdir()) for name in ("straight", "crashed"))
    shutil.rmtree(crashed / "checkpoints" / "final")  # the crash came before the final checkpoint
    assert load_checkpoint(crashed / "checkpoints" / "latest").counters["steps"] == 300
    assert max(logged_steps(crashed)["evaluations.csv"]) == 350, "the test needs logs past the latest checkpoint"

    assert main(["resume", str(crashed), "--steps", "100", *options]) == 0
    steps = logged_steps(crashed)
    for name, logged in steps.items():
        assert logged == sorted(set(logged)), f"{name} goes back in time: {logged}"
    assert steps["evaluations.csv"] == steps["eval/mean_return"] == [50, 100, 150, 200, 250, 300, 350, 400]
    assert (crashed / "evaluations.csv").read_text() == (straight / "evaluations.csv").read_text()
    assert_same_checkpoints(crashed / "checkpoints" / "final", straight / "checkpoints" / "final")


def test_a_run_resumed_without_evaluation_still_drops_the_evaluations_of_the_steps_it_trains_again(tmp_path):
    """Loaded from a crashed run's `latest` into its directory without `evaluation=`, the model
    evaluates nothing, but the rows of evaluations.csv past its step belong to lost steps all the
    same (TensorBoard hides their eval/* points): they go, as progress.csv's do."""
    evaluation = rlfoundry.PeriodicEvaluation(every=50, episodes=2)
    rlfoundry.QLearning("FrozenLake-v1", run_dir=tmp_path, checkpoint_every=150, evaluation=evaluation, quiet=True).learn(380)
    shutil.rmtree(tmp_path / "checkpoints" / "final")  # the crash came before the final checkpoint
    assert max(logged_steps(tmp_path)["evaluations.csv"]) == 350, "the test needs logs past the latest checkpoint"

    rlfoundry.load(tmp_path / "checkpoints" / "latest", run_dir=tmp_path, quiet=True).learn(100)
    steps = logged_steps(tmp_path)
    assert steps["evaluations.csv"] == steps["eval/mean_return"] == [50, 100, 150, 200, 250, 300]
    assert steps["progress.csv"][-1] == 400
