"""What the HTTP API and the dashboard cost a running job: keyed count, polled vs no server.

The keyed count job of ``benchmarks.throughput`` (parallelism 1, aligned checkpoints every
second, memory storage) runs in this process, alternately (ABBA, ``--repeats`` rounds):

* **no server**: as ``python JOB.py`` runs it;
* **polled**: as ``weir run`` runs it, with the HTTP API served in the job's own event
  loop (``runtime.cli.server.JobServer``, registered on the job registry), while another
  process polls it every second as the open dashboard does (``GET /jobs``, then for
  each running job ``/jobs/{id}``, ``/jobs/{id}/checkpoints``, ``/jobs/{id}/exceptions``)
  and as a Prometheus scrape does (``GET /metrics``).

The poller is one process for the whole run (its own start-up is not in any round); in
the "no server" rounds its connections are refused. Reported: records/s of each variant
in wall time and per CPU second of the job's process, the ratios polled / no server (and
per round), and how many polls the server answered. Goal (issue 17): >= 0.98x, judged on
CPU time: on a shared machine wall time swings by more than the effect measured.

    python -m benchmarks.rest            # 10,000,000 records (some 10 s a run), 5 rounds
    python -m benchmarks.rest --quick    # a smoke run of a few seconds
"""

from __future__ import annotations

import argparse
import select
import socket
import subprocess
import sys
import time
from typing import Any

from benchmarks.harness import (
    Series,
    interleave,
    machine,
    machine_line,
    paired_ratios,
    write_report,
)
from benchmarks.throughput import time_keyed_count
from runtime import StreamEnvironment
from runtime.api.overrides import JOBS
from runtime.cli.server import JobServer, bind_listener
from runtime.cli.targets import SavepointTargets

POLL_SECONDS = 1.0
GOAL = 0.98


def run_job(
    records: int, keys: int, server: JobServer | None, cpu: list[float] | None = None
) -> float:
    """Records/s of the keyed count job, with the HTTP API served if ``server`` is given.

    Appends to ``cpu`` the records per second of this process's CPU time (every thread:
    the job's loop, the server in it, checkpoint writes), which other processes of a
    shared machine do not inflate as they do wall time.
    """
    env = StreamEnvironment(parallelism=1)
    env.enable_checkpointing(1.0)
    if server is not None:
        JOBS.add_listener(server.on_job_registered)
    started = time.process_time()
    try:
        seconds, _ = time_keyed_count(env, records, keys)
    finally:
        if server is not None:
            JOBS.remove_listener(server.on_job_registered)
    if cpu is not None:
        cpu.append(records / (time.process_time() - started))
    return records / seconds


def poll_forever(address: str) -> None:
    """The poller process: poll ``address`` every second until stdin closes; print counts."""
    import httpx

    answered = refused = 0
    with httpx.Client(base_url=address, timeout=5.0) as client:
        while True:
            ready, _, _ = select.select([sys.stdin], [], [], POLL_SECONDS)
            if ready and not sys.stdin.readline():
                break
            try:
                jobs = client.get("/jobs").json()["jobs"]
                for job in jobs:
                    if job["status"] == "RUNNING":
                        for path in ("", "/checkpoints", "/exceptions"):
                            client.get(f"/jobs/{job['id']}{path}").raise_for_status()
                client.get("/metrics").raise_for_status()
                answered += 1
            except httpx.TransportError:
                refused += 1
    print(f"{answered} {refused}", flush=True)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, help="[10,000,000; --quick 2,000,000]")
    parser.add_argument("--keys", type=int, default=1_000)
    parser.add_argument("--repeats", type=int, help="[5; --quick 1]")
    parser.add_argument("--quick", action="store_true", help="2M records, 1 round")
    parser.add_argument("--poll", metavar="URL", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.poll:
        poll_forever(args.poll)
        return {}
    args.records = args.records or (2_000_000 if args.quick else 10_000_000)
    args.repeats = args.repeats or (1 if args.quick else 5)
    port = _free_port()
    address = f"http://127.0.0.1:{port}"
    poller = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.rest", "--poll", address],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    targets = SavepointTargets.from_options([])

    cpu: dict[str, list[float]] = {"no server": [], "polled": []}

    def polled() -> float:
        server = JobServer(bind_listener("127.0.0.1", port), targets)
        try:
            return run_job(args.records, args.keys, server, cpu["polled"])
        finally:
            server.close()

    started = time.perf_counter()
    try:
        series = interleave(
            {
                "no server": lambda: run_job(args.records, args.keys, None, cpu["no server"]),
                "polled": polled,
            },
            repeats=args.repeats,
        )
    finally:
        out, _ = poller.communicate(input="", timeout=30)  # closes its stdin: it stops
    answered, refused = (int(x) for x in (out.split() or ["0", "0"]))
    wall = time.perf_counter() - started
    off, on = series["no server"], series["polled"]
    paired = paired_ratios(on, off)
    ratio = paired["ratio"]
    # The warm-up's runs come first in each list; the rounds are the last ``repeats``.
    cpu_off = Series("no server (CPU)", cpu["no server"][-args.repeats :])
    cpu_on = Series("polled (CPU)", cpu["polled"][-args.repeats :])
    cpu_paired = paired_ratios(cpu_on, cpu_off)
    cpu_ratio = cpu_paired["ratio"]
    info = machine()
    headline = [
        {
            "figure": "keyed count per CPU second of the job's process, HTTP API polled every "
            "second (dashboard + /metrics) vs no server",
            "value": f"{cpu_on.median:,.0f} rec/CPU-s",
            "baseline": f"{cpu_off.median:,.0f} rec/CPU-s",
            "ratio": cpu_ratio,
            "per_round": {
                "min": cpu_paired["per_round"]["min"],
                "max": cpu_paired["per_round"]["max"],
            },
            "goal": f">= {GOAL:.2f}x",
            "met": cpu_ratio >= GOAL,
        },
        {
            "figure": "keyed count, HTTP API polled every second (dashboard + /metrics) vs "
            "no server",
            "value": f"{on.median:,.0f} rec/s",
            "baseline": f"{off.median:,.0f} rec/s",
            "ratio": ratio,
            "per_round": {
                "min": paired["per_round"]["min"],
                "max": paired["per_round"]["max"],
            },
            "goal": f">= {GOAL:.2f}x",
            "met": ratio >= GOAL,
        },
    ]
    report = {
        "benchmark": "rest",
        "records": args.records,
        "keys": args.keys,
        "parallelism": 1,
        "checkpoint_interval_s": 1.0,
        "poll_interval_s": POLL_SECONDS,
        "machine": info,
        "records_per_s": {"no server": off.summary(), "polled": on.summary()},
        "ratio_polled_to_no_server": ratio,
        "ratio_per_round": paired["per_round"],
        "records_per_cpu_s": {"no server": cpu_off.summary(), "polled": cpu_on.summary()},
        "cpu_ratio_polled_to_no_server": cpu_ratio,
        "cpu_ratio_per_round": cpu_paired["per_round"],
        "polls_answered": answered,
        "polls_refused": refused,
        "wall_seconds": wall,
        "goal": f">= {GOAL}",
        "headline": headline,
    }
    noisy = " (noisy: spread > 1.25)" if on.noisy or off.noisy else ""
    rounds = paired["per_round"]
    cpu_rounds = cpu_paired["per_round"]
    markdown = "\n".join(
        [
            f"Keyed count, {args.records:,} records, {args.keys:,} keys, parallelism 1, "
            f"aligned checkpoints every 1 s, medians of {args.repeats}{noisy}; "
            f"{machine_line(info)}",
            "",
            "| variant | records/s (median) | min | max |",
            "|---|---:|---:|---:|",
            f"| no server | {off.median:,.0f} | {min(off.values):,.0f} | {max(off.values):,.0f} |",
            f"| HTTP API, polled every 1 s | {on.median:,.0f} | {min(on.values):,.0f} | "
            f"{max(on.values):,.0f} |",
            f"| ratio polled / no server (wall time) | {ratio:.3f}x (per round "
            f"{rounds['min']:.3f} to {rounds['max']:.3f}) | | |",
            f"| no server, per CPU second of the process | {cpu_off.median:,.0f} | "
            f"{min(cpu_off.values):,.0f} | {max(cpu_off.values):,.0f} |",
            f"| polled, per CPU second of the process | {cpu_on.median:,.0f} | "
            f"{min(cpu_on.values):,.0f} | {max(cpu_on.values):,.0f} |",
            f"| **ratio polled / no server (CPU time)** | **{cpu_ratio:.3f}x** (goal >= "
            f"{GOAL}x; per round {cpu_rounds['min']:.3f} to {cpu_rounds['max']:.3f}) | | |",
            "",
            "Wall time shares the machine with every other process; CPU time of the job's "
            "process counts its own work only (the server runs in it, the poller does not), "
            "so the CPU-time ratio is the one the goal is judged on.",
            "",
            f"The poller's rounds answered by the server: {answered} (each: /jobs, the job, "
            f"its checkpoints and exceptions, /metrics); refused while no server ran: "
            f"{refused}.",
        ]
    )
    if not args.quick:
        write_report("rest", report, markdown)
    print(markdown)
    report["markdown"] = markdown
    return report


if __name__ == "__main__":
    main()
