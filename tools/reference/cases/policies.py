"""The example trainers' policies built with TorchRL 0.14.1, saved with torch.save, and their
deterministic actions: what `tests/interop/torchrl_policies_test.cpp` loads into rlobj's policies
(strict, no renaming) and acts on.

Each policy is the TorchRL structure of one example trainer's actor (the same modules, keys and
options as `tests/deploy/policies.h`), its parameters PyTorch's default initialisation after
`torch.manual_seed(2027 + i)` for the i-th policy (varied actions; the .pt file keeps them), a
state-independent scale set to 0.3 * sin(1 + j) for feature j. Written per policy: `policy_<name>.pt` =
`torch.save(policy.state_dict())`; in policies_torchrl.json: the state dict's keys, shapes and
dtypes, the observations and the actions under `set_exploration_type(DETERMINISTIC)`.
"""

import os
from collections import OrderedDict

import torch
from tensordict.nn import AddStateIndependentNormalScale, NormalParamExtractor, TensorDictModule, TensorDictSequential
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded, Categorical as CategoricalSpec, OneHot
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import (MLP, OneHotCategorical, ProbabilisticActor, QValueActor,
                             TanhModule, TanhNormal)

import common as C

ROWS = 24


def fill(module):
    """A state-independent scale away from its initial zeros (the rest keeps its seeded init)."""
    import math

    with torch.no_grad():
        for name, t in module.named_parameters():
            if name.endswith("state_independent_scale"):
                t.copy_(torch.tensor([0.3 * math.sin(1 + j) for j in range(t.numel())]).reshape(t.shape))


def observations(n_obs):
    """obs[i, j] = float32(2.5 * sin(0.37 * i * (j + 1) + 0.5 * j + 0.3)): tanh and the bounds saturate sometimes."""
    import math

    return torch.tensor([[2.5 * math.sin(0.37 * i * (j + 1) + 0.5 * j + 0.3) for j in range(n_obs)] for i in range(ROWS)],
                        dtype=torch.float32)


def policies():
    """name -> (a function building the policy, observation size); each built after its own seed."""
    box = Bounded(-2.0, 2.0, (1,))
    out = OrderedDict()
    # DDPG / TD3 (examples/common/offpolicy.h): MLP -> param -> TanhModule into the action box
    out["ddpg"] = (lambda: TensorDictSequential(
        TensorDictModule(MLP(in_features=3, out_features=1, num_cells=[64, 64], activation_class=nn.ReLU),
                         in_keys=["observation"], out_keys=["param"]),
        TanhModule(in_keys=["param"], out_keys=["action"], spec=box)), 3)
    # SAC: MLP -> NormalParamExtractor -> TanhNormal (tanh_loc) within the box
    out["sac"] = (lambda: ProbabilisticActor(
        TensorDictSequential(
            TensorDictModule(MLP(in_features=3, out_features=2, num_cells=[64, 64], activation_class=nn.ReLU),
                             in_keys=["observation"], out_keys=["param"]),
            TensorDictModule(NormalParamExtractor(scale_lb=0.1), in_keys=["param"], out_keys=["loc", "scale"])),
        in_keys=["loc", "scale"], spec=box, distribution_class=TanhNormal,
        distribution_kwargs={"low": -2.0, "high": 2.0, "tanh_loc": True}), 3)
    # PPO Pendulum: MLP -> loc, a state-independent scale, TanhNormal; log-probs returned
    out["ppo_pendulum"] = (lambda: ProbabilisticActor(
        TensorDictSequential(
            TensorDictModule(MLP(in_features=3, out_features=1, num_cells=[64, 64], activation_class=nn.Tanh),
                             in_keys=["observation"], out_keys=["loc"]),
            TensorDictModule(AddStateIndependentNormalScale(1, scale_lb=1e-8), in_keys=["loc"],
                             out_keys=["loc", "scale"])),
        in_keys=["loc", "scale"], spec=box, distribution_class=TanhNormal,
        distribution_kwargs={"low": -2.0, "high": 2.0}, return_log_prob=True), 3)
    # DQN CartPole: QValueActor, one-hot greedy action
    out["dqn"] = (lambda: QValueActor(MLP(in_features=4, out_features=2, num_cells=[120, 84], activation_class=nn.ReLU),
                              in_keys=["observation"], spec=OneHot(2)), 4)
    # QValueActor with index actions
    out["qvalue_index"] = (lambda: QValueActor(MLP(in_features=4, out_features=3, num_cells=[32], activation_class=nn.Tanh),
                                       in_keys=["observation"], spec=CategoricalSpec(3)), 4)
    # PPO CartPole: Categorical and OneHotCategorical over logits
    out["ppo_cartpole_categorical"] = (lambda: ProbabilisticActor(
        TensorDictModule(MLP(in_features=4, out_features=2, num_cells=[64, 64], activation_class=nn.Tanh),
                         in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"], distribution_class=torch.distributions.Categorical), 4)
    out["ppo_cartpole_one_hot"] = (lambda: ProbabilisticActor(
        TensorDictModule(MLP(in_features=4, out_features=3, num_cells=[64, 64], activation_class=nn.Tanh),
                         in_keys=["observation"], out_keys=["logits"]),
        in_keys=["logits"], distribution_class=OneHotCategorical), 4)
    return out


def act(policy, obs):
    with torch.no_grad(), set_exploration_type(ExplorationType.DETERMINISTIC):
        td = policy(TensorDict({"observation": obs}, batch_size=[obs.shape[0]]))
    return td.get("action")


def generate(out_dir):
    meta = C.base_meta("policies")
    meta["description"] = " ".join(__doc__.split())
    meta["observation_formula"] = "obs[i, j] = float32(2.5 * sin(0.37 * i * (j + 1) + 0.5 * j + 0.3)), i < 24"
    data = OrderedDict([("meta", meta)])
    cases = OrderedDict()
    for i, (name, (build, n_obs)) in enumerate(policies().items()):
        torch.manual_seed(2027 + i)
        policy = build()
        fill(policy)
        sd = policy.state_dict()
        file = f"policy_{name}.pt"
        torch.save(sd, os.path.join(out_dir, file))
        obs = observations(n_obs)
        case = OrderedDict()
        case["file"] = file
        case["keys"] = [OrderedDict([("name", k), ("shape", list(v.shape)), ("dtype", C._dtype_name(v))])
                        for k, v in sd.items()]
        case["observation"] = C.rec(obs)
        case["action"] = C.rec(act(policy, obs))
        cases[name] = case
    data["policies"] = cases
    return data
