"""What the server says the drive uses and may use, as the mount keeps it.

The sync engine refreshes it from GET /v1/usage (at most every REFRESH_S seconds while it
syncs) and sets `over` when the server refused an upload or commit with 507
quota_exceeded; a replay that gets through clears it. The VFS reads it without any I/O:
`statfs` (`df`) reports the quota, the fsync or close of a file whose upload waits for
space fails with EDQUOT (the data stays in the cache and is uploaded once space is freed),
and such a file's `user.cirrus.status` is `over-quota`.
"""

import math

import trio

from mountfs.remote import RemoteDrive

REFRESH_S = 1.0


class Usage:
    def __init__(self) -> None:
        self.used: int | None = None  # None until the server has answered once
        self.quota: int | None = None
        self.total: int | None = None  # the quota, else what the server could hold
        self.over = False
        self._refreshed = -math.inf

    async def refresh(self, remote: RemoteDrive, force: bool = False) -> None:
        """Ask the server again, unless it was asked less than REFRESH_S ago."""
        if not force and trio.current_time() - self._refreshed < REFRESH_S:
            return
        answer = await remote.usage()
        self._refreshed = trio.current_time()
        self.used, self.quota, self.total = answer["used"], answer["quota"], answer["total"]

    @property
    def room(self) -> bool:
        """Whether the last answer leaves space to try uploads again."""
        return self.quota is None or self.used is None or self.used < self.quota
