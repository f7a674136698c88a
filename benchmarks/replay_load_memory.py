"""Peak memory of loading a checkpoint with its replay buffer (rlfoundry.load of a DQN checkpoint).

Saves two DQNs on CartPole-v1, one whose buffer of --buffer-size transitions is full of random
values and one with a buffer of 1,000, loads each in a fresh process and reports the growth of
that process's resident memory from before the load to its peak (VmHWM in /proc/self/status:
getrusage's ru_maxrss would carry over the peak of the process that started it). The small
load's growth (the env, the networks, the model) is subtracted from the big one's, and what is
left is compared with the buffer's size: 1x means the buffer is read straight into its arrays,
2x that a second copy of it was held on the way. With --baseline CHECKOUT the same runs with that
checkout's rlfoundry (made with `git worktree add /tmp/before REV`, this script copied in).
Linux only. Run: .venv/bin/python benchmarks/replay_load_memory.py [--buffer-size N] [--baseline DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fresh_process import run_worker  # noqa: E402


def resident_bytes() -> int:
    """The process's resident memory now."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_resident_bytes() -> int:
    """The process's highest resident memory so far (VmHWM, in kB)."""
    line = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def save_filled_model(path: str, buffer_size: int) -> None:
    """A DQN checkpoint whose replay buffer is full of random transitions."""
    import rlfoundry

    model = rlfoundry.DQN("CartPole-v1", buffer_size=buffer_size, quiet=True)
    replay, rng = model.replay, np.random.default_rng(0)
    for array in (replay.observations, replay.next_observations, replay.rewards):
        array[...] = rng.standard_normal(array.shape, dtype=np.float32)
    replay.actions[...] = rng.integers(2, size=replay.actions.shape)
    replay.terminated[...] = rng.random(replay.terminated.shape) < 0.01
    replay.filled_rows = replay.rows
    model.save(path)
    print(json.dumps({"buffer": replay.nbytes}))


def load(path: str) -> None:
    import rlfoundry

    before = resident_bytes()
    rlfoundry.load(path, quiet=True)
    print(json.dumps({"growth": peak_resident_bytes() - before}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--buffer-size", type=int, default=8_000_000)
    parser.add_argument("--baseline", help="another rlfoundry checkout to measure too")
    parser.add_argument("--save", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--load", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.save:
        return save_filled_model(arguments.save[0], int(arguments.save[1]))
    if arguments.load:
        return load(arguments.load)
    checkouts = {"this checkout": None, **({"baseline": arguments.baseline} if arguments.baseline else {})}
    for name, checkout in checkouts.items():
        with tempfile.TemporaryDirectory() as directory:
            sizes = {Path(directory) / "big": arguments.buffer_size, Path(directory) / "small": 1000}
            buffer = [run_worker(__file__, ["--save", str(path), str(size)], checkout)["buffer"] for path, size in sizes.items()][0]
            grown, fixed = (run_worker(__file__, ["--load", str(path)], checkout)["growth"] for path in sizes)
        print(
            f"{name}: a buffer of {arguments.buffer_size:,} CartPole transitions ({buffer / 1e6:.0f} MB); the load's "
            f"peak resident memory grew {grown / 1e6:.0f} MB, {fixed / 1e6:.0f} MB with a 1,000-transition buffer: "
            f"the buffer took {(grown - fixed) / 1e6:.0f} MB at the peak, {(grown - fixed) / buffer:.2f}x its size"
        )


if __name__ == "__main__":
    main()
