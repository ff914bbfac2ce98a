"""Missing server binaries fail with a message saying what to install (never a silent skip)."""

from __future__ import annotations

import pytest

from runtime.testing import servers
from runtime.testing.servers import PostgresServer, RedisServer, ServerUnavailableError


def test_missing_postgres_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers.glob, "glob", lambda pattern: [])
    monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    with pytest.raises(ServerUnavailableError, match=r"apt-get install -y postgresql"):
        PostgresServer().start()


def test_missing_redis_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers.shutil, "which", lambda name: None)
    monkeypatch.setattr(servers.Path, "exists", lambda self: False)
    with pytest.raises(ServerUnavailableError, match=r"apt-get install -y redis-server"):
        RedisServer().start()
