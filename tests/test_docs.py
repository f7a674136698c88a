"""The docs against the code: every config field of every algorithm is listed on its page in
docs/algorithms/ with the default the code has; every code excerpt on a page stands in the file it
names; the files and tests a page cites exist."""

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


# -- code excerpts -----------------------------------------------------------------------------
#
# The convention the pages follow: a fenced ```python block whose first line is a header comment
# naming a source file, and optionally the function or class the lines come from,
#
#     ```python
#     # rlfoundry/losses/dqn.py: dqn_targets
#     return rewards + discounts * ~terminated * next_q_values_target.max(dim=-1).values
#     ```
#
# is an excerpt: its lines must stand in that file (inside that definition when one is named) as
# consecutive lines, leading and trailing whitespace and blank lines aside; a line `...` skips any
# number of source lines. Any other block (no header, or a bare ``` fence) is illustrative usage
# and is not checked. Pages cite names, never line numbers, which go stale without a sound.

ROOT = DOCS.parent.parent
FENCED_BLOCK = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
EXCERPT_HEADER = re.compile(r"# (rlfoundry/[\w/]+\.py)(?:: ([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*))?")
LINE_NUMBER_CITATION = re.compile(r"\.py:\d+|`:\d+(-\d+)?`")
# `losses/dqn.py`, `rlfoundry/presets/sac.yaml`, `tests/test_dqn.py::test_name` (a quote may wrap a line).
CITED_FILE = re.compile(r"`((?:[\w-]+/)*[\w-]+\.(?:py|yaml))(?:::\s*(\w+))?`")
PAGES = sorted(DOCS.glob("*.md"))


def excerpts(text: str) -> list[tuple[str, str | None, list[str]]]:
    """(source path, qualified name or None, lines) of every excerpt block of a page."""
    found = []
    for match in FENCED_BLOCK.finditer(text):
        language, body = match.groups()
        first, _, rest = body.partition("\n")
        if language != "python" or not first.startswith("# rlfoundry/"):
            continue  # illustrative usage
        header = EXCERPT_HEADER.fullmatch(first.strip())
        if header is None:
            raise ValueError(f"malformed excerpt header {first!r}: write '# rlfoundry/path.py' or '# rlfoundry/path.py: Name'")
        found.append((header.group(1), header.group(2), rest.splitlines()))
    return found


def definition_lines(source: str, qualified_name: str) -> tuple[int, int]:
    """(first, last) line numbers, 1-based, of a module-level or nested def/class `A.b`."""
    scope: list[ast.stmt] = ast.parse(source).body
    node = None
    for part in qualified_name.split("."):
        node = next(
            (child for child in scope
             if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and child.name == part),
            None,
        )
        if node is None:
            raise LookupError(f"no definition {qualified_name}")
        scope = node.body
    first = min([node.lineno] + [decorator.lineno for decorator in node.decorator_list])
    return first, node.end_lineno


def excerpt_problem(excerpt: list[str], source_lines: list[str]) -> str | None:
    """None when the excerpt's pieces (split at `...`) stand in order as consecutive lines of the
    source, compared stripped and without blank lines; else the first piece that does not."""
    source = [line.strip() for line in source_lines if line.strip()]
    pieces: list[list[str]] = [[]]
    for line in excerpt:
        if line.strip() == "...":
            pieces.append([])
        elif line.strip():
            pieces[-1].append(line.strip())
    position = 0
    for piece in filter(None, pieces):
        starts = (start for start in range(position, len(source) - len(piece) + 1) if source[start : start + len(piece)] == piece)
        start = next(starts, None)
        if start is None:
            return "\n".join(piece)
        position = start + len(piece)
    return None


def test_every_page_has_excerpts_and_the_checker_finds_them():
    for page in PAGES:
        assert excerpts(page.read_text()), f"{page.name} has no excerpt block (a ```python block headed '# rlfoundry/...')"


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_code_excerpts_stand_in_the_files_they_name(page):
    problems = []
    for path, name, lines in excerpts(page.read_text()):
        file = ROOT / path
        if not file.is_file():
            problems.append(f"{path} does not exist")
            continue
        source_lines = file.read_text().splitlines()
        if name is not None:
            try:
                first, last = definition_lines("\n".join(source_lines), name)
            except LookupError as error:
                problems.append(f"{path}: {error}")
                continue
            source_lines = source_lines[first - 1 : last]
        missing = excerpt_problem(lines, source_lines)
        if missing is not None:
            where = f"{path}: {name}" if name else path
            problems.append(f"not in {where}:\n{missing}")
    assert not problems, "\n\n".join(problems)


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_pages_cite_code_by_name_not_by_line_number(page):
    citations = [match.group(0) for match in LINE_NUMBER_CITATION.finditer(page.read_text())]
    assert not citations, f"{page.name} cites line numbers {citations}: name the function, or quote the lines as an excerpt"


def test_the_excerpt_checker_catches_a_stale_excerpt():
    source = ["def f(x):", "    y = x + 1", "", "    z = y * 2", "    return z"]
    assert excerpt_problem(["y = x + 1", "z = y * 2"], source) is None  # a blank source line between
    assert excerpt_problem(["    y = x + 1", "...", "return z"], source) is None
    assert excerpt_problem(["z = y * 2", "...", "y = x + 1"], source) == "y = x + 1"  # out of order
    assert excerpt_problem(["y = x + 2"], source) == "y = x + 2"  # a changed line
    assert excerpt_problem(["y = x + 1", "return z"], source) == "y = x + 1\nreturn z"  # a gap not marked
    page = "```python\n# rlfoundry/returns.py: n_step_targets\nreturn targets\n```\n\n```python\nimport rlfoundry\n```\n"
    assert excerpts(page) == [("rlfoundry/returns.py", "n_step_targets", ["return targets"])]
    with pytest.raises(ValueError, match="malformed"):
        excerpts("```python\n# rlfoundry/returns.py n_step_targets\n```\n")


@pytest.mark.parametrize("page", PAGES, ids=lambda page: page.name)
def test_cited_files_and_tests_exist(page):
    """Paths are written from the repository root or from rlfoundry/ (`losses/dqn.py`)."""
    problems = []
    for path, test_name in CITED_FILE.findall(FENCED_BLOCK.sub("", page.read_text())):
        file = next((root / path for root in (ROOT, ROOT / "rlfoundry") if (root / path).is_file()), None)
        if file is None:
            problems.append(f"{path} does not exist")
        elif test_name and not re.search(rf"^def {test_name}\(", file.read_text(), re.MULTILINE):
            problems.append(f"{path} has no {test_name}")
    assert not problems, f"{page.name}: {problems}"
