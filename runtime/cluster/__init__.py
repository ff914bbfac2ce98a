"""Worker processes: subtasks in N processes joined by credit-based socket channels.

``StreamEnvironment(workers=N)`` (N > 1) runs the job master (graph, scheduler,
checkpoint coordinator) in the calling process and the subtasks in N worker processes
(``runtime.cluster.worker``). See ``master`` (spawning, heartbeats, failures),
``network`` (frames and links), ``remote_channel`` (Channel-compatible ends) and
``control`` (the messages between master and workers).
"""

from __future__ import annotations

__all__: list[str] = []
