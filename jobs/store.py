"""``advsweep store ls|du|gc [STORE]``: what the store holds, how big it is, and dropping the
evaluation entries no results folder uses.

STORE is a store folder or URI (default ``results/store``, where the shipped specs keep theirs).
``gc`` drops every evaluation entry (study.evalstore) that no results folder's last sweep used,
where that folder still has its manifest.json; models are kept (retraining costs more than their
bytes). ``gc --dry-run`` lists what it would drop. Exit status: 0 done, 2 no such store.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from datetime import datetime, timezone

from study import fsio
from study.evalstore import EvalStore

DEFAULT = "results/store"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def main(argv=None, prog="advsweep store") -> int:
    p = argparse.ArgumentParser(prog=prog, description=__doc__.splitlines()[0])
    p.add_argument("action", choices=("ls", "du", "gc"))
    p.add_argument("store", nargs="?", default=DEFAULT, help=f"store folder or URI (default {DEFAULT})")
    p.add_argument("--dry-run", action="store_true", help="gc: list what would be dropped, drop nothing")
    args = p.parse_args(argv)
    fs, base = fsio.resolve(args.store)
    if not fsio.exists(fs, base):
        print(f"{prog}: no store at {args.store}", file=sys.stderr)
        return 2
    store = EvalStore(args.store)
    if args.action == "ls":
        for e in sorted(store.entries(), key=lambda e: (e["kind"], e["mtime"] or 0)):
            when = datetime.fromtimestamp(e["mtime"], timezone.utc).strftime("%Y-%m-%d %H:%M") if e["mtime"] else "-"
            print(f"{e['kind']:<7} {e['key']:<26} {_size(e['bytes']):>10}  {when}")
        return 0
    if args.action == "du":
        entries = store.entries()
        count, size = Counter(e["kind"] for e in entries), Counter()
        for e in entries:
            size[e["kind"]] += e["bytes"]
        for kind in ("models", "units", "facts", "runs"):
            print(f"{kind:<7} {count[kind]:>6} entries {_size(size[kind]):>10}")
        print(f"{'total':<7} {sum(count.values()):>6} entries {_size(sum(size.values())):>10}")
        refs = store.refs()
        print(f"results folders that recorded their evaluation entries: {len(refs)}")
        return 0
    dropped, live = store.gc(dry_run=args.dry_run)
    verb = "would drop" if args.dry_run else "dropped"
    print(f"{verb} {len(dropped)} evaluation entries ({_size(sum(e['bytes'] for e in dropped))}); kept those of {len(live)} results folders" + (f": {', '.join(live)}" if live else ""))
    if args.dry_run:
        for e in dropped:
            print(f"  {e['kind']:<6} {e['key']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
