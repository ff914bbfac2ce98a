"""The job graph: chaining, partitioners and the plan ``env.explain()`` prints.

Operators join their upstream's chain when chaining is on, their only input edge is
forward (equal parallelism, no partitioner), and the upstream has no other consumer.
"""

from __future__ import annotations

from typing import Any

import pytest

from runtime import StreamEnvironment
from runtime.graph.job_graph import JobGraph
from runtime.tasks.partitioning import PartitionKind


def plan(graph: JobGraph) -> list[tuple[list[str], int]]:
    """Each vertex as (operator names, parallelism)."""
    return [([node.name for node in v.nodes], v.parallelism) for v in graph.vertices]


def edges(graph: JobGraph) -> list[tuple[str, str, PartitionKind]]:
    return [(e.source.name, e.target.name, e.partitioning.kind) for e in graph.edges]


def identity(x: Any) -> Any:
    return x


@pytest.mark.parametrize("p", [1, 3])
def test_forward_edges_of_equal_parallelism_chain_into_one_vertex(p: int) -> None:
    env = StreamEnvironment(parallelism=p)
    env.from_sequence(1, 10).map(identity).filter(bool).flat_map(lambda x: [x]).collect()

    graph = env.get_job_graph()

    assert plan(graph) == [(["sequence", "map", "filter", "flat_map", "collect"], p)]
    assert edges(graph) == []
    assert (
        env.explain() == f"[0] sequence -> map -> filter -> flat_map -> collect (parallelism {p})"
    )


def test_key_by_breaks_the_chain() -> None:
    env = StreamEnvironment(parallelism=2)
    env.from_sequence(1, 10).map(identity).key_by(identity).sum().map(identity).collect()

    graph = env.get_job_graph()

    assert plan(graph) == [(["sequence", "map"], 2), (["sum", "map-2", "collect"], 2)]
    assert edges(graph) == [("sequence -> map", "sum -> map-2 -> collect", PartitionKind.KEY_GROUP)]
    assert env.explain() == (
        "[0] sequence -> map (parallelism 2)\n"
        "[1] sum -> map-2 -> collect (parallelism 2) <- hash from 'sequence -> map'"
    )


@pytest.mark.parametrize(
    ("partition", "kind"),
    [
        ("rebalance", PartitionKind.REBALANCE),
        ("shuffle", PartitionKind.SHUFFLE),
        ("broadcast", PartitionKind.BROADCAST),
    ],
)
def test_an_explicit_partitioner_breaks_the_chain(partition: str, kind: PartitionKind) -> None:
    env = StreamEnvironment(parallelism=2)
    getattr(env.from_sequence(1, 10), partition)().map(identity).collect()

    graph = env.get_job_graph()

    assert plan(graph) == [(["sequence"], 2), (["map", "collect"], 2)]
    assert edges(graph) == [("sequence", "map -> collect", kind)]


def test_a_different_parallelism_breaks_the_chain_with_rebalance_by_default() -> None:
    env = StreamEnvironment(parallelism=2)
    env.from_sequence(1, 10).map(identity, parallelism=3).collect()

    graph = env.get_job_graph()

    # The sink takes the environment's default, not its upstream's parallelism.
    assert plan(graph) == [(["sequence"], 2), (["map"], 3), (["collect"], 2)]
    assert edges(graph) == [
        ("sequence", "map", PartitionKind.REBALANCE),
        ("map", "collect", PartitionKind.REBALANCE),
    ]


def test_a_collection_source_runs_once_and_rebalances_to_a_parallel_operator() -> None:
    env = StreamEnvironment(parallelism=4)
    env.from_collection([1, 2, 3]).map(identity).collect()

    graph = env.get_job_graph()

    assert plan(graph) == [(["collection"], 1), (["map", "collect"], 4)]
    assert edges(graph) == [("collection", "map -> collect", PartitionKind.REBALANCE)]


def test_chaining_off_gives_one_vertex_per_operator_with_forward_edges() -> None:
    env = StreamEnvironment(parallelism=2, chaining=False)
    env.from_sequence(1, 10).map(identity).filter(bool).collect()

    graph = env.get_job_graph()

    assert plan(graph) == [(["sequence"], 2), (["map"], 2), (["filter"], 2), (["collect"], 2)]
    assert edges(graph) == [
        ("sequence", "map", PartitionKind.FORWARD),
        ("map", "filter", PartitionKind.FORWARD),
        ("filter", "collect", PartitionKind.FORWARD),
    ]


def test_an_operator_with_two_consumers_chains_with_neither() -> None:
    env = StreamEnvironment(parallelism=2)
    numbers = env.from_sequence(1, 10).map(identity)
    numbers.collect(name="a")
    numbers.map(identity).collect(name="b")

    graph = env.get_job_graph()

    assert plan(graph) == [(["sequence", "map"], 2), (["a"], 2), (["map-2", "b"], 2)]
    assert edges(graph) == [
        ("sequence -> map", "a", PartitionKind.FORWARD),
        ("sequence -> map", "map-2 -> b", PartitionKind.FORWARD),
    ]


def test_a_union_is_an_operator_with_one_edge_per_input() -> None:
    env = StreamEnvironment(parallelism=2)
    a = env.from_sequence(1, 10, name="a")
    b = env.from_collection([1], name="b")
    a.union(b.rebalance()).map(identity).collect()

    graph = env.get_job_graph()

    assert plan(graph) == [(["a"], 2), (["b"], 1), (["map", "collect"], 2)]
    assert edges(graph) == [
        ("a", "map -> collect", PartitionKind.FORWARD),
        ("b", "map -> collect", PartitionKind.REBALANCE),
    ]


def test_the_partitioner_closest_to_the_consumer_wins() -> None:
    env = StreamEnvironment(parallelism=2)
    env.from_sequence(1, 10).rebalance().key_by(identity).sum().collect()

    graph = env.get_job_graph()

    assert edges(graph) == [("sequence", "sum -> collect", PartitionKind.KEY_GROUP)]


async def test_channels_follow_the_edges() -> None:
    """Forward: subtask i to subtask i. Other partitioners: every producer to every consumer."""
    env = StreamEnvironment(parallelism=2, chaining=False)
    env.from_sequence(1, 10).map(identity).key_by(identity).process(
        lambda v, ctx: [v], parallelism=3
    ).collect(parallelism=3)

    result = await env.execute()

    assert sorted(result.channels) == sorted(
        [f"sequence ({i}/2) -> map ({i}/2)" for i in (1, 2)]
        + [f"map ({i}/2) -> process ({j}/3)" for i in (1, 2) for j in (1, 2, 3)]
        + [f"process ({j}/3) -> collect ({j}/3)" for j in (1, 2, 3)]
    )
    assert sorted(t.name for t in result.tasks) == sorted(
        [f"{name} ({i}/2)" for name in ("sequence", "map") for i in (1, 2)]
        + [f"{name} ({j}/3)" for name in ("process", "collect") for j in (1, 2, 3)]
    )


def test_default_names_are_made_unique_and_given_names_are_kept() -> None:
    env = StreamEnvironment()
    env.from_sequence(1, 10, name="numbers").map(identity).map(identity).map(
        identity, name="last"
    ).collect(name="out")

    assert plan(env.get_job_graph()) == [(["numbers", "map", "map-2", "last", "out"], 1)]


def test_the_plan_can_be_built_again_and_is_the_same() -> None:
    env = StreamEnvironment(parallelism=2)
    env.from_sequence(1, 10).key_by(identity).sum().collect()

    assert env.explain() == env.explain()
    assert plan(env.get_job_graph()) == plan(env.get_job_graph())
