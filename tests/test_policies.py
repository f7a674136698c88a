"""Policy distributions, heads and actor-critic composites against torch.distributions and hand values."""

import math

import numpy as np
import pytest
import torch
from gymnasium import spaces

from rlfoundry.envs.spaces import SpaceError
from rlfoundry.networks.torsos import MLP, orthogonal_init
from rlfoundry.networks.policies import (
    ActorCritic,
    Categorical,
    DiagonalGaussian,
    MultiCategorical,
    PolicyNetwork,
    ValueNetwork,
    env_actions,
)

BOX4 = spaces.Box(-np.inf, np.inf, (4,), np.float32)


def test_categorical_hand_values():
    distribution = Categorical(torch.tensor([[0.0, math.log(3.0)]]))
    assert distribution.probabilities.tolist()[0] == pytest.approx([0.25, 0.75], abs=1e-7)
    assert distribution.log_prob(torch.tensor([1])).item() == pytest.approx(math.log(0.75), abs=1e-7)
    expected_entropy = -(0.25 * math.log(0.25) + 0.75 * math.log(0.75))
    assert distribution.entropy().item() == pytest.approx(expected_entropy, abs=1e-7)
    assert distribution.mode().tolist() == [1]
    uniform = Categorical(torch.zeros(1, 2))
    # KL([1/4, 3/4] || [1/2, 1/2]) = 1/4 ln(1/2) + 3/4 ln(3/2)
    assert distribution.kl(uniform).item() == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5), abs=1e-7)


def test_categorical_matches_torch_distributions():
    generator = torch.Generator().manual_seed(0)
    logits, other_logits = torch.randn(2, 6, 5, generator=generator, dtype=torch.float64)
    actions = torch.randint(0, 5, (6,), generator=generator)
    ours, theirs = Categorical(logits), torch.distributions.Categorical(logits=logits)
    other = torch.distributions.Categorical(logits=other_logits)
    torch.testing.assert_close(ours.log_prob(actions), theirs.log_prob(actions))
    torch.testing.assert_close(ours.entropy(), theirs.entropy())
    torch.testing.assert_close(ours.kl(Categorical(other_logits)), torch.distributions.kl_divergence(theirs, other))


def test_categorical_sampling_frequencies():
    torch.manual_seed(0)
    samples = Categorical(torch.log(torch.tensor([[0.2, 0.5, 0.3]])).expand(20_000, 3)).sample()
    frequencies = torch.bincount(samples, minlength=3).double() / samples.numel()
    # 5 standard errors of a frequency estimated from 20 000 draws.
    bound = 5 * math.sqrt(0.25 / 20_000)
    assert frequencies.tolist() == pytest.approx([0.2, 0.5, 0.3], abs=bound)


def test_gaussian_matches_torch_normal():
    generator = torch.Generator().manual_seed(1)
    mean, other_mean, actions = torch.randn(3, 7, 3, generator=generator, dtype=torch.float64)
    log_std = torch.tensor([-0.5, 0.0, 0.7], dtype=torch.float64)
    # Summed over the dimensions, log_std and other_log_std differ (0.2 and 0.5): were they equal, a
    # sign error in the KL's log-ratio term sum_d (log sigma'_d - log sigma_d) would cancel out.
    other_log_std = torch.tensor([0.3, -0.2, 0.4], dtype=torch.float64)
    ours = DiagonalGaussian(mean, log_std)
    theirs = torch.distributions.Normal(mean, log_std.exp())
    other = torch.distributions.Normal(other_mean, other_log_std.exp())
    torch.testing.assert_close(ours.log_prob(actions), theirs.log_prob(actions).sum(-1))
    torch.testing.assert_close(ours.entropy(), theirs.entropy().sum(-1))
    torch.testing.assert_close(
        ours.kl(DiagonalGaussian(other_mean, other_log_std)), torch.distributions.kl_divergence(theirs, other).sum(-1)
    )
    assert torch.equal(ours.mode(), mean)


def test_gaussian_sampling_moments():
    torch.manual_seed(0)
    mean = torch.tensor([1.0, -2.0]).expand(50_000, 2)
    samples = DiagonalGaussian(mean, torch.log(torch.tensor([0.5, 2.0]))).sample()
    assert samples.mean(0).tolist() == pytest.approx([1.0, -2.0], abs=5 * 2.0 / math.sqrt(50_000))
    assert samples.std(0).tolist() == pytest.approx([0.5, 2.0], rel=0.02)


def test_multi_categorical_is_a_product_of_categoricals():
    generator = torch.Generator().manual_seed(2)
    logits, other_logits = torch.randn(2, 4, 5, generator=generator)
    actions = torch.tensor([[0, 2], [1, 0], [1, 1], [0, 2]])
    ours, other = MultiCategorical(logits, [2, 3]), MultiCategorical(other_logits, [2, 3])
    first, second = Categorical(logits[:, :2]), Categorical(logits[:, 2:])
    torch.testing.assert_close(ours.log_prob(actions), first.log_prob(actions[:, 0]) + second.log_prob(actions[:, 1]))
    torch.testing.assert_close(ours.entropy(), first.entropy() + second.entropy())
    expected_kl = first.kl(Categorical(other_logits[:, :2])) + second.kl(Categorical(other_logits[:, 2:]))
    torch.testing.assert_close(ours.kl(other), expected_kl)
    assert ours.sample().shape == (4, 2)
    assert ours.mode().shape == (4, 2)


@pytest.mark.parametrize(
    ("action_space", "action_shape", "kind"),
    [
        (spaces.Discrete(3), (5,), Categorical),
        (spaces.Box(-1.0, 1.0, (2,), np.float32), (5, 2), DiagonalGaussian),
        (spaces.MultiDiscrete([3, 4]), (5, 2), MultiCategorical),
    ],
)
def test_policy_network_builds_the_head_of_each_action_space(action_space, action_shape, kind):
    policy = PolicyNetwork(BOX4, action_space, hidden_sizes=(8,))
    distribution = policy(torch.randn(5, 4))
    assert isinstance(distribution, kind)
    actions = distribution.sample()
    assert actions.shape == action_shape
    assert distribution.log_prob(actions).shape == (5,)
    assert distribution.entropy().shape == (5,)
    assert distribution.kl(distribution.detach()).abs().max().item() < 1e-6


def test_gaussian_log_std_is_state_independent_and_learned():
    policy = PolicyNetwork(BOX4, spaces.Box(-1.0, 1.0, (3,), np.float32), log_std_init=-0.5)
    first, second = policy(torch.randn(1, 4)), policy(torch.randn(1, 4))
    assert torch.equal(first.log_std, second.log_std)
    assert first.log_std.tolist()[0] == [-0.5] * 3
    sample = first.sample()
    assert not sample.requires_grad  # an action is data: no reparameterisation gradient
    first.log_prob(sample).sum().backward()
    assert policy.head.log_std.grad is not None


def test_orthogonal_initialisation_gains():
    network = ActorCritic(BOX4, spaces.Discrete(3), hidden_sizes=(64, 64), orthogonal=True)
    first_layer = network.policy_torso.mlp[0].weight  # [64, 4]: orthonormal columns times sqrt(2)
    torch.testing.assert_close(first_layer.T @ first_layer, 2.0 * torch.eye(4), atol=1e-5, rtol=0)
    policy_output = network.policy_head.logits.weight  # [3, 64]: orthonormal rows times 0.01
    torch.testing.assert_close(policy_output @ policy_output.T, 1e-4 * torch.eye(3), atol=1e-9, rtol=0)
    value_output = network.value_head.weight  # [1, 64]: a unit row
    assert value_output.norm().item() == pytest.approx(1.0, abs=1e-5)
    assert all(bool((module.bias == 0).all()) for module in network.modules() if isinstance(module, torch.nn.Linear))
    default = ActorCritic(BOX4, spaces.Discrete(3), hidden_sizes=(64, 64), orthogonal=False)
    assert default.policy_head.logits.weight.abs().max().item() > 0.05  # PyTorch's default is much larger


def test_orthogonal_init_leaves_layers_without_a_bias_alone():
    """A layer made with bias=False (a caller's own network) has bias None: it used to raise."""
    network = torch.nn.Sequential(torch.nn.Linear(4, 8, bias=False), torch.nn.Conv2d(1, 2, 3, bias=False), torch.nn.Linear(8, 2))
    orthogonal_init(network, gain=2.0)
    weight = network[0].weight  # [8, 4]: orthonormal columns times 2
    torch.testing.assert_close(weight.T @ weight, 4.0 * torch.eye(4), atol=1e-5, rtol=0)
    assert network[0].bias is None and network[1].bias is None
    assert network[2].bias.tolist() == [0.0, 0.0]


def _value_gradient_reaches_policy(shared: bool) -> bool:
    network = ActorCritic(BOX4, spaces.Discrete(2), hidden_sizes=(8,), shared_torso=shared)
    network.value(torch.randn(3, 4)).sum().backward()
    return any(parameter.grad is not None and parameter.grad.abs().sum() > 0 for parameter in network.policy_parameters())


def test_shared_and_separate_torsos():
    assert _value_gradient_reaches_policy(shared=True)
    assert not _value_gradient_reaches_policy(shared=False)
    separate = ActorCritic(BOX4, spaces.Discrete(2), hidden_sizes=(8,))
    policy_ids = {id(parameter) for parameter in separate.policy_parameters()}
    value_ids = {id(parameter) for parameter in separate.value_parameters()}
    assert not policy_ids & value_ids
    assert policy_ids | value_ids == {id(parameter) for parameter in separate.parameters()}
    observations = torch.randn(3, 4)
    for network in (separate, ActorCritic(BOX4, spaces.Discrete(2), hidden_sizes=(8,), shared_torso=True)):
        distribution, values = network(observations)
        torch.testing.assert_close(values, network.value(observations))
        torch.testing.assert_close(distribution.log_probabilities, network.distribution(observations).log_probabilities)


def test_discrete_and_image_observations():
    one_hot = ValueNetwork(spaces.Discrete(5), hidden_sizes=())
    # With no hidden layer and one-hot inputs, V(s) = w_s + b: one free value per state.
    weights, bias = one_hot.head.weight[0], one_hot.head.bias[0]
    torch.testing.assert_close(one_hot(torch.tensor([0, 3])), torch.stack([weights[0], weights[3]]) + bias)
    images = spaces.Box(0, 255, (4, 84, 84), np.uint8)
    network = ActorCritic(images, spaces.Discrete(6), shared_torso=True)
    distribution, values = network(torch.zeros(2, 4, 84, 84, dtype=torch.uint8))
    assert distribution.log_probabilities.shape == (2, 6) and values.shape == (2,)


def test_images_the_cnn_cannot_read_are_clear_errors():
    with pytest.raises(SpaceError, match=r"channels-last \[H, W, C\].*shape \(3, 96, 96\)"):
        PolicyNetwork(spaces.Box(0, 255, (96, 96, 3), np.uint8), spaces.Discrete(5))
    with pytest.raises(SpaceError, match="at least 36 x 36 pixels"):
        PolicyNetwork(spaces.Box(0, 255, (4, 35, 84), np.uint8), spaces.Discrete(5))
    PolicyNetwork(spaces.Box(0, 255, (4, 36, 36), np.uint8), spaces.Discrete(5))  # the smallest that fits


def test_integer_box_actions_are_a_clear_error():
    """A Gaussian's samples used to be stored in the rollout's integer action array (truncated, so
    no longer the actions that were scored) and sent to the env as floats outside its space."""
    with pytest.raises(SpaceError, match=r"float Box.*Box\(0, 4, \(2,\), int64\).*MultiDiscrete"):
        PolicyNetwork(BOX4, spaces.Box(0, 4, (2,), np.int64))
    PolicyNetwork(BOX4, spaces.Box(-1.0, 1.0, (2,), np.float64))  # any float dtype is fine


def test_unsupported_spaces_are_clear_errors():
    with pytest.raises(SpaceError, match="Box actions must be a vector"):
        PolicyNetwork(BOX4, spaces.Box(-1.0, 1.0, (2, 2), np.float32))
    with pytest.raises(SpaceError, match="numbered from 0"):
        PolicyNetwork(BOX4, spaces.Discrete(3, start=1))
    with pytest.raises(SpaceError, match=r"MultiDiscrete actions must be numbered from 0, got MultiDiscrete\(\[3 2\], start"):
        PolicyNetwork(BOX4, spaces.MultiDiscrete([3, 2], start=[1, -1]))
    with pytest.raises(SpaceError, match=r"Discrete observations must be numbered from 0, got Discrete\(4, start=-2\)"):
        ValueNetwork(spaces.Discrete(4, start=-2))
    with pytest.raises(SpaceError, match="FlattenObservation"):
        PolicyNetwork(spaces.Dict({"x": BOX4}), spaces.Discrete(2))
    for observations in (spaces.MultiBinary(4), spaces.MultiDiscrete([3, 4])):
        with pytest.raises(SpaceError, match="FlattenObservation makes a Box of .*MultiBinary and MultiDiscrete"):
            ValueNetwork(observations)
    with pytest.raises(SpaceError, match="no policy head"):
        PolicyNetwork(BOX4, spaces.MultiBinary(3))


def test_flattened_multi_binary_and_multi_discrete_observations_are_taken():
    # What the error above tells users to do: FlattenObservation's Box (int8 bits, int64 one-hots).
    for observations, sample in ((spaces.MultiBinary(4), [1, 0, 0, 1]), (spaces.MultiDiscrete([3, 4]), [2, 0])):
        flat = spaces.flatten_space(observations)
        values = ValueNetwork(flat)(torch.as_tensor(spaces.flatten(observations, np.array(sample))[None]))
        assert values.shape == (1,) and torch.isfinite(values).all()


def test_env_actions_clip_only_box_actions():
    box = spaces.Box(np.array([-1.0, 0.0], np.float32), np.array([1.0, 2.0], np.float32))
    assert env_actions(np.array([[-3.0, 1.0], [0.5, 9.0]]), box).tolist() == [[-1.0, 1.0], [0.5, 2.0]]
    discrete = np.array([0, 5])
    assert env_actions(discrete, spaces.Discrete(6)) is discrete


@pytest.mark.parametrize("activation", ["relu", "tanh", "elu", "gelu"])
def test_mlp_gradients_match_finite_differences(activation):
    # ReLU works in place after each linear layer (torsos.activation_layer); autograd must still see
    # the right derivative for the weights and the inputs.
    torch.manual_seed(0)
    mlp = MLP(3, (5, 4), activation).double()
    names = [name for name, _ in mlp.named_parameters()]
    parameters = [parameter.detach().clone().requires_grad_() for parameter in mlp.parameters()]
    inputs = torch.randn(6, 3, dtype=torch.float64, requires_grad=True)

    def outputs(inputs, *parameters):
        return torch.func.functional_call(mlp, dict(zip(names, parameters)), (inputs,))

    assert torch.autograd.gradcheck(outputs, (inputs, *parameters))
    assert torch.autograd.gradgradcheck(outputs, (inputs, *parameters))


def test_mlp_names_an_unknown_activation_even_without_hidden_layers():
    for widths in [(), (4,)]:
        with pytest.raises(ValueError, match=r"activation='swish' is not allowed: choose one of tanh, relu"):
            MLP(3, widths, "swish")
