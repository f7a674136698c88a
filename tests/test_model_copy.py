"""copy.deepcopy of a model gives an independent model that trains exactly as the original does.

The compiled backends train numpy views of the torch parameters, gradients and Adam state, and the
written-out gradients are views of one flat tensor: a field-by-field copy would leave the copy's
kernels stepping memory its networks no longer read (it then never learned). Here the copy and the
original take the same steps from the same state and must end bitwise equal, and apart.
"""

from __future__ import annotations

import copy

import pytest
import torch

from rlfoundry import A2C, DDPG, DQN, PPO, SAC, TD3

OFF_POLICY = {"learning_starts": 64, "batch_size": 32, "actor_hidden_sizes": (16, 16), "critic_hidden_sizes": (16, 16),
              "quiet": True}
CASES = {
    "dqn": lambda backend: DQN("CartPole-v1", learning_starts=64, train_freq=4, gradient_steps=2, batch_size=16,
                               hidden_sizes=(16, 16), quiet=True, backend=backend),
    "double-dqn": lambda backend: DQN("CartPole-v1", double_q=True, learning_starts=64, train_freq=4, batch_size=16,
                                      hidden_sizes=(16, 16), quiet=True, backend=backend),
    "dqn-two-threads": lambda backend: DQN("CartPole-v1", learning_starts=64, train_freq=4, gradient_steps=2, batch_size=16,
                                           hidden_sizes=(16, 16), torch_threads=2, quiet=True, backend=backend),
    "ppo": lambda backend: PPO("CartPole-v1", n_steps=32, batch_size=16, n_epochs=2, quiet=True, backend=backend),
    "ppo-gaussian": lambda backend: PPO("Pendulum-v1", n_steps=32, batch_size=16, n_epochs=2, quiet=True, backend=backend),
    "a2c": lambda backend: A2C("CartPole-v1", n_steps=8, quiet=True, backend=backend),
    "sac": lambda backend: SAC("Pendulum-v1", **OFF_POLICY, backend=backend),
    "sac-two-threads": lambda backend: SAC("Pendulum-v1", **OFF_POLICY, torch_threads=2, backend=backend),
    "td3": lambda backend: TD3("Pendulum-v1", **OFF_POLICY, backend=backend),
    "ddpg": lambda backend: DDPG("Pendulum-v1", **OFF_POLICY, torch_threads=2, backend=backend),
}


def tensors(model) -> dict[str, torch.Tensor]:
    """Every parameter of the model's networks and every tensor of its optimisers' state, by name."""
    found = {}
    for attribute, value in vars(model).items():
        if isinstance(value, torch.nn.Module):
            found.update({f"{attribute}.{name}": parameter for name, parameter in value.named_parameters()})
        elif isinstance(value, torch.optim.Optimizer):
            for index, state in enumerate(value.state.values()):
                found.update({f"{attribute}.{index}.{key}": tensor for key, tensor in state.items()})
    return found


@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_deep_copy_trains_as_the_original_and_apart_from_it(case, backend):
    original = CASES[case](backend)
    original.learn(128)
    twin = copy.deepcopy(original)
    before = {name: tensor.clone() for name, tensor in tensors(original).items()}
    twin.learn(128)
    # The twin's training leaves the original alone...
    after_twin = tensors(original)
    assert all(torch.equal(before[name], after_twin[name]) for name in before)
    original.learn(128)
    trained, copied = tensors(original), tensors(twin)
    assert trained.keys() == copied.keys() and len(trained) > 0
    # ... and takes the steps the original then takes, bitwise.
    moved = [name for name in trained if not torch.equal(trained[name], before[name])]
    assert moved, "nothing trained"
    for name in trained:
        assert torch.equal(trained[name], copied[name]), name
        assert trained[name].data_ptr() != copied[name].data_ptr(), name
