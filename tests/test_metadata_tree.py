"""Users and tree operations of the metadata service, on SQLite and PostgreSQL."""

import pytest

from backend.metadata.service import MetadataService
from backend.metadata.types import Principal
from backend.protocol import errors
from tests import postgres

database_url = postgres.database_url
postgres_server = postgres.postgres_server
migrated_engine = postgres.migrated_engine
notifier = postgres.notifier
metadata = postgres.metadata
alice = postgres.alice


def names(metadata: MetadataService, who: Principal, path: str) -> list[str]:
    return [node.name for node in metadata.list_dir(who, path)]


def test_tokens_resolve_to_their_user_only(metadata: MetadataService) -> None:
    token_a = metadata.create_user("alice")
    token_b = metadata.create_user("bob")
    a, b = metadata.authenticate(token_a, None), metadata.authenticate(token_b, "phone")
    assert (a.user_name, a.author) == ("alice", "alice")
    assert (b.user_name, b.author) == ("bob", "phone")
    assert a.namespace_id != b.namespace_id
    assert metadata.authenticate(token_b, "phone") == b  # a known device again
    with pytest.raises(errors.Unauthorized):
        metadata.authenticate(token_a + "x", None)
    with pytest.raises(errors.Unauthorized):
        metadata.authenticate("", None)
    with pytest.raises(errors.AlreadyExists):
        metadata.create_user("alice")
    for bad in ("", "a/b", "x" * 65, "..", "a b"):
        with pytest.raises(errors.InvalidRequest):
            metadata.create_user(bad)
    for bad_device in ("", "x" * 65, "tab\there"):
        with pytest.raises(errors.InvalidRequest):
            metadata.authenticate(token_a, bad_device)


def test_tokens_are_stored_hashed(metadata: MetadataService) -> None:
    token = metadata.create_user("alice")
    with metadata.engine.connect() as conn:
        stored = [row[0] for row in conn.exec_driver_sql("SELECT token_hash FROM tokens")]
    assert len(stored) == 1 and token not in stored[0] and len(stored[0]) == 64


def test_new_drive_has_an_empty_root(metadata: MetadataService, alice: Principal) -> None:
    root = metadata.stat(alice, "/")
    assert (root.path, root.name, root.parent_id, root.type) == ("/", "", None, "dir")
    assert metadata.list_dir(alice, "/") == []
    account = metadata.account(alice)
    assert account == {
        "user": "alice",
        "namespace_id": alice.namespace_id,
        "cursor": 0,
        "used_bytes": 0,
        "files": 0,
        "bytes_received": 0,
    }


def test_mkdir_plain_and_with_parents(metadata: MetadataService, alice: Principal) -> None:
    node, created = metadata.mkdir(alice, "/docs", 0o700, 123, False)
    assert created and (node.path, node.mode, node.mtime_ns) == ("/docs", 0o700, 123)
    with pytest.raises(errors.AlreadyExists):
        metadata.mkdir(alice, "/docs", None, None, False)
    with pytest.raises(errors.NotFound):
        metadata.mkdir(alice, "/x/y", None, None, False)
    deep, created = metadata.mkdir(alice, "/docs/a/b/c", None, None, True)
    assert created and deep.path == "/docs/a/b/c" and deep.mode == 0o755
    again, created = metadata.mkdir(alice, "/docs/a/b/c", None, None, True)
    assert not created and again.id == deep.id
    assert metadata.stat(alice, "/docs/a/b").type == "dir"
    assert [n.path for n in metadata.list_dir(alice, "/docs/a")] == ["/docs/a/b"]
    with pytest.raises(errors.InvalidRequest):
        metadata.mkdir(alice, "/bad", 0o10000, None, False)


def test_paths_are_validated(metadata: MetadataService, alice: Principal) -> None:
    for bad in ("relative", "/a/../b", "/a//b", "/a/", "/nul\0", "/./a"):
        with pytest.raises(errors.InvalidPathError):
            metadata.stat(alice, bad)
    with pytest.raises(errors.NameTooLong):
        metadata.mkdir(alice, "/" + "n" * 256, None, None, False)
    long_name, created = metadata.mkdir(alice, "/" + "é" * 127, None, None, False)
    assert created and len(long_name.name.encode()) == 254


def test_a_file_in_the_way_is_not_a_directory(metadata: MetadataService, alice: Principal) -> None:
    metadata.symlink(alice, "/link", "target", None)
    with pytest.raises(errors.NotADirectory):
        metadata.mkdir(alice, "/link/sub", None, None, True)
    with pytest.raises(errors.NotADirectory):
        metadata.list_dir(alice, "/link")
    with pytest.raises(errors.NotADirectory):
        metadata.stat(alice, "/link/x")


def test_symlinks(metadata: MetadataService, alice: Principal) -> None:
    link = metadata.symlink(alice, "/l", "../elsewhere/x", 5)
    assert (link.type, link.target, link.mtime_ns, link.mode) == (
        "symlink",
        "../elsewhere/x",
        5,
        0o777,
    )
    with pytest.raises(errors.AlreadyExists):
        metadata.symlink(alice, "/l", "y", None)
    for bad_target in ("", "a\0b", "x" * 4097, "\udcff"):
        with pytest.raises(errors.InvalidRequest):
            metadata.symlink(alice, "/m", bad_target, None)
    with pytest.raises(errors.NotFound):
        metadata.symlink(alice, "/missing/l", "t", None)


def test_delete(metadata: MetadataService, alice: Principal) -> None:
    metadata.mkdir(alice, "/a/b/c", None, None, True)
    metadata.symlink(alice, "/a/b/link", "t", None)
    with pytest.raises(errors.NotEmpty):
        metadata.delete(alice, "/a", False)
    with pytest.raises(errors.Forbidden):
        metadata.delete(alice, "/", True)
    ids = {metadata.stat(alice, p).id for p in ("/a", "/a/b", "/a/b/c", "/a/b/link")}
    assert set(metadata.delete(alice, "/a", True)) == ids
    assert metadata.list_dir(alice, "/") == []
    with pytest.raises(errors.NotFound):
        metadata.delete(alice, "/a", True)
    empty, _ = metadata.mkdir(alice, "/a", None, None, False)  # the name is free again
    assert empty.id not in ids
    assert metadata.delete(alice, "/a", False) == [empty.id]
    with pytest.raises(errors.NotFound):
        metadata.stat_id(alice, empty.id)


def test_setattr_and_xattrs(metadata: MetadataService, alice: Principal) -> None:
    metadata.mkdir(alice, "/d", None, None, False)
    node = metadata.setattr(alice, "/d", 0o750, 42)
    assert (node.mode, node.mtime_ns) == (0o750, 42)
    assert metadata.setattr(alice, "/d", None, 7).mode == 0o750
    node = metadata.set_xattr(alice, "/d", "user.color", b"red\0")
    assert node.xattrs == {"user.color": b"red\0"}
    assert metadata.stat(alice, "/d").xattrs == {"user.color": b"red\0"}
    assert metadata.set_xattr(alice, "/d", "user.color", None).xattrs == {}
    with pytest.raises(errors.NotFound):
        metadata.set_xattr(alice, "/d", "user.color", None)
    for bad in ("system.x", "user.", "user." + "x" * 251, "os2.y", "user.\udcff", 5):
        with pytest.raises(errors.InvalidRequest):
            metadata.set_xattr(alice, "/d", bad, b"v")
    with pytest.raises(errors.PayloadTooLarge):
        metadata.set_xattr(alice, "/d", "user.big", b"x" * (64 * 1024 + 1))
    assert metadata.set_xattr(alice, "/d", "user.max", b"x" * 64 * 1024).xattrs["user.max"]
    with pytest.raises(errors.InvalidRequest):
        metadata.setattr(alice, "/d", -1, None)


def test_users_never_see_each_other(metadata: MetadataService, alice: Principal) -> None:
    bob = metadata.authenticate(metadata.create_user("bob"), None)
    secret, _ = metadata.mkdir(alice, "/secret", None, None, False)
    with pytest.raises(errors.NotFound):
        metadata.stat(bob, "/secret")
    with pytest.raises(errors.NotFound):
        metadata.stat_id(bob, secret.id)
    assert metadata.list_dir(bob, "/") == []
    assert metadata.snapshot(bob, 0, 100).nodes[0].path == "/"
    assert len(metadata.snapshot(bob, 0, 100).nodes) == 1


class TestMove:
    @pytest.fixture(autouse=True)
    def tree(self, metadata: MetadataService, alice: Principal) -> None:
        """/d1/{f -> t, sub/}, /d2/, /full/x, /g -> u (symlinks stand in for files)."""
        metadata.mkdir(alice, "/d1/sub", None, None, True)
        metadata.mkdir(alice, "/d2", None, None, False)
        metadata.mkdir(alice, "/full/x", None, None, True)
        metadata.symlink(alice, "/d1/f", "t", None)
        metadata.symlink(alice, "/g", "u", None)

    def test_rename_to_a_free_name_moves_the_subtree(
        self, metadata: MetadataService, alice: Principal
    ) -> None:
        before = metadata.stat(alice, "/d1/sub")
        moved, replaced = metadata.move(alice, "/d1", "/d2/renamed", "noreplace")
        assert replaced is None and moved.path == "/d2/renamed"
        assert metadata.stat(alice, "/d2/renamed/sub").id == before.id
        assert metadata.stat(alice, "/d2/renamed/f").target == "t"
        with pytest.raises(errors.NotFound):
            metadata.stat(alice, "/d1")

    def test_replace_a_file(self, metadata: MetadataService, alice: Principal) -> None:
        old = metadata.stat(alice, "/g")
        moved, replaced = metadata.move(alice, "/d1/f", "/g", "replace")
        assert moved.path == "/g" and moved.target == "t"
        assert replaced is not None and replaced.id == old.id and replaced.deleted
        assert names(metadata, alice, "/d1") == ["sub"]

    def test_replace_an_empty_folder(self, metadata: MetadataService, alice: Principal) -> None:
        moved, replaced = metadata.move(alice, "/d1/sub", "/d2", "replace")
        assert moved.path == "/d2" and replaced is not None and replaced.type == "dir"
        assert names(metadata, alice, "/") == ["d1", "d2", "full", "g"]

    @pytest.mark.parametrize(
        ("src", "dst", "mode", "error"),
        [
            ("/d1/sub", "/g", "replace", errors.NotADirectory),
            ("/g", "/d2", "replace", errors.IsADirectory),
            ("/d2", "/full", "replace", errors.NotEmpty),
            ("/d1", "/d1/sub/inside", "replace", errors.InvalidMove),
            ("/d1", "/d1/new", "replace", errors.InvalidMove),
            ("/g", "/d1/f", "noreplace", errors.AlreadyExists),
            ("/g", "/nothing", "exchange", errors.NotFound),
            ("/nothing", "/x", "replace", errors.NotFound),
            ("/g", "/nothing/x", "replace", errors.NotFound),
            ("/g", "/g/x", "replace", errors.NotADirectory),
            ("/", "/x", "replace", errors.Forbidden),
            ("/g", "/", "replace", errors.Forbidden),
            ("/g", "/h", "sideways", errors.InvalidRequest),
            ("/d1", "/d1/sub", "exchange", errors.InvalidMove),
            ("/d1/sub", "/d1", "exchange", errors.InvalidMove),
        ],
    )
    def test_refusals_change_nothing(
        self, metadata: MetadataService, alice: Principal, src, dst, mode, error
    ) -> None:
        before = metadata.snapshot(alice, 0, 1000)
        with pytest.raises(error):
            metadata.move(alice, src, dst, mode)
        assert metadata.snapshot(alice, 0, 1000) == before

    def test_onto_itself_is_a_no_op(self, metadata: MetadataService, alice: Principal) -> None:
        cursor = metadata.account(alice)["cursor"]
        moved, replaced = metadata.move(alice, "/d1", "/d1", "replace")
        assert moved.path == "/d1" and replaced is None
        assert metadata.account(alice)["cursor"] == cursor

    def test_exchange_swaps_places(self, metadata: MetadataService, alice: Principal) -> None:
        folder, link = metadata.stat(alice, "/d1"), metadata.stat(alice, "/g")
        moved, other = metadata.move(alice, "/d1", "/g", "exchange")
        assert (moved.id, moved.path) == (folder.id, "/g")
        assert other is not None and (other.id, other.path) == (link.id, "/d1")
        assert metadata.stat(alice, "/g/sub").type == "dir"
        assert metadata.stat(alice, "/d1").target == "u"

    def test_moves_are_journaled_with_full_paths(
        self, metadata: MetadataService, alice: Principal
    ) -> None:
        start = metadata.account(alice)["cursor"]
        metadata.move(alice, "/d1/f", "/g", "replace")
        page = metadata.changes(alice, start, 10)
        assert [(c.node.path, c.node.deleted) for c in page.entries] == [
            ("/g", True),
            ("/g", False),
        ]
        assert page.cursor == start + 2 and not page.has_more
