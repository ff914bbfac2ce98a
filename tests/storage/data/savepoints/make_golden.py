"""How the golden savepoints next to this script were made. Do not run it again.

It is kept as the record of what the golden files hold (``README.md`` says why they
are never regenerated). Run once, from the repository root, with
``python tests/storage/data/savepoints/make_golden.py``; it wrote
``v<METADATA_VERSION>-k<KEYED_STATE_FORMAT_VERSION>-{canonical,native}/`` and refuses
to overwrite them.

The job (parallelism 2, max parallelism 16), deterministic by construction:

* ``numbers``: the indices 0..39 in two ``RangeSplit`` s, ``range-0`` = [0, 20) and
  ``range-1`` = [20, 40); each reader stops half way (at 10 and 30) and idles, so the
  job processes exactly 0..9 and 20..29 and the splits are stored at ``next`` 10 and 30.
* ``tag`` (chained to the source): operator list state ``counts`` = ``[10]`` per
  subtask, union list state ``members`` = ``["tag-<i>", ("tag", <i>)]`` per subtask.
* ``state``, keyed by ``("lo" if i < 20 else "hi", i % 3)`` (each key's records come
  from one split, in order): value states ``total`` (int), ``last`` (str), ``range``
  (tuple), ``nested`` (a dict holding a tuple and a list: the native format pickles
  it), ``typed`` (declared ``tuple[int, str]``); map state ``buckets``
  (``{str(i % 2): count}``); list state ``recent`` (the last 3 indices); reducing state
  ``reduced`` (``max``).
* ``out``: a collect sink (no state).

When every record before the pause was processed, a canonical savepoint is triggered,
then the job is stopped with a native savepoint; the two folders are copied here.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import msgspec

ROOT = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(ROOT))

from runtime import (  # noqa: E402
    KeyedProcessFunction,
    ListStateDescriptor,
    MapFunction,
    MapStateDescriptor,
    RangeSplit,
    ReducingStateDescriptor,
    RuntimeContext,
    SavepointFormat,
    StreamEnvironment,
    ValueStateDescriptor,
)
from storage import KEYED_STATE_FORMAT_VERSION  # noqa: E402
from storage.checkpoint import METADATA_VERSION  # noqa: E402

HERE = Path(__file__).parent


class PausingReader:
    def __init__(self) -> None:
        self.splits: list[RangeSplit] = []

    def add_splits(self, splits: list[RangeSplit]) -> None:
        self.splits.extend(msgspec.structs.replace(s) for s in splits)

    def read(self, max_records: int) -> list[int]:
        for split in self.splits:
            stop = split.end - 10
            if split.next < stop:
                lo, hi = split.next, min(split.next + max_records, stop)
                split.next = hi
                return list(range(lo, hi))
        return []

    def snapshot_state(self) -> list[RangeSplit]:
        return [msgspec.structs.replace(s) for s in self.splits]

    def close(self) -> None:
        pass


class PausingSource:
    def create_enumerator(self) -> PausingSource:
        return self

    def assign_splits(self, parallelism: int) -> list[list[RangeSplit]]:
        assert parallelism == 2
        return [[RangeSplit("range-0", 0, 20)], [RangeSplit("range-1", 20, 40)]]

    def create_reader(self, subtask_index: int) -> PausingReader:
        return PausingReader()


class Tag(MapFunction):
    def initialize_state(self, ctx: RuntimeContext) -> None:
        self.counts = ctx.get_list_state(ListStateDescriptor("counts"))
        members = ctx.get_union_list_state(ListStateDescriptor("members"))
        members.update([f"tag-{ctx.subtask_index}", ("tag", ctx.subtask_index)])
        self.count = sum(self.counts.get())

    def map(self, value: int) -> int:
        self.count += 1
        return value

    def snapshot_state(self, checkpoint_id: int) -> None:
        self.counts.update([self.count])


class State(KeyedProcessFunction):
    def open(self, ctx: RuntimeContext) -> None:
        self.total = ctx.get_state(ValueStateDescriptor("total", default=0))
        self.last = ctx.get_state(ValueStateDescriptor("last"))
        self.range = ctx.get_state(ValueStateDescriptor("range"))
        self.nested = ctx.get_state(ValueStateDescriptor("nested"))
        self.typed = ctx.get_state(ValueStateDescriptor("typed", type=tuple[int, str]))
        self.buckets = ctx.get_state(MapStateDescriptor("buckets"))
        self.recent = ctx.get_state(ListStateDescriptor("recent"))
        self.reduced = ctx.get_state(ReducingStateDescriptor("reduced", max))

    def process_element(self, i: int, ctx: RuntimeContext) -> list[Any]:
        side, r = ctx.current_key
        self.total.update(self.total.value() + i)
        self.last.update(str(i))
        first = self.range.value()
        self.range.update((i if first is None else first[0], i))
        nested = self.nested.value() or {"first": (i, str(i)), "all": []}
        nested["all"].append(i)
        self.nested.update(nested)
        count = 0 if self.typed.value() is None else self.typed.value()[0]
        self.typed.update((count + 1, f"{side}:{r}"))
        bucket = str(i % 2)
        self.buckets.put(bucket, (self.buckets.get(bucket) or 0) + 1)
        self.recent.update([*self.recent.get(), i][-3:])
        self.reduced.add(i)
        return [i]


async def main() -> None:
    targets = {
        fmt: HERE / f"v{METADATA_VERSION}-k{KEYED_STATE_FORMAT_VERSION}-{fmt.value}"
        for fmt in SavepointFormat
    }
    for target in targets.values():
        if target.exists():
            raise SystemExit(f"{target} exists: golden files are never regenerated")
    env = StreamEnvironment(parallelism=2, max_parallelism=16)
    (
        env.from_source(PausingSource(), name="numbers", uid="numbers")
        .map(Tag(), name="tag", uid="tag")
        .key_by(lambda i: ("lo" if i < 20 else "hi", i % 3))
        .process(State(), name="state", uid="state")
        .collect(name="out")
    )
    client = await env.start("golden savepoints")
    while client.metrics()["state"].records_in < 20:  # noqa: ASYNC110 (a metric to poll)
        await asyncio.sleep(0.01)
    with tempfile.TemporaryDirectory() as scratch:
        canonical = await client.trigger_savepoint(scratch, format=SavepointFormat.CANONICAL)
        native = await client.stop_with_savepoint(scratch, format=SavepointFormat.NATIVE)
        await client.wait()
        for fmt, path in ((SavepointFormat.CANONICAL, canonical), (SavepointFormat.NATIVE, native)):
            shutil.copytree(path, targets[fmt])
            print(f"{Path(path).name} -> {targets[fmt].relative_to(ROOT)}")


if __name__ == "__main__":
    asyncio.run(main())
