"""Writes the README.md of a folder of generated reference files: provenance and checksums."""

import hashlib
import os

import common as C


def write(out_dir, args):
    files = sorted(f for f in os.listdir(out_dir) if f != "README.md" and os.path.isfile(os.path.join(out_dir, f)))
    v = C.versions_meta()
    rows = []
    for f in files:
        data = open(os.path.join(out_dir, f), "rb").read()
        rows.append(f"| `{f}` | `{hashlib.sha256(data).hexdigest()}` | {len(data)} |")
    env = " ".join(f"{k}={val}" for k, val in v["env"].items())
    text = f"""# TorchRL reference numbers (TorchRL {v['torchrl_version']})

The same cases, networks, weights, batches, scenarios, seeds and JSON layout as the TorchRL 0.4.0
files one folder up (`../README.md`), produced by the real TorchRL {v['torchrl_version']} through
`tools/reference/` (see its README for the differences from 0.4.0 and the comparison table). The
parity tests read this folder with `RLOBJ_REFERENCE_DIR=tests/data/reference/torchrl-{v['torchrl_version']}`.

## What produced them

| | |
|---|---|
| TorchRL / tensordict | {v['torchrl_version']} / {v['tensordict_version']} |
| torch | {v['torch_version']} (the PyPI wheel) |
| numpy | {v['numpy_version']} |
| Python | {v['python']} |
| BLAS | {v['blas']} |
| ATen CPU capability | {v['aten_cpu_capability']} |
| threads | `torch.set_num_threads(1)`, `{env}` |
| command | `tools/reference/generate.sh{(' ' + args) if args else ''}` (pinned versions: `tools/reference/requirements.txt`) |

Two runs of the command give byte-identical files (the checksums below).

## Files

{chr(10).join(f'- `{f}`' for f in files)}

## Checksums

`data.checksums` (ctest) checks every file of this folder against this table.

| file | sha256 | bytes |
|---|---|---|
{chr(10).join(rows)}
"""
    with open(os.path.join(out_dir, "README.md"), "w") as fh:
        fh.write(text)
    print(f"wrote {os.path.relpath(os.path.join(out_dir, 'README.md'))}")
