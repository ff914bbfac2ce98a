"""Keys go to the same subtask in every process: routing uses the stable hash, not hash().

The same keyed job runs in two interpreters with different ``PYTHONHASHSEED`` values
(so ``hash()`` of str and bytes differs between them). Each prints, as JSON, the subtask
that processed every key, found from inside a keyed process function. Both must agree
with each other and with Flink's formula over the stable hash:
``compute_operator_index_for_key_group(128, 4, assign_to_key_group(key, 128))``, the
subtask whose ``KeyGroupRange`` holds the key's group.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import runtime
from storage import KeyGroupRange, assign_to_key_group, compute_operator_index_for_key_group

PARALLELISM = 4
MAX_PARALLELISM = 128

KEYS = [
    # str
    "", "a", "b", "apple", "banana", "ключ", "🙂", "a" * 1000,
    # int
    0, 1, -1, 7, 42, 2**31, 2**40, -(2**63), 2**63 - 1, 2**100, -(2**100),
    # tuple
    (), ("a", 1), (1, "a"), ("user", 17, b"\x01"), (1, ("b", b"c")), ((),),
    # bytes
    b"", b"\x00", b"\x00\xff", b"apple", bytes(range(256)),
]  # fmt: skip

SCRIPT = """
import ast, asyncio, json, sys
from runtime import StreamEnvironment

keys = ast.literal_eval(sys.argv[1])
parallelism, max_parallelism = int(sys.argv[2]), int(sys.argv[3])

async def main():
    env = StreamEnvironment(parallelism=parallelism, max_parallelism=max_parallelism)
    (
        env.from_collection(keys)
        .key_by(lambda key: key)
        .process(lambda key, ctx: [(repr(ctx.current_key), ctx.subtask_index)])
        .collect(name="routes")
    )
    result = await env.execute("routes")
    routes = sorted(result.collected["routes"])
    print(json.dumps({"hash": hash("salted?"), "routes": routes}))

asyncio.run(main())
"""


def run_with_hash_seed(seed: str) -> subprocess.Popen[str]:
    # The child imports the same ``runtime`` as this process (an installed or a copied tree).
    package_root = str(Path(runtime.__file__).resolve().parents[1])
    env = {
        **os.environ,
        "PYTHONHASHSEED": seed,
        "PYTHONPATH": os.pathsep.join([package_root, os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", SCRIPT, repr(KEYS), str(PARALLELISM), str(MAX_PARALLELISM)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def collect_output(process: subprocess.Popen[str]) -> dict[str, object]:
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    output: dict[str, object] = json.loads(stdout)
    return output


def test_every_process_routes_every_key_to_the_same_subtask() -> None:
    processes = [run_with_hash_seed("1"), run_with_hash_seed("2")]
    first, second = (collect_output(p) for p in processes)

    # The seeds took effect: Python's own hash of a str differs between the two.
    assert first["hash"] != second["hash"]
    assert first["routes"] == second["routes"]

    routes = {ast.literal_eval(key): subtask for key, subtask in first["routes"]}  # type: ignore[union-attr]
    assert routes.keys() == set(KEYS)
    for key, subtask in routes.items():
        key_group = assign_to_key_group(key, MAX_PARALLELISM)
        assert subtask == compute_operator_index_for_key_group(
            MAX_PARALLELISM, PARALLELISM, key_group
        ), key
        assert key_group in KeyGroupRange.for_operator(MAX_PARALLELISM, PARALLELISM, subtask)
    # The keys are spread: every subtask got some.
    assert set(routes.values()) == set(range(PARALLELISM))
