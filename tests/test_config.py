"""Config validation, CLI value parsing, and documentation of every config field."""

import dataclasses
import re
from typing import Literal

import pytest

from rlfoundry.algorithms import ALGORITHMS
from rlfoundry.run.config import (
    FIXED_FIELD_REASONS,
    ConfigError,
    config_from_dict,
    config_to_dict,
    field_docs,
    parse_overrides,
    require_range,
)


@dataclasses.dataclass(frozen=True)
class Example:
    """A config with every supported field type."""

    rate: float = 0.1
    """a float"""
    count: int = 3
    """an int"""
    flag: bool = False
    """a bool"""
    sizes: tuple[int, ...] = (64, 64)
    """a tuple"""
    mode: Literal["fast", "exact"] = "fast"
    """a literal"""
    limit: float | None = None
    """an optional float"""


def test_overrides_are_parsed_to_the_field_types():
    parsed = parse_overrides(
        Example, ["rate=3e-4", "count=1_000", "flag=true", "sizes=256,256", "mode=exact", "limit=none"]
    )
    assert parsed == {"rate": 3e-4, "count": 1000, "flag": True, "sizes": (256, 256), "mode": "exact", "limit": None}
    assert parse_overrides(Example, ["count=1e3", "limit=0.5"]) == {"count": 1000, "limit": 0.5}


@pytest.mark.parametrize(
    "assignment, message",
    [
        ("rate", "--set expects key=value"),
        ("rat=1", "unknown Example config key 'rat'; did you mean rate"),
        ("count=2.5", "count expects an integer, got '2.5'"),
        ("flag=maybe", "flag expects true or false"),
        ("mode=slow", "mode='slow' is not allowed: choose one of 'fast', 'exact'"),
    ],
)
def test_override_errors(assignment, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_overrides(Example, [assignment])


def test_range_messages():
    with pytest.raises(ConfigError, match=r"gamma=1.5 is out of range: allowed \[0.0, 1.0\]"):
        require_range("gamma", 1.5, 0.0, 1.0)
    with pytest.raises(ConfigError, match=r"tau=0.0 is out of range: allowed \(0.0, 1.0\]"):
        require_range("tau", 0.0, 0.0, 1.0, low_inclusive=False)
    with pytest.raises(ConfigError, match="is out of range"):
        require_range("rate", float("nan"), 0.0, 1.0)
    with pytest.raises(ConfigError, match=r"learning_rate=inf is out of range: allowed \(0.0, inf\)"):
        require_range("learning_rate", float("inf"), 0.0, low_inclusive=False)
    with pytest.raises(ConfigError, match=r"offset=-inf is out of range: allowed \(-inf, inf\)"):
        require_range("offset", -float("inf"))
    with pytest.raises(ConfigError, match="must be a number, got 'x'"):
        require_range("rate", "x", 0.0, 1.0)


def test_dict_round_trip_restores_tuples():
    config = Example(sizes=(8, 4))
    assert config_from_dict(Example, config_to_dict(config)) == config


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_config_field_of_every_algorithm_is_documented(name):
    config_class = ALGORITHMS[name].Config
    docs = field_docs(config_class)
    missing = [field.name for field in dataclasses.fields(config_class) if not docs.get(field.name)]
    assert not missing, f"{config_class.__name__} fields without a docstring line: {missing}"


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_field_fixed_by_a_checkpoint_is_a_field_with_a_reason(name):
    config_class = ALGORITHMS[name].Config
    fields = {field.name for field in dataclasses.fields(config_class)}
    assert config_class.fixed_by_checkpoint - fields == set()
    assert config_class.fixed_by_checkpoint - set(FIXED_FIELD_REASONS) == set()


@pytest.mark.parametrize("name", sorted(ALGORITHMS))
def test_every_algorithm_default_config_is_valid_and_frozen(name):
    config = ALGORITHMS[name].Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 5


@pytest.mark.parametrize(
    "algorithm, key, hint",
    [
        ("ppo", "verbose", "Stable-Baselines3's verbose is quiet=True"),
        ("ppo", "ent_coef", "Stable-Baselines3's ent_coef is entropy_coef here"),
        ("sac", "ent_coef", "Stable-Baselines3's ent_coef is alpha here"),
        ("sac", "net_arch", "is actor_hidden_sizes or critic_hidden_sizes here"),
        ("dqn", "exploration_final_eps", "is epsilon_end here"),
    ],
)
def test_a_stable_baselines_name_points_to_rlfoundrys(algorithm, key, hint):
    from rlfoundry.run.config import check_keys

    with pytest.raises(ConfigError, match=re.escape(hint)):
        check_keys(ALGORITHMS[algorithm].Config, {key: 0})
