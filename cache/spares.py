"""Empty files made ahead of need, for new dirty copies.

Creating a file costs the kernel far more than renaming one (on ext4 several hundred µs of
system time against about 20), and every file created on the mount needs a dirty copy at
once: `tar` waits for each create() before writing the next file. So a thread of its own
keeps a stock of empty files in `<dirty>/spare/`, and a new dirty copy is a spare renamed
into place. Spares hold nothing: one left over by a crash or an unmount is used by the next
mount as it is.
"""

import collections
import contextlib
import itertools
import logging
import os
import threading

log = logging.getLogger(__name__)

# Enough for a burst of creates between refills; a refill starts below the low-water mark.
SPARES_STOCK = 256
SPARES_LOW = 128


class SpareFiles:
    """A stock of empty files; `take` is called from one thread, the refill runs in another."""

    def __init__(self, root: str, stock: int = SPARES_STOCK, low: int = SPARES_LOW) -> None:
        self._root = root
        os.makedirs(root, exist_ok=True)
        self._stock, self._low = stock, low
        self._ready: collections.deque[str] = collections.deque()
        with os.scandir(root) as entries:
            for entry in entries:
                if entry.is_file(follow_symlinks=False) and entry.stat().st_size == 0:
                    self._ready.append(entry.path)
                else:  # not ours, or a leftover that was written: not a spare
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        self._names = itertools.count(len(self._ready))
        self._wanted = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Fill the stock now and whenever it runs low, from a daemon thread."""
        self._thread = threading.Thread(target=self._refill, name="spare files", daemon=True)
        self._wanted.set()
        self._thread.start()

    def stop(self) -> None:
        self._stopping = True
        self._wanted.set()
        if self._thread is not None:
            self._thread.join()

    def take(self) -> str | None:
        """The path of an empty file to rename into place, or None while the stock is empty."""
        try:
            path = self._ready.popleft()
        except IndexError:
            path = None
        if len(self._ready) < self._low:
            self._wanted.set()
        return path

    def __len__(self) -> int:
        return len(self._ready)

    def _refill(self) -> None:
        while True:
            self._wanted.wait()
            self._wanted.clear()
            if self._stopping:
                return
            try:
                self._fill()
            except OSError as exc:  # a full disk: creates fall back to making their own
                log.warning("cannot make spare files: %s", exc)

    def _fill(self) -> None:
        while len(self._ready) < self._stock and not self._stopping:
            path = os.path.join(self._root, str(next(self._names)))
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
            except FileExistsError:
                continue
            self._ready.append(path)
