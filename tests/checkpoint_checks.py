"""Shared by the checkpoint tests: two checkpoints hold the same numbers, bit for bit."""

import numpy as np
import torch

from rlfoundry.run.checkpoint import load_checkpoint


def saved_numbers(path):
    """Every tensor and array of a checkpoint, and its counters."""
    checkpoint = load_checkpoint(path)
    return checkpoint.counters, checkpoint.tensors, checkpoint.arrays


def assert_same_checkpoints(path, expected_path):
    """The counters, tensors (networks, optimisers, torch RNG) and arrays (replay buffer, env
    position, normalisation) of two checkpoints are equal, bit for bit."""
    counters, tensors, arrays = saved_numbers(path)
    expected_counters, expected_tensors, expected_arrays = saved_numbers(expected_path)
    assert counters == expected_counters
    assert tensors.keys() == expected_tensors.keys()
    assert [key for key in tensors if not torch.equal(tensors[key], expected_tensors[key])] == []
    assert arrays.keys() == expected_arrays.keys()
    assert [key for key in arrays if not np.array_equal(arrays[key], expected_arrays[key])] == []
