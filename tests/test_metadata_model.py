"""Model-based test: random tree operations on the service and on a plain dict must agree.

The model is the POSIX rules written the short way (a dict of path -> type); after every
step the service's snapshot must equal the model and both must have raised the same error.
At the end the database must pass the consistency check.
"""

import shutil
import tempfile
from pathlib import Path

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, rule

from backend.db import create_engine_for, migrate
from backend.metadata.consistency import find_problems
from backend.metadata.service import MetadataService
from backend.metadata.types import CommitRequest
from backend.protocol import errors
from tests.postgres import RecordingNotifier

NAMES = st.sampled_from(["a", "b"])
PATHS = st.lists(NAMES, min_size=1, max_size=3).map(lambda parts: "/" + "/".join(parts))
MOVE_MODES = st.sampled_from(["replace", "noreplace", "exchange"])


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _within(path: str, ancestor: str) -> bool:
    return path == ancestor or path.startswith(ancestor + "/")


class Model:
    """The drive as {path: type}; each method raises what the service must raise."""

    def __init__(self) -> None:
        self.nodes = {"/": "dir"}

    def lookup(self, path: str) -> str:
        current = "/"
        for name in path.strip("/").split("/") if path != "/" else []:
            if self.nodes[current] != "dir":
                raise errors.NotADirectory()
            current = f"{current.rstrip('/')}/{name}"
            if current not in self.nodes:
                raise errors.NotFound()
        return current

    def lookup_dir(self, path: str) -> str:
        if self.nodes[self.lookup(path)] != "dir":
            raise errors.NotADirectory()
        return path

    def make_dirs(self, path: str) -> None:
        current = "/"
        for name in path.strip("/").split("/") if path != "/" else []:
            current = f"{current.rstrip('/')}/{name}"
            kind = self.nodes.setdefault(current, "dir")
            if kind != "dir":
                raise errors.NotADirectory()

    def subtree(self, path: str) -> list[str]:
        return [p for p in self.nodes if _within(p, path)]

    def rename(self, src: str, dst: str) -> None:
        for old in self.subtree(src):
            self.nodes[dst + old[len(src) :]] = self.nodes.pop(old)

    def mkdir(self, path: str, parents: bool) -> None:
        self.make_dirs(_parent(path)) if parents else self.lookup_dir(_parent(path))
        if path in self.nodes:
            if parents and self.nodes[path] == "dir":
                return
            raise errors.AlreadyExists()
        self.nodes[path] = "dir"

    def symlink(self, path: str) -> None:
        self.lookup_dir(_parent(path))
        if path in self.nodes:
            raise errors.AlreadyExists()
        self.nodes[path] = "symlink"

    def upload(self, path: str) -> None:
        self.make_dirs(_parent(path))
        if self.nodes.get(path) == "dir":
            raise errors.IsADirectory()
        self.nodes[path] = "file"

    def delete(self, path: str, recursive: bool) -> None:
        self.lookup(path)
        doomed = self.subtree(path)
        if len(doomed) > 1 and not recursive:
            raise errors.NotEmpty()
        for gone in doomed:
            del self.nodes[gone]

    def move(self, src: str, dst: str, mode: str) -> None:
        self.lookup(src)
        self.lookup_dir(_parent(dst))
        if src == dst:
            return
        is_dir = self.nodes[src] == "dir"
        if is_dir and _within(_parent(dst), src):
            raise errors.InvalidMove()
        if dst not in self.nodes:
            if mode == "exchange":
                raise errors.NotFound()
            return self.rename(src, dst)
        if mode == "noreplace":
            raise errors.AlreadyExists()
        if mode == "exchange":
            if self.nodes[dst] == "dir" and _within(_parent(src), dst):
                raise errors.InvalidMove()
            self.rename(src, "/\0swap")
            self.rename(dst, src)
            return self.rename("/\0swap", dst)
        if is_dir != (self.nodes[dst] == "dir"):
            raise errors.NotADirectory() if is_dir else errors.IsADirectory()
        if len(self.subtree(dst)) > 1:
            raise errors.NotEmpty()
        del self.nodes[dst]
        self.rename(src, dst)


class TreeMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.tmp = Path(tempfile.mkdtemp(prefix="cirrus-model-"))
        self.engine = create_engine_for(f"sqlite:///{self.tmp / 'm.db'}")
        migrate(self.engine)
        self.service = MetadataService(self.engine, RecordingNotifier())
        self.who = self.service.authenticate(self.service.create_user("alice"), None)
        self.model = Model()

    def apply(self, on_model, on_service) -> None:
        """Run one operation on both; same error (or none), then the same tree."""
        expected = actual = None
        trial = Model()
        trial.nodes = dict(self.model.nodes)
        try:
            on_model(trial)
        except errors.CirrusError as exc:
            expected = type(exc)
        try:
            on_service()
        except errors.CirrusError as exc:
            actual = type(exc)
        assert actual == expected
        if expected is None:
            self.model = trial
        tree = {n.path: n.type for n in self.service.snapshot(self.who, 0, 10_000).nodes}
        assert tree == self.model.nodes

    def pick(self, data: st.DataObject) -> str:
        """A path, most often one that exists or could be created in an existing folder."""
        near = [p for p in self.model.nodes if p != "/"]
        near += [f"{p.rstrip('/')}/{n}" for p, t in self.model.nodes.items() if t == "dir"
                 for n in ("a", "b") if p.count("/") < 3]  # fmt: skip
        return data.draw(st.one_of(st.sampled_from(sorted(near)), PATHS))

    @rule(data=st.data(), parents=st.booleans())
    def mkdir(self, data: st.DataObject, parents: bool) -> None:
        path = self.pick(data)
        self.apply(
            lambda m: m.mkdir(path, parents),
            lambda: self.service.mkdir(self.who, path, None, None, parents),
        )

    @rule(data=st.data())
    def symlink(self, data: st.DataObject) -> None:
        path = self.pick(data)
        self.apply(
            lambda m: m.symlink(path), lambda: self.service.symlink(self.who, path, "t", None)
        )

    @rule(data=st.data())
    def upload(self, data: st.DataObject) -> None:
        path = self.pick(data)
        request = CommitRequest(path, None, 0, [], overwrite=True)
        self.apply(lambda m: m.upload(path), lambda: self.service.commit(self.who, request))

    @rule(data=st.data(), recursive=st.booleans())
    def delete(self, data: st.DataObject, recursive: bool) -> None:
        path = self.pick(data)
        self.apply(
            lambda m: m.delete(path, recursive),
            lambda: self.service.delete(self.who, path, recursive),
        )

    @rule(data=st.data(), mode=MOVE_MODES)
    def move(self, data: st.DataObject, mode: str) -> None:
        src, dst = self.pick(data), self.pick(data)
        self.apply(
            lambda m: m.move(src, dst, mode), lambda: self.service.move(self.who, src, dst, mode)
        )

    def teardown(self) -> None:
        try:
            assert find_problems(self.engine) == []
        finally:
            self.engine.dispose()
            shutil.rmtree(self.tmp, ignore_errors=True)


TreeMachine.TestCase.settings = settings(
    max_examples=50, stateful_step_count=30, deadline=None, database=None
)
test_tree_operations_follow_the_model = TreeMachine.TestCase
