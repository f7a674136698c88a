"""The written-out MLP passes of networks/manual_mlp.py and Adam with norm clipping, compiled by numba.

    forward:   h_0 = x,   h_l = f(h_{l-1} W_l^T + b_l)   (l < L),   h_L = h_{L-1} W_L^T + b_L
    backward:  dL/dW_l = g_l^T h_{l-1},   dL/db_l = sum_rows g_l,   g_{l-1} = (g_l W_l) * f'(h_{l-1})
    Adam:      g <- g min(1, c / (||g|| + 1e-6)),   m <- b1 m + (1 - b1) g,   v <- b2 v + (1 - b2) g^2,
               p <- p - lr / (1 - b1^t) m / (sqrt(v) / sqrt(1 - b2^t) + eps)

Why: on the small networks of CartPole-sized tasks an eager PyTorch gradient step is some forty
tensor operations of a few microseconds each, and that per-operation cost, not the arithmetic,
bounds it. Compiled, a PPO step on the issue's setting takes 384 us instead of 779 us and a DQN
step 350 us instead of 510 us (benchmarks/RESULTS.md, "Compiled backend"). The kernels work on
numpy views of the torch parameters, gradients and Adam state, so the torch modules, the
optimiser's state_dict and the checkpoints are the same whichever backend trains.

Numerics: the products are float32 through scipy's BLAS (numba's np.dot) and the sums may be
reassociated, so results agree with torch's to rounding (tests/test_compiled.py holds gradients to
1e-4 relative), not bitwise. SAC's, TD3's and DDPG's updates can instead take their large products
in bfloat16 (`product`, networks/bfloat16.py: matmul_precision="bfloat16"). tanh is `tanh32`, a rational approximation that vectorises
(numba's libm tanhf takes 11 ns a float against 0.3 ns), within 4.4 ulp of the exact float64 value.
The fastmath flags leave out "nnan" and "ninf": the compiler may not assume finite values, so a NaN
still reaches the algorithms' checks. Compiled code is cached beside this file (numba's cache=True;
in the user's cache directory where this one is read-only), so only the first run on a machine
compiles (5 to 10 s); with no writable cache directory every process compiles (`compiler`). The
cache is stamped with every file the kernels compile code from (`KERNEL_SOURCES`), not only the
kernel's own file as numba does: an edit to a loss's row function then recompiles the kernels that
inline it instead of leaving their stale code in use.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import math
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numba
import numpy as np
import torch
from numba.core import caching

from rlfoundry.networks.bfloat16 import ROW_MAJOR, TRANSPOSED, float_bits, gemm, gemm_address
from rlfoundry.networks.manual_mlp import ManualMLP
from rlfoundry.run.optimizer_step import _step_counters

FLOAT = np.float32
FAST_MATH = {"reassoc", "contract", "arcp", "nsz", "afn"}


PACKAGE = Path(__file__).resolve().parent.parent
KERNEL_SOURCES = tuple(
    PACKAGE / name
    for name in (
        "networks/compiled_mlp.py", "networks/bfloat16.py", "networks/compiled_actor_critic.py", "networks/compiled_q_network.py",
        "networks/compiled_continuous.py", "networks/kernel_threads.py", "networks/policies.py", "networks/continuous.py",
        "losses/policy_gradient.py", "losses/dqn.py", "losses/continuous.py",
    )
)
"""Every file whose functions or constants the kernels compile in."""


@functools.cache
def kernel_sources_stamp() -> str:
    """A hash of KERNEL_SOURCES' contents: the cached kernels' stamp."""
    digest = hashlib.sha256()
    for path in KERNEL_SOURCES:
        digest.update(path.read_bytes())
    return digest.hexdigest()


class _KernelSourcesStamp:
    """A numba cache locator for rlfoundry's kernels that stamps their cache with kernel_sources_stamp
    (numba stamps a function's cache with its own file alone); None (the next locator) elsewhere."""

    def get_source_stamp(self) -> str:
        return kernel_sources_stamp()

    @classmethod
    def from_function(cls, py_func: Any, py_file: str) -> Any:
        if Path(py_file).resolve() not in KERNEL_SOURCES:
            return None
        return super().from_function(py_func, py_file)  # type: ignore[misc]


class KernelUserProvidedCacheLocator(_KernelSourcesStamp, caching.UserProvidedCacheLocator):
    """numba's NUMBA_CACHE_DIR cache, stamped with every kernel source."""


class KernelInTreeCacheLocator(_KernelSourcesStamp, caching.InTreeCacheLocator):
    """numba's cache beside the source, stamped with every kernel source."""


class KernelUserWideCacheLocator(_KernelSourcesStamp, caching.UserWideCacheLocator):
    """numba's user-wide cache, stamped with every kernel source."""


# Ahead of numba's own locators, in numba's order.
caching.CacheImpl._locator_classes[:0] = [KernelUserProvidedCacheLocator, KernelInTreeCacheLocator, KernelUserWideCacheLocator]


def compiler(**options: Any) -> Any:
    """numba.njit(**options) with the compiled code cached on disk where numba finds a writable
    directory for it (beside the source, else the user's cache); where it finds none (a read-only
    install and home) numba's cache=True raises at decoration, so the kernels compile in each
    process instead."""

    def decorate(function: Any) -> Any:
        try:
            return numba.njit(cache=True, **options)(function)
        except RuntimeError:  # numba: "cannot cache function ...: no locator available"
            return numba.njit(**options)(function)

    return decorate


# error_model="numpy": a division by zero gives inf or NaN instead of raising, and loops vectorise.
# nogil: two threads can run kernels at once (networks/compiled_continuous.py's twin critics).
kernel = compiler(fastmath=FAST_MATH, error_model="numpy", nogil=True)
inline_kernel = compiler(fastmath=FAST_MATH, error_model="numpy", inline="always", nogil=True)


@inline_kernel
def tanh32(x):
    """tanh(x) ~ x p(x^2) / q(x^2) on [-7.905, 7.905] in float32 (clamped outside, where tanh is 1.0f
    to float32 precision); within 4.4 ulp of float64's tanh (tests/test_compiled_mlp.py)."""
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


@kernel
def tanh32_array(values, out):
    """out = tanh32(values) elementwise, for 1-D float32 arrays (tests)."""
    for index in range(values.shape[0]):
        out[index] = tanh32(values[index])


BFLOAT16_MIN_SIZE = 32
"""Products with a size below this (an MLP's first layer on a few inputs, a one-unit output) stay float32."""


@inline_kernel
def bfloat16_bits(value):
    """round_bf16(value) (networks/bfloat16.py) as its 16 bits: to nearest, ties to even; a NaN stays
    a NaN (the quiet one), infinities and values past bfloat16's largest become infinities."""
    bits = float_bits(value)
    rounded = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)
    return np.uint16(np.uint32(0x7FC0) if (bits & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000) else rounded)


@kernel
def bfloat16_copy(matrix, out):
    """out [R * C] = round_bf16(matrix [R, C]), row by row (as uint16 bits)."""
    rows, columns = matrix.shape
    for row in range(rows):
        for column in range(columns):
            out[row * columns + column] = bfloat16_bits(matrix[row, column])


@inline_kernel
def bfloat16_operand(matrix):
    """(round_bf16 of the matrix as stored, oneDNN's op, the stored rows' length) for a float32 matrix
    stored by rows or the transpose (a .T view) of one."""
    rows, columns = matrix.shape
    out = np.empty(rows * columns, np.uint16)
    if matrix.strides[1] == matrix.itemsize:
        bfloat16_copy(matrix, out)
        return out, ROW_MAJOR, columns
    bfloat16_copy(matrix.T, out)
    return out, TRANSPOSED, rows


@kernel
def product(a, b, out, bfloat16):
    """out [M, N] (C-contiguous) = a [M, K] b [K, N]: float32 through BLAS (np.dot); with bfloat16 (matmul_precision=
    "bfloat16") and M, N, K >= BFLOAT16_MIN_SIZE, round_bf16(a) round_bf16(b) summed in float32 by
    oneDNN's GEMM (networks/bfloat16.py, where `enable` must have found it)."""
    rows, inner = a.shape
    columns = b.shape[1]
    if not bfloat16 or min(rows, inner, columns) < BFLOAT16_MIN_SIZE:
        np.dot(a, b, out)
        return
    address = gemm_address()
    if address == 0:
        raise RuntimeError("bfloat16 products are not enabled: rlfoundry.networks.bfloat16.enable() first")
    left, left_op, left_stride = bfloat16_operand(a)
    right, right_op, right_stride = bfloat16_operand(b)
    status = gemm(address, left_op, right_op, rows, columns, inner, left, left_stride, right, right_stride, out,
                  out.strides[0] // out.itemsize)
    if status != 0:
        raise RuntimeError("oneDNN's bfloat16 GEMM failed")


@kernel
def affine(inputs, weight, bias, out, activation, bfloat16=False):
    """out = f(inputs W^T + b); activation 0: none, 1: tanh, 2: ReLU (a NaN stays NaN, as torch's);
    bfloat16: the product's precision (`product`)."""
    product(inputs, weight.T, out, bfloat16)
    bias_activation(out, bias, activation)


@kernel
def bias_activation(out, bias, activation):
    """out <- f(out + b) in place; activation as affine's."""
    for row in range(out.shape[0]):
        for column in range(out.shape[1]):
            value = out[row, column] + bias[column]
            if activation == 1:
                value = tanh32(value)
            elif activation == 2 and value < FLOAT(0):
                value = FLOAT(0)
            out[row, column] = value


@kernel
def mlp_forward(inputs, weights, biases, hidden, outputs, tanh, bfloat16=False):
    """outputs [B, out] = h_L for inputs [B, in]; hidden layer l's output into hidden[l - 1][:B]."""
    rows = inputs.shape[0]
    last = len(weights) - 1
    below = inputs
    for layer in range(last):
        out = hidden[layer][:rows]
        affine(below, weights[layer], biases[layer], out, 1 if tanh else 2, bfloat16)
        below = out
    affine(below, weights[last], biases[last], outputs, 0, bfloat16)


@kernel
def column_sums(matrix, out):
    out[:] = 0
    for row in range(matrix.shape[0]):
        for column in range(matrix.shape[1]):
            out[column] += matrix[row, column]


@kernel
def activation_backward(gradient, output, tanh):
    """gradient <- gradient * f'(h) read from the layer's output h: 1 - h^2 (tanh), 1[h > 0] (ReLU,
    torch's threshold_backward: 0 where h <= 0)."""
    for row in range(gradient.shape[0]):
        for column in range(gradient.shape[1]):
            value = output[row, column]
            if tanh:
                gradient[row, column] *= FLOAT(1) - value * value
            elif value <= FLOAT(0):
                gradient[row, column] = FLOAT(0)


@kernel
def mlp_backward(inputs, weights, hidden, output_gradient, weight_gradients, bias_gradients, scratch, tanh,
                 bfloat16=False):
    """Write dL/dW_l and dL/db_l into weight_gradients and bias_gradients (overwriting them), given
    mlp_forward's hidden outputs for these inputs and g_L = dL/dh_L [B, out]."""
    gradient = output_gradient
    for layer in range(len(weights) - 1, -1, -1):
        gradient = layer_backward(layer, gradient, inputs, weights, hidden, weight_gradients, bias_gradients, scratch,
                                  tanh, True, bfloat16)


@kernel
def layer_backward(layer, gradient, inputs, weights, hidden, weight_gradients, bias_gradients, scratch, tanh,
                   parameter_gradients, bfloat16=False):
    """One layer of mlp_backward: given g_l = gradient, write dL/dW_l and dL/db_l (when
    parameter_gradients) and return g_{l-1} (in scratch[l - 1]; layer 0: g_0 itself)."""
    rows = inputs.shape[0]
    below = inputs if layer == 0 else hidden[layer - 1][:rows]
    if parameter_gradients:
        product(gradient.T, below, weight_gradients[layer], bfloat16)
        column_sums(gradient, bias_gradients[layer])
    if layer == 0:
        return gradient
    below_gradient = scratch[layer - 1][:rows]
    product(gradient, weights[layer], below_gradient, bfloat16)
    activation_backward(below_gradient, below, tanh)
    return below_gradient


@kernel
def adam_parameter(parameter, gradient, scale, first_moment, second_moment, beta_1, beta_2, step_size, epsilon,
                   bias_correction_2_root):
    """gradient <- scale gradient, then Adam's step on one parameter (flat arrays of one length). A
    kernel of its own: the same loop inlined over offsets into the flat gradient did not vectorise."""
    for index in range(parameter.shape[0]):
        value = gradient[index] * scale
        gradient[index] = value
        first = beta_1 * first_moment[index] + (FLOAT(1) - beta_1) * value
        second = beta_2 * second_moment[index] + (FLOAT(1) - beta_2) * value * value
        first_moment[index] = first
        second_moment[index] = second
        parameter[index] -= step_size * first / (np.sqrt(second) / bias_correction_2_root + epsilon)


@kernel
def clipped_adam(parameters, flat_gradient, first_moments, second_moments, counters, max_norm, learning_rate, beta_1,
                 beta_2, epsilon):
    """Scale the flat gradient to norm <= max_norm (as run.optimizer_step.clip_gradient_norm: a NaN
    norm makes every gradient NaN; max_norm inf: no clipping), advance the step counters t by one,
    then Adam's step on every parameter (the bias corrections in float64 as torch's fused Adam, the
    sweep in float32). parameters, first_moments, second_moments: flat views, in the flat gradient's
    order; beta_1, beta_2 float64."""
    squares = FLOAT(0)
    for index in range(flat_gradient.shape[0]):
        squares += flat_gradient[index] * flat_gradient[index]
    coefficient = (FLOAT(1) / (np.sqrt(squares) + FLOAT(1e-6))) * max_norm
    scale = FLOAT(1) if coefficient >= FLOAT(1) else coefficient
    for index in range(counters.shape[0]):
        counters[index] += 1
    adam_span(parameters, flat_gradient, first_moments, second_moments, scale, float(counters[0]), learning_rate, beta_1,
              beta_2, epsilon, 0, flat_gradient.shape[0])


@inline_kernel
def adam_span(parameters, flat_gradient, first_moments, second_moments, scale, step, learning_rate, beta_1, beta_2,
              epsilon, low, high):
    """Adam's step number `step` (adam_parameter, the gradient scaled by `scale` first) on the span
    [low, high) of the flat gradient, across the parameters it covers (clipped_adam: all of it)."""
    step_size = FLOAT(learning_rate / (1.0 - beta_1**step))
    bias_correction_2_root = FLOAT(np.sqrt(1.0 - beta_2**step))
    start = 0
    for index in range(len(parameters)):
        parameter = parameters[index]
        stop = start + parameter.shape[0]
        first, last = max(start, low), min(stop, high)
        if first < last:
            own = slice(first - start, last - start)
            adam_parameter(parameter[own], flat_gradient[first:last], scale, first_moments[index][own],
                           second_moments[index][own], FLOAT(beta_1), FLOAT(beta_2), step_size, FLOAT(epsilon),
                           bias_correction_2_root)
        start = stop


def rebuilt_on_deepcopy(cls: type) -> type:
    """Class decorator for the compiled objects: copy.deepcopy makes a new one from deep copies of
    the arguments it was built with. A field-by-field copy would give the copy numpy arrays of its
    own where the original's were views of the torch tensors, so training the copied model would
    step memory its networks no longer read (and a worker thread cannot be copied at all). The
    arguments come out of the same memo as the rest of the copied model: its own parameters."""
    build = vars(cls)["__init__"]  # each decorated class defines its own

    @functools.wraps(build)
    def __init__(self: Any, *arguments: Any, **keywords: Any) -> None:
        self.built_from = (arguments, keywords)
        build(self, *arguments, **keywords)

    def __deepcopy__(self: Any, memo: dict) -> Any:
        arguments, keywords = copy.deepcopy(self.built_from, memo)
        return cls(*arguments, **keywords)

    cls.__init__ = __init__  # type: ignore[misc]
    cls.__deepcopy__ = __deepcopy__  # type: ignore[attr-defined]
    return cls


def as_array(tensor: torch.Tensor) -> np.ndarray:
    """The tensor's memory as a numpy array (no copy): the kernels' writes update the tensor."""
    return tensor.detach().numpy()


def buffers(rows: int, *shapes: tuple[int, ...]) -> tuple[np.ndarray, ...]:
    """Zeroed float32 buffers [rows, *shape] ([rows] for an empty shape)."""
    return tuple(np.zeros((rows, *shape), FLOAT) for shape in shapes)


class ActingBuffers:
    """A network's hidden layers and outputs for acting on `rows` observations (an actor's, a
    Q-network's), kept while the number of rows stays the same (an env step acts on n_envs rows
    every time). Each thread keeps its own, apart from the update's buffers too: the kernels
    release the GIL, so predict() on two threads at once, or beside training on another, would
    otherwise write the same memory."""

    def __init__(self, widths: Sequence[int], *output_shapes: tuple[int, ...]):
        self.widths, self.output_shapes = widths, output_shapes
        self.local = threading.local()

    def buffers(self, rows: int) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
        """(hidden, outputs) for `rows` rows, this thread's."""
        kept = getattr(self.local, "kept", None)
        if kept is None or kept[0] != rows:
            kept = rows, buffers(rows, *((width,) for width in self.widths)), buffers(rows, *self.output_shapes)
            self.local.kept = kept
        return kept[1], kept[2]


@rebuilt_on_deepcopy
class CompiledMLP:
    """A ManualMLP's weights and biases and their .grad as numpy views, and the kernels' buffers for
    batches of up to `rows` rows (grown on demand). `inputs` gives the kernels their float32 rows.
    gradients=False: a network that only runs forward (a target network), without .grad."""

    def __init__(self, manual: ManualMLP, rows: int, gradients: bool = True):
        self.encoder = manual.encoder
        self.tanh = manual.activation == "tanh"
        self.weights = tuple(as_array(weight) for weight in manual.weights)
        self.biases = tuple(as_array(bias) for bias in manual.biases)
        self.weight_gradients = tuple(as_array(gradient_of(weight)) for weight in manual.weights) if gradients else ()
        self.bias_gradients = tuple(as_array(gradient_of(bias)) for bias in manual.biases) if gradients else ()
        self.widths = [len(weight) for weight in self.weights[:-1]]
        self.rows = 0
        self.reserve(rows)

    def reserve(self, rows: int) -> None:
        """Buffers for passes of up to `rows` rows."""
        if rows > self.rows:
            self.rows = rows
            self.hidden = tuple(np.zeros((rows, width), FLOAT) for width in self.widths)
            self.scratch = tuple(np.zeros((rows, width), FLOAT) for width in self.widths)

    def inputs(self, observations: Any) -> np.ndarray:
        """h_0 for a batch of observations (tensor or array): the encoder's output (one-hot,
        flatten-and-cast) where the torso has one, as float32 C-contiguous rows."""
        if self.encoder is not None:
            with torch.no_grad():
                observations = self.encoder(torch.as_tensor(observations))
        if isinstance(observations, torch.Tensor):
            observations = observations.numpy()
        return np.ascontiguousarray(observations, dtype=FLOAT)

    def arrays(self) -> tuple:
        """What the kernels take for this network: (weights, biases, weight gradients, bias
        gradients, hidden buffers, backward's buffers)."""
        return (self.weights, self.biases, self.weight_gradients, self.bias_gradients, self.hidden, self.scratch)

    def forward(self, inputs: np.ndarray, outputs: np.ndarray) -> None:
        """outputs [B, out] = the network at inputs [B, in] (from `inputs`)."""
        self.reserve(len(inputs))
        mlp_forward(inputs, self.weights, self.biases, self.hidden, outputs, self.tanh)

    def backward(self, inputs: np.ndarray, output_gradient: np.ndarray) -> None:
        """The parameters' .grad for dL/doutputs [B, out], after forward on the same inputs."""
        mlp_backward(inputs, self.weights, self.hidden, output_gradient, self.weight_gradients, self.bias_gradients,
                     self.scratch, self.tanh)


class KernelMemory:
    """The memory the kernels read and write for some parameters (their data and their .grad views,
    as when the kernels were built), given back to them where user code replaced it: `param.data =
    ...` (torch.nn.utils.vector_to_parameters does it) would leave the kernels training memory the
    network no longer reads, and zero_grad() an optimiser stepping on .grad (RMSprop) without the
    gradient the kernels write. `reattach` costs about 0.4 us a parameter when nothing changed."""

    def __init__(self, parameters: tuple[torch.Tensor, ...]):
        self.storage = tuple((parameter, parameter.data, gradient_of(parameter)) for parameter in parameters)

    def reattach(self) -> None:
        """Give each parameter back its memory, with its current values, and its .grad view."""
        for parameter, data, view in self.storage:
            if parameter.data_ptr() != data.data_ptr():
                data.copy_(parameter.detach())
                parameter.data = data
            if parameter.grad is not view:
                parameter.grad = view


def gradient_of(parameter: torch.Tensor) -> torch.Tensor:
    """The parameter's .grad, which manual_mlp.gradient_views made a view of the flat gradient."""
    if parameter.grad is None:
        raise ValueError("a compiled network needs its parameters' .grad made by manual_mlp.gradient_views first")
    return parameter.grad


@rebuilt_on_deepcopy
class CompiledAdam:
    """torch.optim.Adam's step (with global-norm clipping first) by the clipped_adam kernel, on the
    optimiser's own state: its moments and step counters are read and written in place, so
    state_dict(), checkpoints and a later torch step see what this step did. Covers the parameter
    group `group` (None: the optimiser's only one) of float32 CPU parameters whose .grad are the views of `flat_gradient`, without
    AMSGrad, weight decay or maximize (`obstacle` says what else); the other groups are left alone."""

    def __init__(self, optimizer: torch.optim.Optimizer, flat_gradient: torch.Tensor, group: int | None = None):
        problem = self.obstacle(optimizer, group)
        if problem is not None:
            raise ValueError(f"CompiledAdam does not cover this optimiser: {problem}")
        self.optimizer = optimizer
        self.group = group or 0
        self.parameters = list(optimizer.param_groups[self.group]["params"])
        self.flat_gradient = as_array(flat_gradient)
        self.flat_parameters = tuple(as_array(parameter).reshape(-1) for parameter in self.parameters)
        self.first_moment_tensor: torch.Tensor | None = None
        self.first_moments: tuple[np.ndarray, ...] = ()
        self.second_moments: tuple[np.ndarray, ...] = ()
        self.counters = np.zeros(0, FLOAT)

    @staticmethod
    def obstacle(optimizer: torch.optim.Optimizer, group_index: int | None = None) -> str | None:
        """Why CompiledAdam cannot take the steps of this optimiser's parameter group `group_index`
        (None: of its only group), or None when it can."""
        if type(optimizer) is not torch.optim.Adam:
            return f"it is {type(optimizer).__name__}, not Adam"
        if group_index is None and len(optimizer.param_groups) != 1:
            return "it has more than one parameter group"
        group = optimizer.param_groups[group_index or 0]
        if group["amsgrad"] or group["weight_decay"] or group["maximize"]:
            return "it uses AMSGrad, weight decay or maximize"
        if any(parameter.dtype != torch.float32 or parameter.device.type != "cpu" for parameter in group["params"]):
            return "its parameters are not float32 on the CPU"
        return None

    def _state(self) -> tuple[tuple[np.ndarray, ...], tuple[np.ndarray, ...], np.ndarray]:
        """Views of the optimiser's moments and step counters, made again after a load_state_dict
        replaced them; the state torch would make on a first step where there is none."""
        optimizer = self.optimizer
        first_state = optimizer.state.get(self.parameters[0])
        if first_state and first_state.get("exp_avg") is self.first_moment_tensor:
            return self.first_moments, self.second_moments, self.counters
        for parameter in self.parameters:
            if not optimizer.state.get(parameter):
                optimizer.state[parameter] = {
                    "step": torch.tensor(0.0, dtype=torch.float32),
                    "exp_avg": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                    "exp_avg_sq": torch.zeros_like(parameter, memory_format=torch.preserve_format),
                }
        states = [optimizer.state[parameter] for parameter in self.parameters]
        self.first_moments = tuple(as_array(state["exp_avg"]).reshape(-1) for state in states)
        self.second_moments = tuple(as_array(state["exp_avg_sq"]).reshape(-1) for state in states)
        self.counters = as_array(_step_counters(states))
        self.first_moment_tensor = states[0]["exp_avg"]
        return self.first_moments, self.second_moments, self.counters

    def step(self, max_grad_norm: float | None, learning_rate: float | None = None) -> None:
        """Clip the .grad to max_grad_norm (None: no clipping) and take Adam's step, at
        `learning_rate` when one is given (then also the group's lr, as gradient_step sets it)."""
        clipped_adam(*self.kernel_arguments(max_grad_norm, learning_rate))

    def kernel_arguments(self, max_grad_norm: float | None, learning_rate: float | None = None) -> tuple:
        """clipped_adam's arguments (the optimiser's state and hyperparameters): for kernels that take
        gradient steps and these Adam steps in one call. `learning_rate` also becomes the group's lr."""
        group = self.optimizer.param_groups[self.group]
        if learning_rate is not None:
            group["lr"] = learning_rate
        first_moments, second_moments, counters = self._state()
        beta_1, beta_2 = group["betas"]
        return (
            self.flat_parameters, self.flat_gradient, first_moments, second_moments, counters,
            FLOAT(math.inf if max_grad_norm is None else max_grad_norm), float(group["lr"]), float(beta_1),
            float(beta_2), float(group["eps"]),
        )
