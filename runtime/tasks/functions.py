"""User functions: the shapes a job's logic may take, and how the runtime adapts them.

Each transformation accepts a plain function, an ``async def`` function, or an object of
a function class (``MapFunction``, ``FilterFunction``, ``FlatMapFunction``,
``ReduceFunction``, ``KeyedProcessFunction``, ``SinkFunction``). Function classes may
implement ``open(ctx)`` and ``close()`` (each plain or async), called once per subtask
before the first record and after the last; ``ctx`` is the subtask's ``RuntimeContext``,
which hands out state.

``adapt`` checks at build time that a function can take the arguments it will be given
and reports a ``ConfigError`` naming the operator otherwise.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from runtime.errors import ConfigError

if TYPE_CHECKING:
    from runtime.tasks.context import RuntimeContext

IN = TypeVar("IN")
OUT = TypeVar("OUT")


class Function:
    """Base of function classes: optional ``open`` and ``close`` hooks."""

    def open(self, ctx: RuntimeContext) -> Awaitable[None] | None:
        """Called once per subtask before the first record. May be ``async``."""
        return None

    def finish(self) -> Awaitable[None] | None:
        """Called once per subtask when its input ended (not after a failure)."""
        return None

    def close(self) -> Awaitable[None] | None:
        """Called once per subtask after the last record (not after a failure)."""
        return None


class MapFunction(Function, Generic[IN, OUT]):
    """One record in, one record out. ``map`` may be ``async def``."""

    def map(self, value: IN) -> OUT | Awaitable[OUT]:
        """Transform one record."""
        raise NotImplementedError


class FilterFunction(Function, Generic[IN]):
    """Keep the records for which ``filter`` returns true. May be ``async def``."""

    def filter(self, value: IN) -> bool | Awaitable[bool]:
        """Decide whether to keep one record."""
        raise NotImplementedError


class FlatMapFunction(Function, Generic[IN, OUT]):
    """One record in, any number out: ``flat_map`` returns an iterable (or None)."""

    def flat_map(self, value: IN) -> Iterable[OUT] | Awaitable[Iterable[OUT] | None] | None:
        """Transform one record into zero or more."""
        raise NotImplementedError


class ReduceFunction(Function, Generic[IN]):
    """Combine two values of a key into one (``reduce(accumulated, new)``)."""

    def reduce(self, accumulated: IN, value: IN) -> IN:
        """Combine the running value with a new record."""
        raise NotImplementedError


class KeyedProcessFunction(Function, Generic[IN, OUT]):
    """Per-record logic on a keyed stream, with keyed state from ``ctx.get_state``.

    ``process_element(value, ctx)`` returns an iterable of output records (or None), and
    may be ``async def``. During the call, ``ctx.current_key`` is the record's key and
    every keyed state handle reads and writes that key's value.
    """

    def process_element(
        self, value: IN, ctx: RuntimeContext
    ) -> Iterable[OUT] | Awaitable[Iterable[OUT] | None] | None:
        """Process one record of the current key."""
        raise NotImplementedError


class SinkFunction(Function, Generic[IN]):
    """Writes records out. Implement ``invoke`` (one record) or ``write_batch`` (a buffer).

    Either may be ``async def``. ``write_batch`` defaults to calling ``invoke`` per record.
    """

    def invoke(self, value: IN) -> Awaitable[None] | None:
        """Write one record."""
        raise NotImplementedError

    def write_batch(self, values: list[IN]) -> Awaitable[None] | None:
        """Write a buffer of records, in order. Defaults to ``invoke`` per record."""
        raise NotImplementedError


class CheckpointedFunction(Protocol):
    """A user function with state hooks (Flink's ``CheckpointedFunction``).

    ``initialize_state(ctx)`` is called once per subtask before ``open`` (after a restore,
    the state it finds is the restored one); ``snapshot_state(checkpoint_id)`` is called
    at each checkpoint before the subtask's state is snapshotted. Either may be defined
    without the other; ``UserHooks`` finds them.
    """

    def initialize_state(self, ctx: RuntimeContext) -> Awaitable[None] | None:
        """Create or restore the function's state."""
        ...

    def snapshot_state(self, checkpoint_id: int) -> None:
        """Bring the function's state up to date for checkpoint ``checkpoint_id``."""
        ...


class CheckpointListener(Protocol):
    """A user function told of a checkpoint's fate (Flink's ``CheckpointListener``).

    ``notify_checkpoint_complete`` follows the completion of a checkpoint the subtask took
    part in (at least once, maybe for a later one only); ``notify_checkpoint_aborted``
    follows its abortion. Either may be defined without the other.
    """

    def notify_checkpoint_complete(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` is complete (e.g. commit its transactions)."""
        ...

    def notify_checkpoint_aborted(self, checkpoint_id: int) -> None:
        """Checkpoint ``checkpoint_id`` was aborted."""
        ...


@dataclass(frozen=True, slots=True)
class UserHooks:
    """The hooks a user function object defines, looked up once by name.

    The seam between an operator and its user function: the lifecycle of ``Function``
    (``open``, ``finish``, ``close``), ``CheckpointedFunction``, ``CheckpointListener``,
    and ``after_acknowledge`` (a test hook). Each is optional on its own: ``None`` where
    the function does not define it.
    """

    initialize_state: Callable[[RuntimeContext], Awaitable[None] | None] | None = None
    open: Callable[[RuntimeContext], Awaitable[None] | None] | None = None
    finish: Callable[[], Awaitable[None] | None] | None = None
    close: Callable[[], Awaitable[None] | None] | None = None
    snapshot_state: Callable[[int], None] | None = None
    notify_checkpoint_complete: Callable[[int], None] | None = None
    after_acknowledge: Callable[[int], None] | None = None
    notify_checkpoint_aborted: Callable[[int], None] | None = None

    @classmethod
    def of(cls, owner: object | None) -> UserHooks:
        """The hooks of ``owner`` (none for a plain function)."""
        if owner is None:
            return _NO_HOOKS
        return cls(**{name: getattr(owner, name, None) for name in cls.__slots__})


_NO_HOOKS = UserHooks()


@dataclass(slots=True)
class Adapted:
    """A user function bound to the method the runtime calls.

    Attributes:
        call: the per-record callable.
        is_async: whether ``call`` returns an awaitable.
        owner: the function object with ``open``/``close``, if any.
    """

    call: Callable[..., Any]
    is_async: bool
    owner: Function | None


def _is_async(fn: Callable[..., Any]) -> bool:
    if inspect.isasyncgenfunction(fn):
        return True
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - an object with an async __call__
    )


def check_arity(fn: Callable[..., Any], nargs: int, what: str, operator: str) -> None:
    """Raise ``ConfigError`` if ``fn`` cannot be called with ``nargs`` positional arguments.

    Functions whose signature Python cannot inspect (some builtins) are accepted.
    """
    if not callable(fn):
        raise ConfigError(
            f"operator {operator!r}: {what} must be callable, got {type(fn).__name__}"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    try:
        signature.bind(*([None] * nargs))
    except TypeError as error:
        name = getattr(fn, "__qualname__", repr(fn))
        raise ConfigError(
            f"operator {operator!r}: {what} {name}{signature} cannot take {nargs} "
            f"positional argument{'s' if nargs != 1 else ''} ({error}); "
            f"give it a signature like ({', '.join(['value', 'ctx', 'x'][:nargs])})"
        ) from None


def adapt(
    fn: object, method: str, nargs: int, what: str, operator: str, base: type[Function]
) -> Adapted:
    """Bind ``fn`` (a callable or a ``base`` object) to its per-record callable.

    Args:
        fn: what the user passed.
        method: the method name on function classes (``"map"``, ``"filter"``...).
        nargs: how many positional arguments the runtime passes.
        what: a description for errors (``"the map function"``).
        operator: the operator's name, for errors.
        base: the function class that defines ``method``.

    Raises:
        ConfigError: ``fn`` is neither a callable nor an object with ``method``, or cannot
            take ``nargs`` arguments.
    """
    if isinstance(fn, Function):
        bound = getattr(fn, method, None)
        if bound is None or getattr(type(fn), method, None) is getattr(base, method, None):
            raise ConfigError(
                f"operator {operator!r}: {type(fn).__name__} must implement {method}()"
            )
        check_arity(bound, nargs, what, operator)
        return Adapted(bound, _is_async(bound), fn)
    if hasattr(fn, method) and not callable(fn):
        bound = getattr(fn, method)
        check_arity(bound, nargs, what, operator)
        owner = fn if hasattr(fn, "open") or hasattr(fn, "close") else None
        return Adapted(bound, _is_async(bound), owner)  # type: ignore[arg-type]
    if not callable(fn):
        raise ConfigError(
            f"operator {operator!r}: {what} must be a function or a {base.__name__}, "
            f"got {type(fn).__name__}"
        )
    check_arity(fn, nargs, what, operator)
    return Adapted(fn, _is_async(fn), None)


async def maybe_await(value: object) -> Any:
    """Await ``value`` if it is awaitable, else return it."""
    if inspect.isawaitable(value):
        return await value
    return value
