"""The kernel's read-ahead on this mount, raised to one full FUSE request.

On FUSE the kernel reads ahead at most 128 KiB (its default, which a filesystem can only
lower at INIT), so a sequential read reaches the mount as 8,192 requests of 128 KiB per GiB,
each a trip through the event loop. The connection's backing device takes a larger value in
sysfs once INIT is answered, and the kernel then asks for up to 1 MiB at once (a request's
largest size, max_pages 256). Only root may write it: a mount run by a user keeps the
default unless an administrator raises it (docs/client.md, "What happens on a read").
"""

import logging
import os

log = logging.getLogger(__name__)

# One request's worth: a larger window makes the kernel send several requests at once, which
# measured no faster (docs/benchmarks.md).
READ_AHEAD_KB = 1024


def setting_path(mountpoint: str) -> str:
    """The sysfs file holding the read-ahead of the filesystem mounted at `mountpoint`."""
    dev = os.stat(mountpoint).st_dev
    return f"/sys/class/bdi/{os.major(dev)}:{os.minor(dev)}/read_ahead_kb"


def raise_read_ahead(mountpoint: str) -> None:
    """Blocking, for a worker thread while the session serves requests: the stat waits until
    the kernel's INIT is answered, which would otherwise lower the value again."""
    try:
        path = setting_path(mountpoint)
        with open(path) as setting:
            if int(setting.read()) >= READ_AHEAD_KB:
                return
        with open(path, "w") as setting:
            setting.write(str(READ_AHEAD_KB))
    except (OSError, ValueError) as exc:  # not root, or no sysfs: the kernel's default stays
        log.debug("read-ahead left at the kernel's default: %s", exc)
        return
    log.debug("read-ahead raised to %d KiB", READ_AHEAD_KB)
