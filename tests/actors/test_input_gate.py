"""The ``InputGate``: fairness, priority first, blocking, end of input, wake-ups."""

from __future__ import annotations

import asyncio

import pytest

from actors import END_OF_CHANNEL, Channel, InputGate, Waker


def make_gate(n: int, capacity: int = 4) -> tuple[InputGate[object], list[Channel[object]]]:
    channels: list[Channel[object]] = [Channel(capacity, name=f"up[{i}]") for i in range(n)]
    return InputGate(channels), channels


def poll_all(gate: InputGate[object]) -> list[tuple[int, object]]:
    """Poll until the gate has nothing more to give right now."""
    polled = []
    while (element := gate.poll()) is not None:
        polled.append(element)
    return polled


def test_gate_describes_its_channels() -> None:
    gate, channels = make_gate(3)
    assert gate.channels == channels
    assert gate.num_channels == 3
    assert not gate.finished
    assert gate.blocked_channels == []
    assert not any(gate.is_blocked(i) or gate.is_ended(i) for i in range(3))
    assert gate.poll() is None


def test_gate_without_channels_is_finished_at_once() -> None:
    gate: InputGate[object] = InputGate([])
    assert gate.finished
    assert gate.poll() is None


def test_round_robin_reads_every_busy_channel_once_per_round() -> None:
    gate, channels = make_gate(3, capacity=2)
    serial = [0, 0, 0]

    def refill(index: int) -> None:
        while channels[index].try_send((index, serial[index])):
            serial[index] += 1

    for index in range(3):
        refill(index)
    order = []
    for _ in range(60):
        element = gate.poll()
        assert element is not None
        index, (source, _) = element
        assert index == source
        order.append(index)
        refill(index)  # every channel stays full
    for start in range(len(order) - 2):
        assert sorted(order[start : start + 3]) == [0, 1, 2], order[start : start + 3]


def test_round_robin_skips_empty_channels_without_losing_its_place() -> None:
    gate, channels = make_gate(3)
    channels[0].try_send("a0")
    channels[0].try_send("a1")
    channels[2].try_send("c0")
    channels[2].try_send("c1")
    assert poll_all(gate) == [(0, "a0"), (2, "c0"), (0, "a1"), (2, "c1")]


def test_priority_items_come_first_from_any_channel_lowest_index_first() -> None:
    gate, channels = make_gate(3)
    channels[0].try_send("data0")
    channels[2].send_priority("p2")
    channels[1].send_priority("p1")
    channels[1].send_priority("p1'")
    assert gate.has_priority
    assert poll_all(gate) == [(1, "p1"), (1, "p1'"), (2, "p2"), (0, "data0")]
    assert not gate.has_priority


def test_poll_priority_takes_only_priority_items() -> None:
    gate, channels = make_gate(2)
    channels[0].try_send("data")
    channels[1].send_priority("p")
    assert gate.poll_priority() == (1, "p")
    assert gate.poll_priority() is None
    assert gate.poll() == (0, "data")


def test_blocked_channel_holds_back_data_but_not_priority_items() -> None:
    gate, channels = make_gate(2)
    gate.block(0)
    assert gate.is_blocked(0)
    assert gate.blocked_channels == [0]
    channels[0].try_send("held")
    channels[1].try_send("free")
    channels[0].send_priority("barrier")
    assert poll_all(gate) == [(0, "barrier"), (1, "free")]
    assert channels[0].queued() == ("held",)
    gate.unblock(0)
    assert not gate.is_blocked(0)
    assert poll_all(gate) == [(0, "held")]


async def test_unblock_wakes_the_gate_and_unblock_all_releases_every_channel() -> None:
    gate, channels = make_gate(3)
    for i in range(3):
        gate.block(i)
        channels[i].try_send(f"d{i}")
    assert gate.poll() is None
    await gate.wait_available()  # consumes the (coalesced) arrival wake-ups at once
    assert not gate.waker.pending
    gate.unblock(1)
    assert gate.waker.pending
    assert poll_all(gate) == [(1, "d1")]
    await gate.wait_available()
    gate.unblock_all()
    assert gate.waker.pending
    assert gate.blocked_channels == []
    assert sorted(poll_all(gate)) == [(0, "d0"), (2, "d2")]


def test_end_of_channel_is_reported_once_per_channel_then_the_gate_finishes() -> None:
    gate, channels = make_gate(2)
    channels[0].try_send("a")
    channels[0].close()
    channels[1].close()
    # Round robin: channel 0, then 1, then 0 again.
    assert poll_all(gate) == [(0, "a"), (1, END_OF_CHANNEL), (0, END_OF_CHANNEL)]
    assert gate.is_ended(0)
    assert gate.is_ended(1)
    assert gate.finished
    for _ in range(3):
        assert gate.poll() is None


def test_gate_is_not_finished_while_one_channel_is_open() -> None:
    gate, channels = make_gate(2)
    channels[0].close()
    assert poll_all(gate) == [(0, END_OF_CHANNEL)]
    assert not gate.finished
    channels[1].try_send("late")
    assert poll_all(gate) == [(1, "late")]


def test_blocked_closed_channel_reports_its_end_only_after_unblock() -> None:
    gate, channels = make_gate(2)
    gate.block(0)
    channels[0].try_send("held")
    channels[0].close()
    channels[1].close()
    assert poll_all(gate) == [(1, END_OF_CHANNEL)]
    assert not gate.is_ended(0)
    assert not gate.finished
    gate.unblock(0)
    assert poll_all(gate) == [(0, "held"), (0, END_OF_CHANNEL)]
    assert gate.finished


def test_gate_registers_its_waker_on_every_channel() -> None:
    waker = Waker()
    channels: list[Channel[str]] = [Channel(2), Channel(2)]
    gate = InputGate(channels, waker=waker)
    assert gate.waker is waker
    channels[1].try_send("x")
    assert waker.pending


@pytest.mark.parametrize(
    "arrive",
    [
        lambda channel: channel.try_send("x"),
        lambda channel: channel.send_priority("x"),
        lambda channel: channel.close(),
    ],
    ids=["data", "priority", "close"],
)
async def test_wait_available_returns_when_something_arrives(arrive, spin) -> None:
    gate, channels = make_gate(2)
    waiter = asyncio.create_task(gate.wait_available())
    await spin()
    assert not waiter.done()
    arrive(channels[1])
    await waiter
    assert gate.poll() is not None
