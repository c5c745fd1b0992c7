"""The store's side of a search on SQLite and PostgreSQL: the change check every search makes (`version()`)
and reading the whole embedding matrix (`embeddings(dim)`, what a replica does after another one wrote).

Rows are seeded random float32 embeddings (128 dims, one per person: the reading cost does not depend on the
values), written straight into the tables. PostgreSQL: a throwaway server from Debian's package
(tests/_postgres.py) unless --url names a database. Prints one JSON object.

    python benchmarks/gallery_stores.py --sizes 10000 100000 --out benchmarks/results/gallery_stores.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from siamface.gallery_store import open_store  # noqa: E402

DIM = 128


def fill(store: object, n: int, seed: int) -> None:
    """n people with one embedding each, in one transaction."""
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, DIM)).astype("<f4")
    with store.write() as tx:  # type: ignore[attr-defined]
        tx.execute("DELETE FROM people")
        for start in range(0, n, 5000):
            rows = range(start, min(n, start + 5000))
            ids = [tx.add_person(f"person_{i:07d}", 1.7e9) for i in rows]
            for i, pid in zip(rows, ids):
                tx.execute("INSERT INTO enrollments (person_id, embedding, source, sha256, created) "
                           "VALUES (?, ?, 'x.jpg', '-', 1.7e9)", (pid, emb[i].tobytes()))


def timed(fn: object, repeat: int) -> list[float]:
    out = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append(time.perf_counter() - t)
    return out


def measure(store: object, sizes: list[int], seed: int) -> list[dict[str, object]]:
    rows = []
    for n in sizes:
        fill(store, n, seed)
        v = timed(store.version, 1000)  # type: ignore[attr-defined]
        load = timed(lambda: store.embeddings(DIM), 3)  # type: ignore[attr-defined]
        names, person, emb = store.embeddings(DIM)  # type: ignore[attr-defined]
        assert emb.shape == (n, DIM) and len(names) == n == len(person)
        rows.append({"people": n, "version_us_median": round(statistics.median(v) * 1e6, 1),
                     "embeddings_s_median": round(statistics.median(load), 3),
                     "embeddings_s_all": [round(x, 3) for x in load]})
        print(json.dumps({"store": type(store).__name__, **rows[-1]}), file=sys.stderr)
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    ap.add_argument("--url", default=None, help="a PostgreSQL database to use (default: a throwaway server)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    result: dict[str, object] = {"command": " ".join(sys.argv), "seed": args.seed, "dim": DIM,
                                 "machine": f"{platform.processor() or platform.machine()}, {platform.node()}"}
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = open_store(Path(tmp) / "bench.db")
        result["sqlite"] = measure(sqlite, args.sizes, args.seed)
        sqlite.close()
    server = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(REPO / "tests"))
        from _postgres import PostgresServer, find_bindir

        bindir = find_bindir()
        if bindir is None:
            raise SystemExit("no PostgreSQL binaries: pass --url")
        server = PostgresServer(bindir).start()
        url = server.new_database()
        result["postgres_server"] = "throwaway, loopback TCP, fsync off (tests/_postgres.py)"
    try:
        pg = open_store(url)
        result["postgresql"] = measure(pg, args.sizes, args.seed)
        pg.close()
    finally:
        if server is not None:
            server.stop()
    text = json.dumps(result, indent=2)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
