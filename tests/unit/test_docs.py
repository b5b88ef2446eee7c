"""The docs live in the repository and say what the code does: every topic, endpoint, setting,
model type and command in the code is in the docs and nothing in the docs is missing from the
code; the settings reference is the one generated from the settings class; every link resolves
inside the repository; the contract's examples validate against the event schemas; the README
stays short; no internal issue number is left anywhere."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import jsonschema
import pytest

from fcl.cli import build_parser
from fcl.contract import model_types
from fcl.contract.settings import Settings
from fcl.contract.topics import Topic
from fcl.web.context import PREFIX
from fcl.web.routes import ENDPOINTS
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import settings_reference

DOCS = sorted((ROOT / "docs").glob("*.md"))
PAGES = [ROOT / "README.md", ROOT / "deploy" / "README.md", *DOCS]
CONTRACT = ROOT / "docs" / "contract.md"
SKIP = {".venv", ".git", ".fcl", ".mypy_cache", ".ruff_cache", "__pycache__", "node_modules"}


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _section(doc: str, heading: str) -> str:
    """The text under `## heading`, up to the next `## `."""
    return doc.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def _source_files() -> list[Path]:
    found = []
    for path in ROOT.rglob("*"):
        wanted = path.suffix in {".py", ".md", ".sh", ".toml", ".yml", ".yaml", ".html"} or path.name in {
            "Makefile",
            "Dockerfile",
            "run",
        }
        if wanted and path.is_file() and not SKIP & set(path.relative_to(ROOT).parts[:-1]):
            found.append(path)
    return found


def test_the_readme_is_short_and_starts_with_the_two_commands() -> None:
    lines = _text(ROOT / "README.md").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; the details belong in docs/"
    assert lines[3].startswith("make demo") and lines[4].startswith("make test"), lines[:6]


def _slug(heading: str) -> str:
    return re.sub(r"[^a-z0-9 _-]", "", heading.strip().lower()).replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_every_link_resolves_inside_the_repository(page: Path) -> None:
    text = _text(page)
    links = re.findall(r"\]\(([^)\s]+)\)", text)
    for link in links:
        if re.match(r"[a-z]+:", link):
            continue  # a URL outside the repository (http:, https:)
        target, _, anchor = link.partition("#")
        path = (page.parent / target).resolve() if target else page
        assert path.is_relative_to(ROOT), f"{page.name}: {link} leaves the repository"
        assert path.exists(), f"{page.name}: {link} does not resolve"
        if anchor:
            headings = {_slug(h) for h in re.findall(r"^#+ (.+)$", _text(path), re.M)}
            assert anchor in headings, f"{page.name}: {link}: no heading #{anchor}"


def test_no_internal_issue_number_and_no_path_outside_the_repository() -> None:
    offenders = []
    for path in _source_files():
        text = _text(path)
        for pattern in (r"(?i)\bissues? #?\d+", r"\.\./shared\b", r"\bCONTRACT\.md"):
            offenders += [f"{path.relative_to(ROOT)}: {m}" for m in re.findall(pattern, text)]
    assert offenders == [], offenders


def test_every_topic_is_in_the_contract_and_every_documented_topic_exists() -> None:
    documented = set(re.findall(r"^### `fcl\.([a-z-]+)`", _text(CONTRACT), re.M))
    assert documented == {t.value for t in Topic}


def test_every_endpoint_is_in_the_contract_and_every_documented_endpoint_exists() -> None:
    table = _section(_text(CONTRACT), "HTTP API")
    documented = set(re.findall(r"`(GET|POST|PUT|PATCH|DELETE) (/[^`\s]*)`", table))
    served = {(e.method, e.path.removeprefix(PREFIX) or "/") for e in ENDPOINTS}
    assert documented == served, (
        f"served, not documented: {sorted(served - documented)}; documented, not served: {sorted(documented - served)}"
    )


def test_every_model_type_and_command_is_in_the_contract() -> None:
    doc = _text(CONTRACT)
    assert set(re.findall(r"^\| `([a-z]+)` \|", _section(doc, "Model types"), re.M)) == set(model_types.names())
    commands = _section(doc, "Command line")
    subparsers = next(a for a in build_parser()._actions if a.dest == "command")
    names = set(subparsers.choices)  # type: ignore[arg-type]
    assert set(re.findall(r"`fcl ([a-z][a-z-]*)", commands)) == names


def _variables_in_code() -> set[str]:
    found = set(Settings.variables())
    for path in _source_files():
        if path.suffix != ".md":
            found |= set(re.findall(r"\bFCL_[A-Z0-9_]*[A-Z0-9]\b", _text(path)))
    return found


def test_every_setting_is_documented_and_every_documented_setting_exists() -> None:
    documented: set[str] = set()
    for page in PAGES:
        documented |= set(re.findall(r"\bFCL_[A-Z0-9_]*[A-Z0-9]\b", _text(page)))
    reference = _text(ROOT / "docs" / "operations.md")
    missing = {v for v in Settings.variables() if f"`{v}`" not in reference}
    assert not missing, f"settings missing from the reference in docs/operations.md: {sorted(missing)}"
    unknown = documented - _variables_in_code()
    assert not unknown, f"documented but read nowhere: {sorted(unknown)}"


def test_the_settings_reference_is_the_generated_one_and_every_setting_is_explained() -> None:
    doc = _text(ROOT / "docs" / "operations.md")
    assert settings_reference.render(doc) == doc, "run: python scripts/settings_reference.py --write"
    unexplained = [variable for variable, _, _, meaning in settings_reference.rows() if not meaning]
    assert unexplained == [], f"give these fields a docstring in contract/settings.py: {unexplained}"


def test_the_contract_examples_validate_against_the_event_schemas() -> None:
    doc = _text(CONTRACT)
    checked = 0
    for topic in Topic:
        part = doc.split(f"### `fcl.{topic.value}`", 1)[1].split("\n### ", 1)[0]
        example = json.loads(part.split("```json\n", 1)[1].split("```", 1)[0])
        schema = json.loads(_text(ROOT / "docs" / "schemas" / f"{topic.value}.schema.json"))
        jsonschema.validate(example, schema)
        checked += 1
    assert checked == len(Topic)
