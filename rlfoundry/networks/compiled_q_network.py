"""DQN's gradient step and greedy acting compiled by numba: the online MLP's passes
(networks/compiled_mlp.py) with the loss's row function of losses/dqn.py.

For L(theta) = mean_i l(delta_i), delta_i = Q(s_i, a_i; theta) - y_i with the targets y held fixed,
the loss's gradient with respect to the outputs is dL/dQ(s_i, a) = 1[a = a_i] l'(delta_i) / B
(losses.dqn.q_value_loss_gradient); one call computes the forward pass, the TD errors, that
gradient and the backward pass into the parameters' .grad, and CompiledAdam then takes the
optimiser's step. A burst's steps run in one call: DQN's targets come made (the target network's
pass over the whole burst and the max stay PyTorch code of rlfoundry.algorithms.dqn); Double DQN's
need the online network as each step finds it, so the call makes them step by step from the
target network's values.

Covered: MLPs with ReLU or tanh (ManualMLP) on float32 CPU tensors; the Nature CNN keeps PyTorch.
"""

from __future__ import annotations

import numpy as np
import torch

from rlfoundry.losses import dqn
from rlfoundry.networks.compiled_mlp import FLOAT, CompiledAdam, CompiledMLP, KernelMemory, clipped_adam, inline_kernel, kernel
from rlfoundry.networks.compiled_mlp import mlp_backward, mlp_forward, rebuilt_on_deepcopy
from rlfoundry.networks.manual_mlp import ManualMLP

td_error_row = inline_kernel(dqn.td_error_row)
double_dqn_target_row = inline_kernel(dqn.double_dqn_target_row)


@kernel
def q_gradient(observations, actions, targets, huber, network, outputs, output_gradient, errors, tanh):
    """Write dL/dtheta into the network's .grad and delta_i into errors [B]; return L.
    actions int64 [B], targets [B]; network as CompiledMLP.arrays()."""
    weights, biases, weight_gradients, bias_gradients, hidden, scratch = network
    rows = observations.shape[0]
    mlp_forward(observations, weights, biases, hidden, outputs[:rows], tanh)
    gradient = output_gradient[:rows]
    gradient[:] = 0
    loss = 0.0
    for row in range(rows):
        action = actions[row]
        error = outputs[row, action] - targets[row]
        errors[row] = error
        value, derivative = td_error_row(float(error), huber)
        loss += value
        gradient[row, action] = derivative / rows
    mlp_backward(observations, weights, hidden, gradient, weight_gradients, bias_gradients, scratch, tanh)
    return loss / rows


@kernel
def q_gradient_step(observations, actions, targets, huber, network, outputs, output_gradient, errors, tanh, adam):
    """q_gradient, then clipped_adam(*adam) on the gradient it wrote: one call per gradient step."""
    loss = q_gradient(observations, actions, targets, huber, network, outputs, output_gradient, errors, tanh)
    clipped_adam(*adam)
    return loss


@kernel
def double_dqn_targets_now(targets, rewards, discounts, terminated, next_observations, next_target_values, network,
                           outputs, tanh):
    """targets [B] = Double DQN's targets (double_dqn_target_row), the next actions picked by the
    online network as its parameters are now; next_target_values [B, A] = Q(s', .; theta^-)."""
    weights, biases, _, _, hidden, _ = network
    rows = next_observations.shape[0]
    mlp_forward(next_observations, weights, biases, hidden, outputs[:rows], tanh)
    for row in range(rows):
        targets[row] = double_dqn_target_row(float(rewards[row]), float(discounts[row]), terminated[row], outputs[row],
                                             next_target_values[row])


@kernel
def q_gradient_steps(observations, actions, targets, batch_size, huber, network, outputs, output_gradient, errors, tanh,
                     adam, double_q):
    """q_gradient_step on each consecutive minibatch of batch_size rows (N a multiple of it), in
    order: a burst of gradient steps in one call. TD errors into errors [N]; returns the mean loss
    over the minibatches. double_q None: targets [N] are given; else (rewards, discounts,
    terminated, next_observations, next_target_values) and each minibatch's Double DQN targets are
    written into targets just before its step (double_dqn_targets_now)."""
    steps = observations.shape[0] // batch_size
    total = 0.0
    for step in range(steps):
        rows = slice(step * batch_size, (step + 1) * batch_size)
        if double_q is not None:
            rewards, discounts, terminated, next_observations, next_target_values = double_q
            double_dqn_targets_now(targets[rows], rewards[rows], discounts[rows], terminated[rows],
                                   next_observations[rows], next_target_values[rows], network, outputs, tanh)
        total += q_gradient(observations[rows], actions[rows], targets[rows], huber, network, outputs, output_gradient,
                            errors[rows], tanh)
        clipped_adam(*adam)
    return total / steps


@kernel
def greedy_actions(observations, weights, biases, hidden, outputs, actions, tanh):
    """argmax_a Q(s, a) per row, the lowest index on ties (as torch's argmax; a NaN row gives 0)."""
    mlp_forward(observations, weights, biases, hidden, outputs, tanh)
    for row in range(outputs.shape[0]):
        best = 0
        for action in range(1, outputs.shape[1]):
            if outputs[row, action] > outputs[row, best]:
                best = action
        actions[row] = best


@rebuilt_on_deepcopy
class CompiledQNetwork:
    """The online Q-network of DQN as a CompiledMLP, with the buffers of its passes and, given the
    torch optimizer (an Adam) and the flat gradient its .grad are views of, its compiled Adam step."""

    def __init__(self, manual: ManualMLP, rows: int, optimizer: torch.optim.Optimizer | None = None,
                 flat_gradient: torch.Tensor | None = None):
        self.network = CompiledMLP(manual, rows)
        self.adam = None if optimizer is None or flat_gradient is None else CompiledAdam(optimizer, flat_gradient)
        self.memory = KernelMemory(manual.weights + manual.biases)
        self.n_actions = len(manual.weights[-1])
        self.rows = 0
        self.reserve(rows)

    def reserve(self, rows: int) -> None:
        if rows > self.rows:
            self.rows = rows
            self.network.reserve(rows)
            self.outputs = np.zeros((rows, self.n_actions), FLOAT)
            self.output_gradient = np.zeros((rows, self.n_actions), FLOAT)

    def gradient(self, observations: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor, huber: bool,
                 max_grad_norm: float | None = None) -> tuple[float, torch.Tensor]:
        """Write the minibatch loss's gradient into .grad; return (L, the TD errors [B, 1]).
        observations [B, *obs], actions [B] or [B, 1] integers, targets [B] or [B, 1]. With an
        optimizer, the same call then clips the gradient to max_grad_norm and takes its Adam step."""
        self.memory.reattach()  # where user code replaced param.data or .grad
        rows = len(observations)
        self.reserve(rows)
        errors = np.empty((rows, 1), FLOAT)
        arguments = (
            self.network.inputs(observations), actions.reshape(-1).numpy().astype(np.int64, copy=False),
            targets.reshape(-1).numpy(), huber, self.network.arrays(), self.outputs, self.output_gradient, errors[:, 0],
            self.network.tanh,
        )
        if self.adam is None:
            loss = q_gradient(*arguments)
        else:
            loss = q_gradient_step(*arguments, self.adam.kernel_arguments(max_grad_norm))
        return loss, torch.from_numpy(errors)

    def gradient_steps(self, observations: torch.Tensor, actions: torch.Tensor, targets: torch.Tensor | None,
                       batch_size: int, huber: bool, max_grad_norm: float | None,
                       double_q: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor:
        """Adam steps (clipped to max_grad_norm) on the consecutive minibatches of batch_size rows of
        a burst, in order, each on the loss of its rows against their targets; returns the TD errors
        [N, 1] of each row before its step. observations [N, *obs], actions and targets [N] or [N, 1].
        Double DQN: targets None and double_q = (rewards [N], discounts [N], terminated [N] bool,
        next_observations [N, *obs], Q(s', .; theta^-) [N, A]); each minibatch's targets are then
        made just before its step, by the online network as the steps before it left it."""
        if self.adam is None:
            raise ValueError("gradient_steps takes Adam steps: build the CompiledQNetwork with its optimizer")
        self.memory.reattach()  # where user code replaced param.data or .grad
        rows = len(observations)
        if rows % batch_size:
            raise ValueError(f"a burst of {rows} rows is not a whole number of minibatches of {batch_size}")
        self.reserve(batch_size)
        errors = np.empty((rows, 1), FLOAT)
        if double_q is None:
            assert targets is not None  # given unless Double DQN makes them
            target_array = targets.reshape(-1).numpy()
            double_q_arrays = None
        else:
            rewards, discounts, terminated, next_observations, next_target_values = double_q
            target_array = np.empty(rows, FLOAT)
            double_q_arrays = (rewards.numpy(), discounts.numpy(), terminated.numpy(),
                               self.network.inputs(next_observations), next_target_values.numpy())
        q_gradient_steps(
            self.network.inputs(observations), actions.reshape(-1).numpy().astype(np.int64, copy=False),
            target_array, batch_size, huber, self.network.arrays(), self.outputs, self.output_gradient,
            errors[:, 0], self.network.tanh, self.adam.kernel_arguments(max_grad_norm), double_q_arrays,
        )
        return torch.from_numpy(errors)

    def greedy(self, observations: np.ndarray) -> np.ndarray:
        """argmax_a Q(s, a; theta) int64 [B] for a batch of observations."""
        self.memory.reattach()  # where user code replaced param.data or .grad
        inputs = self.network.inputs(observations)
        rows = len(inputs)
        self.reserve(rows)
        actions = np.empty(rows, np.int64)
        network = self.network
        greedy_actions(inputs, network.weights, network.biases, network.hidden, self.outputs[:rows], actions, network.tanh)
        return actions
