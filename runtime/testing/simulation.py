"""Deterministic simulation: run a job on virtual time with a seeded scheduler.

``simulate(seed)`` gives a ``Simulation``, which runs a coroutine (a whole job, or a
check of one) on a ``SimulationLoop``: an asyncio selector loop whose clock is virtual
and whose ready callbacks run in an order chosen by a seeded random generator.

* **Virtual time.** ``loop.time()`` starts at 0 and moves only when every task waits:
  the loop then jumps to the next timer. A 10-minute checkpoint interval, a rate limit
  or a 30 s timeout costs no real time. While a simulation runs, the runtime's direct
  reads of the clock (``time.monotonic``, ``time.perf_counter``, ``time.time`` in
  ``runtime``, ``storage`` and ``actors``, including clocks bound as default
  arguments) read the virtual clock on the simulation's thread and the real one on any
  other thread.
* **Seeded scheduling.** In each turn of the loop, the callbacks that are ready (task
  steps, wake-ups, due timers) are put in a canonical order (tasks by creation order)
  and shuffled by the seeded generator. Timers fire late by a seeded fraction of their
  delay (``jitter``, 10 % by default), as they do on a real machine: without it, two
  rate-limited sources would interleave the same way under every seed. The same seed,
  job and failure schedule give the same interleaving, the same checkpoints and the
  same output, bit for bit (in one process; across processes, also fix
  ``PYTHONHASHSEED``).
* **Worker threads run inline.** ``anyio.to_thread.run_sync``, ``asyncio.to_thread``
  and ``loop.run_in_executor`` run their function at once on the loop's thread (file
  checkpoint storage, the changelog backend's uploads), then yield once, as the hop did.
  ``uuid.uuid4`` draws from a second seeded generator, so job ids and file names repeat.
* **Refused, with a ``SimulationError`` naming the subtask:** the RocksDB state backend
  (its flushes and compactions run on RocksDB's own threads, which no loop controls),
  real sockets and servers (``create_connection``, ``getaddrinfo``, ``sock_*``,
  ``create_server``, and blocking ``socket.connect`` on the simulation's thread, as a
  client library called through a thread hop does), subprocesses and file-descriptor
  watchers; so an ``async_map`` that
  calls a real service is refused too. Run those jobs on real time (``simulate=False``).
* **Not controlled:** randomness the simulation does not hand out: an unseeded
  ``random.Random()`` (``ExponentialDelayRestart`` without ``seed``, a user function),
  ``os.urandom``, ``secrets`` (savepoint folder names). Seed them. Sets of ids iterate
  the same way in every run (ints and tuples hash the same); sets of strings depend on
  ``PYTHONHASHSEED`` across processes.
* **Watchdog.** A simulation that spins without ending (tasks that only yield) stops
  after ``real_timeout`` seconds of real time with a ``SimulationError``; a job that
  waits forever reaches its virtual timeout at once instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import random
import socket
import sys
import threading
import time
import types
import uuid
import weakref
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

import anyio.to_thread

from runtime.errors import ConfigError

T = TypeVar("T")

EPOCH = 1_700_000_000.0
"""What ``time.time()`` reads at virtual time 0 (a fixed wall clock)."""

TICK = 0.001
"""Seconds: timers due within (a seeded part of) a tick of the one the loop jumps to run
in the same turn."""

REFUSED_MODULES = ("storage.rocksdb",)
"""Code that cannot be simulated: worker-thread calls into these modules are refused."""

SIMULATED_PACKAGES = ("runtime", "storage", "actors")
"""Packages whose clock reads are virtual during a simulation."""

_real_monotonic = time.monotonic
_real_perf_counter = time.perf_counter
_real_time = time.time
_real_uuid4 = uuid.uuid4
_real_run_sync = anyio.to_thread.run_sync
_real_asyncio_to_thread = asyncio.to_thread
_real_socket_connect = socket.socket.connect
_real_socket_connect_ex = socket.socket.connect_ex


class SimulationError(ConfigError):
    """A job did something a simulation cannot reproduce, or the simulation got stuck."""


def _task_name() -> str:
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return "the job" if task is None else f"subtask {task.get_name()!r}"


def _running_simulation() -> SimulationLoop | None:
    loop = asyncio._get_running_loop()
    return loop if isinstance(loop, SimulationLoop) else None


def _refused(error: SimulationError) -> SimulationError:
    # Kept on the loop: the job may catch the error, or fail and restart, but the
    # simulation still ends with it (Simulation.run raises it).
    loop = _running_simulation()
    if loop is not None and loop.refused is None:
        loop.refused = error
    return error


class SimulationLoop(asyncio.SelectorEventLoop):
    """An event loop with a virtual clock and a seeded order among ready callbacks.

    Args:
        seed: the seed of the scheduler (and of ``uuid.uuid4`` in the simulation).
        real_timeout: seconds of real time the loop may run before it gives up.
        jitter: timers fire late by up to this fraction of their delay (seeded).
        tick: when the loop jumps to a timer, the timers due within a seeded part of
            this many seconds after it run in the same turn.
    """

    def __init__(
        self,
        seed: int = 0,
        *,
        real_timeout: float = 120.0,
        jitter: float = 0.1,
        tick: float = TICK,
    ) -> None:
        super().__init__()
        self.tick = tick
        self.seed = seed
        self.real_timeout = real_timeout
        self.jitter = jitter
        self._now = 0.0
        self._turns = 0
        self._real_started = _real_perf_counter()
        self._ordinals: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = (
            weakref.WeakKeyDictionary()
        )
        self._created = 0
        self.refused: SimulationError | None = None
        self.reseed(seed)
        self.set_task_factory(self._make_task)

    def reseed(self, seed: int, stream: int = 0) -> None:
        """Restart the scheduler's random choices from ``(seed, stream)``."""
        self.seed = seed
        self._rng = random.Random(f"weir-schedule-{seed}-{stream}")
        self._ids = random.Random(f"weir-ids-{seed}-{stream}")
        self._timing = random.Random(f"weir-timing-{seed}-{stream}")

    def call_at(  # type: ignore[override]
        self, when: float, callback: Callable[..., object], *args: Any, context: Any = None
    ) -> asyncio.TimerHandle:
        """Schedule ``callback`` at virtual time ``when``, late by the seeded jitter."""
        if when > self._now:
            when += ((when - self._now) * self.jitter + self.tick) * self._timing.random()
        return super().call_at(when, callback, *args, context=context)

    def uuid4(self) -> uuid.UUID:
        """A version-4 UUID drawn from the simulation's seeded generator."""
        return uuid.UUID(int=self._ids.getrandbits(128), version=4)

    @property
    def turns(self) -> int:
        """How many turns the loop took (for statistics)."""
        return self._turns

    def time(self) -> float:
        """The virtual clock, in seconds since the simulation started."""
        return self._now

    def _make_task(self, loop: asyncio.AbstractEventLoop, coro: Any, **kwargs: Any) -> Any:
        task = asyncio.Task(coro, loop=loop, **kwargs)
        self._ordinals[task] = self._created
        self._created += 1
        return task

    def _order(self, handle: asyncio.Handle) -> int:
        owner = getattr(handle._callback, "__self__", None)  # type: ignore[attr-defined]
        if isinstance(owner, asyncio.Task):
            return self._ordinals.get(owner, -1)
        return -1

    def _run_once(self) -> None:
        # The scheduling turn of BaseEventLoop._run_once, with time jumping ahead when
        # nothing is ready and the ready callbacks shuffled by the seeded generator.
        self._turns += 1
        if self._turns & 0xFFF == 0 and _real_perf_counter() - self._real_started > (
            self.real_timeout
        ):
            raise SimulationError(
                f"the simulation (seed {self.seed}) ran {self.real_timeout:g} s of real time "
                f"without ending, at virtual time {self._now:.3f} s: a task that only yields "
                f"(asyncio.sleep(0) in a loop) never lets virtual time move"
            )
        scheduled: list[Any] = self._scheduled  # type: ignore[attr-defined]
        while scheduled and scheduled[0]._cancelled:
            self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
            handle = heapq.heappop(scheduled)
            handle._scheduled = False
        ready: Any = self._ready  # type: ignore[attr-defined]
        event_list = self._selector.select(0)  # type: ignore[attr-defined]
        self._process_events(event_list)  # type: ignore[attr-defined]
        if not ready and scheduled and not self._stopping:  # type: ignore[attr-defined]
            # Jump to the next timer, and a seeded part of a tick past it: timers due
            # by then run in the same turn, as on a real loop that finds several due
            # when it wakes (how many varies, so interleavings do).
            tick = self.tick * self._timing.random()
            self._now = max(self._now, scheduled[0]._when + tick)
        end = self._now + self._clock_resolution  # type: ignore[attr-defined]
        while scheduled:
            handle = scheduled[0]
            if handle._when >= end:
                break
            handle = heapq.heappop(scheduled)
            handle._scheduled = False
            if handle._cancelled:
                self._timer_cancelled_count -= 1  # type: ignore[attr-defined]
                continue
            ready.append(handle)
        if not ready:
            if not scheduled and not self._stopping:  # type: ignore[attr-defined]
                raise SimulationError(
                    f"the simulation (seed {self.seed}) is deadlocked at virtual time "
                    f"{self._now:.3f} s: every task waits and no timer is due"
                )
            return
        batch = list(ready)
        ready.clear()
        batch.sort(key=self._order)
        self._rng.shuffle(batch)
        for handle in batch:
            if not handle._cancelled:
                handle._run()

    def run_in_executor(self, executor: Any, func: Callable[..., T], *args: Any) -> Any:  # type: ignore[override]
        """Run ``func`` inline (no worker thread in a simulation); a finished future."""
        _check_simulatable(func)
        future = self.create_future()
        try:
            future.set_result(func(*args))
        except Exception as error:  # handed to the awaiting task
            future.set_exception(error)
        return future

    def _refuse(self, what: str) -> SimulationError:
        return _refused(
            SimulationError(
                f"{_task_name()} uses {what}, which a simulation cannot run: real sockets, "
                f"servers and subprocesses live on real time; replace the service with an "
                f"in-process fake, or run this job with simulate=False"
            )
        )

    async def getaddrinfo(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise self._refuse("getaddrinfo (a network name lookup)")

    async def create_connection(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise self._refuse("a network connection (loop.create_connection)")

    async def create_server(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise self._refuse("a server (loop.create_server)")

    async def create_unix_connection(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise self._refuse("a unix socket connection")

    async def create_datagram_endpoint(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise self._refuse("a datagram endpoint")

    async def sock_connect(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise self._refuse("a socket (loop.sock_connect)")

    async def sock_recv(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise self._refuse("a socket (loop.sock_recv)")

    async def sock_sendall(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise self._refuse("a socket (loop.sock_sendall)")

    async def subprocess_exec(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise self._refuse("a subprocess")

    async def subprocess_shell(self, *args: Any, **kwargs: Any) -> Any:  # noqa: D102
        raise self._refuse("a subprocess")

    def add_reader(self, fd: Any, *args: Any) -> None:  # type: ignore[override]  # noqa: D102
        raise self._refuse(f"a file descriptor watcher (add_reader on {fd!r})")

    def add_writer(self, fd: Any, *args: Any) -> None:  # type: ignore[override]  # noqa: D102
        raise self._refuse(f"a file descriptor watcher (add_writer on {fd!r})")


def _check_simulatable(func: Callable[..., Any]) -> None:
    target = func.func if isinstance(func, functools.partial) else func
    module = getattr(target, "__module__", None) or ""
    if module.startswith(REFUSED_MODULES):
        what = getattr(target, "__qualname__", target)
        raise _refused(
            SimulationError(
                f"{_task_name()} uses the RocksDB state backend ({what!r}), "
                f"which a simulation cannot run: RocksDB flushes and compacts on its own threads; "
                f"use state_backend='heap' in simulation, or run this job with simulate=False"
            )
        )


# -- the virtual clock and the inline thread hops, installed while a simulation runs --


def _monotonic() -> float:
    loop = _running_simulation()
    return _real_monotonic() if loop is None else loop.time()


def _perf_counter() -> float:
    loop = _running_simulation()
    return _real_perf_counter() if loop is None else loop.time()


def _wall_time() -> float:
    loop = _running_simulation()
    return _real_time() if loop is None else EPOCH + loop.time()


def _uuid4() -> uuid.UUID:
    loop = _running_simulation()
    return _real_uuid4() if loop is None else loop.uuid4()


async def _run_sync(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    if _running_simulation() is None:
        return await _real_run_sync(func, *args, **kwargs)
    _check_simulatable(func)
    result = func(*args)
    await asyncio.sleep(0)
    return result


async def _asyncio_to_thread(func: Callable[..., T], /, *args: Any, **kwargs: Any) -> T:
    if _running_simulation() is None:
        return await _real_asyncio_to_thread(func, *args, **kwargs)
    _check_simulatable(func)
    result = func(*args, **kwargs)
    await asyncio.sleep(0)
    return result


def _socket_connect(self: socket.socket, address: Any) -> None:
    loop = _running_simulation()
    if loop is not None:
        self.close()  # the caller (socket.create_connection) closes only on OSError
        raise loop._refuse(f"a blocking socket connection to {address!r}")
    return _real_socket_connect(self, address)


def _socket_connect_ex(self: socket.socket, address: Any) -> int:
    loop = _running_simulation()
    if loop is not None:
        self.close()  # the caller (socket.create_connection) closes only on OSError
        raise loop._refuse(f"a blocking socket connection to {address!r}")
    return _real_socket_connect_ex(self, address)


_CLOCKS: dict[Any, Any] = {
    _real_monotonic: _monotonic,
    _real_perf_counter: _perf_counter,
    _real_time: _wall_time,
}


def _is_clock(value: Any) -> bool:
    try:
        return callable(value) and not isinstance(value, type) and value in _CLOCKS
    except TypeError:  # an unhashable callable
        return False


Target = tuple[Any, str, Any, Any]
"""Where a clock is bound: (object, attribute, real value, virtual value)."""


def _default_targets(function: Any) -> list[Target]:
    targets: list[Target] = []
    for attribute in ("__defaults__", "__kwdefaults__"):
        values = getattr(function, attribute, None)
        if not values:
            continue
        if isinstance(values, tuple):
            if any(_is_clock(v) for v in values):
                swapped = tuple(_CLOCKS[v] if _is_clock(v) else v for v in values)
                targets.append((function, attribute, values, swapped))
        elif any(_is_clock(v) for v in values.values()):
            new = {k: _CLOCKS[v] if _is_clock(v) else v for k, v in values.items()}
            targets.append((function, attribute, values, new))
    return targets


def _module_targets(module: types.ModuleType) -> list[Target]:
    # Clocks bound before a simulation: ``from time import monotonic`` and default
    # arguments (``clock=time.monotonic``). ``time.monotonic()`` calls need nothing:
    # the time module's functions themselves are replaced while a simulation runs.
    targets: list[Target] = []
    for name, value in list(vars(module).items()):
        if _is_clock(value):
            targets.append((module, name, value, _CLOCKS[value]))
        elif isinstance(value, types.FunctionType) and value.__module__ == module.__name__:
            targets += _default_targets(value)
        elif isinstance(value, type) and value.__module__ == module.__name__:
            for member in vars(value).values():
                if isinstance(member, types.FunctionType):
                    targets += _default_targets(member)
    return targets


_scanned: dict[str, list[Target]] = {}
_installed = 0
_install_lock = threading.Lock()  # simulations may run in several threads at once
_applied: list[Target] = []


def _install() -> None:
    for module in list(sys.modules.values()):
        name = getattr(module, "__name__", "")
        if (
            isinstance(module, types.ModuleType)
            and name.split(".")[0] in SIMULATED_PACKAGES
            and name != __name__
            and name not in _scanned
        ):
            _scanned[name] = _module_targets(module)
    for targets in _scanned.values():
        for target in targets:
            setattr(target[0], target[1], target[3])
            _applied.append(target)
    for target in (
        (time, "monotonic", _real_monotonic, _monotonic),
        (time, "perf_counter", _real_perf_counter, _perf_counter),
        (time, "time", _real_time, _wall_time),
        (uuid, "uuid4", _real_uuid4, _uuid4),
        (anyio.to_thread, "run_sync", _real_run_sync, _run_sync),
        (asyncio, "to_thread", _real_asyncio_to_thread, _asyncio_to_thread),
        (socket.socket, "connect", _real_socket_connect, _socket_connect),
        (socket.socket, "connect_ex", _real_socket_connect_ex, _socket_connect_ex),
    ):
        setattr(target[0], target[1], target[3])
        _applied.append(target)


def _uninstall() -> None:
    while _applied:
        obj, attribute, real, _ = _applied.pop()
        setattr(obj, attribute, real)


@contextlib.contextmanager
def _virtualized() -> Iterator[None]:
    """Install the virtual clocks and inline thread hops (nested uses share one install).

    The replacements read the virtual clock only on a thread that runs a
    ``SimulationLoop``; everywhere else they are the real functions.
    """
    global _installed
    with _install_lock:
        if _installed == 0:
            _install()
        _installed += 1
    try:
        yield
    finally:
        with _install_lock:
            _installed -= 1
            if _installed == 0:
                _uninstall()


class Simulation:
    """Runs coroutines on a ``SimulationLoop``; use as ``with simulate(seed) as sim:``.

    Args:
        seed: the scheduler's seed.
        real_timeout: seconds of real time a run may take before it gives up.
    """

    def __init__(self, seed: int = 0, *, real_timeout: float = 120.0) -> None:
        self.seed = seed
        self.real_timeout = real_timeout
        self.loop: SimulationLoop | None = None
        self._install: contextlib.ExitStack | None = None

    def __enter__(self) -> Simulation:
        self._install = contextlib.ExitStack()
        self._install.enter_context(_virtualized())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._install is not None:
            self._install.close()
            self._install = None

    def run(self, main: Awaitable[T] | Callable[[], Awaitable[T]]) -> T:
        """Run ``main`` (a coroutine, or a function making one) to its end, simulated.

        Blocks the calling thread, which must not run an event loop (from async code,
        ``await asyncio.to_thread(sim.run, ...)``).

        Raises:
            SimulationError: the job used what a simulation cannot run, or got stuck.
        """
        with contextlib.ExitStack() as stack:
            if self._install is None:
                stack.enter_context(_virtualized())
            loop = SimulationLoop(self.seed, real_timeout=self.real_timeout)
            self.loop = loop
            try:
                coroutine = main() if callable(main) else main
                result = loop.run_until_complete(_as_coroutine(coroutine))
            except Exception as error:
                if loop.refused is not None and error is not loop.refused:
                    raise loop.refused from error
                raise
            else:
                if loop.refused is not None:
                    raise loop.refused
                return result
            finally:
                _cancel_leftovers(loop)
                loop.close()


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _cancel_leftovers(loop: SimulationLoop) -> None:
    tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in tasks:
        task.cancel()
    if tasks:
        with contextlib.suppress(BaseException):
            loop.run_until_complete(asyncio.gather(*tasks, return_exceptions=True))


def simulate(seed: int = 0, *, real_timeout: float = 120.0) -> Simulation:
    """A deterministic simulation to run jobs in.

    Use it as ``with simulate(7) as sim: result = sim.run(main())``.

    Args:
        seed: the scheduler's seed: the same seed and job give the same run.
        real_timeout: seconds of real time a run may take before it gives up.
    """
    return Simulation(seed, real_timeout=real_timeout)


def current_simulation() -> SimulationLoop | None:
    """The simulation loop running in this thread, if any."""
    return _running_simulation()


async def run_simulated(
    main: Callable[[], Coroutine[Any, Any, T]], seed: int, *, real_timeout: float = 120.0
) -> T:
    """Await ``main()`` in a simulation: here if one runs already, else in a worker thread."""
    if _running_simulation() is not None:
        return await main()
    return await _real_asyncio_to_thread(Simulation(seed, real_timeout=real_timeout).run, main)
