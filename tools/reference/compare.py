#!/usr/bin/env python3
"""Compares two reference files of the same case number by number.

    compare.py A.json B.json           one pair
    compare.py DIR_A DIR_B             every <case>_torchrl.json present in both folders
    options: --markdown (one table for all pairs), --keys (list every key present in one file only)

For each scenario and each kind of quantity it prints the largest absolute and relative
difference over every number the two files share (full values, first-4, sum and norm of the
summarised records, bare numbers), then the keys present in only one of the files (iteration
indices folded to [*]) and the shared records whose shapes differ. Runs on the standard library
alone (no torch needed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import OrderedDict, defaultdict

KINDS = ["outputs", "grads", "params", "targets", "sampling", "diagnostics", "inputs", "other"]


KIND_OF_PART = [
    ("outputs", ("loss_out", "batch_td_error", "total_loss", "outputs", "per_sample")),
    ("grads", ("grads",)),
    ("params", ("params_after_adam", "params_after_update")),
    ("targets", ("targets_after_update", "targets_after_updater_init", "targets_at_start")),
    ("sampling", ("sampling", "noise", "rng_draws")),
    ("diagnostics", ("diagnostics", "crosscheck", "checks", "actor_forward_on_batch", "vs_not_vectorized")),
]


def kind_of(path):
    if path and path[0] in ("canonical_params", "batch"):
        return "inputs"
    for kind, names in KIND_OF_PART:
        if any(p in names for p in path):
            return kind
    return "other"


def scenario_of(path):
    if len(path) >= 2 and path[0] == "scenarios":
        return path[1]
    if path and path[0] == "meta":
        return "(meta)"
    return "(" + (path[0] if path else "root") + ")"


def is_record(o):
    return isinstance(o, dict) and any(k in o for k in ("values", "first", "norm", "sum"))


def fold(path):
    return "/".join(re.sub(r"^\d+$", "*", str(p)) for p in path)


class Diff:
    def __init__(self):
        self.stats = OrderedDict()  # (scenario, kind) -> [n, max_abs, max_rel, where_abs]
        self.only_a = OrderedDict()
        self.only_b = OrderedDict()
        self.shape = []
        self.nonnumeric = []

    def number(self, path, a, b):
        key = (scenario_of(path), kind_of(path))
        s = self.stats.setdefault(key, [0, 0.0, 0.0, ""])
        d = abs(a - b)
        m = max(abs(a), abs(b))
        r = d / m if m > 0 else 0.0
        s[0] += 1
        if d > s[1]:
            s[1] = d
            s[3] = "/".join(str(p) for p in path)
        if r > s[2]:
            s[2] = r

    def walk(self, a, b, path=()):
        if is_record(a) and is_record(b):
            for field in ("values", "first"):
                if field in a and field in b:
                    va, vb = a[field], b[field]
                    if len(va) != len(vb) or a.get("shape") != b.get("shape"):
                        self.shape.append(f"{'/'.join(map(str, path))}: shape {a.get('shape', len(va))} vs {b.get('shape', len(vb))}")
                        break
                    for i, (x, y) in enumerate(zip(va, vb)):
                        if isinstance(x, bool) or isinstance(y, bool):
                            if x != y:
                                self.nonnumeric.append(f"{'/'.join(map(str, path))}[{i}]: {x} vs {y}")
                        else:
                            self.number(path + (f"{field}[{i}]",), float(x), float(y))
            for field in ("sum", "norm"):
                if field in a and field in b:
                    self.number(path + (field,), float(a[field]), float(b[field]))
            for field in ("values", "first", "sum", "norm"):
                if (field in a) != (field in b):
                    (self.only_a if field in a else self.only_b)[fold(path + (field,))] = True
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in a:
                if k in b:
                    self.walk(a[k], b[k], path + (k,))
                else:
                    self.only_a[fold(path + (k,))] = True
            for k in b:
                if k not in a:
                    self.only_b[fold(path + (k,))] = True
            return
        if isinstance(a, list) and isinstance(b, list):
            if all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in a + b) and len(a) == len(b):
                for i, (x, y) in enumerate(zip(a, b)):
                    self.number(path + (str(i),), float(x), float(y))
                return
            if len(a) != len(b):
                self.shape.append(f"{'/'.join(map(str, path))}: list of {len(a)} vs {len(b)}")
            for i, (x, y) in enumerate(zip(a, b)):
                self.walk(x, y, path + (str(i),))
            return
        if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool) and not isinstance(b, bool):
            self.number(path, float(a), float(b))
            return
        if a != b:
            self.nonnumeric.append(f"{'/'.join(map(str, path))}: {json.dumps(a)[:60]} vs {json.dumps(b)[:60]}")


def compare(pa, pb):
    with open(pa) as f:
        a = json.load(f)
    with open(pb) as f:
        b = json.load(f)
    d = Diff()
    d.walk(a, b)
    return d


def fmt(x):
    return "0" if x == 0 else f"{x:.2e}"


def report(name, d, show_keys, out=sys.stdout):
    print(f"== {name}", file=out)
    rows = defaultdict(dict)
    for (sc, kind), (n, mab, mrel, where) in d.stats.items():
        rows[sc][kind] = (n, mab, mrel, where)
    print(f"  {'scenario':34s} {'kind':12s} {'numbers':>8s} {'max |a-b|':>10s} {'max rel':>10s}  where (max abs)", file=out)
    for sc, kinds in rows.items():
        for kind in KINDS:
            if kind in kinds:
                n, mab, mrel, where = kinds[kind]
                print(f"  {sc:34s} {kind:12s} {n:8d} {fmt(mab):>10s} {fmt(mrel):>10s}  {where if mab else ''}", file=out)
    for label, keys in (("only in A", d.only_a), ("only in B", d.only_b)):
        if keys:
            ks = list(keys)
            print(f"  keys {label}: {len(ks)}", file=out)
            shown = ks if show_keys else _collapse(ks)[:40]
            for k in shown:
                print(f"    {k}", file=out)
    if d.shape:
        print(f"  shape differences: {len(d.shape)}", file=out)
        for s in d.shape[:20]:
            print(f"    {s}", file=out)
    if d.nonnumeric:
        print(f"  non-numeric differences (strings, booleans): {len(d.nonnumeric)}", file=out)
        if show_keys:
            for s in d.nonnumeric:
                print(f"    {s}", file=out)


def _collapse(keys):
    """Folds scenario names so that a key missing in every scenario prints once."""
    seen = OrderedDict()
    for k in keys:
        seen[re.sub(r"^scenarios/[^/]+/", "scenarios/<sc>/", k)] = True
    return list(seen)


def markdown(results):
    lines = ["| case | scenario | outputs | grads | params | targets | sampling |", "|---|---|---|---|---|---|---|"]
    for name, d in results:
        rows = defaultdict(dict)
        for (sc, kind), (n, mab, mrel, where) in d.stats.items():
            rows[sc][kind] = (mab, mrel)
        for sc, kinds in rows.items():
            if sc.startswith("("):
                continue
            cells = []
            for kind in ("outputs", "grads", "params", "targets", "sampling"):
                cells.append(f"{fmt(kinds[kind][0])} / {fmt(kinds[kind][1])}" if kind in kinds else "")
            lines.append(f"| {name} | {sc} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--keys", action="store_true", help="list every key present in one file only, and every non-numeric difference")
    ap.add_argument("--markdown", action="store_true", help="print one Markdown table (max abs / max rel per kind)")
    args = ap.parse_args(argv)
    pairs = []
    if os.path.isdir(args.a) and os.path.isdir(args.b):
        for f in sorted(os.listdir(args.a)):
            if f.endswith(".json") and os.path.exists(os.path.join(args.b, f)):
                pairs.append((f[: -len("_torchrl.json")] if f.endswith("_torchrl.json") else f,
                              os.path.join(args.a, f), os.path.join(args.b, f)))
    else:
        pairs.append((os.path.basename(args.a), args.a, args.b))
    results = []
    for name, pa, pb in pairs:
        d = compare(pa, pb)
        results.append((name, d))
        if not args.markdown:
            report(name, d, args.keys)
    if args.markdown:
        print(markdown(results))


if __name__ == "__main__":
    main()
