"""networks.activations: numpy's tanh in the networks, checked against float64, torch's derivative
and autograd's double backward."""

import numpy as np
import pytest
import torch

from rlfoundry.networks.activations import Tanh, tanh, tanh_


def float32_grid() -> torch.Tensor:
    """Every order of magnitude float32 has, both signs, the edges (0, subnormals, overflow of exp)."""
    magnitudes = np.logspace(-45, 2, 200_000).astype(np.float32)
    specials = np.array([0.0, 1e-45, 1e-38, 8.0, 9.0, 9.01, 10.0, 20.0, 44.0, 88.0, 89.0, 3e38], np.float32)
    values = np.concatenate([magnitudes, specials])
    return torch.from_numpy(np.concatenate([values, -values]))


def ulp_distance(values: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """|values - exact| in units of float32's spacing at exact."""
    spacing = np.spacing(np.abs(exact.to(torch.float32).numpy()))
    return (values.double() - exact).abs() / torch.from_numpy(spacing).double()


def test_tanh_is_within_one_and_a_half_ulp_of_float64_everywhere():
    inputs = float32_grid()
    exact = torch.tanh(inputs.double())
    ours = tanh(inputs)
    assert ours.dtype == torch.float32
    assert ulp_distance(ours, exact).max() <= 1.5
    assert ulp_distance(torch.tanh(inputs), exact).max() <= 0.6  # torch's own, for comparison
    assert torch.all(ours.abs() <= 1.0)
    assert torch.equal(tanh(torch.tensor([0.0, -0.0])).sign(), torch.tensor([0.0, 0.0]))


def test_tanh_of_infinities_and_nan():
    result = tanh(torch.tensor([float("inf"), float("-inf"), float("nan")]))
    assert result[0] == 1.0 and result[1] == -1.0 and torch.isnan(result[2])


def test_float64_tanh_matches_torch_to_rounding():
    inputs = torch.linspace(-20, 20, 100_001, dtype=torch.float64)
    torch.testing.assert_close(tanh(inputs), torch.tanh(inputs), rtol=4e-16, atol=1e-300)


def test_in_place_out_of_place_module_and_batch_size_agree_bitwise():
    generator = torch.Generator().manual_seed(0)
    batch = torch.randn(256, 64, generator=generator) * 3
    expected = tanh(batch)
    assert torch.equal(tanh_(batch.clone()), expected)
    assert torch.equal(Tanh()(batch), expected)
    for row in (0, 17, 255):  # a row alone gives the same floats as inside the batch
        assert torch.equal(tanh(batch[row : row + 1]), expected[row : row + 1])
    transposed = batch.t().clone().t()  # a non-contiguous layout, changed in place
    assert torch.equal(tanh_(transposed), expected)
    with torch.inference_mode():
        assert torch.equal(tanh(batch), expected)


def test_tensors_numpy_cannot_read_take_torch_tanh():
    inputs = torch.linspace(-3, 3, 101, dtype=torch.bfloat16)
    assert torch.equal(tanh(inputs), torch.tanh(inputs))
    assert torch.equal(tanh_(inputs.clone()), torch.tanh(inputs))


def test_gradient_is_torchs_derivative_bitwise():
    inputs = (torch.randn(64, 32, generator=torch.Generator().manual_seed(1)) * 2).requires_grad_()
    weights = torch.randn(64, 32, generator=torch.Generator().manual_seed(2))
    outputs = tanh(inputs)
    assert outputs.requires_grad
    (gradient,) = torch.autograd.grad((outputs * weights).sum(), inputs)
    assert torch.equal(gradient, torch.ops.aten.tanh_backward(weights, outputs.detach()))
    with torch.no_grad():  # a tensor that requires grad, with autograd off
        assert not tanh(inputs).requires_grad


def test_first_and_second_derivatives_pass_gradcheck():
    inputs = torch.linspace(-3, 3, 13, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(tanh, (inputs,))
    assert torch.autograd.gradgradcheck(tanh, (inputs,))


def test_second_derivative_equals_torch_tanhs():
    """What TRPO's Fisher-vector product differentiates: the gradient of a gradient."""
    inputs = torch.linspace(-3, 3, 25).requires_grad_()

    def second(function):
        (first,) = torch.autograd.grad(function(inputs).pow(2).sum(), inputs, create_graph=True)
        return torch.autograd.grad(first.sum(), inputs)[0]

    torch.testing.assert_close(second(tanh), second(torch.tanh), rtol=1e-6, atol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.trace is deprecated, not gone
def test_a_traced_network_computes_tanh_of_its_input():
    """torch.jit.trace cannot see numpy's work: tracing takes torch's tanh, not a recorded constant."""
    network = torch.nn.Sequential(torch.nn.Linear(3, 5), Tanh())
    traced = torch.jit.trace(network, torch.zeros(2, 3))
    inputs = torch.randn(4, 3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(traced(inputs), network(inputs), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("strict", [False, True])
def test_an_exported_network_computes_tanh_of_its_input(strict):
    network = torch.nn.Sequential(torch.nn.Linear(3, 5), Tanh())
    exported = torch.export.export(network, (torch.zeros(2, 3),), strict=strict).module()
    inputs = torch.randn(2, 3, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(exported(inputs), network(inputs), rtol=1e-6, atol=1e-7)


def test_a_compiled_function_computes_tanh_of_its_input():
    compiled = torch.compile(tanh, backend="eager", fullgraph=True)
    inputs = torch.linspace(-3, 3, 7)
    torch.testing.assert_close(compiled(inputs), torch.tanh(inputs))
