"""The written-out forward and backward pass (rlfoundry.networks.manual_mlp) against autograd: the
gradients must be bitwise equal, so a DQN trained either way ends with identical weights."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from rlfoundry import DQN
from rlfoundry.losses.dqn import chosen_action_weights, q_value_loss, q_value_loss_gradient, td_error_loss, td_errors
from rlfoundry.networks.manual_mlp import ManualMLP
from rlfoundry.networks.q_networks import QNetwork

VECTOR = spaces.Box(-np.inf, np.inf, (5,), np.float32)


def autograd_gradients(network, observations, output_gradient):
    network.zero_grad(set_to_none=True)
    network(observations).backward(output_gradient)
    return [parameter.grad.clone() for parameter in network.parameters()]


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize(
    "space, observations",
    [
        (VECTOR, lambda generator: torch.randn(37, 5, generator=generator)),
        (spaces.Discrete(6), lambda generator: torch.randint(0, 6, (37,), generator=generator)),
        (spaces.Box(0, 255, (2, 3), np.uint8), lambda generator: torch.randint(0, 256, (37, 2, 3), generator=generator).to(torch.uint8)),
    ],
    ids=["float-vector", "discrete-one-hot", "uint8-flattened"],
)
def test_gradients_equal_autograd_bitwise(activation, space, observations):
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(1)
    network = QNetwork(space, 3, (16, 8), activation)
    inputs = observations(generator)
    output_gradient = torch.randn(37, 3, generator=generator)
    expected = autograd_gradients(network, inputs, output_gradient)
    manual = ManualMLP.of(network.torso, network.head)
    for parameter in network.parameters():
        parameter.grad.fill_(float("nan"))  # backward must overwrite, not accumulate
    with torch.no_grad():
        outputs = manual.forward(inputs)
        assert torch.equal(outputs[-1], network(inputs))
        manual.backward(outputs, output_gradient)
        for parameter, gradient in zip(network.parameters(), expected):
            assert torch.equal(parameter.grad, gradient)
        network.zero_grad(set_to_none=True)  # and allocate the buffers when there are none
        manual.backward(outputs, output_gradient)
    for parameter, gradient in zip(network.parameters(), expected):
        assert torch.equal(parameter.grad, gradient)


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_forward_into_a_kept_workspace_equals_the_module_for_any_rows_up_to_its_size(activation):
    torch.manual_seed(0)
    network = QNetwork(VECTOR, 3, (16, 8), activation)
    manual = ManualMLP.of(network.torso, network.head)
    workspace = manual.workspace(40)
    assert [tuple(buffer.shape) for buffer in workspace] == [(40, 16), (40, 8)]
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for rows in (40, 13, 40):  # a full pass, a shorter one, and the buffers reused after both
            inputs = torch.randn(rows, 5, generator=generator)
            outputs = manual.forward(inputs, workspace)
            assert outputs[1].data_ptr() == workspace[0].data_ptr()
            assert torch.equal(outputs[-1], network(inputs))


def test_dqn_target_pass_in_blocks_equals_the_target_network_at_once():
    model = DQN("CartPole-v1", seed=0, hidden_sizes=(32, 32))
    assert model.target_q_values.manual is not None
    with torch.no_grad():
        for parameter in model.target_parameters:
            parameter.normal_()  # a target network unlike the online one
        next_observations = torch.randn(2500, 4, generator=torch.Generator().manual_seed(4))  # 3 blocks, the last partial
        expected = model.target_network(next_observations)
    assert torch.equal(model.target_q_values(next_observations), expected)


def test_networks_it_does_not_cover_keep_autograd():
    gelu = QNetwork(VECTOR, 2, (8,), "gelu")
    cnn = QNetwork(spaces.Box(0, 255, (4, 84, 84), np.uint8), 2)
    assert ManualMLP.of(gelu.torso, gelu.head) is None
    assert ManualMLP.of(cnn.torso, cnn.head) is None


def written_out_gradient(q_values, actions, targets, loss):
    errors = td_errors(q_values, actions.unsqueeze(-1), targets.unsqueeze(-1))
    return q_value_loss_gradient(errors, chosen_action_weights(actions, q_values.shape[1], len(actions)), loss)


@pytest.mark.parametrize("loss", ["huber", "squared"])
@pytest.mark.parametrize("batch_size", [13, 64])
def test_loss_gradient_equals_autograd_bitwise(loss, batch_size):
    generator = torch.Generator().manual_seed(2)
    q_values = (3 * torch.randn(batch_size, 4, generator=generator)).requires_grad_()  # errors on both sides of 1
    actions = torch.randint(0, 4, (batch_size,), generator=generator)
    targets = 3 * torch.randn(batch_size, generator=generator)
    q_value_loss(q_values, actions, targets, loss).backward()
    gradient = written_out_gradient(q_values.detach(), actions, targets, loss)
    assert torch.equal(gradient, q_values.grad)
    assert (gradient != 0).sum() == batch_size  # only the taken actions move


def test_loss_and_its_gradient_by_hand():
    q_values = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    actions = torch.tensor([1, 0])
    targets = torch.tensor([0.5, 0.75])  # errors 1.5 and 0.25
    errors = td_errors(q_values, actions.unsqueeze(-1), targets.unsqueeze(-1))
    assert errors.tolist() == [[1.5], [0.25]]
    assert td_error_loss(errors, "huber").item() == (1.5 - 0.5 + 0.25**2 / 2) / 2
    assert td_error_loss(errors, "squared").item() == (1.5**2 + 0.25**2) / 2
    assert written_out_gradient(q_values, actions, targets, "huber").tolist() == [[0.0, 0.5], [0.125, 0.0]]
    assert written_out_gradient(q_values, actions, targets, "squared").tolist() == [[0.0, 1.5], [0.25, 0.0]]
    with pytest.raises(ValueError, match="loss='l1'"):
        written_out_gradient(q_values, actions, targets, "l1")
    with pytest.raises(ValueError, match="loss='l1'"):
        td_error_loss(errors, "l1")


def test_chosen_action_weights_of_a_burst_weight_each_row_by_its_minibatch_size():
    weights = chosen_action_weights(torch.tensor([2, 0, 1, 2]), 3, batch_size=2)  # two minibatches of 2
    assert weights.tolist() == [[0, 0, 0.5], [0.5, 0, 0], [0, 0.5, 0], [0, 0, 0.5]]


@pytest.mark.parametrize(("double_q", "loss"), [(False, "huber"), (True, "huber"), (False, "squared")])
def test_dqn_trains_to_the_same_weights_with_and_without_autograd(double_q, loss):
    settings = dict(
        seed=3, learning_starts=200, train_freq=16, gradient_steps=8, batch_size=32, target_update_interval=50,
        hidden_sizes=(32, 32), double_q=double_q, max_grad_norm=1.0, learning_rate=1e-3, loss=loss, backend="torch",
    )
    manual = DQN("CartPole-v1", **settings)
    assert manual.manual_mlp is not None
    autograd = DQN("CartPole-v1", **settings)
    autograd.manual_mlp = autograd.target_q_values.manual = None
    manual.learn(1200)
    autograd.learn(1200)
    assert manual.gradient_steps_done == autograd.gradient_steps_done > 0
    for (name, left), right in zip(manual.q_network.state_dict().items(), autograd.q_network.state_dict().values()):
        assert torch.equal(left, right), name
