"""Keeping an export from losing the user's files or leaving junk behind.

- `check_output`: `--force` replaces only a folder that is itself an edgelm model folder, and
  never the source, a folder holding the source, the current directory or the home folder.
- `remove_stale`: an export killed outright (SIGKILL, power loss) cannot clean up after itself;
  its staging and work folders carry its process id, and the next export removes those whose
  process is gone.
- `sigterm_as_interrupt`: SIGTERM (what `kill` and service managers send) unwinds like Ctrl-C,
  so the usual cleanup runs.
- `missing_parents` / `remove_empty`: a failed export removes the parent folders it created.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

from edgelm.errors import EdgelmError
from edgelm.manifest import MANIFEST_NAME

WORK_PREFIX = "edgelm-export-"  # temp folders: edgelm-export-<pid>-<random>
PID_MARKER = "edgelm-staging.pid"  # names the owner of a staging folder whose name has no pid
STAGING = re.compile(r"^\.(?P<name>.+)\.partial-(?:(?P<pid>\d+)-)?[^/]*$")


def check_output(output: Path, source: str | None, force: bool) -> None:
    """Raises EdgelmError unless writing `output` (resolved) can lose nothing the user did not ask to lose."""
    if not output.exists() and not output.is_symlink():
        return
    if not force:
        if output.is_dir() and (output / MANIFEST_NAME).is_file():
            raise EdgelmError(f"{output} already holds an edgelm model; choose another -o folder or pass --force "
                              "to replace it")
        what = "a folder that is no edgelm model folder" if output.is_dir() else "a file"
        raise EdgelmError(f"{output} already exists and is {what}, which edgelm never replaces: choose another "
                          "-o folder")
    if not output.is_dir():
        raise EdgelmError(f"{output} is a file, not an edgelm model folder; --force replaces only model folders: "
                          "choose another -o folder")
    protected = {"the current directory": Path.cwd().resolve(), "your home folder": Path.home().resolve()}
    if source:
        src = Path(source).expanduser()
        if src.exists():
            protected["the export's source"] = src.resolve()
    for what, path in protected.items():
        if output == path or output in path.parents:
            relation = "is" if output == path else "holds"
            raise EdgelmError(f"{output} {relation} {what}; --force will not replace it: choose another -o folder")
    if not (output / MANIFEST_NAME).is_file():
        raise EdgelmError(
            f"{output} exists and is not an edgelm model folder (no {MANIFEST_NAME}); --force replaces only "
            "model folders, so your files stay: choose another -o folder or remove it yourself"
        )


def missing_parents(path: Path) -> list[Path]:
    """The ancestors of `path` that do not exist yet, deepest first."""
    missing = []
    for parent in path.parents:
        if parent.exists():
            break
        missing.append(parent)
    return missing


def remove_empty(folders: list[Path]) -> None:
    """Removes each folder (deepest first) if it is empty; stops at the first that is not."""
    for folder in folders:
        try:
            folder.rmdir()
        except OSError:
            return


def make_staging(output: Path) -> Path:
    """An empty hidden folder beside `output`, named (and marked) with this process's id."""
    try:
        return Path(tempfile.mkdtemp(prefix=f".{output.name}.partial-{os.getpid()}-", dir=output.parent))
    except OSError as exc:
        raise EdgelmError(f"cannot write into {output.parent} ({exc.strerror or exc}); choose another -o folder") \
            from None


@contextmanager
def work_folder():
    """A temporary work folder named with this process's id, removed on exit (like TemporaryDirectory)."""
    remove_stale_work(Path(tempfile.gettempdir()))
    try:
        path = Path(tempfile.mkdtemp(prefix=f"{WORK_PREFIX}{os.getpid()}-"))
    except OSError as exc:
        raise EdgelmError(f"cannot create a temporary folder ({exc.strerror or exc}); set TMPDIR to a writable "
                          "folder with a few GB free") from None
    try:
        yield str(path)
    finally:
        shutil.rmtree(path, ignore_errors=True)


def remove_stale(output: Path) -> None:
    """Removes staging folders of `output` left by exports whose process is gone."""
    try:
        entries = list(output.parent.iterdir())
    except OSError:
        return
    for entry in entries:
        match = STAGING.match(entry.name)
        if not match or match.group("name") != output.name or not entry.is_dir() or entry.is_symlink():
            continue
        pid = match.group("pid") or _read_pid(entry / PID_MARKER)
        if pid is not None and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


def remove_stale_work(temp_root: Path) -> None:
    """Removes `edgelm-export-<pid>-*` temp folders whose process is gone."""
    try:
        entries = list(temp_root.glob(f"{WORK_PREFIX}*-*"))
    except OSError:
        return
    for entry in entries:
        pid = entry.name[len(WORK_PREFIX):].split("-", 1)[0]
        if pid.isdigit() and entry.is_dir() and not entry.is_symlink() and not _alive(int(pid)):
            shutil.rmtree(entry, ignore_errors=True)


@contextmanager
def sigterm_as_interrupt():
    """Within the block, SIGTERM raises KeyboardInterrupt (main thread only; the old handler comes back)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt("terminated (SIGTERM)")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _read_pid(marker: Path) -> str | None:
    try:
        text = marker.read_text().strip()
    except OSError:
        return None
    return text if text.isdigit() else None


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True
