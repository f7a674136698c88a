"""Each model draws its training randomness from its own generators (numpy's `rng` and the torch
generator of its collector): training two models in turn in one process, or drawing from torch's
global generator between learn() calls, leaves every model's training as it would be alone."""

import pytest
import torch

import rlfoundry
from rlfoundry.run.checkpoint import load_checkpoint
from rlfoundry.run.lifecycle import restore_torch_generator
from rlfoundry.run.seeding import torch_generator

# Algorithms whose training draws from torch: sampled actions (on-policy, REINFORCE), SAC's
# reparameterised actions, TD3's target smoothing noise.
SMALL_MODELS = {
    "PPO": lambda seed: rlfoundry.PPO("CartPole-v1", seed=seed, n_envs=2, n_steps=32, batch_size=32, n_epochs=2,
                                      hidden_sizes=(16,), quiet=True),
    "REINFORCE": lambda seed: rlfoundry.REINFORCE("CartPole-v1", seed=seed, hidden_sizes=(16,), quiet=True),
    "SAC": lambda seed: rlfoundry.SAC("Pendulum-v1", seed=seed, learning_starts=32, batch_size=16,
                                      actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), quiet=True),
    "TD3": lambda seed: rlfoundry.TD3("Pendulum-v1", seed=seed, learning_starts=32, batch_size=16,
                                      actor_hidden_sizes=(16,), critic_hidden_sizes=(16,), quiet=True),
}


@pytest.mark.parametrize("name", sorted(SMALL_MODELS))
def test_models_trained_in_turn_each_train_as_they_would_alone(name, tmp_path):
    make = SMALL_MODELS[name]
    alone = make(1).learn(64).learn(64)
    first, second = make(1), make(2)
    for _ in range(2):
        first.learn(64)
        second.learn(64)
        torch.randn(100)  # the caller's own draws from the global generator
    assert first.steps == alone.steps
    saved_alone = load_checkpoint(alone.save(tmp_path / "alone")).tensors
    saved_first = load_checkpoint(first.save(tmp_path / "first")).tensors
    assert saved_first.keys() == saved_alone.keys()
    assert [key for key in saved_alone if not torch.equal(saved_first[key], saved_alone[key])] == []


def test_a_checkpoint_from_another_device_type_reseeds_the_generator(tmp_path):
    """A CUDA generator's state does not fit a CPU generator: the loaded model's draws start from
    the config's seed plus the step count instead, the rule for an env without a saved position."""
    model = SMALL_MODELS["PPO"](3).learn(64)
    checkpoint = load_checkpoint(model.save(tmp_path / "ppo"))
    saved = checkpoint.tensors.pop("rng.torch_cpu")
    checkpoint.tensors["rng.torch_cuda"] = saved
    generator = torch_generator(0, torch.device("cpu"))
    restore_torch_generator(checkpoint, generator)
    expected = torch.Generator().manual_seed(3 + 64)
    assert torch.equal(torch.rand(5, generator=generator), torch.rand(5, generator=expected))
