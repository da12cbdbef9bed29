"""Files written atomically, and files read only when they are regular files.

Shared by model files (persistence.py) and data sets (datasets.py):

* :func:`atomic_writer` writes to a temporary file next to the target, syncs it and
  renames it onto the target, so that no partial file ever exists under the target's
  name. The result gets the mode that ``open()`` would give a new file under the
  umask, or keeps the mode of the file it replaces.
* :func:`open_regular` opens a file for reading only if it is a regular file: a FIFO
  would block ``open()`` until some writer appears, and a device never ends.
* :func:`signals_raise` turns SIGTERM and SIGHUP into an exception for a while, so
  that a long write (a download) removes its temporary file when it is killed.
* :func:`read_exactly` reads a header's bytes, fewer only at the end of the file.
"""

import contextlib
import errno
import os
import re
import secrets
import signal
import stat
import threading
import time

try:
    import fcntl
except ImportError:  # Windows: no advisory locks, hence no removal of stale files
    fcntl = None

# tempfile's alphabet and length, so that files left by older versions match too.
_TEMP_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789_"
_TEMP_LEN = 8
# A writer locks its temporary file right after creating it; a file this old and
# unlocked was left by a process that died (SIGKILL, power loss).
_STALE_AFTER = 10.0  # seconds

_OPEN_FLAGS = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NOCTTY", 0)
_CREATE_FLAGS = (os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
                 | getattr(os, "O_NOFOLLOW", 0))
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)


# Reading ----------------------------------------------------------------------------

def _kind(mode):
    for test, name in ((stat.S_ISFIFO, "a FIFO (named pipe)"),
                       (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"),
                       (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def _require_regular(mode, path, action="read"):
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), path)
    kind = _kind(mode)
    what = kind if kind.startswith("not") else f"{kind}, not a regular file"
    raise OSError(errno.EINVAL, f"it is {what}; mlp_cy {action}s regular files only",
                  path)


def open_regular(path):
    """Open ``path`` for reading in binary mode if it is a regular file.

    Raises
    ------
    OSError
        FileNotFoundError and the like; IsADirectoryError for a directory; an
        OSError (EINVAL) for a FIFO, a device or a socket, at once.
    """
    path = os.fspath(path)
    # Checked before opening: opening a FIFO blocks, opening a device may act on it.
    _require_regular(os.stat(path).st_mode, path)
    # O_NONBLOCK too, and checked again: the path may have been replaced meanwhile.
    fd = os.open(path, _OPEN_FLAGS | _NONBLOCK)
    try:
        _require_regular(os.fstat(fd).st_mode, path)
        if _NONBLOCK:
            os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


# Writing ----------------------------------------------------------------------------

def read_exactly(f, n):
    """Read ``n`` bytes from ``f``, fewer only at end of file."""
    parts = []
    while n > 0:
        part = f.read(n)
        if not part:
            break
        parts.append(part)
        n -= len(part)
    return b"".join(parts)


def _name_max(directory):
    try:
        limit = os.pathconf(directory, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        limit = None
    return limit if limit and limit > 0 else 255


def _temp_prefix(name, suffix, name_max):
    """``.<name>.``, with <name> shortened so that the temporary name fits the limit."""
    budget = name_max - 2 - _TEMP_LEN - len(os.fsencode(suffix))
    stem = name
    while stem and len(os.fsencode(stem)) > budget:
        stem = stem[:-1]
    return f".{stem}."


def _umask():
    # Linux shows the umask without changing it; elsewhere set it and put it back.
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status") as f:
        for line in f:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o077)
    os.umask(mask)
    return mask


def _mode_to_keep(path):
    """The permission bits of the file that ``path`` names, None if there is none."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    _require_regular(st.st_mode, path, action="replace")
    return stat.S_IMODE(st.st_mode) & 0o777


def _fchmod(fd, mode):
    if hasattr(os, "fchmod"):
        # By descriptor, not by path; file systems without modes (FAT) refuse it.
        with contextlib.suppress(OSError):
            os.fchmod(fd, mode)


def _lock(fd):
    if fcntl is not None:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


def _remove_if_abandoned(path, now):
    try:
        fd = os.open(path, _OPEN_FLAGS | _NONBLOCK | getattr(os, "O_NOFOLLOW", 0))
    except OSError:
        return
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < _STALE_AFTER:
            return
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fails while its writer lives
        current = os.lstat(path)
        if (current.st_dev, current.st_ino) == (st.st_dev, st.st_ino):
            os.unlink(path)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale(path, suffix):
    """Remove the temporary files that writers of ``path`` left when they were killed.

    Only files named like :func:`atomic_writer`'s temporary files for ``path``, older
    than a few seconds and not locked by a live writer, are removed.
    """
    if fcntl is None:
        return
    directory, name = os.path.split(os.path.abspath(os.fspath(path)))
    prefix = _temp_prefix(name, suffix, _name_max(directory))
    pattern = re.compile(re.escape(prefix) + f"[{_TEMP_CHARS}]{{{_TEMP_LEN}}}"
                         + re.escape(suffix) + r"\Z")
    try:
        names = os.listdir(directory)
    except OSError:
        return
    now = time.time()
    for entry in names:
        if pattern.match(entry):
            _remove_if_abandoned(os.path.join(directory, entry), now)


def _create_temporary(directory, prefix, suffix):
    for _ in range(100):
        random = "".join(secrets.choice(_TEMP_CHARS) for _ in range(_TEMP_LEN))
        tmp = os.path.join(directory, prefix + random + suffix)
        try:
            # 0o600 while it is written: the final mode is set once it is complete.
            return os.open(tmp, _CREATE_FLAGS, 0o600), tmp
        except FileExistsError:
            continue
        except OSError as error:    # name the user's folder, not our temporary name
            raise type(error)(error.errno, error.strerror, directory) from None
    raise FileExistsError(errno.EEXIST, "no unused temporary file name", directory)


def check_writable(path):
    """Raise OSError now if :func:`atomic_writer` could not write ``path``.

    Creates and removes a temporary file like the writer's, in the same directory:
    write permission alone does not say that a file can be created (e.g. in /proc).
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    _mode_to_keep(path)
    fd, tmp = _create_temporary(directory, _temp_prefix(name, ".tmp",
                                                        _name_max(directory)), ".tmp")
    os.close(fd)
    os.unlink(tmp)


@contextlib.contextmanager
def atomic_writer(path, suffix=".tmp"):
    """Open a temporary file next to ``path`` for writing; rename it onto ``path``.

    The temporary file is synced, given its final mode and renamed onto ``path``
    only if the body of the ``with`` block ends normally; then the directory is
    synced too. On any exception, KeyboardInterrupt included, the temporary file is
    removed and ``path`` is left as it was. Temporary files that killed writers
    left behind are removed first (see :func:`remove_stale`).

    The new file's mode is the one ``open()`` would give it under the umask, or, if
    ``path`` exists, the mode of the file it replaces. ``path`` must not name
    anything but a regular file (a FIFO or a device is not replaced). The temporary
    name stays within the file system's limit of the length of a name.
    """
    path = os.path.abspath(os.fspath(path))
    directory, name = os.path.split(path)
    mode = _mode_to_keep(path)
    if mode is None:
        mode = 0o666 & ~_umask()
    remove_stale(path, suffix)
    fd, tmp = _create_temporary(
        directory, _temp_prefix(name, suffix, _name_max(directory)), suffix)
    replaced = False
    try:
        with os.fdopen(fd, "wb") as f:
            # A live writer's file is locked: remove_stale leaves it alone.
            _lock(f.fileno())
            yield f
            f.flush()
            os.fsync(f.fileno())
            _fchmod(f.fileno(), mode)
            if os.name != "nt":  # renamed while still locked
                os.replace(tmp, path)
                replaced = True
        if not replaced:  # Windows cannot rename an open file
            os.replace(tmp, path)
            replaced = True
    except BaseException:
        if not replaced:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    fsync_directory(directory)


def fsync_directory(directory):
    """Make a rename durable; not possible on every platform, hence best effort."""
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


# Signals ----------------------------------------------------------------------------

class Terminated(BaseException):
    """Raised by :func:`signals_raise` when SIGTERM or SIGHUP arrives."""

    def __init__(self, signum):
        super().__init__(f"terminated by signal {signum}")
        self.signum = signum


def _raise_terminated(signum, frame):
    signal.signal(signum, signal.SIG_IGN)  # once: the cleanup must not be interrupted
    raise Terminated(signum)


@contextlib.contextmanager
def signals_raise():
    """Within, SIGTERM and SIGHUP raise :class:`Terminated`, so that cleanups run.

    Only in the main thread, and only for signals whose action is the default one
    (a program's own handlers are left alone). When the exception leaves the block,
    the signal is raised again with its default action: the process still ends by
    the signal, as the sender meant.
    """
    previous = {}
    if threading.current_thread() is threading.main_thread():
        for name in ("SIGTERM", "SIGHUP"):
            signum = getattr(signal, name, None)
            if signum is not None and signal.getsignal(signum) == signal.SIG_DFL:
                previous[signum] = signal.signal(signum, _raise_terminated)
    try:
        yield
    except Terminated as exc:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        previous = {}
        signal.raise_signal(exc.signum)
        raise
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
