"""Installing fcl claims no generic import name: the repository is installed (not editable, from a
copy of its files) with the `serving` extra into a fresh virtual environment, beside a stub
FinCoach application that has its own `web` and `storage` packages. Both import: the application
gets its own packages, fcl is under `fcl.` only, the serving library and a scikit-learn trainer
load, torch is not installed, and `fcl streams` without the service extra says in one line what
to install."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT

PACKAGES = ("contract", "storage", "trainers", "messaging", "streams", "worker", "web", "serving", "fcl")
UV = ROOT / ".venv" / "bin" / "uv"

APP = """
import importlib.metadata
import importlib.util
import json

import storage
import web

import fcl
from fcl.serving import ChampionWatcher
from fcl.trainers.goal import GoalTrainer

assert web.OWNER == storage.OWNER == "the application", (web.__file__, storage.__file__)
files = [str(f) for f in importlib.metadata.files("fcl")]
tops = sorted({f.split("/")[0] for f in files if not f.startswith(("fcl-", "../"))})
print(json.dumps({
    "tops": tops,
    "fcl": fcl.__file__,
    "torch": importlib.util.find_spec("torch") is not None,
    "watcher": ChampionWatcher.__module__,
    "trainer": GoalTrainer.model_type,
}))
"""


def _source_copy(target: Path) -> Path:
    """The files a wheel is built from (a build writes into its source folder: not the checkout's)."""
    for name in PACKAGES:
        shutil.copytree(ROOT / name, target / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, target / name)
    return target


def _install(venv: Path, requirement: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHONPATH"))}
    if UV.exists():
        subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(venv)], check=True, env=env)
        base = [str(UV), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), requirement]
        # the wheels are in uv's cache from the bootstrap; the network only when one is missing
        done = subprocess.run([*base, "--offline"], capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            done = subprocess.run(base, capture_output=True, text=True, env=env, check=False)
    else:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
        done = subprocess.run(
            [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", requirement],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_serving_side_installs_beside_an_application_with_its_own_web_and_storage(tmp_path: Path) -> None:
    source = _source_copy(tmp_path / "src")
    venv = tmp_path / "venv"
    _install(venv, f"fcl[serving] @ {source.as_uri()}")
    app = tmp_path / "app"
    for name in ("web", "storage"):
        (app / name).mkdir(parents=True)
        (app / name / "__init__.py").write_text('OWNER = "the application"\n')
    (app / "main.py").write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FCL_", "PYTHONPATH"))}
    ran = subprocess.run(
        [str(venv / "bin" / "python"), "main.py"], cwd=app, capture_output=True, text=True, env=env, check=False
    )
    assert ran.returncode == 0, ran.stderr
    seen = json.loads(ran.stdout)
    assert seen["tops"] == ["fcl"], seen  # nothing else on the import path
    assert seen["fcl"].startswith(str(venv)) and not seen["torch"]
    assert (seen["watcher"], seen["trainer"]) == ("fcl.serving.watcher", "goal")
    # the service processes need the service extra: one line that says so
    refused = subprocess.run(
        [str(venv / "bin" / "fcl"), "streams"], cwd=app, capture_output=True, text=True, env=env, check=False
    )
    assert refused.returncode == 2, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "'service' extra" in line and "pip install 'fcl[service]'" in line, line
