"""Stochastic policies and value functions for on-policy algorithms.

A policy network maps observations to an action *distribution*; every distribution here has the
same small interface (`log_prob`, `entropy`, `sample`, `mode`, `kl`, `detach`), so an algorithm
never branches on the action space:

    Discrete(n)          -> Categorical            pi(a|s) = softmax(logits(s))_a
    Box, shape (D,)      -> DiagonalGaussian       pi(a|s) = N(mu(s), diag(exp(log_std))^2), log_std
                                                   a learned vector that does not depend on s
    MultiDiscrete(nvec)  -> MultiCategorical       one independent Categorical per component

    policy = PolicyNetwork(env.single_observation_space, env.single_action_space)
    distribution = policy(torch.as_tensor(observations))     # observations [B, *obs]
    actions = distribution.sample()                           # [B] or [B, D] / [B, K]
    log_probs = distribution.log_prob(actions)                # [B]

Gaussian samples are unbounded; `env_actions` clips them into the Box before they reach the env,
while the unclipped sample is what gets stored and scored (its log-probability is exact).

Orthogonal initialisation (`orthogonal=True` here, `orthogonal_init` in the algorithms' configs;
the default) follows the OpenAI Baselines convention that PPO's published results use: hidden
layers with gain sqrt(2), the policy output with gain 0.01 (so the initial policy is near uniform
or near zero-mean), the value output with gain 1, all biases zero. `orthogonal=False` keeps
PyTorch's default (Kaiming-uniform) initialisation.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeGuard

import numpy as np
import torch
from gymnasium import spaces
from torch import nn
from torch.nn import functional

from rlfoundry.envs.spaces import SpaceError, describe, observation_batch, require_zero_start
from rlfoundry.networks.torsos import MLP, NATURE_CNN_MIN_SIDE, NatureCNN, orthogonal_init

if TYPE_CHECKING:
    from typing_extensions import Self

HIDDEN_GAIN = math.sqrt(2)
POLICY_GAIN = 0.01
VALUE_GAIN = 1.0
LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


# -- distributions ------------------------------------------------------------------------------


class Distribution(Protocol):
    """What every action distribution offers; B is the batch size."""

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        """log pi(a|s) of each action: [B]."""

    def entropy(self) -> torch.Tensor:
        """H(pi(.|s)): [B]."""

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """One action per row, drawn with `generator` (None: torch's global one); carries no gradient."""

    def mode(self) -> torch.Tensor:
        """The most likely action per row (the deterministic action)."""

    def kl(self, other: Self) -> torch.Tensor:
        """KL(self || other) per row: [B]; `other` is a distribution of the same kind and shape."""

    def detach(self) -> Self:
        """The same distribution with its parameters cut from the autograd graph."""


class Categorical:
    """pi(a|s) = softmax(logits)_a. logits: [B, n]; actions: [B] int64."""

    def __init__(self, logits: torch.Tensor):
        # Normalised once: log_prob and entropy read log-probabilities directly.
        self.log_probabilities = torch.log_softmax(logits, dim=-1)

    @property
    def probabilities(self) -> torch.Tensor:
        return self.log_probabilities.exp()

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return self.log_probabilities.gather(-1, actions.long().unsqueeze(-1)).squeeze(-1)

    def entropy(self) -> torch.Tensor:
        return -(self.probabilities * self.log_probabilities).sum(dim=-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # Gumbel-max: argmax_a (log p_a + G_a) with G_a = -log E_a, E_a ~ Exp(1), is distributed as p;
        # a few elementwise ops, several times faster than torch.multinomial on small batches.
        exponentials = torch.empty_like(self.log_probabilities).exponential_(generator=generator)
        return (self.log_probabilities - exponentials.log()).argmax(dim=-1)

    def mode(self) -> torch.Tensor:
        return self.log_probabilities.argmax(dim=-1)

    def kl(self, other: "Categorical") -> torch.Tensor:
        return (self.probabilities * (self.log_probabilities - other.log_probabilities)).sum(dim=-1)

    def detach(self) -> "Categorical":
        return Categorical(self.log_probabilities.detach())


class DiagonalGaussian:
    """pi(a|s) = prod_d N(a_d; mean_d, exp(log_std_d)^2). mean: [B, D]; log_std: [D] or [B, D]; actions [B, D]."""

    def __init__(self, mean: torch.Tensor, log_std: torch.Tensor):
        self.mean = mean
        self.log_std = log_std.expand_as(mean)

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        standardised = (actions - self.mean) * torch.exp(-self.log_std)
        return (-0.5 * standardised.square() - self.log_std - LOG_SQRT_2PI).sum(dim=-1)

    def entropy(self) -> torch.Tensor:
        return (self.log_std + 0.5 + LOG_SQRT_2PI).sum(dim=-1)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        # A sample is data, not a function of the parameters (no reparameterisation gradient).
        with torch.no_grad():
            return self.mean + torch.empty_like(self.mean).normal_(generator=generator) * self.log_std.exp()

    def mode(self) -> torch.Tensor:
        return self.mean

    def kl(self, other: "DiagonalGaussian") -> torch.Tensor:
        variance_ratio = torch.exp(2 * (self.log_std - other.log_std))
        mean_term = ((self.mean - other.mean) * torch.exp(-other.log_std)).square()
        return (other.log_std - self.log_std + 0.5 * (variance_ratio + mean_term - 1.0)).sum(dim=-1)

    def detach(self) -> "DiagonalGaussian":
        return DiagonalGaussian(self.mean.detach(), self.log_std.detach())


class MultiCategorical:
    """pi(a|s) = prod_k softmax(logits_k)_{a_k}. logits: [B, sum(nvec)]; actions: [B, K] int64."""

    def __init__(self, logits: torch.Tensor, nvec: Sequence[int]):
        self.nvec = tuple(int(n) for n in nvec)
        self.components = [Categorical(piece) for piece in torch.split(logits, list(self.nvec), dim=-1)]

    def log_prob(self, actions: torch.Tensor) -> torch.Tensor:
        return _added(part.log_prob(actions[..., k]) for k, part in enumerate(self.components))

    def entropy(self) -> torch.Tensor:
        return _added(part.entropy() for part in self.components)

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([part.sample(generator) for part in self.components], dim=-1)

    def mode(self) -> torch.Tensor:
        return torch.stack([part.mode() for part in self.components], dim=-1)

    def kl(self, other: "MultiCategorical") -> torch.Tensor:
        return _added(part.kl(other_part) for part, other_part in zip(self.components, other.components))

    def detach(self) -> "MultiCategorical":
        return MultiCategorical(torch.cat([part.log_probabilities.detach() for part in self.components], -1), self.nvec)


def _added(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """terms[0] + terms[1] + ... (one per component, of which there is at least one): sum() without its start 0."""
    return functools.reduce(operator.add, terms)


# -- heads --------------------------------------------------------------------------------------


class CategoricalHead(nn.Module):
    """features [B, F] -> Categorical over n actions."""

    def __init__(self, input_size: int, n_actions: int):
        super().__init__()
        self.logits = nn.Linear(input_size, n_actions)

    def forward(self, features: torch.Tensor) -> Categorical:
        return Categorical(self.logits(features))


class GaussianHead(nn.Module):
    """features [B, F] -> DiagonalGaussian with a state-dependent mean and a learned, state-independent log-std."""

    def __init__(self, input_size: int, action_size: int, log_std_init: float = 0.0):
        super().__init__()
        self.mean = nn.Linear(input_size, action_size)
        self.log_std = nn.Parameter(torch.full((action_size,), float(log_std_init)))

    def forward(self, features: torch.Tensor) -> DiagonalGaussian:
        return DiagonalGaussian(self.mean(features), self.log_std)


class MultiCategoricalHead(nn.Module):
    """features [B, F] -> MultiCategorical with one softmax per MultiDiscrete component."""

    def __init__(self, input_size: int, nvec: Sequence[int]):
        super().__init__()
        self.nvec = tuple(int(n) for n in nvec)
        self.logits = nn.Linear(input_size, sum(self.nvec))

    def forward(self, features: torch.Tensor) -> MultiCategorical:
        return MultiCategorical(self.logits(features), self.nvec)


PolicyHead = CategoricalHead | GaussianHead | MultiCategoricalHead


def make_head(action_space: spaces.Space, input_size: int, log_std_init: float = 0.0) -> PolicyHead:
    """The distribution head for an action space; SpaceError for a space without one."""
    if isinstance(action_space, spaces.Discrete):
        require_zero_start(action_space, "Discrete actions")
        return CategoricalHead(input_size, int(action_space.n))
    if isinstance(action_space, spaces.Box):
        if len(action_space.shape) != 1:
            raise SpaceError(
                f"Box actions must be a vector (shape (D,)), got {describe(action_space)}: wrap the env so "
                "that it takes flat action vectors"
            )
        if not np.issubdtype(action_space.dtype, np.floating):
            # A Gaussian sample is a float: stored as an integer it would not be the action scored.
            raise SpaceError(
                f"a Gaussian policy needs a float Box action space, got {describe(action_space)}: use a "
                "MultiDiscrete action space for integer actions, or wrap the env so that it takes float actions"
            )
        return GaussianHead(input_size, action_space.shape[0], log_std_init)
    if isinstance(action_space, spaces.MultiDiscrete):
        if action_space.nvec.ndim != 1:
            raise SpaceError(f"MultiDiscrete actions must be one-dimensional, got {describe(action_space)}")
        require_zero_start(action_space, "MultiDiscrete actions")
        return MultiCategoricalHead(input_size, action_space.nvec.tolist())
    raise SpaceError(
        f"no policy head for action space {describe(action_space)}: supported are Discrete, Box (vector) "
        "and MultiDiscrete"
    )


def env_actions(actions: np.ndarray, action_space: spaces.Space) -> np.ndarray:
    """The actions to send to the env: Gaussian samples clipped into the Box; others unchanged."""
    if isinstance(action_space, spaces.Box):
        return np.clip(actions, action_space.low, action_space.high)
    return actions


def observation_tensor(observations: np.ndarray, device: torch.device) -> torch.Tensor:
    """A numpy batch of observations as a tensor on `device`; float64 ones (MuJoCo, or a caller's
    array) become float32 to meet the weights."""
    tensor = torch.as_tensor(observations, device=device)
    return tensor.float() if tensor.dtype == torch.float64 else tensor


def predict_actions(
    policy: Callable[[torch.Tensor], Distribution],
    observations: Any,
    observation_space: spaces.Space,
    action_space: spaces.Space,
    device: torch.device,
    deterministic: bool,
    normalize: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Any:
    """Env actions of `policy` (observations -> distribution) for observations [B, *obs] or one
    unbatched observation (checked by envs.spaces.observation_batch, then `normalize`d): the
    distribution's mode when deterministic, else a sample; Box actions clipped into the action space."""
    batch, single = observation_batch(observations, observation_space)
    if normalize is not None:
        batch = normalize(batch)
    with torch.inference_mode():
        distribution = policy(observation_tensor(batch, device))
        actions = distribution.mode() if deterministic else distribution.sample()
    actions_array = env_actions(actions.cpu().numpy(), action_space)
    return actions_array[0] if single else actions_array


# -- torsos over observation spaces ---------------------------------------------------------------


class OneHot(nn.Module):
    """Discrete observations [B] -> one-hot float vectors [B, n]."""

    def __init__(self, n: int):
        super().__init__()
        self.n = n

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return functional.one_hot(observations.long(), self.n).float()


class VectorTorso(nn.Module):
    """An input encoder (one-hot for Discrete, flatten-and-cast for other Boxes, nothing for
    float vectors) followed by an MLP."""

    def __init__(self, encoder: nn.Module | None, input_size: int, hidden_sizes: Sequence[int], activation: str):
        super().__init__()
        self.encoder = encoder
        self.mlp = MLP(input_size, hidden_sizes, activation)
        self.output_size = self.mlp.output_size

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.mlp(observations if self.encoder is None else self.encoder(observations))


class FlattenFloat(nn.Module):
    """Box observations [B, *shape] of any dtype -> float32 vectors [B, prod(shape)]."""

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return observations.reshape(observations.shape[0], -1).float()


def is_image_space(observation_space: spaces.Space) -> TypeGuard[spaces.Box]:
    """A [C, H, W] uint8 Box: read by the Nature CNN."""
    return (
        isinstance(observation_space, spaces.Box)
        and len(observation_space.shape) == 3
        and observation_space.dtype == np.uint8
    )


def make_torso(observation_space: spaces.Space, hidden_sizes: Sequence[int], activation: str) -> VectorTorso | NatureCNN:
    """Feature extractor for an observation space; the result has `.output_size`.

    Discrete -> one-hot + MLP; [C, H, W] uint8 Box -> Nature CNN (hidden_sizes unused);
    any other Box -> flatten + MLP.
    """
    if isinstance(observation_space, spaces.Discrete):
        require_zero_start(observation_space, "Discrete observations")
        n = int(observation_space.n)
        return VectorTorso(OneHot(n), n, hidden_sizes, activation)
    if is_image_space(observation_space):
        channels, height, width = observation_space.shape
        if width < channels and width <= 4:
            raise SpaceError(
                f"image observations of shape {observation_space.shape} look channels-last [H, W, C]; the CNN reads "
                f"channels-first [C, H, W] frames: wrap the env so that it returns frame.transpose(2, 0, 1), e.g. "
                f"gymnasium.wrappers.TransformObservation with a uint8 Box of shape {(width, channels, height)}"
            )
        if min(height, width) < NATURE_CNN_MIN_SIDE:
            raise SpaceError(
                f"image observations of shape {observation_space.shape} are too small for the Nature CNN, which needs "
                f"frames of at least {NATURE_CNN_MIN_SIDE} x {NATURE_CNN_MIN_SIDE} pixels: resize them "
                "(gymnasium.wrappers.ResizeObservation) or flatten them (gymnasium.wrappers.FlattenObservation)"
            )
        return NatureCNN(channels, height, width)
    if isinstance(observation_space, spaces.Box):
        # Float32 vectors go straight in: the encoder's two ops per forward add up over millions of steps.
        plain = len(observation_space.shape) == 1 and observation_space.dtype == np.float32
        encoder = None if plain else FlattenFloat()
        return VectorTorso(encoder, int(np.prod(observation_space.shape)), hidden_sizes, activation)
    raise SpaceError(
        f"no network for observation space {describe(observation_space)}: supported are Discrete and Box "
        "(gymnasium.wrappers.FlattenObservation makes a Box of Dict, Tuple, MultiBinary and MultiDiscrete observations)"
    )


def _initialise(torso: nn.Module, output: nn.Module, output_gain: float) -> None:
    orthogonal_init(torso, HIDDEN_GAIN)
    orthogonal_init(output, output_gain)


def _policy_output(head: PolicyHead) -> nn.Linear:
    # The Linear layer inside a head; a Gaussian head's log_std is a plain parameter, left as set.
    return head.mean if isinstance(head, GaussianHead) else head.logits


# -- composites ---------------------------------------------------------------------------------


class PolicyNetwork(nn.Module):
    """pi(.|s): observations [B, *obs] -> an action distribution."""

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        orthogonal: bool = True,
        log_std_init: float = 0.0,
    ):
        super().__init__()
        self.torso = make_torso(observation_space, hidden_sizes, activation)
        self.head = make_head(action_space, self.torso.output_size, log_std_init)
        if orthogonal:
            _initialise(self.torso, _policy_output(self.head), POLICY_GAIN)

    def forward(self, observations: torch.Tensor) -> Distribution:
        return self.head(self.torso(observations))


class ValueNetwork(nn.Module):
    """V(s): observations [B, *obs] -> values [B]."""

    def __init__(
        self,
        observation_space: spaces.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        orthogonal: bool = True,
    ):
        super().__init__()
        self.torso = make_torso(observation_space, hidden_sizes, activation)
        self.head = nn.Linear(self.torso.output_size, 1)
        if orthogonal:
            _initialise(self.torso, self.head, VALUE_GAIN)

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.head(self.torso(observations)).squeeze(-1)


class ActorCritic(nn.Module):
    """A policy pi(.|s) and a value function V(s), with one shared torso or two separate ones.

    shared_torso=False: policy_torso + policy_head and value_torso + value_head are independent
    networks (the usual choice for vector observations; TRPO needs it, since it steps the policy
    alone). shared_torso=True: policy_torso feeds both heads and value_torso is None (the usual
    choice for images, where the CNN is the expensive part); the value loss then also shapes the
    policy's features.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        hidden_sizes: Sequence[int] = (64, 64),
        activation: str = "tanh",
        shared_torso: bool = False,
        orthogonal: bool = True,
        log_std_init: float = 0.0,
    ):
        super().__init__()
        self.shared_torso = shared_torso
        self.policy_torso = make_torso(observation_space, hidden_sizes, activation)
        self.value_torso = None if shared_torso else make_torso(observation_space, hidden_sizes, activation)
        value_features = self.policy_torso if self.value_torso is None else self.value_torso
        self.policy_head = make_head(action_space, self.policy_torso.output_size, log_std_init)
        self.value_head = nn.Linear(value_features.output_size, 1)
        if orthogonal:
            _initialise(self.policy_torso, _policy_output(self.policy_head), POLICY_GAIN)
            if self.value_torso is not None:
                orthogonal_init(self.value_torso, HIDDEN_GAIN)
            orthogonal_init(self.value_head, VALUE_GAIN)

    def forward(self, observations: torch.Tensor) -> tuple[Distribution, torch.Tensor]:
        """(pi(.|s), V(s) [B]) for observations [B, *obs], sharing the torso pass when shared."""
        policy_features = self.policy_torso(observations)
        value_features = policy_features if self.value_torso is None else self.value_torso(observations)
        return self.policy_head(policy_features), self.value_head(value_features).squeeze(-1)

    def distribution(self, observations: torch.Tensor) -> Distribution:
        """pi(.|s) alone."""
        return self.policy_head(self.policy_torso(observations))

    def value(self, observations: torch.Tensor) -> torch.Tensor:
        """V(s) alone: [B]."""
        torso = self.policy_torso if self.value_torso is None else self.value_torso
        return self.value_head(torso(observations)).squeeze(-1)

    def policy_parameters(self) -> list[nn.Parameter]:
        """The parameters pi depends on (with a shared torso, the torso's too)."""
        return [*self.policy_torso.parameters(), *self.policy_head.parameters()]

    def value_parameters(self) -> list[nn.Parameter]:
        """The parameters V depends on (with a shared torso, the torso's too)."""
        torso = self.policy_torso if self.value_torso is None else self.value_torso
        return [*torso.parameters(), *self.value_head.parameters()]
