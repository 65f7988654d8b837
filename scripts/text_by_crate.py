#!/usr/bin/env python3
"""Where a binary's code comes from: the size of its functions by crate, for binaries built
with their symbols (`CARGO_PROFILE_RELEASE_STRIP=none cargo build --release ...`), set side
by side, largest difference from the first binary first.

    python3 scripts/text_by_crate.py [--top 25] [--json] NAME=PATH [NAME=PATH ...]

A function counts for the first crate its demangled name mentions other than `core`, `alloc`
and `std`: `core::ptr::drop_in_place<lift_core::context::Context>` is lift-core's (drop glue
the compiler wrote for a lift-core type) and `<&mut serde_json::de::Deserializer<R> as
serde_core::de::Deserializer>::deserialize_struct` serde_json's; a name that mentions no
other crate stays with the standard library's. Needs `nm` (binutils). Standard library only.
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import sys
from pathlib import Path

STD = {"core", "alloc", "std"}
PATH_START = re.compile(r"(?<![A-Za-z0-9_:])([A-Za-z_][A-Za-z0-9_]*)::")


def crate_of(name: str) -> str:
    """The crate a demangled function name is counted for."""
    found = PATH_START.findall(name)
    for crate in found:
        if crate not in STD and not crate[0].isupper():
            return crate
    return found[0] if found else "(no path)"


def sizes(binary: Path) -> collections.Counter:
    """Bytes of code (text symbols) by crate."""
    out = subprocess.run(["nm", "--print-size", "--demangle", "--size-sort", str(binary)],
                         check=True, capture_output=True, text=True).stdout
    by_crate: collections.Counter = collections.Counter()
    for line in out.splitlines():
        fields = line.split(None, 3)
        if len(fields) == 4 and fields[2] in "tTwW":
            by_crate[crate_of(fields[3])] += int(fields[1], 16)
    return by_crate


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("binaries", nargs="+", metavar="NAME=PATH")
    ap.add_argument("--top", type=int, default=25, help="rows to show (default 25)")
    ap.add_argument("--json", action="store_true", help="print every crate's sizes as JSON")
    args = ap.parse_args()
    names, tables = [], []
    for spec in args.binaries:
        name, sep, path = spec.partition("=")
        if not sep:
            ap.error(f"expected NAME=PATH, got {spec!r}")
        names.append(name)
        tables.append(sizes(Path(path)))
    if sum(tables[0].values()) == 0:
        print(f"{names[0]}: no symbols; build it with CARGO_PROFILE_RELEASE_STRIP=none",
              file=sys.stderr)
        return 1
    crates = sorted(set().union(*tables), key=lambda c: (-(tables[-1][c] - tables[0][c]), c))
    if args.json:
        print(json.dumps({"binaries": names, "totals": [sum(t.values()) for t in tables],
                          "crates": {c: [t[c] for t in tables] for c in crates}}, indent=1))
        return 0
    width = max(len(c) for c in crates[: args.top] + ["total"])
    head = "crate".ljust(width) + "".join(n.rjust(14) for n in names)
    if len(names) > 1:
        head += f"{names[-1]} - {names[0]}".rjust(24)
    print(head)
    for crate in ["total", *crates[: args.top]]:
        row = [sum(t.values()) if crate == "total" else t[crate] for t in tables]
        line = crate.ljust(width) + "".join(f"{v:14,d}" for v in row)
        if len(names) > 1:
            line += f"{row[-1] - row[0]:+24,d}"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
