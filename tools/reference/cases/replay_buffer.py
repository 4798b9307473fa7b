"""A replay buffer saved by TorchRL 0.14.1's `ReplayBuffer.dumps`: what
`tests/data/torchrl_files_test.cpp` loads into rlobj's `ReplayBuffer` (and writes back).

`ReplayBuffer(storage=LazyMemmapStorage(12), batch_size=4)` extended with 15 transitions (so the
ring has wrapped: `len` 12, cursor 3), entries of four dtypes and a nested `next`: observation
[3] float32, action [1] float32, step_count [1] int64, next.observation [3] float32, next.reward
[1] float64, next.done / next.terminated [1] bool. Written: the folder `replay_buffer/` (storage/
in tensordict's memory-mapped layout, writer/, buffer_metadata.json, prefetch.pkl) with a
README.md of its files' checksums, and in replay_buffer_torchrl.json the storage's full contents
position by position, its len and the writer's cursor and write count.
"""

import hashlib
import math
import os
import shutil
from collections import OrderedDict

import torch
from tensordict import TensorDict
from torchrl.data import LazyMemmapStorage, ReplayBuffer

import common as C

CAPACITY = 12
N = 15


def transitions():
    i = torch.arange(N, dtype=torch.float64)
    obs = torch.stack([torch.sin(0.3 * i + j) for j in range(3)], -1).float()
    nxt = torch.stack([torch.sin(0.3 * (i + 1) + j) for j in range(3)], -1).float()
    return TensorDict(
        {
            "observation": obs,
            "action": torch.cos(0.7 * i).float().unsqueeze(-1),
            "step_count": (torch.arange(N) * 7 % 11).unsqueeze(-1),
            ("next", "observation"): nxt,
            ("next", "reward"): (-0.5 + 0.25 * torch.cos(1.7 * i)).unsqueeze(-1),
            ("next", "done"): (torch.arange(N) % 4 == 3).unsqueeze(-1),
            ("next", "terminated"): (torch.arange(N) % 8 == 7).unsqueeze(-1),
        },
        batch_size=[N],
    )


def files_readme(folder):
    rows = []
    for root, _, files in os.walk(folder):
        for f in files:
            if f == "README.md" and root == folder:
                continue
            p = os.path.join(root, f)
            rel = os.path.relpath(p, folder)
            with open(p, "rb") as fh:
                data = fh.read()
            rows.append((rel, hashlib.sha256(data).hexdigest(), len(data)))
    rows.sort()
    text = [
        "# A replay buffer written by TorchRL 0.14.1's `ReplayBuffer.dumps`",
        "",
        "Written by `tools/reference/generate.sh replay_buffer` (`cases/replay_buffer.py` says what it",
        "holds); its contents, position by position, are in `../replay_buffer_torchrl.json`.",
        "",
        "## Checksums",
        "",
        "`data.checksums` (ctest) checks every file listed here.",
        "",
        "| file | sha256 | bytes |",
        "|---|---|---|",
    ]
    text += [f"| `{r}` | `{h}` | {n} |" for r, h, n in rows]
    with open(os.path.join(folder, "README.md"), "w") as fh:
        fh.write("\n".join(text) + "\n")


def generate(out_dir):
    folder = os.path.join(out_dir, "replay_buffer")
    shutil.rmtree(folder, ignore_errors=True)
    rb = ReplayBuffer(storage=LazyMemmapStorage(CAPACITY), batch_size=4)
    rb.extend(transitions())
    rb.dumps(folder)
    files_readme(folder)
    storage = rb.storage._storage
    meta = C.base_meta("replay_buffer")
    meta["description"] = " ".join(__doc__.split())
    data = OrderedDict([("meta", meta)])
    data["capacity"] = CAPACITY
    data["len"] = len(rb)
    data["cursor"] = rb._writer._cursor
    data["write_count"] = rb._writer._write_count
    data["batch_size"] = 4
    data["storage"] = C.batch_record(storage)
    return data
