"""``Transformation``: a node of the logical graph a job's API calls build.

Each call on a ``DataStream`` adds one node: a source, a one-input operator, a sink,
or one of two virtual nodes that produce no operator: a union (several inputs become
one stream) and a partition (``key_by``, ``rebalance``, ``broadcast``, ``shuffle``: the
next operator's input edge uses that partitioner). ``runtime.graph.job_graph`` resolves
the virtual nodes into edges and chains the real ones into job vertices.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from runtime.tasks.partitioning import Partitioning

if TYPE_CHECKING:
    from runtime.tasks.operators import StreamOperator
    from runtime.tasks.source import Source

OperatorFactory = Callable[[str, str], "StreamOperator"]
"""Makes one subtask's operator, given the operator's resolved name and uid."""


class NodeKind(enum.Enum):
    """What a logical node is."""

    SOURCE = "source"
    OPERATOR = "operator"
    SINK = "sink"
    UNION = "union"
    PARTITION = "partition"

    @property
    def is_virtual(self) -> bool:
        """Union and partition nodes become edges, not operators."""
        return self in (NodeKind.UNION, NodeKind.PARTITION)


@dataclass(eq=False, slots=True)
class Transformation:
    """One node of the logical graph.

    Attributes:
        id: creation order within the environment.
        kind: what the node is.
        name: the operator's name (unique within the job after ``JobGraph`` built it).
        uid: the user's stable id for state matching, or None (derived at build time).
        parallelism: the user's parallelism, or None for the environment's default.
        inputs: upstream nodes.
        factory: makes the operator of one subtask (real nodes except sources).
        source: the ``Source`` (source nodes).
        partitioning: the partitioner (partition nodes).
        key_selector: the key of a keyed operator's state (keyed operators).
        max_parallelism: the most subtasks this node allows (non-parallel sources: 1).
        explicit_name: whether the user gave ``name``.
        chainable: whether the node may share a chain with its neighbours (async I/O
            runs alone: its task interleaves completed calls with new input).
        side_tag: the ``OutputTag`` this node selects (the head of ``get_side_output``):
            its producer's writer towards it carries that tag's side records only.
    """

    id: int
    kind: NodeKind
    name: str
    uid: str | None = None
    parallelism: int | None = None
    inputs: list[Transformation] = field(default_factory=list)
    factory: OperatorFactory | None = None
    source: Source[Any] | None = None
    partitioning: Partitioning | None = None
    key_selector: Callable[[Any], Any] | None = None
    max_parallelism: int | None = None
    explicit_name: bool = False
    chainable: bool = True
    side_tag: Any = None

    def __repr__(self) -> str:
        return f"<{self.kind.value} {self.name!r} #{self.id}>"
