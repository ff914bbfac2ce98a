"""Bytes in and out of a job's vertices (Flink's ``read-bytes`` / ``write-bytes``).

With two worker processes, a keyed shuffle between two vertices sends part of its
records over the loopback connection between the workers: what the sending vertex
wrote must be what the receiving vertex read (all of it: the job ended), and more than
nothing. In one process
channels pass objects: every vertex reports 0 bytes, with the fields present and
complete. Underneath, a ``PeerLink`` counts the whole frames of channel items (data and
priority) per channel, on both ends, and not the flow-control frames.
"""

from __future__ import annotations

import asyncio
from typing import Any

from runtime import StreamEnvironment
from runtime.api.overrides import JOBS
from runtime.checkpoint.events import CheckpointBarrier, CheckpointOptions
from runtime.checkpoint.ids import CheckpointId
from runtime.cli.job_views import job_details_view
from runtime.cluster.network import CLOSE, CREDIT, DATA, PRIORITY, PeerLink, frame
from runtime.metrics import LoadTracker

RECORDS = 2000
KEYS = 7


def _keyed_job(workers: int) -> StreamEnvironment:
    # Small buffers and channels: many frames, and senders that wait for credit, so
    # some items leave a worker only after its own subtasks have ended.
    env = StreamEnvironment(parallelism=2, workers=workers, buffer_size=16, channel_capacity=2)
    (
        env.from_collection(range(RECORDS))
        .map(lambda x: (x % KEYS, 1), uid="pair")
        .key_by(lambda t: t[0])
        .reduce(lambda a, b: (a[0], a[1] + b[1]), uid="count")
        .collect(name="out")
    )
    return env


async def _vertices(env: StreamEnvironment, name: str) -> list[dict[str, Any]]:
    client = await env.start(name)
    execution = JOBS.get(client.job_id)
    assert execution is not None
    result = await client.wait()
    assert result.status.value == "finished"
    assert len(result.collected["out"]) == RECORDS
    body = job_details_view(execution, LoadTracker())
    vertices: list[dict[str, Any]] = body["vertices"]
    return vertices


async def test_bytes_out_of_a_shuffle_are_the_bytes_in_across_workers() -> None:
    # collection (1 subtask, on worker 0) -rebalance-> map (2) -hash-> reduce -> out (2):
    # on both edges, the channels to subtask 1 of the next vertex cross to worker 1.
    source, pair, count = await _vertices(_keyed_job(workers=2), "bytes over workers")
    assert [pair["inputs"][0]["id"], count["inputs"][0]["id"]] == [source["id"], pair["id"]]
    assert count["inputs"][0]["ship_strategy"] == "HASH"
    shuffled, read = pair["metrics"], count["metrics"]
    assert shuffled["write-records"] == read["read-records"] == RECORDS
    assert read["read-bytes"] == shuffled["write-bytes"] > 0
    assert shuffled["read-bytes"] == source["metrics"]["write-bytes"] > 0
    # Nothing crosses into the source, nothing leaves the sink.
    assert source["metrics"]["read-bytes"] == 0
    assert read["write-bytes"] == 0
    for vertex in (source, pair, count):
        assert vertex["metrics"]["read-bytes-complete"] is True
        assert vertex["metrics"]["write-bytes-complete"] is True


async def test_one_process_moves_no_bytes() -> None:
    vertices = await _vertices(_keyed_job(workers=1), "bytes in one process")
    assert len(vertices) == 3
    for vertex in vertices:
        metrics = vertex["metrics"]
        assert metrics["read-bytes"] == metrics["write-bytes"] == 0
        assert metrics["read-bytes-complete"] is metrics["write-bytes-complete"] is True
    assert vertices[2]["metrics"]["read-records"] == RECORDS


async def test_a_link_counts_whole_item_frames_per_channel_on_both_ends() -> None:
    accepted: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
    server = await asyncio.start_server(lambda r, w: accepted.set_result((r, w)), "127.0.0.1", 0)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    their_reader, their_writer = await accepted
    server.close()
    arrived: asyncio.Queue[int] = asyncio.Queue()
    sender = PeerLink(reader, writer, lambda kind, channel, item: None)
    receiver = PeerLink(
        their_reader, their_writer, lambda kind, channel, item: arrived.put_nowait(kind)
    )
    reading = asyncio.ensure_future(receiver.read_forever())
    barrier = CheckpointBarrier(CheckpointId(1), 0.0, CheckpointOptions(unaligned=True))
    sent = [(DATA, 3, [1, 2, 3]), (DATA, 3, ["x" * 100]), (PRIORITY, 3, barrier), (DATA, 4, [7])]
    flow = [(CREDIT, 3, 5), (CLOSE, 3, 2)]
    try:
        for kind, channel, item in [*sent, *flow]:
            sender.send(kind, channel, item)
        for _ in range(len(sent) + len(flow)):
            await arrived.get()
    finally:
        reading.cancel()
        await asyncio.gather(reading, return_exceptions=True)
        sender.close()
        receiver.close()
    expected = {
        channel: sum(len(frame(k, c, i)) for k, c, i in sent if c == channel) for channel in (3, 4)
    }
    assert expected[3] > len(frame(DATA, 3, ["x" * 100])) > 100
    assert sender.bytes_sent == receiver.bytes_received == expected
