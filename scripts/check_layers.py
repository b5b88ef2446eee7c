"""List the imports between fcl's top-level packages and fail on any arrow against the layers.

    launcher    fcl        (its own modules: cli, stack, demo, ...)
    services    streams   worker   web   serving   (never import each other)
    middle      storage   trainers   messaging  (never import each other)
    base        contract                         (imports none of them)

Every package is imported as `fcl.<package>` (`fcl/<package>` links to the folder at the top; the
wheel has only those names); a bare `import storage` is a violation. A package may import only
packages of lower layers. Every import counts, including the ones
inside functions, so a cycle cannot hide there. Ownership rules are checked as well: a
`training-status` event is built only in `storage/queue/`; only `storage/` speaks SQL (no other
package imports sqlalchemy, asyncpg or alembic); `web` loads no model (imports no `trainers`); the
serving library that FinCoach's servers embed never touches the database (imports no `storage`);
no production module is over MAX_MODULE_LINES lines (about 600).

    python scripts/check_layers.py [ROOT]     # prints the arrows; exit 1 with the violations
"""

from __future__ import annotations

import ast
import os
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

LAYERS: dict[str, int] = {
    "contract": 0,
    "storage": 1,
    "trainers": 1,
    "messaging": 1,
    "streams": 2,
    "worker": 2,
    "web": 2,
    "serving": 2,
    "fcl": 3,
}
# Who may build a training-status event, and who may speak SQL.
STATUS_EVENT_OWNER = "storage/queue/"  # the package
STATUS_EVENT_NAMES = {"TrainingStatusEvent", "status_event"}
SQL_MODULES = {"sqlalchemy", "asyncpg", "alembic"}
SQL_PACKAGES = {"storage"}
# The services reach the tables' owners (storage.queue, .registry, .datasets, .jobs) only through
# their store in storage.stores, whose every method is one transaction.
SERVICES = {"web", "streams", "worker"}
STORAGE_OWNERS = {"storage.queue", "storage.registry", "storage.datasets", "storage.jobs", "storage.live"}
# A module a newcomer can read: production modules stay about 600 lines (migrations are history).
MAX_MODULE_LINES = 625
# Arrows the layers allow but ownership does not: (importer, imported) and why.
FORBIDDEN: dict[tuple[str, str], str] = {
    ("web", "trainers"): "the API serves bytes and records; it never loads a model",
    ("serving", "storage"): "the serving library talks to fcl's HTTP API, never to its database",
}


@dataclass(frozen=True)
class Arrow:
    source: str  # the importing package
    target: str  # the imported package
    where: str  # file:line


def _imports(tree: ast.AST) -> Iterator[tuple[str, int]]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module, node.lineno


def _sources(folder: Path) -> list[Path]:
    """The package's own .py files (not through fcl/'s links to the other packages)."""
    found = []
    for here, dirs, files in os.walk(folder, followlinks=False):
        dirs[:] = [d for d in dirs if not (Path(here) / d).is_symlink()]
        found += [Path(here) / f for f in files if f.endswith(".py")]
    return sorted(found)


def normalize(module: str) -> tuple[str, bool]:
    """`fcl.storage.db` -> (`storage.db`, True): the package-relative name, and whether it was
    imported through `fcl.` as it must be (installed, the packages exist only under fcl)."""
    parts = module.split(".")
    if parts[0] == "fcl" and len(parts) > 1 and parts[1] in LAYERS:
        return ".".join(parts[1:]), True
    return module, parts[0] == "fcl"


def scan(root: Path) -> tuple[list[Arrow], list[str]]:
    """The arrows between packages, and the violations of the layers and ownership rules."""
    arrows: list[Arrow] = []
    violations: list[str] = []
    for package in LAYERS:
        for path in _sources(root / package):
            rel = path.relative_to(root).as_posix()
            source = path.read_text(encoding="utf-8")
            tree = ast.parse(source, filename=rel)
            lines = source.count("\n")
            if lines > MAX_MODULE_LINES and "/migrations/" not in rel:
                violations.append(f"{rel}: {lines} lines; split it by what it owns (at most {MAX_MODULE_LINES})")
            for imported, line in _imports(tree):
                module, through_fcl = normalize(imported)
                top = module.split(".")[0]
                where = f"{rel}:{line}"
                if top in LAYERS and top != "fcl" and not through_fcl:
                    violations.append(f"{where}: imports {imported}; write fcl.{imported} (installed, only it exists)")
                if top in LAYERS and top != package:
                    arrows.append(Arrow(package, top, where))
                    if LAYERS[top] >= LAYERS[package]:
                        violations.append(
                            f"{where}: {package} (layer {LAYERS[package]}) imports {module} (layer {LAYERS[top]})"
                        )
                if package in SERVICES and ".".join(module.split(".")[:2]) in STORAGE_OWNERS:
                    violations.append(f"{where}: {package} imports {module}; services use their store (storage.stores)")
                if (package, top) in FORBIDDEN:
                    violations.append(f"{where}: {package} imports {module}; {FORBIDDEN[package, top]}")
                if top in SQL_MODULES and package not in SQL_PACKAGES:
                    violations.append(f"{where}: {package} imports {module}; only storage speaks SQL")
                if (
                    package != "contract"
                    and not rel.startswith(STATUS_EVENT_OWNER)
                    and module.startswith(("contract", "storage"))
                ):
                    names = {
                        a.name
                        for node in ast.walk(tree)
                        if isinstance(node, ast.ImportFrom) and node.module == imported and node.lineno == line
                        for a in node.names
                    }
                    for name in sorted(names & STATUS_EVENT_NAMES):
                        violations.append(
                            f"{where}: imports {name}; a training-status event is built only in {STATUS_EVENT_OWNER}"
                        )
    return arrows, violations


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    root = Path(args[0]) if args else Path(__file__).resolve().parent.parent
    arrows, violations = scan(root)
    counts = Counter((a.source, a.target) for a in arrows)
    order = sorted(counts, key=lambda pair: (-LAYERS[pair[0]], pair[0], LAYERS[pair[1]], pair[1]))
    print("imports between packages (importer -> imported: how many):")
    for source, target in order:
        print(f"  {source:9} -> {target:9} {counts[source, target]:4}")
    if violations:
        print(f"{len(violations)} violation(s):", file=sys.stderr)
        for v in violations:
            print(f"  {v}", file=sys.stderr)
        return 1
    print(
        "no arrow against the layers: "
        + "  >  ".join(
            " ".join(sorted(p for p, layer in LAYERS.items() if layer == n))
            for n in sorted(set(LAYERS.values()), reverse=True)
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
