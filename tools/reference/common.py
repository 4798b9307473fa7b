"""Shared pieces of the reference generator: the deterministic weights and batches, the JSON
records (float32 written as the exact float64 of each float32), the RNG recorder and the
per-iteration loop every loss case uses.

Nothing here computes an RL quantity: the numbers come from TorchRL's own objects; this module
only builds inputs and copies results out.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections import OrderedDict

import numpy as np
import torch
from torch.overrides import TorchFunctionMode

MLP_NAMES = ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
NUM_CELLS = [32, 32]
ADAM = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-08, "weight_decay": 0.0}
WEIGHT_FORMULA = (
    "w[p][k] = float32(0.1*sin(0.37*k + 1.3*p)) evaluated in double as t=0.37*k; u=1.3*p; "
    "s=sin(t+u); v=0.1*s; k = row-major flat index, p = canonical param index"
)
FLOAT_FORMAT = "float32 values written as the exact float64 value of each float32"
MLP_DOC = "Linear -> Tanh -> Linear -> Tanh -> Linear (TorchRL MLP default activation Tanh)"
DETERMINISM_ENV = {
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "ATEN_CPU_CAPABILITY": "avx2",
    "MKL_CBWR": "AVX2",
}


# ----------------------------------------------------------------------------------------------
# versions and environment


def versions_meta() -> "OrderedDict[str, object]":
    """The versions, BLAS, threads and environment this run used (goes into every meta)."""
    import tensordict
    import torchrl

    m = OrderedDict()
    m["torchrl_version"] = torchrl.__version__
    m["tensordict_version"] = tensordict.__version__
    m["torch_version"] = torch.__version__
    m["numpy_version"] = np.__version__
    m["python"] = platform.python_version()
    m["blas"] = blas_description()
    m["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    m["env"] = OrderedDict((k, os.environ.get(k)) for k in DETERMINISM_ENV)
    m["torch_num_threads"] = torch.get_num_threads()
    m["torch_num_interop_threads"] = torch.get_num_interop_threads()
    return m


def blas_description() -> str:
    cfg = torch.__config__.show()
    for line in cfg.splitlines():
        if "Math Kernel Library" in line:
            return line.strip().lstrip("- ") + " (torch's bundled MKL; MKL_CBWR=AVX2, one thread)"
    for line in cfg.splitlines():
        if "BLAS_INFO" in line:
            return line.strip()
    return "unknown"


def check_determinism_env():
    """Refuses to run without the settings that make the files byte-identical run to run."""
    missing = [f"{k}={v}" for k, v in DETERMINISM_ENV.items() if os.environ.get(k) != v]
    if missing:
        sys.exit(
            "generate.py: the determinism environment is not set (use tools/reference/generate.sh, "
            "or export " + " ".join(missing) + ")"
        )
    torch.set_num_threads(1)
    torch.set_num_interop_threads(1) if torch.get_num_interop_threads() != 1 else None


# ----------------------------------------------------------------------------------------------
# weights and batches


def formula_tensor(p: int, shape) -> torch.Tensor:
    """meta.weight_formula: element k of canonical parameter p."""
    n = int(np.prod(shape)) if len(shape) else 1
    vals = np.empty(n, dtype=np.float32)
    u = 1.3 * p
    for k in range(n):
        t = 0.37 * k
        s = math.sin(t + u)
        vals[k] = np.float32(0.1 * s)
    return torch.from_numpy(vals).reshape(tuple(shape))


def fill_mlp(mlp: torch.nn.Module, first_p: int):
    """Fills a TorchRL MLP (Linear at 0, 2, 4) with the formula, p = first_p + l."""
    named = dict(mlp.named_parameters())
    with torch.no_grad():
        for l, name in enumerate(MLP_NAMES):
            named[name].copy_(formula_tensor(first_p + l, named[name].shape))


def f32(x: float) -> float:
    return float(np.float32(x))


FLAT_BATCH_FORMULA = OrderedDict(
    [
        ("layout", "N = 8 rows, i = 0..7, batch_size [8]"),
        ("observation[i,j]", "sin(0.5*i + 0.9*j + 0.1)"),
        ("next.observation[i,j]", "sin(0.5*i + 0.9*j + 0.6)"),
        ("next.reward[i,0]", "-0.5 + 0.25*cos(1.7*i + 0.2)"),
        ("next.done[i,0]", "(i % 3 == 2) or (i % 4 == 1)"),
        ("next.terminated[i,0]", "i % 3 == 2"),
    ]
)


def flat_batch(obs_dim: int, truncated_rows: bool = True, action: str = "continuous"):
    """The flat batch of 8 rows (td3/sac/dqn; ddpg without the truncated row)."""
    from tensordict import TensorDict

    n = 8
    obs = [[f32(math.sin(0.5 * i + 0.9 * j + 0.1)) for j in range(obs_dim)] for i in range(n)]
    nobs = [[f32(math.sin(0.5 * i + 0.9 * j + 0.6)) for j in range(obs_dim)] for i in range(n)]
    rew = [[f32(-0.5 + 0.25 * math.cos(1.7 * i + 0.2))] for i in range(n)]
    if truncated_rows:
        done = [[(i % 3 == 2) or (i % 4 == 1)] for i in range(n)]
    else:
        done = [[i % 3 == 2] for i in range(n)]
    term = [[i % 3 == 2] for i in range(n)]
    td = OrderedDict()
    td["observation"] = torch.tensor(obs, dtype=torch.float32)
    if action == "continuous":
        td["action"] = torch.tensor([[f32(0.8 * math.cos(0.7 * i + 0.3))] for i in range(n)], dtype=torch.float32)
    elif action == "one_hot2":
        k = [(i // 2) % 2 for i in range(n)]
        td["action"] = torch.nn.functional.one_hot(torch.tensor(k), 2).to(torch.int64)
    td[("next", "observation")] = torch.tensor(nobs, dtype=torch.float32)
    td[("next", "reward")] = torch.tensor(rew, dtype=torch.float32)
    td[("next", "done")] = torch.tensor(done, dtype=torch.bool)
    td[("next", "terminated")] = torch.tensor(term, dtype=torch.bool)
    return TensorDict(dict(td), batch_size=[n])


TIME_BATCH_FORMULA = OrderedDict(
    [
        ("layout", "batch_size [B=2, T=8], flat index i = b*T + t, no dim names (time = last batch dim)"),
        ("observation[b,t,j]", "sin(0.5*i + 0.9*j + 0.1)"),
        ("next.observation[b,t,j]", "sin(0.5*i + 0.9*j + 0.6)"),
        ("next.reward[b,t,0]", "-0.5 + 0.25*cos(1.7*i + 0.2)"),
        ("next.done[b,t,0]", "(i % 10 == 4) or (i % 11 == 2)"),
        ("next.terminated[b,t,0]", "i % 10 == 4"),
    ]
)


def time_batch(with_action: bool, log_prob_key: str = "sample_log_prob", extra: bool = False):
    """The [2, 8] time batch of the estimator and on-policy cases."""
    from tensordict import TensorDict

    B, T = 2, 8

    def grid(fn, feat):
        return torch.tensor(
            [[[fn(b * T + t, j) for j in range(feat)] for t in range(T)] for b in range(B)],
        )

    d = {}
    d["observation"] = grid(lambda i, j: f32(math.sin(0.5 * i + 0.9 * j + 0.1)), 3).float()
    d[("next", "observation")] = grid(lambda i, j: f32(math.sin(0.5 * i + 0.9 * j + 0.6)), 3).float()
    d[("next", "reward")] = grid(lambda i, j: f32(-0.5 + 0.25 * math.cos(1.7 * i + 0.2)), 1).float()
    d[("next", "done")] = grid(lambda i, j: (i % 10 == 4) or (i % 11 == 2), 1).bool()
    d[("next", "terminated")] = grid(lambda i, j: i % 10 == 4, 1).bool()
    if with_action:
        d["action"] = grid(lambda i, j: f32(0.8 * math.cos(0.7 * i + 0.3)), 1).float()
        d[log_prob_key] = grid(lambda i, j: f32(-1.0 + 0.3 * math.sin(1.1 * i + 0.4)), 1).float()[..., 0]
    if extra:
        d.update(time_batch_extra())
    return TensorDict(d, batch_size=[B, T])


def time_batch_extra():
    B, T = 2, 8
    adv = torch.tensor(
        [[[f32(0.5 * math.sin(0.9 * (b * T + t) + 0.2))] for t in range(T)] for b in range(B)]
    ).float()
    vt = torch.tensor(
        [[[f32(-0.4 + 0.3 * math.cos(0.6 * (b * T + t) + 0.1))] for t in range(T)] for b in range(B)]
    ).float()
    return {"advantage": adv, "value_target": vt}


# ----------------------------------------------------------------------------------------------
# JSON records


def _dtype_name(t: torch.Tensor) -> str:
    return {torch.float32: "float32", torch.float64: "float64", torch.bool: "bool", torch.int64: "int64"}[t.dtype]


def values_of(t: torch.Tensor):
    t = t.detach().cpu().contiguous().reshape(-1)
    if t.dtype == torch.bool:
        return [bool(x) for x in t.tolist()]
    if t.dtype == torch.int64:
        return [int(x) for x in t.tolist()]
    return [float(x) for x in t.double().tolist()]


def rec(t: torch.Tensor) -> "OrderedDict[str, object]":
    """A full tensor record: {"shape", "dtype", "values"}."""
    t = t.detach()
    return OrderedDict([("shape", list(t.shape)), ("dtype", _dtype_name(t)), ("values", values_of(t))])


def summary(t: torch.Tensor, full: bool = False) -> "OrderedDict[str, object]":
    """{"sum", "norm", "first"} (+ "values"), statistics accumulated in float64."""
    vals = values_of(t.detach().cpu())
    # sequential float64 accumulation in row-major order (as 0.4.0's files: an explicit loop,
    # not Python >= 3.12's compensated sum() nor torch's pairwise/vectorised reductions)
    acc = 0.0
    sq = 0.0
    for x in vals:
        acc += x
        sq += x * x
    out = OrderedDict()
    out["sum"] = acc
    out["norm"] = math.sqrt(sq)
    out["first"] = vals[:4]
    if full:
        out["values"] = vals
    return out


def scalar(t) -> float:
    return float(t.detach().double().item()) if isinstance(t, torch.Tensor) else float(t)


def batch_record(td, keys=None) -> "OrderedDict[str, object]":
    """The batch entries as records, keys dotted ("next.reward"), sorted like 0.4.0's files."""
    out = OrderedDict()
    items = {}
    for k in td.keys(True, True):
        name = k if isinstance(k, str) else ".".join(k)
        items[name] = td.get(k)
    for name in sorted(items) if keys is None else keys:
        out[name] = rec(items[name])
    return out


def canonical_params_record(entries):
    """entries: list of (name, tensor) in canonical order."""
    out = []
    for p, (name, t) in enumerate(entries):
        s = summary(t, full=True)
        d = OrderedDict([("index", p), ("name", name), ("shape", list(t.shape))])
        d.update(s)
        out.append(d)
    return out


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max().item())


def bit_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(torch.equal(a.detach(), b.detach()))


# ----------------------------------------------------------------------------------------------
# the loss's parameters by canonical name


class ParamTable:
    """Canonical names ("actor.0.weight", "qvalue1.2.bias", "log_alpha") -> the loss's tensors.

    `nets` maps a loss parameter group ("actor_network_params") to the canonical network name
    ("actor"); an expanded group (the TD3/SAC critics) becomes "<name><c>" per copy.
    """

    def __init__(self, loss, nets: dict, expanded=(), order=None, extra=()):
        self.loss = loss
        self.online = OrderedDict()
        self.names = OrderedDict()
        params = dict(loss.named_parameters())
        buffers = dict(loss.named_buffers())
        self.target = OrderedDict()
        for lname, p in params.items():
            group = lname.split(".")[0]
            if group not in nets:
                continue
            layer = ".".join(lname.split(".")[-2:])
            net = nets[group]
            if group in expanded:
                for c in range(p.shape[0]):
                    can = f"{net}{c}.{layer}"
                    self.online[can] = (p, c)
                    self.names[can] = f"{lname}[{c}]"
                    tname = "target_" + lname
                    if tname in buffers:
                        self.target[can] = (buffers[tname], c)
            else:
                can = f"{net}.{layer}"
                self.online[can] = (p, None)
                self.names[can] = lname
                tname = "target_" + lname
                if tname in buffers:
                    self.target[can] = (buffers[tname], None)
        for name in extra:
            if name in params:
                self.online[name] = (params[name], None)
                self.names[name] = name
        if order is not None:
            self.online = OrderedDict((k, self.online[k]) for k in order if k in self.online)
            self.target = OrderedDict((k, self.target[k]) for k in order if k in self.target)

    @staticmethod
    def _get(entry, grad=False):
        t, c = entry
        t = t.grad if grad else t
        if t is None:
            return None
        t = t.detach()
        return t[c] if c is not None else t

    def get(self, name, grad=False):
        return self._get(self.online[name], grad)

    def get_target(self, name):
        return self._get(self.target[name])

    def dump(self, grad=False, full=False, skip=()):
        out = OrderedDict()
        for name, e in self.online.items():
            if name in skip:
                continue
            t = self._get(e, grad)
            if t is None:
                t = torch.zeros_like(self._get(e))
            out[name] = summary(t, full)
        return out

    def dump_targets(self, full=False, prefix="target."):
        out = OrderedDict()
        for name, e in self.target.items():
            out[prefix + name] = summary(self._get(e), full)
        return out


# ----------------------------------------------------------------------------------------------
# random draws


RNG_FUNCS = {
    "normal_", "uniform_", "randn", "randn_like", "rand", "rand_like", "normal", "bernoulli",
    "bernoulli_", "multinomial", "randint", "randint_like", "randperm", "exponential_",
    "geometric_", "cauchy_", "log_normal_", "random_", "poisson", "_standard_gamma",
}


EVENTS = []  # what the current forward did, in order (RNG draws and distribution hooks)


class RngRecorder(TorchFunctionMode):
    """Records every random draw a forward makes (the function and the raw result)."""

    def __init__(self):
        super().__init__()
        self.draws = []
        EVENTS.clear()
        self.events = EVENTS

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = getattr(func, "__name__", str(func))
        if name in RNG_FUNCS:
            self.draws.append({"call": name, "value": out.detach().clone()})
            self.events.append("standard_normal" if name in ("normal_", "randn", "randn_like") else name)
        return out


def replay_check(seed: int, draws, state_after_forward: torch.Tensor):
    """torch.manual_seed(seed) + the same empty(shape).normal_() calls give every draw bit for
    bit, and the generator ends in the same state (so the forward made no other RNG call)."""
    torch.manual_seed(seed)
    same = True
    for d in draws:
        r = torch.empty(d["value"].shape, dtype=d["value"].dtype).normal_()
        same = same and bool(torch.equal(r, d["value"]))
    state_replay = torch.get_rng_state()
    torch.manual_seed(seed)
    same_randn = True
    for d in draws:
        r = torch.randn(d["value"].shape, dtype=d["value"].dtype)
        same_randn = same_randn and bool(torch.equal(r, d["value"]))
    merged = None
    if len(draws) > 1:
        torch.manual_seed(seed)
        total = sum(d["value"].numel() for d in draws)
        flat = torch.empty(total, dtype=draws[0]["value"].dtype).normal_()
        cat = torch.cat([d["value"].reshape(-1) for d in draws])
        merged = bool(torch.equal(flat, cat))
    out = OrderedDict()
    out["seed"] = seed
    out["replay_recipe"] = (
        "torch.manual_seed(seed); then for every draw, in order: torch.empty(shape, dtype=torch.float32).normal_()  "
        "(C++: torch::manual_seed(seed); torch::empty(shape).normal_())"
    )
    out["every_draw_bit_identical_to_replay"] = same
    out["every_draw_bit_identical_to_randn_replay"] = same_randn
    out["generator_state_after_forward_equals_state_after_replay"] = bool(torch.equal(state_after_forward, state_replay))
    out["generator_state_note"] = (
        "torch.get_rng_state() of the CPU generator (mt19937 state + cached Box-Muller normals); equality proves "
        "the forward made no RNG call besides the listed draws"
    )
    out["one_merged_draw_would_give_the_same_numbers"] = merged
    out["aten_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    out["capability_note"] = (
        "draws of < 16 elements use the serial double Box-Muller path (same on every ATen CPU capability); >= 16 "
        "contiguous float elements use normal_fill, whose vectorised kernel depends on ATEN_CPU_CAPABILITY"
    )
    return out


def draws_record(draws, sites, aten_paths=True):
    out = []
    for i, d in enumerate(draws):
        r = OrderedDict()
        r["index"] = i
        r["site"] = sites[i] if i < len(sites) else "unknown"
        v = rec(d["value"])
        r["call"] = {
            "normal_": f"torch.empty({v['shape']}, dtype=torch.float32).normal_()",
            "randn_like": f"torch.randn_like(x) with x of shape {v['shape']}",
            "randn": f"torch.randn({v['shape']})",
        }.get(d["call"], d["call"])
        r["shape"] = v["shape"]
        r["dtype"] = v["dtype"]
        if aten_paths:
            r["aten_path"] = (
                "serial Box-Muller in double per element (numel < 16)"
                if d["value"].numel() < 16
                else "normal_fill (numel >= 16, contiguous float: vectorised kernel of the ATen CPU capability)"
            )
        r["values"] = v["values"]
        out.append(r)
    return out


# ----------------------------------------------------------------------------------------------
# the iteration loop


def total_of(out):
    keys = sorted(k for k in out.keys() if k == "loss" or k.startswith("loss_"))
    total = None
    for k in keys:
        total = out.get(k) if total is None else total + out.get(k)
    return keys, total


def out_records(out):
    """Every entry of a loss output, in sorted key order, as full records."""
    d = OrderedDict()
    for k in sorted(out.keys(True, True), key=lambda k: k if isinstance(k, str) else ".".join(k)):
        name = k if isinstance(k, str) else ".".join(k)
        v = out.get(k)
        if isinstance(v, torch.Tensor):
            d[name] = rec(v)
    return d


def checks_record(out, total, table: ParamTable):
    c = OrderedDict()
    c["loss_out_all_finite"] = all(
        bool(torch.isfinite(out.get(k)).all()) for k in out.keys(True, True) if isinstance(out.get(k), torch.Tensor)
    )
    c["total_loss_finite"] = bool(torch.isfinite(total).all())
    zero, nonfinite = [], []
    for name in table.online:
        g = table.get(name, grad=True)
        if g is None or bool((g == 0).all()):
            zero.append(name)
        elif not bool(torch.isfinite(g).all()):
            nonfinite.append(name)
    c["params_with_all_zero_grad"] = zero
    c["params_with_nonfinite_grad"] = nonfinite
    return c


def make_adam(loss):
    return torch.optim.Adam(loss.parameters(), lr=ADAM["lr"], betas=tuple(ADAM["betas"]), eps=ADAM["eps"],
                            weight_decay=ADAM["weight_decay"])


def run_iterations(loss, table: ParamTable, n_iter: int, make_batch, updater=None, before_forward=None,
                   diagnostics=None, after_forward=None, with_targets=True, td_error_key="td_error",
                   full_params_after_adam_first=True):
    """The shared loop (see the README): fresh batch, seeding, loss(batch), dump outputs and
    td_error, backward of the sum of the loss* entries, dump grads, Adam step, zero_grad,
    updater step, dump parameters and targets.

    before_forward(it, batch) -> (context manager or None, seed or None)
    diagnostics(it, batch) -> OrderedDict (computed before the forward, on a clone)
    after_forward(it, batch, out, rng) -> dict of extra iteration keys, placed before loss_out
    """
    optim = make_adam(loss)
    iterations = []
    for it in range(n_iter):
        batch = make_batch()
        rec_it = OrderedDict()
        rec_it["iteration"] = it
        if diagnostics is not None:
            rec_it["diagnostics"] = diagnostics(it, batch)
        seed = before_forward(it, batch) if before_forward is not None else None
        recorder = RngRecorder()
        with recorder:
            out = loss(batch)
        state_after = torch.get_rng_state()
        if after_forward is not None:
            for k, v in after_forward(it, batch, out, recorder, seed, state_after).items():
                if k == "diagnostics" and "diagnostics" in rec_it:
                    rec_it["diagnostics"].update(v)
                else:
                    rec_it[k] = v
        rec_it["loss_out"] = out_records(out)
        rec_it["batch_td_error"] = rec(batch.get(td_error_key)) if td_error_key in batch.keys() else None
        keys, total = total_of(out)
        rec_it["total_loss_keys"] = keys
        rec_it["total_loss"] = scalar(total)
        total.backward()
        rec_it["grads"] = table.dump(grad=True, full=(it == 0))
        rec_it["checks"] = checks_record(out, total, table)
        optim.step()
        rec_it["params_after_adam"] = table.dump(full=(it == 0 and full_params_after_adam_first))
        # 0.4.0 ran on torch 1.13, whose zero_grad() zeroes in place; torch 2.x would set the
        # gradients to None (Adam then skips a parameter that gets no gradient next time).
        optim.zero_grad(set_to_none=False)
        if updater is not None:
            updater.step()
            if hasattr(updater, "counter"):
                rec_it["hard_counter_after_step"] = int(updater.counter)
        rec_it["params_after_update"] = table.dump()
        if with_targets:
            rec_it["targets_after_update"] = table.dump_targets(full=(it == n_iter - 1))
        rec_it["_out"] = out
        iterations.append(rec_it)
    return iterations


def all_checks_ok(iterations):
    ok = True
    for it in iterations:
        c = it.get("checks", {})
        ok = ok and c.get("loss_out_all_finite", True) and c.get("total_loss_finite", True)
        ok = ok and not c.get("params_with_nonfinite_grad")
    return bool(ok)


def strip_private(iterations):
    for it in iterations:
        for k in [k for k in it if k.startswith("_")]:
            del it[k]
    return iterations


# ----------------------------------------------------------------------------------------------
# JSON writing


def _fmt_scalar(v):
    if v is None:
        return "null"
    if v is True:
        return "true"
    if v is False:
        return "false"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError("non-finite number in a reference file")
        return repr(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        import json

        return json.dumps(v)
    raise TypeError(f"cannot write {type(v)}")


def dumps(obj, indent=0) -> str:
    """JSON with one-space indentation and lists of scalars on one line (0.4.0's layout)."""
    pad = " " * (indent + 1)
    if isinstance(obj, dict):
        if not obj:
            return "{}"
        items = [f"{pad}{_fmt_scalar(str(k))}: {dumps(v, indent + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(obj, (list, tuple)):
        if not obj:
            return "[]"
        if all(not isinstance(x, (dict, list, tuple)) for x in obj):
            return "[" + ", ".join(_fmt_scalar(x) for x in obj) + "]"
        items = [pad + dumps(v, indent + 1) for v in obj]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    return _fmt_scalar(obj)


def base_meta(case: str) -> "OrderedDict[str, object]":
    m = OrderedDict()
    m["case"] = case
    m.update(versions_meta())
    m["num_cells"] = NUM_CELLS
    m["mlp"] = MLP_DOC
    m["weight_formula"] = WEIGHT_FORMULA
    m["adam"] = OrderedDict(ADAM)
    m["adam"]["zero_grad"] = "optim.zero_grad(set_to_none=False) (zero in place, as torch 1.13 did for the 0.4.0 files)"
    m["float_format"] = FLOAT_FORMAT
    return m
