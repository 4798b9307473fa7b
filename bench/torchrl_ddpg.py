"""TorchRL's DDPG update, timed: the Python twin of rlobj_bench's DDPGUpdate/rlobj.

The same work as `RlobjDDPG::update` in bench/rlobj_bench.cpp: an Actor(MLP(3 -> 1)) and a
ValueOperator(MLP(4 -> 1)) with [cells, cells] hidden units, DDPGLoss with TorchRL's defaults,
one Adam over loss.parameters(), SoftUpdate(tau=0.005); per update: loss forward, summed
losses, backward, Adam step, zero_grad, soft update; batch 256, one thread.

    python3 bench/torchrl_ddpg.py --cells 32 --activation tanh --reps 10

Needs torch and torchrl (checked with torch 2.3.1, torchrl 0.4.0, tensordict 0.4.0). Prints
the median and the spread of `--reps` timings, each the mean of `--iters` updates.
"""

import argparse
import statistics
import time

import torch
from tensordict import TensorDict
from torchrl.modules import MLP, Actor, ValueOperator
from torchrl.objectives import DDPGLoss, SoftUpdate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=32)
    parser.add_argument("--activation", choices=["tanh", "relu"], default="tanh")
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--iters", type=int, default=200)
    args = parser.parse_args()

    torch.set_num_threads(1)
    torch.manual_seed(0)
    act = torch.nn.Tanh if args.activation == "tanh" else torch.nn.ReLU
    cells = [args.cells, args.cells]
    actor = Actor(MLP(in_features=3, out_features=1, num_cells=cells, activation_class=act))
    value = ValueOperator(MLP(in_features=4, out_features=1, num_cells=cells, activation_class=act),
                          in_keys=["observation", "action"])
    loss = DDPGLoss(actor, value)
    optim = torch.optim.Adam(loss.parameters(), lr=1e-3)
    updater = SoftUpdate(loss, tau=0.005)

    n = args.batch
    torch.manual_seed(1)
    done = torch.rand(n, 1) < 0.05
    batch = TensorDict({
        "observation": torch.randn(n, 3),
        "action": torch.rand(n, 1) * 4 - 2,
        "next": {"observation": torch.randn(n, 3), "reward": -torch.rand(n, 1) * 10,
                 "done": done, "terminated": done.clone()},
    }, batch_size=[n])

    def update() -> None:
        out = loss(batch)
        total = sum(v for k, v in out.items() if k.startswith("loss_"))
        total.backward()
        optim.step()
        optim.zero_grad()
        updater.step()

    for _ in range(50):
        update()
    times = []
    for _ in range(args.reps):
        start = time.perf_counter()
        for _ in range(args.iters):
            update()
        times.append((time.perf_counter() - start) / args.iters * 1e6)
    print(f"TorchRL DDPG update, [{args.cells}, {args.cells}] {args.activation}, batch {n}: "
          f"median {statistics.median(times):.0f} us (min {min(times):.0f}, max {max(times):.0f}; "
          f"torch {torch.__version__})")


if __name__ == "__main__":
    main()
