"""Output files: written atomically, checked before any work, and taken back when a run fails.

``atomic_target(path)`` gives a temporary name in the destination's own folder and moves it onto
``path`` with one ``os.replace`` only when the block ends normally, so a reader never sees half a
file. A symbolic link is followed (the file it names is replaced, the link stays); a device, FIFO
or socket (``/dev/null``, ``/dev/stdout`` on a pipe) is written in place instead, from a temporary
file in the system's temporary folder, since replacing it would put a regular file in its place.
``Outputs`` holds what one run of the ``rif`` command writes: every output folder and file is
checked (creatable, writable, not overwriting an earlier run's files unless forced) before the
work starts, and ``discard()`` removes what the run created if it does not finish.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import stat
import tempfile
import threading
from pathlib import Path
from typing import Iterator, Sequence

__all__ = ["OutputError", "Outputs", "atomic_target", "write_text"]

# Ctrl-C while a worker thread writes: Outputs.abandon() takes this lock, removes the temporaries
# and stops every later atomic_target of the process, so that nothing appears after its cleanup.
_commit_lock = threading.Lock()
_temporaries: set[Path] = set()
_stopped = False


class OutputError(Exception):
    """An output that cannot or must not be written, said in one line."""


# --------------------------------------------------------------------------------------------
# one file
# --------------------------------------------------------------------------------------------


def _temporary_name(path: Path) -> Path:
    """A fresh hidden name beside ``path`` (same folder, hence same file system for os.replace);
    for a special file, in the system's temporary folder (a device's folder may not be ours)."""
    return _temporary_folder(path) / f".{path.name}.{secrets.token_hex(4)}.tmp"


def _temporary_folder(path: Path) -> Path:
    return Path(tempfile.gettempdir()) if _special(path) else path.parent


def _special(path: Path) -> bool:
    """Whether ``path`` (links followed) is an existing device, FIFO or socket."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def _commit(tmp: Path, path: Path) -> None:
    """Put the written ``tmp`` at ``path``: one os.replace, or copied into a special file."""
    if not _special(path):
        os.replace(tmp, path)
        return
    with open(tmp, "rb") as src, open(path, "wb") as dst:
        shutil.copyfileobj(src, dst)
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_target(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces ``path`` in one step.

    The temporary file is created empty (exclusively, with the usual permissions), so writers may
    open it again by name. On any exception, KeyboardInterrupt included, it is removed and
    ``path`` is left as it was.
    """
    path = Path(path)
    if not _special(path):  # (a special file keeps the name given: /dev/stdout's target, a
        # pipe under /proc, cannot be opened by its resolved name)
        path = Path(os.path.realpath(path))
    try:
        tmp = _new_temporary(path)
    except OSError as exc:
        raise _about_target(exc, path) from None
    try:
        yield tmp
        with _commit_lock:
            _check_not_stopped()
            _commit(tmp, path)
            _temporaries.discard(tmp)
    except OSError as exc:
        _remove_temporary(tmp)
        renamed = _about_target(exc, path)
        if renamed is exc:
            raise
        raise renamed from exc
    except BaseException:
        _remove_temporary(tmp)
        raise


def _about_target(exc: OSError, path: Path) -> OSError:
    """``exc`` naming ``path`` where it named one of path's temporaries (or no file), else
    ``exc`` itself: the user asked for ``path`` and never saw the temporary name."""
    if exc.errno is None:
        return exc
    if exc.filename is not None:
        named = Path(str(exc.filename))
        if named.parent != _temporary_folder(path) \
                or not named.name.startswith(f".{path.name}.") \
                or not named.name.endswith(".tmp"):
            return exc
    return OSError(exc.errno, exc.strerror, str(path))


def _new_temporary(path: Path) -> Path:
    with _commit_lock:
        _check_not_stopped()
        while True:
            tmp = _temporary_name(path)
            try:
                with open(tmp, "xb"):
                    pass
            except FileExistsError:  # pragma: no cover - 32 random bits collided
                continue
            _temporaries.add(tmp)
            return tmp


def _remove_temporary(tmp: Path) -> None:
    with contextlib.suppress(OSError):
        os.unlink(tmp)
    _temporaries.discard(tmp)


def _check_not_stopped() -> None:
    if _stopped:
        raise KeyboardInterrupt("interrupted: this process writes no more output files")


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    with atomic_target(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


# --------------------------------------------------------------------------------------------
# everything one run writes
# --------------------------------------------------------------------------------------------


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _first_existing(path: Path) -> Path:
    """The nearest of ``path`` and its parents that exists (follows symbolic links)."""
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")  # pragma: no cover - a relative path's parents end in "."


def _probe(folder: Path, what: str) -> None:
    """Create and delete a file in ``folder``: the one reliable test that it can be written."""
    probe = folder / f".rif-probe-{secrets.token_hex(4)}"
    try:
        with open(probe, "xb"):
            pass
        os.unlink(probe)
    except OSError as exc:
        raise OutputError(f"cannot write {what}: {_reason(exc)}") from None


class Outputs:
    """The folders and files one run writes, checked before the work starts.

    ``folder`` and ``file`` raise :class:`OutputError` when the destination cannot be written,
    is one of the files the run reads its data from (``reads``; even with ``force``), or already
    holds a file the run would replace (unless ``force``). ``discard`` removes the files and
    folders this run created, never a file that existed before it.
    """

    def __init__(self, *, force: bool = False, reads: Sequence[str | os.PathLike] = ()) -> None:
        self.force = force
        self._reads = [Path(p) for p in reads]
        self._new_files: list[Path] = []
        self._new_folders: list[Path] = []

    def folder(self, path: str | os.PathLike, names: Sequence[str], *,
               option: str = "--out") -> Path:
        """Make sure ``path`` is a writable folder in which ``names`` may be written; return it."""
        path = Path(path)
        what = f"{option} folder {path}"
        _check_parents(path, what)
        taken = self._taken([path / name for name in names], what)
        if taken:
            shown = ", ".join(taken[:4]) + (f" and {len(taken) - 4} more" if len(taken) > 4 else "")
            raise OutputError(f"{what} already holds {shown} from an earlier run; add --force to "
                              f"overwrite, or choose another {option}")
        self._make_folders(path, what)
        _probe(path, what)
        self._new_files += [path / name for name in names if not _occupied(path / name)]
        return path

    def file(self, path: str | os.PathLike, *, option: str) -> Path:
        """Make sure the file ``path`` may be written (its folder exists); return it."""
        path = Path(path)
        what = f"{option} file {path}"
        if not path.parent.is_dir():
            raise OutputError(f"cannot write {what}: folder {path.parent} does not exist")
        if _special(path):  # /dev/null, a FIFO: written in place, nothing of a run's replaced
            if not os.access(path, os.W_OK):
                raise OutputError(f"cannot write {what}: permission denied")
            return path
        if self._taken([path], what):
            raise OutputError(f"{what} already exists; add --force to overwrite it, or choose "
                              f"another {option} path")
        _probe(path.parent, what)
        if not _occupied(path):
            self._new_files.append(path)
        return path

    def abandon(self) -> None:
        """Ctrl-C while another thread may still write: stop all writing in this process (an
        atomic_target then raises KeyboardInterrupt), then discard. For a process about to end."""
        global _stopped
        with _commit_lock:
            _stopped = True
            for tmp in list(_temporaries):
                _remove_temporary(tmp)
            self.discard()

    def discard(self) -> None:
        """Remove the files and the (then empty) folders this run created."""
        for path in reversed(self._new_files):
            with contextlib.suppress(OSError):
                if not path.is_dir():
                    path.unlink(missing_ok=True)
        for folder in reversed(self._new_folders):
            with contextlib.suppress(OSError):
                folder.rmdir()
        self._new_files.clear()
        self._new_folders.clear()

    # ---- the steps, one job each

    def _taken(self, targets: Sequence[Path], what: str) -> list[str]:
        """Names among ``targets`` that exist and would be replaced (none when forced); a
        target that is a data file the run reads is refused, forced or not."""
        for target in targets:
            if target.is_dir():
                raise OutputError(f"cannot write {what}: {target} is a folder")
            read = next((r for r in self._reads if _same_file(target, r)), None)
            if read is not None:
                raise OutputError(f"cannot write {what}: {target.name} is {read}, the data this "
                                  "run reads (--force replaces earlier outputs, never the "
                                  "data); choose another path")
            held = next((r for r in self._reads if _inside(target, r)), None)
            if held is not None:
                raise OutputError(f"cannot write {what}: {target} would lie among the data this "
                                  f"run reads from {held}; choose another path")
        return [] if self.force else [t.name for t in targets if _occupied(t)]

    def _make_folders(self, path: Path, what: str) -> None:
        missing = [p for p in (path, *path.parents) if not p.exists()]
        for folder in reversed(missing):
            try:
                folder.mkdir()
            except FileExistsError:  # made meanwhile by someone else, or a dangling link
                if not folder.is_dir():
                    raise OutputError(f"cannot write {what}: {folder} exists and is not a folder") \
                        from None
                continue
            except OSError as exc:
                raise OutputError(f"cannot create {what}: {_reason(exc)}") from None
            self._new_folders.append(folder)


def _check_parents(path: Path, what: str) -> None:
    """The nearest existing one of ``path`` and its parents must be a folder."""
    existing = _first_existing(path)
    if not existing.is_dir():
        where = "it" if existing == path else str(existing)
        raise OutputError(f"cannot write {what}: {where} is a file, not a folder")


def _same_file(a: Path, b: Path) -> bool:
    """Whether a and b name one existing file (through links too)."""
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def _inside(target: Path, folder: Path) -> bool:
    """Whether target lies among a read folder's data: anywhere in a Zarr store, directly in a
    folder of .npy shards (a file there would be read as one; a subfolder is not)."""
    if not folder.is_dir():
        return False
    where, root = target.resolve(), folder.resolve()
    if any((root / marker).exists() for marker in ("zarr.json", ".zarray", ".zgroup")):
        return where == root or root in where.parents
    return where.parent == root


def _occupied(path: Path) -> bool:
    """Whether a name is taken (a dangling symbolic link counts)."""
    return path.exists() or path.is_symlink()
