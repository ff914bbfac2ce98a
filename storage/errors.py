"""Errors raised by the storage package.

Everything the storage layer raises on purpose derives from one root, so that the
runtime can tell a storage failure from a bug in user code::

    WeirStorageError
    ├── StateError                  state used the wrong way (no current key, a name
    │   │                           registered twice with different kinds, a restored
    │   │                           state that does not match its descriptor)
    │   └── KeyEncodingError        a key the stable hash cannot encode (also a TypeError)
    └── SerializationError          a value could not be encoded or decoded
        └── PickleForbiddenError    a value needs pickle but the job forbids pickle

Messages are lowercase, name the state, key or type involved, and say what to do.
"""

from __future__ import annotations

__all__ = [
    "KeyEncodingError",
    "PickleForbiddenError",
    "SerializationError",
    "StateError",
    "WeirStorageError",
]


class WeirStorageError(Exception):
    """Root of every error the storage package raises on purpose."""


class StateError(WeirStorageError):
    """State was used the wrong way, e.g. accessed while no current key is set."""


class KeyEncodingError(StateError, TypeError):
    """A key has a type that the stable key hash cannot encode."""


class SerializationError(WeirStorageError):
    """A state value or key could not be encoded or decoded."""


class PickleForbiddenError(SerializationError):
    """A value would need pickle, but pickle is forbidden for this job or state."""
