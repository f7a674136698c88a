"""PPO on CartPole-v1: rlfoundry against Stable-Baselines3 with the same hyperparameters.

The settings are RL Baselines3 Zoo's CartPole-v1 PPO preset (8 envs, n_steps 32, batch 256,
gae_lambda 0.8, gamma 0.98, 20 epochs, ent_coef 0, learning rate linear from 1e-3, clip range
linear from 0.2, 100k steps). Each run is a fresh subprocess (so neither library warms the other's
caches); runs alternate rlfoundry / SB3 per seed. The clock covers learn() only; afterwards both
models play the same 20 evaluation episodes (deterministic actions, rlfoundry.evaluate).

Both run with one torch thread: on this 2-core machine two threads are slower for 64x64
networks, and collapse when the other core is busy (benchmarks/RESULTS.md), which would make
Stable-Baselines3 look worse than it is. `--torch-threads 2` runs both with two (torch's default
here), to check that.

    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/ppo_cartpole.py --seeds 0 1 2
    .venv/bin/python benchmarks/ppo_cartpole.py --profile   # cProfile of one rlfoundry run
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import subprocess
import sys
import time

STEPS = 100_000
EVALUATION_EPISODES = 20
EVALUATION_SEED = 10_000
SETTINGS = {
    "n_envs": 8,
    "n_steps": 32,
    "batch_size": 256,
    "gae_lambda": 0.8,
    "gamma": 0.98,
    "n_epochs": 20,
    "entropy_coef": 0.0,
    "learning_rate": 1e-3,
    "clip_range": 0.2,
}


def rlfoundry_model(seed: int, threads: int = 1):
    from rlfoundry.algorithms.ppo import PPO

    return PPO(
        "CartPole-v1",
        quiet=True,
        seed=seed,
        learning_rate_schedule="linear",
        clip_range_schedule="linear",
        torch_threads=threads,
        **SETTINGS,
    )


class StableBaselinesAdapter:
    """Gives an SB3 model the predict(observations, deterministic) -> actions that evaluate calls."""

    def __init__(self, model):
        self.model = model
        self.env_id = "CartPole-v1"

    def predict(self, observations, deterministic=True):
        return self.model.predict(observations, deterministic=deterministic)[0]


def stable_baselines_model(seed: int, threads: int = 1):
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)

    def linear(initial: float):
        return lambda progress_remaining: progress_remaining * initial

    return PPO(
        "MlpPolicy",
        make_vec_env("CartPole-v1", n_envs=SETTINGS["n_envs"], seed=seed),
        n_steps=SETTINGS["n_steps"],
        batch_size=SETTINGS["batch_size"],
        gae_lambda=SETTINGS["gae_lambda"],
        gamma=SETTINGS["gamma"],
        n_epochs=SETTINGS["n_epochs"],
        ent_coef=SETTINGS["entropy_coef"],
        learning_rate=linear(SETTINGS["learning_rate"]),
        clip_range=linear(SETTINGS["clip_range"]),
        device="cpu",
        seed=seed,
    )


def run_one(library: str, seed: int, steps: int, threads: int) -> dict:
    """Train one model in this process; return seconds of learn() and the evaluation return."""
    import rlfoundry

    model = (rlfoundry_model if library == "rlfoundry" else stable_baselines_model)(seed, threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    player = model if library == "rlfoundry" else StableBaselinesAdapter(model)
    result = rlfoundry.evaluate(player, "CartPole-v1", n_episodes=EVALUATION_EPISODES, seed=EVALUATION_SEED)
    return {"library": library, "seed": seed, "seconds": seconds, "cpu_seconds": cpu_seconds, "return": result.mean}


def run_in_subprocess(library: str, seed: int, steps: int, threads: int) -> dict:
    output = subprocess.run(
        [sys.executable, __file__, "--worker", library, "--seeds", str(seed), "--steps", str(steps),
         "--torch-threads", str(threads)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(output.strip().splitlines()[-1])


def profile(steps: int, lines: int) -> None:
    model = rlfoundry_model(0)
    profiler = cProfile.Profile()
    profiler.runcall(model.learn, steps)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--libraries", nargs="+", default=["rlfoundry", "sb3"], choices=["rlfoundry", "sb3"])
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for both libraries")
    parser.add_argument("--profile", action="store_true", help="cProfile one rlfoundry run instead")
    parser.add_argument("--worker", choices=["rlfoundry", "sb3"], help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        print(json.dumps(run_one(arguments.worker, arguments.seeds[0], arguments.steps, arguments.torch_threads)))
        return
    if arguments.profile:
        profile(arguments.steps, 25)
        return
    results = []
    for seed in arguments.seeds:
        for library in arguments.libraries:
            result = run_in_subprocess(library, seed, arguments.steps, arguments.torch_threads)
            print(
                f"{library:10s} seed {seed}: {result['seconds']:6.1f} s wall, {result['cpu_seconds']:6.1f} s CPU, "
                f"evaluation return {result['return']:.1f}",
                flush=True,
            )
            results.append(result)
    print("\n| library | seeds | median wall s | median CPU s | wall s per seed | evaluation returns |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for library in arguments.libraries:
        mine = [result for result in results if result["library"] == library]
        medians[library] = [statistics.median(result[key] for result in mine) for key in ("seconds", "cpu_seconds")]
        print(
            f"| {library} | {len(mine)} | {medians[library][0]:.1f} | {medians[library][1]:.1f} | "
            f"{', '.join(format(result['seconds'], '.1f') for result in mine)} | "
            f"{', '.join(format(result['return'], '.0f') for result in mine)} |"
        )
    if len(medians) == 2:
        wall, cpu = (medians["sb3"][index] / medians["rlfoundry"][index] for index in (0, 1))
        print(f"\nrlfoundry is {wall:.2f}x faster in wall-clock, {cpu:.2f}x in CPU time (medians)")


if __name__ == "__main__":
    main()
