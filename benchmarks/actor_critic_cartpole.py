"""A2C, PPO and TRPO on CartPole-v1: rlfoundry against Stable-Baselines3 (SB3-Contrib for TRPO)
with the same hyperparameters.

The settings are RL Baselines3 Zoo's tuned CartPole-v1 entries, written out on both sides:
- PPO (the issue's benchmark): 8 envs, n_steps 32, batch 256, gae_lambda 0.8, gamma 0.98, 20
  epochs, ent_coef 0, learning rate linear from 1e-3, clip range linear from 0.2, 100k steps.
- A2C: 8 envs, ent_coef 0, 500k steps, SB3's defaults otherwise (n_steps 5, RMSprop 7e-4 with
  alpha 0.99 and eps 1e-5, gamma 0.99, advantages to the rollout's end, grad norm 0.5).
- TRPO: 2 envs, n_steps 512, value batch 512, cg_damping 1e-3, gae_lambda 0.98, gamma 0.99, value
  learning rate 1e-3, 20 value epochs per rollout, 100k steps, SB3-Contrib's defaults otherwise
  (target KL 0.01, 15 CG iterations, line search 0.8 x 10).
Separate 64x64 tanh policy and value networks with orthogonal initialisation in both libraries.
`rlfoundry` trains with its default backend (numba-compiled kernels where they apply,
rlfoundry.run.backend) and `rlfoundry-torch` with backend="torch" (PyTorch only); the kernels are
compiled (a machine's first run) or loaded from numba's cache by one short untimed run first.
Each run is a fresh subprocess (so neither library warms the other's caches); runs alternate
rlfoundry / SB3 per seed. The clock covers learn() only; afterwards both models play the same 20
evaluation episodes (deterministic actions, rlfoundry.evaluate).

Both run with one torch thread: on this 2-core machine two threads are slower for 64x64
networks, and collapse when the other core is busy (benchmarks/RESULTS.md), which would make
Stable-Baselines3 look worse than it is. `--torch-threads 2` runs both with two (torch's default
here), to check that. SB3-Contrib installs with `make bench-setup`.

    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/actor_critic_cartpole.py --seeds 0 1 2
    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/actor_critic_cartpole.py --algorithm a2c
    .venv/bin/python benchmarks/actor_critic_cartpole.py --profile   # cProfile of one rlfoundry run
    git worktree add /tmp/before REV && .venv/bin/python benchmarks/actor_critic_cartpole.py --baseline /tmp/before
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

# "rlfoundry" runs its default backend (compiled kernels where they apply), "rlfoundry-torch" PyTorch only.
BACKENDS = {"rlfoundry": "auto", "rlfoundry-torch": "torch"}
LIBRARIES = ["rlfoundry", "rlfoundry-torch", "sb3"]
ENV_ID = "CartPole-v1"
EVALUATION_EPISODES = 20
EVALUATION_SEED = 10_000
STEPS = {"ppo": 100_000, "a2c": 500_000, "trpo": 100_000}
SETTINGS = {
    "ppo": {
        "n_envs": 8,
        "n_steps": 32,
        "batch_size": 256,
        "gae_lambda": 0.8,
        "gamma": 0.98,
        "n_epochs": 20,
        "entropy_coef": 0.0,
        "learning_rate": 1e-3,
        "clip_range": 0.2,
    },
    "a2c": {
        "n_envs": 8,
        "n_steps": 5,
        "gamma": 0.99,
        "learning_rate": 7e-4,
        "rmsprop_alpha": 0.99,
        "optimizer_epsilon": 1e-5,
        "entropy_coef": 0.0,
        "value_coef": 0.5,
        "max_grad_norm": 0.5,
    },
    "trpo": {
        "n_envs": 2,
        "n_steps": 512,
        "batch_size": 512,
        "cg_damping": 1e-3,
        "gae_lambda": 0.98,
        "gamma": 0.99,
        "learning_rate": 1e-3,
        "value_epochs": 20,
    },
}
"""rlfoundry's config names; stable_baselines_model maps them to SB3's."""
SCHEDULES = {"ppo": {"learning_rate_schedule": "linear", "clip_range_schedule": "linear"}, "a2c": {}, "trpo": {}}


def rlfoundry_model(algorithm: str, seed: int, threads: int = 1, backend: str = "auto"):
    import rlfoundry

    return rlfoundry.ALGORITHMS[algorithm](
        ENV_ID, quiet=True, seed=seed, torch_threads=threads, backend=backend, **SETTINGS[algorithm], **SCHEDULES[algorithm]
    )


def stable_baselines_model(algorithm: str, seed: int, threads: int = 1):
    import torch
    from stable_baselines3.common.env_util import make_vec_env

    torch.set_num_threads(threads)
    settings = dict(SETTINGS[algorithm])
    env = make_vec_env(ENV_ID, n_envs=settings.pop("n_envs"), seed=seed)
    common = {"device": "cpu", "seed": seed}
    if algorithm == "ppo":
        from stable_baselines3 import PPO

        def linear(initial: float):
            return lambda progress_remaining: progress_remaining * initial

        return PPO(
            "MlpPolicy", env, n_steps=settings["n_steps"], batch_size=settings["batch_size"],
            gae_lambda=settings["gae_lambda"], gamma=settings["gamma"], n_epochs=settings["n_epochs"],
            ent_coef=settings["entropy_coef"], learning_rate=linear(settings["learning_rate"]),
            clip_range=linear(settings["clip_range"]), **common,
        )
    if algorithm == "a2c":
        from stable_baselines3 import A2C

        return A2C(
            "MlpPolicy", env, n_steps=settings["n_steps"], gamma=settings["gamma"], gae_lambda=1.0,
            learning_rate=settings["learning_rate"], use_rms_prop=True, rms_prop_eps=settings["optimizer_epsilon"],
            ent_coef=settings["entropy_coef"], vf_coef=settings["value_coef"], max_grad_norm=settings["max_grad_norm"],
            policy_kwargs={"optimizer_kwargs": {"alpha": settings["rmsprop_alpha"], "eps": settings["optimizer_epsilon"],
                                                "weight_decay": 0}},
            **common,
        )
    from sb3_contrib import TRPO

    return TRPO(
        "MlpPolicy", env, n_steps=settings["n_steps"], batch_size=settings["batch_size"],
        cg_damping=settings["cg_damping"], gae_lambda=settings["gae_lambda"], gamma=settings["gamma"],
        learning_rate=settings["learning_rate"], n_critic_updates=settings["value_epochs"], **common,
    )


def run_one(algorithm: str, library: str, seed: int, steps: int, threads: int) -> dict:
    """Train one model in this process; return seconds of learn() and the evaluation return."""
    import rlfoundry

    if library.startswith("rlfoundry"):
        model = rlfoundry_model(algorithm, seed, threads, BACKENDS[library])
    else:
        model = stable_baselines_model(algorithm, seed, threads)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    player = model if library.startswith("rlfoundry") else StableBaselinesPolicy(model, ENV_ID)
    result = rlfoundry.evaluate(player, ENV_ID, n_episodes=EVALUATION_EPISODES, seed=EVALUATION_SEED)
    return {"library": library, "seed": seed, "seconds": seconds, "cpu_seconds": cpu_seconds, "return": result.mean}


def run_in_subprocess(algorithm: str, library: str, seed: int, steps: int, threads: int, baseline: str | None) -> dict:
    """One run in a fresh process; library "baseline" is rlfoundry from the checkout `baseline`."""
    arguments = ["--algorithm", algorithm, "--worker", "rlfoundry" if library == "baseline" else library,
                 "--seeds", str(seed), "--steps", str(steps), "--torch-threads", str(threads)]
    result = run_worker(__file__, arguments, baseline if library == "baseline" else None)
    return {**result, "library": library}


def profile(algorithm: str, steps: int, lines: int) -> None:
    model = rlfoundry_model(algorithm, 0)
    profiler = cProfile.Profile()
    profiler.runcall(model.learn, steps)
    pstats.Stats(profiler).sort_stats("tottime").print_stats(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--algorithm", choices=sorted(SETTINGS), default="ppo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, help="env steps (default: the zoo's budget for the algorithm)")
    parser.add_argument("--libraries", nargs="+", default=LIBRARIES, choices=LIBRARIES)
    parser.add_argument("--torch-threads", type=int, default=1, help="torch threads for both libraries")
    parser.add_argument("--profile", action="store_true", help="cProfile one rlfoundry run instead")
    parser.add_argument("--baseline", metavar="CHECKOUT", help="also run the rlfoundry of another checkout (benchmarks/fresh_process.py)")
    parser.add_argument("--worker", choices=LIBRARIES, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    algorithm, steps = arguments.algorithm, arguments.steps or STEPS[arguments.algorithm]
    if arguments.worker:
        print(json.dumps(run_one(algorithm, arguments.worker, arguments.seeds[0], steps, arguments.torch_threads)))
        return
    if arguments.profile:
        profile(algorithm, steps, 25)
        return
    libraries = arguments.libraries + (["baseline"] if arguments.baseline else [])
    if "rlfoundry" in libraries:
        # Compiles the kernels on a machine's first run (numba caches them), outside the timed runs.
        start = time.perf_counter()
        run_in_subprocess(algorithm, "rlfoundry", 0, SETTINGS[algorithm]["n_steps"] * SETTINGS[algorithm]["n_envs"],
                          arguments.torch_threads, None)
        print(f"compiling or loading the kernels, and one rollout: {time.perf_counter() - start:.1f} s", flush=True)
    results = []
    for seed in arguments.seeds:
        for library in libraries:
            result = run_in_subprocess(algorithm, library, seed, steps, arguments.torch_threads, arguments.baseline)
            print(
                f"{library:10s} seed {seed}: {result['seconds']:6.1f} s wall, {result['cpu_seconds']:6.1f} s CPU, "
                f"evaluation return {result['return']:.1f}",
                flush=True,
            )
            results.append(result)
    print("\n| library | seeds | median wall s | median CPU s | wall s per seed | evaluation returns |")
    print("|---|---|---|---|---|---|")
    medians = {}
    for library in libraries:
        mine = [result for result in results if result["library"] == library]
        medians[library] = [statistics.median(result[key] for result in mine) for key in ("seconds", "cpu_seconds")]
        print(
            f"| {library} | {len(mine)} | {medians[library][0]:.1f} | {medians[library][1]:.1f} | "
            f"{', '.join(format(result['seconds'], '.1f') for result in mine)} | "
            f"{', '.join(format(result['return'], '.0f') for result in mine)} |"
        )
    for library in ("rlfoundry", "rlfoundry-torch", "baseline"):
        if library in medians and "sb3" in medians:
            wall, cpu = (medians["sb3"][index] / medians[library][index] for index in (0, 1))
            print(f"\n{library} is {wall:.2f}x faster than sb3 in wall-clock, {cpu:.2f}x in CPU time (medians)")


if __name__ == "__main__":
    main()
