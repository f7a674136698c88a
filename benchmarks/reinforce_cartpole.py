"""REINFORCE and OffPolicyPG on CartPole-v1 with their presets: wall-clock, env steps/s, return.

Stable-Baselines3 has no REINFORCE (its A2C with long rollouts bootstraps and trains on
partial episodes, a different estimator), so there is no side-by-side here; the numbers are
rlfoundry's own throughput. The clock covers learn() only; evaluation is 20 deterministic
episodes (rlfoundry.evaluate). One torch thread.

    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/reinforce_cartpole.py --seeds 1 2 3
    .venv/bin/python benchmarks/reinforce_cartpole.py --profile   # cProfile of one REINFORCE run
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import fresh_process  # noqa: F401  (this checkout's rlfoundry first on the path)
import rlfoundry
from rlfoundry.algorithms import ALGORITHMS
from rlfoundry.presets import load_preset

EVALUATION_EPISODES = 20
EVALUATION_SEED = 99


def train(algorithm: str, seed: int):
    preset = load_preset(algorithm, "CartPole-v1")
    model = ALGORITHMS[algorithm]("CartPole-v1", quiet=True, seed=seed, torch_threads=1, **preset.config)
    start = time.perf_counter()
    model.learn(preset.steps)
    return model, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--profile", action="store_true", help="profile one REINFORCE run instead")
    arguments = parser.parse_args()
    if arguments.profile:
        profiler = cProfile.Profile()
        profiler.runcall(train, "reinforce", arguments.seeds[0])
        pstats.Stats(profiler).sort_stats("tottime").print_stats(12)
        return
    print("| algorithm | seed | env steps | seconds | env steps/s | evaluation mean |")
    print("|---|---|---|---|---|---|")
    for algorithm in ("reinforce", "off-policy-pg"):
        for seed in arguments.seeds:
            model, seconds = train(algorithm, seed)
            result = rlfoundry.evaluate(model, n_episodes=EVALUATION_EPISODES, seed=EVALUATION_SEED)
            print(
                f"| {algorithm} | {seed} | {model.steps} | {seconds:.1f} | {model.steps / seconds:,.0f} | {result.mean:.1f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
