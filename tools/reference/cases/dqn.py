"""dqn / dqn_double: DQNLoss (one-hot QValueActor) + HardUpdate(2), 4 iterations."""

from collections import OrderedDict

import torch
from torchrl.modules import MLP, QValueActor
from torchrl.objectives import DQNLoss, HardUpdate

import common as C
from cases import actors

N_ITER = 4
INTERVAL = 2
ORDER = [f"value.{n}" for n in C.MLP_NAMES]


def batch():
    return C.flat_batch(4, action="one_hot2")


def scenario(double, swapped):
    mlp = MLP(in_features=4, out_features=2, num_cells=C.NUM_CELLS)
    C.fill_mlp(mlp, 0)
    qnet = QValueActor(mlp, in_keys=["observation"], action_space="one_hot")
    loss = DQNLoss(qnet, delay_value=True, double_dqn=double, action_space="one_hot")
    sc = OrderedDict()
    sc["loss_class"] = "DQNLoss"
    sc["loss_kwargs"] = OrderedDict([("delay_value", True), ("double_dqn", double), ("action_space", "one_hot")])
    sc["effective_defaults"] = OrderedDict(
        [("loss_function", loss.loss_function), ("reduction", loss.reduction), ("delay_value", loss.delay_value),
         ("double_dqn", loss.double_dqn), ("action_space", str(loss.action_space))]
    )
    sc["value_estimator"] = type(loss.value_estimator).__name__
    sc["gamma"] = C.scalar(loss.value_estimator.gamma)
    sc["out_keys_declared"] = list(loss.out_keys)
    table = C.ParamTable(loss, {"value_network_params": "value"}, order=ORDER)
    sc["loss_param_names"] = OrderedDict((k, table.names[k]) for k in ORDER)
    updater = HardUpdate(loss, value_network_update_interval=INTERVAL)
    sc["updater"] = OrderedDict(
        [("class", "HardUpdate"), ("value_network_update_interval", INTERVAL),
         ("rule", "step(): if counter == interval: copy online -> target; counter = 0 if it was == interval else "
                  "counter + 1 (first copy on the 3rd step)")]
    )
    sc["targets_equal_online_after_updater_init"] = all(torch.equal(table.get(k), table.get_target(k)) for k in table.target)
    if swapped:
        with torch.no_grad():
            for l in (4, 5):
                name = ORDER[l]
                t = table.target[name][0]
                t.copy_(C.formula_tensor(l, t.shape).flip(0))
        sc["target_init"] = (
            "after HardUpdate(...) (whose constructor copies online -> target), with torch.no_grad(): target "
            "value.4.weight and value.4.bias are replaced by their row-flipped selves (target.4.weight[a,:] = "
            "formula((2,32), p=4)[1-a,:], target.4.bias[a] = formula((2,), p=5)[1-a]); layers 0 and 2 stay equal to "
            "the online formula weights (why: see the 0.4.0 file / OBJECTIVES.md)"
        )
    else:
        sc["target_init"] = "targets = clone of the online formula weights (TorchRL default)"
    sc["targets_at_start"] = table.dump_targets(full=True)

    def diagnostics(it, td):
        d = OrderedDict()
        with torch.no_grad():
            on_obs = qnet(td.select("observation").clone())
            on_next = qnet(td.get("next").select("observation").clone())
            with loss.target_value_network_params.to_module(loss.value_network):
                tg_next = loss.value_network(td.get("next").select("observation").clone())
        d["action_value_online_obs"] = C.rec(on_obs["action_value"])
        d["action_value_online_next_obs"] = C.rec(on_next["action_value"])
        d["action_value_target_next_obs"] = C.rec(tg_next["action_value"])
        chooser = on_next if double else tg_next
        d["next_action_one_hot"] = C.rec(chooser["action"])
        d["next_action_chosen_by"] = (
            "online net, evaluated by the target net (double DQN)" if double else "target net (value = max of target Q)"
        )
        # Q(s, batch action): the one-hot action selects the entry
        d["pred_chosen_action_value"] = C.rec((on_obs["action_value"] * td["action"]).sum(-1))
        d["ties_in_argmax"] = bool((on_next["action"].sum(-1) > 1).any() or (tg_next["action"].sum(-1) > 1).any())
        d["online_and_target_argmax_differ_rows"] = int(
            (on_next["action"].argmax(-1) != tg_next["action"].argmax(-1)).sum()
        )
        return d

    iters = C.run_iterations(loss, table, N_ITER, batch, updater=updater, diagnostics=diagnostics)
    sc["iterations"] = C.strip_private(iters)
    sc["all_checks_ok"] = C.all_checks_ok(iters)
    return sc


def generate_case(case, double):
    data = OrderedDict()
    m = C.base_meta(case)
    m["batch_formula"] = OrderedDict(C.FLAT_BATCH_FORMULA)
    m["batch_formula"]["action[i,:]"] = "one_hot(k_i, 2) int64 with k_i = (i // 2) % 2"
    m["batch_formula"]["obs_dim"] = 4
    m["canonical_order"] = "p 0..5 value.{0.weight (32,4),0.bias,2.weight,2.bias,4.weight (2,32),4.bias (2,)}"
    m["networks"] = OrderedDict(
        [("value", "QValueActor(MLP(4->2,[32,32]), in_keys=['observation'], action_space='one_hot')")]
    )
    m["hard_update_interval"] = INTERVAL
    m["n_iterations"] = N_ITER
    data["meta"] = m
    entries = [(f"value.{n}", C.formula_tensor(l, s)) for l, (n, s) in enumerate(zip(C.MLP_NAMES, actors.shapes(4, 2)))]
    data["canonical_params"] = C.canonical_params_record(entries)
    data["batch"] = C.batch_record(batch())
    s = "double_dqn" if double else "dqn"
    data["scenarios"] = OrderedDict([(s, scenario(double, False)), (f"{s}_swapped_target_output", scenario(double, True))])
    return data


def generate_dqn():
    return generate_case("dqn", False)


def generate_double():
    return generate_case("dqn_double", True)
