"""Installed versions of the packages that made a model folder or a benchmark, for the record."""

from __future__ import annotations

import re
from importlib import metadata


def package_versions(names: tuple[str, ...]) -> dict[str, str]:
    """{name: version} for each installed package of `names`; missing ones are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return versions


def release(version: str) -> tuple[int, ...]:
    """(1, 32, 0) of '1.32.0' or '1.32.0.dev20260101'; () when it does not start with a number."""
    return tuple(int(part) for part in re.findall(r"\d+", version.split("+")[0])[:3])
