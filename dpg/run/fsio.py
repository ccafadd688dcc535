"""Writing files so that a filesystem fault is one named line: atomic text writes, log appends, and the translation
of OS errors (read-only, disk full, not a directory, ...) into `FilesystemError` naming the path and the cause.

Torch-free. Every dpg write goes through `writing`, so tests inject faults here (they may run as root, where
permission bits stop nothing). Libraries that write for us (safetensors, torch.save) report a full disk without an
errno ("os error 28", "file write failed"); `writing` then asks the filesystem itself whether it is full or read-only.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

# What an errno means to someone whose run just stopped.
CAUSES = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.ENOTDIR: "not a directory",
    errno.EISDIR: "is a directory",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or directory",
    errno.ENOTEMPTY: "directory not empty",
    errno.EIO: "input/output error",
    errno.ENAMETOOLONG: "file name too long",
}
# A write that failed without an errno (torch's zip writer) on a filesystem with less free space than this (or 1 % of
# its size, whichever is more) failed because the disk is full: one tensor record can be that large.
NEARLY_FULL_BYTES = 64 << 20


class FilesystemError(OSError):
    """A read or write that the filesystem refused; str() is one line naming the cause and the path."""

    def __init__(self, code: int | None, message: str):
        super().__init__(code, message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def cause(err: BaseException, path: str | Path | None = None) -> str | None:
    """The filesystem cause of `err` in words, or None if it is not a filesystem fault.

    OSError: its errno. Other exceptions (safetensors' SafetensorError, torch's zip writer RuntimeError) carry at
    most an "os error N" in their text; failing that, a full or read-only filesystem under `path` is the cause.
    """
    code = err.errno if isinstance(err, OSError) else None
    if code is None:
        m = re.search(r"os error (\d+)|code: (\d+)", str(err))
        code = int(m.group(1) or m.group(2)) if m else None
    if code is not None:
        return CAUSES.get(code, os.strerror(code).lower())
    if path is not None:
        return _filesystem_state(Path(path))
    return None


def _filesystem_state(path: Path) -> str | None:
    """'no space left on device' / 'read-only file system' if the filesystem holding `path` is so, else None."""
    existing = next((p for p in (path, *path.parents) if p.exists()), None)
    if existing is None:
        return None
    stat = os.statvfs(existing)
    if stat.f_flag & os.ST_RDONLY:
        return CAUSES[errno.EROFS]
    if stat.f_bavail * stat.f_frsize < max(NEARLY_FULL_BYTES, stat.f_blocks * stat.f_frsize // 100):
        return CAUSES[errno.ENOSPC]
    return None


def describe(err: OSError) -> str:
    """One line for an OSError raised outside `writing`: the cause and the file it names."""
    if isinstance(err, FilesystemError):
        return str(err)
    words = cause(err) or str(err)
    return f"{words}: {err.filename}" if err.filename is not None else words


@contextmanager
def writing(path: str | Path, what: str = "writing"):
    """Turn a filesystem fault inside the block into FilesystemError("<cause> while <what> <path>").

    Exceptions that are not filesystem faults pass through unchanged."""
    try:
        yield
    except FilesystemError:
        raise
    except Exception as err:
        words = cause(err, path)
        if words is None:
            raise
        culprit = getattr(err, "filename", None)
        # the file inside `path` that failed, unless it is `path` itself or its temporary sibling (write_text's)
        inside = culprit is not None and not Path(culprit).name.startswith(Path(path).name)
        where = f"{path} ({culprit})" if inside else f"{path}"
        raise FilesystemError(getattr(err, "errno", None), f"{words} while {what} {where}") from err


def write_text(path: str | Path, text: str, what: str = "writing") -> Path:
    """Write `text` to `path` atomically: a temporary sibling, flushed to disk, then renamed over `path`."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    with writing(path, what):
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            if tmp.exists():  # a failed write leaves no stray temporary file behind
                tmp.unlink()
    return path


def append_line(path: str | Path, line: str, what: str = "appending to") -> None:
    """Append one line (a JSONL record) to `path`, flushed to disk so a later crash cannot lose it."""
    with writing(path, what), open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def make_dir(path: str | Path, what: str = "creating") -> Path:
    path = Path(path)
    with writing(path, what):
        if path.exists() and not path.is_dir():  # mkdir would say "exists", which hides what is wrong
            raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(path))
        path.mkdir(parents=True, exist_ok=True)
    return path


def remove_tree(path: str | Path) -> None:
    """Delete a folder dpg wrote (a stale checkpoint, a temporary save); a fault there is named like any other."""
    with writing(path, "deleting"):
        shutil.rmtree(path)


def writable_dir_problem(path: str | Path) -> str | None:
    """Why files could not be created in directory `path` (created if missing), or None if they can.

    Looked up without writing anything: the path must not be a file, its nearest existing ancestor must be a
    directory on a writable filesystem, with write permission. (As root, permission bits pass; the writes are then
    the check, and `writing` names them.)"""
    path = Path(path)
    if path.exists() and not path.is_dir():
        return f"{path} exists and is not a directory"
    for parent in (path, *path.parents):
        if parent.exists():
            if not parent.is_dir():
                return f"{parent} is a file, not a directory"
            if os.statvfs(parent).f_flag & os.ST_RDONLY:
                return f"{parent} is on a read-only file system"
            if not os.access(parent, os.W_OK | os.X_OK):
                return f"no permission to write in {parent}"
            return None
    return None
