"""Word count: lines -> words -> (word, 1) -> key_by(word) -> running sum -> print.

    python examples/wordcount.py            # or: weir run examples/wordcount.py
    python examples/wordcount.py -p 4       # with four subtasks per operator

The final count of each word is the last value printed for it; the job also prints its
plan (which operators were chained into one actor) and its records per operator.
"""

from __future__ import annotations

import argparse
import asyncio
from collections import Counter

from runtime import StreamEnvironment

TEXT = """\
A weir is a low barrier across a river
the water flows over the weir and the level is held
barriers flow with the data and the state is held
""".splitlines()


async def main(parallelism: int) -> None:
    env = StreamEnvironment(parallelism=parallelism)
    (
        env.from_collection(TEXT * 100, name="lines")
        .flat_map(lambda line: line.lower().split(), name="split")
        .map(lambda word: (word, 1), name="pair")
        .key_by(lambda pair: pair[0])
        .sum(1, name="count", uid="count")
        .collect(name="counts")
    )
    print("plan:")
    print(env.explain())
    result = await env.execute("word count")
    final: dict[str, int] = {}
    for word, count in result.collected["counts"]:
        final[word] = max(final.get(word, 0), count)
    expected = Counter(w for line in TEXT * 100 for w in line.lower().split())
    assert final == dict(expected), "word counts differ from collections.Counter"
    print("\ntop words:")
    for word, count in sorted(final.items(), key=lambda kv: (-kv[1], kv[0]))[:5]:
        print(f"  {word:<10} {count}")
    print()
    print(result.summary())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Weir word count")
    parser.add_argument("-p", "--parallelism", type=int, default=2)
    asyncio.run(main(parser.parse_args().parallelism))
