"""Async I/O: the function class and the retry strategies of ``DataStream.async_map``.

``async_map`` calls an outside service (a database, an HTTP API, a model server) for
each record, with up to ``capacity`` calls in flight per subtask, as Flink's Async I/O
(``AsyncDataStream.orderedWait`` / ``unorderedWait``). The function is an ``async def``
of one record, or an ``AsyncFunction`` with ``async_invoke(value)`` and optional
``open(ctx)``, ``timeout(value)`` and ``close()``. It returns one output record, or a
``list`` of output records (zero or more; wrap a list in a list to emit it as one record).

Retries follow Flink's ``AsyncRetryStrategy``: a strategy says how many attempts a call
gets, how long to wait before the next one, and which results and exceptions to retry
(``FixedDelayRetry``, ``ExponentialBackoffRetry``; predicates ``retry_on_result`` and
``retry_on_exception``). The operator itself lives in ``runtime.tasks.async_wait``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from runtime.errors import ConfigError
from runtime.tasks.functions import Function

if TYPE_CHECKING:
    from runtime.tasks.context import RuntimeContext

IN = TypeVar("IN")
OUT = TypeVar("OUT")

ResultPredicate = Callable[[Any], bool]
"""Given a call's result, whether to call again."""
ExceptionPredicate = Callable[[BaseException], bool]
"""Given a call's exception, whether to call again (else the operator fails)."""


class AsyncFunction(Function, Generic[IN, OUT]):
    """A function class for ``async_map``: one asynchronous call per record.

    Each subtask works on its own copy, made before ``open``. ``open``, ``timeout`` and
    ``close`` may be plain or ``async def``; ``async_invoke`` must be ``async def``.
    Many ``async_invoke`` calls run at once (up to the operator's ``capacity``), so
    keep per-call data in locals, not in attributes.
    """

    def open(self, ctx: RuntimeContext) -> Awaitable[None] | None:
        """Called once per subtask before the first call (create clients here)."""
        return None

    async def async_invoke(self, value: IN) -> OUT | list[OUT]:
        """Call the service for one record; return one output, or a list of outputs."""
        raise NotImplementedError

    def timeout(self, value: IN) -> OUT | list[OUT] | Awaitable[OUT | list[OUT]]:
        """The call for ``value`` timed out: return its outputs, or raise to fail.

        The default raises ``TimeoutError``, which fails the operator with the
        operator, subtask and record named (as Flink's default ``timeout``).
        """
        raise TimeoutError("the asynchronous call timed out")

    def close(self) -> Awaitable[None] | None:
        """Called once per subtask after the last call (close clients here)."""
        return None


@dataclass(frozen=True, slots=True)
class RetryStrategy:
    """When and how often to call again. Use a subclass.

    Attributes:
        max_attempts: calls per record, the first included (at least 1).
        retry_on_result: results to retry (e.g. ``lambda r: r is None``); None: none.
        retry_on_exception: exceptions to retry; None: every ``Exception``.
    """

    max_attempts: int = 3
    retry_on_result: ResultPredicate | None = None
    retry_on_exception: ExceptionPredicate | None = None

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based) before the next."""
        raise NotImplementedError

    def can_retry(self, attempt: int) -> bool:
        """Whether attempt ``attempt`` (1-based, just made) may be followed by another."""
        return attempt < self.max_attempts

    def should_retry_result(self, result: Any) -> bool:
        """Whether ``result`` asks for another attempt."""
        predicate = self.retry_on_result
        return predicate is not None and bool(predicate(result))

    def should_retry_exception(self, error: BaseException) -> bool:
        """Whether ``error`` asks for another attempt."""
        predicate = self.retry_on_exception
        return True if predicate is None else bool(predicate(error))

    def check(self, operator: str) -> None:
        """Raise ``ConfigError`` naming ``operator`` and the option if invalid."""
        _check_int(operator, "max_attempts", self.max_attempts)
        for option in ("retry_on_result", "retry_on_exception"):
            value = getattr(self, option)
            if value is not None and not callable(value):
                raise ConfigError(
                    f"operator {operator!r}: retry {option} must be a function of one "
                    f"argument returning a bool, got {type(value).__name__}"
                )


@dataclass(frozen=True, slots=True)
class FixedDelayRetry(RetryStrategy):
    """Retry after the same delay each time (Flink's ``FixedDelayRetryStrategy``).

    Attributes:
        backoff: seconds between attempts (>= 0).
    """

    backoff: float = 0.1

    def delay(self, attempt: int) -> float:
        """Always ``backoff``."""
        return self.backoff

    def check(self, operator: str) -> None:
        """Validate ``max_attempts``, the predicates and ``backoff``."""
        RetryStrategy.check(self, operator)
        _check_seconds(operator, "backoff", self.backoff)


@dataclass(frozen=True, slots=True)
class ExponentialBackoffRetry(RetryStrategy):
    """Retry with a delay that grows by ``multiplier`` up to ``max_backoff``.

    As Flink's ``ExponentialBackoffDelayRetryStrategy``.

    Attributes:
        initial_backoff: seconds before the second attempt (>= 0).
        max_backoff: the longest delay (>= initial_backoff).
        multiplier: growth per attempt (>= 1).
    """

    initial_backoff: float = 0.05
    max_backoff: float = 2.0
    multiplier: float = 2.0

    def delay(self, attempt: int) -> float:
        """``initial_backoff * multiplier ** (attempt - 1)``, at most ``max_backoff``."""
        return min(self.max_backoff, self.initial_backoff * self.multiplier ** (attempt - 1))

    def check(self, operator: str) -> None:
        """Validate every option."""
        RetryStrategy.check(self, operator)
        _check_seconds(operator, "initial_backoff", self.initial_backoff)
        _check_seconds(operator, "max_backoff", self.max_backoff)
        if self.max_backoff < self.initial_backoff:
            raise ConfigError(
                f"operator {operator!r}: retry max_backoff ({self.max_backoff}) is smaller "
                f"than initial_backoff ({self.initial_backoff}); raise max_backoff"
            )
        if not _is_number(self.multiplier) or self.multiplier < 1:
            raise ConfigError(
                f"operator {operator!r}: retry multiplier must be a number >= 1, "
                f"got {self.multiplier!r}"
            )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _check_int(operator: str, option: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(
            f"operator {operator!r}: retry {option} must be an int >= 1, got {value!r}"
        )


def _check_seconds(operator: str, option: str, value: object) -> None:
    if not _is_number(value) or value < 0 or value != value:  # type: ignore[operator]
        raise ConfigError(
            f"operator {operator!r}: retry {option} must be a number of seconds >= 0, got {value!r}"
        )


@dataclass(frozen=True, slots=True)
class AsyncOptions:
    """The validated options of one ``async_map``.

    Attributes:
        capacity: calls in flight per subtask.
        ordered: emit in input order (else as calls complete).
        timeout: seconds per record, retries included; None: no timeout.
        retry: the retry strategy, or None.
    """

    capacity: int
    ordered: bool
    timeout: float | None
    retry: RetryStrategy | None


def check_async_options(
    operator: str, capacity: object, ordered: object, timeout: object, retry: object
) -> AsyncOptions:
    """Validate ``async_map``'s options at build time.

    Raises:
        ConfigError: naming the operator and the option at fault.
    """
    if not isinstance(capacity, int) or isinstance(capacity, bool) or capacity < 1:
        raise ConfigError(
            f"operator {operator!r}: capacity must be an int >= 1 (calls in flight per "
            f"subtask), got {capacity!r}"
        )
    if not isinstance(ordered, bool):
        raise ConfigError(f"operator {operator!r}: ordered must be True or False, got {ordered!r}")
    if timeout is not None and (not _is_number(timeout) or not timeout > 0):  # type: ignore[operator]
        raise ConfigError(
            f"operator {operator!r}: timeout must be a positive number of seconds or None, "
            f"got {timeout!r}"
        )
    if retry is not None:
        if not isinstance(retry, RetryStrategy) or type(retry) is RetryStrategy:
            raise ConfigError(
                f"operator {operator!r}: retry must be a FixedDelayRetry or an "
                f"ExponentialBackoffRetry (a RetryStrategy subclass), got "
                f"{type(retry).__name__}"
            )
        retry.check(operator)
    return AsyncOptions(capacity, ordered, None if timeout is None else float(timeout), retry)  # type: ignore[arg-type]


def timeout_hook(owner: object) -> Callable[[Any], Any] | None:
    """The function object's own ``timeout(value)``, or None (the default fails)."""
    hook = getattr(owner, "timeout", None)
    if hook is None or not callable(hook):
        return None
    if isinstance(owner, AsyncFunction) and type(owner).timeout is AsyncFunction.timeout:
        return None
    return hook  # type: ignore[no-any-return]
