#pragma once
// The policies the deployment tests export: one of each kind the example trainers produce
// (DDPG/TD3's TanhModule actor, SAC's TanhNormal actor, PPO's state-independent-scale TanhNormal
// actor, DQN's QValueActor, PPO CartPole's Categorical and OneHotCategorical actors) and the
// options MLP supports (every activation, layer norm, an ObservationNorm folded in front, float64).
// Built from fixed seeds, so that two processes (the ONNX Runtime check) build the same ones.

#include <rlobj/deploy/program.h>
#include <rlobj/envs/transforms.h>
#include <rlobj/modules/actor.h>
#include <rlobj/modules/distributions.h>
#include <rlobj/modules/exploration_type.h>
#include <rlobj/modules/mlp.h>
#include <rlobj/modules/probabilistic.h>
#include <rlobj/modules/qvalue.h>
#include <rlobj/specs.h>

#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include <torch/torch.h>

namespace rlobj_test_deploy {

namespace rl = rlobj;
using rl::modules::Activation;
using rl::modules::MLP;
using rl::modules::MLPOptions;

struct PolicyCase {
  std::string name;
  std::shared_ptr<rl::modules::TensorDictModuleBase> actor;
  int64_t n_obs = 0;
  rl::deploy::LowerOptions lower;
  /// The C export takes it (no GELU, float32).
  bool c = true;
  torch::ScalarType dtype = torch::kFloat32;
};

inline MLP mlp(int64_t in, int64_t out, std::vector<int64_t> cells, Activation act, bool layer_norm = false) {
  return MLP(MLPOptions(in, out).num_cells(std::move(cells)).activation(act).layer_norm(layer_norm));
}

/// Every case, built the same way each time.
inline std::vector<PolicyCase> policy_cases() {
  namespace m = rl::modules;
  torch::manual_seed(2026);
  std::vector<PolicyCase> cases;
  const rl::Bounded box(-2.0, 2.0, {1});
  {  // DDPG / TD3 (examples/common/offpolicy.h): MLP -> param -> TanhModule into the action box
    auto actor = m::TensorDictSequential(m::TensorDictModule(mlp(3, 1, {64, 64}, Activation::ReLU), {"observation"}, {"param"}),
                                         m::TanhModule({"param"}, {"action"}, box));
    cases.push_back({"ddpg", actor.ptr(), 3, {}});
  }
  {  // SAC: MLP -> NormalParamExtractor -> TanhNormal (tanh_loc) within the box
    auto actor = m::ProbabilisticActor(
        m::TensorDictSequential(
            m::TensorDictModule(mlp(3, 2, {64, 64}, Activation::ReLU), {"observation"}, {"param"}),
            m::TensorDictModule(m::NormalParamExtractor(m::NormalParamExtractorOptions().scale_lb(0.1)), {"param"},
                                {"loc", "scale"})),
        m::TanhNormal::factory(m::TanhNormalOptions::from_spec(box).tanh_loc(true)));
    cases.push_back({"sac", actor.ptr(), 3, {}});
  }
  {  // PPO Pendulum: MLP -> loc, a state-independent scale, TanhNormal; log-probs returned
    auto actor = m::ProbabilisticActor(
        m::TensorDictSequential(m::TensorDictModule(mlp(3, 1, {64, 64}, Activation::Tanh), {"observation"}, {"loc"}),
                                m::TensorDictModule(m::AddStateIndependentNormalScale(1, 1e-8), {"loc"}, {"loc", "scale"})),
        m::TanhNormal::factory(m::TanhNormalOptions::from_spec(box)), m::ProbabilisticActorOptions().return_log_prob(true));
    cases.push_back({"ppo_pendulum", actor.ptr(), 3, {}});
  }
  {  // DQN CartPole: QValueActor, one-hot greedy action
    auto actor = m::QValueActor(mlp(4, 2, {120, 84}, Activation::ReLU));
    cases.push_back({"dqn", actor.ptr(), 4, {}});
  }
  {  // QValueActor with index actions
    auto actor = m::QValueActor(mlp(4, 3, {32}, Activation::Tanh), {"observation"}, m::ActionSpace::Categorical);
    cases.push_back({"qvalue_index", actor.ptr(), 4, {}});
  }
  {  // PPO CartPole: Categorical and OneHotCategorical over logits
    auto cat = m::ProbabilisticActor(m::TensorDictModule(mlp(4, 2, {64, 64}, Activation::Tanh), {"observation"}, {"logits"}),
                                     m::Categorical::factory(), m::ProbabilisticActorOptions().in_keys({"logits"}));
    cases.push_back({"ppo_cartpole_categorical", cat.ptr(), 4, {}});
    auto onehot = m::ProbabilisticActor(m::TensorDictModule(mlp(4, 3, {64, 64}, Activation::Tanh), {"observation"}, {"logits"}),
                                        m::OneHotCategorical::factory(), m::ProbabilisticActorOptions().in_keys({"logits"}));
    cases.push_back({"ppo_cartpole_one_hot", onehot.ptr(), 4, {}});
  }
  {  // ELU + layer norm, an IndependentNormal's mean, standard-normal ObservationNorm folded in
    auto actor = m::ProbabilisticActor(
        m::TensorDictSequential(
            m::TensorDictModule(mlp(5, 6, {32, 32}, Activation::ELU, /*layer_norm=*/true), {"observation"}, {"param"}),
            m::TensorDictModule(m::NormalParamExtractor(), {"param"}, {"loc", "scale"})),
        m::IndependentNormal::factory());
    auto norm = std::make_shared<rl::envs::ObservationNorm>(torch::linspace(-1, 1, 5), torch::linspace(0.5, 3, 5),
                                                            rl::envs::ObservationNormOptions().standard_normal(true));
    cases.push_back({"normal_elu_layernorm_obsnorm", actor.ptr(), 5, rl::deploy::LowerOptions().observation_norm(norm)});
  }
  {  // the other activations; an affine ObservationNorm (obs * scale + loc)
    auto norm = std::make_shared<rl::envs::ObservationNorm>(torch::full({4}, 0.25), torch::full({4}, 1.5));
    cases.push_back({"sigmoid_obsnorm", m::Actor(mlp(4, 2, {16, 16, 16}, Activation::Sigmoid)).ptr(), 4,
                     rl::deploy::LowerOptions().observation_norm(norm)});
    cases.push_back({"silu", m::Actor(mlp(4, 2, {16, 16}, Activation::SiLU)).ptr(), 4, {}});
    cases.push_back({"leaky_relu", m::Actor(MLP(MLPOptions(4, 2).num_cells({16, 16}).activation(Activation::LeakyReLU)
                                                    .negative_slope(0.2))).ptr(), 4, {}});
    cases.push_back({"gelu", m::Actor(mlp(4, 2, {16, 16}, Activation::GELU)).ptr(), 4, {}, /*c=*/false});
    // An activation on the action itself: its kernel's error is not hidden behind a Linear.
    cases.push_back({"elu_last", m::Actor(MLP(MLPOptions(4, 2).num_cells({16}).activation(Activation::ELU)
                                                  .activate_last_layer(true))).ptr(), 4, {}});
    cases.push_back({"sigmoid_last", m::Actor(MLP(MLPOptions(4, 2).num_cells({16}).activation(Activation::Sigmoid)
                                                      .activate_last_layer(true))).ptr(), 4, {}});
  }
  {  // a torch::nn::Sequential inside an Actor, no bias on the last layer
    torch::nn::Sequential seq(torch::nn::Linear(6, 32), torch::nn::Tanh(),
                              torch::nn::Linear(torch::nn::LinearOptions(32, 2).bias(false)));
    cases.push_back({"sequential", m::Actor(seq).ptr(), 6, {}});
  }
  {  // float64 (ONNX only)
    auto actor = m::TensorDictSequential(m::TensorDictModule(mlp(3, 1, {32, 32}, Activation::Tanh), {"observation"}, {"param"}),
                                         m::TanhModule({"param"}, {"action"}, box));
    actor->to(torch::kFloat64);
    cases.push_back({"float64", actor.ptr(), 3, {}, /*c=*/false, torch::kFloat64});
  }
  return cases;
}

/// Observations for `c`: `rows` draws of N(0, 2^2) (tanh and the bounds saturate sometimes).
inline torch::Tensor observations(const PolicyCase& c, int64_t rows, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  return (torch::randn({rows, c.n_obs}, gen, torch::kFloat64) * 2).to(c.dtype);
}

/// The actor's own deterministic action for raw observations (normalised first, as an
/// ObservationNorm in the environment would).
inline torch::Tensor actor_action(const PolicyCase& c, const torch::Tensor& obs) {
  const torch::Tensor x = c.lower.observation_norm() ? c.lower.observation_norm()->apply(obs) : obs;
  torch::NoGradGuard no_grad;
  rl::modules::SetExplorationType deterministic(rl::modules::ExplorationType::Deterministic);
  rl::TensorDict td({obs.size(0)});
  td.set("observation", x);
  return c.actor->forward(td).get("action");
}

inline rl::deploy::PolicyProgram lower(const PolicyCase& c) {
  return rl::deploy::lower_policy(*c.actor, observations(c, 4, 7), c.lower);
}

inline void write_bytes(const std::string& path, const torch::Tensor& t) {
  const torch::Tensor c = t.contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(static_cast<const char*>(c.data_ptr()), static_cast<std::streamsize>(c.numel() * c.element_size()));
  if (!out) throw std::runtime_error("cannot write " + path);
}

inline torch::Tensor read_bytes(const std::string& path, std::vector<int64_t> shape, torch::ScalarType dtype) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  torch::Tensor t = torch::empty(shape, dtype);
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(t.numel() * t.element_size()));
  if (in.gcount() != static_cast<std::streamsize>(t.numel() * t.element_size())) {
    throw std::runtime_error(path + " is shorter than expected");
  }
  return t;
}

/// Moves the first bias of the program's last Linear by `delta` (the mutation tests).
inline void mutate_last_bias(rl::deploy::PolicyProgram& p, double delta) {
  for (auto op = p.ops.rbegin(); op != p.ops.rend(); ++op) {
    if (op->kind == rl::deploy::OpKind::Linear && op->bias.defined()) {
      op->bias = op->bias.clone();
      op->bias[0] += delta;
      return;
    }
  }
  throw std::runtime_error("mutate_last_bias: no Linear with a bias");
}

/// The shape of the actions of `program` for `rows` observations.
inline std::vector<int64_t> action_shape(const rl::deploy::PolicyProgram& p, int64_t rows) {
  if (p.action().scalar) return {rows};
  return {rows, p.action().size};
}

}  // namespace rlobj_test_deploy
