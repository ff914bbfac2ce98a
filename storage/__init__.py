"""Weir's storage: state primitives, key groups, state backends and serializers.

This package knows bytes, state and snapshots; it never imports ``actors`` or
``runtime``. The runtime creates one :class:`HeapKeyedStateBackend` per keyed subtask (for
the :class:`KeyGroupRange` of the subtask) and one :class:`OperatorStateBackend` per
subtask, hands user functions the state handles they ask for with state descriptors,
snapshots the backends at checkpoints and restores them on recovery. Record writers use
a :class:`KeyGroupAssigner` to send each key to the subtask that owns its key group.
Sub-packages: :mod:`storage.checkpoint` (checkpoint and savepoint storage and formats)
and :mod:`storage.processor` (offline reading, transforming, writing and bootstrapping of
savepoints, Flink's State Processor API).
"""

from __future__ import annotations

from storage.descriptors import (
    ListStateDescriptor,
    MapStateDescriptor,
    ReducingStateDescriptor,
    StateDescriptor,
    StateKind,
    ValueStateDescriptor,
)
from storage.errors import (
    KeyEncodingError,
    PickleForbiddenError,
    SerializationError,
    StateError,
    WeirStorageError,
)
from storage.format.serializers import (
    MsgspecSerializer,
    PickleSerializer,
    Serializer,
    UntypedSerializer,
    serializer_for,
)
from storage.heap.backend import HeapKeyedStateBackend, restore_key_groups
from storage.key_hash import encode_key, stable_hash, stable_hashes
from storage.keyed_snapshot import (
    KEYED_STATE_FORMAT_VERSION,
    HeapSnapshot,
    KeyedStateEntries,
    KeyGroupSnapshotData,
    SnapshotState,
)
from storage.keygroups import (
    DEFAULT_MAX_PARALLELISM,
    UPPER_BOUND_MAX_PARALLELISM,
    KeyGroupAssigner,
    KeyGroupRange,
    assign_to_key_group,
    compute_operator_index_for_key_group,
    validate_max_parallelism,
    validate_parallelism,
)
from storage.operator_state import (
    OPERATOR_STATE_FORMAT_VERSION,
    DistributionMode,
    OperatorListState,
    OperatorStateBackend,
    OperatorStateEntry,
    OperatorStateSnapshot,
    redistribute,
)
from storage.state import ListState, MapState, ReducingState, State, ValueState

__all__ = [
    "DEFAULT_MAX_PARALLELISM",
    "KEYED_STATE_FORMAT_VERSION",
    "OPERATOR_STATE_FORMAT_VERSION",
    "UPPER_BOUND_MAX_PARALLELISM",
    "DistributionMode",
    "HeapKeyedStateBackend",
    "HeapSnapshot",
    "KeyEncodingError",
    "KeyGroupAssigner",
    "KeyGroupRange",
    "KeyGroupSnapshotData",
    "KeyedStateEntries",
    "ListState",
    "ListStateDescriptor",
    "MapState",
    "MapStateDescriptor",
    "MsgspecSerializer",
    "OperatorListState",
    "OperatorStateBackend",
    "OperatorStateEntry",
    "OperatorStateSnapshot",
    "PickleForbiddenError",
    "PickleSerializer",
    "ReducingState",
    "ReducingStateDescriptor",
    "SerializationError",
    "Serializer",
    "SnapshotState",
    "State",
    "StateDescriptor",
    "StateError",
    "StateKind",
    "UntypedSerializer",
    "ValueState",
    "ValueStateDescriptor",
    "WeirStorageError",
    "assign_to_key_group",
    "compute_operator_index_for_key_group",
    "encode_key",
    "redistribute",
    "restore_key_groups",
    "serializer_for",
    "stable_hash",
    "stable_hashes",
    "validate_max_parallelism",
    "validate_parallelism",
]
