"""A first-come, first-served lock for SQLite's writers in one process.

SQLite has one write lock, and a writer that finds it taken sleeps and polls (the busy
handler sleeps up to 100 ms between tries). A client whose work comes in a long run of short
transactions (a large commit staged a chunk at a time) takes the lock again microseconds
after releasing it, so a writer waiting in the busy handler could miss every gap and wait
for the whole run. Writers of this process therefore queue here, in order, before BEGIN
IMMEDIATE: a waiting request gets the lock at the end of the current transaction.
"""

import threading
from collections import deque


class Turnstile:
    """A FIFO mutex: the lock is handed to the oldest waiter on release."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._waiting: deque[threading.Event] = deque()
        self._held = False

    def acquire(self) -> None:
        with self._guard:
            if not self._held:
                self._held = True
                return
            turn = threading.Event()
            self._waiting.append(turn)
        turn.wait()  # release() hands the lock over: _held stays True

    def release(self) -> None:
        with self._guard:
            if self._waiting:
                self._waiting.popleft().set()
            else:
                self._held = False
