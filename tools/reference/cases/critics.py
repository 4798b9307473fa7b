"""Helpers shared by the cases with expanded critics (TD3, SAC) and MLP shapes."""

from collections import OrderedDict

import torch

import common as C


def shapes(i, o):
    return [(32, i), (32,), (32, 32), (32,), (o, 32), (o,)]


def overwrite_copies(loss, q_mlp, loss_name):
    """TorchRL 0.14.1's convert_to_functional(qvalue, expand_dim=2, compare_against=None) re-draws
    every critic copy (copy 0 included) with uniform_(min, max) of the input tensor, as 0.4.0
    did. Records what it did, then overwrites copy c's tensor l with the formula for
    p = 6 + 6*c + l (under no_grad, before the updater copies online -> target)."""
    out = OrderedDict()
    out["torchrl_behaviour"] = (
        "convert_to_functional(expand_dim=2, compare_against=None) re-draws every copy (copy 0 included) with "
        "uniform_(min, max) of the input tensor (checked below on TorchRL 0.14.1; same as 0.4.0)"
    )
    named_in = dict(q_mlp.named_parameters())
    params = loss.qvalue_network_params
    observed = OrderedDict()
    for l, name in enumerate(C.MLP_NAMES):
        layer, kind = name.split(".")
        t = params.get(("module", layer, kind))
        src = named_in[name].detach()
        o = OrderedDict()
        for c in range(t.shape[0]):
            o[f"copy{c}_equals_input_weights"] = bool(torch.equal(t[c].detach(), src))
        o["input_min"] = float(src.min())
        o["input_max"] = float(src.max())
        o["copies_within_input_min_max"] = bool(((t.detach() >= src.min()) & (t.detach() <= src.max())).all())
        o["copies_differ_from_each_other"] = not bool(torch.equal(t[0].detach(), t[1].detach()))
        o["is_new_storage"] = t.data_ptr() != src.data_ptr()
        observed[name] = o
    out["observed_per_layer"] = observed
    with torch.no_grad():
        for c in range(params.get(("module", "0", "weight")).shape[0]):
            for l, name in enumerate(C.MLP_NAMES):
                layer, kind = name.split(".")
                t = params.get(("module", layer, kind))
                t[c].copy_(C.formula_tensor(6 + 6 * c + l, t[c].shape))
    ok = True
    for c in range(2):
        for l, name in enumerate(C.MLP_NAMES):
            layer, kind = name.split(".")
            t = params.get(("module", layer, kind))
            ok = ok and bool(torch.equal(t[c].detach(), C.formula_tensor(6 + 6 * c + l, t[c].shape)))
    out["oracle_overwrite"] = (
        f"after {loss_name}(...), before SoftUpdate(...): with torch.no_grad(), "
        "loss.qvalue_network_params['module', L, W][c].copy_(formula(p = 6 + 6*c + l)); SoftUpdate's constructor then "
        "copies online -> target"
    )
    out["online_equals_formula_after_overwrite"] = ok
    return out
