"""Supervision: run a group of actors in one anyio task group, fail and cancel as one.

``Supervisor.run`` starts every actor's ``run`` in one task group and returns when all
finished. When one raises, the supervisor remembers it as the group's failure (the
first one wins; later errors caused by the cancellation are not reported), calls
``on_cancel`` on every actor, cancels the group, waits until every task has ended, and
raises ``ActorFailedError`` naming the actor. ``cancel`` (for a job cancelled by its
user) does the same without a failure. No task outlives ``run``.
"""

from __future__ import annotations

from collections.abc import Sequence

import anyio
from anyio.abc import TaskGroup

from actors.actor import Actor, ActorState
from actors.errors import ActorFailedError


def unwrap_group(error: BaseException) -> BaseException:
    """The first error inside (nested) exception groups that is not a cancellation.

    An actor that runs its own task group raises its failure wrapped in an
    ``ExceptionGroup``; the job reports the failure itself.
    """
    while isinstance(error, BaseExceptionGroup):
        inner = [e for e in error.exceptions if not isinstance(e, anyio.get_cancelled_exc_class())]
        if not inner:
            return error
        error = inner[0]
    return error


class Supervisor:
    """Runs and supervises a group of actors.

    Args:
        actors: the group; their names should be unique.
    """

    def __init__(self, actors: Sequence[Actor]) -> None:
        self.actors = list(actors)
        self._task_group: TaskGroup | None = None
        self._failure: tuple[Actor, BaseException] | None = None
        self._cancel_requested = False
        self._stopping = False

    @property
    def failure(self) -> tuple[Actor, BaseException] | None:
        """The actor that failed first and its exception, if any."""
        return self._failure

    @property
    def cancelled(self) -> bool:
        """Whether ``cancel`` was called."""
        return self._cancel_requested

    async def run(self) -> None:
        """Run every actor until all finished, one failed, or ``cancel`` was called.

        Raises:
            ActorFailedError: an actor raised; every other actor was cancelled first.
        """
        async with anyio.create_task_group() as group:
            self._task_group = group
            for actor in self.actors:
                group.start_soon(self._run_one, actor, name=actor.name)
            if self._cancel_requested:
                self._stop()
        self._task_group = None
        if self._failure is not None:
            actor, error = self._failure
            raise ActorFailedError(actor.name, error) from error

    def cancel(self) -> None:
        """Cancel every actor. Never blocks; ``run`` returns once all have stopped."""
        self._cancel_requested = True
        if self._task_group is not None:
            self._stop()

    def _stop(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        for actor in self.actors:
            if not actor.state.is_terminal:
                actor.on_cancel()
        assert self._task_group is not None
        self._task_group.cancel_scope.cancel()

    async def _run_one(self, actor: Actor) -> None:
        if self._stopping:
            # anyio cancels only tasks that have started: a task that takes its first
            # step after the group stopped must not run the actor's body.
            actor._mark_stopped(ActorState.CANCELLED)
            return
        actor._mark_started()
        try:
            await actor.run()
        except anyio.get_cancelled_exc_class():
            actor._mark_stopped(ActorState.CANCELLED)
            raise
        except Exception as error:
            actor._mark_stopped(ActorState.FAILED)
            if self._failure is None and not self._stopping:
                self._failure = (actor, unwrap_group(error))
            self._stop()
            return
        actor._mark_stopped(ActorState.FINISHED)
