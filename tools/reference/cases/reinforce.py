"""reinforce: ReinforceLoss -- as ppo, plus a TanhNormal actor (0.14.1 scores the batch's action)."""

from cases import onpolicy

# name, precomputed advantage, TanhNormal actor, seed
SCENARIOS = [
    ("gae_in_loss", False, False, None),
    ("precomputed_advantage", True, False, None),
    ("tanh_normal_mode", False, True, None),
]


def generate():
    return onpolicy.generate("reinforce", SCENARIOS)
