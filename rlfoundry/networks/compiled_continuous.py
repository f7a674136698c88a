"""SAC's, TD3's and DDPG's updates compiled by numba, on one thread or on two.

    critic k:  h_0 = [s, a],  h_l = f(h_{l-1} W_kl + b_kl),  Q_k = h_{L-1} . w_k + b_k   (QEnsemble's layout)
    actors:    the written-out MLP passes of networks/compiled_mlp.py, then the tanh-Gaussian
               (networks.continuous.squashed_gaussian_row) or tanh head
    targets:   the row functions of losses/continuous.py;  Adam per parameter group (compiled_mlp.clipped_adam)

Why: an update of 256-unit networks is a dozen matrix products of 256 rows, and eager PyTorch adds
its per-operation cost to each of the hundred operations around them: a SAC update took about
10 ms on this project's machine where its products take 5.75 ms at the core's peak. Compiled, an
update is the products and a few loops: 6.9 ms (benchmarks/RESULTS.md, "2026-12-04").

Why two threads (threads=2): the twin critics are independent networks, so each critic's passes run
on a thread of their own, as do SAC's actor passes over the observations and over the next
observations (numba kernels release the GIL; each thread's BLAS calls stay single-threaded): 3.6 ms
a SAC update. Each thread runs its part of an update in one kernel call (a thread hand-over costs
about 0.1 ms here: networks/kernel_threads.py), and the parts meet at barriers (`meet`) where the
minimum over the critics is taken; at the end they split the critics' Adam step elementwise. SAC's
parts write disjoint memory and split no sum, so both schedules compute the same numbers, bitwise.
TD3 and DDPG have one actor pass where SAC has two, so they split the rows of every actor pass
instead (the target actor's, the actor's and its loss through critic 1), as DDPG does its lone
critic's passes, and each Adam step's parameters: a split gradient is then the sum of the two
halves' gradients, equal to one thread's to float32 rounding and the same from run to run.

The results equal the PyTorch code of the algorithms to float32 rounding (tests/test_compiled_continuous.py),
and the random draws (SAC's action noise, TD3's smoothing noise) come from the same torch generator
in the same order, so a run starts on the PyTorch run's trajectory; over many updates the rounding
differences grow, as between any two summation orders.
Covered: MLP actors and critics with ReLU or tanh, float32 on the CPU; SAC with
update_order="simultaneous". With matmul_precision="bfloat16" every product whose sizes are all at
least 32 (compiled_mlp.product) rounds its operands to bfloat16 and sums in float32 (networks/bfloat16.py):
the update's large products take half the time, acting stays float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from rlfoundry.losses import continuous as losses
from rlfoundry.networks import continuous as networks
from rlfoundry.networks.continuous import DeterministicActor, QEnsemble, SquashedGaussianActor
from rlfoundry.networks.compiled_mlp import (
    FLOAT,
    ActingBuffers,
    CompiledAdam,
    CompiledMLP,
    KernelMemory,
    activation_backward,
    as_array,
    layer_backward,
    bias_activation,
    buffers,
    clipped_adam,
    column_sums,
    inline_kernel,
    kernel,
    mlp_backward,
    mlp_forward,
    product,
    rebuilt_on_deepcopy,
)
from rlfoundry.networks.kernel_threads import (
    KernelThreads,
    atomic_store,
    meet,
    same_layout_views,
    split_clipped_adam,
    wait_for,
)
from rlfoundry.networks.manual_mlp import ManualMLP, gradient_views

q_target_row = inline_kernel(losses.q_target_row)
soft_q_target_row = inline_kernel(losses.soft_q_target_row)
smoothed_target_action_row = inline_kernel(losses.smoothed_target_action_row)
squashed_gaussian_row = inline_kernel(networks.squashed_gaussian_row)
squashed_gaussian_gradient_row = inline_kernel(networks.squashed_gaussian_gradient_row)


# -- one critic k of a QEnsemble ---------------------------------------------------------------------


@kernel
def critic_forward(critic, inputs, weights, biases, hidden, outputs, tanh, bfloat16=False):
    """outputs [R] = Q_k(inputs [R, O + A]) for k = critic, from a QEnsemble's weights [K, in, out]
    and biases [K, 1, out]; hidden layer l's output into hidden[l][:R]."""
    rows = inputs.shape[0]
    last = len(weights) - 1
    below = inputs
    for layer in range(last):
        out = hidden[layer][:rows]
        product(below, weights[layer][critic], out, bfloat16)
        bias_activation(out, biases[layer][critic, 0], 1 if tanh else 2)
        below = out
    np.dot(below, weights[last][critic].reshape(-1), outputs)  # the one-unit output layer: a matrix-vector product
    bias = biases[last][critic, 0, 0]
    for row in range(rows):
        outputs[row] += bias


@kernel
def critic_backward(critic, inputs, weights, hidden, output_gradient, weight_gradients, bias_gradients, scratch, tanh,
                    parameter_rows, action_gradient, observation_size, bfloat16=False):
    """Given g [R] = dL/dQ_k at the rows of critic k's last critic_forward on inputs [R, O + A]:
    write critic k's parameter gradients (overwriting them) from the first parameter_rows rows,
    and dL/da of the last len(action_gradient) rows into action_gradient [R', A] (an actor's loss
    reaches the critic through its actions only). Only the first parameter_rows rows of inputs are
    read (the hidden rows carry the rest)."""
    rows = inputs.shape[0]
    last = len(weights) - 1
    below = hidden[last - 1][:rows]
    weight = weights[last][critic].reshape(-1)
    if parameter_rows > 0:
        np.dot(output_gradient[:parameter_rows], below[:parameter_rows], weight_gradients[last][critic].reshape(-1))
        bias_gradients[last][critic, 0, 0] = np.sum(output_gradient[:parameter_rows])
    gradient = scratch[last - 1][:rows]
    for row in range(rows):
        for unit in range(weight.shape[0]):
            gradient[row, unit] = output_gradient[row] * weight[unit]
    activation_backward(gradient, below, tanh)
    first_action_row = rows - action_gradient.shape[0]
    for layer in range(last - 1, -1, -1):
        below = inputs if layer == 0 else hidden[layer - 1][:rows]
        if parameter_rows > 0:
            product(below[:parameter_rows].T, gradient[:parameter_rows], weight_gradients[layer][critic], bfloat16)
            column_sums(gradient[:parameter_rows], bias_gradients[layer][critic, 0])
        if layer > 0:
            below_gradient = scratch[layer - 1][:rows]
            product(gradient, weights[layer][critic].T, below_gradient, bfloat16)
            activation_backward(below_gradient, below, tanh)
            gradient = below_gradient
        elif action_gradient.shape[0] > 0:
            np.dot(gradient[first_action_row:], weights[0][critic][observation_size:].T, action_gradient)


@kernel
def critic_values(critic, inputs, next_inputs, critics, target_critics, values, next_values, tanh, bfloat16=False):
    """Critic k at inputs [R, O + A] into values [R]; target critic k at next_inputs [B, O + A]
    into next_values [B] (no rows: skipped). critics, target_critics: CompiledCritics.arrays(),
    .target_arrays() (each critic has buffers of its own)."""
    weights, biases, _, _, hidden, _ = critics
    critic_forward(critic, inputs, weights, biases, hidden[critic], values, tanh, bfloat16)
    if next_inputs.shape[0] > 0:
        target_weights, target_biases, target_hidden = target_critics
        critic_forward(critic, next_inputs, target_weights, target_biases, target_hidden[critic], next_values, tanh,
                       bfloat16)


@inline_kernel
def first_minimum(values, row):
    """The critic k with the smallest values[k, row], the first of equal ones (torch.min(dim=0)'s
    pick; a NaN is the minimum, as there)."""
    best = 0
    for critic in range(1, values.shape[0]):
        value, smallest = values[critic, row], values[best, row]
        if value < smallest or (np.isnan(value) and not np.isnan(smallest)):
            best = critic
    return best


@inline_kernel
def squared_errors(values, targets, output_gradient, low, high, count):
    """sum_i (Q_i - y_i)^2 over rows [low, high), writing there the gradient of
    (1/count) sum_i (Q_i - y_i)^2, 2 (Q_i - y_i) / count, into output_gradient."""
    total = 0.0
    for row in range(low, high):
        error = values[row] - targets[row]
        total += float(error) * float(error)
        output_gradient[row] = FLOAT(2) * error / FLOAT(count)
    return total


@kernel
def critic_gradient(critic, inputs, values, targets, critics, output_gradient, action_gradient, observation_size, tanh,
                    bfloat16=False):
    """Critic k's gradient of mean_i (Q_k(s_i, a_i) - y_i)^2 over the first B = len(targets) rows
    of inputs, and dL/da [R', A] of the actor's -mean min_j Q_j(s, a) over the last R' rows, taken
    through critic k where it is the first minimum of values [K', R] (each critic's values at
    inputs; K' = 1: through critic k at every row; zero at the other rows). Returns critic k's
    mean squared error."""
    weights, _, weight_gradients, bias_gradients, hidden, scratch = critics
    own_hidden = hidden[critic]
    parameter_rows = targets.shape[0]
    rows = inputs.shape[0]
    actor_rows = action_gradient.shape[0]
    loss = squared_errors(values[critic], targets, output_gradient, 0, parameter_rows, parameter_rows)
    # The actor's loss reaches critic k only at the rows where it is the smaller critic (about half):
    # those rows move up, hidden values and all, behind the critic's own, and the backward pass
    # takes just them; their dL/da comes out in the first rows of action_gradient, then moves back.
    first_actor_row = rows - actor_rows
    through = np.empty(actor_rows, np.int64)
    taken = 0
    for row in range(first_actor_row, rows):
        if values.shape[0] == 1 or first_minimum(values, row) == critic:
            to = first_actor_row + taken
            if to != row:
                for layer in range(len(own_hidden)):
                    own_hidden[layer][to] = own_hidden[layer][row]
            output_gradient[to] = -FLOAT(1) / FLOAT(actor_rows)
            through[taken] = row - first_actor_row
            taken += 1
    critic_backward(critic, inputs[:first_actor_row + taken], weights, own_hidden, output_gradient[:first_actor_row + taken],
                    weight_gradients, bias_gradients, scratch[critic], tanh, parameter_rows, action_gradient[:taken],
                    observation_size, bfloat16)
    # Back to their rows, zero elsewhere: from the last row down, no row is written before it is read.
    index = taken - 1
    for row in range(actor_rows - 1, -1, -1):
        if index >= 0 and through[index] == row:
            action_gradient[row] = action_gradient[index]
            index -= 1
        else:
            action_gradient[row] = FLOAT(0)
    return loss / max(parameter_rows, 1)


@kernel
def join_inputs(observations, actions, out):
    """out [R, O + A] = [observations, actions]."""
    size = observations.shape[1]
    for row in range(observations.shape[0]):
        out[row, :size] = observations[row]
        out[row, size:] = actions[row]


@kernel
def polyak(targets, sources, tau):
    """theta' <- tau theta + (1 - tau) theta' on flat views, as torch's lerp computes it."""
    for index in range(len(targets)):
        target, source = targets[index], sources[index]
        for position in range(target.shape[0]):
            if tau < FLOAT(0.5):
                target[position] = target[position] + tau * (source[position] - target[position])
            else:
                target[position] = source[position] - (source[position] - target[position]) * (FLOAT(1) - tau)


@kernel
def split_mlp_backward(part, parts, progress, phase, inputs, weights, hidden, output_gradient, weight_gradients,
                       bias_gradients, scratch, tanh, bfloat16=False):
    """compiled_mlp.mlp_backward by both parts: the weight gradient of each layer between two hidden
    layers (a full-size product) is part 1's, taken while part 0 carries the gradient on down the
    layers. Both parts call it; it returns once every gradient is written (parts = 1: plain
    mlp_backward). Marks phases phase + 1 ... phase + L; False where a part failed."""
    if parts == 1:
        mlp_backward(inputs, weights, hidden, output_gradient, weight_gradients, bias_gradients, scratch, tanh, bfloat16)
        return True
    rows = inputs.shape[0]
    last = len(weights) - 1
    if part == 1:
        for layer in range(last - 1, 0, -1):
            if not wait_for(progress, 0, phase + last - layer):  # g_layer is in scratch[layer]
                return False
            gradient = scratch[layer][:rows]
            product(gradient.T, hidden[layer - 1][:rows], weight_gradients[layer], bfloat16)
            column_sums(gradient, bias_gradients[layer])
        atomic_store(progress, 1, np.int64(phase + last))
        return True
    gradient = output_gradient
    for layer in range(last, -1, -1):
        shared = 0 < layer < last
        if shared:
            atomic_store(progress, 0, np.int64(phase + last - layer))  # part 1 takes this layer's weight gradient
        gradient = layer_backward(layer, gradient, inputs, weights, hidden, weight_gradients, bias_gradients, scratch,
                                  tanh, not shared, bfloat16)
    return wait_for(progress, 1, phase + last)


@inline_kernel
def part_rows(part, parts, rows):
    """[low, high): the rows of a minibatch that part `part` of `parts` takes where a pass splits its
    rows (all for one part; the first half and the rest for two)."""
    if parts == 1:
        return 0, rows
    half = rows // 2
    return (0, half) if part == 0 else (half, rows)


@inline_kernel
def adam_in_parts(part, parts, progress, phase, adam, partner_gradient, squares):
    """clipped_adam(*adam) by one part, or split between two (split_clipped_adam, phases phase and
    phase + 1). False where the other part failed."""
    if parts == 1:
        clipped_adam(*adam)
        return True
    return split_clipped_adam(part, progress, phase, adam, partner_gradient, squares)


# -- SAC ----------------------------------------------------------------------------------------------


@kernel
def sac_sample(observations, noise, weights, biases, hidden, head, actions, log_probs, standard_deviations, tanh,
               joined, bfloat16=False):
    """The actor's tanh-Gaussian sample at each row (actions [B, A], log pi(a|s) [B], sigma [B, A];
    head [B, 2A] its output layer's values), and joined [B, O + A] = [observations, actions]."""
    mlp_forward(observations, weights, biases, hidden, head, tanh, bfloat16)
    for row in range(observations.shape[0]):
        log_probs[row] = squashed_gaussian_row(head[row], noise[row], actions[row], standard_deviations[row])
    join_inputs(observations, actions, joined)


@kernel
def sac_act(observations, noise, weights, biases, hidden, head, actions, standard_deviations, deterministic, tanh):
    """Acting: actions [N, A] = tanh(mu(s)) (deterministic) or the tanh-Gaussian sample with noise eps [N, A]."""
    mlp_forward(observations, weights, biases, hidden, head, tanh)
    for row in range(observations.shape[0]):
        if deterministic:
            for column in range(actions.shape[1]):
                actions[row, column] = np.tanh(head[row, column])
        else:
            squashed_gaussian_row(head[row], noise[row], actions[row], standard_deviations[row])


@kernel
def soft_targets(rewards, discounts, terminated, next_values, next_log_probs, alpha, targets):
    """targets [B] = soft_q_target_row of each transition; next_values [K, B] = Q'_k(s', a')."""
    for row in range(rewards.shape[0]):
        smallest = next_values[first_minimum(next_values, row), row]
        targets[row] = soft_q_target_row(float(rewards[row]), float(discounts[row]), terminated[row], float(smallest),
                                         alpha, float(next_log_probs[row]))


@kernel
def sac_head_gradient(noise, samples, action_gradients, head_gradient, alpha, values):
    """head_gradient [B, 2A] = the gradient of mean_i [alpha log pi(a_i|s_i) - min_k Q_k(s_i, a_i)]
    with respect to the actor's output layer, given dL/da through each critic (action_gradients
    [K, B, A]) and the critics' values at the sampled actions (values [K, 2B], their second half).
    Returns (that loss, mean log pi)."""
    head, actions, log_probs, standard_deviations = samples
    rows = actions.shape[0]
    log_prob_total = 0.0
    loss = 0.0
    action_gradient = np.empty(actions.shape[1], FLOAT)
    for row in range(rows):
        log_prob_total += log_probs[row]
        smallest = values[first_minimum(values, rows + row), rows + row]
        loss += alpha * log_probs[row] - smallest
        action_gradient[:] = action_gradients[0, row]
        for critic in range(1, action_gradients.shape[0]):
            action_gradient += action_gradients[critic, row]
        squashed_gaussian_gradient_row(head[row], noise[row], actions[row], standard_deviations[row], action_gradient,
                                       alpha / rows, head_gradient[row])
    return loss / rows, log_prob_total / rows


@kernel
def sac_update(part, parts, progress, batch, noises, actor, next_hidden, samples, next_samples, inputs, next_inputs,
               critics, target_critics, values, next_values, targets, output_gradients, action_gradients, head_gradient,
               alpha, target_entropy, tau, adams, temperature_adam, no_partner, squares, polyak_pair, observation_size,
               tanh, bfloat16, results):
    """Part `part` of `parts` (1 or 2) of one SAC update (CompiledSAC.update): the gradients of the
    three losses at the current parameters, an Adam step of each group (adams: actor and critics;
    temperature_adam: log alpha's, None when alpha is fixed), the critics' Polyak step. Part 0 takes the observations'
    sample, critic 0 and the actor's gradient (but for its hidden-to-hidden weight gradients,
    split_mlp_backward) and Adam step; part 1 the next observations' sample, critic 1 and the
    Polyak step; the critics' Adam step splits (split_clipped_adam, with no_partner: no elements,
    and squares [2]). results: [loss of each critic..., actor loss, mean log pi]."""
    observations, actions, rewards, next_observations, terminated, discounts = batch
    weights, biases = actor[0], actor[1]
    rows = rewards.shape[0]
    count = values.shape[0]
    if part == 0:
        join_inputs(observations, actions, inputs[:rows])
        sac_sample(observations, noises[0], weights, biases, actor[4], samples[0], samples[1], samples[2], samples[3],
                   tanh, inputs[rows:], bfloat16)
    if part == 1 or parts == 1:
        sac_sample(next_observations, noises[1], weights, biases, next_hidden, next_samples[0], next_samples[1],
                   next_samples[2], next_samples[3], tanh, next_inputs, bfloat16)
    if not meet(progress, part, parts, 1):
        return
    for critic in range(part, count, parts):
        critic_values(critic, inputs, next_inputs, critics, target_critics, values[critic], next_values[critic], tanh,
                      bfloat16)
    if not meet(progress, part, parts, 2):
        return
    soft_targets(rewards, discounts, terminated, next_values, next_samples[2], alpha, targets[part])
    for critic in range(part, count, parts):
        results[critic] = critic_gradient(critic, inputs, values, targets[part], critics, output_gradients[critic],
                                          action_gradients[critic], observation_size, tanh, bfloat16)
    if not meet(progress, part, parts, 3):
        return
    if part == 0:
        actor_loss, mean_log_prob = sac_head_gradient(noises[0], samples, action_gradients, head_gradient, alpha,
                                                      values)
        results[count], results[count + 1] = actor_loss, mean_log_prob
    if not split_mlp_backward(part, parts, progress, 10, observations, weights, actor[4], head_gradient, actor[2],
                              actor[3], actor[5], tanh, bfloat16):
        return
    # The critics' Adam step splits between the parts; then part 0 steps the actor and alpha while
    # part 1 takes the Polyak step (about as long).
    # (its phases follow split_mlp_backward's, 10 + 1 ... 10 + L)
    if not adam_in_parts(part, parts, progress, 11 + len(weights), adams[1], no_partner, squares):
        return
    if part == 0:
        clipped_adam(*adams[0])
        if temperature_adam is not None:
            temperature_adam[1][0] = FLOAT(-(results[count + 1] + target_entropy))
            clipped_adam(*temperature_adam)
    if part == 1 or parts == 1:
        polyak(polyak_pair[0], polyak_pair[1], tau)


# -- TD3 and DDPG -------------------------------------------------------------------------------------


@kernel
def deterministic_actions(observations, weights, biases, hidden, actions, tanh, bfloat16=False):
    """mu(s) = tanh(the actor MLP's output) [B, A]."""
    mlp_forward(observations, weights, biases, hidden, actions, tanh, bfloat16)
    for row in range(actions.shape[0]):
        for column in range(actions.shape[1]):
            actions[row, column] = np.tanh(actions[row, column])


@kernel
def q_targets(rewards, discounts, terminated, next_values, targets):
    """targets [B] = q_target_row of each transition; next_values [K, B] = Q'_k(s', a')."""
    for row in range(rewards.shape[0]):
        smallest = next_values[first_minimum(next_values, row), row]
        targets[row] = q_target_row(float(rewards[row]), float(discounts[row]), terminated[row], float(smallest))


@kernel
def single_critic_gradient(low, high, batch, inputs, next_inputs, critics, target_critics, hidden, scratch, target_hidden,
                           values, next_values, targets, output_gradient, gradients, no_action_rows, observation_size,
                           tanh, bfloat16=False):
    """For a lone critic (K = 1, DDPG's), rows [low, high) of a minibatch of B: its values, its
    target's values and the targets y, and those rows' share of the gradient of
    (1/B) sum_i (Q(s_i, a_i) - y_i)^2 into gradients (weight gradients, bias gradients; overwritten).
    hidden, scratch, target_hidden: buffers of these rows. Returns those rows' sum of squared errors."""
    _, _, rewards, _, terminated, discounts = batch
    rows = rewards.shape[0]
    weights, biases = critics[0], critics[1]
    critic_forward(0, inputs[low:high], weights, biases, hidden, values[0, low:high], tanh, bfloat16)
    critic_forward(0, next_inputs[low:high], target_critics[0], target_critics[1], target_hidden, next_values[0, low:high],
                   tanh, bfloat16)
    q_targets(rewards[low:high], discounts[low:high], terminated[low:high], next_values[:, low:high], targets[low:high])
    total = squared_errors(values[0], targets, output_gradient, low, high, rows)
    critic_backward(0, inputs[low:high], weights, hidden, output_gradient[low:high], gradients[0], gradients[1], scratch,
                    tanh, high - low, no_action_rows, observation_size, bfloat16)
    return total


@kernel
def deterministic_update(part, parts, progress, batch, noise, noise_clip, actor_due, actor, actor_rows, target_actor,
                         actions, next_actions, inputs, next_inputs, actor_inputs, critics, critic_rows, target_critics,
                         target_critic_rows, values, next_values, targets, output_gradients, action_gradient,
                         no_action_rows, tau, adams, actor_gradients, partner_gradient, critic_gradients,
                         critic_partner_gradient, squares, polyak_pairs, observation_size, tanh, bfloat16, results):
    """Part `part` of `parts` (1 or 2) of one TD3 or DDPG update (CompiledDeterministicActorCritic.update):
    an Adam step of every critic towards y = r + gamma (1 - terminated) min_k Q'_k(s', a'), a' = mu'(s')
    smoothed by noise [B, A] (no rows: DDPG's a' = mu'(s')); then, when actor_due, an Adam step of
    the actor on -mean_i Q_1(s_i, mu(s_i)) and the Polyak steps of both targets.

    Critic k's own passes are part k's, but for a lone critic (DDPG's), whose passes split by rows
    as the actor's do. Every actor pass, and the actor's loss through critic 1, is split by rows
    (part_rows): each part works in its rows of the buffers (actor_rows[part]: the actor's hidden
    and backward buffers; critic_rows[part]: critic 1's; target_actor[2][part] and
    target_critic_rows[part]: the target networks' hidden buffers) and writes its rows' share of
    the actor's gradient into actor_gradients[part] (part 1's: views of partner_gradient), and
    of a lone critic's into critic_gradients[part] (part 1's: views of critic_partner_gradient).
    Both Adam steps split the parameters between the parts. actor: (weights, biases). results:
    [loss of each critic..., actor loss, each part's sum of Q_1(s, mu(s)), each part's sum of a
    lone critic's squared errors]."""
    observations, batch_actions, rewards, next_observations, terminated, discounts = batch
    rows = rewards.shape[0]
    count = values.shape[0]
    low, high = part_rows(part, parts, rows)
    actor_weights, actor_biases = actor
    actor_hidden, actor_scratch = actor_rows[part]
    target_weights, target_biases, target_hidden = target_actor
    deterministic_actions(next_observations[low:high], target_weights, target_biases, target_hidden[part],
                          next_actions[low:high], tanh, bfloat16)
    if noise.shape[0] > 0:
        for row in range(low, high):
            for column in range(next_actions.shape[1]):
                next_actions[row, column] = smoothed_target_action_row(
                    float(next_actions[row, column]), float(noise[row, column]), noise_clip)
    join_inputs(next_observations[low:high], next_actions[low:high], next_inputs[low:high])
    join_inputs(observations[low:high], batch_actions[low:high], inputs[low:high])
    if actor_due:  # the critics' step does not change mu(s)
        deterministic_actions(observations[low:high], actor_weights, actor_biases, actor_hidden, actions[low:high], tanh,
                              bfloat16)
        join_inputs(observations[low:high], actions[low:high], actor_inputs[low:high])
    if not meet(progress, part, parts, 1):
        return
    if count == 1:
        critic_hidden, critic_scratch = critic_rows[part]
        results[count + 3 + part] = single_critic_gradient(
            low, high, batch, inputs, next_inputs, critics, target_critics, critic_hidden, critic_scratch,
            target_critic_rows[part], values, next_values, targets[part], output_gradients[0], critic_gradients[part],
            no_action_rows, observation_size, tanh, bfloat16)
        if not meet(progress, part, parts, 3):
            return
        if part == 0:
            results[0] = (results[count + 3] + (results[count + 4] if parts == 2 else 0.0)) / rows
    else:
        for critic in range(part, count, parts):
            critic_values(critic, inputs, next_inputs, critics, target_critics, values[critic], next_values[critic],
                          tanh, bfloat16)
        if not meet(progress, part, parts, 2):
            return
        q_targets(rewards, discounts, terminated, next_values, targets[part])
        for critic in range(part, count, parts):
            results[critic] = critic_gradient(critic, inputs, values, targets[part], critics, output_gradients[critic],
                                              no_action_rows, observation_size, tanh, bfloat16)
        # Every critic's gradient is whole before either half of the parameters steps.
        if not meet(progress, part, parts, 3):
            return
    if not adam_in_parts(part, parts, progress, 4, adams[1], critic_partner_gradient, squares):
        return
    if not actor_due:
        return
    weights, biases, weight_gradients, bias_gradients = critics[0], critics[1], critics[2], critics[3]
    critic_hidden, critic_scratch = critic_rows[part]
    critic_forward(0, actor_inputs[low:high], weights, biases, critic_hidden, values[0, low:high], tanh, bfloat16)
    output_gradient = output_gradients[0, low:high]
    output_gradient[:] = -FLOAT(1) / FLOAT(rows)
    critic_backward(0, actor_inputs[low:high], weights, critic_hidden, output_gradient, weight_gradients, bias_gradients,
                    critic_scratch, tanh, 0, action_gradient[low:high], observation_size, bfloat16)
    total = 0.0
    for row in range(low, high):
        total += values[0, row]
        for column in range(actions.shape[1]):
            action = actions[row, column]
            action_gradient[row, column] *= FLOAT(1) - action * action
    results[count + 1 + part] = total
    own_weight_gradients, own_bias_gradients = actor_gradients[part]
    mlp_backward(observations[low:high], actor_weights, actor_hidden, action_gradient[low:high], own_weight_gradients,
                 own_bias_gradients, actor_scratch, tanh, bfloat16)
    if not meet(progress, part, parts, 6) or not adam_in_parts(part, parts, progress, 7, adams[0], partner_gradient,
                                                               squares):
        return
    if part == 0:
        results[count] = -(results[count + 1] + (results[count + 2] if parts == 2 else 0.0)) / rows
        polyak(polyak_pairs[0][0], polyak_pairs[0][1], tau)
    if part == 1 or parts == 1:
        polyak(polyak_pairs[1][0], polyak_pairs[1][1], tau)


# -- the Python side ----------------------------------------------------------------------------------


def actor_layers(torso: nn.Sequential, head: nn.Linear, activation: str) -> ManualMLP:
    """The written-out form of head(torso(s)) for an actor's MLP torso (networks.torsos.MLP)."""
    layers = tuple(module for module in torso if isinstance(module, nn.Linear)) + (head,)
    return ManualMLP(None, tuple(layer.weight for layer in layers), tuple(layer.bias for layer in layers), activation)


def flat_views(module: nn.Module) -> tuple[np.ndarray, ...]:
    """The module's parameters as flat numpy views, in its parameter order (for polyak)."""
    return tuple(as_array(parameter).reshape(-1) for parameter in module.parameters())


@rebuilt_on_deepcopy
class CompiledCritics:
    """A QEnsemble's parameters and .grad and its target copy's parameters as numpy views, and each
    critic's buffers for passes of up to `rows` rows (each thread passes through its own critic)."""

    def __init__(self, critics: QEnsemble, target_critics: QEnsemble, rows: int, observation_size: int):
        self.count = critics.n_critics
        self.observation_size = observation_size
        self.weights = tuple(as_array(weight) for weight in critics.weights)
        self.biases = tuple(as_array(bias) for bias in critics.biases)
        self.weight_gradients = tuple(as_array(weight.grad) for weight in critics.weights)
        self.bias_gradients = tuple(as_array(bias.grad) for bias in critics.biases)
        self.target_weights = tuple(as_array(weight) for weight in target_critics.weights)
        self.target_biases = tuple(as_array(bias) for bias in target_critics.biases)
        self.polyak_pair = (flat_views(target_critics), flat_views(critics))
        self.widths = [weight.shape[2] for weight in self.weights[:-1]]
        self.rows = 0
        self.reserve(rows)

    def reserve(self, rows: int) -> None:
        if rows > self.rows:
            self.rows = rows
            self.hidden, self.scratch, self.target_hidden = (
                tuple(tuple(np.zeros((rows, width), FLOAT) for width in self.widths) for _ in range(self.count))
                for _ in range(3)
            )

    def arrays(self) -> tuple:
        """The kernels' `critics`: weights, biases, their gradients, each critic's hidden and backward buffers."""
        return self.weights, self.biases, self.weight_gradients, self.bias_gradients, self.hidden, self.scratch

    def target_arrays(self) -> tuple:
        """The kernels' `target_critics`."""
        return self.target_weights, self.target_biases, self.target_hidden


def numpy_batch(batch: Any) -> tuple[np.ndarray, ...]:
    """(observations, actions, rewards, next observations, terminated, discounts) of a ReplayBatch of
    numpy arrays (as the collector yields them to these models) or of CPU tensors, as float32 (bool
    for terminated) C-contiguous arrays."""

    def numpy(field: np.ndarray | torch.Tensor) -> np.ndarray:
        return field.numpy() if isinstance(field, torch.Tensor) else field

    def array(field: np.ndarray | torch.Tensor) -> np.ndarray:
        return np.ascontiguousarray(numpy(field), dtype=FLOAT)

    return (array(batch.observations), array(batch.actions), array(batch.rewards), array(batch.next_observations),
            np.ascontiguousarray(numpy(batch.terminated)), array(batch.discounts))


def row_split_gradients(own: tuple[tuple[np.ndarray, ...], ...], flat: np.ndarray,
                        partner: np.ndarray) -> tuple[tuple[tuple[np.ndarray, ...], ...], ...]:
    """[part]: where each part of a row split writes its rows' share of a gradient: part 0 into the
    gradient's own arrays (views of the optimiser's flat gradient), part 1, where `partner` has
    elements, into the same layout in `partner` (split_clipped_adam adds the two)."""
    if partner.size == 0:
        return (own,)
    return own, tuple(same_layout_views(gradients, flat, partner) for gradients in own)


def part_views(arrays: tuple[np.ndarray, ...], rows: int, parts: int) -> tuple[tuple[np.ndarray, ...], ...]:
    """[part][array]: each part's rows of each buffer, by the kernels' own split (part_rows)."""
    bounds = (part_rows(part, parts, rows) for part in range(parts))
    return tuple(tuple(array[low:high] for array in arrays) for low, high in bounds)


@rebuilt_on_deepcopy
class CompiledSAC:
    """SAC's update (update_order="simultaneous", algorithms/sac.py) by sac_update on the model's own
    parameters, .grad and Adam state: the optimiser's groups are the actor (0), the critics (1) and
    log alpha (2)."""

    def __init__(self, actor: SquashedGaussianActor, critics: QEnsemble, target_critics: QEnsemble, log_alpha: nn.Parameter,
                 learn_alpha: bool, optimizer: torch.optim.Optimizer, batch_size: int, observation_size: int,
                 activation: str, threads: int, bfloat16: bool = False):
        self.tanh = activation == "tanh"
        self.bfloat16 = bfloat16  # the update's large products in bfloat16 (networks/bfloat16.py, enabled by the caller)
        actor_flat = gradient_views(list(actor.parameters()))
        critic_flat = gradient_views(list(critics.parameters()))
        self.actor = CompiledMLP(actor_layers(actor.torso, actor.head, activation), batch_size)
        self.critics = CompiledCritics(critics, target_critics, 2 * batch_size, observation_size)
        self.adams = [CompiledAdam(optimizer, actor_flat, group=0), CompiledAdam(optimizer, critic_flat, group=1)]
        self.log_alpha = as_array(log_alpha).reshape(1)
        parameters = [*actor.parameters(), *critics.parameters()]
        if learn_alpha:
            self.adams.append(CompiledAdam(optimizer, gradient_views([log_alpha]), group=2))
            parameters.append(log_alpha)
        self.memory = KernelMemory(tuple(parameters))
        self.threads = KernelThreads(threads)
        self.action_size = size = actor.head.out_features // 2
        # (head, actions, sigma) of acting; a deterministic action draws no noise
        self.acting = ActingBuffers(self.actor.widths, (2 * size,), (size,), (size,))
        self.no_noise = np.zeros((0, size), FLOAT)
        self.no_partner, self.squares = np.zeros(0, FLOAT), np.zeros(2, FLOAT)  # the critics' split Adam step
        self.rows = 0
        self.reserve(batch_size)

    def reserve(self, rows: int) -> None:
        """Buffers for minibatches of exactly `rows` rows (the kernels take them whole: contiguous)."""
        if rows == self.rows:
            return
        self.rows = rows
        self.actor.reserve(rows)
        self.critics.reserve(2 * rows)
        actions, count = self.action_size, self.critics.count
        inputs = self.critics.observation_size + actions
        self.next_hidden = buffers(rows, *((width,) for width in self.actor.widths))
        # (head, actions, log pi, sigma) of the observations' and the next observations' samples.
        self.samples = buffers(rows, (2 * actions,), (actions,), (), (actions,))
        self.next_samples = buffers(rows, (2 * actions,), (actions,), (), (actions,))
        self.next_inputs, self.head_gradient = buffers(rows, (inputs,), (2 * actions,))
        self.targets = np.zeros((2, rows), FLOAT)
        self.inputs = np.zeros((2 * rows, inputs), FLOAT)
        self.values = np.zeros((count, 2 * rows), FLOAT)
        self.next_values = np.zeros((count, rows), FLOAT)
        self.output_gradients = np.zeros((count, 2 * rows), FLOAT)
        self.action_gradients = np.zeros((count, rows, actions), FLOAT)
        self.results = np.zeros(count + 2)

    def act(self, observations: np.ndarray, deterministic: bool, generator: torch.Generator | None) -> np.ndarray:
        """SquashedGaussianActor.mode(observations), or .sample(observations, generator) from the same
        draw of epsilon: unit actions [N, A] for observations [N, O]."""
        self.memory.reattach()  # where user code replaced param.data or .grad
        states = np.ascontiguousarray(observations, dtype=FLOAT)
        rows, size = len(states), self.action_size
        noise = self.no_noise
        if not deterministic:
            noise = torch.empty(rows, size).normal_(generator=generator).numpy()
        hidden, (head, actions, deviations) = self.acting.buffers(rows)
        actor = self.actor
        sac_act(states, noise, actor.weights, actor.biases, hidden, head, actions, deviations, deterministic, self.tanh)
        return actions.copy()

    def update(self, batch: Any, noise: torch.Tensor, next_noise: torch.Tensor, target_entropy: float,
               tau: float) -> dict[str, float]:
        """One update on a minibatch (a ReplayBatch: numpy_batch) of exactly the size the buffers were
        made for, with the actions' and the next actions' epsilon [B, A] drawn as
        SquashedGaussianActor draws them. Returns the losses, alpha (as used) and the entropy
        estimate -mean log pi."""
        self.memory.reattach()  # where user code replaced param.data or .grad
        arrays = numpy_batch(batch)
        rows = len(arrays[2])
        self.reserve(rows)
        alpha = float(np.exp(self.log_alpha[0]))
        adams = tuple(adam.kernel_arguments(None) for adam in self.adams)
        critics = self.critics
        self.threads.run(
            sac_update, arrays, (np.ascontiguousarray(noise.numpy()), np.ascontiguousarray(next_noise.numpy())),
            self.actor.arrays(), tuple(buffer[:rows] for buffer in self.next_hidden), self.samples, self.next_samples,
            self.inputs, self.next_inputs, critics.arrays(), critics.target_arrays(), self.values, self.next_values,
            self.targets, self.output_gradients, self.action_gradients, self.head_gradient, alpha,
            float(target_entropy), FLOAT(tau), adams[:2], adams[2] if len(adams) > 2 else None, self.no_partner,
            self.squares, critics.polyak_pair, critics.observation_size, self.tanh, self.bfloat16, self.results,
        )
        count = critics.count
        return {"train/critic_loss": float(self.results[:count].sum()), "train/actor_loss": float(self.results[count]),
                "train/alpha": alpha, "train/entropy": -float(self.results[count + 1])}


@rebuilt_on_deepcopy
class CompiledDeterministicActorCritic:
    """The updates of TD3 and DDPG (algorithms/td3.py, ddpg.py) by deterministic_update on the model's
    own parameters, .grad and Adam state: the optimiser's groups are the actor (0) and the critics (1)."""

    def __init__(self, actor: DeterministicActor, critics: QEnsemble, target_actor: DeterministicActor, target_critics: QEnsemble,
                 optimizer: torch.optim.Optimizer, batch_size: int, observation_size: int, activation: str,
                 threads: int, bfloat16: bool = False):
        self.tanh = activation == "tanh"
        self.bfloat16 = bfloat16  # the update's large products in bfloat16 (networks/bfloat16.py, enabled by the caller)
        actor_flat = gradient_views(list(actor.parameters()))
        critic_flat = gradient_views(list(critics.parameters()))
        self.actor = CompiledMLP(actor_layers(actor.torso, actor.head, activation), batch_size)
        self.target_actor = CompiledMLP(actor_layers(target_actor.torso, target_actor.head, activation), batch_size,
                                        gradients=False)
        self.critics = CompiledCritics(critics, target_critics, batch_size, observation_size)
        self.adams = (CompiledAdam(optimizer, actor_flat, group=0), CompiledAdam(optimizer, critic_flat, group=1))
        self.polyak_pairs = ((flat_views(target_actor), flat_views(actor)), self.critics.polyak_pair)
        self.memory = KernelMemory((*actor.parameters(), *critics.parameters()))
        self.threads = KernelThreads(threads)
        # Two parts split the actor's rows (and a lone critic's): part 1 writes its share of the
        # gradient here, laid out as the flat gradient (deterministic_update, split_clipped_adam).
        parts = self.threads.parts
        self.partner_gradient = np.zeros(actor_flat.numel() if parts == 2 else 0, FLOAT)
        self.actor_gradients = row_split_gradients(
            (self.actor.weight_gradients, self.actor.bias_gradients), self.adams[0].flat_gradient, self.partner_gradient)
        lone_critic = self.critics.count == 1
        self.critic_partner_gradient = np.zeros(critic_flat.numel() if parts == 2 and lone_critic else 0, FLOAT)
        self.critic_gradients = row_split_gradients(
            (self.critics.weight_gradients, self.critics.bias_gradients), self.adams[1].flat_gradient,
            self.critic_partner_gradient)
        self.squares = np.zeros(2, FLOAT)
        self.action_size = actor.head.out_features
        self.acting = ActingBuffers(self.actor.widths, (self.action_size,))
        self.rows = 0
        self.reserve(batch_size)

    def reserve(self, rows: int) -> None:
        """Buffers for minibatches of exactly `rows` rows (the kernels take them whole: contiguous)."""
        if rows == self.rows:
            return
        self.rows = rows
        self.actor.reserve(rows)
        self.target_actor.reserve(rows)
        self.critics.reserve(rows)
        # Each part's rows of the buffers that a split pass writes (deterministic_update).
        parts = self.threads.parts
        self.actor_rows = tuple(zip(part_views(self.actor.hidden, rows, parts), part_views(self.actor.scratch, rows, parts)))
        self.target_hidden = part_views(self.target_actor.hidden, rows, parts)
        self.critic_rows = tuple(zip(part_views(self.critics.hidden[0], rows, parts),
                                     part_views(self.critics.scratch[0], rows, parts)))
        self.target_critic_rows = part_views(self.critics.target_hidden[0], rows, parts)
        actions, count = self.action_size, self.critics.count
        inputs = self.critics.observation_size + actions
        self.actions, self.next_actions, self.action_gradient = buffers(rows, (actions,), (actions,), (actions,))
        self.inputs, self.next_inputs, self.actor_inputs = buffers(rows, (inputs,), (inputs,), (inputs,))
        self.targets = np.zeros((2, rows), FLOAT)
        self.values = np.zeros((count, rows), FLOAT)
        self.next_values = np.zeros((count, rows), FLOAT)
        self.output_gradients = np.zeros((count, rows), FLOAT)
        self.no_action_rows = np.zeros((0, actions), FLOAT)
        self.results = np.zeros(count + 5)

    def act(self, observations: np.ndarray) -> np.ndarray:
        """mu(s) = DeterministicActor(observations): unit actions [N, A] for observations [N, O]."""
        self.memory.reattach()  # where user code replaced param.data or .grad
        states = np.ascontiguousarray(observations, dtype=FLOAT)
        hidden, (actions,) = self.acting.buffers(len(states))
        actor = self.actor
        deterministic_actions(states, actor.weights, actor.biases, hidden, actions, self.tanh)
        return actions.copy()

    def update(self, batch: Any, noise: torch.Tensor | None, noise_clip: float, actor_due: bool,
               tau: float) -> dict[str, float]:
        """One critic step on a minibatch (a ReplayBatch: numpy_batch) with TD3's smoothing noise
        [B, A] (None: DDPG); when actor_due, the actor's step and both Polyak steps after it.
        Returns the losses."""
        self.memory.reattach()  # where user code replaced param.data or .grad
        arrays = numpy_batch(batch)
        rows = len(arrays[2])
        self.reserve(rows)
        critics, target = self.critics, self.target_actor
        self.threads.run(
            deterministic_update, arrays,
            self.no_action_rows if noise is None else np.ascontiguousarray(noise.numpy()), float(noise_clip),
            bool(actor_due), (self.actor.weights, self.actor.biases), self.actor_rows,
            (target.weights, target.biases, self.target_hidden), self.actions, self.next_actions, self.inputs,
            self.next_inputs, self.actor_inputs, critics.arrays(), self.critic_rows, critics.target_arrays(),
            self.target_critic_rows, self.values, self.next_values, self.targets, self.output_gradients,
            self.action_gradient, self.no_action_rows, FLOAT(tau), tuple(adam.kernel_arguments(None) for adam in self.adams),
            self.actor_gradients, self.partner_gradient, self.critic_gradients, self.critic_partner_gradient,
            self.squares, self.polyak_pairs, critics.observation_size, self.tanh, self.bfloat16, self.results,
        )
        count = critics.count
        metrics = {"train/critic_loss": float(self.results[:count].sum())}
        if actor_due:
            metrics["train/actor_loss"] = float(self.results[count])
        return metrics
