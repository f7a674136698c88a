"""Experiment: what numba-compiled gradient steps and acting would buy DQN on CartPole-v1.

An experiment, not the library: nothing in rlfoundry imports this file, and the package gains no
dependency from it (it needs numba, and scipy for numba's np.dot). It exists so that the owner can
decide with numbers whether a compiled backend is worth two runtime dependencies (issue 4: DQN 4x
faster than Stable-Baselines3; eager PyTorch's per-operation cost is what remains, RESULTS.md "DQN
... Where the time goes").

rlfoundry's DQN is built with dqn_cartpole.py's settings and patched on the instance:
- `compiled`: each gradient step of a burst (the online MLP's forward pass on the minibatch, the
  Huber loss's gradient against the burst's precomputed targets, the backward pass, global-norm
  clipping and Adam with torch's formula and the optimizer's betas and eps) is one numba call. The
  rest of a burst is rlfoundry's: sampling the replay buffer, the target network's pass, the
  targets, the logged loss and its NaN check. The torch parameters are updated in place through
  numpy views of their memory, so rlfoundry's evaluation afterwards plays the trained weights;
  Adam's moments live in numpy arrays of this script.
- `compiled+acting`: the above, and epsilon-greedy acting's greedy forward pass in numba
  (rlfoundry's own `_behaviour` still draws the exploration, with the model's generator).
- `compiled+acting+target`: the above, and the burst's target pass (Q(s', .; theta^-), its max and
  y = r + gamma (1 - terminated) max) in numba, in the same 1,024-row blocks as rlfoundry's.
- `eager` is rlfoundry unchanged, `sb3` dqn_cartpole.py's own Stable-Baselines3 worker.

Every run is a fresh subprocess (one torch thread, OPENBLAS_NUM_THREADS=1 for the BLAS numba's
np.dot calls through scipy); modes alternate per seed. The clock covers learn() only; the kernels
are compiled (first run, cached in benchmarks/__pycache__) or loaded from the cache before it, and
that time is reported apart. Then each model plays dqn_cartpole.py's 20 greedy evaluation episodes.

    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/compiled_dqn_experiment.py run --seeds 0 1 2   # about 9 minutes
    .venv/bin/python benchmarks/compiled_dqn_experiment.py check        # compiled gradient against rlfoundry's
    flock /tmp/rlfoundry-bench.lock .venv/bin/python benchmarks/compiled_dqn_experiment.py time-step
    .venv/bin/python benchmarks/compiled_dqn_experiment.py instrument   # where a compiled+acting run's time goes
"""

from __future__ import annotations

import os

# Before numpy and scipy load their BLAS: one thread, as torch has here.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import dataclasses
import json
import math
import statistics
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch

from dqn_cartpole import ENV_ID, EVALUATION_EPISODES, EVALUATION_SEED, STEPS, in_fresh_process, rlfoundry_model
from fresh_process import run_worker

F32 = np.float32
# Not fastmath=True: its nnan/ninf would let the compiler assume no NaNs, and rlfoundry must still see them.
FLAGS = {"reassoc", "contract", "arcp", "nsz", "afn"}
# error_model="numpy": no zero-division checks, which would stop the loops from vectorising.
kernel = numba.njit(cache=True, fastmath=FLAGS, error_model="numpy")
MODES = ("eager", "compiled", "compiled+acting", "compiled+acting+target", "sb3")
COMPILED_MODES = MODES[1:4]
TARGET_BLOCK_ROWS = 1024  # rlfoundry.algorithms.dqn's block size, kept for the compiled target pass


# -- kernels -------------------------------------------------------------------------------------


@kernel
def relu_layer(inputs, weight, bias, out):
    """out = relu(inputs W^T + b); a NaN stays NaN (as torch's relu)."""
    np.dot(inputs, weight.T, out)
    for row in range(out.shape[0]):
        for column in range(out.shape[1]):
            value = out[row, column] + bias[column]
            out[row, column] = F32(0) if value < F32(0) else value


@kernel
def linear_layer(inputs, weight, bias, out):
    np.dot(inputs, weight.T, out)
    for row in range(out.shape[0]):
        for column in range(out.shape[1]):
            out[row, column] += bias[column]


@kernel
def q_values(observations, parameters, hidden_1, hidden_2, out):
    """Q(s, .) [B, A] of the [in, H1, H2, A] ReLU MLP (W1, b1, W2, b2, W3, b3)."""
    weight_1, bias_1, weight_2, bias_2, weight_3, bias_3 = parameters
    relu_layer(observations, weight_1, bias_1, hidden_1)
    relu_layer(hidden_1, weight_2, bias_2, hidden_2)
    linear_layer(hidden_2, weight_3, bias_3, out)


@kernel
def relu_backward(gradient, output, bias_gradient):
    """gradient <- gradient * 1[output > 0] (torch's threshold_backward), and its column sums into
    bias_gradient."""
    bias_gradient[:] = 0
    for row in range(gradient.shape[0]):
        for column in range(gradient.shape[1]):
            value = F32(0) if output[row, column] <= F32(0) else gradient[row, column]
            gradient[row, column] = value
            bias_gradient[column] += value


@kernel
def q_gradient(observations, actions, targets, huber, parameters, gradients, workspace, errors):
    """The loss's gradient with respect to the parameters into `gradients`, and the TD errors
    delta_i = Q(s_i, a_i) - y_i into `errors` (manual_mlp.backward with losses.dqn.q_value_loss_gradient)."""
    weight_1, bias_1, weight_2, bias_2, weight_3, bias_3 = parameters
    weight_gradient_1, bias_gradient_1, weight_gradient_2, bias_gradient_2, weight_gradient_3, bias_gradient_3 = gradients
    hidden_1, hidden_2, outputs, output_gradient, hidden_gradient_2, hidden_gradient_1 = workspace
    q_values(observations, parameters, hidden_1, hidden_2, outputs)
    weight = F32(1) / F32(observations.shape[0])
    output_gradient[:] = 0
    for row in range(observations.shape[0]):
        action = actions[row]
        error = outputs[row, action] - targets[row]
        errors[row] = error
        # l'(delta) / B: Huber's clip(delta, -1, 1), the squared loss's 2 delta.
        derivative = min(max(error, F32(-1)), F32(1)) if huber else F32(2) * error
        output_gradient[row, action] = weight * derivative
    np.dot(output_gradient.T, hidden_2, weight_gradient_3)
    bias_gradient_3[:] = 0
    for row in range(output_gradient.shape[0]):
        for column in range(output_gradient.shape[1]):
            bias_gradient_3[column] += output_gradient[row, column]
    np.dot(output_gradient, weight_3, hidden_gradient_2)
    relu_backward(hidden_gradient_2, hidden_2, bias_gradient_2)
    np.dot(hidden_gradient_2.T, hidden_1, weight_gradient_2)
    np.dot(hidden_gradient_2, weight_2, hidden_gradient_1)
    relu_backward(hidden_gradient_1, hidden_1, bias_gradient_1)
    np.dot(hidden_gradient_1.T, observations, weight_gradient_1)


@kernel
def adam(parameter, gradient, scale, first_moment, second_moment, beta_1, beta_2, step_size, epsilon,
         bias_correction_2_root):
    """gradient <- scale gradient, then torch's Adam step on one parameter (flat arrays of one length).
    A function of its own: the same loop inlined over offsets into the flat arrays ran 8x slower
    (not vectorised)."""
    for index in range(parameter.shape[0]):
        value = gradient[index] * scale
        gradient[index] = value
        first = beta_1 * first_moment[index] + (F32(1) - beta_1) * value
        second = beta_2 * second_moment[index] + (F32(1) - beta_2) * value * value
        first_moment[index] = first
        second_moment[index] = second
        parameter[index] -= step_size * first / (np.sqrt(second) / bias_correction_2_root + epsilon)


@kernel
def clip_and_adam(flat_parameters, flat_gradient, first_moment, second_moment, max_norm, learning_rate,
                  beta_1, beta_2, epsilon, bias_correction_1, bias_correction_2_root):
    """g <- g min(1, max_norm / (||g|| + 1e-6)) (run.optimizer_step.clip_gradient_norm), then torch's Adam:
    m <- b1 m + (1 - b1) g,  v <- b2 v + (1 - b2) g^2,  p <- p - lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps)."""
    squares = F32(0)
    for index in range(flat_gradient.shape[0]):
        squares += flat_gradient[index] * flat_gradient[index]
    coefficient = (F32(1) / (np.sqrt(squares) + F32(1e-6))) * max_norm
    scale = F32(1) if coefficient >= F32(1) else coefficient  # a NaN norm makes every gradient NaN
    step_size = learning_rate / bias_correction_1
    start = 0
    for parameter in flat_parameters:
        stop = start + parameter.shape[0]
        adam(parameter, flat_gradient[start:stop], scale, first_moment[start:stop], second_moment[start:stop],
             beta_1, beta_2, step_size, epsilon, bias_correction_2_root)
        start = stop


@kernel
def gradient_step(observations, actions, targets, huber, parameters, gradients, workspace, errors,
                  flat_parameters, flat_gradient, first_moment, second_moment, max_norm, learning_rate,
                  beta_1, beta_2, epsilon, bias_correction_1, bias_correction_2_root):
    """One whole gradient step: q_gradient, then clip_and_adam."""
    q_gradient(observations, actions, targets, huber, parameters, gradients, workspace, errors)
    clip_and_adam(flat_parameters, flat_gradient, first_moment, second_moment, max_norm, learning_rate,
                  beta_1, beta_2, epsilon, bias_correction_1, bias_correction_2_root)


@kernel
def greedy_actions(observations, parameters, hidden_1, hidden_2, outputs, actions):
    """argmax_a Q(s, a) per row, the lowest index on ties (as torch's argmax)."""
    q_values(observations, parameters, hidden_1, hidden_2, outputs)
    for row in range(outputs.shape[0]):
        best = 0
        for action in range(1, outputs.shape[1]):
            if outputs[row, action] > outputs[row, best]:
                best = action
        actions[row] = best


@kernel
def dqn_targets_blocked(next_observations, rewards, discounts, terminated, parameters, hidden_1, hidden_2, outputs,
                        block_observations, targets):
    """y = r + gamma^k (1 - terminated) max_a' Q(s', a'; theta^-) over a burst, in blocks of
    len(block_observations) rows (copied into a whole array: np.dot takes no row slices)."""
    rows, block = next_observations.shape[0], block_observations.shape[0]
    for start in range(0, rows, block):
        block_observations[:] = next_observations[start : start + block]
        q_values(block_observations, parameters, hidden_1, hidden_2, outputs)
        for row in range(block):
            best = outputs[row, 0]
            for action in range(1, outputs.shape[1]):
                best = max(best, outputs[row, action])
            index = start + row
            bootstrap = F32(0) if terminated[index] else discounts[index]
            targets[index] = rewards[index] + bootstrap * best


# -- patching rlfoundry's DQN --------------------------------------------------------------------


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's memory as a numpy array (no copy): writes through it update the tensor."""
    return tensor.detach().numpy()


def layer_arrays(manual_mlp: Any) -> tuple[np.ndarray, ...]:
    """(W1, b1, W2, b2, W3, b3) of a written-out MLP, sharing the torch parameters' memory."""
    return tuple(as_numpy(tensor) for pair in zip(manual_mlp.weights, manual_mlp.biases) for tensor in pair)


def require_benchmark_setting(model: Any) -> None:
    """The kernels cover dqn_cartpole.py's network and options only."""
    config, manual = model.config, model.manual_mlp
    problems = [
        (manual is None or manual.encoder is not None or manual.activation != "relu", "a written-out ReLU MLP on float vectors"),
        (manual is not None and len(manual.weights) != 3, "two hidden layers"),
        (config.double_q, "double_q=False"),
        (config.max_grad_norm is None, "max_grad_norm set"),
        (config.n_step != 1 or config.clip_rewards, "n_step=1 and clip_rewards=False"),
    ]
    missing = [need for failed, need in problems if failed]
    if missing:
        raise SystemExit(f"this experiment's kernels need {', '.join(missing)}")


class CompiledSteps:
    """The arrays the compiled step works on: the online network's parameters and gradients (views of
    the torch tensors), Adam's moments (copied from the optimizer's state when it has one) and buffers."""

    def __init__(self, model: Any, rows: int):
        require_benchmark_setting(model)
        self.parameters = layer_arrays(model.manual_mlp)
        self.flat_parameters = tuple(array.reshape(-1) for array in self.parameters)
        self.flat_gradient = as_numpy(model.flat_gradient)
        self.gradients = tuple(as_numpy(parameter.grad) for parameter in model.online_parameters)
        group = model.optimizer.param_groups[0]
        self.learning_rate = group["lr"]
        self.betas = group["betas"]
        self.epsilon = group["eps"]
        states = [model.optimizer.state.get(parameter) for parameter in model.online_parameters]
        if all(states):
            self.first_moment = np.concatenate([as_numpy(state["exp_avg"]).reshape(-1) for state in states])
            self.second_moment = np.concatenate([as_numpy(state["exp_avg_sq"]).reshape(-1) for state in states])
            self.adam_steps = int(states[0]["step"])
        else:
            self.first_moment = np.zeros_like(self.flat_gradient)
            self.second_moment = np.zeros_like(self.flat_gradient)
            self.adam_steps = 0
        self.huber = model.config.loss == "huber"
        self.max_norm = F32(model.config.max_grad_norm)
        hidden = model.config.hidden_sizes
        self.workspace = tuple(
            np.zeros(shape, F32)
            for shape in ((rows, hidden[0]), (rows, hidden[1]), (rows, model.n_actions), (rows, model.n_actions),
                          (rows, hidden[1]), (rows, hidden[0]))
        )
        for array in (*self.parameters, *self.flat_parameters, *self.gradients, self.flat_gradient):
            assert array.dtype == F32 and array.flags.c_contiguous
        assert all(np.shares_memory(flat, array) for flat, array in zip(self.flat_parameters, self.parameters))
        assert all(np.shares_memory(self.flat_gradient, array) for array in self.gradients)

    def gradient(self, observations: np.ndarray, actions: np.ndarray, targets: np.ndarray, errors: np.ndarray) -> None:
        """The loss's gradient into the model's .grad, without clipping or Adam (for the check)."""
        q_gradient(observations, actions, targets, self.huber, self.parameters, self.gradients, self.workspace, errors)

    def step(self, observations: np.ndarray, actions: np.ndarray, targets: np.ndarray, errors: np.ndarray) -> None:
        """One gradient step on a minibatch (float32 [B, 4], int64 [B], float32 [B]); TD errors into errors [B]."""
        self.adam_steps += 1
        beta_1, beta_2 = self.betas
        # As torch's fused Adam: the bias corrections in double precision, the sweep in float32.
        bias_correction_1 = 1.0 - beta_1**self.adam_steps
        bias_correction_2_root = math.sqrt(1.0 - beta_2**self.adam_steps)
        gradient_step(
            observations, actions, targets, self.huber, self.parameters, self.gradients, self.workspace, errors,
            self.flat_parameters, self.flat_gradient, self.first_moment, self.second_moment, self.max_norm,
            F32(self.learning_rate), F32(beta_1), F32(beta_2), F32(self.epsilon), F32(bias_correction_1),
            F32(bias_correction_2_root),
        )


class CompiledTargets:
    """The burst's targets y from the target network in numba, blocks as rlfoundry's."""

    def __init__(self, model: Any):
        self.parameters = layer_arrays(model.target_mlp)
        hidden = model.config.hidden_sizes
        self.hidden_1 = np.zeros((TARGET_BLOCK_ROWS, hidden[0]), F32)
        self.hidden_2 = np.zeros((TARGET_BLOCK_ROWS, hidden[1]), F32)
        self.outputs = np.zeros((TARGET_BLOCK_ROWS, model.n_actions), F32)
        self.block = np.zeros((TARGET_BLOCK_ROWS, model.observation_space.shape[0]), F32)

    def __call__(self, next_observations: np.ndarray, rewards: np.ndarray, discounts: np.ndarray,
                 terminated: np.ndarray) -> np.ndarray:
        if len(next_observations) % TARGET_BLOCK_ROWS:
            raise ValueError(f"the compiled target pass takes whole blocks of {TARGET_BLOCK_ROWS} rows")
        targets = np.empty(len(next_observations), F32)
        dqn_targets_blocked(next_observations, rewards, discounts, terminated, self.parameters, self.hidden_1,
                            self.hidden_2, self.outputs, self.block, targets)
        return targets


def torch_targets(model: Any, batch: Any) -> np.ndarray:
    """rlfoundry's targets for a sampled burst (numpy batch): its target pass and losses.dqn.dqn_targets."""
    from rlfoundry.losses.dqn import dqn_targets

    tensors = batch.to_tensors(model.device)
    next_q_values_target = model._target_q_values(tensors.next_observations)
    return dqn_targets(tensors.rewards, tensors.discounts, tensors.terminated, next_q_values_target).numpy()


def patch_training(model: Any, compiled_targets: bool) -> CompiledSteps:
    """Replace model._train with one whose gradient steps are compiled calls (rlfoundry's _train
    otherwise: the same sampling with the model's generator, the same logged loss and NaN check)."""
    from rlfoundry.losses.dqn import td_error_loss
    from rlfoundry.run.checkpoint import NonFiniteError

    config = model.config
    steps = CompiledSteps(model, config.batch_size)
    targets_of = CompiledTargets(model) if compiled_targets else None

    def train(gradient_steps: int, monitor: Any) -> None:
        size = config.batch_size
        batch = model.replay.sample(size * gradient_steps, model.rng)
        if targets_of is None:
            targets = torch_targets(model, batch)
        else:
            targets = targets_of(batch.next_observations, batch.rewards, batch.discounts, batch.terminated)
        errors = np.empty(len(targets), F32)
        for start in range(0, len(targets), size):
            rows = slice(start, start + size)
            steps.step(batch.observations[rows], batch.actions[rows], targets[rows], errors[rows])
        model.gradient_steps_done += gradient_steps
        mean_loss = float(td_error_loss(torch.from_numpy(errors), config.loss))
        if not math.isfinite(mean_loss):
            raise NonFiniteError(f"the DQN loss became {mean_loss} at env step {model.steps}")
        monitor.record("train/loss", mean_loss)
        monitor.record("train/epsilon", model.epsilon())

    model._train = train
    return steps


class CompiledGreedy:
    """model._greedy in numba: argmax_a Q(s, a; theta) on the online network's current weights."""

    def __init__(self, model: Any):
        self.parameters = layer_arrays(model.manual_mlp)
        self.hidden = model.config.hidden_sizes
        self.n_actions = model.n_actions
        self.buffers: dict[int, tuple[np.ndarray, ...]] = {}

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        rows = len(observations)
        if rows not in self.buffers:
            self.buffers[rows] = (np.zeros((rows, self.hidden[0]), F32), np.zeros((rows, self.hidden[1]), F32),
                                  np.zeros((rows, self.n_actions), F32))
        actions = np.empty(rows, np.int64)
        greedy_actions(np.ascontiguousarray(observations, F32), self.parameters, *self.buffers[rows], actions)
        return actions


@contextlib.contextmanager
def compiled_acting(model: Any) -> Iterator[None]:
    """Inside, model._greedy (what _behaviour's epsilon-greedy acting calls) is the compiled one;
    after, rlfoundry's again, so that evaluation plays through rlfoundry's own code."""
    model._greedy = CompiledGreedy(model)
    try:
        yield
    finally:
        del model._greedy


def copied_parameters(steps: CompiledSteps) -> CompiledSteps:
    """The same CompiledSteps on copies of the parameters and gradients: its steps leave the model alone."""
    steps.parameters = tuple(array.copy() for array in steps.parameters)
    steps.flat_parameters = tuple(array.reshape(-1) for array in steps.parameters)
    steps.flat_gradient = steps.flat_gradient.copy()
    offsets = np.cumsum([0] + [array.size for array in steps.parameters])
    steps.gradients = tuple(steps.flat_gradient[low:high].reshape(array.shape)
                            for low, high, array in zip(offsets, offsets[1:], steps.parameters))
    return steps


def warm_up(model: Any) -> float:
    """Seconds to compile (or load from the cache) every kernel, called on copies of the model's
    arrays with the types training passes; the model is left unchanged."""
    start = time.perf_counter()
    steps = copied_parameters(CompiledSteps(model, model.config.batch_size))
    observations = np.zeros((model.config.batch_size, model.observation_space.shape[0]), F32)
    targets, errors = np.zeros(len(observations), F32), np.zeros(len(observations), F32)
    steps.step(observations, np.zeros(len(observations), np.int64), targets, errors)
    greedy = CompiledGreedy(model)
    greedy.parameters = steps.parameters
    greedy(observations[:1])
    burst = np.zeros((TARGET_BLOCK_ROWS, observations.shape[1]), F32)
    CompiledTargets(model)(burst, np.zeros(TARGET_BLOCK_ROWS, F32), np.zeros(TARGET_BLOCK_ROWS, F32),
                           np.zeros(TARGET_BLOCK_ROWS, bool))
    return time.perf_counter() - start


def patched_model(mode: str, seed: int) -> Any:
    """dqn_cartpole.py's rlfoundry DQN, patched for `mode` (one torch thread)."""
    model = rlfoundry_model(seed)
    if mode != "eager":
        patch_training(model, compiled_targets=mode == "compiled+acting+target")
    return model


def train(model: Any, mode: str, steps: int) -> None:
    with compiled_acting(model) if mode in COMPILED_MODES[1:] else contextlib.nullcontext():
        model.learn(steps)


# -- runs ----------------------------------------------------------------------------------------


def train_and_evaluate(mode: str, seed: int, steps: int) -> dict:
    """One run in this process: kernel compile/load seconds, seconds of learn(), the evaluation return."""
    import rlfoundry

    model = patched_model(mode, seed)
    compile_seconds = warm_up(model) if mode != "eager" else 0.0
    start, start_cpu = time.perf_counter(), time.process_time()
    train(model, mode, steps)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - start_cpu
    if any(len(function.signatures) > 1 for function in (gradient_step, greedy_actions, dqn_targets_blocked)):
        raise SystemExit(f"{mode}: a kernel compiled again inside the clock (arguments of other types than warm_up's)")
    evaluation = rlfoundry.evaluate(model, ENV_ID, n_episodes=EVALUATION_EPISODES, seed=EVALUATION_SEED)
    return {"library": mode, "seed": seed, "seconds": seconds, "cpu_seconds": cpu_seconds,
            "compile_seconds": compile_seconds, "return": evaluation.mean}


def cached_kernels() -> list[Path]:
    return sorted((Path(__file__).parent / "__pycache__").glob(f"{Path(__file__).stem}.*.nb[ic]"))


def compare(modes: list[str], seeds: list[int], steps: int) -> None:
    """The modes alternating per seed, each run in a fresh process; a table of medians and ratios to sb3."""
    cold = not cached_kernels()
    warm = run_worker(__file__, ["run", "--worker", "compiled+acting+target", "--seeds", "0", "--steps", "2000"])
    print(f"warm-up run ({'cold' if cold else 'warm'} kernel cache): kernels compiled or loaded in "
          f"{warm['compile_seconds']:.2f} s", flush=True)
    results = []
    for seed in seeds:
        for mode in modes:
            if mode == "sb3":
                result = in_fresh_process("sb3", seed, steps, 1, None)
            else:
                result = run_worker(__file__, ["run", "--worker", mode, "--seeds", str(seed), "--steps", str(steps)])
            print(f"{mode:24s} seed {seed}: {result['seconds']:6.1f} s ({result['cpu_seconds']:6.1f} s CPU; kernels "
                  f"{result.get('compile_seconds', 0):.2f} s before the clock), evaluation return {result['return']:.1f}",
                  flush=True)
            results.append({**result, "library": mode})
    medians = {mode: statistics.median(r["seconds"] for r in results if r["library"] == mode) for mode in modes}
    print("\n| mode | median s | median CPU s | s per seed | evaluation returns | sb3 / mode | eager / mode |"
          "\n|---|---|---|---|---|---|---|")
    for mode in modes:
        runs = [result for result in results if result["library"] == mode]
        ratios = [f"{medians[base] / medians[mode]:.2f}x" if base in medians else "-" for base in ("sb3", "eager")]
        print(f"| {mode} | {medians[mode]:.1f} | {statistics.median(r['cpu_seconds'] for r in runs):.1f} | "
              f"{', '.join(format(r['seconds'], '.1f') for r in runs)} | "
              f"{', '.join(format(r['return'], '.0f') for r in runs)} | {' | '.join(ratios)} |")


# -- the gradient check, the step timing, the instrumented run ----------------------------------


def trained_burst(seed: int, steps: int) -> tuple[Any, Any, np.ndarray]:
    """An eager model after `steps` env steps, a burst sampled from its buffer and rlfoundry's targets."""
    model = rlfoundry_model(seed)
    model.learn(steps)
    batch = model.replay.sample(model.config.batch_size * model.config.gradient_steps, model.rng)
    return model, batch, torch_targets(model, batch)


def eager_minibatches(model: Any, batch: Any, targets: np.ndarray) -> list[tuple[torch.Tensor, ...]]:
    """The burst's minibatches as rlfoundry's _train hands them to _gradient_step."""
    from rlfoundry.losses.dqn import chosen_action_weights

    size = model.config.batch_size
    action_index = torch.from_numpy(batch.actions).unsqueeze(-1)
    weights = chosen_action_weights(action_index, model.n_actions, size)
    columns = (torch.from_numpy(batch.observations), action_index, weights, torch.from_numpy(targets).unsqueeze(-1))
    return list(zip(*(column.split(size) for column in columns)))


def differences(name: str, compiled: np.ndarray, reference: np.ndarray) -> float:
    """Print and return the largest difference relative to the reference's largest magnitude."""
    absolute = float(np.max(np.abs(compiled - reference)))
    relative = absolute / float(np.max(np.abs(reference)))
    print(f"{name:58s} max |difference| {absolute:.3e}, relative to max |reference| {relative:.3e}")
    return relative


def float64_adam(parameters: np.ndarray, gradient: np.ndarray, first_moment: np.ndarray, second_moment: np.ndarray,
                 adam_steps: int, steps: CompiledSteps) -> np.ndarray:
    """Torch's Adam step in float64 from float32 state: the reference both float32 steps round from."""
    beta_1, beta_2 = steps.betas
    gradient = gradient.astype(np.float64)
    first = beta_1 * first_moment + (1 - beta_1) * gradient
    second = beta_2 * second_moment + (1 - beta_2) * gradient**2
    step_size = steps.learning_rate / (1 - beta_1**adam_steps)
    return parameters - step_size * first / (np.sqrt(second) / math.sqrt(1 - beta_2**adam_steps) + steps.epsilon)


def compare_step(model: Any, batch: Any, targets: np.ndarray, minibatch: tuple[torch.Tensor, ...],
                 max_norm: float) -> float:
    """One whole step each (clipping at max_norm, Adam) from the same weights and Adam state, the
    compiled one on copies; both also against the same Adam step in float64 from rlfoundry's clipped
    gradient. Leaves the model one eager step further."""
    size = model.config.batch_size
    model.config = dataclasses.replace(model.config, max_grad_norm=max_norm)
    before = np.concatenate([as_numpy(p).reshape(-1) for p in model.online_parameters])
    compiled = copied_parameters(CompiledSteps(model, size))
    first_moment, second_moment = compiled.first_moment.copy(), compiled.second_moment.copy()
    compiled.gradient(batch.observations[:size], batch.actions[:size], targets[:size], np.empty(size, F32))
    gradient_norm = float(np.linalg.norm(compiled.flat_gradient))
    compiled.step(batch.observations[:size], batch.actions[:size], targets[:size], np.empty(size, F32))
    model._gradient_step(*minibatch)
    after = np.concatenate([as_numpy(p).reshape(-1) for p in model.online_parameters])
    compiled_after = np.concatenate(compiled.flat_parameters)
    clipping = f"gradient norm {gradient_norm:.2f}: clipping {'inactive' if max_norm >= gradient_norm else 'active'}"
    relative = differences(f"parameters after a step, max_grad_norm {max_norm:.2f} ({clipping})", compiled_after, after)
    exact = float64_adam(before, as_numpy(model.flat_gradient), first_moment, second_moment, compiled.adam_steps, compiled)
    print(f"  the step moved them by up to {np.max(np.abs(after - before)):.3e}; largest distance to the same "
          f"Adam step in float64: rlfoundry {np.max(np.abs(after - exact)):.3e}, compiled "
          f"{np.max(np.abs(compiled_after - exact)):.3e}")
    return relative


def check(seed: int, steps: int, tolerance: float) -> None:
    """The compiled gradient, TD errors, step and target pass against rlfoundry's on a trained model."""
    from rlfoundry.losses.dqn import q_value_loss_gradient, td_errors
    from rlfoundry.run.device import denormals_flushed

    model, batch, targets = trained_burst(seed, steps)
    size = model.config.batch_size
    minibatch = eager_minibatches(model, batch, targets)[0]
    observations, action_index, weights, target_column = minibatch
    worst = []
    with denormals_flushed(), torch.no_grad():
        outputs = model.manual_mlp.forward(observations)
        reference_errors = td_errors(outputs[-1], action_index, target_column)
        model.manual_mlp.backward(outputs, q_value_loss_gradient(reference_errors, weights, model.config.loss))
        reference = as_numpy(model.flat_gradient).copy()
        steps_ = CompiledSteps(model, size)
        errors = np.empty(size, F32)
        steps_.gradient(batch.observations[:size], batch.actions[:size], targets[:size], errors)
        worst.append(differences("gradient (before clipping and Adam)", steps_.flat_gradient, reference))
        offsets = np.cumsum([0] + [array.size for array in steps_.gradients])
        for name, low, high in zip(("W1", "b1", "W2", "b2", "W3", "b3"), offsets, offsets[1:]):
            differences(f"  {name}", steps_.flat_gradient[low:high], reference[low:high])
        worst.append(differences("TD errors", errors, reference_errors.numpy().reshape(-1)))
        for max_norm in (model.config.max_grad_norm, float(np.linalg.norm(reference)) / 2):
            worst.append(compare_step(model, batch, targets, minibatch, max_norm))
        worst.append(differences("burst targets (compiled target pass)",
                                 CompiledTargets(model)(batch.next_observations, batch.rewards, batch.discounts,
                                                        batch.terminated), torch_targets(model, batch)))
        greedy = CompiledGreedy(model)(batch.observations)
        print(f"greedy actions on the burst's {len(greedy)} observations: {int(np.sum(greedy != model._greedy(batch.observations)))} differ")
    verdict = "within" if max(worst) <= tolerance else "NOT within"
    print(f"largest relative difference {max(worst):.3e}: {verdict} the tolerance {tolerance:.0e}")


def time_step(seed: int, steps: int, rounds: int) -> None:
    """Alternating blocks, in place on a trained model: rlfoundry's written-out gradient step against
    the compiled one (128 steps, one burst's minibatches, a block), the burst's target pass both ways
    and the greedy pass for one observation both ways."""
    from rlfoundry.run.device import denormals_flushed

    model, batch, targets = trained_burst(seed, steps)
    minibatches = eager_minibatches(model, batch, targets)
    size = model.config.batch_size
    compiled = CompiledSteps(model, size)
    targets_of = CompiledTargets(model)
    greedy = CompiledGreedy(model)
    errors = np.empty(len(targets), F32)
    single = np.ascontiguousarray(batch.observations[:1])
    warm_up(model)

    def eager_steps() -> None:
        for minibatch in minibatches:
            model._gradient_step(*minibatch)

    def compiled_steps() -> None:
        for start in range(0, len(targets), size):
            rows = slice(start, start + size)
            compiled.step(batch.observations[rows], batch.actions[rows], targets[rows], errors[rows])

    work: dict[str, tuple[Callable[[], Any], int]] = {
        "gradient step, eager (written out)": (eager_steps, len(minibatches)),
        "gradient step, compiled": (compiled_steps, len(minibatches)),
        "burst target pass, eager": (lambda: torch_targets(model, batch), 1),
        "burst target pass, compiled": (lambda: targets_of(batch.next_observations, batch.rewards, batch.discounts,
                                                           batch.terminated), 1),
        "greedy action (1 row), eager": (lambda: [model._greedy(single) for _ in range(200)], 200),
        "greedy action (1 row), compiled": (lambda: [greedy(single) for _ in range(200)], 200),
    }
    blocks: dict[str, list[float]] = defaultdict(list)
    with denormals_flushed():
        for _ in range(rounds):
            for name, (function, _calls) in work.items():
                start = time.perf_counter()
                function()
                blocks[name].append(time.perf_counter() - start)
    print(f"medians of {rounds} alternating blocks, after {steps} env steps of training (seed {seed}):")
    for name, (_function, calls) in work.items():
        times = [value / calls * 1e6 for value in blocks[name]]
        print(f"  {name:36s} {statistics.median(times):9.1f} us per call "
              f"(quartiles {np.percentile(times, 25):.1f} to {np.percentile(times, 75):.1f})")


class Stopwatch:
    """Seconds spent in wrapped callables, by name (the wrappers cost about a microsecond a call)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.calls: dict[str, int] = defaultdict(int)

    def wrap(self, name: str, function: Callable) -> Callable:
        def timed(*arguments: Any, **keywords: Any) -> Any:
            start = time.perf_counter()
            try:
                return function(*arguments, **keywords)
            finally:
                self.seconds[name] += time.perf_counter() - start
                self.calls[name] += 1
        return timed


def instrument(mode: str, seed: int, steps: int) -> None:
    """One run of `mode` with its parts timed: the env, storing, acting, the burst's sampling and
    target pass, the gradient steps, the rest of the burst and of the loop."""
    model = patched_model(mode, seed)
    if mode != "eager":
        print(f"kernels compiled or loaded in {warm_up(model):.2f} s")
    watch = Stopwatch()
    model.training_env.step = watch.wrap("env step", model.training_env.step)
    model.replay.add = watch.wrap("storing transitions", model.replay.add)
    model.replay.sample = watch.wrap("burst: sampling", model.replay.sample)
    if mode == "eager":
        model._target_q_values = watch.wrap("burst: target pass", model._target_q_values)
        model._gradient_step = watch.wrap("burst: gradient steps", model._gradient_step)
    else:
        globals()["torch_targets"] = watch.wrap("burst: target pass", torch_targets)
        CompiledTargets.__call__ = watch.wrap("burst: target pass", CompiledTargets.__call__)
        CompiledSteps.step = watch.wrap("burst: gradient steps", CompiledSteps.step)
    model._train = watch.wrap("burst (whole)", model._train)
    model._behaviour = watch.wrap("acting (epsilon-greedy)", model._behaviour)
    start = time.perf_counter()
    train(model, mode, steps)
    total = time.perf_counter() - start
    seconds = dict(watch.seconds)
    seconds["burst: the rest"] = seconds.pop("burst (whole)") - sum(v for k, v in seconds.items() if k.startswith("burst: "))
    print(f"{mode}, seed {seed}, {steps} steps: learn() {total:.2f} s")
    for name in sorted(seconds, key=seconds.get, reverse=True):
        calls = watch.calls.get(name)
        each = f" ({calls} calls, {seconds[name] / calls * 1e6:.1f} us each)" if calls else ""
        print(f"  {name:28s} {seconds[name]:6.2f} s{each}")
    print(f"  {'the loop and the rest':28s} {total - sum(seconds.values()):6.2f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command")
    run = commands.add_parser("run", help="the side-by-side comparison (the default)")
    run.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    run.add_argument("--worker", choices=MODES[:-1], help=argparse.SUPPRESS)
    checking = commands.add_parser("check", help="the compiled gradient against rlfoundry's")
    checking.add_argument("--tolerance", type=float, default=1e-5, help="largest relative difference allowed")
    timing = commands.add_parser("time-step", help="one gradient step, target pass and greedy pass timed alone")
    timing.add_argument("--rounds", type=int, default=15)
    instrumenting = commands.add_parser("instrument", help="where one run's time goes")
    instrumenting.add_argument("--mode", default="compiled+acting", choices=MODES[:-1])
    for command, steps in ((run, STEPS), (checking, 3000), (timing, 3000), (instrumenting, STEPS)):
        command.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
        command.add_argument("--steps", type=int, default=steps)
    arguments = parser.parse_args()
    if arguments.command is None:
        arguments = parser.parse_args(["run"])
    torch.set_num_threads(1)
    seed = arguments.seeds[0]
    if arguments.command == "check":
        check(seed, arguments.steps, arguments.tolerance)
    elif arguments.command == "time-step":
        time_step(seed, arguments.steps, arguments.rounds)
    elif arguments.command == "instrument":
        instrument(arguments.mode, seed, arguments.steps)
    elif arguments.worker:
        print(json.dumps(train_and_evaluate(arguments.worker, seed, arguments.steps)))
    else:
        compare(arguments.modes, arguments.seeds, arguments.steps)


if __name__ == "__main__":
    main()
