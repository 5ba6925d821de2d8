"""Local mode's state folder: claimed only when it is embedops' own, written so a crash cannot corrupt it.

`--state-dir` is whatever path a user typed, `.` and `~` included, so nothing here deletes or
overwrites what embedops did not make:
- a folder becomes a state folder when embedops creates it (or finds it empty) and writes the
  marker file MARKER into it; a non-empty folder without the marker is refused;
- `--fresh` removes only the entries embedops makes in a marked folder (the embedded server's
  data and the `<namespace>/<plural>/` folders of the resources), leaving anything else there;
- a state file is written to a temporary file in the same folder, synced, then renamed over the
  old one, so a kill, a power loss or a full disk leaves the old file or the new one, never half;
  a file that does not parse anyway (edited by hand, an older disk) is named with how to recover;
- folders are 0700 and files 0600: the state holds prepared data, models and database files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

MARKER = ".embedops-state"
LOCK = ".lock"
DATABASE = "postgres"  # the embedded server's data folder (or, as root, a link to it: store/embedded.py)
_MARKER_TEXT = "This folder is embedops' local state (`embedops run --state-dir`); `embedops run --fresh` empties it.\n"


class StateError(RuntimeError):
    """The state folder cannot be used as it is; the message says what to do."""


def claim(folder: Path) -> None:
    """Make `folder` embedops' state folder, or StateError when it is something else's."""
    if folder.exists() and not folder.is_dir():
        raise StateError(f"--state-dir {folder} is a file, not a folder: give a folder (it is created if missing)")
    if not folder.exists():
        make_dirs(folder)
    elif not (folder / MARKER).is_file():
        if _earlier_state(folder):
            log.info("%s: a state folder of an earlier embedops, adopted", folder)
        elif any(folder.iterdir()):
            raise StateError(
                f"--state-dir {folder} is not an embedops state folder (it is not empty and has no {MARKER}): "
                f"give a new or empty folder (a state folder of an earlier embedops: create an empty {MARKER} in it)"
            )
        log.info("%s: empty, adopted as the state folder", folder)
    folder.chmod(0o700)
    if not (folder / MARKER).is_file():
        write_text(folder / MARKER, _MARKER_TEXT)


def _earlier_state(folder: Path) -> bool:
    """A state folder an earlier embedops made (before the marker): its lock file, and nothing but the
    embedded server's data and `<namespace>/<plural>/` folders beside it."""
    from embedops.api.kinds import KINDS

    plurals = {k.plural for k in KINDS.values()}
    entries = [e for e in folder.iterdir() if e.name != LOCK]
    if not (folder / LOCK).is_file() or not entries:
        return False
    return all(
        (e.name == DATABASE and e.is_dir())
        or (e.is_dir() and not e.is_symlink() and all(c.name in plurals and c.is_dir() for c in e.iterdir()))
        for e in entries
    )


def forget(folder: Path, plurals: Iterable[str]) -> None:
    """Remove what embedops made in a marked state folder (`--fresh`); anything else stays."""
    if not (folder / MARKER).is_file():
        raise StateError(f"{folder} has no {MARKER}: embedops removes nothing from a folder it did not make")
    from embedops.store import embedded

    embedded.remove(folder / DATABASE)
    plurals = set(plurals)
    for namespace in (entry for entry in folder.iterdir() if entry.is_dir() and not entry.is_symlink()):
        for kind_folder in (namespace / plural for plural in plurals):
            if kind_folder.is_dir() and not kind_folder.is_symlink():
                shutil.rmtree(kind_folder)
        if not any(namespace.iterdir()):
            namespace.rmdir()
    left = sorted(entry.name for entry in folder.iterdir() if entry.name not in {MARKER, LOCK})
    if left:
        log.warning("%s: left alone, as embedops did not make them: %s", folder, ", ".join(left))


def make_dirs(folder: Path) -> None:
    """mkdir -p with 0700 for each folder made (pathlib gives the parents the umask's mode)."""
    missing = [p for p in (folder, *folder.parents) if not p.exists()]
    for path in reversed(missing):
        path.mkdir(mode=0o700, exist_ok=True)


def read_json(path: Path) -> dict[str, Any] | None:
    """A state file's object, None when there is none, StateError (naming the file) when it is corrupt."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    try:
        body = json.loads(data.decode("utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError
        raise StateError(_corrupt(path, str(err))) from None
    if not isinstance(body, dict):
        raise StateError(_corrupt(path, "not a JSON object"))
    return body


def _corrupt(path: Path, why: str) -> str:
    return (
        f"{path}: a corrupt state file ({why}): delete that file to forget that resource's state "
        "(the next run starts it over), or run with --fresh to forget all of it"
    )


def write_json(path: Path, body: dict[str, Any]) -> None:
    write_text(path, json.dumps(body, indent=2, sort_keys=True) + "\n")


def write_text(path: Path, text: str) -> None:
    """Replace `path` atomically: a temporary file beside it (0600), synced, renamed over it, the folder synced."""
    make_dirs(path.parent)
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable (without it a power loss can bring the old name back)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
