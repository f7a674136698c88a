"""A run directory's config.json: written alike by `rlf train`, `rlf resume` and a Python run, kept
by later learn() calls and resumed runs, read by `rlf plot --aggregate` and `rlf resume`."""

import csv
import json

import gymnasium as gym
import pytest

import rlfoundry
from rlfoundry.cli import main
from rlfoundry.run.config import ConfigError, config_to_dict

EVALUATION = dict(every=50, episodes=2)


def record_of(run_dir):
    return json.loads((run_dir / "config.json").read_text())


def cli_run(root, *flags):
    """The run directory of an `rlf train q-learning FrozenLake-v1` run under root."""
    assert main(["train", "q-learning", "FrozenLake-v1", "--runs-dir", str(root), "--quiet", *flags]) == 0
    (run_dir,) = list(root.iterdir())
    return run_dir


def test_a_python_run_records_what_rlf_train_and_resume_record(tmp_path, capsys):
    cli_record = record_of(cli_run(tmp_path / "cli", "--steps", "100", "--eval-every", "50", "--eval-episodes", "2"))
    run_dir = tmp_path / "python"
    model = rlfoundry.QLearning(
        "FrozenLake-v1", run_dir=run_dir, quiet=True, checkpoint_every=100, evaluation=rlfoundry.PeriodicEvaluation(**EVALUATION),
    )
    model.learn(150)
    record = record_of(run_dir)
    assert list(record) == list(cli_record)
    assert (record["algorithm"], record["env_id"], record["total_steps"], record["preset_source"]) == ("q-learning", "FrozenLake-v1", 150, None)
    assert record["config"] == config_to_dict(model.config)
    assert record["periodic_evaluation"] == cli_record["periodic_evaluation"] and record["checkpoint_every"] == 100

    # Later calls, and the run resumed in its directory, keep the record as it was.
    written = (run_dir / "config.json").read_bytes()
    model.learn(50)
    rlfoundry.load(run_dir / "checkpoints" / "final", run_dir=run_dir, quiet=True).learn(50)
    assert (run_dir / "config.json").read_bytes() == written

    # Resumed into a new directory: rlf resume's keys, naming the checkpoint and its step.
    assert main(["resume", str(run_dir / "checkpoints" / "best"), "--steps", "50", "--runs-dir", str(tmp_path / "cli"), "--quiet"]) == 0
    (cli_branch,) = [path for path in (tmp_path / "cli").iterdir() if "resumed_from" in record_of(path)]
    rlfoundry.load(run_dir / "checkpoints" / "best", run_dir=tmp_path / "branch", quiet=True).learn(50)
    branch = record_of(tmp_path / "branch")
    assert list(branch) == list(record_of(cli_branch))
    best_step = rlfoundry.load(run_dir / "checkpoints" / "best").steps
    assert (branch["resumed_from"], branch["resumed_at_step"], branch["total_steps"]) == (str(run_dir / "checkpoints" / "best"), best_step, 50)


def test_total_steps_is_what_the_first_learn_call_asked_for(tmp_path):
    """learn() rounds up to whole rollouts; the record keeps the steps asked, as `rlf train`
    records its --steps."""
    model = rlfoundry.PPO("CartPole-v1", run_dir=tmp_path, quiet=True, n_steps=64, batch_size=32, n_epochs=1).learn(100)
    assert model.steps > 100 and record_of(tmp_path)["total_steps"] == 100


def test_rlf_plot_aggregate_and_resume_work_on_python_runs(tmp_path, capsys):
    runs = [tmp_path / f"seed{seed}" for seed in (0, 1)]
    for seed, run_dir in enumerate(runs):
        rlfoundry.QLearning(
            "FrozenLake-v1", seed=seed, run_dir=run_dir, quiet=True, checkpoint_every=100,
            evaluation=rlfoundry.PeriodicEvaluation(**EVALUATION),
        ).learn(300)
    assert main(["plot", *map(str, runs), "--aggregate", "-o", str(tmp_path / "curves.png")]) == 0
    assert (tmp_path / "curves.png").stat().st_size > 0
    capsys.readouterr()
    assert main(["resume", str(runs[0]), "--steps", "100"]) == 0
    assert f"as the run did ({runs[0] / 'config.json'}): --eval-every 50 --eval-episodes 2 --checkpoint-every 100" in capsys.readouterr().out
    with open(runs[0] / "evaluations.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(row["step"]) for row in rows][-2:] == [350, 400] and {row["episodes"] for row in rows} == {"2"}


def test_rlf_resume_goes_on_with_a_python_runs_evaluation_as_it_was(tmp_path, capsys):
    """A Python run's evaluation may have an env, a seed, a step cap and sampled actions that no
    flag of rlf resume gives: resumed, it plays the episodes it played before, as in a run trained
    straight through, and rlf resume says so."""
    evaluation = rlfoundry.PeriodicEvaluation(
        every=50, episodes=3, env=rlfoundry.RegisteredEnv("FrozenLake-v1", {"is_slippery": False}), deterministic=False,
        seed=5, max_episode_steps=4,
    )
    for run_dir, steps in ((tmp_path / "straight", 300), (tmp_path / "resumed", 150)):
        rlfoundry.QLearning("FrozenLake-v1", run_dir=run_dir, quiet=True, evaluation=evaluation).learn(steps)
    assert main(["resume", str(tmp_path / "resumed"), "--steps", "150"]) == 0
    out = capsys.readouterr().out
    assert (
        f"as the run did ({tmp_path / 'resumed' / 'config.json'}): --eval-every 50 --eval-episodes 3, evaluating with "
        "env FrozenLake-v1(is_slippery=False), deterministic False, seed 5, max_episode_steps 4\n"
    ) in out
    # The summary's evaluation is rlf's own (greedy, on the training env), not the one at the last step.
    final = rlfoundry.load(tmp_path / "resumed" / "checkpoints" / "final")
    assert f"evaluation: {rlfoundry.evaluate(final, n_episodes=3, seed=10_000)}\n" in out
    assert (tmp_path / "resumed" / "evaluations.csv").read_text() == (tmp_path / "straight" / "evaluations.csv").read_text()
    assert record_of(tmp_path / "resumed")["periodic_evaluation"] == record_of(tmp_path / "straight")["periodic_evaluation"]


def test_an_evaluation_env_object_is_named_not_written(tmp_path, capsys):
    env = gym.make("FrozenLake-v1")
    rlfoundry.QLearning(
        "FrozenLake-v1", run_dir=tmp_path, quiet=True, evaluation=rlfoundry.PeriodicEvaluation(every=50, episodes=1, env=env)
    ).learn(50)
    assert record_of(tmp_path)["periodic_evaluation"]["env"] == f"a {type(env).__name__} (not an env id)"
    # rlf resume cannot go on evaluating there, and does not evaluate elsewhere unless told to.
    final = (tmp_path / "checkpoints" / "final" / "manifest.json").read_bytes()
    assert main(["resume", str(tmp_path), "--steps", "50", "--quiet"]) == 2
    assert f"the run evaluated on a {type(env).__name__}, which its config.json cannot hold: pass --eval-every N" in capsys.readouterr().err
    assert (tmp_path / "checkpoints" / "final" / "manifest.json").read_bytes() == final
    assert main(["resume", str(tmp_path), "--steps", "50", "--eval-every", "50", "--quiet"]) == 0


def test_a_record_that_is_not_json_stops_a_change_before_training(tmp_path):
    rlfoundry.QLearning("FrozenLake-v1", run_dir=tmp_path, quiet=True).learn(50)
    (tmp_path / "config.json").write_text("{")
    model = rlfoundry.load(tmp_path / "checkpoints" / "final", run_dir=tmp_path, quiet=True, learning_rate=0.2)
    with pytest.raises(ConfigError, match="config.json is not valid JSON"):
        model.learn(50)
    assert model.steps == 50 and (tmp_path / "config.json").read_text() == "{"


def test_rlf_resume_of_a_run_whose_record_is_not_json_gives_advice_that_works(tmp_path, capsys):
    """It advised passing --eval-every, --eval-episodes and --checkpoint-every, which still failed
    the same way: the record is read whatever the flags."""
    run_dir = cli_run(tmp_path, "--steps", "100")
    (run_dir / "config.json").write_text("{")
    final = (run_dir / "checkpoints" / "final" / "manifest.json").read_bytes()
    options = ["--eval-every", "50", "--eval-episodes", "2", "--checkpoint-every", "50"]
    assert main(["resume", str(run_dir), "--steps", "50", "--quiet", *options]) == 2
    assert "config.json is not valid JSON" in (error := capsys.readouterr().err) and "repair it or move it away" in error
    assert (run_dir / "checkpoints" / "final" / "manifest.json").read_bytes() == final
    (run_dir / "config.json").rename(tmp_path / "config.json.broken")  # as the error advises
    assert main(["resume", str(run_dir), "--steps", "50", "--quiet", *options]) == 0


def test_run_options_given_to_a_resume_in_the_directory_are_what_the_next_resume_takes(tmp_path, capsys):
    """They were not written back: the next `rlf resume` went on with the first call's options."""
    run_dir = cli_run(tmp_path, "--steps", "100", "--eval-every", "50", "--eval-episodes", "2", "--checkpoint-every", "100")
    assert main(["resume", str(run_dir), "--steps", "60", "--eval-every", "30", "--eval-episodes", "3", "--quiet"]) == 0
    record = record_of(run_dir)
    assert (record["periodic_evaluation"]["every"], record["periodic_evaluation"]["episodes"]) == (30, 3)
    assert record["checkpoint_every"] == 100  # not given anew: the run's, taken from the record
    capsys.readouterr()
    assert main(["resume", str(run_dir), "--steps", "60"]) == 0
    assert f"as the run did ({run_dir / 'config.json'}): --eval-every 30 --eval-episodes 3 --checkpoint-every 100" in capsys.readouterr().out
    # A resume without such options leaves the record as it was.
    written = (run_dir / "config.json").read_bytes()
    assert main(["resume", str(run_dir), "--steps", "30", "--quiet"]) == 0
    assert (run_dir / "config.json").read_bytes() == written
