"""Batched HalfCheetah-v5 steps per second: rlobj against EnvPool and gymnasium, side by side.

Run by scripts/bench_mujoco.sh (which makes the virtual environment with envpool, gymnasium and
mujoco). Each round runs every configuration of every library once, in turn; the table gives the
median over the rounds of steps per second (N copies x batched steps / wall seconds), with the
CPU microseconds per copy-step (user + system, every thread of the process).

    python bench/mujoco_peers.py --rlobj build/dev/bench/rlobj_mujoco_bench --rounds 3
"""
import argparse
import json
import os
import statistics
import subprocess
import time

import numpy as np

CONFIGS = [(1, 1), (16, 1), (16, 2), (256, 1), (256, 2)]  # (copies N, threads)


def cpu_seconds():
    """User + system seconds of this process (all its threads) and its waited-for children."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def timed(step, n, seconds):
    """Steps until `seconds` of wall time have passed; (copy-steps/s, CPU us per copy-step)."""
    steps = 0
    c0, t0 = cpu_seconds(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for _ in range(16):
            step(steps)
            steps += 1
    wall, cpu = time.perf_counter() - t0, cpu_seconds() - c0
    return steps * n / wall, 1e6 * cpu / (steps * n)


def envpool_run(n, threads, seconds):
    import envpool

    env = envpool.make_gymnasium("HalfCheetah-v5", num_envs=n, batch_size=n, num_threads=threads, seed=0)
    env.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, size=(16, n, 6))
    return timed(lambda i: env.step(actions[i % 16]), n, seconds)


def gymnasium_run(n, threads, seconds):
    if threads != 1:
        return None  # SyncVectorEnv steps its copies one after another on one thread
    import gymnasium as gym

    env = gym.vector.SyncVectorEnv([lambda: gym.make("HalfCheetah-v5") for _ in range(n)])
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, size=(16, n, 6))
    return timed(lambda i: env.step(actions[i % 16]), n, seconds)


def rlobj_run(binary, n, threads, seconds):
    out = subprocess.run(
        [binary, f"--benchmark_filter=HalfCheetahStep/envs:{n}/threads:{threads}/", f"--benchmark_min_time={seconds}",
         "--benchmark_format=json"], check=True, capture_output=True, text=True).stdout
    bench = json.loads(out)["benchmarks"][0]
    # The benchmark's own CPU time per iteration (every thread of the process), per copy-step.
    cpu_us = bench["cpu_time"] * {"us": 1.0, "ms": 1e3, "ns": 1e-3}[bench["time_unit"]] / n
    return bench["steps_per_s"], cpu_us


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rlobj", required=True, help="path of rlobj_mujoco_bench")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    runners = {
        "rlobj": lambda n, t: rlobj_run(args.rlobj, n, t, args.seconds),
        "envpool": lambda n, t: envpool_run(n, t, args.seconds),
        "gymnasium SyncVectorEnv": lambda n, t: gymnasium_run(n, t, args.seconds),
    }
    results = {(name, c): [] for name in runners for c in CONFIGS}
    for r in range(args.rounds):
        for c in CONFIGS:
            for name, run in runners.items():
                got = run(*c)
                if got is not None:
                    results[(name, c)].append(got)
        print(f"round {r + 1} of {args.rounds} done", flush=True)
    print("\n| N | threads | " + " | ".join(f"{name} steps/s (CPU us/step)" for name in runners) + " |")
    print("|---|---|" + "---|" * len(runners))
    for c in CONFIGS:
        cells = []
        for name in runners:
            got = results[(name, c)]
            if not got:
                cells.append("-")
                continue
            sps = statistics.median(g[0] for g in got)
            cpu = statistics.median(g[1] for g in got)
            cells.append(f"{sps:,.0f} ({cpu:.1f})")
        print(f"| {c[0]} | {c[1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
