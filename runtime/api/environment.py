"""``StreamEnvironment``: where a job is declared, configured and run.

Make one, add sources (``from_collection``, ``from_sequence``, ``generate``,
``from_source``), transform the streams they return, end them in sinks, then run the
job with ``await env.execute(name)`` or start it with ``await env.start(name)``.

Options are validated when they are given and again when the job is built; an invalid
one is a ``ConfigError`` that names it.
"""

from __future__ import annotations

import asyncio
import copy
import logging
import os
from collections.abc import Callable, Iterable
from typing import Any

from runtime.api.client import JobClient
from runtime.api.config_keys import CHECKPOINT_OPTIONS, key_of
from runtime.api.datastream import DataStream
from runtime.api.overrides import JOBS, OVERRIDES
from runtime.checkpoint.config import (
    CheckpointConfig,
    CheckpointingMode,
    ExternalizedCheckpointRetention,
)
from runtime.config import (
    DEFAULT_BUFFER_SIZE,
    DEFAULT_BUFFER_TIMEOUT,
    DEFAULT_CHANNEL_CAPACITY,
    ExecutionConfig,
    check_positive_int,
)
from runtime.connectors.collection import CollectionSource
from runtime.connectors.sequence import GeneratorSource, NumberSequenceSource
from runtime.errors import ConfigError
from runtime.graph.job_graph import JobGraph, build_job_graph
from runtime.graph.transformations import NodeKind, OperatorFactory, Transformation
from runtime.scheduler.deployment import Deployment
from runtime.scheduler.executor import JobExecution
from runtime.scheduler.restart import RestartStrategy
from runtime.scheduler.result import JobResult
from runtime.tasks.partitioning import Partitioning
from runtime.tasks.source import Source
from storage import DEFAULT_MAX_PARALLELISM, UPPER_BOUND_MAX_PARALLELISM
from storage.backend import STATE_BACKENDS
from storage.changelog import ChangelogOptions
from storage.checkpoint import resolve_storage

logger = logging.getLogger("weir.config")


def _check_max_parallelism(value: object) -> int:
    check_positive_int("max_parallelism", value)
    assert isinstance(value, int)
    if value > UPPER_BOUND_MAX_PARALLELISM:
        raise ConfigError(f"max_parallelism must be <= {UPPER_BOUND_MAX_PARALLELISM}, got {value}")
    return value


def _check_storage(spec: str) -> None:
    try:
        resolve_storage(spec, "validation")
    except ValueError as error:
        raise ConfigError(f"checkpointing: storage: {error}") from None


def _check_state_backend(config: ExecutionConfig) -> None:
    if config.state_backend not in STATE_BACKENDS:
        allowed = ", ".join(repr(name) for name in STATE_BACKENDS)
        raise ConfigError(f"state_backend must be one of {allowed}, got {config.state_backend!r}")
    for option in ("incremental_checkpoints", "local_recovery"):
        if not isinstance(getattr(config, option), bool):
            raise ConfigError(f"{option} must be True or False, got {getattr(config, option)!r}")
    if config.state_dir is not None and not isinstance(config.state_dir, str | os.PathLike):
        raise ConfigError(f"state_dir must be a path or None, got {config.state_dir!r}")


def _changelog_options(changelog: object) -> ChangelogOptions | None:
    if changelog is True:
        return ChangelogOptions()
    if changelog is False or changelog is None:
        return None
    if isinstance(changelog, ChangelogOptions):
        return changelog
    raise ConfigError(f"changelog must be True, False or a ChangelogOptions, got {changelog!r}")


def _check_changelog(config: ExecutionConfig, checkpointing: CheckpointConfig) -> None:
    if (
        config.changelog is not None
        and checkpointing.enabled
        and (not checkpointing.storage.startswith("file://"))
    ):
        raise ConfigError(
            f"changelog=True needs a file-system checkpoint storage, got storage="
            f"{checkpointing.storage!r}; pass storage='file:///...' to enable_checkpointing "
            "or set changelog=False"
        )


def _deployment_class(config: ExecutionConfig) -> type[Deployment]:
    """In-process tasks, or worker processes (``runtime.cluster``) when ``workers > 1``."""
    if config.workers > 1:
        from runtime.cluster.master import ClusterDeployment

        return ClusterDeployment
    return Deployment


class StreamEnvironment:
    """The context in which a streaming job is built and executed.

    Args:
        parallelism: default number of subtasks per operator (1, or ``weir run -p``).
        max_parallelism: number of key groups; the most subtasks a keyed operator can
            ever be rescaled to. Fixed for the life of a job's state.
        buffer_size: records per buffer between actors.
        buffer_timeout: seconds a partial buffer may wait before it is sent.
        channel_capacity: buffers a channel holds before its producer waits.
        chaining: whether operators joined by forward edges run in one actor.
        allow_pickle: whether pickle may be used for what has no declared msgspec type:
            written into checkpoints and savepoints (untyped keys and state values,
            operator list state, records in channel state, source splits, untyped
            two-phase-commit transactions) and read back when restoring. Unpickling
            runs code the file names: with True (the default) restore only checkpoints
            and savepoints you trust; with False every checkpoint is pickle-free and
            pickled state is refused on restore. A savepoint that declares the
            canonical format is never unpickled, whatever this says.
        state_backend: where keyed state lives: ``"heap"`` (in memory, the default) or
            ``"rocksdb"`` (RocksDB on local disk, with incremental checkpoints).
        state_dir: the local folder of RocksDB instances and local copies (default
            ``$TMPDIR/weir-state``).
        incremental_checkpoints: RocksDB: upload only the files not uploaded before
            (True) or every file at every checkpoint.
        local_recovery: RocksDB: keep a local copy of the latest snapshots and restore
            from it when it is present and valid.
        changelog: log every keyed state write to a durable changelog so that a
            checkpoint uploads only what changed (Flink's changelog state backend, for
            heap and RocksDB): False (the default), True (default options) or a
            ``ChangelogOptions``. Needs a file-system checkpoint storage.
        workers: worker processes that run the subtasks (``runtime.cluster``): 1 (the
            default, or ``weir run --workers``) runs them in this process; N > 1 starts
            N processes joined by credit-based socket channels. At most
            ``parallelism``; checkpoints then need a ``file://`` storage.

    Raises:
        ConfigError: an option is invalid (the message names it).
    """

    def __init__(
        self,
        parallelism: int | None = None,
        max_parallelism: int = DEFAULT_MAX_PARALLELISM,
        *,
        buffer_size: int = DEFAULT_BUFFER_SIZE,
        buffer_timeout: float = DEFAULT_BUFFER_TIMEOUT,
        channel_capacity: int = DEFAULT_CHANNEL_CAPACITY,
        chaining: bool = True,
        allow_pickle: bool = True,
        state_backend: str = "heap",
        state_dir: str | os.PathLike[str] | None = None,
        incremental_checkpoints: bool = True,
        local_recovery: bool = False,
        changelog: bool | ChangelogOptions = False,
        workers: int | None = None,
    ) -> None:
        if parallelism is None:
            parallelism = OVERRIDES.parallelism or OVERRIDES.config.get("parallelism") or 1
        self.parallelism = check_positive_int("parallelism", parallelism)
        if workers is None:
            workers = OVERRIDES.workers or 1
        self.max_parallelism = _check_max_parallelism(max_parallelism)
        if parallelism > max_parallelism:
            raise ConfigError(
                f"parallelism {parallelism} is greater than max_parallelism "
                f"{max_parallelism}; raise max_parallelism"
            )
        self.config = ExecutionConfig(
            buffer_size,
            buffer_timeout,
            channel_capacity,
            allow_pickle,
            state_backend,
            None if state_dir is None else os.fspath(state_dir),
            incremental_checkpoints,
            local_recovery,
            _changelog_options(changelog),
            workers,
        )
        self.config.validate()
        if workers > self.parallelism:
            raise ConfigError(
                f"workers {workers} is greater than parallelism {self.parallelism}: a worker "
                "process would host no subtask; lower workers or raise parallelism"
            )
        _check_state_backend(self.config)
        self.chaining = bool(chaining)
        self.checkpoint_config = _checkpoint_defaults()
        # Options the script set itself (they win over weir run -D; see config_keys).
        self._explicit_checkpoint_options: set[str] = set()
        self.restart_strategy: RestartStrategy | None = None
        self._nodes: list[Transformation] = []
        self._names: set[str] = set()
        self._uids: dict[str, str] = {}

    # -- building -------------------------------------------------------------------------

    def _add_node(
        self,
        kind: NodeKind,
        default_name: str,
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
        inputs: list[Transformation] | None = None,
        factory: OperatorFactory | None = None,
        source: Source[Any] | None = None,
        partitioning: Partitioning | None = None,
        key_selector: Callable[[Any], Any] | None = None,
        max_parallelism: int | None = None,
    ) -> Transformation:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise ConfigError(f"operator name must be a non-empty str, got {name!r}")
            if name in self._names and not kind.is_virtual:
                raise ConfigError(
                    f"operator name {name!r} is used twice; give each operator its own name"
                )
            resolved = name
        else:
            resolved = default_name
            counter = 2
            while resolved in self._names:
                resolved = f"{default_name}-{counter}"
                counter += 1
        if parallelism is not None:
            check_positive_int(f"operator {resolved!r}: parallelism", parallelism)
            if parallelism > self.max_parallelism:
                raise ConfigError(
                    f"operator {resolved!r}: parallelism {parallelism} is greater than "
                    f"max_parallelism {self.max_parallelism}; raise max_parallelism"
                )
        if uid is not None:
            if not isinstance(uid, str) or not uid:
                raise ConfigError(f"operator {resolved!r}: uid must be a non-empty str")
            if uid in self._uids:
                raise ConfigError(
                    f"uid {uid!r} is used twice (by {self._uids[uid]!r} and {resolved!r}); "
                    f"every operator needs its own uid"
                )
            self._uids[uid] = resolved
        if not kind.is_virtual:
            self._names.add(resolved)
        node = Transformation(
            id=len(self._nodes),
            kind=kind,
            name=resolved,
            uid=uid,
            parallelism=parallelism,
            inputs=list(inputs or []),
            factory=factory,
            source=source,
            partitioning=partitioning,
            key_selector=key_selector,
            max_parallelism=max_parallelism,
            explicit_name=name is not None,
        )
        self._nodes.append(node)
        return node

    def from_source(
        self,
        source: Source[Any],
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
        watermark_strategy: Any = None,
        _default_name: str = "source",
    ) -> DataStream:
        """A stream read from ``source`` (see ``runtime.tasks.source.Source``).

        ``watermark_strategy``: a ``WatermarkStrategy`` giving the records timestamps
        and watermarks (chained right after the source, as ``<name>-timestamps``).
        """
        for method in ("create_enumerator", "create_reader"):
            if not callable(getattr(source, method, None)):
                raise ConfigError(
                    f"from_source: {type(source).__name__} is not a Source: it has no "
                    f"{method}() method"
                )
        limit = getattr(source, "max_source_parallelism", None)
        node = self._add_node(
            NodeKind.SOURCE,
            _default_name,
            name=name,
            uid=uid,
            parallelism=parallelism,
            source=source,
            max_parallelism=limit,
        )
        stream = DataStream(self, node)
        if watermark_strategy is not None:
            stream = stream.assign_timestamps_and_watermarks(
                watermark_strategy,
                name=f"{node.name}-timestamps",
                uid=None if uid is None else f"{uid}-timestamps",
                parallelism=parallelism,
            )
        return stream

    def from_collection(
        self, items: Iterable[Any], *, name: str | None = None, uid: str | None = None
    ) -> DataStream:
        """A bounded stream of ``items`` in order (a non-parallel source)."""
        if isinstance(items, str | bytes) or not isinstance(items, Iterable):
            raise ConfigError(
                f"from_collection: items must be an iterable of records, got {type(items).__name__}"
            )
        return self.from_source(
            CollectionSource(items), name=name, _default_name="collection", uid=uid
        )

    def from_sequence(
        self,
        start: int,
        end: int,
        *,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """The integers ``start..end``, both inclusive, split over the subtasks."""
        return self.from_source(
            NumberSequenceSource(start, end),
            name=name,
            _default_name="sequence",
            uid=uid,
            parallelism=parallelism,
        )

    def generate(
        self,
        generator: Callable[[int], Any],
        count: int | None = None,
        *,
        records_per_second: float | None = None,
        name: str | None = None,
        uid: str | None = None,
        parallelism: int | None = None,
    ) -> DataStream:
        """A stream of ``generator(i)`` for ``i`` in ``0..count-1``.

        Forever if ``count`` is None; at most ``records_per_second`` over all subtasks if
        given. ``generator`` must be deterministic: a restore calls it again.
        """
        return self.from_source(
            GeneratorSource(generator, count, records_per_second),
            name=name,
            _default_name="generator",
            uid=uid,
            parallelism=parallelism,
        )

    # -- checkpointing ----------------------------------------------------------------------

    def enable_checkpointing(
        self,
        interval: float,
        mode: CheckpointingMode | None = None,
        *,
        timeout: float | None = None,
        min_pause: float | None = None,
        max_concurrent: int | None = None,
        tolerable_failures: int | None = None,
        unaligned: bool | None = None,
        aligned_timeout: float | None = None,
        retention: ExternalizedCheckpointRetention | None = None,
        retained: int | None = None,
        storage: str | None = None,
    ) -> StreamEnvironment:
        """Take a checkpoint every ``interval`` seconds; other options as given.

        Options left out keep their current value (Flink's defaults at first, or what
        ``weir run -D`` set; see ``runtime.checkpoint.config`` and
        ``runtime.api.config_keys``); ``mode`` left out is exactly-once. ``storage`` is
        ``"memory"`` or ``"file:///dir"``. An option given here wins over ``weir run
        -D`` (a warning on ``weir.config`` says so when the values differ).

        Raises:
            ConfigError: an option or a combination Flink rejects; the message says why.
        """
        config = self.checkpoint_config
        arguments: dict[str, object] = {
            "interval": interval,
            "mode": mode,
            "timeout": timeout,
            "min_pause": min_pause,
            "max_concurrent": max_concurrent,
            "tolerable_failures": tolerable_failures,
            "unaligned": unaligned,
            "aligned_timeout": aligned_timeout,
            "retained": retained,
            "storage": storage,
        }
        given = {name: value for name, value in arguments.items() if value is not None}
        _warn_overridden(given)
        self._explicit_checkpoint_options |= set(given)
        if mode is None:
            mode = config.mode if "mode" in OVERRIDES.config else CheckpointingMode.EXACTLY_ONCE
        updated = CheckpointConfig(
            interval=interval,
            mode=mode,
            timeout=config.timeout if timeout is None else timeout,
            min_pause=config.min_pause if min_pause is None else min_pause,
            max_concurrent=config.max_concurrent if max_concurrent is None else max_concurrent,
            tolerable_failures=(
                config.tolerable_failures if tolerable_failures is None else tolerable_failures
            ),
            unaligned=config.unaligned if unaligned is None else unaligned,
            aligned_timeout=config.aligned_timeout if aligned_timeout is None else aligned_timeout,
            retention=config.retention if retention is None else retention,
            retained=config.retained if retained is None else retained,
            storage=(
                storage
                if storage is not None
                else (
                    f"file://{os.path.abspath(OVERRIDES.checkpoint_dir)}"
                    if OVERRIDES.checkpoint_dir and config.storage == "memory"
                    else config.storage
                )
            ),
        )
        updated.validate()
        _check_storage(updated.storage)
        self.checkpoint_config = updated
        return self

    # -- running --------------------------------------------------------------------------

    def get_job_graph(self) -> JobGraph:
        """Validate the job and return its plan (chained vertices and edges).

        Raises:
            ConfigError: the job is invalid; the message names the operator.
        """
        self.config.validate()
        _check_state_backend(self.config)
        self.checkpoint_config.validate()
        _check_storage(self.checkpoint_config.storage)
        _check_changelog(self.config, self.checkpoint_config)
        return build_job_graph(
            self._nodes,
            default_parallelism=self.parallelism,
            max_parallelism=self.max_parallelism,
            chaining=self.chaining,
        )

    def explain(self) -> str:
        """The job's plan as text: one line per chain with its parallelism and inputs."""
        return self.get_job_graph().describe()

    def set_restart_strategy(self, strategy: RestartStrategy) -> StreamEnvironment:
        """What to do when a task fails (``runtime.scheduler.restart``).

        Flink's default applies if never set: exponential delay with checkpointing,
        else no restart.
        """
        if not callable(getattr(strategy, "on_failure", None)):
            raise ConfigError(
                f"set_restart_strategy: {strategy!r} is not a restart strategy; use "
                f"NoRestart(), FixedDelayRestart(), ExponentialDelayRestart() or "
                f"FailureRateRestart()"
            )
        self.restart_strategy = strategy
        return self

    def _execution(
        self,
        job_name: str,
        restore_from: str | os.PathLike[str] | None,
        allow_non_restored_state: bool,
        allow_older_than_committed: bool = False,
    ) -> JobExecution:
        if not isinstance(job_name, str) or not job_name:
            raise ConfigError(f"job name must be a non-empty str, got {job_name!r}")
        if restore_from is None and OVERRIDES.restore_from is not None:
            restore_from = OVERRIDES.restore_from
            allow_non_restored_state = (
                allow_non_restored_state or OVERRIDES.allow_non_restored_state
            )
        allow_older_than_committed = (
            allow_older_than_committed or OVERRIDES.allow_older_than_committed
        )
        strategy = self.restart_strategy
        if strategy is not None:
            # A fresh copy per run: strategies remember the failures they saw.
            strategy = copy.deepcopy(strategy)
        return JobExecution(
            self.get_job_graph(),
            self.config,
            job_name,
            self.checkpoint_config,
            restart_strategy=strategy,
            restore_from=None if restore_from is None else os.fspath(restore_from),
            allow_non_restored_state=allow_non_restored_state,
            allow_older_than_committed=allow_older_than_committed,
            deployment_class=_deployment_class(self.config),
        )

    async def execute(
        self,
        job_name: str = "weir job",
        *,
        restore_from: str | os.PathLike[str] | None = None,
        allow_non_restored_state: bool = False,
        allow_older_than_committed: bool = False,
    ) -> JobResult:
        """Build, validate and run the job until it ends.

        Args:
            job_name: the job's name.
            restore_from: start from this checkpoint: a ``chk-<n>`` folder, its
                ``_metadata`` file, or a job's checkpoint folder (the newest valid
                checkpoint in it is used; corrupt ones are skipped with a warning).
            allow_non_restored_state: skip state of operators the job no longer has.
            allow_older_than_committed: restore (or, after a failure, restart from) a
                checkpoint older than one whose completion was notified to
                two-phase-commit sinks that cannot skip their committed output; refused
                otherwise, as their output after it would be written again.

        Returns:
            The ``JobResult`` of a finished (or cancelled) job.

        Raises:
            ConfigError: the job is invalid (nothing ran).
            JobFailedError: the job failed; ``error.result`` holds its result and
                ``error.__cause__`` the first failure (an ``OperatorError`` names the
                operator, the subtask and the record).
        """
        execution = self._execution(
            job_name, restore_from, allow_non_restored_state, allow_older_than_committed
        )
        JOBS.register(execution)
        # A restore that does not fit the job is a ConfigError before anything runs.
        await execution.prepare()
        return await execution.run()

    async def start(
        self,
        job_name: str = "weir job",
        *,
        restore_from: str | os.PathLike[str] | None = None,
        allow_non_restored_state: bool = False,
        allow_older_than_committed: bool = False,
    ) -> JobClient:
        """Build and validate the job, start it in the background, return its client.

        Takes the same arguments as ``execute``.

        Raises:
            ConfigError: the job is invalid (nothing was started).
        """
        execution = self._execution(
            job_name, restore_from, allow_non_restored_state, allow_older_than_committed
        )
        JOBS.register(execution)
        await execution.prepare()
        # The client sees every operator from the start; a failure to deploy (a reader
        # that cannot be made) fails the job and is reported by wait().
        try:
            await execution.deploy_first_attempt()
        except Exception as error:  # run() fails the job with it; wait() raises it
            logger.debug("job %r: deployment failed: %s", job_name, error)
        task = asyncio.get_running_loop().create_task(execution.run(), name=job_name)
        # The client's wait() retrieves the result or error; a job nobody waits for
        # must not log "exception was never retrieved".
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return JobClient(execution, task)


def _checkpoint_defaults() -> CheckpointConfig:
    """Flink's checkpoint defaults, with what ``weir run -D`` set on top.

    Raises:
        ConfigError: the command line's values do not go together (names the keys).
    """
    values = {k: v for k, v in OVERRIDES.config.items() if k in CHECKPOINT_OPTIONS}
    if not values:
        return CheckpointConfig()
    config = CheckpointConfig(**values)
    try:
        config.validate()
    except ConfigError as error:
        keys = ", ".join(key_of(k) for k in sorted(values))
        raise ConfigError(f"{error} (set with -D {keys})") from None
    return config


def _warn_overridden(given: dict[str, object]) -> None:
    """Warn for every option the script sets that ``weir run -D`` had set otherwise."""
    for option in sorted(given.keys() & OVERRIDES.config.keys()):
        ours, theirs = OVERRIDES.config[option], given[option]
        if option == "storage" and isinstance(theirs, str) and "://" not in theirs:
            theirs = f"file://{theirs}"
        if ours != theirs:
            logger.warning(
                "the script sets %s=%r, which wins over -D %s=%r (the script's settings "
                "win over weir run's options)",
                option,
                theirs,
                key_of(option),
                ours,
            )
