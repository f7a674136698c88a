"""bfloat16 products (networks/bfloat16.py, compiled_mlp.product) and matmul_precision="bfloat16" in
SAC, TD3 and DDPG: the rounding bit for bit against torch's, each product against float64 sums of the
rounded operands in every operand layout, the float32 cases bitwise BLAS's, an update's gradients
within bfloat16 rounding of float32's, exact resume, and the errors that refuse the setting."""

from __future__ import annotations

import numba
import numpy as np
import pytest
import torch

import rlfoundry
from learning_checks import preset_returns
from rlfoundry import DDPG, SAC, TD3
from rlfoundry.data.replay import ReplayBatch
from rlfoundry.networks import bfloat16
from rlfoundry.networks.compiled_mlp import BFLOAT16_MIN_SIZE, bfloat16_copy, product
from rlfoundry.run.config import ConfigError

UNAVAILABLE = bfloat16.enable()
needs_bfloat16 = pytest.mark.skipif(UNAVAILABLE is not None, reason=f"no bfloat16 products here: {UNAVAILABLE}")
# Every size at least BFLOAT16_MIN_SIZE, so that the update's hidden-layer products take bfloat16.
SIZES = dict(actor_hidden_sizes=(64, 64), critic_hidden_sizes=(64, 64), batch_size=64, learning_starts=64,
             buffer_size=2000)


@numba.njit
def blas_product(a, b, out):
    np.dot(a, b, out)


def rounded(array: np.ndarray) -> np.ndarray:
    """round_bf16 by torch, in float64."""
    return torch.from_numpy(np.ascontiguousarray(array)).bfloat16().double().numpy()


def test_rounding_is_torchs_bit_for_bit():
    generator = np.random.default_rng(0)
    with np.errstate(over="ignore"):
        spread = (generator.standard_normal(20_000) * 10.0 ** generator.integers(-45, 39, 20_000)).astype(np.float32)
    upper = generator.integers(0, 1 << 16, 4_000, dtype=np.uint32) << np.uint32(16)
    # Exact ties (a 1 then zeros past the 16th bit), and one unit either side of them.
    ties = np.concatenate([upper | 0x8000, upper | 0x7FFF, upper | 0x8001]).view(np.float32)
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 3.4028235e38, -3.4028235e38, 1.1754944e-38, 1e-45, -3e-40],
                       np.float32)
    values = np.concatenate([spread, ties, special])
    out = np.empty(len(values), np.uint16)
    bfloat16_copy(values.reshape(1, -1), out)
    expected = torch.from_numpy(values).bfloat16().view(torch.int16).numpy().view(np.uint16)
    nan = np.isnan(values)
    assert np.array_equal(out[~nan], expected[~nan])
    assert np.all((out[nan] & 0x7F80 == 0x7F80) & (out[nan] & 0x7F != 0))  # a NaN stays a NaN


def operand(generator: np.random.Generator, rows: int, columns: int, transposed: bool) -> np.ndarray:
    """A float32 [rows, columns] matrix stored by rows, or as the .T view of its stored transpose."""
    matrix = generator.standard_normal((rows, columns)).astype(np.float32)
    return np.ascontiguousarray(matrix.T).T if transposed else matrix


@needs_bfloat16
@pytest.mark.parametrize("left_transposed", [False, True])
@pytest.mark.parametrize("right_transposed", [False, True])
def test_a_product_sums_the_rounded_operands_in_float32(left_transposed, right_transposed):
    generator = np.random.default_rng(1)
    a, b = operand(generator, 64, 96, left_transposed), operand(generator, 96, 48, right_transposed)
    buffer = np.full((80, 48), np.nan, np.float32)  # out: rows of a taller matrix, as the kernels' buffers
    out = buffer[8:72]
    product(a, b, out, True)
    exact = rounded(a) @ rounded(b)
    # Each product of two bfloat16 numbers is exact in float32; only the 96 terms' sums round.
    assert np.all(np.abs(out - exact) <= 96 * 2.0**-24 * (np.abs(rounded(a)) @ np.abs(rounded(b))))
    assert not np.allclose(out, a.astype(np.float64) @ b, rtol=1e-4, atol=0)  # the operands were rounded
    assert np.isnan(buffer[:8]).all() and np.isnan(buffer[72:]).all()


def test_small_and_float32_products_are_blas_bitwise():
    generator = np.random.default_rng(2)
    small = BFLOAT16_MIN_SIZE - 1
    for rows, inner, columns, bfloat16_products in [(64, 64, 64, False), (small, 64, 64, True), (64, 3, 64, True),
                                                     (64, 64, 1, True)]:
        a, b = operand(generator, rows, inner, False), operand(generator, inner, columns, True)
        out, expected = np.empty((rows, columns), np.float32), np.empty((rows, columns), np.float32)
        if bfloat16_products and UNAVAILABLE is not None:
            continue
        product(a, b, out, bfloat16_products)
        blas_product(a, b, expected)
        assert np.array_equal(out, expected), (rows, inner, columns)


def test_a_bfloat16_product_before_enable_raises(monkeypatch):
    monkeypatch.setattr(bfloat16._gemm_address, "value", 0)
    a = np.ones((32, 32), np.float32)
    with pytest.raises(RuntimeError, match="enable"):
        product(a, a, np.empty((32, 32), np.float32), True)


def test_symbol_values_of_a_file_that_is_not_elf_is_empty(tmp_path):
    path = tmp_path / "library.so"
    path.write_bytes(b"not an ELF file" * 8)
    assert bfloat16.symbol_values(path, ("dnnl_gemm_bf16bf16f32",)) == {}


def random_batch(rows: int, observation_size: int, action_size: int, seed: int) -> ReplayBatch:
    generator = torch.Generator().manual_seed(seed)
    return ReplayBatch(
        observations=torch.randn(rows, observation_size, generator=generator),
        actions=torch.rand(rows, action_size, generator=generator) * 2 - 1,
        rewards=torch.randn(rows, generator=generator),
        next_observations=torch.randn(rows, observation_size, generator=generator),
        terminated=torch.rand(rows, generator=generator) < 0.1,
        truncated=torch.zeros(rows, dtype=torch.bool),
        discounts=torch.full((rows,), 0.99),
    )


class Metrics:
    def __init__(self) -> None:
        self.values: dict[str, float] = {}

    def record(self, name: str, value: float) -> None:
        self.values[name] = value


def one_update(algorithm, precision: str, threads: int) -> tuple[torch.Tensor, dict[str, float]]:
    """The flat gradient of every parameter after one update at learning rate 0 (update 0: TD3's and
    DDPG's actor step is due), and the reported losses."""
    model = algorithm("Pendulum-v1", backend="compiled", torch_threads=threads, seed=5, quiet=True,
                      matmul_precision=precision, **SIZES)
    assert model.compiled.bfloat16 == (precision == "bfloat16")
    for group in model.optimizer.param_groups:
        group["lr"] = 0.0
    model.collector.torch_rng.manual_seed(9)
    metrics = Metrics()
    model.update(random_batch(64, 3, 1, seed=6), metrics)
    parameters = [*model.actor.parameters(), *model.critics.parameters()]
    return torch.cat([parameter.grad.reshape(-1) for parameter in parameters]), metrics.values


@needs_bfloat16
@pytest.mark.parametrize("algorithm", [SAC, TD3, DDPG])
@pytest.mark.parametrize("threads", [1, 2])
def test_an_update_takes_float32s_gradient_to_bfloat16_rounding(algorithm, threads):
    """Operands rounded to 8 significant bits (relative error up to 2^-9 each) move an update's
    gradient by 0.9 to 2.2% of its norm here, not more; and they do move it (bfloat16 was used)."""
    gradient, losses = one_update(algorithm, "float32", threads)
    bfloat16_gradient, bfloat16_losses = one_update(algorithm, "bfloat16", threads)
    difference = float((bfloat16_gradient - gradient).norm() / gradient.norm())
    assert 1e-5 < difference < 0.05, difference
    for name, value in losses.items():
        assert bfloat16_losses[name] == pytest.approx(value, rel=0.01, abs=1e-3), name


@needs_bfloat16
def test_two_threads_compute_what_one_does_bitwise_in_sac_with_bfloat16():
    one, two = (one_update(SAC, "bfloat16", threads)[0] for threads in (1, 2))
    assert torch.equal(one, two)


@needs_bfloat16
@pytest.mark.parametrize("algorithm", [SAC, TD3])
def test_bfloat16_training_resumes_exactly_and_the_setting_can_change_on_load(algorithm, tmp_path):
    settings = dict(seed=4, matmul_precision="bfloat16", torch_threads=2, quiet=True, **SIZES)
    straight = algorithm("Pendulum-v1", **settings).learn(160)
    algorithm("Pendulum-v1", **settings).learn(100).save(tmp_path / "half")
    resumed = rlfoundry.load(tmp_path / "half")
    assert resumed.config.matmul_precision == "bfloat16" and resumed.compiled.bfloat16
    resumed.learn(60)
    for first, second in zip(straight.actor.parameters(), resumed.actor.parameters(), strict=True):
        assert torch.equal(first, second)
    assert not rlfoundry.load(tmp_path / "half", matmul_precision="float32").compiled.bfloat16


@needs_bfloat16
@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["sac", "td3"])
def test_bfloat16_training_learns_pendulum_within_15k_steps_on_two_of_three_seeds(algorithm):
    returns = preset_returns(algorithm, "Pendulum-v1", steps=15_000, matmul_precision="bfloat16", torch_threads=2)
    assert sum(value >= -250 for value in returns) >= 2, returns


def test_an_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="matmul_precision"):
        SAC("Pendulum-v1", matmul_precision="float16", **SIZES)


@pytest.mark.parametrize("options, named", [
    (dict(backend="torch"), "backend='torch'"),
    (dict(activation="elu"), "activation='elu'"),
])
def test_bfloat16_without_the_compiled_update_is_refused(options, named):
    with pytest.raises(ConfigError, match="matmul_precision='float32'") as error:
        TD3("Pendulum-v1", matmul_precision="bfloat16", **options, **SIZES)
    assert named in str(error.value)


def test_bfloat16_where_the_cpu_or_torch_cannot_is_refused_with_the_reason(monkeypatch):
    reason = "this CPU has no AVX-512 BF16 instructions (/proc/cpuinfo lists no avx512_bf16)"
    monkeypatch.setattr(bfloat16, "enable", lambda: reason)
    with pytest.raises(ConfigError, match="matmul_precision='float32'") as error:
        SAC("Pendulum-v1", matmul_precision="bfloat16", **SIZES)
    assert reason in str(error.value)
