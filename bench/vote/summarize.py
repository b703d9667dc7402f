#!/usr/bin/env python3
"""The "## Vote app (idp-sql)" section of docs/benchmarks.md, from a bench/vote results file.

  summarize.py RESULTS.jsonl                   print the section
  summarize.py RESULTS.jsonl --docs FILE       print it and replace that section of FILE (up to the
                                               next "## " heading; the rest of the file is left alone)
  summarize.py --docs FILE                     the section without figures (method and command only)

Results from debug binaries are printed but not written to the doc unless --force is given.
"""

import argparse
import os
import statistics
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import common  # noqa: E402
from common import load  # noqa: E402

HEADING = "## Vote app (idp-sql)"
OPS = {"get": "`GET /`", "vote": "`POST /`"}


def summary(recs, size, mode, op):
    runs = [r for r in recs if r["kind"] == "wrk" and r["size"] == size and r["mode"] == mode and r["op"] == op
            and not r["discarded"]]
    if not runs:
        return None
    med = lambda k: statistics.median(r[k] for r in runs)  # noqa: E731
    return {
        "rps": med("rps"), "p50": med("p50_ms"), "p99": med("p99_ms"),
        "app_cpu": med("app_cpu_pct"), "app_us": med("app_cpu_us_per_req"),
        "pg_cpu": med("pg_cpu_pct"), "pg_us": med("pg_cpu_us_per_req"), "wrk_cpu": med("wrk_cpu_pct"),
        "rss": max(r["rss_peak_mb"] for r in runs), "each": [r["rps"] for r in runs],
        "non2xx": sum(r["non2xx"] for r in runs), "requests": sum(r["requests"] for r in runs),
        "per_run": statistics.median(r["requests"] for r in runs),
        "timeouts": sum(r["socket_errors"].get("timeout", 0) for r in runs),
        "errors": sum(v for r in runs for k, v in r["socket_errors"].items() if k != "timeout"),
        "discarded": sum(1 for r in recs if r["kind"] == "wrk" and r["size"] == size and r["mode"] == mode
                         and r["op"] == op and r["discarded"]),
    }


def one(recs, kind, size, mode):
    return next((r for r in recs if r["kind"] == kind and r.get("size") == size and r.get("mode") == mode), None)


def fr(x):
    return "–" if x is None else f"{x:,.0f}"


def fm(x):
    if x is None:
        return "–"
    return f"{x:.2f}" if x < 10 else f"{x:.1f}" if x < 1000 else f"{x:,.0f}"


def fx(a, b):
    if not a or not b:
        return "–"
    r = a / b
    return f"{r:.2f}×" if r < 100 else f"{r:,.0f}×"


def pg_name(version):
    """"PostgreSQL 15.18 (Debian 15.18-0+deb12u1) on x86_64-pc-linux-gnu, …" -> "PostgreSQL 15.18"."""
    parts = version.replace("postgres (PostgreSQL)", "PostgreSQL").split()
    return " ".join(parts[:2]) if parts else "PostgreSQL"


def method(cfg, pg_version="PostgreSQL 15", nproc=2):
    sizes = ", ".join(f"{s:,}" for s in cfg["sizes"])
    return [
        f"Method: one {pg_version} cluster made for the run (default settings, but unix socket only: the "
        "app's role signs in over the socket with a password, scram-sha-256), one `gatehouse identity "
        "--rate-limits off` on which one user signed up (its ID token is on every vote), and `vote` with "
        "`DATABASE_URL=postgres://vote:…@localhost/votes?host=<socket dir>&port=<port>` (the `host` parameter, "
        "a socket directory, replaces the URL's host), `GOOGLE_CLOUD_PROJECT` and "
        "`GATEHOUSE_IDENTITY_URL`. For each starting size "
        f"({sizes} votes) and each mode, `pet_votes` is dropped and re-created (the sample's table, with the "
        "app's DDL for it), filled with `generate_series` (60 % CATS, one vote a second back from now, "
        "28-character uids), then `VACUUM (ANALYZE)` and `CHECKPOINT`; a fresh `vote` process starts on it "
        "and creates its `time_cast` index and the tally table (counted from the rows). The driver checks that the page shows the seeded "
        f"counts, warms up with `GET /` for {cfg['warmup']}, then runs `wrk -t{cfg['threads']} "
        f"-c{cfg['connections']} -d{cfg['duration']} --latency --timeout {cfg['wrk_timeout']}` × {cfg['runs']} "
        "on `GET /`, casts one check vote, and runs the same × "
        f"{cfg['runs']} on `POST /` (`team=CATS` / `team=DOGS` alternately with `Authorization: Bearer <ID "
        "token>`, `bench/vote/lua/vote.lua`; votes/s = 200 answers per second). req/s is the median run, "
        "p50/p99 the medians of the per-run values. The votes cast stay in the table, so the `POST /` runs "
        "end above their starting size (the `GET /` runs come first, at the exact size). `vote` keeps the "
        "sample's pool of 5 connections and writes its JSON log line per vote to a file. wrk, `vote`, "
        f"PostgreSQL and the identity server share the same {nproc} cores; CPU % is of one core, µs/req is "
        "CPU time ÷ requests (PostgreSQL: the postmaster's process tree, parallel and autovacuum workers "
        "included). A run during which processes outside the test used more than 10 % of a core is "
        "discarded and repeated.",
        "",
        "Modes: `TALLY_MODE=tally` (the default) reads the per-candidate tally rows (8 shards each) and the "
        "5 newest votes through the `time_cast` index in one statement; `TALLY_MODE=count` runs the sample's "
        "queries, `SELECT COUNT(vote_id) FROM pet_votes WHERE candidate = $1` for CATS and for DOGS, then "
        "the 5 newest votes. Two differences from the sample remain in count mode. The app creates the "
        "`time_cast` index in both modes (schema creation is shared), and the sample has no such index: its "
        "recent-votes query scans and sorts the whole table where count mode reads 5 index entries, so count "
        "mode is a lower bound of the sample's page cost. And a vote is the same statement in both modes "
        "(insert + tally shard bump, one statement), so votes/s compares the same write; only the page "
        "differs.",
    ]


def report(path=None):
    L = [HEADING, ""]
    if path is None:
        from bench import CFG  # the defaults, for the method text
        L += ["Command: `bench/vote/run.sh` (method and files: `bench/vote/README.md`).", ""]
        L += method(CFG) + [""]
        L += ["No figures yet: build the release binaries (`cargo build --release -p gatehouse -p "
              "gatehouse-vote`), run `bench/vote/run.sh`; it replaces this section with the tables.", ""]
        return "\n".join(L)
    recs = load(path)
    m = next(r for r in recs if r["kind"] == "meta")
    cfg = m["config"]
    pgs = m.get("pg_settings", {})
    L.append(f"Date: {m['date_utc']}. Machine: {m['nproc']} cores ({m['cpu_model']}), {m['mem_gib']} GiB RAM, "
             f"Linux {m['kernel']}. Binaries: `{m['vote_bin']}` built {m['vote_bin_mtime']}, "
             f"`{m['gatehouse_bin']}` built {m['gatehouse_bin_mtime']} ({m['profile']}; repository at "
             f"{m['git_rev']} when measured; the harness does not build them). {pg_name(m['postgres'])} "
             f"(shared_buffers {pgs.get('shared_buffers', '?')}, synchronous_commit "
             f"{pgs.get('synchronous_commit', '?')}, fsync {pgs.get('fsync', '?')}, "
             f"max_parallel_workers_per_gather {pgs.get('max_parallel_workers_per_gather', '?')}); load: {m['wrk']}.")
    L.append("")
    if m["profile"] != "release":
        L += ["**These figures come from debug binaries: they say nothing about the app's speed.**", ""]
    L.append(f"Command: `bench/vote/run.sh` (raw figures: `bench/vote/results/{os.path.basename(path)}`; "
             "method and files: `bench/vote/README.md`).")
    L.append("")
    L += method(cfg, pg_name(m["postgres"]), m["nproc"]) + [""]
    sizes = [s for s in cfg["sizes"] if any(r["kind"] == "wrk" and r["size"] == s for r in recs)]
    S = {(s, mode, op): summary(recs, s, mode, op) for s in sizes for mode in cfg["modes"] for op in OPS}
    g = lambda s, mode, op, k: (S.get((s, mode, op)) or {}).get(k)  # noqa: E731

    L += ["### `GET /` (the page)", "",
          "| votes at start | tally req/s | p50 ms | p99 ms | count req/s | p50 ms | p99 ms | "
          "req/s tally ÷ count | p99 count ÷ tally |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sizes:
        L.append(f"| {s:,} | {fr(g(s, 'tally', 'get', 'rps'))} | {fm(g(s, 'tally', 'get', 'p50'))} | "
                 f"{fm(g(s, 'tally', 'get', 'p99'))} | {fr(g(s, 'count', 'get', 'rps'))} | "
                 f"{fm(g(s, 'count', 'get', 'p50'))} | {fm(g(s, 'count', 'get', 'p99'))} | "
                 f"{fx(g(s, 'tally', 'get', 'rps'), g(s, 'count', 'get', 'rps'))} | "
                 f"{fx(g(s, 'count', 'get', 'p99'), g(s, 'tally', 'get', 'p99'))} |")
    L += ["", "### `POST /` (votes)", "",
          "| votes at start | tally votes/s | p50 ms | p99 ms | count votes/s | p50 ms | p99 ms | "
          "votes/s tally ÷ count |",
          "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in sizes:
        L.append(f"| {s:,} | {fr(g(s, 'tally', 'vote', 'rps'))} | {fm(g(s, 'tally', 'vote', 'p50'))} | "
                 f"{fm(g(s, 'tally', 'vote', 'p99'))} | {fr(g(s, 'count', 'vote', 'rps'))} | "
                 f"{fm(g(s, 'count', 'vote', 'p50'))} | {fm(g(s, 'count', 'vote', 'p99'))} | "
                 f"{fx(g(s, 'tally', 'vote', 'rps'), g(s, 'count', 'vote', 'rps'))} |")
    L += ["", "### Details", "",
          "| votes at start | mode | request | req/s per run | vote CPU % | vote µs/req | PostgreSQL CPU % | "
          "PostgreSQL µs/req | wrk CPU % | vote peak RSS MB | non-2xx | timeouts / socket errors | "
          "discarded runs |",
          "|---:|---|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for s in sizes:
        for mode in cfg["modes"]:
            for op, label in OPS.items():
                x = S.get((s, mode, op))
                if not x:
                    continue
                L.append(f"| {s:,} | {mode} | {label} | {' / '.join(fr(v) for v in x['each'])} | "
                         f"{x['app_cpu']:.0f} | {fm(x['app_us'])} | {x['pg_cpu']:.0f} | {fm(x['pg_us'])} | "
                         f"{x['wrk_cpu']:.0f} | {x['rss']:.1f} | {x['non2xx']:,} of {x['requests']:,} | "
                         f"{x['timeouts']} / {x['errors']} | {x['discarded']} |")
    L += ["", "| votes at start | mode | seeding s | `vote` start → page served s (time_cast index + tally "
          "count) | table + indexes MB at start | rows after the load | tally = COUNT(*) after the load | "
          "vote VmHWM MB |",
          "|---:|---|---:|---:|---:|---:|---|---:|"]
    for s in sizes:
        for mode in cfg["modes"]:
            sd, rd, end = one(recs, "seed", s, mode), one(recs, "ready", s, mode), one(recs, "end", s, mode)
            if not sd:
                continue
            L.append(f"| {s:,} | {mode} | {sd['seconds']:.1f} | {rd['seconds']:.2f} | {rd['table_mb']:.1f} | "
                     + (f"{end['rows']:,} | {'yes' if end['tally_matches_rows'] else '**no**'} | {end['hwm_mb']:.1f} |"
                        if end else "– | – | – |"))
    L.append("")
    few = [(k, x) for k, x in S.items() if x and x["per_run"] < 1000]
    if few:
        L += ["Few requests per run (median): " + "; ".join(
            f"{s:,} {mode} {OPS[op]}: {x['per_run']:,.0f}" for (s, mode, op), x in few)
            + ". With so few, p99 is close to the slowest request of the run, and requests still in "
            "flight when wrk stops are not counted.", ""]
    for lg in (r for r in recs if r["kind"] == "log"):
        sd, end = one(recs, "seed", lg["size"], lg["mode"]), one(recs, "end", lg["size"], lg["mode"])
        added = end["rows"] - sd["cats"] - sd["dogs"] if sd and end else None
        # wrk closes its connections when it stops; a vote in flight then is cancelled with its
        # connection, possibly after it was stored and before its log line: at most one per
        # connection per POST run.
        runs = sum(1 for r in recs if r["kind"] == "wrk" and r["size"] == lg["size"] and r["mode"] == lg["mode"]
                   and r["op"] == "vote")
        gap = None if added is None else added - lg["vote_inserted"]
        if lg["errors"] or gap is None or not 0 <= gap <= cfg["connections"] * runs:
            L += [f"App log at {lg['size']:,} {lg['mode']}: {lg['errors']:,} ERROR entries, "
                  f"{lg['vote_inserted']:,} `vote_inserted` entries for {fr(added)} rows added.", ""]
    bad = [r for r in recs if r["kind"] == "check" and not r["ok"]]
    if bad:
        L += ["Failed checks: " + "; ".join(f"{r['size']:,} {r['mode']}: {r['what']}" for r in bad) + ".", ""]
    if not any(r["kind"] == "done" for r in recs):
        L += ["The run did not finish; the tables show what was measured.", ""]
    return "\n".join(L)


def write_section(docs_path, section):
    """Replace the section (up to the next "## " heading), or append it at the end."""
    common.write_section(docs_path, HEADING, section.rstrip("\n") + "\n")


def write_docs(results, docs_path, force=False):
    """Writes the section for `results` (None: the section without figures). Debug-binary
    results are refused unless forced; returns whether the doc was written."""
    if results is not None and not force:
        m = next(r for r in load(results) if r["kind"] == "meta")
        if m["profile"] != "release":
            print(f"not writing {docs_path}: {results} comes from {m['profile']} binaries "
                  "(summarize.py --force to write it anyway)", file=sys.stderr)
            return False
    write_section(docs_path, report(results))
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?")
    ap.add_argument("--docs")
    ap.add_argument("--force", action="store_true", help="write results of debug binaries to the doc too")
    args = ap.parse_args()
    print(report(args.results))
    if args.docs:
        write_docs(args.results, args.docs, args.force)


if __name__ == "__main__":
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    main()
