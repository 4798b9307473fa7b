#!/usr/bin/env python3
"""Checks a TorchScript policy exported by rlobj::export_policy from Python.

    python3 check_torchscript.py POLICY.ts POLICY_IO.json [--atol A]

POLICY_IO.json (written by the C++ test "interop: files for the Python checks") holds the
observations, the actions the C++ actor gave on them and the actor's parameter names. The
script torch.jit.load()s the policy, checks that its state_dict() has those names (TorchRL's:
module.0.weight, ...), runs it on the observations, on one row of them, and after .to(float64)
on the float64 observations, and compares the actions. Exit status 0 when all pass.
"""
import argparse
import json
import sys
import warnings

warnings.simplefilter("ignore")

import torch  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("policy")
    ap.add_argument("io")
    ap.add_argument("--atol", type=float, default=0.0)
    args = ap.parse_args()
    torch.set_num_threads(1)
    io = json.load(open(args.io))
    policy = torch.jit.load(args.policy, map_location="cpu")
    print(f"torch {torch.__version__}: torch.jit.load({args.policy!r}) -> {type(policy).__name__}")
    names = list(policy.state_dict().keys())
    print(f"state_dict keys: {names}")
    if names != io["parameter_names"]:
        print(f"FAIL: expected the actor's names {io['parameter_names']}")
        return 1
    obs = torch.tensor(io["observations"]["values"], dtype=torch.float64).reshape(io["observations"]["shape"])
    want = torch.tensor(io["actions"]["values"], dtype=torch.float64).reshape(io["actions"]["shape"])
    with torch.no_grad():
        got = policy(obs.to(torch.float32)).to(torch.float64)
        one = policy(obs[2:3].to(torch.float32)).to(torch.float64)
    diff = float((got - want).abs().max())
    diff_one = float((one - want[2:3]).abs().max())
    print(f"actions: {got.reshape(-1).tolist()}")
    print(f"max |action - C++ action| = {diff:.3g} (batch of {obs.shape[0]}), {diff_one:.3g} (batch of 1); "
          f"bit-exact: {diff == 0 and diff_one == 0}")
    if got.shape != want.shape or diff > args.atol or diff_one > args.atol:
        print(f"FAIL: outside --atol {args.atol}")
        return 1
    # The parameters are module attributes, so the policy converts like any module.
    with torch.no_grad():
        got64 = policy.to(torch.float64)(obs)
    if got64.dtype != torch.float64 or float((got64 - want).abs().max()) > 1e-4:
        print(f"FAIL: after .to(float64): dtype {got64.dtype}, max diff {float((got64 - want).abs().max()):.3g}")
        return 1
    print("PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main())
