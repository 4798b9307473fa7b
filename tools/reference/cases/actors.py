"""The stochastic actors shared by sac, ppo, a2c and reinforce."""

from collections import OrderedDict

import numpy as np
import torch
from tensordict.nn import InteractionType, NormalParamExtractor, TensorDictModule
from torchrl.data import Bounded
from torchrl.modules import MLP, IndependentNormal, ProbabilisticActor, TanhNormal, ValueOperator

import common as C

SPEC_DOC = "Bounded(-2.0, 2.0, (1,))"


def actor_mlp():
    mlp = MLP(in_features=3, out_features=2, num_cells=C.NUM_CELLS)
    C.fill_mlp(mlp, 0)
    return mlp


def param_module(mlp):
    return TensorDictModule(torch.nn.Sequential(mlp, NormalParamExtractor()), in_keys=["observation"],
                            out_keys=["loc", "scale"])


def independent_normal_actor(log_prob_key):
    mlp = actor_mlp()
    return mlp, ProbabilisticActor(param_module(mlp), in_keys=["loc", "scale"], distribution_class=IndependentNormal,
                                   return_log_prob=True, log_prob_key=log_prob_key)


def tanh_normal_actor(return_log_prob, log_prob_key=None):
    """TorchRL's sota-implementations/sac/utils.py actor (0.14.1 spelling: low/high)."""
    mlp = actor_mlp()
    spec = Bounded(-2.0, 2.0, (1,))
    kwargs = {}
    if log_prob_key is not None:
        kwargs["log_prob_key"] = log_prob_key
    actor = ProbabilisticActor(
        param_module(mlp),
        in_keys=["loc", "scale"],
        spec=spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": spec.space.low, "high": spec.space.high, "tanh_loc": False},
        default_interaction_type=InteractionType.RANDOM,
        return_log_prob=return_log_prob,
        **kwargs,
    )
    return mlp, actor


def critic(first_p=6):
    mlp = MLP(in_features=3, out_features=1, num_cells=C.NUM_CELLS)
    C.fill_mlp(mlp, first_p)
    return mlp, ValueOperator(mlp, in_keys=["observation"])


def extractor_bias():
    b = NormalParamExtractor().scale_mapping.bias
    return float(np.float32(float(b)))


NPE_DOC = (
    "loc, s = mlp_out.chunk(2, -1); scale = (softplus(s + bias) + 0.01).clamp_min(1e-4); softplus beta 1, threshold 20 "
    "(NormalParamExtractor defaults: scale_mapping 'biased_softplus_1.0', scale_lb 1e-4)"
)

TANH_NORMAL_DOC = [
    "TanhNormal(loc, scale, low=low, high=high, tanh_loc=False), low = tensor([-2.]), high = tensor([2.]) (float32); "
    "0.4.0 spelled them min=/max=",
    "TorchRL 0.14.1: base = Independent(Normal(loc, scale), 1) with loc used as is (0.4.0 shifted it to (loc + 2) - 2); "
    "transform = ComposeTransform([SafeTanhTransform(), AffineTransform(loc=0, scale=2)])",
    "losses draw through TanhNormal.rsample_and_log_prob: x = loc + eps*scale with eps = torch.empty(shape).normal_(); "
    "action = 2*safetanh(x); log_prob scores the same x (0.4.0 re-inverted the rounded action with atanh)",
    "TanhNormal.log_prob(a) (actions not drawn by the call, e.g. the batch's) still re-inverts a",
]

ACTOR_DOC_IN = (
    "ProbabilisticActor(TensorDictModule(Sequential(MLP(3->2,[32,32]), NormalParamExtractor()), ['observation'] -> "
    "['loc','scale']), in_keys=['loc','scale'], distribution_class=IndependentNormal, return_log_prob=True, "
    "log_prob_key=<meta.log_prob_key>)"
)
ACTOR_DOC_TANH = (
    "ProbabilisticActor(TensorDictModule(Sequential(MLP(3->2,[32,32]), NormalParamExtractor()), ['observation'] -> "
    "['loc','scale']), in_keys=['loc','scale'], spec=Bounded(-2, 2, (1,)), distribution_class=TanhNormal, "
    "distribution_kwargs={'low': spec.space.low, 'high': spec.space.high, 'tanh_loc': False}, "
    "default_interaction_type=InteractionType.RANDOM, return_log_prob=%s)"
)


def shapes(i, o):
    return [(32, i), (32,), (32, 32), (32,), (o, 32), (o,)]


def canonical_entries(actor_out=2, critic_nets=(("critic", 6, 3, 1),)):
    entries = [(f"actor.{n}", C.formula_tensor(l, s)) for l, (n, s) in enumerate(zip(C.MLP_NAMES, shapes(3, actor_out)))]
    for net, first, i, o in critic_nets:
        entries += [(f"{net}.{n}", C.formula_tensor(first + l, s)) for l, (n, s) in enumerate(zip(C.MLP_NAMES, shapes(i, o)))]
    return entries


def tanh_site_record(h, draw):
    """One TanhNormal.rsample_and_log_prob call as recorded by hooks.TanhNormalHooks."""
    r = OrderedDict()
    # loc and scale broadcast to the sample's shape (a Monte-Carlo draw adds a leading dim)
    r["loc_from_extractor"] = C.rec(h["loc"].expand_as(h["pre_tanh"]))
    r["scale"] = C.rec(h["scale"].expand_as(h["pre_tanh"]))
    r["base_normal_loc"] = C.rec(h["base_loc"])
    r["base_normal_loc_bit_equal_loc"] = C.bit_equal(h["base_loc"], h["loc"])
    r["noise"] = C.rec(draw)
    r["pre_tanh_sample"] = C.rec(h["pre_tanh"])
    r["action"] = C.rec(h["action"])
    r["log_prob"] = C.rec(h["log_prob"])
    r["log_prob_scores_the_pre_tanh_draw"] = True
    r["pre_tanh_sample_bit_equal_loc_plus_noise_times_scale"] = C.bit_equal(h["pre_tanh"], h["base_loc"] + draw * h["scale"])
    return r
