#!/usr/bin/env python3
"""Writes TorchRL reference files for rlobj's parity tests with the installed TorchRL.

Run through tools/reference/generate.sh, which makes the virtual environment and sets the
determinism environment. Usage: generate.py [--out DIR] [CASE ...]
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common as C  # noqa: E402

# case name -> (module, function); dqn and dqn_double share a module
CASES = {
    "ddpg": ("ddpg", "generate"),
    "td3": ("td3", "generate"),
    "td3_bc": ("td3", "generate_bc"),
    "sac": ("sac", "generate"),
    "dqn": ("dqn", "generate_dqn"),
    "dqn_double": ("dqn", "generate_double"),
    "gae": ("gae", "generate"),
    "ppo": ("ppo", "generate"),
    "a2c": ("a2c", "generate"),
    "reinforce": ("reinforce", "generate"),
    "policies": ("policies", "generate"),  # also writes policy_<name>.pt into DIR
    "replay_buffer": ("replay_buffer", "generate"),  # also writes DIR/replay_buffer/
}
# cases whose function takes the output folder (they write files beside their JSON)
WRITES_FILES = {"policies", "replay_buffer"}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=os.path.join(HERE, "..", "..", "tests", "data", "reference", "torchrl-0.14.1"))
    ap.add_argument("--no-readme", action="store_true", help="do not (re)write DIR/README.md")
    ap.add_argument("cases", nargs="*", metavar="CASE", help=f"cases to write (default all): {' '.join(CASES)}")
    args = ap.parse_args(argv)
    cases = args.cases or list(CASES)
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        ap.error(f"unknown case(s) {unknown}; known: {list(CASES)}")
    C.check_determinism_env()
    warnings.filterwarnings("ignore")
    out_dir = os.path.abspath(args.out)
    os.makedirs(out_dir, exist_ok=True)
    for case in cases:
        mod_name, fn = CASES[case]
        mod = importlib.import_module(f"cases.{mod_name}")
        data = getattr(mod, fn)(out_dir) if case in WRITES_FILES else getattr(mod, fn)()
        text = C.dumps(data) + "\n"
        path = os.path.join(out_dir, f"{case}_torchrl.json")
        with open(path, "w") as f:
            f.write(text)
        print(f"wrote {os.path.relpath(path)}  sha256 {hashlib.sha256(text.encode()).hexdigest()}  {len(text.encode())} bytes")
    if not args.no_readme:
        import readme

        readme.write(out_dir, " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
