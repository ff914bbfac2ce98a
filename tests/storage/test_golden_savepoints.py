"""Golden savepoints: what each format version wrote loads, offline and into a job, forever.

``data/savepoints/v<M>-k<K>-<format>/`` are savepoints real jobs took (see the README
there; never regenerated). For each: the offline reader gives the state the job had
(computed here from the records it had processed), the writer carries it over unchanged,
and a job restored from it at another parallelism starts from exactly that state and
finishes the input (the splits' positions), each record once. Canonical savepoints are
read and restored with pickle forbidden, and ``pickle`` itself made to fail.
"""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path
from typing import Any

import pytest

from runtime import (
    KeyedProcessFunction,
    ListStateDescriptor,
    MapFunction,
    MapStateDescriptor,
    ReducingStateDescriptor,
    RuntimeContext,
    StreamEnvironment,
    ValueStateDescriptor,
)
from storage import KEYED_STATE_FORMAT_VERSION, PickleForbiddenError
from storage.checkpoint import METADATA_VERSION, read_checkpoint
from storage.processor import SavepointWriter, load_savepoint

DATA = Path(__file__).parent / "data" / "savepoints"
GOLDEN = sorted(path for path in DATA.iterdir() if (path / "_metadata").exists())
FIRST = [*range(0, 10), *range(20, 30)]  # what the golden job had processed
ALL = list(range(40))


def key_of(i: int) -> tuple[str, int]:
    return ("lo" if i < 20 else "hi", i % 3)


def expected_state(indices: list[int]) -> dict[str, dict[Any, Any]]:
    """Per state, per key, the value after ``indices`` (in order), as the reader shows it."""
    per_key: dict[tuple[str, int], list[int]] = {}
    for i in indices:
        per_key.setdefault(key_of(i), []).append(i)
    states: dict[str, dict[Any, Any]] = {}
    for key, seen in per_key.items():
        values = {
            "total": sum(seen),
            "last": str(seen[-1]),
            "range": (seen[0], seen[-1]),
            "nested": {"first": (seen[0], str(seen[0])), "all": seen},
            "typed": [len(seen), f"{key[0]}:{key[1]}"],  # declared tuple: a list offline
            "buckets": {b: n for b in ("0", "1") if (n := sum(i % 2 == int(b) for i in seen))},
            "recent": seen[-3:],
            "reduced": max(seen),
        }
        for name, value in values.items():
            states.setdefault(name, {})[key] = value
    return states


def is_canonical(folder: Path) -> bool:
    return folder.name.endswith("-canonical")


@pytest.fixture
def no_pickle(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("pickle was used")

    monkeypatch.setattr(pickle, "dumps", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)


def test_the_current_formats_have_golden_savepoints() -> None:
    names = {path.name for path in GOLDEN}
    for fmt in ("canonical", "native"):
        name = f"v{METADATA_VERSION}-k{KEYED_STATE_FORMAT_VERSION}-{fmt}"
        assert name in names, f"a new format version needs golden savepoints: add {name}"


@pytest.mark.parametrize("folder", GOLDEN, ids=lambda p: p.name)
def test_the_reader_gives_the_golden_state(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if is_canonical(folder):
        monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("pickle was used"))
    savepoint = load_savepoint(folder, allow_pickle=not is_canonical(folder))

    assert savepoint.metadata.is_savepoint
    assert savepoint.uids == ["numbers", "tag", "state", "out"]
    assert savepoint.max_parallelism == 16
    state = savepoint["state"]
    assert state.parallelism == 2
    assert state.keyed_state_names == sorted(expected_state(FIRST))
    for name, values in expected_state(FIRST).items():
        assert state.keyed_state(name) == values, name
    assert state.keyed_state("typed", type=tuple[int, str])[("lo", 0)] == (4, "lo:0")
    assert [state.state_kind(n) for n in ("total", "buckets", "recent", "reduced")] == [
        "value",
        "map",
        "list",
        "reducing",
    ]
    tag = savepoint["tag"]
    assert tag.operator_state_by_subtask("counts") == [[10], [10]]
    assert tag.operator_state("members") == ["tag-0", ("tag", 0), "tag-1", ("tag", 1)]
    assert [tag.distribution("counts"), tag.distribution("members")] == ["split", "union"]
    assert savepoint["numbers"].splits() == [
        {
            "type": "runtime.connectors.sequence:RangeSplit",
            "split_id": "range-0",
            "next": 10,
            "end": 20,
        },
        {
            "type": "runtime.connectors.sequence:RangeSplit",
            "split_id": "range-1",
            "next": 30,
            "end": 40,
        },
    ]


def test_the_native_golden_savepoint_needs_pickle_for_its_nested_state() -> None:
    (native,) = [p for p in GOLDEN if p.name.endswith(f"k{KEYED_STATE_FORMAT_VERSION}-native")]
    with pytest.raises(PickleForbiddenError, match="value state 'nested' of operator 'state'"):
        read_checkpoint(native)


@pytest.mark.parametrize("folder", GOLDEN, ids=lambda p: p.name)
def test_the_writer_carries_a_golden_savepoint_over_unchanged(folder: Path, tmp_path: Path) -> None:
    # No pickle allowed: untouched operators are copied, not decoded.
    written = (
        SavepointWriter.from_savepoint(folder)
        .transform_keyed("state", "total", lambda key, total: total + 1000)
        .write(tmp_path)
    )
    allow = not is_canonical(folder)
    before, after = (
        load_savepoint(folder, allow_pickle=allow),
        load_savepoint(written, allow_pickle=allow),
    )
    assert after.checkpoint_id == before.checkpoint_id
    assert after.metadata.job_id == before.metadata.job_id
    for uid in before.uids:
        old, new = before[uid], after[uid]
        assert new.parallelism == old.parallelism
        for name in old.keyed_state_names:
            if name != "total":
                assert new.keyed_state(name) == old.keyed_state(name), name
        for name in old.operator_state_names:
            assert new.operator_state_by_subtask(name) == old.operator_state_by_subtask(name)
        assert new.splits() == old.splits()
    assert after["state"].keyed_state("total") == {
        key: total + 1000 for key, total in before["state"].keyed_state("total").items()
    }


# -- restoring into a job ----------------------------------------------------------------


class Probe:
    """What the restored job's subtasks saw; shared by the copies of its functions."""

    def __init__(self) -> None:
        self.restored: dict[int, tuple[list[Any], list[Any]]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        return self


class Tag(MapFunction):
    """The golden job's ``tag``, reporting what it restored."""

    def __init__(self, probe: Probe) -> None:
        self.probe = probe

    def initialize_state(self, ctx: RuntimeContext) -> None:
        counts = ctx.get_list_state(ListStateDescriptor("counts"))
        members = ctx.get_union_list_state(ListStateDescriptor("members"))
        self.probe.restored[ctx.subtask_index] = (counts.get(), members.get())

    def map(self, value: int) -> int:
        return value


class State(KeyedProcessFunction):
    """The golden job's ``state``: emits ``(i, every state's value before i)``."""

    def open(self, ctx: RuntimeContext) -> None:
        self.states = {
            "total": ctx.get_state(ValueStateDescriptor("total", default=0)),
            "last": ctx.get_state(ValueStateDescriptor("last")),
            "range": ctx.get_state(ValueStateDescriptor("range")),
            "nested": ctx.get_state(ValueStateDescriptor("nested")),
            "typed": ctx.get_state(ValueStateDescriptor("typed", type=tuple[int, str])),
            "buckets": ctx.get_state(MapStateDescriptor("buckets")),
            "recent": ctx.get_state(ListStateDescriptor("recent")),
            "reduced": ctx.get_state(ReducingStateDescriptor("reduced", max)),
        }

    def process_element(self, i: int, ctx: RuntimeContext) -> list[Any]:
        s = self.states
        before = {
            "total": s["total"].value(),
            "last": s["last"].value(),
            "range": s["range"].value(),
            "nested": s["nested"].value(),
            "typed": s["typed"].value(),
            "buckets": dict(s["buckets"].items()),
            "recent": s["recent"].get(),
            "reduced": s["reduced"].get(),
        }
        side, r = ctx.current_key
        s["total"].update(before["total"] + i)
        s["last"].update(str(i))
        s["range"].update((before["range"][0], i))
        s["nested"].update(
            {"first": before["nested"]["first"], "all": [*before["nested"]["all"], i]}
        )
        s["typed"].update((before["typed"][0] + 1, f"{side}:{r}"))
        s["buckets"].put(str(i % 2), before["buckets"].get(str(i % 2), 0) + 1)
        s["recent"].update([*before["recent"], i][-3:])
        s["reduced"].add(i)
        return [(i, before)]


@pytest.mark.parametrize("folder", GOLDEN, ids=lambda p: p.name)
async def test_a_job_restores_a_golden_savepoint_at_another_parallelism(
    folder: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    canonical = is_canonical(folder)
    if canonical:
        request.getfixturevalue("no_pickle")
    copy = tmp_path / folder.name  # restoring reads only; the copy makes sure of it
    shutil.copytree(folder, copy)
    probe = Probe()
    env = StreamEnvironment(parallelism=3, max_parallelism=16, allow_pickle=not canonical)
    (
        env.generate(lambda i: i, 40, name="numbers", uid="numbers")
        .map(Tag(probe), name="tag", uid="tag")
        .key_by(key_of)
        .process(State(), name="state", uid="state")
        .collect(name="out")
    )
    result = await env.execute("golden", restore_from=copy)

    out: list[tuple[int, dict[str, Any]]] = result.collected["out"]
    # The splits' positions: the job reads on from 10 and 30, each record once.
    assert sorted(i for i, _ in out) == [i for i in ALL if i not in FIRST]
    # Every key starts from the golden state (typed state as its declared tuple).
    golden = expected_state(FIRST)
    golden["typed"] = {key: tuple(value) for key, value in golden["typed"].items()}
    first_seen: dict[Any, dict[str, Any]] = {}
    last_seen: dict[Any, tuple[int, dict[str, Any]]] = {}
    for i, before in sorted(out, key=lambda pair: pair[0]):
        first_seen.setdefault(key_of(i), before)
        last_seen[key_of(i)] = (i, before)
    for key, before in first_seen.items():
        assert before == {name: values[key] for name, values in golden.items()}, key
    # ... and ends with the state of the whole input.
    final = expected_state(ALL)["total"]
    assert {key: before["total"] + i for key, (i, before) in last_seen.items()} == final
    # Operator state, rescaled from 2 to 3: counts split, the union to every subtask.
    assert sorted(c for counts, _ in probe.restored.values() for c in counts) == [10, 10]
    for index in range(3):
        assert probe.restored[index][1] == ["tag-0", ("tag", 0), "tag-1", ("tag", 1)], index
