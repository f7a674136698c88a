"""How much memory this process can still take, so that a run that cannot fit is refused up front.

numpy's zeros are committed page by page as they are written, so a replay buffer far larger than
the machine's memory is accepted at construction and the kernel kills the run hours later, when
the buffer fills. On Linux the memory a new allocation can take is /proc/meminfo's MemAvailable
(free memory plus the page cache and slabs the kernel can reclaim without swapping), capped by
the headroom under the memory limit of the process's cgroup and of each cgroup above it (v2's
memory.max, v1's memory.limit_in_bytes): the limit less the working set, i.e. the usage less the
inactive page cache, as the kubelet counts it. Elsewhere, or where /proc/meminfo cannot be read,
nothing is known and nothing is refused.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

from rlfoundry.run.config import ConfigError

USABLE_FRACTION = 0.9
"""The share of the available memory one buffer may take. The rest is for what the run allocates
after it: minibatches, torch's and the env's own memory, the side store of final observations
beyond its estimate; and MemAvailable is itself an estimate (part of the page cache it counts is
in use and costs time to give back). A buffer that misses by less is not certain to fail, which
is what check_replay_memory=False is for."""

# cgroup version -> (where it is mounted, limit file, usage file, memory.stat key of the inactive page cache)
CGROUP_FILES = {
    2: ("sys/fs/cgroup", "memory.max", "memory.current", "inactive_file"),
    1: ("sys/fs/cgroup/memory", "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"),
}


class InsufficientMemoryError(ConfigError, MemoryError):
    """A setting (a replay buffer's size, say) that needs more memory than this process can take."""


class AvailableMemory(NamedTuple):
    """Bytes a new allocation can take, and where that bound comes from (for error messages)."""

    bytes: int
    source: str


def available_memory(root: Path = Path("/")) -> AvailableMemory | None:
    """The memory this process can still take (see the module docstring), or None where unknown.
    `root` is where /proc and /sys are found (tests pass a directory of made-up files)."""
    try:
        available = AvailableMemory(_meminfo_bytes(root / "proc/meminfo", "MemAvailable"), "MemAvailable in /proc/meminfo")
    except (OSError, ValueError):
        return None
    try:
        headrooms = list(_cgroup_headrooms(root))
    except (OSError, ValueError):  # an unreadable /proc/self/cgroup: no limit known
        headrooms = []
    return min([available, *headrooms], key=lambda memory: memory.bytes)


def _meminfo_bytes(path: Path, key: str) -> int:
    """A field of /proc/meminfo ("MemAvailable:   24067632 kB") in bytes."""
    for line in path.read_text().splitlines():
        name, _, value = line.partition(":")
        if name == key:
            number, unit = value.split()
            if unit != "kB":
                raise ValueError(f"{key} in {path} is in {unit!r}, not kB")
            return int(number) * 1024
    raise ValueError(f"{path} has no {key}")


def _cgroup_headrooms(root: Path) -> Iterator[AvailableMemory]:
    """The headroom under each memory limit set on the process's cgroups (v2 and v1) and their ancestors."""
    for line in (root / "proc/self/cgroup").read_text().splitlines():
        _, controllers, path = line.split(":", 2)
        version = 2 if controllers == "" else 1 if "memory" in controllers.split(",") else None
        if version is None:
            continue
        mount, limit_file, usage_file, inactive_key = CGROUP_FILES[version]
        top = root / mount
        directory = top / path.lstrip("/")
        if not directory.is_dir():
            # In a container without a cgroup namespace, its own cgroup is mounted at the top.
            directory = top
        while True:
            headroom = _headroom(directory, limit_file, usage_file, inactive_key)
            if headroom is not None:
                name = "/" if directory == top else "/" + directory.relative_to(top).as_posix()
                yield AvailableMemory(headroom, f"the memory limit of cgroup {name} ({limit_file})")
            if directory == top:
                break
            directory = directory.parent


def _headroom(directory: Path, limit_file: str, usage_file: str, inactive_key: str) -> int | None:
    """limit - (usage - inactive page cache) in one cgroup directory; None without a limit there."""
    try:
        limit = (directory / limit_file).read_text().strip()
        if limit == "max":
            return None
        usage = int((directory / usage_file).read_text())
        stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
        return max(int(limit) - usage + int(stat.get(inactive_key, 0)), 0)
    except (OSError, ValueError):
        return None
