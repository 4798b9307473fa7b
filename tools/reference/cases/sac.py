"""sac: SACLoss v2 (TanhNormal actor, 2 critics) + SoftUpdate(eps=0.995), 2 iterations."""

from collections import OrderedDict

import torch
from torchrl.modules import MLP, ValueOperator
from torchrl.objectives import SACLoss, SoftUpdate

import common as C
from cases import actors, critics, hooks

N_ITER = 2
EPS = 0.995
SCENARIOS = [
    ("fixed_alpha", {"fixed_alpha": True, "alpha_init": 0.2}),
    ("learned_alpha", {}),
    ("learned_alpha_init_0.5", {"alpha_init": 0.5}),
]
SITES = [
    ("target_policy_on_next_observation",
     "SACLoss._compute_target_v2 (runs first, under no_grad): compute_rsample_log_prob(next_dist) on next.observation"),
    ("actor_on_observation", "SACLoss._actor_loss (runs second): compute_rsample_log_prob(dist) on observation"),
]


def order(learned):
    names = [f"actor.{n}" for n in C.MLP_NAMES] + [f"qvalue{c}.{n}" for c in range(2) for n in C.MLP_NAMES]
    return names + (["log_alpha"] if learned else [])


def scenario(name, kwargs):
    torch.manual_seed(0)  # the critic copies' re-draw (overwritten below) consumes the generator
    mlp, actor = actors.tanh_normal_actor(return_log_prob=False)
    q_mlp = MLP(in_features=4, out_features=1, num_cells=C.NUM_CELLS)
    C.fill_mlp(q_mlp, 6)
    qvalue = ValueOperator(q_mlp, in_keys=["observation", "action"])
    loss = SACLoss(actor, qvalue, num_qvalue_nets=2, **kwargs)
    learned = not loss.fixed_alpha
    sc = OrderedDict()
    sc["loss_class"] = "SACLoss"
    sc["loss_kwargs"] = OrderedDict([("num_qvalue_nets", 2)] + list(kwargs.items()))
    eff = OrderedDict()
    eff["version"] = loss._version
    eff["loss_function"] = loss.loss_function
    eff["delay_actor"] = loss.delay_actor
    eff["delay_qvalue"] = loss.delay_qvalue
    eff["reduction"] = loss.reduction
    eff["num_qvalue_nets"] = loss.num_qvalue_nets
    eff["fixed_alpha"] = loss.fixed_alpha
    eff["alpha_init"] = C.scalar(loss.alpha_init)
    eff["log_alpha_init_float32"] = C.scalar(loss.log_alpha)
    eff["log_alpha_is_parameter"] = isinstance(loss.log_alpha, torch.nn.Parameter)
    eff["min_alpha"] = None if loss.min_log_alpha is None else C.scalar(loss.min_log_alpha.exp())
    eff["max_alpha"] = None if loss.max_log_alpha is None else C.scalar(loss.max_log_alpha.exp())
    eff["target_entropy"] = C.scalar(loss.target_entropy)
    eff["target_entropy_rule"] = (
        "'auto' -> -prod(action_spec['action'].shape) = -1.0, taken from the actor's spec "
        "(ProbabilisticActor(spec=Bounded(-2, 2, (1,))))"
    )
    eff["vmap_randomness"] = loss.vmap_randomness
    eff["skip_done_states"] = bool(getattr(loss, "skip_done_states", False))
    sc["effective_defaults"] = eff
    sc["value_estimator"] = type(loss.value_estimator).__name__
    sc["gamma"] = C.scalar(loss.value_estimator.gamma)
    sc["out_keys_declared"] = list(loss.out_keys)
    sc["critic_copy_initialisation"] = critics.overwrite_copies(loss, q_mlp, "SACLoss")
    sc["target_actor_is_the_online_actor"] = not loss.delay_actor
    updater = SoftUpdate(loss, eps=EPS)
    table = C.ParamTable(loss, {"actor_network_params": "actor", "qvalue_network_params": "qvalue"},
                         expanded={"qvalue_network_params"}, order=order(learned), extra=("log_alpha",))
    names = OrderedDict((k, table.names[k]) for k in order(learned))
    sc["loss_param_names"] = names
    sc.move_to_end("critic_copy_initialisation")
    sc.move_to_end("target_actor_is_the_online_actor")
    sc["updater"] = OrderedDict(
        [("class", "SoftUpdate"), ("eps", EPS),
         ("rule_0.14.1", "target.data.lerp_(online.data, 1 - eps) per tensor; only the qvalue copies have targets "
                         "(delay_actor=False)")]
    )
    sc["targets_equal_online_after_updater_init"] = all(torch.equal(table.get(k), table.get_target(k)) for k in table.target)

    def diagnostics(it, batch):
        d = OrderedDict()
        with torch.no_grad():
            ex = OrderedDict()
            for key, td in (("observation", batch.select("observation").clone()),
                            ("next.observation", batch.get("next").select("observation").clone())):
                out = actor.module[0](td)
                ex[key] = OrderedDict([("loc", C.rec(out["loc"])), ("scale", C.rec(out["scale"]))])
            d["extractor_outputs"] = ex
        return d

    seeds = {}
    hook = hooks.TanhNormalHooks()
    keys_before = {}

    def before(it, batch):
        seeds[it] = 31 + it
        keys_before[it] = set(batch.keys(True, True))
        hook.records.clear()
        hook.__enter__()
        torch.manual_seed(31 + it)
        return 31 + it

    def after(it, batch, out, rng, seed, state):
        hook.__exit__(None, None, None)
        s = OrderedDict()
        s["seed"] = seed
        s["seeding"] = "torch.manual_seed(seed) immediately before loss(batch)"
        s["event_order"] = list(rng.events)
        s["rng_draws"] = C.draws_record(rng.draws, [site for _, site in SITES])
        s["replay_check"] = C.replay_check(seed, rng.draws, state)
        sampled = [h for h in hook.records if h["kind"] == "rsample_and_log_prob"]
        assert len(sampled) == 2 and len(rng.draws) == 2, (len(sampled), len(rng.draws))
        for (site, _), h, d in zip(SITES, sampled, rng.draws):
            s[site] = actors.tanh_site_record(h, d["value"])
        written = sorted(".".join(k) if isinstance(k, tuple) else k for k in set(batch.keys(True, True)) - keys_before[it])
        s["batch_keys_written_by_the_loss"] = written
        return {"sampling": s}

    # the sampling hook must wrap only the forward: enter in `before`, leave in `after`
    iters = C.run_iterations(loss, table, N_ITER, lambda: C.flat_batch(3), updater=updater, before_forward=before,
                             diagnostics=diagnostics, after_forward=after)
    sc["iterations"] = C.strip_private(iters)
    sc["all_checks_ok"] = C.all_checks_ok(iters)
    return sc


def generate():
    data = OrderedDict()
    m = C.base_meta("sac")
    m["batch_formula"] = OrderedDict(C.FLAT_BATCH_FORMULA)
    m["batch_formula"]["action[i,0]"] = "0.8*cos(0.7*i + 0.3)"
    m["batch_formula"]["obs_dim"] = 3
    m["canonical_order"] = (
        "p 0..5 actor.{0.weight (32,3),0.bias,2.weight,2.bias,4.weight (2,32),4.bias (2,)}; p = 6 + 6*c + l for "
        "qvalue<c>.<layer l> (MLP(4->1)); log_alpha is not a formula parameter (log(alpha_init) as float32)"
    )
    m["networks"] = OrderedDict(
        [
            ("actor", actors.ACTOR_DOC_TANH % "False"),
            ("qvalue", "ValueOperator(MLP(4->1,[32,32]), in_keys=['observation','action']) -> 'state_action_value' "
                       "(input cat([observation, action], -1))"),
        ]
    )
    m["normal_param_extractor"] = actors.NPE_DOC
    m["normal_param_extractor_bias"] = actors.extractor_bias()
    m["tanh_normal"] = actors.TANH_NORMAL_DOC
    m["soft_update_eps"] = EPS
    m["n_iterations"] = N_ITER
    m["sampling"] = [
        "torch.manual_seed(31 + iteration) immediately before loss(batch); the forward makes exactly two RNG calls, both "
        "torch.empty([8, 1]).normal_() on the CPU default generator: #0 for the next action (target, next.observation, "
        "runs FIRST), #1 for the actor loss (observation)",
        "iterations[i].sampling holds the raw normals, loc/scale, pre-tanh samples, actions and log-probs of both draws, "
        "plus replay_check (plain-torch replay of the seed: values and full generator state)",
        "a port may instead inject the recorded normals (rng_draws[k].values) and check everything downstream",
    ]
    data["meta"] = m
    data["canonical_params"] = C.canonical_params_record(
        actors.canonical_entries(2, (("qvalue0", 6, 4, 1), ("qvalue1", 12, 4, 1)))
    )
    data["batch"] = C.batch_record(C.flat_batch(3))
    data["scenarios"] = OrderedDict((name, scenario(name, kw)) for name, kw in SCENARIOS)
    return data
