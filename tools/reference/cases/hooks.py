"""Records what TorchRL's TanhNormal does inside a loss's forward, by wrapping (never replacing)
its methods: the inputs it was built from, the pre-tanh draw, the action and the log-prob."""

import contextlib
from collections import OrderedDict

import torch
from torchrl.modules import TanhNormal

import common as C


class TanhNormalHooks(contextlib.AbstractContextManager):
    def __init__(self):
        self.records = []

    def __enter__(self):
        self._saved = {k: TanhNormal.__dict__.get(k) for k in ("rsample_and_log_prob", "log_prob")}
        self._rsl = TanhNormal.rsample_and_log_prob
        self._lp = TanhNormal.log_prob
        hooks = self
        orig_rsl, orig_lp = self._rsl, self._lp

        def rsample_and_log_prob(dist, sample_shape=()):
            pre = []
            base = dist.base_dist
            orig_rs = base.rsample

            def rs(*a, **k):
                x = orig_rs(*a, **k)
                pre.append(x.detach().clone())
                return x

            base.rsample = rs
            try:
                action, log_prob = orig_rsl(dist, sample_shape)
            finally:
                del base.rsample
            C.EVENTS.append("tanh_normal_rsample_and_log_prob")
            hooks.records.append(
                OrderedDict(
                    kind="rsample_and_log_prob",
                    loc=dist.loc.detach().clone(),
                    scale=dist.scale.detach().clone(),
                    base_loc=dist.root_dist.loc.detach().clone(),
                    pre_tanh=pre[0] if pre else None,
                    action=action.detach().clone(),
                    log_prob=log_prob.detach().clone(),
                )
            )
            return action, log_prob

        def log_prob(dist, value, *a, **k):
            out = orig_lp(dist, value, *a, **k)
            C.EVENTS.append("tanh_normal_log_prob")
            hooks.records.append(
                OrderedDict(kind="log_prob", loc=dist.loc.detach().clone(), scale=dist.scale.detach().clone(),
                            value=value.detach().clone(), log_prob=out.detach().clone())
            )
            return out

        TanhNormal.rsample_and_log_prob = rsample_and_log_prob
        TanhNormal.log_prob = log_prob
        return self

    def __exit__(self, *exc):
        for k, v in self._saved.items():
            if v is None:
                delattr(TanhNormal, k)
            else:
                setattr(TanhNormal, k, v)
        return False
