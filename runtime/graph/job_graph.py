"""``JobGraph``: the logical graph resolved into chained job vertices and edges.

``build_job_graph`` turns the environment's ``Transformation`` nodes into the plan the
executor deploys, and is where a job is validated (``ConfigError`` naming the operator):

1. every real node gets its parallelism (its own, else the environment's default,
   capped by a non-parallel source's limit) and must have 1 <= p <= max parallelism;
2. virtual nodes become edges: a union contributes each of its inputs, a partition
   node sets the partitioner (the one closest to the consumer wins); an edge with no
   partitioner is ``FORWARD`` between equal parallelism, else ``REBALANCE``;
3. a node joins its upstream's chain when chaining is on, it has exactly one input
   edge, the edge is ``FORWARD``, the upstream has no other consumer, and neither of
   them runs alone (``Transformation.chainable``: async I/O);
4. a job needs at least one source and one sink.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from runtime.errors import ConfigError
from runtime.graph.transformations import NodeKind, Transformation
from runtime.tasks.partitioning import FORWARD, REBALANCE, Partitioning, PartitionKind


@dataclass(eq=False, slots=True)
class JobEdge:
    """A channel pattern between two vertices.

    Every producer subtask has a channel to each consumer subtask its partitioner may
    pick (``FORWARD``: subtask ``i`` to subtask ``i`` only).
    """

    source: JobVertex
    target: JobVertex
    partitioning: Partitioning

    def __repr__(self) -> str:
        return f"<edge {self.source.name!r} -{self.partitioning}-> {self.target.name!r}>"


@dataclass(eq=False, slots=True)
class JobVertex:
    """A chain of operators that runs as ``parallelism`` subtask actors."""

    id: int
    nodes: list[Transformation]
    parallelism: int
    inputs: list[JobEdge] = field(default_factory=list)
    outputs: list[JobEdge] = field(default_factory=list)

    @property
    def name(self) -> str:
        """The chain's name: its operators' names joined by ``" -> "``."""
        return " -> ".join(node.name for node in self.nodes)

    @property
    def head(self) -> Transformation:
        """The first node of the chain."""
        return self.nodes[0]

    @property
    def is_source(self) -> bool:
        """Whether the chain starts with a source."""
        return self.head.kind is NodeKind.SOURCE

    def __repr__(self) -> str:
        return f"<vertex {self.name!r} p={self.parallelism}>"


@dataclass(slots=True)
class JobGraph:
    """The deployable plan: vertices in topological order."""

    vertices: list[JobVertex]
    max_parallelism: int

    @property
    def edges(self) -> list[JobEdge]:
        """Every edge, in the order of their producing vertices."""
        return [edge for vertex in self.vertices for edge in vertex.outputs]

    def describe(self) -> str:
        """A readable plan: one line per vertex with its parallelism and input edges."""
        lines = []
        for vertex in self.vertices:
            inputs = ", ".join(f"{e.partitioning} from {e.source.name!r}" for e in vertex.inputs)
            suffix = f" <- {inputs}" if inputs else ""
            lines.append(f"[{vertex.id}] {vertex.name} (parallelism {vertex.parallelism}){suffix}")
        return "\n".join(lines)


def _resolve_inputs(
    node: Transformation, partitioning: Partitioning | None = None
) -> list[tuple[Transformation, Partitioning | None]]:
    """The real upstream nodes of ``node``'s inputs, each with its partitioner, if any."""
    out: list[tuple[Transformation, Partitioning | None]] = []
    for upstream in node.inputs:
        if upstream.kind is NodeKind.UNION:
            out.extend(_resolve_inputs(upstream, partitioning))
        elif upstream.kind is NodeKind.PARTITION:
            out.extend(_resolve_inputs(upstream, partitioning or upstream.partitioning))
        else:
            out.append((upstream, partitioning))
    return out


def _parallelism_of(node: Transformation, default: int, max_parallelism: int) -> int:
    limit = node.max_parallelism
    if node.parallelism is None:
        p = default if limit is None else min(default, limit)
    else:
        p = node.parallelism
        if limit is not None and p > limit:
            raise ConfigError(
                f"operator {node.name!r}: parallelism {p} is more than this source allows "
                f"({limit}); drop the parallelism option or set it to {limit}"
            )
    if p > max_parallelism:
        raise ConfigError(
            f"operator {node.name!r}: parallelism {p} is greater than max_parallelism "
            f"{max_parallelism}; raise max_parallelism on the StreamEnvironment"
        )
    return p


def build_job_graph(
    nodes: Sequence[Transformation],
    *,
    default_parallelism: int,
    max_parallelism: int,
    chaining: bool = True,
) -> JobGraph:
    """Validate the logical graph and chain it into job vertices.

    Args:
        nodes: every node of the environment, in creation order (a topological order).
        default_parallelism: the environment's parallelism.
        max_parallelism: the environment's number of key groups.
        chaining: whether operators may be chained.

    Raises:
        ConfigError: no source, no sink, or an invalid parallelism.
    """
    real = [n for n in nodes if not n.kind.is_virtual]
    if not any(n.kind is NodeKind.SOURCE for n in real):
        raise ConfigError(
            "the job has no source; start it with env.from_collection(), "
            "env.from_sequence(), env.generate() or env.from_source()"
        )
    if not any(n.kind is NodeKind.SINK for n in real):
        raise ConfigError(
            "the job has no sink; end a stream with .sink_to(), .collect(), .print() "
            "or .write_text()"
        )
    parallelism = {n.id: _parallelism_of(n, default_parallelism, max_parallelism) for n in real}
    inputs: dict[int, list[tuple[Transformation, Partitioning]]] = {}
    consumers: dict[int, int] = {n.id: 0 for n in real}
    for node in real:
        resolved = []
        for upstream, partitioning in _resolve_inputs(node):
            if partitioning is None:
                same = parallelism[upstream.id] == parallelism[node.id]
                partitioning = FORWARD if same else REBALANCE
            elif (
                partitioning.kind is PartitionKind.FORWARD
                and parallelism[upstream.id] != parallelism[node.id]
            ):
                raise ConfigError(
                    f"operator {node.name!r}: a forward edge needs equal parallelism "
                    f"({upstream.name!r} has {parallelism[upstream.id]}, "
                    f"{node.name!r} has {parallelism[node.id]})"
                )
            resolved.append((upstream, partitioning))
            consumers[upstream.id] += 1
        inputs[node.id] = resolved

    vertex_of: dict[int, JobVertex] = {}
    vertices: list[JobVertex] = []
    for node in real:
        edges = inputs[node.id]
        if (
            chaining
            and node.kind is not NodeKind.SOURCE
            and len(edges) == 1
            and edges[0][1].kind is PartitionKind.FORWARD
            and consumers[edges[0][0].id] == 1
            and parallelism[edges[0][0].id] == parallelism[node.id]
            and node.chainable
            and edges[0][0].chainable
        ):
            vertex = vertex_of[edges[0][0].id]
            vertex.nodes.append(node)
            vertex_of[node.id] = vertex
            continue
        vertex = JobVertex(len(vertices), [node], parallelism[node.id])
        vertices.append(vertex)
        vertex_of[node.id] = vertex
        for upstream, partitioning in edges:
            edge = JobEdge(vertex_of[upstream.id], vertex, partitioning)
            edge.source.outputs.append(edge)
            vertex.inputs.append(edge)
    return JobGraph(vertices, max_parallelism)
