"""What can be checked of the Containerfile without a container engine: stages, user, entrypoint, and the wheel."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BUILD_TOOLS = re.compile(r"\b(apt-get install|apk add|gcc|g\+\+|build-essential|make|pip wheel|pip install)\b")


@dataclass
class Stage:
    base: str
    name: str
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]


def parse(text: str) -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, continuation lines joined, comments dropped."""
    logical, pending = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    args: dict[str, str] = {}
    stages: list[Stage] = []
    for line in logical:
        keyword, _, rest = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), flags=re.IGNORECASE)
            assert match, f"unreadable FROM: {line}"
            base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m.group(1), m.group(0)), match.group(1))
            stages.append(Stage(base=base, name=match.group(2) or str(len(stages))))
        elif keyword == "ARG" and not stages:
            name, _, default = rest.partition("=")
            args[name.strip()] = default.strip()
        else:
            stages[-1].instructions.append((keyword, rest.strip()))
    return args, stages


@pytest.fixture(scope="module")
def stages() -> list[Stage]:
    return parse((ROOT / "Containerfile").read_text())[1]


@pytest.fixture(scope="module")
def pyproject() -> dict:  # type: ignore[type-arg]
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_builds_in_one_stage_and_runs_in_another(stages: list[Stage]) -> None:
    assert len(stages) >= 2
    final = stages[-1]
    copies_from = [re.search(r"--from=(\S+)", c) for c in final.all("COPY")]
    sources = {m.group(1) for m in copies_from if m}
    assert sources and sources <= {s.name for s in stages[:-1]}, "the final stage takes only built artefacts"


def test_runs_on_a_slim_python_that_the_project_supports(stages: list[Stage], pyproject: dict) -> None:  # type: ignore[type-arg]
    match = re.search(r"python:(\d+)\.(\d+)-slim", stages[-1].base)
    assert match, f"final base is not a slim Python image: {stages[-1].base}"
    minimum = re.search(r">=\s*(\d+)\.(\d+)", pyproject["project"]["requires-python"])
    assert minimum and (int(match[1]), int(match[2])) >= (int(minimum[1]), int(minimum[2]))


def test_final_stage_runs_as_the_non_root_user_the_deployment_expects(stages: list[Stage]) -> None:
    users = stages[-1].all("USER")
    assert users, "no USER in the final stage: it would run as root"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "a numeric non-root UID lets runAsNonRoot verify it"
    deployment = yaml.safe_load((ROOT / "manifests" / "base" / "deployment.yaml").read_text())
    context = deployment["spec"]["template"]["spec"]["securityContext"]
    # runAsNonRoot makes the kubelet check the image's numeric USER; a runAsUser, if set, must be the same.
    assert context["runAsNonRoot"] is True
    assert context.get("runAsUser", int(uid)) == int(uid)


def test_final_stage_installs_and_compiles_nothing(stages: list[Stage]) -> None:
    runs = " && ".join(stages[-1].all("RUN"))
    assert not BUILD_TOOLS.search(runs), f"build tooling in the final stage: {runs}"
    assert "uninstall" in runs and "pip" in runs, "the base image's pip should not ship"


def test_entrypoint_is_the_console_script(stages: list[Stage], pyproject: dict) -> None:  # type: ignore[type-arg]
    [entrypoint] = stages[-1].all("ENTRYPOINT")
    command = json.loads(entrypoint)  # exec form: signals reach the process (SIGTERM -> graceful stop)
    assert command == ["variant-autoscaler"]
    assert pyproject["project"]["scripts"]["variant-autoscaler"] == "autoscaler.cli:app"
    assert json.loads(stages[-1].all("CMD")[-1]) == ["run"]


def test_build_stage_copies_everything_the_wheel_needs(stages: list[Stage], pyproject: dict) -> None:  # type: ignore[type-arg]
    copied = " ".join(c for s in stages[:-1] for c in s.all("COPY"))
    needed = ["pyproject.toml", pyproject["project"]["readme"], *pyproject["tool"]["setuptools"]["packages"]["find"]
              ["include"]]
    missing = [n for n in needed if n.rstrip("*") not in copied]
    assert not missing, f"not copied into the build stage: {missing}"


def test_the_wheel_it_installs_builds_from_what_the_build_stage_copies(stages: list[Stage], tmp_path: Path) -> None:
    # Only what COPY brings into the build stage, so a file missing there fails here too (and the build
    # leaves nothing in the working tree).
    context = tmp_path / "context"
    for line in stages[0].all("COPY"):
        *sources, destination = line.split()
        target = context / destination.removeprefix("./")
        for source in sources:
            origin = ROOT / source
            if origin.is_dir():
                shutil.copytree(origin, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, target / origin.name)
    # With build isolation, as the image build does: the backend pyproject.toml names is fetched and used.
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--wheel-dir", str(tmp_path), "--quiet"],
        cwd=context, capture_output=True, text=True, timeout=300, check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    [wheel] = list(tmp_path.glob("variant_autoscaler-*.whl"))
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        assert "variant-autoscaler = autoscaler.cli:app" in archive.read(entry_points).decode()
    assert {"autoscaler/cli.py", "autoscaler/controller/runtime.py", "autoscaler/py.typed"} <= set(names)
    # The profiles `run` loads by default: models/profiles copied in by setup.py (the image has no checkout).
    shipped = {n.removeprefix("autoscaler/_models/") for n in names if n.startswith("autoscaler/_models/profiles/")}
    assert shipped == {f"profiles/{p.name}" for p in (ROOT / "models" / "profiles").glob("*.yaml")}


def _deployment_container() -> dict:  # type: ignore[type-arg]
    deployment = yaml.safe_load((ROOT / "manifests" / "base" / "deployment.yaml").read_text())
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    return container  # type: ignore[no-any-return]


def test_the_deployment_runs_the_image_the_documented_build_pushes(pyproject: dict) -> None:  # type: ignore[type-arg]
    image = _deployment_container()["image"]
    assert image.rsplit(":", 1)[1] == pyproject["project"]["version"], "image tag and project version differ"
    docs = (ROOT / "manifests" / "README.md").read_text()
    assert f"build -t {image} -f Containerfile ." in docs and f"push {image}" in docs


def test_the_image_exposes_the_ports_the_deployment_and_runtime_use(stages: list[Stage]) -> None:
    from autoscaler.config import RuntimeSettings

    exposed = {int(p.split("/")[0]) for line in stages[-1].all("EXPOSE") for p in line.split()}
    declared = {p["containerPort"] for p in _deployment_container()["ports"]}
    defaults = RuntimeSettings()
    assert exposed == declared == {defaults.health_port, defaults.metrics_port}


def test_the_non_root_user_is_created_with_the_uid_it_runs_as(stages: list[Stage]) -> None:
    uid, _, gid = stages[-1].all("USER")[-1].partition(":")
    runs = " ".join(stages[-1].all("RUN"))
    assert re.search(rf"useradd\b[^&]*--uid {uid}\b", runs), "USER names a UID no account has"
    assert not gid or re.search(rf"groupadd\b[^&]*--gid {gid}\b", runs)


def test_the_deployment_starts_the_run_command_with_its_config_file() -> None:
    container = _deployment_container()
    args = container["args"]
    assert args[0] == "run"
    config = next(a.split("=", 1)[1] for a in args if a.startswith("--config="))
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert str(Path(config).parent) in mounts
