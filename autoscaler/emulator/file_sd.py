"""Prometheus file-based service discovery: the list of scrape targets, written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["write_targets"]


def write_targets(path: Path, targets: Sequence[tuple[str, Mapping[str, str]]]) -> None:
    """Write ``[{"targets": [address], "labels": {...}}, ...]`` to ``path`` by temp file and rename.

    Prometheus watches the file; the rename means it never reads a half-written list.
    """
    groups = [{"targets": [address], "labels": dict(labels)} for address, labels in targets]
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(groups, f, indent=1, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
