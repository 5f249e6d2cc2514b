"""What a remote worker gets: the package installed from its wheel, outside the repository.

The wheel the runners stage (``setup.py``) is built and installed into a folder of its own; a
mining run then starts from another working directory with that folder first on the path, on
the multi-process local runner and with the cloudpickle pickler (as on Dataflow), mining with
the world models shipped inside the package (``zoo:``). A module, data file or pickled object
that only the repository provides fails here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CLOUDPICKLE = "--pickle_library=cloudpickle"  # Beam 2.77's default pickler, named explicitly


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(command, capture_output=True, text=True, timeout=420, **kwargs)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


def test_a_run_from_the_installed_wheel_elsewhere_with_cloudpickle(tmp_path: Path) -> None:
    dist, site, work = tmp_path / "dist", tmp_path / "site", tmp_path / "elsewhere"
    # What setup.py packages, copied: building in the repository would leave build/ there.
    source = tmp_path / "source"
    for name in ("setup.py", "README.md"):
        (source / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, source / name)
    for package in ("pipelines", "models", "transforms"):
        shutil.copytree(
            REPO / package, source / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    _run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("ugains-*.whl")
    _run([*pip, "install", "--no-deps", "--no-compile", "--target", str(site), str(wheel)])

    images = work / "log" / "images"
    images.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for index in range(4):
        frame = rng.integers(0, 256, (256, 512, 3), dtype=np.uint8)
        cv2.imwrite(str(images / f"frame_{index:03d}.png"), frame)
    config = yaml.safe_load((REPO / "mining_configs" / "demo.yaml").read_text())
    config["sources"] = [{"kind": "images", "path": "log/images", "log_id": "log"}]
    config["output"]["root"] = "out"  # relative: to the working directory, as users write it
    (work / "mine.yaml").write_text(yaml.safe_dump(config))

    env = {**os.environ, "PYTHONPATH": str(site)}
    where = _run(
        [sys.executable, "-c", "import pipelines, models, transforms; print(pipelines.__file__)"],
        cwd=work,
        env=env,
    )
    assert Path(where.stdout.strip()).is_relative_to(site)  # the installed copy, not the repo

    done = _run(
        [sys.executable, "-m", "pipelines.cli", "mine", "--config", "mine.yaml", CLOUDPICKLE],
        cwd=work,
        env=env,
    )

    assert "frames 4, errors 0" in done.stdout
    (run_dir,) = (work / "out" / "runs").iterdir()
    record = json.loads((run_dir / "run.json").read_text())
    assert record["counts"]["frames"] == 4
    # the frames went through the worker processes, which imported the installed package
    assert "this worker has processed its first frame" in done.stderr
