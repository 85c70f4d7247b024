"""One writer per directory: an exclusive ``flock`` on a file in it, held while the file stays open
(the operating system releases it when its process dies, however it dies)."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import IO


class Held(RuntimeError):
    """Another process holds the lock; ``holder`` says which."""

    def __init__(self, holder: str):
        super().__init__(holder)
        self.holder = holder


def hold(path: Path) -> IO[str]:
    """The lock on ``path``, held while the returned file is open (it names this process), or
    :class:`Held` naming the process that holds it."""
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise Held(holder) from None
    handle.truncate(0)
    handle.write(f"process {os.getpid()}\n")
    handle.flush()
    return handle
