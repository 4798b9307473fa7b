#!/usr/bin/env python3
"""The Python step of the ctest entry interop.torchrl: TorchRL 0.14.1 loads rlobj's policies and
its replay buffer.

    check_torchrl.py DIR

For each example policy of tools/reference/cases/policies.py: builds TorchRL's policy, loads
DIR/rlobj_<name>.pt (rlobj::save_state_dict) with load_state_dict(strict=True), acts
deterministically on DIR/rlobj_<name>_io.pt's observations and writes
DIR/torchrl_<name>.pt = {"observation", "action"} for the C++ side to compare with rlobj's
actions within the derived tolerance. Then loads DIR/rlobj_buffer (rlobj::data::dump_torchrl_buffer)
with ReplayBuffer(storage=LazyTensorStorage(32)).loads, compares every position, the cursor and
the batch size with DIR/rlobj_buffer_expected.pt, and dumps it to DIR/torchrl_buffer for the C++
side to read back. Exit status 1 if a file does not load strictly or a buffer entry differs.
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
    failed += check_buffer(directory)
    return 1 if failed else 0


def check_buffer(directory):
    from torchrl.data import LazyTensorStorage, ReplayBuffer

    expected = torch.load(os.path.join(directory, "rlobj_buffer_expected.pt"))
    rb = ReplayBuffer(storage=LazyTensorStorage(32))
    rb.loads(os.path.join(directory, "rlobj_buffer"))
    storage = rb.storage._storage
    bad = []
    for key, value in expected.items():
        if key == "cursor":
            if rb._writer._cursor != int(value):
                bad.append(f"cursor {rb._writer._cursor} != {int(value)}")
            continue
        got = storage.get(tuple(key.split(".")))
        if got.dtype != value.dtype or not torch.equal(got, value):
            bad.append(f"entry {key} differs")
    if len(rb) != 32 or rb._batch_size != 16:
        bad.append(f"len {len(rb)} / batch size {rb._batch_size}")
    if bad:
        print(f"interop.torchrl: rlobj's replay buffer in TorchRL: {bad}")
        return ["buffer"]
    rb.dumps(os.path.join(directory, "torchrl_buffer"))
    print(f"interop.torchrl: rlobj's replay buffer loaded by TorchRL ({len(expected) - 1} entries, 32 positions), dumped back")
    return []


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
