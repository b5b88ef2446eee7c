"""The packages' arrows run one way (scripts/check_layers.py): the launcher, then the services,
then storage, trainers and messaging, then the shared base; and the checker does catch an arrow
against them, a cycle hidden in a function, SQL outside storage and a status event built
outside the queue."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import check_layers


def test_the_repository_has_no_arrow_against_the_layers() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "check_layers.py")], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert "worker    -> storage" in done.stdout and "no arrow against the layers" in done.stdout
    arrows, violations = check_layers.scan(ROOT)
    assert not violations
    assert {(a.source, a.target) for a in arrows} >= {
        ("fcl", "worker"),
        ("worker", "trainers"),
        ("storage", "contract"),
    }


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name in check_layers.LAYERS:
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text("")
    for path, text in files.items():
        (tmp_path / path).write_text(text)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "found"),
    [
        ({"storage/x.py": "from fcl.web.routes import ENDPOINTS\n"}, "storage (layer 1) imports web.routes (layer 2)"),
        ({"contract/x.py": "def f():\n    import fcl.storage.db\n"}, "contract (layer 0) imports storage.db"),
        ({"worker/x.py": "import fcl.streams.app\n"}, "worker (layer 2) imports streams.app (layer 2)"),
        ({"trainers/x.py": "from fcl.storage.queue import JobQueue\n"}, "trainers (layer 1) imports storage.queue"),
        ({"web/x.py": "from sqlalchemy import text\n"}, "only storage speaks SQL"),
        ({"worker/x.py": "from fcl.contract.events import TrainingStatusEvent\n"}, "built only in storage/queue/"),
        ({"web/x.py": "from fcl.storage.queue import status_event\n"}, "built only in storage/queue/"),
        ({"streams/x.py": "import asyncpg\n"}, "only storage speaks SQL"),
        ({"web/x.py": "from fcl.storage.registry import ChampionRepository\n"}, "use their store (storage.stores)"),
        ({"streams/x.py": "from fcl.storage.queue.transitions import JobQueue\n"}, "use their store (storage.stores)"),
        ({"worker/x.py": "def f():\n    from sqlalchemy.ext.asyncio import AsyncSession\n"}, "only storage speaks SQL"),
        ({"web/x.py": "from fcl.trainers.registry import get_trainer\n"}, "web imports trainers.registry; the API"),
        ({"serving/x.py": "import fcl.storage.db\n"}, "serving imports storage.db; the serving library"),
        ({"web/x.py": "x = 1\n" * 626}, "web/x.py: 626 lines; split it"),
        ({"serving/x.py": "from fcl.web.app import make_app\n"}, "serving (layer 2) imports web.app (layer 2)"),
        ({"web/x.py": "from storage.stores import ApiStore\n"}, "write fcl.storage.stores"),
    ],
)
def test_the_checker_finds_each_kind_of_violation(tmp_path: Path, files: dict[str, str], found: str) -> None:
    root = _tree(tmp_path, files)
    _, violations = check_layers.scan(root)
    assert any(found in v for v in violations), violations
    assert check_layers.main([str(root)]) == 1


def test_the_serving_library_runs_as_python_m_fcl_serving() -> None:
    done = subprocess.run([sys.executable, "-m", "fcl.serving", "--help"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert "Keep a model type's champion loaded" in done.stdout
