"""DQN on CartPole-v1: rlfoundry against Stable-Baselines3 with the same hyperparameters.

The settings are RL Baselines3 Zoo's CartPole-v1 DQN preset: learning rate 2.3e-3, batch 64,
buffer 100k, learning_starts 1000, gamma 0.99, target update every 10 env steps, 128 gradient
steps every 256 env steps, epsilon 1 -> 0.04 over the first 16% (8000) of 50k steps, a [256, 256]
ReLU MLP, Huber loss, gradient norm clipped at 10, one env. Every run is a fresh subprocess; the
libraries alternate per seed.
`rlfoundry` trains with its default backend (numba-compiled kernels where they apply,
rlfoundry.run.backend) and `rlfoundry-torch` with backend="torch" (PyTorch only); the kernels are
compiled (a machine's first run) or loaded from numba's cache by one short untimed run first. The clock covers learn() only; afterwards both models play the same
20 evaluation episodes with greedy actions (rlfoundry.evaluate).

Both libraries run with one torch thread (rlfoundry's default) unless `--torch-threads 2` runs both
with two (torch's default here): rlfoundry then splits each minibatch between two kernel threads,
and SB3 takes torch's two threads (which no longer made it faster on 2026-12-04: RESULTS.md).

    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/dqn_cartpole.py --seeds 0 1 2
    .venv/bin/python benchmarks/dqn_cartpole.py --profile      # cProfile of one rlfoundry run
    git worktree add /tmp/before REV && .venv/bin/python benchmarks/dqn_cartpole.py --baseline /tmp/before
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import statistics
import time

from fresh_process import run_worker
from stable_baselines_policy import StableBaselinesPolicy

ENV_ID = "CartPole-v1"
STEPS = 50_000
EVALUATION_EPISODES = 20
EVALUATION_SEED = 10_000
# The settings both libraries take under the same names.
SHARED = {
    "learning_rate": 2.3e-3,
    "batch_size": 64,
    "buffer_size": 100_000,
    "learning_starts": 1000,
    "gamma": 0.99,
    "target_update_interval": 10,
    "train_freq": 256,
    "gradient_steps": 128,
}
EXPLORATION_FRACTION = 0.16
FINAL_EPSILON = 0.04
WIDTHS = (256, 256)


def rlfoundry_model(seed: int, double_q: bool = False, threads: int = 1, backend: str = "auto"):
    from rlfoundry.algorithms.dqn import DQN

    return DQN(
        ENV_ID,
        quiet=True,
        seed=seed,
        **SHARED,
        epsilon_decay_steps=int(EXPLORATION_FRACTION * STEPS),
        epsilon_end=FINAL_EPSILON,
        hidden_sizes=WIDTHS,
        double_q=double_q,
        torch_threads=threads,
        backend=backend,
    )


def stable_baselines_model(seed: int, threads: int = 1):
    import torch
    from stable_baselines3 import DQN

    torch.set_num_threads(threads)
    return DQN(
        "MlpPolicy",
        ENV_ID,
        **SHARED,
        exploration_fraction=EXPLORATION_FRACTION,
        exploration_final_eps=FINAL_EPSILON,
        policy_kwargs={"net_arch": list(WIDTHS)},
        device="cpu",
        seed=seed,
    )


def train_and_evaluate(library: str, seed: int, steps: int, threads: int) -> dict:
    """One training run in this process: seconds of learn() and the mean evaluation return."""
    import rlfoundry

    if library == "sb3":
        model = stable_baselines_model(seed, threads)
    else:
        backend = "torch" if library == "rlfoundry-torch" else "auto"
        model = rlfoundry_model(seed, double_q=library == "rlfoundry-double", threads=threads, backend=backend)
    start, start_cpu = time.perf_counter(), time.process_time()
    model.learn(steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    player = StableBaselinesPolicy(model, ENV_ID) if library == "sb3" else model
    evaluation = rlfoundry.evaluate(player, ENV_ID, n_episodes=EVALUATION_EPISODES, seed=EVALUATION_SEED)
    return {"library": library, "seed": seed, "seconds": seconds, "cpu_seconds": cpu_seconds, "return": evaluation.mean}


def in_fresh_process(library: str, seed: int, steps: int, threads: int, baseline: str | None) -> dict:
    """One run in a fresh process; library "baseline" is rlfoundry from the checkout `baseline`."""
    arguments = ["--worker", "rlfoundry" if library == "baseline" else library, "--seeds", str(seed),
                 "--steps", str(steps), "--torch-threads", str(threads)]
    result = run_worker(__file__, arguments, baseline if library == "baseline" else None)
    return {**result, "library": library}


def main() -> None:
    # "rlfoundry" runs its default backend (compiled kernels where they apply), "rlfoundry-torch" PyTorch only.
    libraries = ["rlfoundry", "rlfoundry-torch", "sb3", "rlfoundry-double"]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--libraries", nargs="+", default=libraries[:3], choices=libraries)
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for both libraries")
    parser.add_argument("--profile", action="store_true", help="cProfile one rlfoundry run instead")
    parser.add_argument("--baseline", metavar="CHECKOUT", help="also run the rlfoundry of another checkout (benchmarks/fresh_process.py)")
    parser.add_argument("--worker", choices=libraries, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        print(json.dumps(train_and_evaluate(arguments.worker, arguments.seeds[0], arguments.steps, arguments.torch_threads)))
        return
    if arguments.profile:
        profiler = cProfile.Profile()
        profiler.runcall(rlfoundry_model(arguments.seeds[0]).learn, arguments.steps)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(20)
        return
    compared = arguments.libraries + (["baseline"] if arguments.baseline else [])
    if "rlfoundry" in compared:
        # Compiles the kernels on a machine's first run (numba caches them), outside the timed runs.
        start = time.perf_counter()
        in_fresh_process("rlfoundry", 0, 2_000, arguments.torch_threads, None)
        print(f"compiling or loading the kernels, and 2,000 steps: {time.perf_counter() - start:.1f} s", flush=True)
    results = []
    for seed in arguments.seeds:
        for library in compared:
            result = in_fresh_process(library, seed, arguments.steps, arguments.torch_threads, arguments.baseline)
            print(
                f"{library:16s} seed {seed}: {result['seconds']:6.1f} s ({result['cpu_seconds']:6.1f} s CPU), "
                f"evaluation return {result['return']:.1f}",
                flush=True,
            )
            results.append(result)
    print(
        "\n| library | seeds | median seconds | median CPU seconds | seconds per seed | evaluation returns |"
        "\n|---|---|---|---|---|---|"
    )
    for library in compared:
        runs = [result for result in results if result["library"] == library]
        seconds = [result["seconds"] for result in runs]
        cpu_seconds = statistics.median(result["cpu_seconds"] for result in runs)
        print(
            f"| {library} | {len(runs)} | {statistics.median(seconds):.1f} | {cpu_seconds:.1f} | "
            f"{', '.join(f'{value:.1f}' for value in seconds)} | {', '.join(format(run['return'], '.0f') for run in runs)} |"
        )
    medians = {library: statistics.median(r["seconds"] for r in results if r["library"] == library) for library in compared}
    for library in ("rlfoundry", "rlfoundry-torch", "baseline"):
        if library in medians and "sb3" in medians:
            print(f"\n{library} is {medians['sb3'] / medians[library]:.2f}x faster than sb3 in wall-clock (medians)")


if __name__ == "__main__":
    main()
