"""A Hypothesis state machine: an ``InputGate`` over 1-4 channels against a model."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
)

from actors import END_OF_CHANNEL, Channel, InputGate


@dataclass(eq=False)
class Element:
    """A unique element; ``priority`` says which lane it was sent on."""

    channel: int
    serial: int
    priority: bool = False


@dataclass
class ChannelModel:
    data: deque[Element] = field(default_factory=deque)
    priority: deque[Element] = field(default_factory=deque)
    closed: bool = False
    blocked: bool = False
    ended: bool = False
    sent: list[Element] = field(default_factory=list)
    polled: list[Element] = field(default_factory=list)


class InputGateMachine(RuleBasedStateMachine):
    indices = Bundle("indices")

    @initialize(target=indices, n=st.integers(1, 4), capacity=st.integers(1, 3))
    def create(self, n: int, capacity: int):
        self.n = n
        self.serial = 0
        self.channels: list[Channel[Element]] = [
            Channel(capacity, name=f"up[{i}]") for i in range(n)
        ]
        self.gate = InputGate(self.channels)
        self.models = [ChannelModel() for _ in range(n)]
        self.next = 0  # the model of the gate's round-robin cursor
        self.ends_reported = [0] * n
        return multiple(*range(n))

    def new_element(self, index: int, *, priority: bool = False) -> Element:
        self.serial += 1
        return Element(index, self.serial, priority)

    # -- producers -----------------------------------------------------------------------

    @rule(index=indices)
    def send(self, index: int) -> None:
        model = self.models[index]
        if model.closed:
            return
        element = self.new_element(index)
        if self.channels[index].try_send(element):
            model.data.append(element)
            model.sent.append(element)

    @rule(index=indices)
    def force_send(self, index: int) -> None:
        model = self.models[index]
        if model.closed:
            return
        element = self.new_element(index)
        self.channels[index].force_send(element)
        model.data.append(element)
        model.sent.append(element)

    @rule(index=indices)
    def send_priority(self, index: int) -> None:
        model = self.models[index]
        if model.closed:
            return
        element = self.new_element(index, priority=True)
        self.channels[index].send_priority(element)
        model.priority.append(element)
        model.sent.append(element)

    @rule(index=indices)
    def close(self, index: int) -> None:
        self.channels[index].close()
        self.models[index].closed = True

    # -- the consumer --------------------------------------------------------------------

    @rule(index=indices)
    def block(self, index: int) -> None:
        self.gate.block(index)
        self.models[index].blocked = True

    @rule(index=indices)
    def unblock(self, index: int) -> None:
        self.gate.unblock(index)
        self.models[index].blocked = False

    @precondition(lambda self: any(model.blocked for model in self.models))
    @rule()
    def unblock_all(self) -> None:
        self.gate.unblock_all()
        for model in self.models:
            model.blocked = False

    def expected_poll(self) -> tuple[int, Element | object] | None:
        """What the gate must return now, by its documented rules; updates the model."""
        for index, model in enumerate(self.models):
            if model.priority:
                return index, model.priority.popleft()
        for step in range(self.n):
            index = (self.next + step) % self.n
            model = self.models[index]
            if model.blocked or model.ended:
                continue
            if model.data:
                self.next = (index + 1) % self.n
                return index, model.data.popleft()
            if model.closed and not model.priority:
                self.next = (index + 1) % self.n
                model.ended = True
                return index, END_OF_CHANNEL
        return None

    @rule()
    def poll(self) -> None:
        priority_was_queued = any(model.priority for model in self.models)
        got = self.gate.poll()
        expected = self.expected_poll()
        if got is None or expected is None:
            assert got is expected is None
            return
        index, element = got
        assert index == expected[0]
        assert element is expected[1]
        if element is END_OF_CHANNEL:
            self.ends_reported[index] += 1
            return
        assert isinstance(element, Element)
        assert element.channel == index
        # Never data from a blocked channel; never data while a priority item waits.
        if not element.priority:
            assert not self.models[index].blocked
            assert not priority_was_queued
        self.models[index].polled.append(element)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def gate_state_matches_the_model(self) -> None:
        if not hasattr(self, "gate"):
            return
        assert self.gate.blocked_channels == [
            i for i, model in enumerate(self.models) if model.blocked
        ]
        assert [self.gate.is_ended(i) for i in range(self.n)] == [m.ended for m in self.models]
        assert self.gate.finished == all(model.ended for model in self.models)
        assert self.gate.has_priority == any(model.priority for model in self.models)
        assert all(count <= 1 for count in self.ends_reported)

    @invariant()
    def per_channel_order_is_preserved(self) -> None:
        if not hasattr(self, "gate"):
            return
        for model in self.models:
            # Each lane is FIFO: within a lane, polled elements keep their send order.
            for lane in (True, False):
                serials = [e.serial for e in model.polled if e.priority is lane]
                assert serials == sorted(serials)

    def teardown(self) -> None:
        if not hasattr(self, "gate"):
            return
        # Nothing is lost: unblock everything, close everything, drain the gate.
        self.gate.unblock_all()
        for model in self.models:
            model.blocked = False
        for index, channel in enumerate(self.channels):
            channel.close()
            self.models[index].closed = True
        budget = sum(len(model.sent) for model in self.models) + self.n + 1
        for _ in range(budget):
            if self.gate.finished:
                break
            self.poll()
        assert self.gate.finished
        assert self.gate.poll() is None
        assert self.ends_reported == [1] * self.n
        for model in self.models:
            assert {id(e) for e in model.polled} == {id(e) for e in model.sent}
            assert len(model.polled) == len(model.sent)


InputGateMachine.TestCase.settings = settings(
    max_examples=150, stateful_step_count=40, deadline=None, database=None
)
TestInputGateMachine = InputGateMachine.TestCase
