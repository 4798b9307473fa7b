"""ppo: ClipPPOLoss (IndependentNormal actor, GAE 0.99/0.95) -- GAE in the loss, precomputed advantage."""

from cases import onpolicy

# name, precomputed advantage, TanhNormal actor, seed
SCENARIOS = [("gae_in_loss", False, False, None), ("precomputed_advantage", True, False, None)]


def generate():
    return onpolicy.generate("ppo", SCENARIOS)
