"""``RuntimeContext``: what a user function sees of the subtask that runs it.

Handed to ``open(ctx)`` of function classes and to ``process_element(value, ctx)`` of
keyed process functions. It names the subtask and gives out state: keyed state
(``get_state``, only on keyed streams, scoped to ``current_key``) and operator state
(``get_list_state``, ``get_union_list_state``).
"""

from __future__ import annotations

from typing import Any

from runtime.errors import ConfigError
from storage import (
    HeapKeyedStateBackend,
    ListStateDescriptor,
    OperatorStateBackend,
    StateDescriptor,
)


class RuntimeContext:
    """The subtask an operator runs in, and its state.

    Attributes:
        operator_name: the operator's name.
        subtask_index: this subtask's index, 0-based.
        parallelism: the operator's parallelism.
        max_parallelism: the number of key groups.
        job_name: the job's name.
        attempt: 0 for the first run, then the restart number.
        is_restored: whether the subtask's state was restored from a checkpoint or
            savepoint (``initialize_state`` reads it, as Flink's
            ``FunctionInitializationContext.isRestored``).
        checkpointing_enabled: whether the job takes checkpoints.
    """

    def __init__(
        self,
        *,
        operator_name: str,
        subtask_index: int,
        parallelism: int,
        max_parallelism: int,
        job_name: str,
        attempt: int = 0,
        keyed_backend: HeapKeyedStateBackend | None = None,
        operator_backend: OperatorStateBackend | None = None,
        is_restored: bool = False,
        checkpointing_enabled: bool = False,
    ) -> None:
        self.operator_name = operator_name
        self.subtask_index = subtask_index
        self.parallelism = parallelism
        self.max_parallelism = max_parallelism
        self.job_name = job_name
        self.attempt = attempt
        self.keyed_backend = keyed_backend
        self.operator_backend = operator_backend
        self.is_restored = is_restored
        self.checkpointing_enabled = checkpointing_enabled

    @property
    def task_name(self) -> str:
        """``"name (i/p)"``, as in errors and logs."""
        return f"{self.operator_name} ({self.subtask_index + 1}/{self.parallelism})"

    @property
    def current_key(self) -> Any:
        """The key of the record being processed (keyed streams only)."""
        if self.keyed_backend is None:
            return None
        return self.keyed_backend.current_key

    def get_state(self, descriptor: StateDescriptor) -> Any:
        """The keyed state handle for ``descriptor``, scoped to the current key.

        Raises:
            ConfigError: the operator does not run on a keyed stream.
        """
        if self.keyed_backend is None:
            raise ConfigError(
                f"operator {self.operator_name!r}: keyed state {descriptor.name!r} is only "
                f"available after key_by(); use get_list_state() for operator state"
            )
        return self.keyed_backend.get_state(descriptor)

    def get_list_state(self, descriptor: ListStateDescriptor) -> Any:
        """Operator list state: split evenly among subtasks when the job is rescaled."""
        return self._operator_backend().get_list_state(descriptor)

    def get_union_list_state(self, descriptor: ListStateDescriptor) -> Any:
        """Operator union list state: every subtask gets all of it on restore."""
        return self._operator_backend().get_union_list_state(descriptor)

    def _operator_backend(self) -> OperatorStateBackend:
        if self.operator_backend is None:
            self.operator_backend = OperatorStateBackend()
        return self.operator_backend
