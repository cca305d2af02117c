"""What the core tells the faces: event kinds, statuses, and the event stream of a handle.

A handle (:class:`~womm_jupyter.Run`, :class:`~womm_jupyter.kuboid.experiment.Experiment`)
starts its work on a thread of its own and returns at once (ipyparallel's ``AsyncResult``).
Its work publishes events; a face either iterates :meth:`EventStream.events` on its own
thread (the CLI, a blocking magic) or adds listeners (widgets). :class:`EventStream` is that
machinery, written once: the queue, the listeners, the end-of-stream marker and
``done``/``wait``/``result``/``cancel``.

The vocabularies are ``StrEnum``s: each member equals its string, so ``event.kind ==
"progress"`` and rendered text (``f"{status}"``) are what they were with plain strings.
"""

from __future__ import annotations

import abc
import enum
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Generic, Protocol, TypeVar

__all__ = ["EventKind", "EventStream", "HandleStatus", "TaskStatus"]


class EventKind(enum.StrEnum):
    """What an event reports (``Event.kind``, ``ExperimentEvent.kind``)."""

    # a run (`womm parallel`): text to show
    BACKEND = "backend"
    CREATED = "created"
    DELETED = "deleted"
    READY = "ready"
    LOST = "lost"
    SHARE = "share"
    # a run: data
    STDOUT = "stdout"  # data: bytes
    STDERR = "stderr"  # data: bytes
    RECORD = "record"  # data: JobRecord
    PROGRESS = "progress"  # data: the handle's progress counts
    # an experiment
    STARTED = "started"
    COMPLETED = "completed"
    RESCHEDULED = "rescheduled"
    RETRY = "retry"
    FAILED = "failed"
    WAITING = "waiting"
    # the last event of every stream (listeners get it; events() stops before it)
    FINISHED = "finished"


class HandleStatus(enum.StrEnum):
    """A handle's ``status``: ``running`` until its work ends."""

    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class TaskStatus(enum.StrEnum):
    """A task's STATUS in `womm status`."""

    RUNNING = "RUNNING"
    COMPLETE = "COMPLETE"  # ended; awaiting `womm finish` (an --async task)
    ORPHANED = "ORPHANED"  # its coordinator is gone but its objects remain


class _Event(Protocol):
    @property
    def kind(self) -> str: ...


E = TypeVar("E", bound=_Event)
R = TypeVar("R")


class EventStream(Generic[E, R], abc.ABC):
    """The event side of a handle: a subclass's work thread calls :meth:`_publish` for each
    event and :meth:`_end` once at the very end; faces call the public methods.

    Parameters
    ----------
    finished:
        the end-of-stream event (kind ``finished``), given to listeners last; the one object
        :meth:`events` stops at.
    """

    def __init__(self, finished: E) -> None:
        self.status = HandleStatus.RUNNING
        self.error: BaseException | None = None
        self._finished_event = finished
        self._events: queue.Queue[E] = queue.Queue()
        self._listeners: list[Callable[[E], None]] = []
        self._done = threading.Event()

    # -- the work's thread ------------------------------------------------------------------
    def _publish(self, event: E) -> None:
        self._events.put(event)
        self._notify(event)

    def _notify(self, event: E) -> None:
        for listener in list(self._listeners):
            listener(event)

    def _end(self) -> None:
        """Mark the work as ended: ``wait()`` returns, ``events()`` stops, listeners get the
        ``finished`` event."""
        self._done.set()
        self._publish(self._finished_event)

    # -- faces ------------------------------------------------------------------------------
    def add_listener(self, listener: Callable[[E], None]) -> None:
        """Call ``listener(event)`` for each later event (the ``finished`` one last), on the
        work's threads. Widgets use it; it must be quick."""
        self._listeners.append(listener)

    def events(self) -> Iterator[E]:
        """Every event until the work ends. Meant for one consumer."""
        while True:
            event = self._events.get()
            if event is self._finished_event:
                return
            yield event

    def done(self) -> bool:
        """Whether the work has ended (and cleaned up)."""
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the work ends (or ``timeout`` seconds); True when it ended."""
        return self._done.wait(timeout)

    def result(self) -> R:
        """Wait; return the outcome (:meth:`_outcome`), or raise what stopped the work (a
        WommError or a bug)."""
        self.wait()
        if self.error is not None:
            raise self.error
        return self._outcome()

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop the work; it cleans up and then ends the stream."""

    @abc.abstractmethod
    def _outcome(self) -> R:
        """What :meth:`result` returns once the work ended without an error."""
