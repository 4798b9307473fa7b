"""The on-policy cases (ppo, a2c, reinforce): IndependentNormal or TanhNormal actor, critic
p 6..11, the [2, 8] time batch, GAE(0.99, 0.95) inside the loss or a precomputed advantage,
Adam, no target network, 2 iterations."""

from collections import OrderedDict

import torch
from torchrl.objectives import A2CLoss, ClipPPOLoss, ReinforceLoss, ValueEstimators

import common as C
from cases import actors, hooks

N_ITER = 2
LOG_PROB_KEY = "sample_log_prob"  # 0.4.0's key, which the C++ readers expect in the batch
ORDER = [f"actor.{n}" for n in C.MLP_NAMES] + [f"critic.{n}" for n in C.MLP_NAMES]
MVE = OrderedDict([("value_type", "ValueEstimators.GAE"), ("gamma", 0.99), ("lmbda", 0.95), ("vectorized", True)])


def make_batch(extra):
    return lambda: C.time_batch(with_action=True, log_prob_key=LOG_PROB_KEY, extra=extra)


def build_loss(kind, tanh):
    if tanh:
        mlp, actor = actors.tanh_normal_actor(return_log_prob=True, log_prob_key=LOG_PROB_KEY)
    else:
        mlp, actor = actors.independent_normal_actor(LOG_PROB_KEY)
    _, critic = actors.critic(6)
    if kind == "ppo":
        kw = OrderedDict([("clip_epsilon", 0.2), ("entropy_bonus", True), ("entropy_coeff", 0.01), ("critic_coeff", 1.0),
                          ("loss_critic_type", "smooth_l1"), ("normalize_advantage", False)])
        loss = ClipPPOLoss(actor, critic, **kw)
    elif kind == "a2c":
        kw = OrderedDict([("entropy_bonus", True), ("entropy_coeff", 0.01), ("critic_coeff", 1.0),
                          ("loss_critic_type", "smooth_l1")])
        loss = A2CLoss(actor, critic, **kw)
    else:
        kw = OrderedDict([("loss_critic_type", "smooth_l1")])
        loss = ReinforceLoss(actor, critic, **kw)
    if hasattr(loss.tensor_keys, "sample_log_prob"):
        loss.set_keys(sample_log_prob=LOG_PROB_KEY)
    loss.make_value_estimator(ValueEstimators.GAE, gamma=MVE["gamma"], lmbda=MVE["lmbda"], vectorized=MVE["vectorized"])
    return actor, critic, loss, kw


def old_names(kw):
    """The kwargs under 0.4.0's names (what the C++ readers read)."""
    ren = {"entropy_coeff": "entropy_coef", "critic_coeff": "critic_coef"}
    return OrderedDict((ren.get(k, k), v) for k, v in kw.items())


def dist_of(loss, td):
    with loss.actor_network_params.to_module(loss.actor_network):
        return loss.actor_network.get_dist(td)


def scenario(kind, name, precomputed, tanh, seed):
    actor, critic, loss, kw = build_loss(kind, tanh)
    sc = OrderedDict()
    sc["loss_class"] = type(loss).__name__
    sc["loss_kwargs"] = old_names(kw)
    sc["loss_kwargs_0.14.1"] = OrderedDict(kw)
    if kind != "ppo":
        sc["actor"] = actors.ACTOR_DOC_TANH % "True" if tanh else actors.ACTOR_DOC_IN
    sc["make_value_estimator"] = OrderedDict(MVE)
    sc["value_estimator"] = type(loss.value_estimator).__name__
    sc["gamma"] = C.scalar(loss.value_estimator.gamma)
    sc["lmbda"] = C.scalar(loss.value_estimator.lmbda)
    sc["log_prob_key"] = str(getattr(loss.tensor_keys, "sample_log_prob", None))
    eff = OrderedDict()
    if kind == "ppo":
        eff["clip_epsilon_float32"] = C.scalar(loss.clip_epsilon)
    if kind in ("ppo", "a2c"):
        eff["entropy_coef_float32"] = C.scalar(loss.entropy_coeff)
        eff["critic_coef_float32"] = C.scalar(loss.critic_coeff)
        eff["samples_mc_entropy"] = loss.samples_mc_entropy
        eff["entropy_bonus"] = bool(loss.entropy_bonus)
        eff["log_explained_variance"] = bool(getattr(loss, "log_explained_variance", False))
    if kind == "reinforce":
        eff["delay_value"] = bool(loss.delay_value)
    eff["reduction"] = loss.reduction
    eff["functional"] = bool(loss.functional)
    if kind == "ppo":
        eff["separate_losses"] = bool(getattr(loss, "separate_losses", False))
    sc["effective"] = eff
    sc["advantage_source"] = (
        "batch_extra: advantage and value_target given, the loss skips GAE"
        if precomputed
        else "GAE inside the loss's forward (batch has no 'advantage' key)"
    )
    table = C.ParamTable(loss, {"actor_network_params": "actor", "critic_network_params": "critic"}, order=ORDER)
    sc["loss_param_names"] = OrderedDict((k, table.names[k]) for k in ORDER)
    sc["updater"] = None
    sc["out_keys_declared"] = list(loss.out_keys)
    if seed is not None:
        sc["sampling"] = (
            f"torch.manual_seed({seed} + iteration) immediately before loss(batch); exactly one RNG call per forward "
            "(iterations[i].sampling.rng_draws)"
        )
    if precomputed:
        sc["batch_extra"] = OrderedDict((k, C.rec(v)) for k, v in C.time_batch_extra().items())

    def diagnostics(it, batch):
        d = OrderedDict()
        with torch.no_grad():
            if not precomputed:
                td = batch.clone()
                loss.value_estimator(td, params=loss.critic_network_params.detach(),
                                     target_params=loss.target_critic_network_params)
                g = OrderedDict()
                g["how"] = "loss.value_estimator(clone, params=critic params detached, target_params=the same)"
                for k in ("advantage", "value_target", "state_value", "next.state_value"):
                    g[k] = C.rec(td.get(tuple(k.split(".")) if "." in k else k))
                d["gae_inside_loss"] = g
            td = batch.clone()
            dist = dist_of(loss, td)
            d["loc"] = C.rec(td["loc"])
            d["scale"] = C.rec(td["scale"])
            d["log_prob_of_action" if kind == "ppo" else "log_prob_of_batch_action"] = C.rec(dist.log_prob(batch["action"]))
            if not tanh:
                d["entropy_per_sample"] = C.rec(dist.entropy())
            if kind == "ppo":
                td = batch.clone()
                if precomputed:
                    adv_shape = td["advantage"].shape[:-1]
                else:
                    adv_shape = td.batch_size
                lw = loss._log_weight(td, adv_shape=adv_shape)[0]
                lo, hi = (C.scalar(b) for b in loss._clip_bounds)
                d["log_weight"] = C.rec(lw)
                d["clip_bounds_log"] = [lo, hi]
                d["rows_clipped"] = int(((lw < lo) | (lw > hi)).sum())
        return d

    hook = hooks.TanhNormalHooks()
    before_keys = {}

    def before(it, batch):
        hook.records.clear()
        hook.__enter__()
        before_keys[it] = {k: v.clone() for k, v in batch.items(True, True)}
        if seed is not None:
            torch.manual_seed(seed + it)
            return seed + it
        return None

    def after(it, batch, out, rng, s, state):
        hook.__exit__(None, None, None)
        smp = OrderedDict()
        if kind == "reinforce":
            b = OrderedDict()
            for k in ("action", LOG_PROB_KEY, "advantage", "value_target"):
                if k in batch.keys():
                    b[k] = C.rec(batch[k])
            b["action_overwritten_by_the_loss"] = not torch.equal(batch["action"], before_keys[it]["action"])
            b["sample_log_prob_overwritten"] = not torch.equal(batch[LOG_PROB_KEY], before_keys[it][LOG_PROB_KEY])
            b["keys"] = sorted(".".join(k) if isinstance(k, tuple) else k for k in batch.keys(True, True))
            smp["batch_after_forward"] = b
        if tanh:
            if s is not None:
                smp["seed"] = s
                smp["seeding"] = "torch.manual_seed(seed) immediately before loss(batch)"
            smp["event_order"] = list(rng.events)
            if rng.draws:
                smp["rng_draws"] = C.draws_record(
                    rng.draws, ["A2CLoss.get_entropy_bonus: rsample_and_log_prob(dist, (samples_mc_entropy,))"]
                )
                smp["replay_check"] = C.replay_check(s, rng.draws, state)
            else:
                smp["rng_state_unchanged_by_forward"] = True
            sampled = [h for h in hook.records if h["kind"] == "rsample_and_log_prob"]
            if sampled:
                assert len(sampled) == 1 and len(rng.draws) == 1
                smp["mc_entropy_sample"] = actors.tanh_site_record(sampled[0], rng.draws[0]["value"])
            scored = [h for h in hook.records if h["kind"] == "log_prob"]
            if scored:
                smp["log_prob_of_batch_action"] = C.rec(scored[0]["log_prob"])
                smp["log_prob_of_batch_action_input_is_batch_action"] = C.bit_equal(scored[0]["value"], batch["action"])
        elif kind == "a2c":
            assert not rng.draws
        res = OrderedDict()
        if kind != "ppo":
            res["sampling"] = smp
        return res

    iters = C.run_iterations(loss, table, N_ITER, make_batch(precomputed), before_forward=before,
                             diagnostics=diagnostics, after_forward=after, with_targets=False)
    new_keys = sorted(set(k for it in iters for k in it["loss_out"]) - set(OLD_OUT_KEYS[kind]))
    sc["iterations"] = C.strip_private(iters)
    sc["all_checks_ok"] = C.all_checks_ok(iters)
    if new_keys:
        sc["loss_out_keys_not_in_0.4.0"] = new_keys
    return sc


OLD_OUT_KEYS = {
    "ppo": ["loss_objective", "clip_fraction", "entropy", "loss_entropy", "loss_critic", "ESS"],
    "a2c": ["loss_objective", "loss_critic", "entropy", "loss_entropy"],
    "reinforce": ["loss_actor", "loss_value"],
}


def generate(kind, scenarios):
    data = OrderedDict()
    m = C.base_meta(kind)
    m["batch_formula"] = OrderedDict(C.TIME_BATCH_FORMULA)
    m["batch_formula"]["action[b,t,0]"] = "0.8*cos(0.7*i + 0.3)"
    m["batch_formula"][f"{LOG_PROB_KEY}[b,t]"] = "-1.0 + 0.3*sin(1.1*i + 0.4)"
    m["batch_formula"]["advantage[b,t,0] (precomputed_advantage only)"] = "0.5*sin(0.9*i + 0.2)"
    m["batch_formula"]["value_target[b,t,0] (precomputed_advantage only)"] = "-0.4 + 0.3*cos(0.6*i + 0.1)"
    m["canonical_order"] = (
        "p 0..5 actor.{0.weight (32,3),0.bias,2.weight,2.bias,4.weight (2,32),4.bias (2,)}; p 6..11 critic.{0.weight "
        "(32,3),0.bias,2.weight,2.bias,4.weight (1,32),4.bias (1,)}"
    )
    if any(t for _, _, t, _ in scenarios):
        m["networks"] = OrderedDict([("actor (independent_normal scenarios)", actors.ACTOR_DOC_IN),
                                     ("actor (tanh_normal scenario)", actors.ACTOR_DOC_TANH % "True")])
    else:
        m["networks"] = OrderedDict([("actor", actors.ACTOR_DOC_IN)])
    m["networks"]["critic"] = "ValueOperator(MLP(3->1,[32,32]), in_keys=['observation']) -> 'state_value'"
    m["normal_param_extractor"] = actors.NPE_DOC
    m["normal_param_extractor_bias"] = actors.extractor_bias()
    if any(t for _, _, t, _ in scenarios):
        m["tanh_normal"] = actors.TANH_NORMAL_DOC
    m["log_prob_key"] = (
        f"{LOG_PROB_KEY!r}: 0.4.0's key, kept in the batch (the C++ readers expect it); TorchRL 0.14.1's default would "
        "be 'action_log_prob'. The actor gets log_prob_key='sample_log_prob' and the loss "
        "set_keys(sample_log_prob='sample_log_prob') where it has that key"
    )
    m["renamed_kwargs"] = (
        "loss_kwargs keeps 0.4.0's names (entropy_coef, critic_coef), which the C++ readers read; loss_kwargs_0.14.1 is "
        "what was passed (entropy_coeff, critic_coeff: the old names raise in 0.14.1)"
    )
    m["n_iterations"] = N_ITER
    data["meta"] = m
    data["canonical_params"] = C.canonical_params_record(actors.canonical_entries(2, (("critic", 6, 3, 1),)))
    data["batch"] = C.batch_record(C.time_batch(with_action=True, log_prob_key=LOG_PROB_KEY))
    data["scenarios"] = OrderedDict(
        (name, scenario(kind, name, pre, tanh, seed)) for name, pre, tanh, seed in scenarios
    )
    return data
