"""The kube-apiserver, etcd and kube-controller-manager binaries: found where they are, built when they are not.

Lookup, per binary, first hit wins:

1. ``$KUBEBUILDER_ASSETS`` (the setup-envtest layout: kube-apiserver, etcd, kubectl in one directory; it has no
   kube-controller-manager, which is then taken from the cache or built);
2. the cache, ``${XDG_CACHE_HOME:-~/.cache}/variant-autoscaler/k8s-<K8S_VERSION>/``;
3. a build from source with the Go toolchain, into the cache.

Why a wrapper module: ``go install k8s.io/kubernetes/cmd/kube-apiserver@v1.36.3`` is refused because the
kubernetes module points its staging modules (k8s.io/api, k8s.io/client-go, ...) at ``./staging`` with
``replace`` directives. A throwaway main module that requires k8s.io/kubernetes and replaces each staging
module with its published ``v0.X.Y`` tag builds the same sources.

Run ``python -m autoscaler.localstack.assets`` to build (with progress on stderr) and print the paths.
"""

from __future__ import annotations

import collections
import contextlib
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from autoscaler import errors

__all__ = [
    "ETCD_VERSION",
    "K8S_VERSION",
    "KubeAssets",
    "cache_dir",
    "ensure_assets",
    "locate_assets",
]

K8S_VERSION = "v1.36.3"
# The go.etcd.io/etcd/server/v3 version required by k8s.io/kubernetes v1.36.3's go.mod, i.e. the etcd that
# this apiserver is built and tested against.
ETCD_VERSION = "v3.6.8"

KUBE_APISERVER = "kube-apiserver"
ETCD = "etcd"
KUBE_CONTROLLER_MANAGER = "kube-controller-manager"

_KUBERNETES_MODULE = "k8s.io/kubernetes"
_ETCD_MODULE = "go.etcd.io/etcd/server/v3"
# Scratch build directories sit next to the cache (same filesystem, so the final rename is atomic).
_SCRATCH_PREFIX = f".build-k8s-{K8S_VERSION}-"
# Lines of go output kept for an error message.
_TAIL_LINES = 40

Progress = Callable[[str], None]


@dataclass(frozen=True)
class KubeAssets:
    """Paths of the control-plane binaries; ``kube_controller_manager`` is None when it was not asked for
    and is not at hand."""

    kube_apiserver: Path
    etcd: Path
    kube_controller_manager: Path | None


def cache_dir() -> Path:
    """Where built binaries are kept, one directory per Kubernetes version."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "variant-autoscaler" / f"k8s-{K8S_VERSION}"


def locate_assets(*, controller_manager: bool = True) -> KubeAssets | None:
    """The binaries already on disk, or None when one that is needed is missing. Never builds."""
    apiserver, etcd, manager = (_find(name) for name in (KUBE_APISERVER, ETCD, KUBE_CONTROLLER_MANAGER))
    if apiserver is None or etcd is None or (controller_manager and manager is None):
        return None
    return KubeAssets(kube_apiserver=apiserver, etcd=etcd, kube_controller_manager=manager)


def ensure_assets(
    *, controller_manager: bool = True, progress: Progress | None = None, go_output: Progress | None = None
) -> KubeAssets:
    """The binaries, built into the cache first when missing (minutes when the Go build cache is cold).

    ``progress`` gets a line per step (building, built, waiting for another build's lock); ``go_output``
    gets every line go prints, including each package compiled.

    Raises ``StackError`` when there is no Go toolchain or the build fails, with the tail of go's output.
    """
    found = locate_assets(controller_manager=controller_manager)
    if found is not None:
        return found
    say = progress or _quiet
    echo = go_output or _quiet
    target = cache_dir()
    target.parent.mkdir(parents=True, exist_ok=True)
    with _build_lock(target.parent / f"{target.name}.lock", say):
        for stale in target.parent.glob(_SCRATCH_PREFIX + "*"):  # left by a build that was killed
            shutil.rmtree(stale, ignore_errors=True)
        # Another process may have built them while we waited for the lock.
        need_kubernetes = _find(KUBE_APISERVER) is None or (
            controller_manager and _find(KUBE_CONTROLLER_MANAGER) is None
        )
        need_etcd = _find(ETCD) is None
        go = _go_binary()
        if need_kubernetes:
            _build_into_cache(
                go=go,
                target=target,
                binaries=(KUBE_APISERVER, KUBE_CONTROLLER_MANAGER),
                build=_build_kubernetes,
                say=say,
                echo=echo,
            )
        if need_etcd:
            _build_into_cache(go=go, target=target, binaries=(ETCD,), build=_build_etcd, say=say, echo=echo)
    found = locate_assets(controller_manager=controller_manager)
    if found is None:
        raise errors.StackError(f"built the Kubernetes binaries but cannot find them in {target}")
    return found


def _find(name: str) -> Path | None:
    dirs = [os.environ.get("KUBEBUILDER_ASSETS", ""), str(cache_dir())]
    for directory in filter(None, dirs):
        candidate = Path(directory) / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


@contextlib.contextmanager
def _build_lock(path: Path, say: Progress) -> Iterator[None]:
    """An exclusive flock so that two processes (pytest workers, make) do not build at once."""
    with path.open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another build of the Kubernetes binaries (lock {path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


BuildStep = Callable[..., None]


def _build_into_cache(
    *, go: str, target: Path, binaries: Sequence[str], build: BuildStep, say: Progress, echo: Progress
) -> None:
    """Build into a scratch directory next to the cache, then rename each binary in: a binary in the cache
    is always complete."""
    started = time.monotonic()
    say(f"building {', '.join(binaries)} with {go} (a cold build takes several minutes)")
    scratch = Path(tempfile.mkdtemp(prefix=_SCRATCH_PREFIX, dir=target.parent))
    try:
        build(go=go, out=scratch / "bin", echo=echo)
        target.mkdir(parents=True, exist_ok=True)
        for name in binaries:
            os.replace(scratch / "bin" / name, target / name)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    say(f"built {', '.join(binaries)} in {time.monotonic() - started:.0f}s into {target}")


def _build_kubernetes(*, go: str, out: Path, echo: Progress) -> None:
    gomod = _module_gomod(go=go, module=f"{_KUBERNETES_MODULE}@{K8S_VERSION}")
    staging_version = "v0." + K8S_VERSION.removeprefix("v1.")
    staging = re.findall(r"^\s*(k8s\.io/\S+)\s+=>\s+\./staging/\S+\s*$", gomod, re.MULTILINE)
    if not staging:
        raise errors.StackError(f"found no staging replace directives in {_KUBERNETES_MODULE}'s go.mod")
    replaces = "".join(f"\t{module} => {module} {staging_version}\n" for module in staging)
    commands = ("kube-apiserver", "kube-controller-manager")
    major, minor = K8S_VERSION.removeprefix("v").split(".")[:2]
    # What the release scripts (hack/lib/version.sh) stamp in; otherwise /version reports v0.0.0-master.
    stamps = {"gitVersion": K8S_VERSION, "gitMajor": major, "gitMinor": minor, "gitTreeState": "clean"}
    ldflags = " ".join(
        f"-X {package}.{key}={value}"
        for package in ("k8s.io/client-go/pkg/version", "k8s.io/component-base/version")
        for key, value in stamps.items()
    )
    _build_wrapper(
        go=go,
        gomod=(
            f"module variant-autoscaler.local/kubebins\n\ngo {_go_directive(gomod)}\n\n"
            f"require {_KUBERNETES_MODULE} {K8S_VERSION}\n\nreplace (\n{replaces})\n"
        ),
        packages=[f"{_KUBERNETES_MODULE}/cmd/{command}" for command in commands],
        build_flags=[f"-ldflags={ldflags}"],
        output=str(out) + "/",
        echo=echo,
    )


def _build_etcd(*, go: str, out: Path, echo: Progress) -> None:
    gomod = _module_gomod(go=go, module=f"{_ETCD_MODULE}@{ETCD_VERSION}")
    _build_wrapper(
        go=go,
        gomod=(
            f"module variant-autoscaler.local/etcdbin\n\ngo {_go_directive(gomod)}\n\n"
            f"require {_ETCD_MODULE} {ETCD_VERSION}\n"
        ),
        # The module's root package is etcd's main.
        packages=[_ETCD_MODULE],
        build_flags=[],
        output=str(out / ETCD),
        echo=echo,
    )


def _build_wrapper(
    *, go: str, gomod: str, packages: Sequence[str], build_flags: Sequence[str], output: str, echo: Progress
) -> None:
    with tempfile.TemporaryDirectory(prefix="vas-gowrap-") as work:
        Path(work, "go.mod").write_text(gomod)
        # Blank imports of the main packages make `go mod tidy` record their dependencies; the build tag keeps
        # the file out of every build (a main package cannot be imported).
        imports = "".join(f'\t_ "{package}"\n' for package in packages)
        Path(work, "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports})\n")
        _run_go(go, ["mod", "tidy"], cwd=work, echo=echo)
        verbose = [] if echo is _quiet else ["-v"]
        # No -trimpath: it changes the build-cache keys, and sharing the cache with other builds of these
        # versions (make setup, earlier runs) turns a ten-minute build into a link step.
        _run_go(go, ["build", *verbose, *build_flags, "-o", output, *packages], cwd=work, echo=echo)


def _module_gomod(*, go: str, module: str) -> str:
    with tempfile.TemporaryDirectory(prefix="vas-gomod-") as work:
        output = _run_go(go, ["mod", "download", "-json", module], cwd=work, echo=_quiet)
    try:
        info = json.loads(output)
        return Path(info["GoMod"]).read_text()
    except (ValueError, KeyError, OSError) as exc:
        raise errors.StackError(f"cannot read go.mod of {module}: {output[-2000:]}") from exc


def _go_directive(gomod: str) -> str:
    match = re.search(r"^go\s+(\S+)\s*$", gomod, re.MULTILINE)
    return match.group(1) if match else "1.24"


def _quiet(_line: str) -> None:
    pass


def _run_go(go: str, args: Sequence[str], *, cwd: str, echo: Progress) -> str:
    """Run go, streaming its output to ``echo``; the whole output is returned, its tail goes into errors."""
    env = {**os.environ, "CGO_ENABLED": "0", "GOWORK": "off"}
    lines: list[str] = []
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    try:
        proc = subprocess.Popen(
            [go, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
    except OSError as exc:
        raise errors.StackError(f"cannot run {go}: {exc}") from exc
    with proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            tail.append(line.rstrip())
            echo(line.rstrip())
    if proc.returncode != 0:
        shown = "\n".join(tail)
        raise errors.StackError(f"`go {' '.join(args)}` failed with exit code {proc.returncode}:\n{shown}")
    return "".join(lines)


def _go_binary() -> str:
    # /usr/local/go is where the official tarball installs; `make` may run without it on PATH.
    found = shutil.which("go") or shutil.which("go", path="/usr/local/go/bin")
    if found is None:
        raise errors.StackError(
            "Go toolchain not found (needed to build kube-apiserver/etcd); install Go or set"
            " KUBEBUILDER_ASSETS to a directory holding kube-apiserver and etcd"
        )
    return found


def _main() -> int:
    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    try:
        assets = ensure_assets(progress=say, go_output=say)
    except errors.StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{KUBE_APISERVER}: {assets.kube_apiserver}")
    print(f"{ETCD}: {assets.etcd}")
    print(f"{KUBE_CONTROLLER_MANAGER}: {assets.kube_controller_manager}")
    return 0


if __name__ == "__main__":
    sys.exit(_main())
