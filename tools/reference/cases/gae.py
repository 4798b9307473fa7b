"""gae: GAE, TDLambdaEstimator, TD1Estimator, TD0Estimator (gamma 0.95, lambda 0.9) on the [2, 8]
time batch, vectorised and recursive, average_gae."""

from collections import OrderedDict

import torch
from torchrl.objectives.value import GAE, TD0Estimator, TD1Estimator, TDLambdaEstimator

import common as C
from cases import actors

GAMMA, LMBDA = 0.95, 0.9
# name, class, kwargs beyond gamma/lmbda as 0.4.0 passed them, twin for vs_not_vectorized
SCENARIOS = [
    ("gae", "GAE", {}, "gae_not_vectorized"),
    ("gae_average", "GAE", {"average_gae": True}, "gae_average_not_vectorized"),
    ("gae_not_vectorized", "GAE", {"vectorized": False}, None),
    ("gae_average_not_vectorized", "GAE", {"average_gae": True, "vectorized": False}, None),
    ("td_lambda", "TDLambdaEstimator", {}, "td_lambda_not_vectorized"),
    ("td_lambda_not_vectorized", "TDLambdaEstimator", {"vectorized": False}, None),
    ("td1", "TD1Estimator", {}, None),
    ("td0", "TD0Estimator", {}, None),
]
CLASSES = {"GAE": GAE, "TDLambdaEstimator": TDLambdaEstimator, "TD1Estimator": TD1Estimator, "TD0Estimator": TD0Estimator}


def run(cls_name, kwargs, critic):
    cls = CLASSES[cls_name]
    kw = {"gamma": GAMMA}
    if cls_name in ("GAE", "TDLambdaEstimator"):
        kw["lmbda"] = LMBDA
    kw.update(kwargs)
    passed = dict(kw)
    if cls_name in ("GAE", "TDLambdaEstimator") and "vectorized" not in kw:
        # 0.4.0's default was vectorized=True for both; 0.14.1's GAE defaults to None (the
        # recursive path): pass it so that the scenario keeps its meaning
        kw["vectorized"] = True
    est = cls(value_network=critic, **kw)
    td = C.time_batch(with_action=False)
    out = est(td.clone())
    return est, passed, kw, out


def generate():
    _, critic = actors.critic(first_p=0)
    data = OrderedDict()
    m = C.base_meta("gae")
    m["batch_formula"] = OrderedDict(C.TIME_BATCH_FORMULA)
    m["canonical_order"] = "p 0..5 value.{0.weight (32,3),0.bias,2.weight,2.bias,4.weight (1,32),4.bias (1,)}"
    m["networks"] = OrderedDict([("value", "ValueOperator(MLP(3->1,[32,32]), in_keys=['observation']) -> 'state_value'")])
    m["notes"] = [
        "each estimator is called as est(batch.clone()) with no params: it runs the ValueOperator on observation and "
        "next.observation and writes state_value, next.state_value, advantage, value_target",
        "advantage = value_target - state_value for td0/td1/td_lambda; GAE's value_target = advantage + state_value "
        "computed BEFORE average_gae standardises the advantage",
        "GAE and TDLambdaEstimator get vectorized=True explicitly where 0.4.0 relied on its default (True); 0.14.1's GAE "
        "defaults to vectorized=None, the recursive path (scenarios[*].kwargs_passed_to_0.14.1)",
    ]
    data["meta"] = m
    data["canonical_params"] = C.canonical_params_record(
        [(f"value.{n}", C.formula_tensor(l, s)) for l, (n, s) in enumerate(zip(C.MLP_NAMES, actors.shapes(3, 1)))]
    )
    data["batch"] = C.batch_record(C.time_batch(with_action=False))
    results = OrderedDict()
    scen = OrderedDict()
    ok = True
    for name, cls_name, kwargs, twin in SCENARIOS:
        est, passed, kw, out = run(cls_name, kwargs, critic)
        results[name] = out
        sc = OrderedDict()
        sc["estimator"] = cls_name
        sc["kwargs"] = OrderedDict(passed)
        sc["kwargs_passed_to_0.14.1"] = OrderedDict(kw)
        sc["gamma"] = C.scalar(est.gamma)
        sc["outputs"] = OrderedDict(
            (k, C.rec(out.get(tuple(k.split(".")) if "." in k else k)))
            for k in ("advantage", "value_target", "state_value", "next.state_value")
        )
        if hasattr(est, "lmbda"):
            sc["lmbda"] = C.scalar(est.lmbda)
        eff = OrderedDict()
        for attr in ("average_gae", "vectorized", "average_rewards", "differentiable", "shifted"):
            if hasattr(est, attr):
                v = getattr(est, attr)
                eff[attr] = None if v is None else bool(v)
        sc["effective"] = eff
        with torch.no_grad():
            plain = critic(C.time_batch(with_action=False).select("observation"))["state_value"]
            plain_next = critic(C.time_batch(with_action=False).get("next").select("observation"))["state_value"]
        checks = OrderedDict()
        checks["outputs_finite"] = all(bool(torch.isfinite(out.get(k)).all()) for k in ("advantage", "value_target"))
        checks["state_value_bit_equal_plain_forward"] = C.bit_equal(out.get("state_value"), plain)
        checks["next_state_value_bit_equal_plain_forward"] = C.bit_equal(out.get(("next", "state_value")), plain_next)
        checks["state_value_max_abs_diff_plain_forward"] = C.max_abs_diff(out.get("state_value"), plain)
        checks["next_state_value_max_abs_diff_plain_forward"] = C.max_abs_diff(out.get(("next", "state_value")), plain_next)
        sc["checks"] = checks
        ok = ok and checks["outputs_finite"]
        sc["_twin"] = twin
        scen[name] = sc
    for name, sc in scen.items():
        twin = sc.pop("_twin")
        if twin:
            a, b = results[name], results[twin]
            v = OrderedDict()
            v["advantage_max_abs_diff"] = C.max_abs_diff(a.get("advantage"), b.get("advantage"))
            v["value_target_max_abs_diff"] = C.max_abs_diff(a.get("value_target"), b.get("value_target"))
            v["advantage_bit_equal"] = C.bit_equal(a.get("advantage"), b.get("advantage"))
            v["value_target_bit_equal"] = C.bit_equal(a.get("value_target"), b.get("value_target"))
            sc["vs_not_vectorized"] = v
    data["scenarios"] = scen
    data["all_checks_ok"] = bool(ok)
    return data
