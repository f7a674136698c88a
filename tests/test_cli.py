"""The `rlf` command line: a complete run directory, and one-line errors with exit status 2."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rlfoundry.cli import main


def run_cli(capsys, *argv):
    status = main(list(argv))
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def only_run_dir(root: Path) -> Path:
    (run_dir,) = list(root.iterdir())
    return run_dir


def test_train_writes_a_complete_run_directory(tmp_path, capsys):
    status, out, err = run_cli(
        capsys, "train", "q-learning", "rlfoundry/Chain-v0", "--steps", "300", "--runs-dir", str(tmp_path), "--quiet"
    )
    assert status == 0, err
    run_dir = only_run_dir(tmp_path)
    assert run_dir.name.startswith("q-learning-rlfoundry-Chain-v0-s0-")
    names = {path.name for path in run_dir.iterdir()}
    assert {"config.json", "progress.csv", "learning_curve.png", "checkpoints"} <= names
    assert any(name.startswith("events.out.tfevents") for name in names)
    assert (run_dir / "checkpoints" / "final" / "manifest.json").is_file()
    config = json.loads((run_dir / "config.json").read_text())
    assert config["algorithm"] == "q-learning" and config["total_steps"] == 300
    assert config["config"]["learning_rate"] == 0.5  # from the preset
    with open(run_dir / "progress.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert rows[-1]["step"] == "300"
    assert {"rollout/episode_return", "time/steps_per_second", "train/epsilon"} <= set(rows[-1])
    assert "greedy path (2 steps, return 1): 0 -> 1 -> 2" in out
    assert f"run directory: {run_dir}" in out
    assert "evaluation: mean return 1.00" in out


def test_overrides_and_eval_and_plot(tmp_path, capsys):
    status, _, err = run_cli(
        capsys, "train", "sarsa", "FrozenLake-v1", "--steps", "400", "--runs-dir", str(tmp_path), "--quiet",
        "--set", "learning_rate=0.25", "--set", "tie_break=first", "--seed", "3",
    )
    assert status == 0, err
    run_dir = only_run_dir(tmp_path)
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert (config["learning_rate"], config["tie_break"], config["seed"]) == (0.25, "first", 3)
    status, out, _ = run_cli(capsys, "eval", str(run_dir / "checkpoints" / "final"), "--episodes", "4")
    assert status == 0 and "over 4 episodes" in out
    status, out, _ = run_cli(capsys, "plot", str(run_dir), "-o", str(tmp_path / "curve.png"))
    assert status == 0 and (tmp_path / "curve.png").stat().st_size > 1000


@pytest.mark.parametrize("steps", ["0", "-5"])
def test_train_refuses_a_step_count_below_one(tmp_path, capsys, steps):
    """--steps 0 used to read as 'not given' and train the preset's whole budget."""
    status, _, err = run_cli(capsys, "train", "q-learning", "CliffWalking-v1", "--steps", steps, "--runs-dir", str(tmp_path), "--quiet")
    assert status == 2 and f"--steps={steps} is out of range" in err
    assert not any(tmp_path.iterdir())


def test_step_counts_may_be_written_as_1e6_as_set_reads_them():
    """--steps 1e5 was refused by argparse's int while --set accepted 1e5 for an integer field."""
    from rlfoundry.cli import build_parser

    parser = build_parser()
    parsed = parser.parse_args(["train", "ppo", "CartPole-v1", "--steps", "1e5", "--eval-every", "2_000", "--checkpoint-every", "5E4"])
    assert (parsed.steps, parsed.eval_every, parsed.checkpoint_every) == (100_000, 2_000, 50_000)
    assert parser.parse_args(["resume", "RUN", "--steps", "2.5e3"]).steps == 2_500


def test_a_step_count_that_is_not_a_whole_number_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as stopped:
        main(["train", "ppo", "CartPole-v1", "--steps", "1.5"])
    assert stopped.value.code == 2 and "argument --steps: '1.5' is not a whole number" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "q-learnin", "CliffWalking-v1"], "unknown algorithm 'q-learnin'; did you mean q-learning"),
        (["train", "q-learning", "CliffWalkin-v1"], "unknown environment id 'CliffWalkin-v1'; did you mean CliffWalking-v1"),
        (["train", "q-learning", "CliffWalking-v1", "--set", "learnin_rate=0.1"], "did you mean learning_rate"),
        (["train", "q-learning", "CliffWalking-v1", "--set", "learning_rate=2"], "learning_rate=2.0 is out of range"),
        (["train", "q-learning", "CliffWalking-v1", "--set", "gamma=high"], "gamma expects a number, got 'high'"),
        (["train", "q-learning", "CliffWalking-v1", "--set", "seed=3"], "set the seed with --seed 3"),
        (["train", "q-learning", "FrozenLake-v1", "--env-kwarg", "is_slipery=false"],
         "unknown keyword argument of FrozenLake-v1 'is_slipery'; did you mean is_slippery"),
        (["train", "q-learning", "FrozenLake-v1", "--env-kwarg", "is_slippery=maybe"], "is_slippery expects true or false, got 'maybe'"),
        (["train", "q-learning", "FrozenLake-v1", "--env-kwarg", "is_slippery"], "--env-kwarg expects key=value, got 'is_slippery'"),
        (["train", "q-learning", "FrozenLake-v1", "--env-kwarg", "map_name=9x9"], "FrozenLake-v1 cannot be made with map_name='9x9': KeyError"),
        (["train", "dqn", "ALE/Freeway-v5", "--env-kwarg", "fire_on_reset=true"], "ALE/Freeway-v5 has no FIRE action"),
        # The ALE takes these, but the preprocessing's first reset failed on them (a traceback after the run directory).
        (["train", "dqn", "ALE/Pong-v5", "--env-kwarg", "obs_type=ram"], "ALE/Pong-v5 with obs_type='ram' observes"),
        (["train", "ppo", "ALE/Pong-v5", "--env-kwarg", "continuous=true"], "continuous=True acts with joystick arrays"),
        (["train", "sac", "HalfCheetah-v5", "--env-kwarg", "forward_reward_weight=fast"], "forward_reward_weight expects a number, got 'fast'"),
        (["train", "q-learning", "CartPole-v1"], "needs a Discrete observation space"),
        (["train", "q-learning", "CartPole-v1", "--checkpoint-every", "5"], "needs a Discrete observation space"),
        (["eval", "/no/such/checkpoint"], "no checkpoint at /no/such/checkpoint"),
        (["plot", "/no/such/run"], "has no progress.csv"),
        (["plot", "/no/such/run", "-o", "curves.txt"], "-o curves.txt: cannot draw a .txt file"),
        (["resume", "/no/such/run", "--steps", "10"], "no checkpoint at /no/such/run"),
        (["resume", "/no/such/run", "--steps", "0"], "--steps=0 is out of range"),
    ],
)
def test_user_errors_are_one_line_with_status_2(tmp_path, capsys, argv, message):
    if argv[0] == "train":
        argv = argv + ["--runs-dir", str(tmp_path), "--steps", "10", "--quiet"]
    status, _, err = run_cli(capsys, *argv)
    assert status == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    if argv[0] == "train":
        assert not any(tmp_path.iterdir()), "a failed command must not leave a run directory"


def test_env_kwargs_are_recorded_and_rebuild_the_env_for_eval_and_resume(tmp_path, capsys):
    status, out, err = run_cli(
        capsys, "train", "q-learning", "FrozenLake-v1", "--steps", "200", "--runs-dir", str(tmp_path), "--quiet",
        "--env-kwarg", "map_name=8x8", "--env-kwarg", "is-slippery=false",
    )
    assert status == 0, err
    run_dir = only_run_dir(tmp_path)
    assert json.loads((run_dir / "config.json").read_text())["env_kwargs"] == {"map_name": "8x8", "is_slippery": False}
    grid = [line.split() for line in out.splitlines() if line and set(line) <= set(".HG<>v^ ")]
    assert [len(row) for row in grid] == [8] * 8  # the greedy path is drawn on the 8 x 8 map
    status, out, err = run_cli(capsys, "eval", str(run_dir), "--episodes", "2")
    assert status == 0 and "q-learning on FrozenLake-v1(is_slippery=False, map_name='8x8'): mean return" in out, err
    # --env-kwarg changes the recorded keyword arguments, or gives --env's alone.
    status, out, err = run_cli(capsys, "eval", str(run_dir), "--episodes", "2", "--env-kwarg", "is_slippery=true")
    assert status == 0 and "q-learning on FrozenLake-v1(is_slippery=True, map_name='8x8'): mean return" in out, err
    status, out, err = run_cli(capsys, "eval", str(run_dir), "--episodes", "2", "--env", "FrozenLake-v1", "--env-kwarg", "map_name=8x8")
    assert status == 0 and "q-learning on FrozenLake-v1(map_name='8x8'): mean return" in out, err
    status, out, err = run_cli(capsys, "eval", str(run_dir), "--env-kwarg", "is_slipery=true")
    assert status == 2 and len(err.strip().splitlines()) == 1 and "is_slippery" in err and out == ""
    status, _, err = run_cli(capsys, "resume", str(run_dir), "--steps", "100", "--quiet")
    assert status == 0, err
    import rlfoundry

    resumed = rlfoundry.load(run_dir / "checkpoints" / "final")
    assert resumed.steps == 300 and resumed.q_table.shape == (64, 4)
    assert resumed.training_env.rebuild_source == rlfoundry.RegisteredEnv("FrozenLake-v1", {"map_name": "8x8", "is_slippery": False})


def test_eval_and_resume_of_a_model_its_env_id_does_not_rebuild_ask_for_the_env(tmp_path, capsys):
    import gymnasium as gym

    import rlfoundry

    doubled = gym.wrappers.TransformReward(gym.make("FrozenLake-v1"), lambda reward: 2 * reward)
    rlfoundry.QLearning(doubled, quiet=True).learn(10).save(tmp_path / "q")
    status, _, err = run_cli(capsys, "eval", str(tmp_path / "q"))
    assert status == 2 and len(err.strip().splitlines()) == 1
    assert "made from FrozenLake-v1 with wrappers or keyword arguments" in err and "with --env ENV_ID" in err
    status, _, err = run_cli(capsys, "resume", str(tmp_path / "q"), "--steps", "10", "--runs-dir", str(tmp_path / "runs"))
    assert status == 2 and "resume" in err and "rlfoundry.load(path, env=...)" in err
    assert not (tmp_path / "runs").exists()
    status, out, _ = run_cli(capsys, "eval", str(tmp_path / "q"), "--env", "FrozenLake-v1", "--episodes", "2")
    assert status == 0 and "over 2 episodes" in out


def test_an_unwritable_runs_directory_is_one_line(tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    status, _, err = run_cli(capsys, "train", "q-learning", "FrozenLake-v1", "--steps", "10", "--runs-dir", str(blocker / "runs"), "--quiet")
    assert status == 1
    assert str(blocker) in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_resume_continues_the_run_exactly_in_its_directory(tmp_path, capsys):
    """300 steps, then `rlf resume RUN_DIR --steps 300`, equals 600 steps straight: same Q table,
    one progress.csv with every row of both calls."""
    status, _, err = run_cli(capsys, "train", "q-learning", "FrozenLake-v1", "--steps", "300", "--runs-dir", str(tmp_path / "halves"), "--quiet")
    assert status == 0, err
    run_dir = only_run_dir(tmp_path / "halves")
    status, out, err = run_cli(capsys, "resume", str(run_dir), "--steps", "300", "--quiet")
    assert status == 0, err
    assert f"run directory: {run_dir}" in out and "evaluation: mean return" in out
    status, _, err = run_cli(capsys, "train", "q-learning", "FrozenLake-v1", "--steps", "600", "--runs-dir", str(tmp_path / "straight"), "--quiet")
    assert status == 0, err
    import rlfoundry

    halves = rlfoundry.load(run_dir / "checkpoints" / "final")
    straight = rlfoundry.load(only_run_dir(tmp_path / "straight") / "checkpoints" / "final")
    assert halves.steps == straight.steps == 600
    assert (halves.q_table == straight.q_table).all()
    with open(run_dir / "progress.csv") as handle:
        steps = [int(row["step"]) for row in csv.DictReader(handle)]
    assert steps == sorted(steps) and steps[0] <= 300 < steps[-1] == 600


def test_resume_goes_on_evaluating_and_checkpointing_as_the_run_did(tmp_path, capsys):
    """--eval-every, --eval-episodes and --checkpoint-every default to what the run recorded in
    its config.json; flags given still win."""
    import rlfoundry

    status, _, err = run_cli(capsys, "train", "q-learning", "FrozenLake-v1", "--steps", "300", "--eval-every", "100",
                             "--eval-episodes", "3", "--checkpoint-every", "150", "--runs-dir", str(tmp_path), "--quiet")
    assert status == 0, err
    run_dir = only_run_dir(tmp_path)
    recorded = json.loads((run_dir / "config.json").read_text())
    assert recorded["checkpoint_every"] == 150 and recorded["periodic_evaluation"]["every"] == 100
    status, out, err = run_cli(capsys, "resume", str(run_dir), "--steps", "200")
    assert status == 0, err
    assert f"as the run did ({run_dir / 'config.json'}): --eval-every 100 --eval-episodes 3 --checkpoint-every 150" in out
    rows = csv_rows(run_dir / "evaluations.csv")
    assert [int(row["step"]) for row in rows] == [100, 200, 300, 400, 500]
    assert {int(row["episodes"]) for row in rows} == {3}
    # The summary names the run's best, from all its evaluations: the one checkpoints/best holds.
    best = max(rows, key=lambda row: float(row["mean_return"]))
    assert f"best periodic evaluation of the run: mean return {float(best['mean_return']):.2f}" in out
    assert f"at step {best['step']} (checkpoints/best)" in out
    assert rlfoundry.load(run_dir / "checkpoints" / "best").steps == int(best["step"])
    assert rlfoundry.load(run_dir / "checkpoints" / "latest").steps == 450
    status, out, err = run_cli(capsys, "resume", str(run_dir), "--steps", "100", "--eval-every", "50")
    assert status == 0, err
    assert "--eval-every" not in out and f"as the run did ({run_dir / 'config.json'}): --checkpoint-every 150" in out
    rows = csv_rows(run_dir / "evaluations.csv")
    assert [int(row["step"]) for row in rows][-2:] == [550, 600] and int(rows[-1]["episodes"]) == 20


def test_eval_of_a_run_directory_plays_its_furthest_checkpoint(tmp_path, capsys):
    status, _, err = run_cli(capsys, "train", "q-learning", "FrozenLake-v1", "--steps", "100", "--runs-dir", str(tmp_path), "--quiet")
    assert status == 0, err
    run_dir = only_run_dir(tmp_path)
    status, from_run, err = run_cli(capsys, "eval", str(run_dir), "--episodes", "3")
    assert status == 0, err
    assert f"checkpoint: {run_dir / 'checkpoints' / 'final'}" in from_run
    status, from_checkpoint, err = run_cli(capsys, "eval", str(run_dir / "checkpoints" / "final"), "--episodes", "3")
    assert status == 0, err
    assert from_run.splitlines()[1:] == from_checkpoint.splitlines()
    # An env the model cannot play (64 states, not 16): the error alone, no checkpoint line before it.
    status, out, err = run_cli(capsys, "eval", str(run_dir), "--env", "FrozenLake8x8-v1")
    assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, (out, err)


def test_resume_from_inside_a_checkpoint_directory_continues_its_run(tmp_path, capsys, monkeypatch):
    status, _, err = run_cli(capsys, "train", "q-learning", "FrozenLake-v1", "--steps", "100", "--runs-dir", str(tmp_path), "--quiet")
    assert status == 0, err
    run_dir = only_run_dir(tmp_path)
    monkeypatch.chdir(run_dir / "checkpoints" / "final")
    status, out, err = run_cli(capsys, "resume", ".", "--steps", "100", "--quiet")
    assert status == 0, err
    assert f"run directory: {run_dir.resolve()}" in out
    assert not Path("runs").exists(), "no new run directory may be made inside the checkpoint"
    import rlfoundry

    assert rlfoundry.load(run_dir / "checkpoints" / "final").steps == 200


def test_resume_of_a_checkpoint_outside_a_run_directory_makes_a_new_one(tmp_path, capsys):
    import rlfoundry

    rlfoundry.QLearning("FrozenLake-v1", quiet=True).learn(100).save(tmp_path / "saved")
    status, out, err = run_cli(capsys, "resume", str(tmp_path / "saved"), "--steps", "100", "--runs-dir", str(tmp_path / "runs"), "--quiet")
    assert status == 0, err
    run_dir = only_run_dir(tmp_path / "runs")
    assert run_dir.name.startswith("q-learning-FrozenLake-v1-s0-") and f"run directory: {run_dir}" in out
    assert rlfoundry.load(run_dir / "checkpoints" / "final").steps == 200


def test_a_run_directory_taken_meanwhile_is_not_written_into(tmp_path):
    """`rlf train` names its directory before the model accepts it and creates it only after: a
    command that took the name in between keeps its directory to itself."""
    import rlfoundry
    from rlfoundry.cli import UsageError, write_run_config

    (tmp_path / "taken").mkdir()
    message = f"{tmp_path / 'taken'} was created by another command meanwhile: run this one again"
    with pytest.raises(UsageError, match=re.escape(message)):
        write_run_config(tmp_path / "taken", rlfoundry.QLearning("FrozenLake-v1"), total_steps=10)
    assert not any((tmp_path / "taken").iterdir())


def test_list_shows_algorithms_and_presets(capsys):
    status, out, _ = run_cli(capsys, "list")
    assert status == 0
    assert "q-learning" in out and "CliffWalking-v1" in out and "sarsa" in out
    descriptions = [line for line in out.splitlines() if not line.lstrip().startswith("presets:")]
    assert all(line.rstrip().endswith(".") for line in descriptions), "each description is a whole sentence"


def test_list_reads_its_descriptions_from_the_source_under_python_OO(capsys):
    """python -OO strips docstrings, which `rlf list` printed (it raised AttributeError on None)."""
    _, out, _ = run_cli(capsys, "list")
    repository = Path(__file__).resolve().parents[1]  # -m runs this checkout's package
    stripped = subprocess.run(
        [sys.executable, "-OO", "-m", "rlfoundry.cli", "list"], capture_output=True, text=True, cwd=repository
    )
    assert stripped.returncode == 0, stripped.stderr
    assert stripped.stdout == out


def test_a_reader_that_leaves_stops_rlf_quietly():
    """`rlf list | head -1`: the pipe's reader is gone before rlf writes (here: before it has
    imported torch). It printed `rlf list: error: [Errno 32] Broken pipe`."""
    repository = Path(__file__).resolve().parents[1]
    process = subprocess.Popen(
        [sys.executable, "-m", "rlfoundry.cli", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=repository
    )
    process.stdout.close()
    error = process.stderr.read()
    assert process.wait() == 141
    assert error == b""


def test_console_script_runs_without_a_traceback(tmp_path):
    executable = Path(sys.executable).with_name("rlf")
    result = subprocess.run([str(executable), "train", "nope", "CartPole-v1"], capture_output=True, text=True)
    assert result.returncode == 2
    assert result.stderr.strip() == "rlf train: error: unknown algorithm 'nope'"


def test_train_and_eval_end_on_an_env_without_a_time_limit(tmp_path, capsys):
    """CliffWalking-v1 has no time limit and 3000 steps leave a greedy policy that walks into a
    wall: its periodic and final evaluations used to loop forever, they are now cut at 10,000 steps."""
    import rlfoundry

    status, out, err = run_cli(
        capsys, "train", "q-learning", "CliffWalking-v1", "--steps", "3000", "--eval-every", "1500",
        "--eval-episodes", "2", "--runs-dir", str(tmp_path), "--quiet",
    )
    assert status == 0, err
    assert "evaluation: mean return -10000.00 +/- 0.00 over 2 episodes (2 cut at the step cap, counted with their return so far)" in out
    final = only_run_dir(tmp_path) / "checkpoints" / "final"
    status, out, err = run_cli(capsys, "eval", str(final), "--episodes", "2", "--max-episode-steps", "25")
    assert status == 0, err
    played = rlfoundry.evaluate(rlfoundry.load(final), n_episodes=2, seed=0, max_episode_steps=25)
    assert played.lengths.tolist() == [25, 25] and played.cut.all()
    assert f"q-learning on CliffWalking-v1: {played}\n" in out
    for wrong in ("0", "-3"):
        status, _, err = run_cli(capsys, "eval", str(final), "--max-episode-steps", wrong)
        assert status == 2 and f"--max-episode-steps={wrong} is out of range" in err


def test_resume_of_a_run_without_config_json_says_its_options_need_flags(tmp_path, capsys):
    """A run directory without config.json (a Python run of an older rlfoundry) has nothing to take
    its options from."""
    import rlfoundry

    rlfoundry.QLearning("FrozenLake-v1", run_dir=tmp_path / "run", quiet=True).learn(50)
    (tmp_path / "run" / "config.json").unlink()
    status, out, err = run_cli(capsys, "resume", str(tmp_path / "run"), "--steps", "50")
    assert status == 0, err
    assert f"{tmp_path / 'run'} has no config.json (a Python run of an rlfoundry that wrote none" in out
    status, out, err = run_cli(capsys, "resume", str(tmp_path / "run"), "--steps", "50", "--eval-every", "25")
    assert status == 0, err
    assert "has no config.json" not in out


def test_resume_and_eval_of_a_run_stopped_before_its_first_checkpoint_say_so(tmp_path, capsys):
    """Ctrl-C before the final checkpoint (and without --checkpoint-every) leaves a run directory
    with no final or latest: that was reported as the directory not being a complete checkpoint."""
    import rlfoundry

    def interrupt(status):
        if status.step >= 100:
            raise KeyboardInterrupt

    model = rlfoundry.QLearning(
        "FrozenLake-v1", run_dir=tmp_path, quiet=True, evaluation=rlfoundry.PeriodicEvaluation(every=50, episodes=1)
    )
    with pytest.raises(KeyboardInterrupt):
        model.learn(200, callback=interrupt)
    assert sorted(path.name for path in (tmp_path / "checkpoints").iterdir()) == ["best"]
    for command in (["resume", str(tmp_path), "--steps", "100"], ["eval", str(tmp_path)]):
        status, out, err = run_cli(capsys, *command)
        assert status == 2 and out == "", (out, err)
        assert f"{tmp_path} is a run directory without a final or latest checkpoint" in err
        assert f"its best policy is {tmp_path / 'checkpoints' / 'best'}" in err
