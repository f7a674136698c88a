"""SAC, TD3 and DDPG on Pendulum-v1: rlfoundry beside Stable-Baselines3 (and SBX, its JAX port),
plus the floating-point floor of one SAC or TD3 update and an ablation of the speed ideas.

Same settings on every side: 20k env steps, one env, [256, 256] ReLU networks, batch 256, one
gradient step per env step after 100 random steps, buffer 1M, gamma 0.99, tau 0.005, learning
rate 1e-3 everywhere (rl-baselines3-zoo's Pendulum setting), TD3 and DDPG with Gaussian exploration
noise 0.1 (in [-1, 1] action units on every side), TD3 with policy delay 2, target noise 0.2 clipped
at 0.5; DDPG with one critic, updating the actor and the targets at every step. Every
run is a fresh subprocess; the libraries alternate per seed. A short untimed rlfoundry run first
compiles the kernels (or loads them from numba's cache). The clock covers learn() only;
afterwards each model plays the same 20 deterministic evaluation episodes (rlfoundry.evaluate).

    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/continuous_pendulum.py run --seeds 0 1
    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/continuous_pendulum.py run --algorithms ddpg
    # an older commit beside the current one and SB3:
    git worktree add /tmp/before REV && .venv/bin/python benchmarks/continuous_pendulum.py run --baseline /tmp/before
    # every library on both cores (SBX from its own venv, below):
    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/continuous_pendulum.py run \
        --libraries rlfoundry-2threads sbx sb3 --sbx-python SBX_VENV/bin/python --seeds 0 1
    # the bfloat16 products (matmul_precision="bfloat16") beside float32, SB3 and SBX:
    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/continuous_pendulum.py run \
        --libraries rlfoundry-bf16 rlfoundry-2threads sb3 sbx --sbx-python SBX_VENV/bin/python --seeds 0 1
    .venv/bin/python benchmarks/continuous_pendulum.py floor      # FLOPs per update, matmul rates (float32, bfloat16)
    .venv/bin/python benchmarks/continuous_pendulum.py ablation   # ms per update for each speed idea
    .venv/bin/python benchmarks/continuous_pendulum.py profile    # torch.profiler table of one update

SBX needs jax; keep it out of rlfoundry's venv: make a second venv whose site-packages holds a .pth
file listing .venv's site-packages and the repository root, `pip install sbx-rl` there (it adds
jax, flax and optax and leaves torch alone), and pass its python with --sbx-python.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from fresh_process import run_worker
from stable_baselines_policy import StableBaselinesPolicy

ENV_ID = "Pendulum-v1"
STEPS = 20_000
WIDTHS = [256, 256]
SHARED = {"learning_rate": 1e-3, "batch_size": 256, "buffer_size": 1_000_000, "learning_starts": 100,
          "gamma": 0.99, "tau": 0.005, "train_freq": 1, "gradient_steps": 1}
EXPLORATION_NOISE = 0.1
EVALUATION_EPISODES = 20
EVALUATION_SEED = 10_000
LIBRARIES = ("rlfoundry", "rlfoundry-2threads", "rlfoundry-bf16", "rlfoundry-torch", "sb3", "sb3-1thread", "sbx")
"""rlfoundry runs with its defaults (the compiled update on one thread), rlfoundry-2threads with
torch_threads=2 (the compiled update's two threads), rlfoundry-bf16 as rlfoundry-2threads with
matmul_precision="bfloat16", rlfoundry-torch with backend="torch" on one thread; sb3 with torch's
default (one thread per core, 2 here), sb3-1thread with one."""


# -- one training run (inside a worker subprocess) ----------------------------------------------------


def rlfoundry_model(algorithm: str, seed: int, **overrides):
    import rlfoundry

    settings = {key: value for key, value in SHARED.items() if key != "learning_rate"}
    settings |= {"actor_learning_rate": SHARED["learning_rate"], "critic_learning_rate": SHARED["learning_rate"]}
    settings |= {"actor_hidden_sizes": tuple(WIDTHS), "critic_hidden_sizes": tuple(WIDTHS)}
    if algorithm == "sac":
        settings["alpha_learning_rate"] = SHARED["learning_rate"]
    else:
        settings["exploration_noise_std"] = EXPLORATION_NOISE
    return rlfoundry.ALGORITHMS[algorithm](ENV_ID, seed=seed, quiet=True, **{**settings, **overrides})


def baselines_model(library: str, algorithm: str, seed: int):
    """A Stable-Baselines3 (library 'sb3' or 'sb3-1thread') or SBX model with the shared settings."""
    module = __import__("sbx" if library == "sbx" else "stable_baselines3")
    from stable_baselines3.common.noise import NormalActionNoise

    keywords = dict(SHARED, policy_kwargs={"net_arch": WIDTHS}, seed=seed, verbose=0)
    if library != "sbx":
        keywords["device"] = "cpu"
    if algorithm in ("td3", "ddpg"):
        keywords["action_noise"] = NormalActionNoise(np.zeros(1), EXPLORATION_NOISE * np.ones(1))
    return getattr(module, algorithm.upper())("MlpPolicy", ENV_ID, **keywords)


def worker(library: str, algorithm: str, seed: int, steps: int) -> dict:
    import torch

    import rlfoundry

    if library == "sb3-1thread":
        torch.set_num_threads(1)
    if library.startswith("rlfoundry"):
        backend = "torch" if library == "rlfoundry-torch" else "auto"
        precision = "bfloat16" if library == "rlfoundry-bf16" else "float32"
        model = rlfoundry_model(algorithm, seed, torch_threads=2 if library in ("rlfoundry-2threads", "rlfoundry-bf16") else 1,
                                backend=backend, matmul_precision=precision)
    else:
        model = baselines_model(library, algorithm, seed)
    wall, cpu = time.perf_counter(), time.process_time()
    model.learn(steps)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    updates = steps - SHARED["learning_starts"]
    player = model if library.startswith("rlfoundry") else StableBaselinesPolicy(model, ENV_ID)
    result = rlfoundry.evaluate(player, env=ENV_ID, n_episodes=EVALUATION_EPISODES, seed=EVALUATION_SEED)
    return {
        "library": library, "algorithm": algorithm, "seed": seed, "steps": steps,
        "torch_threads": torch.get_num_threads(), "kernel_threads": kernel_threads(model),
        "seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
        "updates_per_second": round(updates / wall, 1), "final_return": round(result.mean, 1),
    }


def kernel_threads(model) -> int:
    """The threads of an rlfoundry model's compiled update; 0 for PyTorch's update (or another library)."""
    compiled = getattr(model, "compiled", None)
    return 0 if compiled is None else compiled.threads.parts


def run(arguments: argparse.Namespace) -> None:
    if any(library in ("rlfoundry", "rlfoundry-2threads", "rlfoundry-bf16") for library in arguments.libraries):
        for algorithm in arguments.algorithms:  # numba compiles the kernels (a machine's first run) or loads them
            start = time.perf_counter()
            subprocess.run([sys.executable, __file__, "worker", "rlfoundry", algorithm, "0", "300"], check=True,
                           capture_output=True)
            print(f"compiling or loading the {algorithm} kernels, and 300 steps: {time.perf_counter() - start:.1f} s")
    rows = []
    output = Path(arguments.output) if arguments.output else None
    libraries = (["baseline"] if arguments.baseline else []) + arguments.libraries
    for seed in arguments.seeds:
        for algorithm in arguments.algorithms:
            for library in libraries:
                row = run_one(library, algorithm, seed, arguments)
                if row is None:
                    continue
                rows.append(row)
                print(json.dumps(row), flush=True)
                if output is not None:
                    with output.open("a") as handle:
                        handle.write(json.dumps(row) + "\n")
    print_table(rows)


def run_one(library: str, algorithm: str, seed: int, arguments: argparse.Namespace) -> dict | None:
    """One worker subprocess's result row; None (reported) if it failed. Library "baseline" is the
    rlfoundry of the checkout --baseline, run by that checkout's copy of this script (fresh_process.py)."""
    # The baseline runs as the first rlfoundry library asked for (with its threads), else as "rlfoundry".
    baseline_as = next((name for name in arguments.libraries if name.startswith("rlfoundry")), "rlfoundry")
    worker_arguments = ["worker", baseline_as if library == "baseline" else library, algorithm, str(seed), str(arguments.steps)]
    if library == "baseline":
        try:
            return {**run_worker(__file__, worker_arguments, arguments.baseline), "library": "baseline"}
        except subprocess.CalledProcessError as failure:
            print(f"baseline {algorithm} seed {seed} failed:\n{failure.stderr[-2000:]}", file=sys.stderr)
            return None
    python = arguments.sbx_python if library == "sbx" else sys.executable
    completed = subprocess.run([python, __file__, *worker_arguments], capture_output=True, text=True)
    if completed.returncode != 0:
        print(f"{library} {algorithm} seed {seed} failed:\n{completed.stderr[-2000:]}", file=sys.stderr)
        return None
    return json.loads(completed.stdout.strip().splitlines()[-1])


def print_table(rows: list[dict]) -> None:
    print("\n| algorithm | library | torch threads | runs | seconds (median) | updates/s (median) | final return per seed |")
    print("|---|---|---|---|---|---|---|")
    keys = sorted({(row["algorithm"], row["library"]) for row in rows})
    for algorithm, library in keys:
        group = [row for row in rows if (row["algorithm"], row["library"]) == (algorithm, library)]
        returns = ", ".join(f"{row['final_return']:.0f}" for row in group)
        print(f"| {algorithm} | {library} | {group[0]['torch_threads']} | {len(group)} | "
              f"{statistics.median(row['seconds'] for row in group):.0f} | "
              f"{statistics.median(row['updates_per_second'] for row in group):.0f} | {returns} |")


# -- the floor: floating-point work of one update and the machine's matmul rate ---------------------


def linear_macs(sizes: list[int]) -> int:
    """Multiply-adds of one sample through Linear layers of these sizes (input first, output last)."""
    return sum(fan_in * fan_out for fan_in, fan_out in zip(sizes, sizes[1:]))


def update_flops(algorithm: str, observation_size: int = 3, action_size: int = 1, batch: int = 256,
                 widths: list[int] = WIDTHS, policy_delay: int = 2) -> float:
    """Dense matrix-product FLOPs (2 per multiply-add) of one rlfoundry update.

    A forward pass costs F; a backward pass F for the weight gradients plus F for the input
    gradients (less the first layer's, when the input is data). Frozen critics in the actor loss
    need input gradients only.
    """
    critic = linear_macs([observation_size + action_size, *widths, 1])
    critic_first = (observation_size + action_size) * widths[0]
    heads = 2 * action_size if algorithm == "sac" else action_size
    actor = linear_macs([observation_size, *widths, heads])
    actor_first = observation_size * widths[0]
    if algorithm == "sac":
        twin = 2 * critic
        macs = (
            actor + twin                                    # target: a' ~ pi(s'), Q'_1,2(s', a')
            + twin + twin + (twin - 2 * critic_first)       # critics: forward, weight and input gradients
            + actor + twin + twin                           # actor: a ~ pi(s), frozen Q_1,2(s, a), input gradients
            + actor + (actor - actor_first)                 # actor backward
        )
    else:
        twin = 2 * critic
        critic_update = actor + twin + twin + twin + (twin - 2 * critic_first)
        actor_update = actor + critic + critic + actor + (actor - actor_first)  # only Q_1, frozen
        macs = critic_update + actor_update / policy_delay
    return 2.0 * macs * batch


def matmul_rate(size: int = 256, repeats: int = 2000) -> float:
    """GFLOP/s of a [size, size] x [size, size] float32 product on one thread (best of 5)."""
    import torch

    torch.set_num_threads(1)
    left, right = torch.randn(size, size), torch.randn(size, size)
    for _ in range(50):
        left @ right
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(repeats // 5):
            left @ right
        best = min(best, (time.perf_counter() - start) / (repeats // 5))
    return 2 * size**3 / best / 1e9


def bfloat16_rate(size: int = 256, repeats: int = 2000) -> float | None:
    """GFLOP/s of the same product through the kernels' bfloat16 path (compiled_mlp.product: both
    operands rounded, then oneDNN's GEMM; called from Python, best of 5); None where it is unavailable."""
    import numpy as np

    from rlfoundry.networks import bfloat16
    from rlfoundry.networks.compiled_mlp import product

    if bfloat16.enable() is not None:
        return None
    generator = np.random.default_rng(0)
    left, right = (generator.standard_normal((size, size)).astype(np.float32) for _ in range(2))
    out = np.empty((size, size), np.float32)
    best = float("inf")
    for _ in range(6):
        start = time.perf_counter()
        for _ in range(repeats // 5):
            product(left, right, out, True)
        best = min(best, (time.perf_counter() - start) / (repeats // 5))
    return 2 * size**3 / best / 1e9


def floor(arguments: argparse.Namespace) -> None:
    rates = {"float32": matmul_rate(), "bfloat16": bfloat16_rate()}
    for precision, rate in rates.items():
        if rate is None:
            print(f"{precision}: unavailable here")
            continue
        print(f"{precision} matmul 256x256x256, 1 thread: {rate:.0f} GFLOP/s")
        for algorithm in ("sac", "td3"):
            flops = update_flops(algorithm)
            print(f"  {algorithm}: {flops / 1e6:.0f} MFLOP per update -> floor {flops / rate / 1e6:.2f} ms "
                  f"({rate * 1e9 / flops:.0f} updates/s)")


# -- the ablation of the speed ideas, update only ------------------------------------------------------


def separate_critics(model):
    """The twin critics as two nn.Sequential MLPs (one matmul per layer per critic), same interface."""
    import torch
    from torch import nn

    from rlfoundry.networks.torsos import MLP

    class SeparateCritics(nn.Module):
        def __init__(self, batched):
            super().__init__()
            sizes = [weight.shape[1] for weight in batched.weights]
            self.members = nn.ModuleList(
                nn.Sequential(MLP(sizes[0], sizes[1:], "relu"), nn.Linear(sizes[-1], 1)) for _ in range(batched.n_critics)
            )

        def forward(self, observations, actions, count=None, frozen=False):
            inputs = torch.cat([observations, actions], dim=-1)
            members = self.members[: count or len(self.members)]
            if frozen:
                return torch.stack([
                    torch.func.functional_call(member, {k: v.detach() for k, v in member.named_parameters()}, (inputs,))[:, 0]
                    for member in members
                ])
            return torch.stack([member(inputs)[:, 0] for member in members])

    return SeparateCritics(model.critics)


ABLATION = ["sb3-like", "+batched critics", "+frozen critics", "+fused adam", "+one backward pass", "+denormals flushed", "2 threads"]
"""Each rung adds one idea to the one before: 'sb3-like' has two separate critic MLPs, the actor loss
backpropagates into the critics' weights, one foreach Adam and, for SAC, the sequential update order.
'+denormals flushed' is rlfoundry as shipped (one thread)."""


def variant_model(algorithm: str, variant: str):
    """An rlfoundry model with the buffer filled, changed to one rung of the ABLATION ladder."""
    import torch

    from rlfoundry.run import off_policy

    rung = ABLATION.index(variant)
    overrides = {"torch_threads": 2 if variant == "2 threads" else 1}
    if algorithm == "sac":
        overrides["update_order"] = "simultaneous" if rung >= ABLATION.index("+one backward pass") else "sequential"
    model = rlfoundry_model(algorithm, 0, learning_starts=1000, **overrides).learn(1000)
    if rung < ABLATION.index("+batched critics"):
        model.critics = separate_critics(model)
        model.target_critics = off_policy.frozen_copy(model.critics)
    networks = [model.actor, model.critics] + ([model.temperature] if algorithm == "sac" else [])
    groups = [{"params": list(network.parameters()), "lr": SHARED["learning_rate"]} for network in networks]
    fused = rung >= ABLATION.index("+fused adam")
    model.optimizer = torch.optim.Adam(groups, fused=fused, foreach=not fused)
    if rung < ABLATION.index("+frozen critics"):
        unfreeze_actor_losses(model)
    return model


def unfreeze_actor_losses(model) -> None:
    """Actor losses backpropagate into the critics' weights too (as Stable-Baselines3's do); those
    gradients are computed and then dropped before the actor's optimiser step, as there."""
    forward, step = model.critics.forward, model.optimizer.step
    actor_loss_pending = []

    def critics(observations, actions, count=None, frozen=False):
        if frozen:
            actor_loss_pending.append(True)
        return forward(observations, actions, count)

    def optimizer_step():
        if actor_loss_pending:
            actor_loss_pending.clear()
            for parameter in model.critics.parameters():
                parameter.grad = None
        step()

    model.critics.forward, model.optimizer.step = critics, optimizer_step


def time_updates(model, count: int, flush_denormals: bool) -> tuple[float, float]:
    """(wall ms, CPU ms) per update, best of 3 rounds of `count` updates on pre-drawn minibatches."""
    from rlfoundry.run.device import denormals_flushed
    from rlfoundry.run.monitor import TrainingMonitor

    monitor = TrainingMonitor(None, 1, quiet=True)
    rng = np.random.default_rng(0)
    batches = [model.collector.replay.sample(256, rng).to_tensors() for _ in range(32)]

    def updates(number: int) -> None:
        for index in range(number):
            model.collector.updates += 1
            model.update(batches[index % len(batches)], monitor)

    best = (float("inf"), float("inf"))
    with denormals_flushed() if flush_denormals else contextlib.nullcontext():
        updates(20)
        for _ in range(3):
            wall, cpu = time.perf_counter(), time.process_time()
            updates(count)
            result = ((time.perf_counter() - wall) / count * 1e3, (time.process_time() - cpu) / count * 1e3)
            best = min(best, result)
    return best


def ablation(arguments: argparse.Namespace) -> None:
    print("| algorithm | variant | wall ms/update | CPU ms/update |")
    print("|---|---|---|---|")
    for algorithm in arguments.algorithms:
        for variant in ABLATION:
            if algorithm == "td3" and variant == "+one backward pass":
                continue  # TD3 has no update-order option
            flush = ABLATION.index(variant) >= ABLATION.index("+denormals flushed")
            wall, cpu = time_updates(variant_model(algorithm, variant), arguments.updates, flush)
            print(f"| {algorithm} | {variant} | {wall:.2f} | {cpu:.2f} |", flush=True)


def profile(arguments: argparse.Namespace) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    model = variant_model(arguments.algorithms[0], "+denormals flushed")
    with torch_profile(activities=[ProfilerActivity.CPU]) as profiler:
        time_updates(model, arguments.updates, flush_denormals=True)
    print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "worker":
        library, algorithm, seed, steps = sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
        with contextlib.redirect_stdout(sys.stderr):
            row = worker(library, algorithm, seed, steps)
        print(json.dumps(row))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=("run", "floor", "ablation", "profile"))
    parser.add_argument("--algorithms", nargs="+", default=["sac", "td3"], choices=("sac", "td3", "ddpg"))
    parser.add_argument("--libraries", nargs="+", default=["rlfoundry", "sb3"], choices=LIBRARIES)
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--steps", type=int, default=STEPS)
    parser.add_argument("--updates", type=int, default=200, help="updates per timing round (ablation, profile)")
    parser.add_argument("--sbx-python", default=sys.executable, help="a Python with sbx-rl installed")
    parser.add_argument("--baseline", metavar="CHECKOUT",
                        help="run: also the rlfoundry of another checkout, first for each seed, as the first rlfoundry "
                             "library of --libraries (benchmarks/fresh_process.py)")
    parser.add_argument("--output", help="append each run's JSON line to this file")
    arguments = parser.parse_args()
    if arguments.command in ("ablation", "profile") and "ddpg" in arguments.algorithms:
        parser.error("ablation and profile cover sac and td3 only")
    {"run": run, "floor": floor, "ablation": ablation, "profile": profile}[arguments.command](arguments)


if __name__ == "__main__":
    main()
