"""step_optimizer and clip_gradient_norm against torch's own Adam.step and gradient clipping: bitwise
equal (clipping given the norm of the concatenated gradients, which torch's clip_grad_norm_ takes as a
norm of per-tensor norms, equal up to rounding)."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

from rlfoundry.networks.manual_mlp import gradient_views
from rlfoundry.run.optimizer_step import clear_gradients, clip_gradient_norm, step_optimizer


def networks(seed):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 16), nn.Tanh(), nn.Linear(16, 3)), nn.Linear(3, 2)


def clip_with_torch(parameters, max_norm):
    """torch's clipping given the norm of the concatenated gradients (clip_grad_norm_ after its norm)."""
    norm = torch.linalg.vector_norm(torch.cat([parameter.grad.flatten() for parameter in parameters]))
    torch.nn.utils.clip_grads_with_norm_(parameters, max_norm, norm)


def gradients(first, second, step, only_first):
    generator = torch.Generator().manual_seed(100 + step)
    inputs = torch.randn(11, 5, generator=generator)
    for parameter in [*first.parameters(), *second.parameters()]:
        parameter.grad = None
    loss = first(inputs).pow(2).mean() if only_first else second(first(inputs)).square().sum()
    loss.backward()


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_step_optimizer_equals_step_optimizer_bitwise(fused, weight_decay):
    models = [networks(0), networks(0)]
    optimizers = [
        torch.optim.Adam(
            [{"params": first.parameters(), "lr": 1e-2}, {"params": second.parameters(), "lr": 3e-3}],
            fused=fused,
            weight_decay=weight_decay,
            betas=(0.8, 0.95),
        )
        for first, second in models
    ]
    for step in range(6):
        only_first = step in (0, 3)  # the second network's first step comes later and must create its state
        for (first, second), optimizer, take in zip(models, optimizers, [lambda o: o.step(), step_optimizer]):
            gradients(first, second, step, only_first)
            take(optimizer)
    for left, right in zip(
        [*models[0][0].parameters(), *models[0][1].parameters()], [*models[1][0].parameters(), *models[1][1].parameters()]
    ):
        assert torch.equal(left, right)
    for left, right in zip(optimizers[0].state.values(), optimizers[1].state.values()):
        assert all(torch.equal(left[key], right[key]) for key in left)
    assert float(optimizers[1].state[models[1][1].weight]["step"]) == 4


@pytest.mark.parametrize("max_norm", [0.05, 1e3])
def test_clip_gradient_norm_equals_torchs_clipping_bitwise_and_clip_grad_norm_to_rounding(max_norm):
    models = [networks(1), networks(1), networks(1)]
    for first, second in models:
        gradients(first, second, 0, only_first=False)
    parameter_lists = [[*first.parameters(), *second.parameters()] for first, second in models]
    clip_with_torch(parameter_lists[0], max_norm)
    torch.nn.utils.clip_grad_norm_(parameter_lists[1], max_norm)
    clip_gradient_norm(parameter_lists[2], max_norm)
    for exact, torchs, ours in zip(*parameter_lists):
        assert torch.equal(ours.grad, exact.grad)
        torch.testing.assert_close(ours.grad, torchs.grad, rtol=1e-6, atol=0)
    total = torch.linalg.vector_norm(torch.cat([parameter.grad.flatten() for parameter in parameter_lists[2]]))
    assert float(total) == pytest.approx(max_norm, rel=1e-5) if max_norm < 1 else float(total) < max_norm


def test_clip_gradient_norm_scale_factor_is_bitwise_torchs_at_every_ratio_of_norm_to_limit():
    # The scale factor is computed on the host in float32: check it against torch's tensor arithmetic
    # at limits from well below to well above the gradient's norm, where rounding could differ.
    first, second = networks(3)
    gradients(first, second, 0, only_first=False)
    parameters = [*first.parameters(), *second.parameters()]
    original = [parameter.grad.clone() for parameter in parameters]
    norm = float(torch.linalg.vector_norm(torch.cat([gradient.flatten() for gradient in original])))
    limits = [norm * ratio for ratio in np.geomspace(0.2, 5.0, 101)] + [norm, np.nextafter(norm, 0.0)]
    for max_norm in limits:
        for parameter, gradient in zip(parameters, original):
            parameter.grad = gradient.clone()
        clip_with_torch(parameters, max_norm)
        expected = [parameter.grad for parameter in parameters]
        for parameter, gradient in zip(parameters, original):
            parameter.grad = gradient.clone()
        clip_gradient_norm(parameters, max_norm)
        assert all(torch.equal(left, parameter.grad) for left, parameter in zip(expected, parameters)), max_norm


def test_clip_gradient_norm_of_float64_gradients_equals_torchs_clipping_bitwise():
    # The host-side scale factor is float32 arithmetic; float64 gradients must keep their own.
    parameter_lists = [[*first.double().parameters(), *second.double().parameters()] for first, second in [networks(5), networks(5)]]
    for parameters in parameter_lists:
        generator = torch.Generator().manual_seed(7)
        for parameter in parameters:
            parameter.grad = torch.randn(parameter.shape, dtype=torch.float64, generator=generator)
    clip_with_torch(parameter_lists[0], 0.3)
    clip_gradient_norm(parameter_lists[1], 0.3)
    for left, right in zip(*parameter_lists):
        assert right.grad.dtype == torch.float64 and torch.equal(left.grad, right.grad)


def test_gradient_views_lay_out_every_gradient_in_one_zeroed_tensor_in_order():
    first, second = networks(8)
    parameters = [*first.parameters(), *second.parameters()]
    flat = gradient_views(parameters)
    assert flat.shape == (sum(parameter.numel() for parameter in parameters),) and not flat.any()
    flat.copy_(torch.arange(len(flat), dtype=flat.dtype))
    offset = 0
    for parameter in parameters:
        assert parameter.grad.shape == parameter.shape and parameter.grad._base is flat
        assert parameter.grad.flatten()[0] == offset
        offset += parameter.numel()
    with pytest.raises(ValueError, match="one device with one dtype"):
        gradient_views([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2, dtype=torch.float64))])


@pytest.mark.parametrize("max_norm", [0.05, 1e3])
def test_clipping_gradient_views_through_their_flat_tensor_equals_gradients_held_apart_bitwise(max_norm):
    apart, viewed = networks(9), networks(9)
    for first, second in (apart, viewed):
        gradients(first, second, 0, only_first=False)
    parameters = [*viewed[0].parameters(), *viewed[1].parameters()]
    computed = [parameter.grad for parameter in parameters]
    flat = gradient_views(parameters)
    for parameter, gradient in zip(parameters, computed):
        parameter.grad.copy_(gradient)
    clip_gradient_norm([*apart[0].parameters(), *apart[1].parameters()], max_norm)
    clip_gradient_norm(parameters, max_norm, flat)
    for left, right in zip([*apart[0].parameters(), *apart[1].parameters()], parameters):
        assert torch.equal(left.grad, right.grad) and right.grad._base is flat
    if max_norm < 1:  # the scaling went through the flat tensor that the .grad views show
        assert float(torch.linalg.vector_norm(flat)) == pytest.approx(max_norm, rel=1e-5)


def test_clipping_with_a_flat_tensor_whose_views_were_replaced_clips_the_gradients_themselves():
    (first, second), (other_first, other_second) = networks(10), networks(10)
    parameters = [*first.parameters(), *second.parameters()]
    flat = gradient_views(parameters)
    gradients(first, second, 0, only_first=False)  # sets every .grad to None, then autograd makes new ones
    gradients(other_first, other_second, 0, only_first=False)
    expected = [*other_first.parameters(), *other_second.parameters()]
    clip_with_torch(expected, 0.05)
    flat.fill_(1e6)  # stale: neither its norm nor its scaling may be used
    clip_gradient_norm(parameters, 0.05, flat)
    assert all(torch.equal(parameter.grad, other.grad) for parameter, other in zip(parameters, expected))
    assert torch.all(flat == 1e6)


def test_clip_gradient_norm_spreads_a_nan_as_torch_does():
    first, second = networks(4)
    gradients(first, second, 0, only_first=False)
    first[0].weight.grad[0, 0] = float("nan")
    clip_gradient_norm([*first.parameters(), *second.parameters()], 1.0)
    assert all(torch.isnan(parameter.grad).all() for parameter in [*first.parameters(), *second.parameters()])


def test_other_optimizers_step_as_themselves_and_missing_gradients_are_skipped():
    left, right = networks(2), networks(2)
    optimizers = [torch.optim.RMSprop([*model[0].parameters(), *model[1].parameters()], lr=1e-2) for model in (left, right)]
    for step in range(3):
        for (first, second), optimizer, take in zip([left, right], optimizers, [lambda o: o.step(), step_optimizer]):
            gradients(first, second, step, only_first=False)
            take(optimizer)
    for a, b in zip([*left[0].parameters(), *left[1].parameters()], [*right[0].parameters(), *right[1].parameters()]):
        assert torch.equal(a, b)
    right[1].weight.grad = None
    clip_gradient_norm([right[1].weight], 1.0)  # no gradient: nothing to clip, no error
    assert right[1].weight.grad is None


@pytest.mark.parametrize(
    "options",
    [
        {"decoupled_weight_decay": True, "weight_decay": 0.1},
        {"maximize": True},
        {"lr": torch.tensor(1e-2)},
        {"betas": (torch.tensor(0.8), torch.tensor(0.95))},
    ],
    ids=["decoupled-weight-decay", "maximize", "tensor-lr", "tensor-betas"],
)
def test_fused_step_optimizer_equals_step_bitwise_for_every_option(options):
    models = [networks(5), networks(5)]
    optimizers = [
        torch.optim.Adam([*first.parameters(), *second.parameters()], **{"lr": 1e-2, **options}, fused=True)
        for first, second in models
    ]
    for step in range(4):
        for (first, second), optimizer, take in zip(models, optimizers, [lambda o: o.step(), step_optimizer]):
            gradients(first, second, step, only_first=False)
            take(optimizer)
    for left, right in zip([*models[0][0].parameters(), *models[0][1].parameters()], [*models[1][0].parameters(), *models[1][1].parameters()]):
        assert torch.equal(left, right)


def test_fused_step_optimizer_over_two_dtypes_in_one_group_equals_step_bitwise():
    models = [networks(6), networks(6)]
    for first, second in models:
        second.double()
    optimizers = [torch.optim.Adam([*first.parameters(), *second.parameters()], lr=1e-2, fused=True) for first, second in models]
    inputs = torch.randn(7, 5, generator=torch.Generator().manual_seed(3))
    for _ in range(3):
        for (first, second), optimizer, take in zip(models, optimizers, [lambda o: o.step(), step_optimizer]):
            optimizer.zero_grad()
            second(first(inputs).double()).square().sum().backward()
            take(optimizer)
    for left, right in zip([*models[0][0].parameters(), *models[0][1].parameters()], [*models[1][0].parameters(), *models[1][1].parameters()]):
        assert left.dtype == right.dtype and torch.equal(left, right)


def test_clear_gradients_sets_every_gradient_of_every_group_to_none_as_zero_grad_does():
    first, second = nn.Linear(3, 2), nn.Linear(2, 1)
    optimizer = torch.optim.Adam([{"params": first.parameters()}, {"params": second.parameters(), "lr": 0.1}])
    second(first(torch.randn(4, 3))).sum().backward()
    assert all(parameter.grad is not None for parameter in [*first.parameters(), *second.parameters()])
    clear_gradients(optimizer)
    assert all(parameter.grad is None for parameter in [*first.parameters(), *second.parameters()])
    # A step after clearing moves nothing, as after zero_grad(set_to_none=True).
    before = [parameter.detach().clone() for parameter in first.parameters()]
    step_optimizer(optimizer)
    assert all(torch.equal(old, new) for old, new in zip(before, first.parameters()))


def test_fused_steps_keep_adams_counters_in_one_tensor_also_after_a_load():
    models = [networks(11), networks(11)]
    optimizers = [torch.optim.Adam([*first.parameters(), *second.parameters()], lr=1e-2, fused=True) for first, second in models]
    for step in range(3):
        for (first, second), optimizer, take in zip(models, optimizers, [lambda o: o.step(), step_optimizer]):
            gradients(first, second, step, only_first=False)
            take(optimizer)
    counters = [state["step"] for state in optimizers[1].state.values()]
    assert counters[0]._base is not None and all(counter._base is counters[0]._base for counter in counters)
    assert [float(counter) for counter in counters] == [3.0] * len(counters)
    optimizers[1].load_state_dict(copy.deepcopy(optimizers[0].state_dict()))  # fresh counters, as a checkpoint load makes
    for step in range(3, 5):
        for (first, second), optimizer, take in zip(models, optimizers, [lambda o: o.step(), step_optimizer]):
            gradients(first, second, step, only_first=False)
            take(optimizer)
    for left, right in zip(optimizers[0].state.values(), optimizers[1].state.values()):
        assert all(torch.equal(left[key], right[key]) for key in left)
    assert float(next(iter(optimizers[1].state.values()))["step"]) == 5


def test_clipping_some_of_the_parameters_of_a_flat_gradient_clips_only_theirs():
    """A flat tensor that also holds other parameters' gradients must not be measured or scaled."""
    (first, second), (other_first, other_second) = networks(12), networks(12)
    parameters = [*first.parameters(), *second.parameters()]
    flat = gradient_views(parameters)
    gradients(other_first, other_second, 0, only_first=False)
    for parameter, other in zip(parameters, [*other_first.parameters(), *other_second.parameters()]):
        parameter.grad.copy_(other.grad)
    expected = [*other_first.parameters()]
    clip_with_torch(expected, 0.05)
    untouched = [parameter.grad.clone() for parameter in second.parameters()]
    clip_gradient_norm(list(first.parameters()), 0.05, flat)
    assert all(torch.equal(parameter.grad, other.grad) for parameter, other in zip(first.parameters(), expected))
    assert all(torch.equal(parameter.grad, before) for parameter, before in zip(second.parameters(), untouched))
