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
from rlfoundry.networks.compiled_mlp import FLOAT, ActingBuffers, CompiledAdam, CompiledMLP, KernelMemory, clipped_adam
from rlfoundry.networks.compiled_mlp import inline_kernel, kernel, mlp_backward, mlp_forward, rebuilt_on_deepcopy
from rlfoundry.networks.kernel_threads import KernelThreads, meet, same_layout_views, split_clipped_adam
from rlfoundry.networks.manual_mlp import ManualMLP

td_error_row = inline_kernel(dqn.td_error_row)
double_dqn_target_row = inline_kernel(dqn.double_dqn_target_row)


@kernel
def q_gradient(observations, actions, targets, huber, network, outputs, output_gradient, errors, tanh, count):
    """Write dL/dtheta of these rows' part of a minibatch loss, sum_i l(delta_i) / count, into the
    network's .grad and delta_i into errors [B]; return that part of L (count = B: the whole loss).
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
        gradient[row, action] = derivative / count
    mlp_backward(observations, weights, hidden, gradient, weight_gradients, bias_gradients, scratch, tanh)
    return loss / count


@kernel
def q_gradient_step(observations, actions, targets, huber, network, outputs, output_gradient, errors, tanh, adam):
    """q_gradient, then clipped_adam(*adam) on the gradient it wrote: one call per gradient step."""
    loss = q_gradient(observations, actions, targets, huber, network, outputs, output_gradient, errors, tanh,
                      observations.shape[0])
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
def q_gradient_steps(part, parts, progress, observations, actions, targets, batch_size, huber, networks, outputs,
                     output_gradients, errors, tanh, adam, double_q, partner_gradient, squares, losses):
    """Part `part` of `parts` (1 or 2, run by kernel_threads.KernelThreads) of q_gradient_step on each
    consecutive minibatch of batch_size rows (N a multiple of it), in order: a burst of gradient steps
    in one call. With two parts each takes half of every minibatch's rows (networks[part]: the
    weights, its own gradient memory and buffers; part 1's gradient goes into partner_gradient's
    views), then split_clipped_adam joins the halves and steps. TD errors into errors [N]; this
    part's share of the mean loss over the minibatches into losses[part]. double_q None: targets [N]
    are given; else (rewards, discounts, terminated, next_observations, next_target_values) and each
    minibatch's Double DQN targets are written into targets just before its step (double_dqn_targets_now)."""
    network, outputs, output_gradient = networks[part], outputs[part], output_gradients[part]
    half = batch_size // 2
    low = 0 if part == 0 else half
    high = half if parts == 2 and part == 0 else batch_size
    steps = observations.shape[0] // batch_size
    total = 0.0
    phase = 0
    for step in range(steps):
        rows = slice(step * batch_size + low, step * batch_size + high)
        if double_q is not None:
            rewards, discounts, terminated, next_observations, next_target_values = double_q
            double_dqn_targets_now(targets[rows], rewards[rows], discounts[rows], terminated[rows],
                                   next_observations[rows], next_target_values[rows], network, outputs, tanh)
        total += q_gradient(observations[rows], actions[rows], targets[rows], huber, network, outputs, output_gradient,
                            errors[rows], tanh, batch_size)
        if parts == 1:
            clipped_adam(*adam)
            continue
        # Both halves' gradients written; then the halves' sums and steps; then the weights are whole.
        if not meet(progress, part, 2, phase + 1) or not split_clipped_adam(part, progress, phase + 2, adam,
                                                                            partner_gradient, squares):
            return
        phase += 3
    losses[part] = total / steps


@kernel
def forward_blocks(part, parts, progress, inputs, weights, biases, hiddens, outputs, block_rows, tanh):
    """outputs [N, out] = the network at inputs [N, in], block by block of block_rows rows (each block's
    activations stay in the cache), part p taking blocks p, p + parts, ...: no sum is split."""
    hidden = hiddens[part]
    rows = inputs.shape[0]
    for start in range(part * block_rows, rows, parts * block_rows):
        stop = min(start + block_rows, rows)
        mlp_forward(inputs[start:stop], weights, biases, hidden, outputs[start:stop], tanh)


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
                 flat_gradient: torch.Tensor | None = None, threads: int = 1, target: ManualMLP | None = None,
                 block_rows: int = 1024):
        self.network = CompiledMLP(manual, rows)
        self.adam = None if optimizer is None or flat_gradient is None else CompiledAdam(optimizer, flat_gradient)
        # The target network's passes over a burst (target_values), in blocks of block_rows rows.
        self.target = None if target is None else CompiledMLP(target, 0, gradients=False)
        self.block_rows = block_rows
        widths = [] if self.target is None else self.target.widths
        self.target_hidden = tuple(tuple(np.zeros((block_rows, width), FLOAT) for width in widths) for _ in range(2))
        # The target network is only read, and its updates (Polyak, load_state_dict) write in place.
        self.memory = KernelMemory(manual.weights + manual.biases)
        self.n_actions = len(manual.weights[-1])
        self.acting = ActingBuffers(self.network.widths, (self.n_actions,))
        # threads=2: the bursts' steps split each minibatch's rows between two threads (q_gradient_steps),
        # part 1 writing its gradient into memory laid out as the flat gradient.
        self.threads = KernelThreads(threads if self.adam is not None else 1)
        flat = np.zeros(0, FLOAT) if self.adam is None else self.adam.flat_gradient
        self.partner_gradient = np.zeros(len(flat) if self.threads.parts == 2 else 0, FLOAT)
        self.partner_gradients = tuple(
            same_layout_views(gradients, flat, self.partner_gradient) if self.threads.parts == 2 else ()
            for gradients in (self.network.weight_gradients, self.network.bias_gradients)
        )
        self.squares = np.zeros(2, FLOAT)
        self.partner_outputs = np.zeros((0, self.n_actions), FLOAT)
        self.rows = 0
        self.reserve(rows)

    def reserve(self, rows: int) -> None:
        if rows > self.rows:
            self.rows = rows
            self.network.reserve(rows)
            self.outputs = np.zeros((rows, self.n_actions), FLOAT)
            self.output_gradient = np.zeros((rows, self.n_actions), FLOAT)

    def partner_network(self, rows: int) -> tuple:
        """Part 1's `network` for q_gradient_steps on minibatches of `rows` rows: the weights, its
        gradient memory and its buffers (made on first use; acting never needs them)."""
        if len(self.partner_outputs) < rows:
            self.partner_outputs, self.partner_output_gradient = (np.zeros((rows, self.n_actions), FLOAT) for _ in range(2))
            widths = self.network.widths
            self.partner_hidden, self.partner_scratch = (tuple(np.zeros((rows, width), FLOAT) for width in widths) for _ in range(2))
        network = self.network
        return (network.weights, network.biases, *self.partner_gradients, self.partner_hidden, self.partner_scratch)

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
            loss = q_gradient(*arguments, rows)
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
        two = self.threads.parts == 2 and batch_size >= 2
        networks = (self.network.arrays(), self.partner_network(batch_size)) if two else (self.network.arrays(),)
        outputs = (self.outputs, self.partner_outputs) if two else (self.outputs,)
        output_gradients = (self.output_gradient, self.partner_output_gradient) if two else (self.output_gradient,)
        losses = np.zeros(2)
        arguments = (
            self.network.inputs(observations), actions.reshape(-1).numpy().astype(np.int64, copy=False), target_array,
            batch_size, huber, networks, outputs, output_gradients, errors[:, 0], self.network.tanh,
            self.adam.kernel_arguments(max_grad_norm), double_q_arrays, self.partner_gradient, self.squares, losses,
        )
        if two:
            self.threads.run(q_gradient_steps, *arguments)
        else:
            q_gradient_steps(0, 1, self.threads.progress, *arguments)
        return torch.from_numpy(errors)

    def target_values(self, observations: torch.Tensor) -> torch.Tensor:
        """Q(s, .; theta^-) [N, A] for observations [N, *obs] by the target network given at
        construction, its blocks shared between the threads (forward_blocks)."""
        assert self.target is not None  # given at construction
        self.memory.reattach()  # where user code replaced param.data or .grad
        inputs = self.target.inputs(observations)
        outputs = np.empty((len(inputs), self.n_actions), FLOAT)
        target = self.target
        arguments = (inputs, target.weights, target.biases, self.target_hidden, outputs, self.block_rows, target.tanh)
        if self.threads.parts == 2:
            self.threads.run(forward_blocks, *arguments)
        else:
            forward_blocks(0, 1, self.threads.progress, *arguments)
        return torch.from_numpy(outputs)

    def greedy(self, observations: np.ndarray) -> np.ndarray:
        """argmax_a Q(s, a; theta) int64 [B] for a batch of observations."""
        self.memory.reattach()  # where user code replaced param.data or .grad
        inputs = self.network.inputs(observations)
        rows = len(inputs)
        hidden, (outputs,) = self.acting.buffers(rows)
        actions = np.empty(rows, np.int64)
        network = self.network
        greedy_actions(inputs, network.weights, network.biases, hidden, outputs, actions, network.tanh)
        return actions
