"""The docs' option tables against the code: every config field of every algorithm is listed on its
page in docs/algorithms/ with the default the code has."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

from rlfoundry.cli import ALGORITHMS

DOCS = Path(__file__).resolve().parent.parent / "docs" / "algorithms"
TABLE_ROW = re.compile(r"^\|\s*(`[^|]*`)\s*\|([^|]*)\|")


def split_top_level(cell: str) -> list[str]:
    """'(64, 64), tanh, None' -> ['(64, 64)', 'tanh', 'None']: commas inside brackets stay."""
    parts, depth, current = [], 0, ""
    for character in cell:
        if character in "([":
            depth += 1
        elif character in ")]":
            depth -= 1
        if character == "," and depth == 0:
            parts.append(current.strip())
            current = ""
        else:
            current += character
    return parts + [current.strip()]


def documented_value(text: str) -> object:
    """A default as the docs write it ('1,000,000', '3e-4', '`auto`', '"random"', '(64, 64)', 'None')."""
    text = text.strip().strip("`")
    if re.fullmatch(r"\d{1,3}(,\d{3})+", text):  # thousands separators
        return int(text.replace(",", ""))
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare string such as auto or relu


def option_table(page: Path) -> dict[str, object]:
    """The options documented on a page: name -> default, from rows '| `name` | default | ... |'
    (or '| `a`, `b` | default_a, default_b | ... |')."""
    options: dict[str, object] = {}
    for line in page.read_text().splitlines():
        match = TABLE_ROW.match(line)
        if match is None:
            continue
        names = re.findall(r"`([^`]+)`", match.group(1))
        defaults = split_top_level(match.group(2)) if len(names) > 1 else [match.group(2)]
        if len(names) != len(defaults):
            continue  # not an options row (a table whose first column lists values, not options)
        options.update((name, documented_value(default)) for name, default in zip(names, defaults))
    return options


def declaring_page(config_class: type, field_name: str) -> Path:
    """The page of the algorithm whose config declares the field: OffPolicyPG's page documents what
    it adds to REINFORCE's config and points to REINFORCE's page for the rest. Fields of the shared
    bases in rlfoundry.run are documented on each algorithm's own page."""
    for cls in config_class.__mro__:
        if field_name in vars(cls).get("__annotations__", {}) and cls.__module__.startswith("rlfoundry.algorithms."):
            return DOCS / f"{cls.__module__.rsplit('.', 1)[-1]}.md"
    return DOCS / f"{config_class.__module__.rsplit('.', 1)[-1]}.md"


CONFIGS = sorted({algorithm.Config for algorithm in ALGORITHMS.values()}, key=lambda config: config.__name__)


@pytest.mark.parametrize("config_class", CONFIGS, ids=lambda config: config.__name__)
def test_every_option_is_documented_with_its_default(config_class):
    problems = []
    for field in dataclasses.fields(config_class):
        page = declaring_page(config_class, field.name)
        options = option_table(page)
        if field.name not in options:
            problems.append(f"{field.name} is missing from {page.name}'s option table")
        elif options[field.name] != field.default:
            problems.append(f"{field.name}: {page.name} says {options[field.name]!r}, the code {field.default!r}")
    assert not problems, problems


def test_the_parser_reads_the_formats_the_pages_use():
    assert split_top_level("(64, 64), tanh, [1, 2], None") == ["(64, 64)", "tanh", "[1, 2]", "None"]
    assert [documented_value(text) for text in ("1,000,000", "3e-4", "`auto`", '`"random"`', "(64, 64)", "None")] == [
        1_000_000, 3e-4, "auto", "random", (64, 64), None,
    ]
