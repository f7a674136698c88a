"""An experiment, not the library: what would compiled code buy PPO on CartPole-v1?

rlfoundry runs on eager PyTorch. Its PPO gradient step on the issue's CartPole setting (two
4 -> 64 -> 64 tanh MLPs, 256 rows) is about 40 tensor operations of a few microseconds each, and
their per-operation cost, not the arithmetic, bounds it (benchmarks/RESULTS.md, "PPO"). This script
measures the alternative: the whole gradient step (both MLPs' forward and backward, the clipped
surrogate's and the value loss's gradients, norm clipping and Adam) as one numba-compiled function,
and optionally the acting too (the policy's forward pass and a Gumbel-max sample), patched into
rlfoundry's PPO for the issue's setting only. Everything else (the envs, the rollout buffer, GAE,
the statistics, the evaluation) is rlfoundry's own code.

It is an upper bound for a decision, not a backend: it covers one configuration (Categorical
actions, two tanh hidden layers, no value clipping, no entropy bonus, one minibatch per epoch),
keeps its own Adam moments, and its tanh is a rational approximation (`tanh32`, checked below
against float64). Adding such a backend to the library would add numba and scipy (numba's
np.dot calls scipy's BLAS) as runtime dependencies and a compiled twin of each loss's gradient.

    make bench-setup    # installs numba and scipy with the other benchmark extras
    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/compiled_ppo_experiment.py --seeds 0 1 2
    .venv/bin/python benchmarks/compiled_ppo_experiment.py --check   # gradients and tanh32 against references

Modes, each run in a fresh process and alternating per seed: `eager` (rlfoundry as shipped),
`compiled` (the gradient step compiled), `compiled+acting` (the acting too), `passes` (only the
networks' forward and backward passes and Adam with clipping compiled, for the update and for
acting's forward pass; the losses' gradients and the action sampling stay rlfoundry's torch
functions, as a backend that keeps `losses/` as it is would have them), `passes+acting` (the
same with `compiled+acting`'s acting: forward pass and sampling compiled), `sb3`
(Stable-Baselines3, through actor_critic_cartpole.py's worker). The first run compiles the
kernels (a few seconds) and caches them in benchmarks/__pycache__; the script compiles them once
before timing anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

# One BLAS thread, as torch's one thread in every benchmark here (before numpy loads OpenBLAS).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numba
import numpy as np
import torch

from actor_critic_cartpole import ENV_ID, EVALUATION_EPISODES, EVALUATION_SEED, STEPS, rlfoundry_model
from fresh_process import run_worker

FLOAT = np.float32
# No "nnan" or "ninf": the compiler may not assume finite values, so NaNs still reach the checks.
FAST_MATH = {"reassoc", "contract", "arcp", "nsz", "afn"}
compiled = numba.njit(cache=True, fastmath=FAST_MATH, error_model="numpy")
MODES = ("compiled+acting", "compiled", "passes+acting", "passes", "eager", "sb3")
STABLE_BASELINES_SCRIPT = Path(__file__).with_name("actor_critic_cartpole.py")


@numba.njit(cache=True, fastmath=FAST_MATH, error_model="numpy", inline="always")
def tanh32(x):
    """tanh(x) ~ x p(x^2) / q(x^2) on [-7.905, 7.905] (the clamp leaves 1.0f outside), in float32.
    A rational approximation that vectorises: numba's libm tanhf does not (11 ns against 0.3 ns a float)."""
    x = min(max(x, FLOAT(-7.9053111)), FLOAT(7.9053111))
    x2 = x * x
    p = FLOAT(-2.76076847742355e-16)
    p = p * x2 + FLOAT(2.00018790482477e-13)
    p = p * x2 + FLOAT(-8.60467152213735e-11)
    p = p * x2 + FLOAT(5.12229709037114e-08)
    p = p * x2 + FLOAT(1.48572235717979e-05)
    p = p * x2 + FLOAT(6.37261928875436e-04)
    p = p * x2 + FLOAT(4.89352455891786e-03)
    q = FLOAT(1.19825839466702e-06)
    q = q * x2 + FLOAT(1.18534705686654e-04)
    q = q * x2 + FLOAT(2.26843463243900e-03)
    q = q * x2 + FLOAT(4.89352518554385e-03)
    return x * p / q


@compiled
def tanh32_array(values, out):
    for index in range(values.shape[0]):
        out[index] = tanh32(values[index])


@compiled
def affine(inputs, weight, bias, out, tanh):
    """out = inputs W^T + b, then tanh in place when asked."""
    np.dot(inputs, weight.T, out)
    for row in range(out.shape[0]):
        for column in range(out.shape[1]):
            value = out[row, column] + bias[column]
            out[row, column] = tanh32(value) if tanh else value


@compiled
def mlp_forward(inputs, layers, hidden_1, hidden_2, outputs):
    """outputs = W3 tanh(W2 tanh(W1 x + b1) + b2) + b3; layers = (W1, b1, W2, b2, W3, b3)."""
    weight_1, bias_1, weight_2, bias_2, weight_3, bias_3 = layers
    affine(inputs, weight_1, bias_1, hidden_1, True)
    affine(hidden_1, weight_2, bias_2, hidden_2, True)
    affine(hidden_2, weight_3, bias_3, outputs, False)


@compiled
def column_sums(matrix, out):
    out[:] = 0
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            out[column] += matrix[row, column]


@compiled
def tanh_backward(gradient, hidden):
    """gradient *= 1 - hidden^2, the derivative of tanh read from its output."""
    for row in range(gradient.shape[0]):
        for column in range(gradient.shape[1]):
            gradient[row, column] *= FLOAT(1) - hidden[row, column] * hidden[row, column]


@compiled
def mlp_backward(inputs, layers, hidden_1, hidden_2, output_gradient, gradients, below_2, below_1):
    """Write dL/dW and dL/db of every layer into gradients (ordered as layers), given dL/doutputs."""
    _, _, weight_2, _, weight_3, _ = layers
    weight_1_gradient, bias_1_gradient, weight_2_gradient, bias_2_gradient, weight_3_gradient, bias_3_gradient = gradients
    np.dot(output_gradient.T, hidden_2, weight_3_gradient)
    column_sums(output_gradient, bias_3_gradient)
    np.dot(output_gradient, weight_3, below_2)
    tanh_backward(below_2, hidden_2)
    np.dot(below_2.T, hidden_1, weight_2_gradient)
    column_sums(below_2, bias_2_gradient)
    np.dot(below_2, weight_2, below_1)
    tanh_backward(below_1, hidden_1)
    np.dot(below_1.T, inputs, weight_1_gradient)
    column_sums(below_1, bias_1_gradient)


@compiled
def ppo_gradient(observations, actions, old_log_probs, advantages, returns, clip_range, value_coef,
                 policy, value, policy_gradients, value_gradients, workspace):
    """Write the gradient of L = L^CLIP + value_coef mean (V - R)^2 into the gradients; return
    (L^CLIP, mean (V - R)^2). Categorical policy; dL/dlogits_j = w (1[j = a] - p_j) with
    w = dL/dlog pi = -rho A / B where the clip is inactive, else 0."""
    hidden_1, hidden_2, logits, value_hidden_1, value_hidden_2, values, logit_gradient, value_gradient, below_2, below_1 = workspace
    rows = observations.shape[0]
    per_row = FLOAT(1) / FLOAT(rows)
    mlp_forward(observations, policy, hidden_1, hidden_2, logits)
    mlp_forward(observations, value, value_hidden_1, value_hidden_2, values)
    low, high = FLOAT(1) - clip_range, FLOAT(1) + clip_range
    policy_loss, value_loss = FLOAT(0), FLOAT(0)
    for row in range(rows):
        largest = logits[row, 0]
        for column in range(1, logits.shape[1]):
            largest = max(largest, logits[row, column])
        total = FLOAT(0)
        for column in range(logits.shape[1]):
            total += np.exp(logits[row, column] - largest)
        log_normaliser = largest + np.log(total)
        action = actions[row]
        ratio = np.exp(logits[row, action] - log_normaliser - old_log_probs[row])
        unclipped = ratio * advantages[row]
        clipped = min(max(ratio, low), high) * advantages[row]
        weight = FLOAT(0)
        if unclipped <= clipped:
            policy_loss -= unclipped
            weight = -unclipped * per_row
        else:
            policy_loss -= clipped
        for column in range(logits.shape[1]):
            probability = np.exp(logits[row, column] - log_normaliser)
            chosen = FLOAT(1) if column == action else FLOAT(0)
            logit_gradient[row, column] = (chosen - probability) * weight
        error = values[row, 0] - returns[row]
        value_loss += error * error
        value_gradient[row, 0] = value_coef * FLOAT(2) * error * per_row
    mlp_backward(observations, policy, hidden_1, hidden_2, logit_gradient, policy_gradients, below_2, below_1)
    mlp_backward(observations, value, value_hidden_1, value_hidden_2, value_gradient, value_gradients, below_2, below_1)
    return policy_loss * per_row, value_loss * per_row


@compiled
def clipped_adam(parameters, gradient, first_moment, second_moment, max_norm, learning_rate, beta_1, beta_2,
                 epsilon, step):
    """Scale the flat gradient to norm <= max_norm, then torch's Adam:
    p -= lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps). parameters: flat views in the
    gradient's order."""
    squares = FLOAT(0)
    for index in range(gradient.shape[0]):
        squares += gradient[index] * gradient[index]
    scale = min(FLOAT(1), max_norm / (np.sqrt(squares) + FLOAT(1e-6)))
    step_size = learning_rate / (FLOAT(1) - beta_1**step)
    second_correction = np.sqrt(FLOAT(1) - beta_2**step)
    offset = 0
    for parameter in parameters:
        for index in range(parameter.shape[0]):
            flat = offset + index
            value = gradient[flat] * scale
            first_moment[flat] = beta_1 * first_moment[flat] + (FLOAT(1) - beta_1) * value
            second_moment[flat] = beta_2 * second_moment[flat] + (FLOAT(1) - beta_2) * value * value
            parameter[index] -= step_size * first_moment[flat] / (np.sqrt(second_moment[flat]) / second_correction + epsilon)
        offset += parameter.shape[0]


@compiled
def act(observations, policy, uniforms, hidden_1, hidden_2, logits, actions, log_probs):
    """a = argmax_j (logits_j - log(-log u_j)) (Gumbel-max, a sample of softmax(logits)) and log pi(a|s)."""
    mlp_forward(observations, policy, hidden_1, hidden_2, logits)
    for row in range(observations.shape[0]):
        largest = logits[row, 0]
        for column in range(1, logits.shape[1]):
            largest = max(largest, logits[row, column])
        total = FLOAT(0)
        best, best_score = 0, -np.inf
        for column in range(logits.shape[1]):
            total += np.exp(logits[row, column] - largest)
            score = logits[row, column] - np.log(-np.log(uniforms[row, column]))
            if score > best_score:
                best, best_score = column, score
        actions[row] = best
        log_probs[row] = logits[row, best] - largest - np.log(total)


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's memory as an array: the compiled code updates torch's parameters in place."""
    return tensor.detach().numpy()


class CompiledPPO:
    """The arrays the kernels read and write for one rlfoundry PPO model of the experiment's setting."""

    def __init__(self, model) -> None:
        config, manual = model.config, model.collector.manual
        if manual is None or manual.log_std is not None or len(config.hidden_sizes) != 2:
            raise SystemExit("the experiment covers separate two-layer MLPs with Categorical actions only")
        if config.value_clip_range is not None or config.entropy_coef or config.target_kl is not None:
            raise SystemExit("the experiment covers no value clipping, no entropy bonus and no target_kl only")
        if config.batch_size < config.rollout_size:
            raise SystemExit("the experiment covers one minibatch per epoch only")
        self.model, self.config = model, config

        def layers(mlp, attribute=None):
            tensors = [tensor for pair in zip(mlp.weights, mlp.biases) for tensor in pair]
            return tuple(as_numpy(tensor if attribute is None else getattr(tensor, attribute)) for tensor in tensors)

        self.policy, self.value = layers(manual.policy), layers(manual.value)
        self.policy_gradients, self.value_gradients = layers(manual.policy, "grad"), layers(manual.value, "grad")
        self.parameters = tuple(as_numpy(parameter).reshape(-1) for parameter in model.network.parameters())
        self.gradient = as_numpy(manual.gradient)  # every .grad above is a view of it, in parameters' order
        self.first_moment, self.second_moment = np.zeros_like(self.gradient), np.zeros_like(self.gradient)
        self.steps = 0
        rows, (first, second), actions = config.rollout_size, config.hidden_sizes, self.policy[-1].shape[0]
        shapes = [(rows, first), (rows, second), (rows, actions), (rows, first), (rows, second), (rows, 1),
                  (rows, actions), (rows, 1), (rows, second), (rows, first)]
        self.workspace = tuple(np.zeros(shape, FLOAT) for shape in shapes)
        envs = config.n_envs
        self.acting_workspace = (np.zeros((envs, first), FLOAT), np.zeros((envs, second), FLOAT), np.zeros((envs, actions), FLOAT))
        self.rng = np.random.default_rng(config.seed)

    def gradient_arguments(self, batch, clip_range: float) -> tuple:
        return (
            as_numpy(batch.observations), as_numpy(batch.actions).astype(np.int64), as_numpy(batch.old_log_probs),
            as_numpy(batch.advantages), as_numpy(batch.returns), FLOAT(clip_range), FLOAT(self.config.value_coef),
            self.policy, self.value, self.policy_gradients, self.value_gradients, self.workspace,
        )

    def update(self, batch, learning_rate: float, clip_range: float, monitor) -> None:
        """PPO.update for the experiment's setting: n_epochs compiled steps on the whole rollout."""
        from rlfoundry.algorithms.ppo import PPOUpdate
        from rlfoundry.losses.policy_gradient import normalize_advantages

        config = self.config
        normalised = type(batch)(**{**batch.__dict__, "advantages": normalize_advantages(batch.advantages)})
        arguments = self.gradient_arguments(normalised, clip_range)
        policy_losses, value_losses = [], []
        for _ in range(config.n_epochs):
            self.steps += 1
            policy_loss, value_loss = ppo_gradient(*arguments)
            clipped_adam(self.parameters, self.gradient, self.first_moment, self.second_moment, FLOAT(config.max_grad_norm),
                         FLOAT(learning_rate), FLOAT(0.9), FLOAT(0.999), FLOAT(config.adam_epsilon), FLOAT(self.steps))
            policy_losses.append(torch.tensor(policy_loss))
            value_losses.append(torch.tensor(value_loss))
        self.model.last_update = self.model._statistics(batch, policy_losses, value_losses, clip_range, False)
        for name, number in zip(PPOUpdate._fields, self.model.last_update):
            monitor.record(f"train/{name}", float(number))

    def update_with_torch_losses(self, batch, learning_rate: float, clip_range: float, monitor) -> None:
        """PPO.update for the experiment's setting with compiled passes and Adam, and the losses'
        gradients from rlfoundry's torch functions in between."""
        from rlfoundry.algorithms.ppo import PPOUpdate
        from rlfoundry.losses.policy_gradient import clipped_surrogate_loss_and_gradient, normalize_advantages
        from rlfoundry.losses.policy_gradient import value_loss_and_gradient
        from rlfoundry.networks.manual_actor_critic import categorical_gradient
        from rlfoundry.networks.policies import Categorical

        config = self.config
        advantages = normalize_advantages(batch.advantages)
        observations = as_numpy(batch.observations)
        hidden_1, hidden_2, logits, value_hidden_1, value_hidden_2, values, _, _, below_2, below_1 = self.workspace
        logits_tensor, values_tensor = torch.from_numpy(logits), torch.from_numpy(values).squeeze(-1)
        policy_losses, value_losses = [], []
        for _ in range(config.n_epochs):
            self.steps += 1
            mlp_forward(observations, self.policy, hidden_1, hidden_2, logits)
            mlp_forward(observations, self.value, value_hidden_1, value_hidden_2, values)
            distribution = Categorical(logits_tensor)
            policy_loss, log_prob_weights = clipped_surrogate_loss_and_gradient(
                distribution.log_prob(batch.actions), batch.old_log_probs, advantages, clip_range)
            value_loss, value_weights = value_loss_and_gradient(values_tensor, batch.returns, batch.old_values, None)
            logit_gradient = categorical_gradient(distribution, batch.actions, log_prob_weights, 0.0)
            value_gradient = value_weights.mul_(config.value_coef).unsqueeze(-1)
            mlp_backward(observations, self.policy, hidden_1, hidden_2, as_numpy(logit_gradient), self.policy_gradients, below_2, below_1)
            mlp_backward(observations, self.value, value_hidden_1, value_hidden_2, as_numpy(value_gradient), self.value_gradients,
                         below_2, below_1)
            clipped_adam(self.parameters, self.gradient, self.first_moment, self.second_moment, FLOAT(config.max_grad_norm),
                         FLOAT(learning_rate), FLOAT(0.9), FLOAT(0.999), FLOAT(config.adam_epsilon), FLOAT(self.steps))
            policy_losses.append(policy_loss)
            value_losses.append(value_loss)
        self.model.last_update = self.model._statistics(batch, policy_losses, value_losses, clip_range, False)
        for name, number in zip(PPOUpdate._fields, self.model.last_update):
            monitor.record(f"train/{name}", float(number))

    def distribution(self, observations: torch.Tensor):
        """RolloutCollector.distribution for acting: the compiled forward pass, rlfoundry's Categorical."""
        from rlfoundry.networks.policies import Categorical

        hidden_1, hidden_2, logits = self.acting_workspace
        if len(observations) != len(logits):
            return self.model.collector.manual.distribution(observations)
        mlp_forward(as_numpy(observations), self.policy, hidden_1, hidden_2, logits)
        return Categorical(torch.from_numpy(logits))

    def collect(self, monitor) -> None:
        """RolloutCollector.collect with the compiled acting (numpy's generator draws the Gumbel noise)."""
        collector = self.model.collector
        rollout, training_env, envs = collector.rollout, collector.training_env, self.config.n_envs
        rollout.reset()
        inputs = collector._start()
        for _ in range(self.config.n_steps):
            actions, log_probs = np.empty(envs, np.int64), np.empty(envs, FLOAT)
            uniforms = self.rng.random(self.acting_workspace[2].shape, dtype=FLOAT)
            np.maximum(uniforms, FLOAT(1e-30), out=uniforms)
            act(np.ascontiguousarray(inputs, dtype=FLOAT), self.policy, uniforms, *self.acting_workspace, actions, log_probs)
            step, finished_returns, finished_lengths = training_env.step(actions)
            rollout.add(inputs, actions, log_probs, None, step)
            collector.steps += envs
            monitor.episodes(collector.steps, finished_returns, finished_lengths)
            inputs = step.observations
        rollout.fill_values(collector.values)
        rollout.finish(inputs, collector.values)


def experiment_model(mode: str, seed: int):
    model = rlfoundry_model("ppo", seed)
    if mode.startswith("compiled"):
        kernels = CompiledPPO(model)
        model.update = kernels.update
        if mode == "compiled+acting":
            model.collector.collect = kernels.collect
    if mode.startswith("passes"):
        kernels = CompiledPPO(model)
        model.update = kernels.update_with_torch_losses
        model.collector.distribution = kernels.distribution
        if mode == "passes+acting":
            model.collector.collect = kernels.collect
    return model


def run_one(mode: str, seed: int, steps: int) -> dict:
    import rlfoundry

    model = experiment_model(mode, seed)
    start, cpu_start = time.perf_counter(), time.process_time()
    model.learn(steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    result = rlfoundry.evaluate(model, ENV_ID, n_episodes=EVALUATION_EPISODES, seed=EVALUATION_SEED)
    return {"library": mode, "seed": seed, "seconds": seconds, "cpu_seconds": cpu_seconds, "return": result.mean}


def check() -> None:
    """The compiled gradient against rlfoundry's written-out one on a real rollout, and tanh32 against float64."""
    from rlfoundry.losses.policy_gradient import clipped_surrogate_loss_and_gradient, normalize_advantages
    from rlfoundry.losses.policy_gradient import value_loss_and_gradient
    from rlfoundry.run.on_policy import training_forward

    inputs = np.linspace(-12.0, 12.0, 2_000_001, dtype=FLOAT)
    approximations = np.empty_like(inputs)
    tanh32_array(inputs, approximations)
    exact = np.tanh(inputs.astype(np.float64))
    spacing = np.spacing(np.abs(exact).astype(FLOAT)).astype(np.float64)
    print(f"tanh32 on [-12, 12]: largest error {np.max(np.abs(approximations - exact) / spacing):.2f} ulp")

    model = rlfoundry_model("ppo", 0)
    model.learn(4096)
    kernels = CompiledPPO(model)
    batch = model.collector.gae_batch()
    batch = type(batch)(**{**batch.__dict__, "advantages": normalize_advantages(batch.advantages)})
    clip_range, config = 0.1, model.config
    with torch.no_grad():
        distribution, values, backward = training_forward(model.collector, batch.observations)
        _, log_prob_weights = clipped_surrogate_loss_and_gradient(
            distribution.log_prob(batch.actions), batch.old_log_probs, batch.advantages, clip_range)
        _, value_weights = value_loss_and_gradient(values, batch.returns, batch.old_values, None)
        backward(batch.actions, log_prob_weights, value_weights.mul_(config.value_coef), 0.0)
    reference = kernels.gradient.copy()
    ppo_gradient(*kernels.gradient_arguments(batch, clip_range))
    difference = np.abs(kernels.gradient - reference)
    print(f"gradient of {reference.size} parameters: largest difference {difference.max():.3g}, "
          f"relative to the largest component {difference.max() / np.abs(reference).max():.3g}, "
          f"norm of the difference / norm {np.linalg.norm(difference) / np.linalg.norm(reference):.3g}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=STEPS["ppo"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--check", action="store_true", help="check the kernels against references instead")
    parser.add_argument("--worker", choices=MODES[:5], help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    torch.set_num_threads(1)
    if arguments.check:
        check()
        return
    if arguments.worker:
        print(json.dumps(run_one(arguments.worker, arguments.seeds[0], arguments.steps)))
        return
    start = time.perf_counter()
    run_worker(__file__, ["--worker", "compiled+acting", "--seeds", "0", "--steps", "512"])
    print(f"compiling (or loading the cache) and a 512-step run: {time.perf_counter() - start:.1f} s", flush=True)
    results = []
    for seed in arguments.seeds:
        for mode in arguments.modes:
            run = ["--seeds", str(seed), "--steps", str(arguments.steps)]
            result = (run_worker(str(STABLE_BASELINES_SCRIPT), ["--worker", "sb3", "--torch-threads", "1", *run])
                      if mode == "sb3" else run_worker(__file__, ["--worker", mode, *run]))
            result["library"] = mode
            print(f"{mode:16s} seed {seed}: {result['seconds']:6.2f} s, evaluation return {result['return']:.1f}", flush=True)
            results.append(result)
    print("\n| mode | median s | s per seed | evaluation returns | vs sb3 |")
    print("|---|---|---|---|---|")
    medians = {mode: statistics.median(r["seconds"] for r in results if r["library"] == mode) for mode in arguments.modes}
    for mode in arguments.modes:
        mine = [result for result in results if result["library"] == mode]
        ratio = f"{medians['sb3'] / medians[mode]:.2f}x" if "sb3" in medians else ""
        print(f"| {mode} | {medians[mode]:.2f} | {', '.join(format(r['seconds'], '.2f') for r in mine)} | "
              f"{', '.join(format(r['return'], '.0f') for r in mine)} | {ratio} |")


if __name__ == "__main__":
    main()
