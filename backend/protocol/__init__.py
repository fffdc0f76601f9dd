"""The wire protocol shared by the Cirrus server and its clients.

Everything both sides must agree on lives here and nowhere else: how blocks are named
(hashing), how files are cut into blocks (chunking), which paths are valid (paths) and the
machine-readable error codes (errors). It imports no server-only dependency, so the mount can
use it without pulling in the database layer.
"""
