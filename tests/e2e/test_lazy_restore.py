"""A restored job decodes its keyed state lazily, and in the background to the end.

A first job gives each of ``KEYS`` keys a value and takes a savepoint. A second job is
restored from it with a keyed function that registers the state in ``open`` but never
reads or writes it: records carry new keys only. At registration only one key group is
decoded (the rest stays encoded); the subtask's background restore steps must decode
everything without any record asking for it, and a savepoint taken afterwards holds
every key with its value. So does a checkpoint triggered at the first record, which may
find the state still being decoded (then it carries the key groups still encoded; the
storage tests pin that case down deterministically).
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from runtime import (
    ExternalizedCheckpointRetention,
    KeyedProcessFunction,
    RuntimeContext,
    SinkFunction,
    StreamEnvironment,
    ValueStateDescriptor,
)
from storage.checkpoint import read_checkpoint

KEYS = 3_000


class Probe:
    """What the keyed function saw; shared by its deep copies."""

    def __init__(self) -> None:
        self.restoring_at_open: bool | None = None
        self.decoded = asyncio.Event()
        self.first = asyncio.Event()
        self.filled = asyncio.Event()  # the first run gave every key its value

    def __deepcopy__(self, memo: dict[int, Any]) -> Probe:
        return self


class Keep(KeyedProcessFunction):
    """Gives each key its number (first run), or only watches the restore (second run)."""

    def __init__(self, probe: Probe, write: bool) -> None:
        self.probe = probe
        self.write = write
        self.seen = 0

    def open(self, ctx: RuntimeContext) -> None:
        self.state = ctx.get_state(ValueStateDescriptor("value"))
        self.backend = ctx.keyed_backend
        if ctx.is_restored:
            self.probe.restoring_at_open = self.backend.restoring  # type: ignore[union-attr]

    def process_element(self, value: int, ctx: RuntimeContext) -> None:
        if self.write:
            self.state.update(value)
            self.seen += 1
            if self.seen >= KEYS:
                self.probe.filled.set()
            return
        self.probe.first.set()
        if not self.backend.restoring:  # type: ignore[union-attr]
            self.probe.decoded.set()


class Discard(SinkFunction[Any]):
    def write_batch(self, values: list[Any]) -> None:
        pass


def make_env(probe: Probe, keys: Any, checkpoints: Path, *, write: bool) -> StreamEnvironment:
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(
        3600.0,
        storage=checkpoints.absolute().as_uri(),
        retention=ExternalizedCheckpointRetention.RETAIN_ON_CANCELLATION,
    )
    (
        env.generate(keys, records_per_second=50_000.0, uid="numbers")
        .key_by(lambda i: i)
        .process(Keep(probe, write), name="keep", uid="keep")
        .sink_to(Discard(), name="discard", uid="discard")
    )
    return env


async def test_restored_state_is_decoded_in_the_background_and_snapshots_hold_it(
    tmp_path: Path,
) -> None:
    async with asyncio.timeout(60):
        checkpoints = tmp_path / "checkpoints"
        filling = Probe()
        env = make_env(filling, lambda i: i % KEYS, checkpoints, write=True)
        first = await env.start("fill")
        await filling.filled.wait()
        savepoint = await first.trigger_savepoint(tmp_path / "first")
        first.cancel()
        await first.wait()

        probe = Probe()
        env = make_env(probe, lambda i: KEYS + i, checkpoints, write=False)
        second = await env.start("watch", restore_from=savepoint)
        await probe.first.wait()
        early = (await second.trigger_checkpoint()).pointer
        await probe.decoded.wait()
        late = await second.trigger_savepoint(tmp_path / "late")
        second.cancel()
        await second.wait()

    assert probe.restoring_at_open is True  # one key group decoded at registration
    expected = {key: key for key in range(KEYS)}
    for path in (early, late):
        contents = await asyncio.to_thread(read_checkpoint, path)
        assert contents.operators["keep"].keyed_state("value") == expected
