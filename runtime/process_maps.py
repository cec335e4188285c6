"""This process's memory mappings as Linux lists them in /proc/self/maps (empty elsewhere)."""

from __future__ import annotations

from typing import NamedTuple


class Mapping(NamedTuple):
    start: int
    end: int
    perms: str  # "rw-p": read, write, execute, private (p) or shared (s)
    path: str  # the mapped file, "[heap]" and the like, or "" for anonymous memory


def process_mappings() -> list[Mapping]:
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.readlines()
    except OSError:
        return []
    found = []
    for line in lines:
        fields = line.rstrip("\n").split(maxsplit=5)  # address perms offset device inode [path, spaces and all]
        if len(fields) < 5:
            continue
        start, end = fields[0].split("-")
        found.append(Mapping(int(start, 16), int(end, 16), fields[1], fields[5] if len(fields) == 6 else ""))
    return found
