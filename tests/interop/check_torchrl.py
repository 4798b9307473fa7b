#!/usr/bin/env python3
"""The Python step of the ctest entry interop.torchrl: TorchRL 0.14.1 loads rlobj's policies.

    check_torchrl.py DIR

For each example policy of tools/reference/cases/policies.py: builds TorchRL's policy, loads
DIR/rlobj_<name>.pt (rlobj::save_state_dict) with load_state_dict(strict=True), acts
deterministically on DIR/rlobj_<name>_io.pt's observations and writes
DIR/torchrl_<name>.pt = {"observation", "action"} for the C++ side to compare with rlobj's
actions within the derived tolerance. Exit status 1 if a file does not load strictly.
"""

import os
import sys
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "tools", "reference"))
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from cases import policies as P  # noqa: E402


def main(directory):
    failed = []
    for name, (build, _) in P.policies().items():
        policy = build()
        state = torch.load(os.path.join(directory, f"rlobj_{name}.pt"))
        try:
            policy.load_state_dict(state, strict=True)
        except RuntimeError as e:
            print(f"interop.torchrl: {name}: TorchRL's load_state_dict(strict=True) refused rlobj's file: {e}")
            failed.append(name)
            continue
        io = torch.load(os.path.join(directory, f"rlobj_{name}_io.pt"))
        obs = io["observation"]
        action = P.act(policy, obs)
        torch.save({"observation": obs, "action": action}, os.path.join(directory, f"torchrl_{name}.pt"))
        print(f"interop.torchrl: {name}: loaded strictly ({len(state)} entries), {obs.shape[0]} actions")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
