"""LocalNotifier on its own: wakes waiters from other threads, times out, costs no polling;
and the payloads PgNotifier sends between servers."""

import asyncio
import threading
import time

import pytest

from backend.notify import LocalNotifier
from backend.notify_pg import MAX_PAYLOAD, decode, encode


class CountingCursor:
    """Stands in for MetadataService.current_cursor and counts the reads (the 'database')."""

    def __init__(self, value: int) -> None:
        self.value = value
        self.reads = 0

    def __call__(self, namespace_id: int) -> int:
        self.reads += 1
        return self.value


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, 10))


def test_wait_returns_at_once_when_the_journal_is_ahead() -> None:
    notifier = LocalNotifier(CountingCursor(5))
    assert run(notifier.wait(1, 3, timeout=5)) == 5


def test_wait_times_out_with_the_unchanged_cursor() -> None:
    notifier = LocalNotifier(CountingCursor(5))
    started = time.monotonic()
    assert run(notifier.wait(1, 5, timeout=0.3)) == 5
    assert 0.25 <= time.monotonic() - started < 2


def test_publish_from_a_thread_wakes_every_waiter_of_that_namespace_only() -> None:
    source = CountingCursor(7)
    notifier = LocalNotifier(source)

    async def scenario() -> tuple[list[int], float, int]:
        waiters = [asyncio.create_task(notifier.wait(1, 7, timeout=5)) for _ in range(100)]
        other = asyncio.create_task(notifier.wait(2, 7, timeout=0.5))
        await asyncio.sleep(0.1)
        started = time.monotonic()
        threading.Thread(target=notifier.publish, args=(1, 8)).start()
        woken = await asyncio.gather(*waiters)
        return woken, time.monotonic() - started, await other

    woken, elapsed, other = run(scenario())
    assert woken == [8] * 100
    assert elapsed < 1
    assert other == 7  # namespace 2 heard nothing and timed out
    assert source.reads == 2  # one read per namespace, not one per waiter or wake-up
    assert notifier.waiting() == 0


def test_an_older_publish_never_moves_the_cursor_back() -> None:
    notifier = LocalNotifier(CountingCursor(0))
    notifier.publish(1, 9)
    notifier.publish(1, 4)
    assert notifier.latest(1) == 9
    assert run(notifier.wait(1, 8, timeout=1)) == 9


@pytest.mark.parametrize("waiters", [2000])
def test_many_idle_waiters_cost_no_thread(waiters: int) -> None:
    notifier = LocalNotifier(CountingCursor(0))

    async def scenario() -> int:
        tasks = [asyncio.create_task(notifier.wait(1, 0, timeout=5)) for _ in range(waiters)]
        await asyncio.sleep(0.2)
        threads_while_idle = threading.active_count()
        notifier.publish(1, 1)
        assert set(await asyncio.gather(*tasks)) == {1}
        return threads_while_idle

    before = threading.active_count()
    assert run(scenario()) <= before + 1  # at most the one worker that read the cursor


def test_resync_answers_waiting_polls_and_rereads_the_journal() -> None:
    """What a notifier does after it may have missed notifications (its bus reconnected)."""
    source = CountingCursor(3)
    notifier = LocalNotifier(source)

    async def scenario() -> tuple[list[int], int]:
        waiters = [asyncio.create_task(notifier.wait(1, 3, timeout=5)) for _ in range(10)]
        await asyncio.sleep(0.1)
        source.value = 4  # a change this notifier never heard of
        threading.Thread(target=notifier.resync).start()
        answered = await asyncio.gather(*waiters)
        return answered, await notifier.wait(1, 3, timeout=5)

    answered, again = run(scenario())
    assert answered == [3] * 10  # answered at once, with the cursor they knew
    assert again == 4  # the next poll reads the journal and sees the change
    assert source.reads == 2


def test_payloads_carry_every_cursor_under_postgresql_limit() -> None:
    cursors = {namespace: 10**12 + namespace for namespace in range(2000)}
    payloads = encode(cursors)
    assert len(payloads) > 1 and all(len(p.encode()) <= MAX_PAYLOAD for p in payloads)
    assert dict(pair for p in payloads for pair in decode(p)) == cursors
    assert decode("7:9 junk 8:x :3 5:6") == [(7, 9), (5, 6)]
