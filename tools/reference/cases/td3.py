"""td3: TD3Loss (2 critics, action spec [-2, 2]) + SoftUpdate(eps=0.995), 2 iterations.
td3_bc: the same with TD3BCLoss (TD3 + behaviour cloning, Fujimoto and Gu, 2021) and its alpha."""

from collections import OrderedDict

import torch
from torchrl.data import Bounded
from torchrl.modules import MLP, Actor, ValueOperator
from torchrl.objectives import SoftUpdate, TD3BCLoss, TD3Loss

import common as C
from cases import critics

N_ITER = 2
EPS = 0.995
SCENARIOS = [("policy_noise_0", 0.0, None), ("policy_noise_0.2_seeded", 0.2, 21)]
# TD3BCLoss: (name, policy_noise, seed, alpha)
SCENARIOS_BC = [("alpha_2.5_policy_noise_0", 0.0, None, 2.5), ("alpha_0.7_policy_noise_0.2_seeded", 0.2, 23, 0.7)]


def order():
    return [f"actor.{n}" for n in C.MLP_NAMES] + [f"qvalue{c}.{n}" for c in range(2) for n in C.MLP_NAMES]


def build():
    actor_mlp = MLP(in_features=3, out_features=1, num_cells=C.NUM_CELLS)
    q_mlp = MLP(in_features=4, out_features=1, num_cells=C.NUM_CELLS)
    C.fill_mlp(actor_mlp, 0)
    C.fill_mlp(q_mlp, 6)
    actor = Actor(actor_mlp)
    qvalue = ValueOperator(q_mlp, in_keys=["observation", "action"])
    return actor_mlp, q_mlp, actor, qvalue


def scenario(name, pn, seed, alpha=None):
    """TD3Loss, or with `alpha` TD3BCLoss."""
    torch.manual_seed(0)  # the critic copies' re-draw (overwritten below) consumes the generator
    actor_mlp, q_mlp, actor, qvalue = build()
    spec = Bounded(-2.0, 2.0, (1,))
    kwargs = dict(action_spec=spec, num_qvalue_nets=2, policy_noise=pn, noise_clip=0.5)
    if alpha is not None:
        kwargs["alpha"] = alpha
    loss = (TD3Loss if alpha is None else TD3BCLoss)(actor, qvalue, **kwargs)
    sc = OrderedDict()
    sc["loss_class"] = type(loss).__name__
    sc["loss_kwargs"] = OrderedDict(
        [("action_spec", "Bounded(-2.0, 2.0, (1,))"), ("num_qvalue_nets", 2), ("policy_noise", pn), ("noise_clip", 0.5)]
    )
    if alpha is not None:
        sc["loss_kwargs"]["alpha"] = alpha
    sc["effective_defaults"] = OrderedDict(
        [
            ("loss_function", loss.loss_function),
            ("delay_actor", loss.delay_actor),
            ("delay_qvalue", loss.delay_qvalue),
            ("reduction", loss.reduction),
            ("num_qvalue_nets", loss.num_qvalue_nets),
            ("policy_noise", loss.policy_noise),
            ("noise_clip", loss.noise_clip),
            ("min_action", C.rec(loss.min_action)),
            ("max_action", C.rec(loss.max_action)),
        ]
    )
    sc["value_estimator"] = type(loss.value_estimator).__name__
    sc["gamma"] = C.scalar(loss.value_estimator.gamma)
    sc["out_keys_declared"] = list(loss.out_keys)
    sc["critic_copy_initialisation"] = critics.overwrite_copies(loss, q_mlp, sc["loss_class"])
    updater = SoftUpdate(loss, eps=EPS)
    table = C.ParamTable(loss, {"actor_network_params": "actor", "qvalue_network_params": "qvalue"},
                         expanded={"qvalue_network_params"}, order=order())
    sc["loss_param_names"] = OrderedDict((k, table.names[k]) for k in order())
    sc["updater"] = OrderedDict(
        [("class", "SoftUpdate"), ("eps", EPS),
         ("rule_0.14.1", "target.data.lerp_(online.data, 1 - eps) per tensor (0.4.0: target.copy_(target*eps + online*(1-eps)))")]
    )
    sc["targets_equal_online_after_updater_init"] = all(
        torch.equal(table.get(k), table.get_target(k)) for k in table.target
    )
    sc["noise_seeding"] = (
        None
        if seed is None
        else f"torch.manual_seed({seed} + iteration) immediately before loss(batch); the forward's only random draw is "
        "torch.randn_like(action), shape (8,1)"
    )

    def diagnostics(it, batch):
        d = OrderedDict()
        with torch.no_grad():
            td = batch.clone()
            d["actor_action_on_obs"] = C.rec(actor(td.select("observation"))["action"])
            with loss.target_actor_network_params.to_module(loss.actor_network):
                nxt = loss.actor_network(batch.get("next").clone().select("observation"))
            d["target_actor_action_on_next_obs"] = C.rec(nxt["action"])
        return d

    def before(it, batch):
        if seed is not None:
            torch.manual_seed(seed + it)
            return seed + it
        return None

    def after(it, batch, out, rng, s, state):
        raws = [d["value"] for d in rng.draws]
        assert len(raws) == 1, f"TD3 forward made {len(raws)} random draws"
        raw = raws[0]
        noise = OrderedDict()
        noise["seed"] = s
        noise["raw"] = C.rec(raw)
        # applied = clamp(policy_noise * raw, -noise_clip, noise_clip): what TD3Loss adds to the
        # target action (recomputed here for the record, not used downstream)
        applied = (raw * pn).clamp(-0.5, 0.5)
        noise["applied"] = C.rec(applied)
        noise["clip_hit_rows"] = [int(i) for i in torch.nonzero((raw * pn).abs() > 0.5)[:, 0].tolist()]
        noise["rng_draws_in_forward"] = len(raws)
        if s is not None:
            noise["replay_check"] = C.replay_check(s, rng.draws, state)
        return {"diagnostics": OrderedDict([("noise", noise)])}

    iters = C.run_iterations(loss, table, N_ITER, lambda: C.flat_batch(3), updater=updater, before_forward=before,
                             diagnostics=diagnostics, after_forward=after)
    sc["iterations"] = C.strip_private(iters)
    sc["all_checks_ok"] = C.all_checks_ok(iters)
    return sc


def generate(case="td3", scenarios=None):
    data = OrderedDict()
    m = C.base_meta(case)
    m["batch_formula"] = OrderedDict(C.FLAT_BATCH_FORMULA)
    m["batch_formula"]["action[i,0]"] = "0.8*cos(0.7*i + 0.3)"
    m["batch_formula"]["obs_dim"] = 3
    m["canonical_order"] = (
        "p 0..5 actor.{0.weight,0.bias,2.weight,2.bias,4.weight,4.bias}; p = 6 + 6*c + l for qvalue<c>.<layer l>"
    )
    m["networks"] = OrderedDict(
        [
            ("actor", "Actor(MLP(3->1,[32,32])) in_keys ['observation'] out_keys ['action']"),
            ("qvalue", "ValueOperator(MLP(4->1,[32,32]), in_keys=['observation','action']) -> 'state_action_value'"),
        ]
    )
    m["soft_update_eps"] = EPS
    m["n_iterations"] = N_ITER
    data["meta"] = m
    entries = [(f"actor.{n}", C.formula_tensor(l, shape)) for l, (n, shape) in enumerate(zip(C.MLP_NAMES, critics.shapes(3, 1)))]
    for c in range(2):
        for l, (n, shape) in enumerate(zip(C.MLP_NAMES, critics.shapes(4, 1))):
            entries.append((f"qvalue{c}.{n}", C.formula_tensor(6 + 6 * c + l, shape)))
    data["canonical_params"] = C.canonical_params_record(entries)
    data["batch"] = C.batch_record(C.flat_batch(3))
    data["scenarios"] = OrderedDict((s[0], scenario(*s)) for s in (scenarios or SCENARIOS))
    return data


def generate_bc():
    return generate("td3_bc", SCENARIOS_BC)
