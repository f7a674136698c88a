"""The `rlf` command line: train, resume, eval, plot, list.

Errors a user can fix (an unknown algorithm, env id or config key, a bad value, a missing or
corrupt checkpoint) print one line naming what was wrong and exit with status 2, no traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlfoundry.algorithms import ALGORITHMS
from rlfoundry.envs.spaces import SpaceError
from rlfoundry.envs.registry import RegisteredEnv, UnknownEnvironmentError, check_env_id, parse_env_kwargs
from rlfoundry.envs.vector import AutoresetModeError
from rlfoundry.presets import all_presets, load_preset
from rlfoundry.run.checkpoint import CheckpointError, NonFiniteError, checkpoint_steps, read_manifest, run_checkpoints
from rlfoundry.run.config import ConfigError, check_keys, class_summary, parse_overrides, unknown_name_message
from rlfoundry.run.evaluation import EVALUATION_SEED_OFFSET, PeriodicEvaluation
from rlfoundry.run.monitor import CsvLog, new_run_dir
from rlfoundry.run.plotting import (
    RunDirectoryError,
    plot_aggregated_curves,
    plot_learning_curves,
    require_something_to_plot,
)
from rlfoundry.run.record import read_run_record, record_run_options, recorded_evaluation_settings, write_run_record
from rlfoundry.run.training_env import unbuildable_env_message

USER_ERRORS = (
    ConfigError,
    UnknownEnvironmentError,
    AutoresetModeError,
    SpaceError,
    CheckpointError,
    NonFiniteError,
    RunDirectoryError,
)
DEFAULT_STEPS = 100_000
DEFAULT_EVALUATION_EPISODES = 20


class UsageError(Exception):
    """A command-line mistake: printed as one line, exit status 2."""


def step_count(text: str) -> int:
    """An argparse type for counts of steps: a whole number, also written 1e6 or 1_000_000 (as --set reads them)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if not number.is_integer():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number")
    return int(number)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rlf", description="Train, evaluate and plot rlfoundry agents.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser("train", help="train ALGO on ENV and write a run directory")
    train.add_argument("algorithm", metavar="ALGO", help="an algorithm name (see `rlf list`)")
    train.add_argument("env_id", metavar="ENV", help="a Gymnasium environment id, e.g. CliffWalking-v1")
    train.add_argument("--steps", type=step_count, help="environment steps (default: the preset's, else 100000)")
    train.add_argument("--seed", type=int, default=0, help="seed for python, numpy, torch and the envs")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field (repeatable), e.g. --set gamma=0.98")
    train.add_argument("--env-kwarg", dest="env_kwargs", action="append", default=[], metavar="KEY=VALUE",
                       help="a keyword argument to make the env with (repeatable; recorded, so eval and resume "
                            "rebuild the same env), e.g. --env-kwarg max_episode_steps=1000, or for an ALE id "
                            "--env-kwarg repeat_action_probability=0")
    train.add_argument("--no-preset", action="store_true", help="ignore the tuned preset for this env")
    train.add_argument("--runs-dir", default="runs", help="where run directories go (default: runs/)")
    train.add_argument("--eval-episodes", type=int, default=DEFAULT_EVALUATION_EPISODES,
                       help=f"evaluation episodes after training (and at each --eval-every; default: {DEFAULT_EVALUATION_EPISODES})")
    train.add_argument("--eval-every", type=step_count, metavar="N",
                       help="also evaluate every N env steps, logging to RUN_DIR/evaluations.csv and keeping the best "
                            "policy as RUN_DIR/checkpoints/best")
    train.add_argument("--stop-at-return", type=float, metavar="R",
                       help="with --eval-every: stop at the first evaluation whose mean return is at least R")
    train.add_argument("--checkpoint-every", type=step_count, metavar="N",
                       help="also write RUN_DIR/checkpoints/latest every N env steps (for `rlf resume` after a crash)")
    train.add_argument("--quiet", action="store_true", help="print only the final summary")

    resume = commands.add_parser("resume", help="train a saved model further, in its run directory")
    resume.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a run directory (its furthest checkpoint, final or latest, is used) or a checkpoint directory")
    resume.add_argument("--steps", type=step_count, required=True, help="more environment steps to train")
    resume.add_argument("--runs-dir", default="runs",
                        help="where a new run directory goes when CHECKPOINT is not inside one (default: runs/)")
    resume.add_argument("--eval-episodes", type=int,
                        help="evaluation episodes after training (and at each --eval-every; default: the run's, else "
                             f"{DEFAULT_EVALUATION_EPISODES})")
    resume.add_argument("--eval-every", type=step_count, metavar="N",
                        help="also evaluate every N env steps (default: the run's); a run directory's checkpoints/best "
                             "is replaced only by a better one")
    resume.add_argument("--stop-at-return", type=float, metavar="R",
                        help="with --eval-every: stop at the first evaluation whose mean return is at least R")
    resume.add_argument("--checkpoint-every", type=step_count, metavar="N",
                        help="also write checkpoints/latest every N env steps (default: the run's)")
    resume.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="change a config field that leaves the saved state as it is (repeatable), e.g. --set "
                             "learning_rate=1e-4; recorded in the run's config.json")
    resume.add_argument("--device", help="load onto this device: cpu, cuda or auto (default: the one the model trained on)")
    resume.add_argument("--no-memory-check", dest="check_replay_memory", action="store_const", const=False,
                        help="load a replay buffer that the memory check would refuse (check_replay_memory=False)")
    resume.add_argument("--quiet", action="store_true", help="print only the final summary")

    evaluate = commands.add_parser("eval", help="evaluate a saved checkpoint")
    evaluate.add_argument("checkpoint", metavar="CHECKPOINT",
                          help="a checkpoint directory or a run directory (its furthest checkpoint, final or latest, is used)")
    evaluate.add_argument("--episodes", type=int, default=20, help="number of episodes (default 20)")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the evaluation envs")
    evaluate.add_argument("--device", help="load onto this device: cpu, cuda or auto (default: the one the model trained on)")
    evaluate.add_argument("--env", dest="env_id", help="evaluate on this env id instead of the training one")
    evaluate.add_argument("--env-kwarg", dest="env_kwargs", action="append", default=[], metavar="KEY=VALUE",
                          help="make the env with this keyword argument (repeatable): over those the model's env was "
                               "made with, or alone with --env; e.g. --env-kwarg max_episode_steps=1000")
    evaluate.add_argument("--stochastic", action="store_true", help="sample actions instead of acting greedily")
    evaluate.add_argument("--max-episode-steps", type=step_count, metavar="K",
                          help="cut each episode after K steps, counting its return so far (default: the env's time "
                               "limit, else 10000)")
    evaluate.add_argument("--video", metavar="PATH.gif",
                          help="also record one episode (seeded with --seed) as an animated GIF")
    evaluate.add_argument("--video-steps", type=step_count, metavar="K",
                          help="cut the recorded episode after K steps (its frames are held in memory; default: "
                               "--max-episode-steps, else the env's time limit, else 1000)")

    plot = commands.add_parser("plot", help="plot learning curves of run directories")
    plot.add_argument("run_dirs", metavar="RUN_DIR", nargs="+", help="run directories written by `rlf train`")
    plot.add_argument("-o", "--output", help="PNG file (default: RUN_DIR/learning_curve.png for one run, "
                      "learning_curves.png for several or with --aggregate)")
    plot.add_argument("--aggregate", action="store_true",
                      help="one line per algorithm and env: the mean over its runs (seeds), with their min-max band")

    commands.add_parser("list", help="list algorithms and their presets")
    return parser


def main(argv: list[str] | None = None) -> int:
    arguments = build_parser().parse_args(argv)
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        # MuJoCo picks its OpenGL platform when first imported: without a display, rendering a
        # video needs EGL's off-screen one, chosen before any env is made.
        os.environ.setdefault("MUJOCO_GL", "egl")
    handlers = {"train": train, "resume": resume, "eval": evaluate_checkpoint, "plot": plot, "list": list_algorithms}
    try:
        return handlers[arguments.command](arguments)
    except (UsageError, *USER_ERRORS) as error:
        print(f"rlf {arguments.command}: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rlf {arguments.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader of stdout left (`rlf list | head -1`): stop quietly as other command-line tools
        # do, with stdout pointed at /dev/null so the interpreter's last flush cannot fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except OSError as error:
        # A path that cannot be made or written (a read-only or missing place): say which, in one line.
        print(f"rlf {arguments.command}: error: {error}", file=sys.stderr)
        return 1


def algorithm_class(name: str):
    normalised = name.lower().replace("_", "-")
    if normalised not in ALGORITHMS:
        raise UsageError(unknown_name_message("algorithm", name, ALGORITHMS))
    return ALGORITHMS[normalised]


def train(arguments: argparse.Namespace) -> int:
    cls = algorithm_class(arguments.algorithm)
    env = RegisteredEnv(arguments.env_id, parse_env_kwargs(arguments.env_id, arguments.env_kwargs))
    preset = None if arguments.no_preset else load_preset(cls.name, arguments.env_id)
    config: dict[str, Any] = dict(preset.config) if preset else {}
    check_keys(cls.Config, config)
    overrides = parse_overrides(cls.Config, arguments.overrides)
    if "seed" in overrides:
        # --seed also names the run directory and seeds the final evaluation: one place sets it.
        raise UsageError(f"set the seed with --seed {overrides['seed']}, not with --set seed=...")
    config.update(overrides)
    config["seed"] = arguments.seed
    steps = arguments.steps if arguments.steps is not None else (preset.steps if preset else DEFAULT_STEPS)
    if steps < 1:
        raise UsageError(f"--steps={steps} is out of range: allowed integers >= 1")
    # The model checks its config, spaces and run directory before any file is written.
    run_dir = new_run_dir(cls.name, arguments.env_id, arguments.seed, arguments.runs_dir)
    model = cls(
        env, run_dir=run_dir, quiet=arguments.quiet, checkpoint_every=arguments.checkpoint_every,
        evaluation=periodic_evaluation(arguments), **config,
    )
    write_run_config(run_dir, model, total_steps=steps, preset_source=preset.source if preset else None)
    if preset and not arguments.quiet:
        print(f"preset {cls.name} / {arguments.env_id}: {preset.source}")
    return learn_and_report(model, steps, arguments.eval_episodes, run_dir)


def write_run_config(run_dir: Path, model: Any, **details: Any) -> None:
    """Create the new run directory (from new_run_dir) with its config.json (rlfoundry.run.record),
    `details` saying how the command made the run: total_steps (--steps), and preset_source or
    resumed_from and resumed_at_step."""
    try:
        run_dir.mkdir(parents=True)
    except FileExistsError:
        raise UsageError(f"{run_dir} was created by another command meanwhile: run this one again") from None
    write_run_record(run_dir, model, **details)


def periodic_evaluation(arguments: argparse.Namespace, settings: Mapping[str, Any] | None = None) -> PeriodicEvaluation | None:
    """The PeriodicEvaluation that --eval-every, --eval-episodes and --stop-at-return ask for, or
    None; `settings` are its other fields (those of the run's, which rlf resume goes on with)."""
    if arguments.eval_episodes < 1:
        raise UsageError(f"--eval-episodes={arguments.eval_episodes} is out of range: allowed integers >= 1")
    if arguments.eval_every is None:
        if arguments.stop_at_return is not None:
            raise UsageError("--stop-at-return needs --eval-every N: the return it stops at is an evaluation's")
        return None
    if arguments.eval_every < 1:
        raise UsageError(f"--eval-every={arguments.eval_every} is out of range: allowed integers >= 1")
    return PeriodicEvaluation(
        every=arguments.eval_every, episodes=arguments.eval_episodes, stop_at=arguments.stop_at_return, **(settings or {})
    )


def take_run_options(arguments: argparse.Namespace, source_run: Path | None, notes: list[str]) -> dict[str, Any]:
    """Fill in the --eval-every, --eval-episodes and --checkpoint-every that `rlf resume` was not
    given from the config.json of the run the checkpoint comes from, so that a resumed run goes
    on evaluating and writing `latest` as it did (--stop-at-return is not taken: a run that
    stopped there would stop again at its first evaluation), and adds to `notes` what it took.
    Returns the other settings of the evaluation it took (a Python run's env, seed, step cap,
    sampled actions: recorded_evaluation_settings), so that the means go on comparing like for like."""
    recorded_path = None if source_run is None else source_run / "config.json"
    # Read whatever the flags: a record that is not JSON must be repaired or moved away (ConfigError).
    recorded = read_run_record(source_run) if source_run is not None and recorded_path is not None and recorded_path.is_file() else {}
    asked = arguments.eval_every is not None or arguments.checkpoint_every is not None
    if recorded_path is not None and not recorded_path.is_file() and not asked and not arguments.quiet:
        notes.append(
            f"{source_run} has no config.json (a Python run of an rlfoundry that wrote none, or it was removed): "
            "any periodic evaluation or checkpoint_every it had goes on only with --eval-every or --checkpoint-every"
        )
    taken = []
    settings: dict[str, Any] = {}
    evaluation = recorded.get("periodic_evaluation")
    if evaluation and arguments.eval_every is None:
        settings = recorded_evaluation_settings(
            evaluation, "pass --eval-every N to evaluate on the training env instead, or resume from Python with "
            "rlfoundry.load(path, run_dir=..., evaluation=rlfoundry.PeriodicEvaluation(..., env=...))",
        )
        arguments.eval_every = evaluation["every"]
        taken.append(f"--eval-every {arguments.eval_every}")
        if arguments.eval_episodes is None:
            arguments.eval_episodes = evaluation["episodes"]
            taken.append(f"--eval-episodes {arguments.eval_episodes}")
    if recorded.get("checkpoint_every") and arguments.checkpoint_every is None:
        arguments.checkpoint_every = recorded["checkpoint_every"]
        taken.append(f"--checkpoint-every {arguments.checkpoint_every}")
    if arguments.eval_episodes is None:
        arguments.eval_episodes = DEFAULT_EVALUATION_EPISODES
    # What a Python run's evaluation did that no flag says (rlf train's evaluations do none of it).
    unlike_the_flags = [
        f"{name} {value}" for name, value in settings.items() if value != getattr(PeriodicEvaluation, name)
    ]
    if taken and not arguments.quiet:
        also = f", evaluating with {', '.join(unlike_the_flags)}" if unlike_the_flags else ""
        notes.append(f"as the run did ({recorded_path}): {' '.join(taken)}{also}")
    return settings


def best_evaluation_row(run_dir: Path) -> Mapping[str, float | str] | None:
    """The row of the run's evaluations.csv with the highest mean (the first of equal ones): the
    policy checkpoints/best holds, over every learn() call of the run, resumed ones too."""
    rows = CsvLog(run_dir / "evaluations.csv").rows if (run_dir / "evaluations.csv").is_file() else []
    return max(rows, key=lambda row: float(row["mean_return"]), default=None)


def shown(path: Path) -> Path:
    """`path` relative to the working directory where it lies below it (as `rlf train` names its
    run directories: `rlf resume` resolves them), else as it is (also where the working directory
    is gone: a checkpoint directory the run just replaced)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except (ValueError, OSError):
        return path


def learn_and_report(model: Any, steps: int, eval_episodes: int, run_dir: Path) -> int:
    """Train, then print the evaluation (and the greedy path of tabular models) and the run directory."""
    import rlfoundry

    target = model.steps + steps
    model.learn(steps)
    best = best_evaluation_row(run_dir)
    last = model.evaluations[-1] if model.evaluations else None
    plan = model.evaluation
    # Only a reached stop_at ends early: REINFORCE's and OffPolicyPG's learn() counts from the step
    # target of the calls before, so a resumed call may end short of model.steps + steps unstopped.
    stopped = plan is not None and plan.stop_at is not None and last is not None and last.result.mean >= plan.stop_at
    if model.steps < target and stopped and last is not None:
        print(f"stopped at step {model.steps} of {target}: the evaluation there reached --stop-at-return (mean {last.result.mean:.2f})")
    # Whether the periodic evaluations play this one's episodes: as many, greedy, on the training env
    # with its seed and time limit (a Python run's that rlf resume goes on with may play others).
    plays_these_episodes = plan is not None and (
        (plan.episodes, plan.env, plan.deterministic, plan.seed, plan.max_episode_steps) == (eval_episodes, None, True, None, None)
    )
    if last is not None and last.step == model.steps and plays_these_episodes:
        # --eval-every's evaluation at this step played these very episodes with the same policy:
        # an Atari evaluation can take minutes, so it is not played twice.
        result = last.result
    else:
        result = rlfoundry.evaluate(model, n_episodes=eval_episodes, seed=model.config.seed + EVALUATION_SEED_OFFSET)
    summary = getattr(model, "describe_policy", None)
    if summary is not None:
        print(summary())
    print(f"evaluation: {result}")
    if best is not None:
        print(
            f"best periodic evaluation of the run: mean return {float(best['mean_return']):.2f} +/- "
            f"{float(best['std_return']):.2f} over {best['episodes']} episodes at step {best['step']} (checkpoints/best)"
        )
    print(f"run directory: {shown(run_dir)}")
    return 0


def resume(arguments: argparse.Namespace) -> int:
    """Load a checkpoint and train it `--steps` more. Inside a run directory the run continues
    there (progress.csv and TensorBoard go on, the final checkpoint is replaced); a checkpoint
    elsewhere, or one behind its run's final or latest (best, say), gets a new run directory.
    Training continues exactly where it stopped when the env position was saved (see
    rlfoundry.envs.state); --set changes config fields that leave the saved state as it is."""
    import rlfoundry

    if arguments.steps < 1:
        raise UsageError(f"--steps={arguments.steps} is out of range: allowed integers >= 1")
    # Resolved, so that "." or "../final" inside a run directory still finds the run around it.
    path = Path(arguments.checkpoint).resolve()
    source_run = None  # the run directory the checkpoint belongs to
    # What the command takes and where it goes, said once the checkpoint has loaded: a refused
    # load (a fixed field, a buffer that does not fit) prints its one line of error alone.
    notes: list[str] = []
    if run_checkpoints(path):
        # The furthest one: a crashed run has only `latest`, a resumed one that crashed a newer `latest`.
        path, run_dir = max(run_checkpoints(path), key=checkpoint_steps), path
        source_run = run_dir
    elif path.parent.name == "checkpoints" and (path.parent.parent / "config.json").is_file():
        run_dir = source_run = path.parent.parent
        further = max(run_checkpoints(run_dir), key=checkpoint_steps, default=None)
        if further is not None and checkpoint_steps(further) > checkpoint_steps(path):
            # Going on from here in the run directory would replace the run's further final
            # checkpoint and take its logs back in time.
            notes.append(
                f"{path} (step {checkpoint_steps(path)}) is behind {further} (step {checkpoint_steps(further)}): "
                "continuing in a new run directory"
            )
            run_dir = None
    else:
        refuse_run_without_checkpoints(path)
        run_dir = None
    continues_run = run_dir is not None
    manifest = read_manifest(path)
    overrides = {}
    if arguments.overrides:
        overrides = parse_overrides(algorithm_class(manifest["algorithm"]).Config, arguments.overrides)
    if "device" in overrides:
        raise UsageError(f"load onto a device with --device {overrides['device']}, not with --set device=...")
    keeps_replay = hasattr(algorithm_class(manifest["algorithm"]).Config, "check_replay_memory")
    if arguments.check_replay_memory is False and not keeps_replay:
        # load's own error would name the Python option, not the flag given here.
        raise UsageError(f"{manifest['algorithm']} keeps no replay buffer: it has no memory check to skip, leave --no-memory-check out")
    if "check_replay_memory" in overrides:
        # A load option, as --no-memory-check gives it (=true checks a checkpoint saved without the check).
        if arguments.check_replay_memory is False and overrides["check_replay_memory"]:
            raise UsageError("--set check_replay_memory=true and --no-memory-check contradict each other: give one of them")
        arguments.check_replay_memory = overrides.pop("check_replay_memory")
    # Run options given anew, which the run's record then keeps for the next resume.
    options_given = any(value is not None for value in (arguments.eval_every, arguments.eval_episodes, arguments.checkpoint_every))
    evaluation_settings = take_run_options(arguments, source_run, notes)
    if run_dir is None:
        run_dir = new_run_dir(
            manifest["algorithm"], manifest["state"]["env"]["env_id"], manifest["config"]["seed"], arguments.runs_dir
        )
    # Config changes are checked by load before anything is written, and recorded in the run's
    # config.json: by write_run_config below for a new run directory, else at learn().
    model = rlfoundry.load(
        path, run_dir=run_dir, quiet=arguments.quiet, checkpoint_every=arguments.checkpoint_every,
        evaluation=periodic_evaluation(arguments, evaluation_settings), device=arguments.device,
        check_replay_memory=arguments.check_replay_memory, **overrides,
    )
    if model.training_env.rebuild_source is None:
        raise UsageError(unbuildable_env_message(model.env_id, f"resume {path} from Python with rlfoundry.load(path, env=...)"))
    if not continues_run:
        write_run_config(run_dir, model, total_steps=arguments.steps, resumed_from=str(path), resumed_at_step=model.steps)
    elif options_given:
        record_run_options(run_dir, model)
    for note in notes:
        print(note)
    return learn_and_report(model, arguments.steps, arguments.eval_episodes, run_dir)


def refuse_run_without_checkpoints(path: Path) -> None:
    """UsageError for a run directory (config.json or checkpoints/ in it) that has neither
    checkpoints/final nor checkpoints/latest: its run stopped (Ctrl-C, a crash) before writing one."""
    if not ((path / "config.json").is_file() or (path / "checkpoints").is_dir()):
        return
    best = path / "checkpoints" / "best"
    remedy = f"its best policy is {best}, which a command can take instead" if best.is_dir() else "train it again"
    raise UsageError(
        f"{path} is a run directory without a final or latest checkpoint (its run stopped before writing one; "
        f"--checkpoint-every N writes checkpoints/latest as it trains): {remedy}"
    )


def evaluate_checkpoint(arguments: argparse.Namespace) -> int:
    import rlfoundry

    if arguments.episodes < 1:
        raise UsageError(f"--episodes={arguments.episodes} is out of range: allowed integers >= 1")
    if arguments.video is not None and Path(arguments.video).suffix.lower() != ".gif":
        raise UsageError(f"--video={arguments.video} must end in .gif: rlf eval records animated GIFs")
    if arguments.video_steps is not None and arguments.video is None:
        raise UsageError(f"--video-steps={arguments.video_steps} cuts a recording: add --video PATH.gif")
    for flag, value in (("--video-steps", arguments.video_steps), ("--max-episode-steps", arguments.max_episode_steps)):
        if value is not None and value < 1:
            raise UsageError(f"{flag}={value} is out of range: allowed integers >= 1")
    if arguments.env_id:
        check_env_id(arguments.env_id)
    checkpoint = Path(arguments.checkpoint)
    from_run = bool(run_checkpoints(checkpoint))
    if from_run:
        # A run directory: its furthest checkpoint, as `rlf resume` takes.
        checkpoint = max(run_checkpoints(checkpoint), key=checkpoint_steps)
    else:
        refuse_run_without_checkpoints(checkpoint)
    # An evaluation needs no replay buffer (an Atari one is gigabytes): it is neither read nor checked.
    without_replay: dict[str, Any] = {"replay_buffer": False, "check_replay_memory": False}
    model = rlfoundry.load(
        checkpoint, quiet=True, device=arguments.device, **(without_replay if "buffer_size" in read_manifest(checkpoint)["config"] else {})
    )
    # --env-kwarg changes the training env's keyword arguments, or gives those of --env's env.
    if arguments.env_id is not None:
        base = RegisteredEnv(arguments.env_id)
    elif model.training_env.rebuild_source is not None:
        base = model.training_env.rebuild_source
    else:
        raise UsageError(unbuildable_env_message(model.env_id, f"name one to evaluate {checkpoint} on with --env ENV_ID"))
    env = RegisteredEnv(base.env_id, {**base.kwargs, **parse_env_kwargs(base.env_id, arguments.env_kwargs)})
    deterministic = not arguments.stochastic
    result = rlfoundry.evaluate(
        model, env, n_episodes=arguments.episodes, deterministic=deterministic, seed=arguments.seed,
        max_episode_steps=arguments.max_episode_steps,
    )
    if from_run:
        # Said once the model has played the env (whose spaces may not fit it): a mistake prints its error alone.
        print(f"checkpoint: {checkpoint}")
    print(f"{model.name} on {env}: {result}")
    print("returns: " + " ".join(f"{value:g}" for value in result.returns))
    if arguments.video is not None:
        recorded = rlfoundry.record_video(
            model, arguments.video, env, deterministic=deterministic, seed=arguments.seed,
            # Uncut by --video-steps, the recording is the evaluation's first episode (on an env with
            # no time limit and no --max-episode-steps, cut at 1,000 steps where evaluation cuts at 10,000).
            max_steps=arguments.video_steps if arguments.video_steps is not None else arguments.max_episode_steps,
        )
        print(f"video: {arguments.video} (return {recorded.returns[0]:g}, {recorded.lengths[0]} steps)")
    return 0


def plot(arguments: argparse.Namespace) -> int:
    run_dirs = [Path(path) for path in arguments.run_dirs]
    if arguments.output:
        output = Path(arguments.output)
        from matplotlib.backend_bases import FigureCanvasBase

        formats = FigureCanvasBase.get_supported_filetypes()
        if output.suffix.lstrip(".").lower() not in formats:
            raise UsageError(
                f"-o {output}: cannot draw a {output.suffix or 'suffix-less'} file; name one ending in .png, .pdf, "
                f".svg or another of {', '.join(sorted(formats))}"
            )
    elif len(run_dirs) == 1 and not arguments.aggregate:
        output = run_dirs[0] / "learning_curve.png"
    else:
        output = Path("learning_curves.png")
    if not arguments.aggregate:
        # An empty chart would pass for a plotted run (--aggregate refuses such runs as it draws).
        for run_dir in run_dirs:
            require_something_to_plot(run_dir)
    draw = plot_aggregated_curves if arguments.aggregate else plot_learning_curves
    print(draw(run_dirs, output))
    return 0


def list_algorithms(arguments: argparse.Namespace) -> int:
    for name, cls in ALGORITHMS.items():
        presets = ", ".join(all_presets(name)) or "none"
        print(f"{name:16s} {class_summary(cls)}")
        print(f"{'':16s} presets: {presets}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
