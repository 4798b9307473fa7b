"""ddpg: DDPGLoss + SoftUpdate(eps=0.99) / HardUpdate(2), the layout of 0.4.0's ddpg_torchrl.json."""

from collections import OrderedDict

import torch
from torchrl.modules import MLP, Actor, ValueOperator
from torchrl.objectives import DDPGLoss, HardUpdate, SoftUpdate

import common as C
from cases import critics

SOFT_EPS = 0.99
HARD_INTERVAL = 2
# name, loss kwargs, updater, iterations
SCENARIOS = [
    ("soft_defaults", {}, "soft", 2),
    ("soft_delay_value", {"delay_actor": False, "delay_value": True}, "soft", 2),
    ("soft_delay_both", {"delay_actor": True, "delay_value": True}, "soft", 2),
    ("hard_delay_value", {"delay_actor": False, "delay_value": True}, "hard", 3),
    ("hard_delay_both", {"delay_actor": True, "delay_value": True}, "hard", 3),
]
ORDER = [f"actor.{n}" for n in C.MLP_NAMES] + [f"value.{n}" for n in C.MLP_NAMES]
BATCH_KEYS = ["observation", "action", "next.observation", "next.reward", "next.done", "next.terminated"]


def build():
    actor_mlp = MLP(in_features=3, out_features=1, num_cells=C.NUM_CELLS)
    value_mlp = MLP(in_features=4, out_features=1, num_cells=C.NUM_CELLS)
    C.fill_mlp(actor_mlp, 0)
    C.fill_mlp(value_mlp, 6)
    return Actor(actor_mlp), ValueOperator(value_mlp, in_keys=["observation", "action"])


def batch():
    return C.flat_batch(3, truncated_rows=False)


def targets(loss, full=False):
    out = OrderedDict()
    for net, attr in (("actor", "target_actor_network_params"), ("value", "target_value_network_params")):
        params = getattr(loss, attr)
        d = OrderedDict()
        for name in sorted(C.MLP_NAMES):  # 0.4.0's file lists them in sorted order
            layer, kind = name.split(".")
            d[f"{net}.{name}"] = C.summary(params.get(("module", layer, kind)).detach(), full)
        out[net] = d
    return out


def own_storage(loss, net):
    online = getattr(loss, f"{net}_network_params").get(("module", "0", "weight"))
    target = getattr(loss, f"target_{net}_network_params").get(("module", "0", "weight"))
    return online.data_ptr() != target.data_ptr()


def scenario(name, kwargs, kind, n_iter):
    actor, value = build()
    loss = DDPGLoss(actor, value, **kwargs)
    sc = OrderedDict()
    sc["loss_kwargs"] = OrderedDict(kwargs)
    sc["effective_delay_actor"] = bool(loss.delay_actor)
    sc["effective_delay_value"] = bool(loss.delay_value)
    table = C.ParamTable(loss, {"actor_network_params": "actor", "value_network_params": "value"}, order=ORDER)
    sc["loss_param_names"] = OrderedDict((k, table.names[k]) for k in ORDER)
    sc["target_has_own_storage"] = OrderedDict([("actor", own_storage(loss, "actor")), ("value", own_storage(loss, "value"))])
    updater = SoftUpdate(loss, eps=SOFT_EPS) if kind == "soft" else HardUpdate(loss, value_network_update_interval=HARD_INTERVAL)
    sc["updater"] = kind
    sc["gamma"] = C.scalar(loss.value_estimator.gamma)
    sc["value_estimator"] = type(loss.value_estimator).__name__
    sc["targets_after_updater_init"] = targets(loss)
    optim = C.make_adam(loss)
    iterations = []
    for it in range(n_iter):
        td = batch()
        out = loss(td)
        r = OrderedDict()
        r["iteration"] = it
        r["per_sample"] = OrderedDict(
            (k, C.rec(out.get(k))) for k in ("td_error", "pred_value", "target_value") if k in out.keys()
        )
        r["loss_out"] = C.out_records(out)
        r["batch_td_error"] = C.rec(td.get("td_error"))
        keys, total = C.total_of(out)
        r["total_loss_keys"] = keys
        r["total_loss"] = C.scalar(total)
        total.backward()
        r["grads"] = table.dump(grad=True, full=(it == 0))
        optim.step()
        r["params_after_adam"] = table.dump()
        optim.zero_grad(set_to_none=False)
        updater.step()
        if kind == "hard":
            r["hard_counter_after_step"] = int(updater.counter)
        r["params_after_update"] = table.dump()
        r["targets_after_update"] = targets(loss, full=(it == n_iter - 1))
        iterations.append(r)
    sc["iterations"] = iterations
    return sc


def generate():
    data = OrderedDict()
    m = C.base_meta("ddpg")
    m["batch_formula"] = OrderedDict(
        [
            ("observation[i,j]", "sin(0.5*i + 0.9*j + 0.1)"),
            ("action[i,0]", "0.8*cos(0.7*i + 0.3)"),
            ("next.observation[i,j]", "sin(0.5*i + 0.9*j + 0.6)"),
            ("next.reward[i,0]", "-0.5 + 0.25*cos(1.7*i + 0.2)"),
            ("next.done[i,0]", "i % 3 == 2"),
            ("next.terminated[i,0]", "i % 3 == 2"),
        ]
    )
    m["soft_update_eps"] = SOFT_EPS
    m["hard_update_interval"] = HARD_INTERVAL
    m["canonical_param_order"] = ORDER
    m["iteration"] = (
        "fresh batch; out = loss(batch); backward of the sum of the loss_* entries; optim.step(); "
        "optim.zero_grad(set_to_none=False); updater.step()"
    )
    data["meta"] = m
    entries = [(f"actor.{n}", C.formula_tensor(l, s)) for l, (n, s) in enumerate(zip(C.MLP_NAMES, critics.shapes(3, 1)))]
    entries += [(f"value.{n}", C.formula_tensor(6 + l, s)) for l, (n, s) in enumerate(zip(C.MLP_NAMES, critics.shapes(4, 1)))]
    data["canonical_params"] = C.canonical_params_record(entries)
    data["batch"] = C.batch_record(batch(), BATCH_KEYS)
    actor, value = build()
    with torch.no_grad():
        td = batch().select("observation")
        actor(td)
        value(td)
    data["actor_forward_on_batch"] = OrderedDict(
        [("action_from_actor", C.rec(td["action"])), ("state_action_value(obs, actor_action)", C.rec(td["state_action_value"]))]
    )
    data["scenarios"] = OrderedDict((n, scenario(n, kw, kind, it)) for n, kw, kind, it in SCENARIOS)
    return data
