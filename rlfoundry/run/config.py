"""Config validation and conversion shared by every algorithm's frozen Config dataclass.

Each algorithm declares `@dataclass(frozen=True) class Config` with one docstring line per field
(written as a string literal right under the field) and calls the `require_*` helpers from its
`__post_init__`, so a bad value fails on construction with the field, the value and the range.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import inspect
import math
import typing
from typing import Any


class ConfigError(ValueError):
    """A config value or key that cannot be used; the message says what to do instead."""


# Why a field stays as the checkpoint has it when a model is loaded: each Config names its own
# in `fixed_by_checkpoint` (a class attribute, not a field), and every name there has a reason here.
FIXED_FIELD_REASONS = {
    "seed": "seeded the generators and envs whose states the checkpoint holds",
    "n_envs": "is the number of envs whose positions and statistics the checkpoint holds",
    "hidden_sizes": "shapes the saved networks",
    "actor_hidden_sizes": "shapes the saved actor",
    "critic_hidden_sizes": "shapes the saved critics",
    "activation": "is part of the function the saved networks compute",
    "shared_torso": "shapes the saved network",
    "orthogonal_init": "only sets the initial weights, which the checkpoint's replace",
    "log_std_init": "only sets the initial log standard deviation, which the checkpoint's replaces",
    "initial_q": "only sets the initial Q table, which the checkpoint's replaces",
    "alpha": "only sets the initial entropy temperature, which the checkpoint's replaces",
    "normalize_observations": "decides whether the checkpoint holds observation statistics",
    "normalize_rewards": "decides whether the checkpoint holds return statistics",
    "buffer_size": "sets the layout of the saved replay buffer",
    "replay_storage": "sets the layout of the saved replay buffer",
    "n_step": "sets the layout of the saved replay buffer",
    "clip_rewards": "decides whether the saved replay buffer's rewards are clipped",
    "optimizer": "chooses the optimiser whose state the checkpoint holds",
    "baseline": "decides whether the checkpoint holds a value network",
}


@dataclasses.dataclass(frozen=True)
class ConfigChange:
    """A config field given a new value when a checkpoint was loaded."""

    name: str
    before: Any
    after: Any

    def __str__(self) -> str:
        return f"{self.name} {_shown(self.before)} -> {_shown(self.after)}"


def _shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def override_config(config: Any, overrides: typing.Mapping[str, Any]) -> tuple[Any, list[ConfigChange]]:
    """`config` with `overrides` applied, checked as a new config is (unknown keys, the dataclass's
    own validation), and the fields whose values changed. A field in the config's
    `fixed_by_checkpoint` may only be given the value it has: ConfigError saying why otherwise."""
    config_class = type(config)
    check_keys(config_class, overrides)
    overridden = dataclasses.replace(config, **overrides)
    changes = [
        ConfigChange(name, getattr(config, name), getattr(overridden, name))
        for name in overrides
        if getattr(overridden, name) != getattr(config, name)
    ]
    for change in changes:
        if change.name in config_class.fixed_by_checkpoint:
            raise ConfigError(
                f"{change.name} cannot change when a checkpoint is loaded (it has {_shown(change.before)}): it "
                f"{FIXED_FIELD_REASONS[change.name]}; leave {change.name} out, or train a new model with "
                f"{change.name}={_shown(change.after)}"
            )
    return overridden, changes


def require_range(
    name: str,
    value: float,
    low: float | None = None,
    high: float | None = None,
    *,
    low_inclusive: bool = True,
    high_inclusive: bool = True,
) -> None:
    """Raise ConfigError unless low <= value <= high (bounds optional, strictness per side)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number, got {value!r}")
    too_low = low is not None and (value < low if low_inclusive else value <= low)
    too_high = high is not None and (value > high if high_inclusive else value >= high)
    # value != value catches NaN; an infinite value is outside every interval printed below.
    if too_low or too_high or value != value or value in (math.inf, -math.inf):
        left = "-inf" if low is None else f"{low}"
        right = "inf" if high is None else f"{high}"
        interval = f"{'[' if low_inclusive and low is not None else '('}{left}, {right}{']' if high_inclusive and high is not None else ')'}"
        raise ConfigError(f"{name}={value!r} is out of range: allowed {interval}")


def require_int(name: str, value: int, low: int | None = None, high: int | None = None) -> None:
    """Raise ConfigError unless value is an int (not a bool) within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    require_range(name, value, low, high)


def require_choice(name: str, value: Any, choices: typing.Iterable[Any]) -> None:
    """Raise ConfigError unless value is one of choices."""
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{name}={value!r} is not allowed: choose one of {', '.join(map(repr, choices))}")


def closest_names(name: str, candidates: typing.Iterable[str], count: int = 3) -> list[str]:
    """The closest valid spellings of name, for 'did you mean' messages."""
    candidates = list(candidates)
    matches = difflib.get_close_matches(name, candidates, n=count, cutoff=0.5)
    if not matches:
        lowered = name.lower()
        matches = [candidate for candidate in candidates if lowered in candidate.lower()][:count]
    return matches


def unknown_name_message(kind: str, name: str, candidates: typing.Iterable[str]) -> str:
    """One line: the unknown name and the closest valid ones."""
    matches = closest_names(name, candidates)
    hint = f"; did you mean {', '.join(matches)}?" if matches else ""
    return f"unknown {kind} {name!r}{hint}"


def field_docs(config_class: type) -> dict[str, str]:
    """Each field's documentation: the string literal written right under it in the class body
    (or in the body of the base class that declares it)."""
    docs: dict[str, str] = {}
    for klass in reversed(config_class.__mro__):
        if klass is not object:
            docs.update(_own_field_docs(klass))
    return docs


def class_summary(klass: type) -> str:
    """The first line of a class's docstring, read from its source: `python -OO` drops docstrings
    from the classes themselves ("" for a class without one, or without readable source)."""
    class_node = _class_node(klass)
    docstring = ast.get_docstring(class_node) if class_node is not None else None
    return docstring.splitlines()[0] if docstring else ""


def _class_node(klass: type) -> ast.ClassDef | None:
    """The class statement of `klass` in its source; None where the source cannot be read."""
    try:
        source = inspect.getsource(klass)
    except (OSError, TypeError):
        return None
    tree = ast.parse(inspect.cleandoc("\n" + source) if source.startswith((" ", "\t")) else source)
    return next(node for node in ast.walk(tree) if isinstance(node, ast.ClassDef))


def _own_field_docs(config_class: type) -> dict[str, str]:
    class_node = _class_node(config_class)
    if class_node is None:
        return {}
    docs: dict[str, str] = {}
    body = class_node.body
    for statement, following in zip(body, body[1:]):
        if (
            isinstance(statement, ast.AnnAssign)
            and isinstance(statement.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[statement.target.id] = following.value.value.strip()
    return docs


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return {field.name: jsonable(getattr(config, field.name)) for field in dataclasses.fields(config)}


def jsonable(value: Any) -> Any:
    """A config value as JSON holds it (tuples become lists)."""
    if isinstance(value, tuple):
        return [jsonable(item) for item in value]
    return value


def config_from_dict(config_class: type, values: dict[str, Any]) -> Any:
    """Build config_class from a dict, with a clear error for a key it does not have."""
    check_keys(config_class, values)
    hints = typing.get_type_hints(config_class)
    converted = {}
    for key, value in values.items():
        if isinstance(value, list) and typing.get_origin(hints[key]) is tuple:
            value = tuple(value)
        converted[key] = value
    return config_class(**converted)


# Stable-Baselines3's names for what rlfoundry calls otherwise (the candidates a config may have).
STABLE_BASELINES_NAMES = {
    "verbose": ("quiet=True (an option beside the config, not a field)",),
    "net_arch": ("hidden_sizes", "actor_hidden_sizes", "critic_hidden_sizes"),
    "policy_kwargs": ("hidden_sizes", "actor_hidden_sizes", "critic_hidden_sizes", "activation"),
    "ent_coef": ("entropy_coef", "alpha"),
    "vf_coef": ("value_coef",),
    "exploration_final_eps": ("epsilon_end",),
    "exploration_initial_eps": ("epsilon_start",),
}


def check_keys(config_class: type, values: typing.Mapping[str, Any], load_options: typing.Sequence[str] = ()) -> None:
    """Raise ConfigError for the first key that is not a field of config_class, with the field
    a Stable-Baselines3 name corresponds to where there is one. `load_options`: rlfoundry.load's
    keywords besides the fields, offered too as what a mistyped key meant."""
    names = [field.name for field in dataclasses.fields(config_class)]
    for key in values:
        if key not in names:
            message = unknown_name_message(f"{config_class.__qualname__.split('.')[0]} config key", key, [*names, *load_options])
            matches = [name for name in STABLE_BASELINES_NAMES.get(key, ()) if name in names or "=" in name]
            if matches:
                message += f" (Stable-Baselines3's {key} is {' or '.join(matches)} here)"
            raise ConfigError(message)


def parse_overrides(config_class: type, assignments: typing.Iterable[str]) -> dict[str, Any]:
    """Parse CLI `--set key=value` strings into typed values for config_class's fields."""
    hints = typing.get_type_hints(config_class)

    def field_type(key: str) -> Any:
        check_keys(config_class, {key: None})
        return hints[key]

    return parse_assignments("--set", assignments, field_type)


def parse_assignments(option: str, assignments: typing.Iterable[str], key_type: typing.Callable[[str], Any]) -> dict[str, Any]:
    """Parse the `key=value` strings given to a CLI option into values of the type key_type(key)
    names (see parse_value), key_type raising ConfigError for a key it does not know."""
    parsed: dict[str, Any] = {}
    for assignment in assignments:
        key, separator, text = assignment.partition("=")
        key = key.strip().replace("-", "_")
        if not separator:
            raise ConfigError(f"{option} expects key=value, got {assignment!r}")
        parsed[key] = parse_value(key, text.strip(), key_type(key))
    return parsed


def parse_value(name: str, text: str, annotation: Any) -> Any:
    """Convert text to the annotated type (bool, int, float, str, tuples of those, Optional)."""
    origin = typing.get_origin(annotation)
    arguments = typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", ())):
        if text.lower() in ("none", "null"):
            if type(None) in arguments:
                return None
        errors = []
        for argument in arguments:
            if argument is type(None):
                continue
            try:
                return parse_value(name, text, argument)
            except ConfigError as error:
                errors.append(str(error))
        raise ConfigError(errors[0] if errors else f"{name}: cannot parse {text!r}")
    if origin is typing.Literal:
        for choice in arguments:
            if str(choice) == text:
                return choice
        raise ConfigError(f"{name}={text!r} is not allowed: choose one of {', '.join(map(repr, arguments))}")
    if origin is tuple:
        items = [item for item in text.strip("()[]").split(",") if item.strip()]
        item_type = arguments[0] if arguments else str
        return tuple(parse_value(name, item.strip(), item_type) for item in items)
    if annotation is bool:
        lowered = text.lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{name} expects true or false, got {text!r}")
    if annotation is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            try:
                as_float = float(text)
            except ValueError:
                as_float = None
            if as_float is not None and as_float.is_integer():
                return int(as_float)
            raise ConfigError(f"{name} expects an integer, got {text!r}") from None
    if annotation is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"{name} expects a number, got {text!r}") from None
    return text
