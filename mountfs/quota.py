"""What the server says the drive uses and may use, as the mount keeps it.

The sync engine refreshes it from GET /v1/usage once per sync cycle (after its changes went
up and the server's came down) and sets `over` when the server refused an upload or commit with 507
quota_exceeded; a replay that gets through clears it. The VFS reads it without any I/O:
`statfs` (`df`) reports the quota, the fsync or close of a file whose upload waits for
space fails with EDQUOT (the data stays in the cache and is uploaded once space is freed),
and such a file's `user.cirrus.status` is `over-quota`.
"""

from backend.protocol.errors import NotFound
from mountfs.remote import RemoteDrive


class Usage:
    """The last answer of GET /v1/usage, and whether the quota holds uploads back."""

    def __init__(self) -> None:
        self.used: int | None = None  # None until the server has answered once
        self.quota: int | None = None
        self.total: int | None = None  # the quota, else what the server could hold
        self.over = False

    async def refresh(self, remote: RemoteDrive) -> None:
        try:
            answer = await remote.usage()
        except NotFound:  # a server older than quotas: statfs keeps the mirror's counts
            return
        self.used, self.quota, self.total = answer["used"], answer["quota"], answer["total"]
