"""An actor-critic's acting and gradient step compiled by numba: the passes of
networks/manual_actor_critic.py with the losses' row functions of losses/policy_gradient.py.

For L = mean_t l^pi_t - c mean_t H_t + k mean_t l^V_t, with l^pi the clipped surrogate's row (PPO)
or the policy-gradient row (A2C), l^V the value row, c the entropy coefficient and k the value
coefficient, one call computes both networks' forward passes, the rows' losses and derivatives,
the heads' chain rule (manual_actor_critic's docstring)

    Categorical:  dL/dz_tj = w_t (1[j = a_t] - p_tj) - c' p_tj (l_tj + H_t),   w_t = (dl^pi_t/d log pi) / B, c' = -c / B
    Gaussian:     dL/dmu_td = w_t x_td exp(-s_d),   dL/ds_d = sum_t w_t (x_td^2 - 1) + c' B

and the backward passes into the parameters' .grad; CompiledAdam (networks/compiled_mlp.py) then
takes the optimiser's step. Acting is the policy's forward pass and a sample from the same noise
torch's distributions draw (Gumbel-max exponentials for Categorical, standard normals for the
Gaussian), from the collector's generator: the same draws, the same checkpointed generator state.

Covered: separate policy and value MLPs with ReLU or tanh (ManualActorCritic) on float32 CPU
tensors, Categorical or diagonal-Gaussian actions. Everything else keeps PyTorch (the algorithms'
`backend` option says which runs, rlfoundry.run.on_policy).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from rlfoundry.data.rollout import RolloutBatch
from rlfoundry.losses import policy_gradient
from rlfoundry.networks.compiled_mlp import FLOAT, CompiledMLP, KernelMemory, as_array, gradient_of, inline_kernel, kernel
from rlfoundry.networks.compiled_mlp import mlp_backward, mlp_forward, rebuilt_on_deepcopy
from rlfoundry.networks.manual_actor_critic import ManualActorCritic
from rlfoundry.networks.policies import LOG_SQRT_2PI

clipped_surrogate_row = inline_kernel(policy_gradient.clipped_surrogate_row)
policy_gradient_row = inline_kernel(policy_gradient.policy_gradient_row)
value_row = inline_kernel(policy_gradient.value_row)
approximate_kl_row = inline_kernel(policy_gradient.approximate_kl_row)


@kernel
def head_log_probs(outputs, log_std, gaussian, discrete_actions, continuous_actions, log_probs):
    """log pi(a_t|s_t) into log_probs [B] from the policy's outputs [B, n]; returns sum_t H_t.
    Categorical: outputs (logits) become the log-probabilities, in place (log-softmax)."""
    rows = log_probs.shape[0]
    if gaussian:
        for row in range(rows):
            total = 0.0
            for column in range(outputs.shape[1]):
                standardised = (continuous_actions[row, column] - outputs[row, column]) * np.exp(-log_std[column])
                total += -0.5 * standardised * standardised - log_std[column] - LOG_SQRT_2PI
            log_probs[row] = total
        return rows * (np.sum(log_std) + outputs.shape[1] * (0.5 + LOG_SQRT_2PI))
    entropy = log_softmax(outputs[:rows])
    for row in range(rows):
        log_probs[row] = outputs[row, discrete_actions[row]]
    return entropy


@kernel
def log_softmax(outputs):
    """Logits [B, n] -> log-probabilities l_tj = z_tj - log sum_k exp z_tk, in place; returns sum_t H_t."""
    entropy = 0.0
    for row in range(outputs.shape[0]):
        largest = outputs[row, 0]
        for column in range(1, outputs.shape[1]):
            largest = max(largest, outputs[row, column])
        total = 0.0
        for column in range(outputs.shape[1]):
            total += np.exp(outputs[row, column] - largest)
        log_normaliser = largest + np.log(total)
        for column in range(outputs.shape[1]):
            log_probability = outputs[row, column] - log_normaliser
            outputs[row, column] = log_probability
            entropy -= np.exp(log_probability) * log_probability
    return entropy


@kernel
def head_gradient(outputs, log_std, gaussian, discrete_actions, continuous_actions, weights, entropy_weight,
                  output_gradient, log_std_gradient):
    """dL/d(outputs) [B, n] (and dL/ds [D] for the Gaussian) for L = sum_t w_t log pi(a_t|s_t) + c' sum_t H_t,
    with w = weights [B] and c' = entropy_weight; outputs as head_log_probs left them."""
    rows = weights.shape[0]
    if gaussian:
        log_std_gradient[:] = 0
        for row in range(rows):
            for column in range(outputs.shape[1]):
                inverse_std = np.exp(-log_std[column])
                standardised = (continuous_actions[row, column] - outputs[row, column]) * inverse_std
                output_gradient[row, column] = weights[row] * standardised * inverse_std
                log_std_gradient[column] += weights[row] * (standardised * standardised - 1.0)
        for column in range(outputs.shape[1]):
            log_std_gradient[column] += entropy_weight * rows
        return
    for row in range(rows):
        entropy = 0.0
        for column in range(outputs.shape[1]):
            entropy -= np.exp(outputs[row, column]) * outputs[row, column]
        for column in range(outputs.shape[1]):
            log_probability = outputs[row, column]
            probability = np.exp(log_probability)
            chosen = 1.0 if column == discrete_actions[row] else 0.0
            gradient = weights[row] * (chosen - probability) - entropy_weight * probability * (log_probability + entropy)
            output_gradient[row, column] = gradient


@kernel
def actor_critic_gradient(observations, discrete_actions, continuous_actions, old_log_probs, advantages, returns,
                          old_values, settings, policy, value, log_std, log_std_gradient, gaussian, tanh, buffers):
    """Write the gradient of L (module docstring) into both networks' .grad; return (mean l^pi, mean l^V,
    mean H, approximate KL, skipped). settings = (clipped, clip_range, value_clip_range, value_coef,
    entropy_coef, normalize, kl_limit): clipped False takes the policy-gradient row; value_clip_range
    inf: no value clipping; normalize: standardise the advantages first (unbiased std + 1e-8). When
    the approximate KL of the minibatch exceeds kl_limit nothing is written (skipped True)."""
    clipped, clip_range, value_clip_range, value_coef, entropy_coef, normalize, kl_limit = settings
    rows = observations.shape[0]
    all_outputs, all_output_gradients, all_values, all_value_gradients, all_log_probs, all_weights = buffers
    outputs, output_gradient = all_outputs[:rows], all_output_gradients[:rows]
    values, value_gradient = all_values[:rows], all_value_gradients[:rows]
    log_probs, weights = all_log_probs[:rows], all_weights[:rows]
    policy_weights, policy_biases, policy_weight_gradients, policy_bias_gradients, policy_hidden, policy_scratch = policy
    value_weights, value_biases, value_weight_gradients, value_bias_gradients, value_hidden, value_scratch = value

    mlp_forward(observations, policy_weights, policy_biases, policy_hidden, outputs, tanh)
    entropy = head_log_probs(outputs, log_std, gaussian, discrete_actions, continuous_actions, log_probs)
    kl = 0.0
    for row in range(rows):
        kl += approximate_kl_row(float(log_probs[row]), float(old_log_probs[row]))
    kl /= rows
    if kl > kl_limit:
        return math.nan, math.nan, entropy / rows, kl, True

    mean, deviation = 0.0, 1.0
    if normalize:
        for row in range(rows):
            mean += advantages[row]
        mean /= rows
        squares = 0.0
        for row in range(rows):
            squares += (advantages[row] - mean) ** 2
        deviation = math.sqrt(squares / (rows - 1)) + 1e-8
    policy_loss = 0.0
    for row in range(rows):
        advantage = (advantages[row] - mean) / deviation if normalize else float(advantages[row])
        if clipped:
            loss, derivative = clipped_surrogate_row(float(log_probs[row]), float(old_log_probs[row]), advantage, clip_range)
        else:
            loss, derivative = policy_gradient_row(float(log_probs[row]), advantage)
        policy_loss += loss
        weights[row] = derivative / rows
    head_gradient(outputs, log_std, gaussian, discrete_actions, continuous_actions, weights, -entropy_coef / rows,
                  output_gradient, log_std_gradient)
    mlp_backward(observations, policy_weights, policy_hidden, output_gradient, policy_weight_gradients,
                 policy_bias_gradients, policy_scratch, tanh)

    mlp_forward(observations, value_weights, value_biases, value_hidden, values, tanh)
    value_loss = 0.0
    for row in range(rows):
        loss, derivative = value_row(float(values[row, 0]), float(returns[row]), float(old_values[row]), value_clip_range)
        value_loss += loss
        value_gradient[row, 0] = value_coef * derivative / rows
    mlp_backward(observations, value_weights, value_hidden, value_gradient, value_weight_gradients,
                 value_bias_gradients, value_scratch, tanh)
    return policy_loss / rows, value_loss / rows, entropy / rows, kl, False


@kernel
def act(observations, policy_weights, policy_biases, policy_hidden, tanh, log_std, gaussian, noise, outputs,
        discrete_actions, continuous_actions, log_probs):
    """a_t ~ pi(.|s_t) and log pi(a_t|s_t) for observations [N, in], from noise [N, n] drawn as torch's
    distributions draw it: Categorical a = argmax_j (l_j - log E_j), E ~ Exp(1) (Gumbel-max);
    Gaussian a = mu + exp(s) eps, eps ~ N(0, 1)."""
    mlp_forward(observations, policy_weights, policy_biases, policy_hidden, outputs, tanh)
    if gaussian:
        for row in range(outputs.shape[0]):
            for column in range(outputs.shape[1]):
                continuous_actions[row, column] = outputs[row, column] + noise[row, column] * np.exp(log_std[column])
        head_log_probs(outputs, log_std, gaussian, discrete_actions, continuous_actions, log_probs)
        return
    log_softmax(outputs)
    for row in range(outputs.shape[0]):
        best, best_score = 0, -np.inf
        for column in range(outputs.shape[1]):
            score = outputs[row, column] - np.log(noise[row, column])
            if score > best_score:
                best, best_score = column, score
        discrete_actions[row] = best
        log_probs[row] = outputs[row, best]


class CompiledStep(NamedTuple):
    """What one compiled gradient step computed: the minibatch's mean losses and entropy, its
    approximate KL(pi_old || pi_theta) before the step, and whether kl_limit skipped the step."""

    policy_loss: float
    value_loss: float
    entropy: float
    approximate_kl: float
    skipped: bool


@rebuilt_on_deepcopy
class CompiledActorCritic:
    """A ManualActorCritic's networks as CompiledMLPs, with the buffers of acting (n_envs rows) and
    of gradient steps (up to `rows` rows, grown on demand)."""

    def __init__(self, manual: ManualActorCritic, rows: int):
        self.policy = CompiledMLP(manual.policy, rows)
        self.value = CompiledMLP(manual.value, rows)
        self.gaussian = manual.log_std is not None
        self.outputs_width = len(manual.policy.weights[-1])
        if manual.log_std is None:
            self.log_std = self.log_std_gradient = np.zeros(0, FLOAT)
        else:
            self.log_std, self.log_std_gradient = as_array(manual.log_std), as_array(gradient_of(manual.log_std))
        parameters = (*manual.policy.weights, *manual.policy.biases, *manual.value.weights, *manual.value.biases)
        self.memory = KernelMemory(parameters + (() if manual.log_std is None else (manual.log_std,)))
        self.no_discrete_actions = np.zeros(0, np.int64)
        self.no_continuous_actions = np.zeros((0, self.outputs_width), FLOAT)
        self.rows = 0
        self.reserve(rows)

    def reserve(self, rows: int) -> None:
        """Buffers for gradient steps and acting on up to `rows` rows."""
        if rows > self.rows:
            self.rows = rows
            self.policy.reserve(rows)
            self.value.reserve(rows)
            width = self.outputs_width
            self.buffers = (
                np.zeros((rows, width), FLOAT), np.zeros((rows, width), FLOAT), np.zeros((rows, 1), FLOAT),
                np.zeros((rows, 1), FLOAT), np.zeros(rows, FLOAT), np.zeros(rows, FLOAT),
            )

    def gradient(self, minibatch: RolloutBatch, *, clipped: bool, clip_range: float, value_clip_range: float | None,
                 value_coef: float, entropy_coef: float, normalize: bool, kl_limit: float | None = None) -> CompiledStep:
        """Write into .grad the gradient of the minibatch's loss (module docstring): PPO's clipped
        surrogate (clipped=True, at clip_range) or the policy gradient (False), value_clip_range as
        losses.policy_gradient.value_loss, the advantages normalised first when `normalize`. With
        kl_limit, a minibatch whose approximate KL exceeds it gets no gradient (skipped)."""
        self.reattach()
        rows = len(minibatch)
        self.reserve(rows)
        inputs = self.policy.inputs(minibatch.observations)
        actions = as_array(minibatch.actions)
        discrete, continuous = (self.no_discrete_actions, actions) if self.gaussian else (actions, self.no_continuous_actions)
        settings = (
            clipped, float(clip_range), math.inf if value_clip_range is None else float(value_clip_range), float(value_coef),
            float(entropy_coef), normalize, math.inf if kl_limit is None else float(kl_limit),
        )
        result = actor_critic_gradient(
            inputs, discrete, continuous, as_array(minibatch.old_log_probs), as_array(minibatch.advantages),
            as_array(minibatch.returns), as_array(minibatch.old_values), settings, self.policy.arrays(),
            self.value.arrays(), self.log_std, self.log_std_gradient, self.gaussian, self.policy.tanh, self.buffers,
        )
        return CompiledStep(*result)

    def reattach(self) -> None:
        """Give the parameters back the memory the kernels work on where user code replaced it (KernelMemory)."""
        self.memory.reattach()

    def act(self, observations: np.ndarray, generator: torch.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(a_t ~ pi(.|s_t), log pi(a_t|s_t) float32 [N]) for the network inputs [N, *obs], drawing the
        noise from `generator` as the torch distribution's sample() does: int64 [N] actions for
        Categorical, float32 [N, D] for the Gaussian."""
        inputs = self.policy.inputs(observations)
        rows = len(inputs)
        self.reserve(rows)
        noise = torch.empty(rows, self.outputs_width)
        if self.gaussian:
            noise.normal_(generator=generator)
            discrete, continuous = self.no_discrete_actions, np.empty((rows, self.outputs_width), FLOAT)
        else:
            noise.exponential_(generator=generator)
            discrete, continuous = np.empty(rows, np.int64), self.no_continuous_actions
        log_probs = np.empty(rows, FLOAT)
        act(inputs, self.policy.weights, self.policy.biases, self.policy.hidden, self.policy.tanh, self.log_std,
            self.gaussian, noise.numpy(), self.buffers[0][:rows], discrete, continuous, log_probs)
        return (continuous if self.gaussian else discrete), log_probs
