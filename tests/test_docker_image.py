"""The Dataflow GPU worker image (docker/dataflow-gpu.Dockerfile) pins what the project pins.

No container engine runs here, so the image is not built in CI; its versions are checked.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "docker" / "dataflow-gpu.Dockerfile"


def _pins() -> dict[str, str]:
    text = (REPO / "requirements" / "constraints.txt").read_text()
    return {m[1].lower(): m[2] for m in re.finditer(r"^([A-Za-z0-9_.-]+)==(\S+)", text, re.M)}


def _args() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M):
        found.setdefault(name, []).append(value)
    return found


def test_the_worker_image_has_the_projects_beam_torch_and_python() -> None:
    pins, args = _pins(), _args()
    assert set(args["BEAM_VERSION"]) == {pins["apache-beam"]}
    assert args["TORCH_VERSION"] == [pins["torch"]]
    assert args["TORCHVISION_VERSION"] == [pins["torchvision"]]
    assert args["PYTHON_VERSION"] == [f"{sys.version_info.major}.{sys.version_info.minor}"]
    setup = (REPO / "setup.py").read_text()
    minimum = re.search(r'python_requires=">=(\d+)\.(\d+)"', setup)
    assert minimum is not None
    assert tuple(map(int, args["PYTHON_VERSION"][0].split("."))) >= tuple(
        map(int, minimum.groups())
    )


def test_the_worker_image_starts_beams_boot_program_and_installs_the_package_wheel() -> None:
    text = DOCKERFILE.read_text()
    assert "FROM apache/beam_python${PYTHON_VERSION}_sdk:${BEAM_VERSION}" in text
    assert 'ENTRYPOINT ["/opt/apache/beam/boot"]' in text
    assert "COPY dist/ugains-*.whl" in text
