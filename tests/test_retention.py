"""Retention: the schedule keeps exactly what it says (with an injected clock), pins and the
head are never dropped, a user's own policy wins over the server's."""

import time

import pytest

from backend.metadata.retention import Policy, Version, doomed, parse_thinning
from backend.protocol.errors import InvalidRequest
from tests.support.lifecycle import (
    DAY,
    HOUR,
    admin,
    clocked_server,
    commit,
    content,
    delete,
    history,
    put_block,
)

NOW = 1000 * 86400 * 10**9  # a day boundary, so hour and day buckets are easy to see
MINUTE_NS = 60 * 10**9


def ages(*minutes: float) -> list[Version]:
    """Uploaded, unpinned revisions numbered oldest first, `minutes` old each."""
    ordered = sorted(minutes, reverse=True)
    return [Version(n, n, NOW - int(m * MINUTE_NS), True, False) for n, m in enumerate(ordered, 1)]


def kept(versions: list[Version], head: int | None, policy: Policy = Policy()) -> list[int]:
    dropped = set(doomed(versions, head, NOW, policy))
    return [v.number for v in versions if v.id not in dropped]


def test_default_schedule_keeps_all_for_a_day_then_one_per_hour_then_one_per_day() -> None:
    h, d = 60, 24 * 60
    versions = ages(
        d + 8 * h + 50, d + 8 * h + 10,  # one hour, 25 h ago: the newer stays
        d + 3 * h + 30,  # alone in its hour
        9 * d + 20 * h, 9 * d + 2 * h,  # one day, 9 days ago: the newer stays
        40 * d + 5 * h, 40 * d + 1 * h,  # beyond the schedule: daily still
        23 * h, 2 * h, 1,  # the last day: every one
    )  # fmt: skip
    assert kept(versions, head=10) == [2, 4, 6, 7, 8, 9, 10]


def test_head_pending_and_pinned_revisions_are_kept() -> None:
    versions = ages(3 * 24 * 60 + 30, 3 * 24 * 60 + 20, 3 * 24 * 60 + 10, 5)
    versions[0] = Version(1, 1, versions[0].created_ns, True, True)  # pinned
    versions[1] = Version(2, 2, versions[1].created_ns, False, False)  # still pending
    # 3 is the newest of its hour; 2 is still pending and the pin keeps 1.
    assert kept(versions, head=4) == [1, 2, 3, 4]
    versions[1] = Version(2, 2, versions[1].created_ns, True, False)
    assert kept(versions, head=4) == [1, 3, 4]
    # The head of a live file stays whatever its age; a deleted file has none.
    policy = Policy(max_age_s=0)
    assert kept(ages(90, 60, 30), head=1, policy=policy) == [1]
    assert kept(ages(90, 60, 30), head=None, policy=policy) == []


def test_cap_drops_the_oldest_and_pins_do_not_count() -> None:
    versions = ages(50, 40, 30, 20, 10)
    assert kept(versions, head=5, policy=Policy(max_revisions=2)) == [4, 5]
    versions[0] = Version(1, 1, versions[0].created_ns, True, True)
    assert kept(versions, head=5, policy=Policy(max_revisions=2)) == [1, 4, 5]
    assert kept(versions, head=2, policy=Policy(max_revisions=1)) == [1, 2]


def test_bad_schedules_are_refused() -> None:
    assert parse_thinning("none") == ()
    for bad in ("7d:1h,24h:all", "24h", "1x:all", "24h:often"):
        with pytest.raises(InvalidRequest):
            parse_thinning(bad)
    with pytest.raises(InvalidRequest):
        Policy(max_revisions=0)


served = clocked_server  # a server that collects only when told, and its clock


def revisions(client, path: str) -> list[tuple[int, bool]]:
    return [(r["rev"], r["pinned"]) for r in history(client, path)["revisions"]]


def test_schedule_on_a_server_with_a_moving_clock(served) -> None:
    server, clock = served
    now = time.time() + clock.offset  # start an hour after a day boundary, days from now
    clock.advance((now // DAY + 11) * DAY + HOUR - now)
    client = server.client(server.create_user("alice"))
    base = None
    for step, data in ((0, b"1"), (600, b"2"), (600, b"3"), (2 * HOUR, b"4"), (HOUR, b"5")):
        clock.advance(step)
        put_block(client, data)
        base = commit(client, "/f", [data], base_rev=base)["rev"]
    pinned = client.post("/v1/files/pin", json={"path": "/f", "rev": 2})
    assert pinned.status_code == 200 and pinned.json()["pinned"] is True
    clock.advance(2 * DAY)  # 1-3 share an hour two days ago; 4 and 5 have their own
    admin(server, "gc", "--prune")
    assert revisions(client, "/f") == [(5, False), (4, False), (3, False), (2, True)]
    assert content(client, "/f", 2) == b"2"
    assert client.post("/v1/files/unpin", json={"path": "/f", "rev": 2}).status_code == 200
    admin(server, "gc", "--prune")
    assert revisions(client, "/f") == [(5, False), (4, False), (3, False)]
    clock.advance(10 * DAY)  # now one per day, and the head has this day
    admin(server, "gc", "--prune")
    assert revisions(client, "/f") == [(5, False)]
    assert history(client, "/f")["retention"]["max_revisions"] == 100


def test_a_users_own_policy_and_a_zero_age_history(served) -> None:
    server, _clock = served
    alice = server.client(server.create_user("alice"))
    bob = server.client(server.create_user("bob"))
    result = admin(server, "set-retention", "alice", "--max-revisions", "2")
    assert "max_revisions 2" in result.stdout
    for client in (alice, bob):
        base = None
        for data in (b"a", b"b", b"c", b"d"):
            put_block(client, data)
            base = commit(client, "/f", [data], base_rev=base)["rev"]
    assert [rev for rev, _ in revisions(alice, "/f")] == [4, 3]  # at each commit
    assert [rev for rev, _ in revisions(bob, "/f")] == [4, 3, 2, 1]
    assert history(alice, "/f")["retention"]["max_revisions"] == 2
    admin(server, "set-retention", "bob", "--max-history", "0")
    delete(bob, "/f")
    admin(server, "gc", "--prune")
    assert bob.get("/v1/files/history", params={"path": "/f"}).json()["revisions"] == []
    bad = admin(server, "set-retention", "carol", "--max-revisions", "2", check=False)
    assert bad.returncode == 1 and bad.stderr.startswith("cirrus admin set-retention: error:")
    bad = admin(server, "set-retention", "alice", "--thinning", "7d:1h,1d:all", check=False)
    assert bad.returncode == 1 and "youngest first" in bad.stderr


def test_pin_refusals(served) -> None:
    server, _clock = served
    client = server.client(server.create_user("alice"))
    put_block(client, b"x")
    base = commit(client, "/f", [b"x"])["rev"]
    assert commit(client, "/f", [b"never sent"], base_rev=base)["status"] == "pending"
    client.post("/v1/tree/mkdir", json={"path": "/dir"})
    for body, status in (
        ({"path": "/f", "rev": 9}, 404),
        ({"path": "/nope", "rev": 1}, 404),
        ({"path": "/dir", "rev": 1}, 409),
        ({"path": "/f", "rev": 0}, 404),
        ({"path": "/f", "rev": 2}, 409),  # still pending
        ({"path": "/f"}, 400),
    ):
        response = client.post("/v1/files/pin", json=body)
        assert response.status_code == status, (body, response.text)
        assert "code" in response.json()["error"]
