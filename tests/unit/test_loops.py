"""mediamill.loops: the one runner behind every background loop — its guard, back-off, restart and stop.

No database and no processes: loops are scripted, and the stop event records the waits it is asked for and
returns at once, so the back-off is read rather than slept through.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable

import pytest
from sqlalchemy.exc import OperationalError

from mediamill.loops import Backoff, Loop, LoopRunner, Periodic


class RecordingStop(threading.Event):
    """A stop event whose waits return at once, noting how long each was meant to be; it sets itself at the
    ``stop_at``-th wait (that wait then reports the stop, as a real one would)."""

    def __init__(self, stop_at: int = 1000) -> None:
        super().__init__()
        self.waits: list[float | None] = []
        self.stop_at = stop_at

    def wait(self, timeout: float | None = None) -> bool:
        self.waits.append(timeout)
        if len(self.waits) >= self.stop_at:
            self.set()
        return self.is_set()


class Scripted:
    """A loop whose rounds return or raise what the script says, in order; past its end a round returns None."""

    name = "scripted"

    def __init__(self, script: Iterable[float | BaseException | None]) -> None:
        self.script = list(script)
        self.rounds = 0

    def run_once(self) -> float | None:
        self.rounds += 1
        if not self.script:
            return None
        step = self.script.pop(0)
        if isinstance(step, BaseException):
            raise step
        return step


def db_error(text: str = "server closed the connection unexpectedly\nThis probably means…") -> OperationalError:
    return OperationalError("SELECT 1", {}, Exception(text))


def test_a_loop_runs_round_after_round_until_it_is_done() -> None:
    stop = RecordingStop()
    loop = Scripted([0, 0.5, 0, 2.0])
    LoopRunner(loop, stop).run()
    assert loop.rounds == 5  # four rounds, then the fifth says it is done
    assert stop.waits == [0.5, 2.0]  # a round that asks for no wait goes again at once


def test_a_crash_is_logged_with_its_traceback_and_the_loop_goes_on_after_a_back_off(
        caplog: pytest.LogCaptureFixture) -> None:
    stop = RecordingStop()
    loop = Scripted([RuntimeError("boom"), 0])
    with caplog.at_level(logging.WARNING, logger="mediamill.loops"):
        LoopRunner(loop, stop, backoff=Backoff(first=0.25, most=4.0)).run()
    assert loop.rounds == 3  # the crash, a good round, the end
    assert stop.waits == [0.25]
    [record] = caplog.records
    assert record.levelno == logging.ERROR and record.getMessage() == "scripted crashed; restarting"
    assert record.exc_info is not None and isinstance(record.exc_info[1], RuntimeError)


def test_a_database_error_is_one_warning_line_without_a_traceback(caplog: pytest.LogCaptureFixture) -> None:
    stop = RecordingStop()
    loop = Scripted([db_error()])
    with caplog.at_level(logging.WARNING, logger="mediamill.loops"):
        LoopRunner(loop, stop).run()
    [record] = caplog.records
    assert record.levelno == logging.WARNING and record.exc_info is None
    assert record.getMessage().startswith("scripted: database error, retrying: ")
    assert "server closed the connection unexpectedly" in record.getMessage()
    assert "\n" not in record.getMessage()  # the first line of the driver's message only
    assert stop.waits == [0.1]  # the default back-off


def test_the_back_off_doubles_up_to_its_cap_and_a_good_round_starts_it_over() -> None:
    stop = RecordingStop()
    loop = Scripted([db_error(), RuntimeError(), db_error(), RuntimeError(), db_error(), 0, RuntimeError()])
    LoopRunner(loop, stop, backoff=Backoff(first=0.5, most=3.0)).run()
    assert stop.waits == [0.5, 1.0, 2.0, 3.0, 3.0, 0.5]


def test_a_fixed_back_off_never_grows() -> None:
    stop = RecordingStop()
    loop = Scripted([RuntimeError(), RuntimeError(), RuntimeError()])
    LoopRunner(loop, stop, backoff=Backoff(first=5.0, most=5.0)).run()
    assert stop.waits == [5.0, 5.0, 5.0]


def test_a_stop_during_the_back_off_ends_the_loop_without_another_round() -> None:
    stop = RecordingStop(stop_at=2)
    loop = Scripted([RuntimeError(), db_error(), 0, 0])
    LoopRunner(loop, stop).run()
    assert loop.rounds == 2 and len(stop.waits) == 2


def test_a_stop_during_a_round_s_wait_ends_the_loop() -> None:
    stop = RecordingStop(stop_at=1)
    loop = Scripted([1.0, 1.0, 1.0])
    LoopRunner(loop, stop).run()
    assert loop.rounds == 1 and stop.waits == [1.0]


def test_a_loop_stopped_before_it_starts_runs_no_round() -> None:
    stop = RecordingStop()
    stop.set()
    loop = Scripted([0])
    LoopRunner(loop, stop).run()
    assert loop.rounds == 0 and stop.waits == []


def test_start_after_waits_before_the_first_round_and_a_stop_meanwhile_runs_none() -> None:
    stop = RecordingStop()
    loop = Scripted([0])
    LoopRunner(loop, stop, start_after=600.0).run()
    assert stop.waits == [600.0] and loop.rounds == 2

    stopped = RecordingStop(stop_at=1)
    loop = Scripted([0])
    LoopRunner(loop, stopped, start_after=600.0).run()
    assert loop.rounds == 0


def test_base_exceptions_are_not_swallowed() -> None:
    """KeyboardInterrupt and SystemExit end the thread as they always did: the guard is for errors."""
    loop = Scripted([KeyboardInterrupt()])
    with pytest.raises(KeyboardInterrupt):
        LoopRunner(loop, RecordingStop()).run()


def test_failures_are_reported_on_the_logger_given(caplog: pytest.LogCaptureFixture) -> None:
    mine = logging.getLogger("mediamill.test-loops")
    with caplog.at_level(logging.WARNING):
        LoopRunner(Scripted([RuntimeError()]), RecordingStop(), logger=mine).run()
    assert [r.name for r in caplog.records] == ["mediamill.test-loops"]


def test_periodic_calls_its_function_each_round_and_asks_for_its_interval() -> None:
    calls: list[int] = []
    loop = Periodic("tick", lambda: calls.append(1), 30.0)
    stop = RecordingStop(stop_at=3)
    LoopRunner(loop, stop).run()
    assert calls == [1, 1, 1] and stop.waits == [30.0, 30.0, 30.0]


def test_periodic_that_fails_waits_its_back_off_then_runs_again() -> None:
    outcomes: list[BaseException | None] = [OSError("disk"), None]
    calls = []

    def chore() -> None:
        calls.append(1)
        got = outcomes.pop(0)
        if got is not None:
            raise got

    stop = RecordingStop(stop_at=2)
    LoopRunner(Periodic("chore", chore, 600.0), stop, backoff=Backoff(first=600.0, most=600.0)).run()
    assert len(calls) == 2 and stop.waits == [600.0, 600.0]


def test_the_runner_owns_a_named_daemon_thread_that_a_stop_ends() -> None:
    stop = threading.Event()
    entered = threading.Event()

    class Waiting:
        name = "waiting"

        def run_once(self) -> float:
            entered.set()
            return 3600.0  # the stop cuts this short

    loop: Loop = Waiting()
    runner = LoopRunner(loop, stop, thread_name="mm-waiting")
    assert runner.name == "mm-waiting" and runner.thread.daemon and not runner.is_alive()
    runner.start()
    assert entered.wait(10)
    assert runner.is_alive()
    stop.set()
    runner.join(10)
    assert not runner.is_alive()


def test_a_thread_survives_crashes_and_keeps_working() -> None:
    """In a real thread: rounds that crash do not kill it (a dead thread is what health() reports)."""
    stop = threading.Event()
    done = threading.Event()
    loop = Scripted([RuntimeError("one"), db_error(), RuntimeError("three"), 0])
    original = loop.run_once

    def counted() -> float | None:
        got = original()
        if got is None:
            done.set()
        return got

    loop.run_once = counted  # type: ignore[method-assign]
    runner = LoopRunner(loop, stop, backoff=Backoff(first=0.001, most=0.001)).start()
    assert done.wait(10)
    runner.join(10)
    assert not runner.is_alive() and loop.rounds == 5
