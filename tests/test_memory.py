"""The memory check: the memory available (MemAvailable, cgroup limits, read from made-up files),
and replay buffers that would not fit refused at construction and before a checkpoint loads."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from gymnasium import spaces

import rlfoundry
from off_policy_checks import TINY
from rlfoundry.cli import main
from rlfoundry.data import replay as replay_module
from rlfoundry.data.replay import ReplayBuffer
from rlfoundry.run.config import ConfigError
from rlfoundry.run.memory import AvailableMemory, InsufficientMemoryError, available_memory

MEMINFO = "MemTotal:        8000000 kB\nMemFree:          100000 kB\nMemAvailable:    4000000 kB\n"
ATARI_FRAMES = spaces.Box(0, 255, (4, 84, 84), np.uint8)


def machine(root: Path, files: dict[str, str]) -> Path:
    """A directory standing for / with the given files (paths relative to it)."""
    for relative, text in files.items():
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_text(text)
    return root


def limit_memory(monkeypatch, available: int | None) -> None:
    """The replay buffer sees `available` bytes of memory (None: unknown)."""
    memory = None if available is None else AvailableMemory(available, "a test's limit")
    monkeypatch.setattr(replay_module, "available_memory", lambda: memory)


def test_mem_available_is_the_bound_without_a_cgroup_limit(tmp_path):
    root = machine(tmp_path, {"proc/meminfo": MEMINFO, "proc/self/cgroup": "0::/jobs\n", "sys/fs/cgroup/jobs/memory.max": "max\n"})
    assert available_memory(root) == AvailableMemory(4_096_000_000, "MemAvailable in /proc/meminfo")


def test_the_tightest_cgroup_v2_headroom_of_the_process_and_its_ancestors_caps_it(tmp_path):
    """Headroom = limit - usage + inactive page cache (which the kernel reclaims first)."""
    root = machine(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "0::/jobs/run\n",
        "sys/fs/cgroup/jobs/memory.max": "3000000000\n",
        "sys/fs/cgroup/jobs/memory.current": "2000000000\n",
        "sys/fs/cgroup/jobs/memory.stat": "anon 1500000000\ninactive_file 500000000\n",
        "sys/fs/cgroup/jobs/run/memory.max": "1000000000\n",
        "sys/fs/cgroup/jobs/run/memory.current": "200000000\n",
        "sys/fs/cgroup/jobs/run/memory.stat": "anon 200000000\ninactive_file 0\n",
    })
    assert available_memory(root) == AvailableMemory(800_000_000, "the memory limit of cgroup /jobs/run (memory.max)")
    (root / "sys/fs/cgroup/jobs/run/memory.max").write_text("max\n")
    assert available_memory(root) == AvailableMemory(1_500_000_000, "the memory limit of cgroup /jobs (memory.max)")


def test_a_cgroup_v1_limit_counts_and_an_unlimited_one_does_not(tmp_path):
    """In a container the cgroup named in /proc/self/cgroup is the one mounted at the top."""
    root = machine(tmp_path, {
        "proc/meminfo": MEMINFO,
        "proc/self/cgroup": "5:cpu,cpuacct:/docker/abc\n4:memory:/docker/abc\n0::/\n",
        "sys/fs/cgroup/memory/memory.limit_in_bytes": "2000000000\n",
        "sys/fs/cgroup/memory/memory.usage_in_bytes": "1500000000\n",
        "sys/fs/cgroup/memory/memory.stat": "inactive_file 1\ntotal_inactive_file 250000000\n",
    })
    assert available_memory(root) == AvailableMemory(750_000_000, "the memory limit of cgroup / (memory.limit_in_bytes)")
    (root / "sys/fs/cgroup/memory/memory.limit_in_bytes").write_text("9223372036854771712\n")
    assert available_memory(root).source == "MemAvailable in /proc/meminfo"


@pytest.mark.parametrize("meminfo", [None, "MemTotal: 8000000 kB\n", "MemAvailable: plenty kB\n", "MemAvailable: 4000 MB\n"])
def test_unreadable_meminfo_means_nothing_is_known(tmp_path, meminfo):
    files = {"proc/self/cgroup": "0::/\n", "sys/fs/cgroup/memory.max": "1000\n", "sys/fs/cgroup/memory.current": "0\n"}
    root = machine(tmp_path, files if meminfo is None else {**files, "proc/meminfo": meminfo})
    assert available_memory(root) is None


def test_unreadable_cgroup_files_leave_mem_available(tmp_path):
    root = machine(tmp_path, {"proc/meminfo": MEMINFO, "proc/self/cgroup": "garbage\n"})
    assert available_memory(root).bytes == 4_096_000_000


@pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")
def test_this_machine_has_some_memory_available():
    assert available_memory().bytes > 0


def test_a_buffer_that_does_not_fit_names_its_size_the_memory_and_the_largest_that_fits(monkeypatch):
    """1,000 Atari transitions stored whole: 2 x 28,224 + 8 + 6 bytes each."""
    limit_memory(monkeypatch, 10_000_000)
    with pytest.raises(InsufficientMemoryError) as raised:
        ReplayBuffer(1000, ATARI_FRAMES, spaces.Discrete(6), storage="full")
    message = str(raised.value)
    assert "a replay buffer of 1_000 transitions of (4, 84, 84) uint8 observations ('full' storage) takes 56.5 MB" in message
    assert "more than 90% of the 10.0 MB of memory available (a test's limit)" in message
    assert "buffer_size=159 is the largest that fits" in message  # 159 x 56,462 bytes <= 9,000,000 < 160 x 56,462
    # "shared": 28,246 bytes each, plus the newest next observation and 64 final ones (28,224 bytes each);
    # "frames": 7,079 bytes each, plus the newest next observation, 64 final frames (7,056) and one step count.
    assert "or replay_storage='shared' (30.1 MB), or replay_storage='frames' (7.6 MB if the observations are frame stacks" in message
    assert "check_replay_memory=False" in message and "--no-memory-check" in message
    assert ReplayBuffer(159, ATARI_FRAMES, spaces.Discrete(6)).capacity == 159
    with pytest.raises(InsufficientMemoryError):
        ReplayBuffer(160, ATARI_FRAMES, spaces.Discrete(6))


def test_the_largest_buffer_that_fits_counts_whole_rows_of_envs(monkeypatch):
    limit_memory(monkeypatch, 10_000_000)
    with pytest.raises(InsufficientMemoryError, match="buffer_size=156 is the largest"):
        ReplayBuffer(1000, ATARI_FRAMES, spaces.Discrete(6), n_envs=12)  # 13 rows of 12 fit, 14 do not
    with pytest.raises(InsufficientMemoryError, match="not even the smallest buffer fits"):
        ReplayBuffer(1000, ATARI_FRAMES, spaces.Discrete(6), n_envs=200)


def test_discrete_observations_are_sized_and_checked(monkeypatch):
    """A Discrete observation is one int64 with no axis: sizing it read its shape's first axis and
    raised an IndexError, so DQN could not be built on FrozenLake, Taxi or CliffWalking."""
    limit_memory(monkeypatch, 10_000_000)
    states, actions = spaces.Discrete(16), spaces.Discrete(4)
    assert ReplayBuffer.bytes_needed(10, states, actions) == 10 * (2 * 8 + 8 + 4 + 1 + 1)
    assert ReplayBuffer.bytes_needed(10, states, actions, "shared") == 10 * (8 + 8 + 4 + 1 + 1 + 8)
    assert ReplayBuffer(100, states, actions).capacity == 100
    assert rlfoundry.DQN("FrozenLake-v1", buffer_size=100, quiet=True).replay.capacity == 100


def test_check_memory_false_builds_the_buffer_anyway(monkeypatch):
    limit_memory(monkeypatch, 10_000_000)
    assert ReplayBuffer(1000, ATARI_FRAMES, spaces.Discrete(6), check_memory=False).capacity == 1000


def test_without_a_known_amount_of_memory_nothing_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr(replay_module, "available_memory", lambda: available_memory(tmp_path))  # no /proc there
    assert ReplayBuffer(1000, ATARI_FRAMES, spaces.Discrete(6)).capacity == 1000


@pytest.mark.parametrize(
    ("cls", "env_id", "config"),
    [(rlfoundry.DQN, "CartPole-v1", dict(buffer_size=2000)), (rlfoundry.SAC, "Pendulum-v1", TINY), (rlfoundry.TD3, "Pendulum-v1", TINY)],
)
def test_algorithms_refuse_a_buffer_that_does_not_fit_unless_told_not_to_check(monkeypatch, cls, env_id, config):
    limit_memory(monkeypatch, 10_000)
    with pytest.raises(InsufficientMemoryError, match="buffer_size=.* is the largest that fits"):
        cls(env_id, quiet=True, **config)
    model = cls(env_id, quiet=True, check_replay_memory=False, **config)
    assert (model.replay if cls is rlfoundry.DQN else model.collector.replay).capacity == 2000


def test_rlf_resume_set_check_replay_memory_is_the_load_option(monkeypatch, tmp_path, capsys):
    """--set check_replay_memory=false does what --no-memory-check does (it raised a TypeError: the
    keyword given to load twice), and =true checks a checkpoint saved without the check."""
    rlfoundry.DQN(
        "CartPole-v1", hidden_sizes=(8,), buffer_size=2000, learning_starts=16, check_replay_memory=False, quiet=True,
    ).learn(16).save(tmp_path / "dqn")
    limit_memory(monkeypatch, 10_000)
    resume = ["resume", str(tmp_path / "dqn"), "--steps", "1", "--runs-dir", str(tmp_path / "runs"), "--quiet"]
    assert main([*resume, "--set", "check_replay_memory=true"]) == 2
    assert "buffer_size=" in capsys.readouterr().err
    assert main([*resume, "--set", "check_replay_memory=true", "--no-memory-check"]) == 2
    assert capsys.readouterr().err == (
        "rlf resume: error: --set check_replay_memory=true and --no-memory-check contradict each other: give one of them\n"
    )
    assert not (tmp_path / "runs").exists()
    assert main([*resume, "--set", "check_replay_memory=false"]) == 0


def test_a_checkpoint_whose_buffer_does_not_fit_is_refused_when_loaded_unless_told_not_to_check(monkeypatch, tmp_path, capsys):
    model = rlfoundry.DQN("CartPole-v1", hidden_sizes=(8,), buffer_size=2000, learning_starts=16, quiet=True).learn(64)
    model.save(tmp_path / "dqn")
    rlfoundry.PPO("CartPole-v1", hidden_sizes=(8,), n_steps=8, batch_size=8, n_epochs=1, quiet=True).save(tmp_path / "ppo")
    limit_memory(monkeypatch, 10_000)
    with pytest.raises(InsufficientMemoryError, match="buffer_size=.* is the largest that fits"):
        rlfoundry.load(tmp_path / "dqn")
    loaded = rlfoundry.load(tmp_path / "dqn", check_replay_memory=False)
    np.testing.assert_array_equal(loaded.replay.observations, model.replay.observations)
    # Left unread, the buffer is still the one the model would refill, which the check weighs (README).
    with pytest.raises(InsufficientMemoryError):
        rlfoundry.load(tmp_path / "dqn", replay_buffer=False)
    assert len(rlfoundry.load(tmp_path / "dqn", replay_buffer=False, check_replay_memory=False).replay) == 0
    assert main(["resume", str(tmp_path / "dqn"), "--steps", "1", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert "a replay buffer of 2_000 transitions of (4,) float32 observations ('full' storage) takes 0.1 MB" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()
    # An evaluation reads no replay buffer, so it checks none.
    assert main(["eval", str(tmp_path / "dqn"), "--episodes", "1"]) == 0
    with pytest.raises(ConfigError, match="ppo keeps no replay buffer: it has no memory check to skip, leave check_replay_memory out"):
        rlfoundry.load(tmp_path / "ppo", check_replay_memory=False)
    # The command line names its own flag, not the Python option.
    capsys.readouterr()
    assert main(["resume", str(tmp_path / "ppo"), "--steps", "1", "--no-memory-check", "--runs-dir", str(tmp_path / "runs")]) == 2
    assert capsys.readouterr().err.endswith("ppo keeps no replay buffer: it has no memory check to skip, leave --no-memory-check out\n")
    assert not (tmp_path / "runs").exists()
