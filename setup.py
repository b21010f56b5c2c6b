"""Build step that ships the performance profiles inside the wheel (everything else is in pyproject.toml).

``models/`` at the root of the repository stays the one home of the profiles (operators and the docs edit them
there); the wheel gets a copy under ``autoscaler/_models/`` so that an installed package, the container image
included, finds them without a checkout. :func:`autoscaler.perf.profiles.default_models_dir` looks in the
checkout first, then in that copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

MODELS = Path(__file__).resolve().parent / "models"
SHIPPED = ("profiles",)  # the data the controller reads


class BuildWithModels(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "autoscaler" / "_models"
        for name in SHIPPED:
            source = MODELS / name
            if not source.is_dir():
                raise SystemExit(f"{source}: missing; the wheel must carry the performance profiles")
            shutil.copytree(source, target / name, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        shutil.copy2(MODELS / "README.md", target / "README.md")


setup(cmdclass={"build_py": BuildWithModels})
