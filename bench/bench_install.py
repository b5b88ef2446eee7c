"""What each kind of fcl user installs: a fresh virtual environment per role, fcl installed into it
(not editable, from a copy of the repository's files) with the role's extras, and its size on
disk. A producer installs fcl alone; a FinCoach server that serves the scikit-learn models adds
`serving`; one that serves every model adds `serving,torch`; a deployment (trainer, streams, web)
installs `all`.

    python bench/bench_install.py [--roles producer,serving,all]

Prints one line per role: the extras, the venv's size in MiB (files counted once, hard links
included: uv links files from its cache), the number of distributions, and whether torch is in."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("contract", "storage", "trainers", "messaging", "streams", "worker", "web", "serving", "fcl")
ROLES = {"producer": "", "serving": "serving", "serving+torch": "serving,torch", "all": "all"}
UV = ROOT / ".venv" / "bin" / "uv"


def size_on_disk(folder: Path) -> int:
    """Bytes of the files under `folder`, each inode once."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for here, _, files in os.walk(folder):
        for name in files:
            st = os.lstat(os.path.join(here, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--roles", default=",".join(ROLES), help=f"some of {', '.join(ROLES)}")
    args = parser.parse_args()
    if not UV.exists():
        print("needs .venv/bin/uv (make bootstrap installs it)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="fcl-install-") as tmp:
        source = Path(tmp) / "src"
        for name in PACKAGES:
            shutil.copytree(ROOT / name, source / name, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"))
        for name in ("pyproject.toml", "README.md"):
            shutil.copy(ROOT / name, source / name)
        print(f"{'role':<14} {'extras':<14} {'MiB':>8} {'dists':>6}  torch  install s")
        for role in args.roles.split(","):
            extras = ROLES[role]
            venv = Path(tmp) / role
            subprocess.run([str(UV), "venv", "-q", "--python", sys.executable, str(venv)], check=True)
            requirement = f"fcl[{extras}] @ {source.as_uri()}" if extras else f"fcl @ {source.as_uri()}"
            started = time.perf_counter()
            base = [str(UV), "pip", "install", "-q", "--python", str(venv / "bin" / "python"), requirement]
            if subprocess.run([*base, "--offline"], capture_output=True, check=False).returncode != 0:
                subprocess.run(base, check=True)
            seconds = time.perf_counter() - started
            listed = subprocess.run(
                [str(UV), "pip", "list", "--python", str(venv / "bin" / "python"), "--format", "freeze"],
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()
            torch = any(line.startswith("torch==") for line in listed)
            mib = size_on_disk(venv) / 2**20
            print(
                f"{role:<14} {extras or '-':<14} {mib:8.0f} {len(listed):6d}  {'yes' if torch else 'no':<5}  {seconds:8.1f}"
            )
            shutil.rmtree(venv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
