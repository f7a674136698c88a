"""Safe checkpoints: a directory of JSON, safetensors and .npy files, written atomically.

Layout of a checkpoint directory:
    manifest.json        schema version, algorithm, config, counters, JSON state, sha256 of files
    tensors.safetensors  every torch tensor (network weights, optimiser moments, torch RNG state)
    arrays/NAME.npy      every numpy array (Q tables, replay buffers), never unpickled

Nothing is ever unpickled. A save writes a temporary sibling directory, fsyncs it, and swaps it in
with renames, so an interrupted save leaves the previous checkpoint in place. A load reads the
arrays when they are asked for (`ArrayFiles`): a replay buffer goes from its files straight into
the new model's buffer (`copy_array`), so that loading it takes its size in memory once, not twice.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

# 2: state.env.env_kwargs, the keyword arguments the env was made with (an older rlfoundry, which
# rebuilds the env from its id alone, refuses such checkpoints instead of training on another env).
# Schema 1 checkpoints load as made without keyword arguments.
SCHEMA_VERSION = 2
MANIFEST = "manifest.json"
TENSORS = "tensors.safetensors"
ARRAYS = "arrays"
PREVIOUS_SUFFIX = ".previous"
# The manifest's entries besides schema_version, with the JSON type each must have.
MANIFEST_FIELDS = {"algorithm": str, "config": dict, "counters": dict, "state": dict, "files": dict}
# The .npy header readers of the format versions numpy writes (3.0 only for non-Latin-1 field names).
NPY_HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}


class CheckpointError(Exception):
    """Base class of every checkpoint problem."""


class CheckpointNotFoundError(CheckpointError, FileNotFoundError):
    """No checkpoint at the given path."""


class CheckpointCorruptError(CheckpointError):
    """A checkpoint whose files are missing, unreadable or do not match their recorded hashes."""


class CheckpointAlgorithmError(CheckpointError):
    """A checkpoint written by another algorithm than the one loading it."""


class CheckpointVersionError(CheckpointError):
    """A checkpoint written with a newer schema than this rlfoundry understands."""


class NonFiniteError(ValueError):
    """NaN or infinity in values that would be saved or trained on."""


@dataclass
class Checkpoint:
    """Everything an algorithm needs to continue exactly where it stopped."""

    algorithm: str
    config: dict[str, Any]
    counters: dict[str, int]
    state: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, torch.Tensor] = field(default_factory=dict)
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)
    """What a save writes: numpy arrays by name; what a load gives: the ArrayFiles that read them."""


class ArrayHeader(NamedTuple):
    """What the header of a checkpoint's .npy file says, where its data start, and which file it is."""

    file: Path
    shape: tuple[int, ...]
    dtype: np.dtype
    fortran_order: bool
    offset: int
    identity: tuple[int, ...]
    """(device, inode, size, modification time) when the checkpoint was loaded."""


class ArrayFiles(Mapping[str, np.ndarray]):
    """A loaded checkpoint's arrays by name, read from their .npy files when asked for: whole
    (`files[name]`, a new array) or straight into an existing array (`read_into`). The headers are
    checked on load (no object arrays, which would need unpickling; data as long as the header
    says); a file that changed since (another save over the checkpoint) is a CheckpointCorruptError."""

    def __init__(self, files: list[Path]):
        self.headers = {file.stem: _read_header(file) for file in files}

    def __getitem__(self, name: str) -> np.ndarray:
        header = self.headers[name]
        array = np.empty(header.shape, header.dtype, order="F" if header.fortran_order else "C")
        _read_data(header, array)
        return array

    def __iter__(self) -> Iterator[str]:
        return iter(self.headers)

    def __len__(self) -> int:
        return len(self.headers)

    def __contains__(self, name: object) -> bool:
        return name in self.headers  # without reading the file, as Mapping's would

    def read_into(self, name: str, destination: np.ndarray) -> None:
        """Read array `name` into `destination` (C-contiguous, of its shape and dtype, else ValueError)."""
        header = self.headers[name]
        _require_layout(name, header, destination)
        if header.fortran_order:  # rlfoundry writes C order; another tool may not
            destination[...] = self[name]
        else:
            _read_data(header, destination)


def copy_array(arrays: Mapping[str, np.ndarray], name: str, destination: np.ndarray) -> None:
    """destination[...] = arrays[name], for an array of exactly destination's shape and dtype (else
    ValueError); from a loaded checkpoint (ArrayFiles) without the whole array in memory on the way."""
    if isinstance(arrays, ArrayFiles):
        arrays.read_into(name, destination)
    else:
        _require_layout(name, arrays[name], destination)
        destination[...] = arrays[name]


def _require_layout(name: str, source: ArrayHeader | np.ndarray, destination: np.ndarray) -> None:
    if (source.shape, source.dtype) != (destination.shape, destination.dtype):
        raise ValueError(
            f"array {name!r} holds {source.dtype} values of shape {source.shape}, where "
            f"{destination.dtype} values of shape {destination.shape} are expected"
        )


def _read_header(file: Path) -> ArrayHeader:
    """The header of a .npy file; ValueError for an object array or data of another length than it says."""
    with open(file, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version not in NPY_HEADER_READERS:
            raise ValueError(f"{file.name} is in .npy format {version}, which rlfoundry does not write")
        shape, fortran_order, dtype = NPY_HEADER_READERS[version](handle)
        offset = handle.tell()
        status = os.fstat(handle.fileno())
    if dtype.hasobject:
        raise ValueError(f"{file.name}: Object arrays cannot be loaded when allow_pickle=False")
    expected = math.prod(shape) * dtype.itemsize
    if status.st_size - offset != expected:
        raise ValueError(f"{file.name} holds {status.st_size - offset} bytes of data where its header says {expected}")
    return ArrayHeader(file, shape, dtype, fortran_order, offset, _identity(status))


def _read_data(header: ArrayHeader, array: np.ndarray) -> None:
    """The file's data into `array` (contiguous in the file's order), in as few reads as the OS allows."""
    if array.nbytes == 0:
        return
    view = (array.T if header.fortran_order else array).data.cast("B")
    try:
        with open(header.file, "rb", buffering=0) as handle:
            if _identity(os.fstat(handle.fileno())) != header.identity:
                raise OSError("the file changed after the checkpoint was loaded")
            handle.seek(header.offset)
            done = 0
            while done < len(view):
                count = handle.readinto(view[done:])
                if not count:
                    raise OSError(f"the file ended {len(view) - done} bytes early")
                done += count
    except OSError as error:
        checkpoint = header.file.parent.parent
        raise CheckpointCorruptError(f"{checkpoint} holds a file that cannot be read safely: {header.file.name}: {error}") from None


def _identity(status: os.stat_result) -> tuple[int, ...]:
    return status.st_dev, status.st_ino, status.st_size, status.st_mtime_ns


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> Path:
    """Write `checkpoint` to the directory `path`, replacing an older one only when complete."""
    _require_finite(checkpoint)
    if not Path(path).name:
        # ".", "" or "/": a save renames the directory it replaces, which must have a name (and
        # must not be the working directory, which the process would be left inside, deleted).
        raise CheckpointError(
            f"cannot save to {os.fspath(path)!r}: a save replaces the directory it names, and this path names none; "
            "name the checkpoint's directory, e.g. checkpoints/NAME"
        )
    path = Path(path)
    _require_replaceable(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        temporary.chmod(0o777 & ~_current_umask())  # mkdtemp makes it private; checkpoints are not
        hashes = {}
        if checkpoint.tensors:
            tensors = {name: tensor.detach().cpu().contiguous() for name, tensor in checkpoint.tensors.items()}
            save_file(tensors, str(temporary / TENSORS))
            hashes[TENSORS] = _sha256(temporary / TENSORS)
        if checkpoint.arrays:
            (temporary / ARRAYS).mkdir()
            for name, array in checkpoint.arrays.items():
                _check_array_name(name)
                relative = f"{ARRAYS}/{name}.npy"
                np.save(temporary / relative, np.asarray(array, order="C"), allow_pickle=False)  # keeps 0-d arrays 0-d
                hashes[relative] = _sha256(temporary / relative)
        manifest = {
            "schema_version": SCHEMA_VERSION,
            "algorithm": checkpoint.algorithm,
            "config": checkpoint.config,
            "counters": checkpoint.counters,
            "state": checkpoint.state,
            "files": hashes,
        }
        (temporary / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        for file in temporary.rglob("*"):
            if file.is_file():
                _fsync(file)
        _fsync(temporary)
        _swap_into_place(temporary, path)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return path


def _require_replaceable(path: Path) -> None:
    """Refuse to write over anything but an rlfoundry checkpoint or an empty directory: a save
    removes what it replaces, so a mistyped path must not cost a user their files."""
    for existing in (path, path.with_name(path.name + PREVIOUS_SUFFIX)):
        if not existing.exists():
            continue
        if existing.is_dir() and ((existing / MANIFEST).is_file() or not any(existing.iterdir())):
            continue
        raise CheckpointError(
            f"{existing} exists and is not an rlfoundry checkpoint (a directory with {MANIFEST}): not writing "
            "over it; save to another path, or move it away first"
        )


def _swap_into_place(temporary: Path, path: Path) -> None:
    """Rename the finished directory to `path`; the old one is removed only afterwards."""
    previous = path.with_name(path.name + PREVIOUS_SUFFIX)
    if previous.exists() and path.exists():
        _remove_replaced(previous)
    if path.exists():
        os.replace(path, previous)
    os.replace(temporary, path)
    _fsync(path.parent)
    _remove_replaced(previous)


def _remove_replaced(previous: Path) -> None:
    """Remove a replaced checkpoint; one saved over through a symbolic link loses the link, never
    what it points to (rmtree refuses a link, which would leave it parked and fail every next save)."""
    if previous.is_symlink():
        previous.unlink()
    else:
        shutil.rmtree(previous, ignore_errors=True)


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of the checkpoint at `path`, checked for existence and schema version."""
    path = _existing_checkpoint(Path(path))
    try:
        manifest = json.loads((path / MANIFEST).read_text())
    except FileNotFoundError:
        raise CheckpointCorruptError(f"{path} has no {MANIFEST}: it is not a complete rlfoundry checkpoint") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointCorruptError(f"{path / MANIFEST} is not valid JSON ({error}): the checkpoint is corrupt") from None
    if not isinstance(manifest, dict):
        # Other tools write manifest.json files too (docker save's is a list).
        raise CheckpointCorruptError(
            f"{path / MANIFEST} is a JSON {_json_kind(manifest)}, not an object: it is not an rlfoundry checkpoint's manifest"
        )
    version = manifest.get("schema_version")
    if "schema_version" not in manifest:
        raise CheckpointCorruptError(f"{path / MANIFEST} has no schema_version: the checkpoint is corrupt")
    # JSON's true is a Python int too; schemas count from 1.
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointCorruptError(
            f"{path / MANIFEST} has schema_version {json.dumps(version)}, not a whole number from 1: the checkpoint is corrupt"
        )
    missing = [key for key in MANIFEST_FIELDS if key not in manifest]
    if missing:
        raise CheckpointCorruptError(f"{path / MANIFEST} lacks {', '.join(missing)}: the checkpoint is corrupt")
    for key, kind in MANIFEST_FIELDS.items():
        if not isinstance(manifest[key], kind):
            raise CheckpointCorruptError(
                f"{path / MANIFEST}: its {key} is a JSON {_json_kind(manifest[key])}, not {'a string' if kind is str else 'an object'}: "
                "the checkpoint is corrupt"
            )
    if version > SCHEMA_VERSION:
        raise CheckpointVersionError(
            f"{path} was written with checkpoint schema {version}, newer than this rlfoundry's "
            f"{SCHEMA_VERSION}: upgrade rlfoundry to load it"
        )
    return manifest


def load_checkpoint(path: str | os.PathLike, algorithm: str | None = None, skipped_arrays: str | None = None) -> Checkpoint:
    """Read and verify a checkpoint; `algorithm`, when given, must match the one that wrote it.
    Arrays whose names start with `skipped_arrays` ("replay.", say) are neither verified nor
    offered: a model that will not read its replay buffer does not hash gigabytes of it."""
    path = _existing_checkpoint(Path(path))
    manifest = read_manifest(path)
    if algorithm is not None and manifest["algorithm"] != algorithm:
        raise CheckpointAlgorithmError(
            f"{path} holds a {manifest['algorithm']} model, not {algorithm}: load it with "
            f"rlfoundry.load(path), which picks the right class"
        )
    files = {
        relative: expected for relative, expected in manifest["files"].items()
        if skipped_arrays is None or not relative.startswith(f"{ARRAYS}/{skipped_arrays}")
    }
    for relative, expected in files.items():
        file = path / relative
        if not file.is_file():
            raise CheckpointCorruptError(f"{path} is missing {relative}: the checkpoint is incomplete")
        if _sha256(file) != expected:
            raise CheckpointCorruptError(f"{file} does not match the hash in its manifest: the file is corrupt")
    try:
        tensors = load_file(str(path / TENSORS)) if TENSORS in manifest["files"] else {}
        arrays = ArrayFiles([path / relative for relative in files if relative.startswith(ARRAYS + "/")])
    except (ValueError, OSError) as error:
        # e.g. an object array, which would need unpickling: never done.
        raise CheckpointCorruptError(f"{path} holds a file that cannot be read safely: {error}") from None
    return Checkpoint(
        algorithm=manifest["algorithm"],
        config=manifest["config"],
        counters=manifest["counters"],
        state=manifest["state"],
        tensors=tensors,
        arrays=arrays,
    )


def _json_kind(value: Any) -> str:
    """The JSON type name of a value json.loads returned."""
    kinds = {dict: "object", list: "list", str: "string", bool: "boolean", int: "number", float: "number"}
    return kinds.get(type(value), "null")


def _existing_checkpoint(path: Path) -> Path:
    if path.is_dir():
        return path
    previous = path.with_name(path.name + PREVIOUS_SUFFIX)
    if previous.is_dir():
        # A save was interrupted between its two renames: the previous checkpoint is complete.
        return previous
    if path.exists():
        raise CheckpointCorruptError(f"{path} is a file; an rlfoundry checkpoint is a directory with {MANIFEST}")
    raise CheckpointNotFoundError(f"no checkpoint at {path}: check the path (a run's checkpoints are in RUN_DIR/checkpoints/)")


def _require_finite(checkpoint: Checkpoint) -> None:
    for name, tensor in checkpoint.tensors.items():
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise NonFiniteError(f"tensor {name!r} holds NaN or infinity: not saving, the previous checkpoint is kept")
    for name, array in checkpoint.arrays.items():
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise NonFiniteError(f"array {name!r} holds NaN or infinity: not saving, the previous checkpoint is kept")


def _check_array_name(name: str) -> None:
    if not name or not all(character.isalnum() or character in "_-." for character in name):
        raise ValueError(f"array name {name!r} must be letters, digits, '_', '-' or '.'")


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _sha256(file: Path) -> str:
    digest = hashlib.sha256()
    with open(file, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def run_checkpoints(run_dir: Path) -> list[Path]:
    """The run directory's final and latest checkpoints that exist, as load finds them: also one
    whose save stopped between its renames (only NAME.previous is there)."""
    paths = [run_dir / "checkpoints" / name for name in ("final", "latest")]
    return [path for path in paths if path.is_dir() or path.with_name(path.name + PREVIOUS_SUFFIX).is_dir()]


def checkpoint_steps(path: Path) -> int:
    """The env steps a checkpoint was trained for."""
    return read_manifest(path)["counters"]["steps"]
