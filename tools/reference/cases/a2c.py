"""a2c: A2CLoss -- as ppo, plus a TanhNormal actor whose Monte-Carlo entropy draw is seeded (41 + it)."""

from cases import onpolicy

# name, precomputed advantage, TanhNormal actor, seed
SCENARIOS = [
    ("gae_in_loss", False, False, None),
    ("precomputed_advantage", True, False, None),
    ("tanh_normal_mc_entropy_seeded", False, True, 41),
]


def generate():
    return onpolicy.generate("a2c", SCENARIOS)
