#include <rlobj/engine/actor_critic.h>
#include <rlobj/objectives/ddpg.h>
#include <rlobj/objectives/sac.h>
#include <rlobj/objectives/td3.h>
#include <rlobj/trainers/update.h>

#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "objectives/parity.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_engine_actor_critic_test {

using Catch::Matchers::Contains;
using rlobj::NestedKey;
using rlobj::TensorDict;
using rlobj::engine::ActorCriticEngine;
using rlobj::modules::Activation;
using rlobj::modules::MLP;
using rlobj::modules::MLPOptions;
using rlobj::trainers::ActorCriticUpdate;
using rlobj::trainers::ActorCriticUpdateOptions;
using rlobj::trainers::UpdateEngine;
namespace obj = rlobj::objectives;
namespace mod = rlobj::modules;

namespace {

/// A network configuration the reference files do not cover.
struct Config {
  std::string name;
  bool td3 = false;
  bool sac = false;            ///< SAC: a TanhNormal actor, critics_count critics, a temperature
  int64_t critics = 2;         ///< SAC's num_qvalue_nets
  double bound = 2.0;          ///< the action spec's bounds: [-bound, bound]
  bool fixed_alpha = false;    ///< SAC's fixed_alpha (no temperature optimizer)
  bool tanh_loc = false;       ///< SAC's TanhNormal squashes its location (tanh_loc)
  std::optional<double> min_alpha = std::nullopt, max_alpha = std::nullopt;  ///< SAC's temperature bounds
  std::vector<int64_t> cells = {64, 64};
  Activation activation = Activation::ReLU;
  bool tanh_module = true;     ///< the actor squashed by a TanhModule (else a plain Actor)
  bool fast_tanh = false;      ///< MLPOptions::fast_tanh
  bool action_first = false;   ///< the critic reads {"action", "observation"}
  obj::LossFunction loss_function = obj::LossFunction::L2;
  int64_t batch = 256;
  int64_t policy_delay = 1;
  bool critic_first = false;
  double weight_decay = 0;
  int64_t obs = 3, act = 1;
};

/// TD3 whose smoothing normals come from a function (the same draws, row-permuted, in the
/// tolerance run).
class NoiseTD3 : public obj::TD3LossImpl<mod::TensorDictSequential, mod::ValueOperator> {
 public:
  using obj::TD3LossImpl<mod::TensorDictSequential, mod::ValueOperator>::TD3LossImpl;
  std::function<torch::Tensor(const torch::Tensor&)> normals;

 protected:
  torch::Tensor standard_normal_like(const torch::Tensor& action) override { return normals(action); }
};
using TD3 = obj::TD3Loss<mod::TensorDictSequential, mod::ValueOperator>;

/// SAC whose standard normals come from a function (the same draws, row-permuted, in the
/// tolerance run; the fused engine refuses a derived class, so this one runs op by op).
class NormalsSAC : public obj::SACLossImpl<> {
 public:
  using obj::SACLossImpl<>::SACLossImpl;
  std::function<torch::Tensor()> normals;

 protected:
  torch::Tensor draw_action(const mod::Distribution& dist) override {
    const auto& tanh_normal = dynamic_cast<const mod::TanhNormal&>(dist);
    return tanh_normal.rsample_with(normals());
  }
};
using DDPG = obj::DDPGLoss<mod::TensorDictSequential, mod::ValueOperator>;

/// A batch from a generator of its own (the default generator's draws run on from update to
/// update, so a draw skipped or added shows in the next ones).
TensorDict random_batch(const Config& c, int64_t seed, bool with_reward = true) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  TensorDict b({c.batch});
  b.set("observation", torch::randn({c.batch, c.obs}, gen));
  b.set("action", torch::rand({c.batch, c.act}, gen) * 4 - 2);
  b.set(NestedKey({"next", "observation"}), torch::randn({c.batch, c.obs}, gen));
  if (with_reward) b.set(NestedKey({"next", "reward"}), torch::randn({c.batch, 1}, gen));
  b.set(NestedKey({"next", "done"}), torch::rand({c.batch, 1}, gen) < 0.1);
  b.set(NestedKey({"next", "terminated"}), torch::rand({c.batch, 1}, gen) < 0.05);
  return b;
}

/// The bounds of the small networks' action.
rlobj::Bounded small_spec() { return rlobj::Bounded(-2.0, 2.0, {1}); }

/// A small actor (a ReLU MLP 3 -> cells -> 1 squashed into `small_spec` by a TanhModule) and
/// critic (4 -> cells -> 1), for the tests of the engine's bookkeeping.
std::pair<mod::TensorDictSequential, mod::ValueOperator> small_networks(const std::vector<int64_t>& cells = {8}) {
  auto actor = mod::TensorDictSequential(
      mod::TensorDictModule(MLP(MLPOptions(3, 1).num_cells(cells).activation(Activation::ReLU)), {"observation"},
                            {"param"}),
      mod::TanhModule({"param"}, {"action"}, small_spec()));
  auto critic =
      mod::ValueOperator(MLP(MLPOptions(4, 1).num_cells(cells).activation(Activation::ReLU)), {"observation", "action"});
  return {actor, critic};
}

/// An Adam (LibTorch's defaults) over `loss`'s group `network`.
template <typename Loss>
std::shared_ptr<torch::optim::Adam> adam_of(Loss& loss, const std::string& network) {
  return std::make_shared<torch::optim::Adam>(loss->parameters_of(network));
}

/// The parameters (online and target) after `updates` updates of configuration `c` on the
/// path `engine`, with the rows of every batch (and TD3's normals) permuted by `perm` (empty:
/// none).
std::vector<torch::Tensor> train(const Config& c, UpdateEngine engine, int64_t updates, const torch::Tensor& perm,
                                 std::string* path = nullptr) {
  torch::manual_seed(7);
  rlobj::Bounded spec(-c.bound, c.bound, {c.act});
  auto actor_mlp = MLP(MLPOptions(c.obs, c.act).num_cells(c.cells).activation(c.activation).fast_tanh(c.fast_tanh));
  mod::TensorDictSequential actor(nullptr);
  if (c.tanh_module) {
    actor = mod::TensorDictSequential(mod::TensorDictModule(actor_mlp, {"observation"}, {"param"}),
                                      mod::TanhModule({"param"}, {"action"}, spec));
  } else {
    actor = mod::TensorDictSequential(mod::Actor(actor_mlp));
  }
  const std::vector<NestedKey> critic_keys =
      c.action_first ? std::vector<NestedKey>{"action", "observation"} : std::vector<NestedKey>{"observation", "action"};
  auto critic = mod::ValueOperator(
      MLP(MLPOptions(c.obs + c.act, 1).num_cells(c.cells).activation(c.activation).fast_tanh(c.fast_tanh)),
      critic_keys);
  auto adam = [&](std::vector<torch::Tensor> p) {
    return std::make_shared<torch::optim::Adam>(std::move(p), torch::optim::AdamOptions(1e-3).weight_decay(c.weight_decay));
  };
  std::deque<torch::Tensor> normals;
  for (int64_t i = 0; i < updates; ++i) normals.push_back(torch::randn({c.batch, c.act}));
  const auto rows = [&](const torch::Tensor& t) { return perm.defined() ? t.index_select(0, perm) : t; };
  // SAC's two draws per update, in the permuted run: what the generator gives right after the
  // batch, rows permuted.
  std::deque<torch::Tensor> sac_normals;
  auto run = [&](auto loss, const std::string& critic_group, const std::string& critic_loss) {
    auto updater = std::make_shared<obj::SoftUpdate>(loss, obj::SoftUpdateOptions().tau(0.05));
    std::shared_ptr<torch::optim::Optimizer> optim_alpha;
    if (c.sac && !c.fixed_alpha) optim_alpha = adam(loss->parameters_of("log_alpha"));
    ActorCriticUpdate<decltype(loss)> update(
        loss, critic_loss, adam(loss->parameters_of("actor_network")), adam(loss->parameters_of(critic_group)),
        optim_alpha, updater,
        ActorCriticUpdateOptions().policy_delay(c.policy_delay).critic_first(c.critic_first).engine(engine));
    if (path != nullptr) *path = update.path();
    for (int64_t i = 0; i < updates; ++i) {
      TensorDict b = random_batch(c, 100 + i);
      if (perm.defined()) {
        b = b.index({perm});
        if (c.sac) {
          for (int draw = 0; draw < 2; ++draw) sac_normals.push_back(rows(torch::empty({c.batch, c.act}).normal_()));
        }
      }
      update(b);
    }
    std::vector<torch::Tensor> out;
    for (const auto& p : loss->parameters()) out.push_back(p.detach().clone());
    for (const auto& b : loss->buffers()) {
      if (b.is_floating_point()) out.push_back(b.detach().clone());
    }
    return out;
  };
  if (c.sac) {
    auto sac_actor_mlp =
        MLP(MLPOptions(c.obs, 2 * c.act).num_cells(c.cells).activation(c.activation).fast_tanh(c.fast_tanh));
    mod::ProbabilisticActor sac_actor(
        mod::TensorDictSequential(
            mod::TensorDictModule(sac_actor_mlp, {"observation"}, {"param"}),
            mod::TensorDictModule(mod::NormalParamExtractor(mod::NormalParamExtractorOptions().scale_lb(0.1)),
                                  {"param"}, {"loc", "scale"})),
        mod::TanhNormal::factory(mod::TanhNormalOptions::from_spec(spec).tanh_loc(c.tanh_loc).upscale(3.0)));
    const auto options = obj::SACLossOptions()
                             .num_qvalue_nets(c.critics)
                             .loss_function(c.loss_function)
                             .fixed_alpha(c.fixed_alpha)
                             .alpha_init(0.7)
                             .min_alpha(c.min_alpha)
                             .max_alpha(c.max_alpha);
    if (!perm.defined()) return run(obj::SACLoss(sac_actor, critic, spec, options), "qvalue_network", "loss_qvalue");
    auto impl = std::make_shared<NormalsSAC>(sac_actor, critic, spec, options);
    impl->normals = [&]() {
      REQUIRE_FALSE(sac_normals.empty());
      torch::Tensor n = sac_normals.front();
      sac_normals.pop_front();
      return n;
    };
    return run(obj::SACLoss<>(impl), "qvalue_network", "loss_qvalue");
  }
  if (c.td3) {
    auto impl = std::make_shared<NoiseTD3>(actor, critic, spec,
                                           obj::TD3LossOptions().loss_function(c.loss_function));
    impl->normals = [&](const torch::Tensor& action) {
      REQUIRE_FALSE(normals.empty());
      torch::Tensor n = rows(normals.front());
      normals.pop_front();
      REQUIRE(n.sizes() == action.sizes());
      return n;
    };
    return run(TD3(impl), "qvalue_network", "loss_qvalue");
  }
  return run(DDPG(actor, critic, obj::DDPGLossOptions().loss_function(c.loss_function)), "value_network",
             "loss_value");
}

}  // namespace

TEST_CASE("The fused engine gives the op-by-op numbers where the references do not reach", "[engine][parity]") {
  Config relu{"DDPG, ReLU 64-64, TanhModule, batch 256"};
  Config tanh{"DDPG, Tanh 32-32, plain actor, batch 100, action-first critic, smooth L1"};
  tanh.activation = Activation::Tanh;
  tanh.cells = {32, 32};
  tanh.tanh_module = false;
  tanh.batch = 100;
  tanh.action_first = true;
  tanh.loss_function = obj::LossFunction::SmoothL1;
  Config fast = tanh;
  fast.name = "DDPG, fast tanh, L1, weight decay, three layers";
  fast.fast_tanh = true;
  fast.loss_function = obj::LossFunction::L1;
  fast.weight_decay = 1e-2;
  fast.cells = {16, 24, 8};
  Config td3{"TD3, twin critics, policy delay 2, critic first (TorchRL's TD3 example)"};
  td3.td3 = true;
  td3.policy_delay = 2;
  td3.critic_first = true;
  td3.batch = 100;
  Config td3_joint = td3;
  td3_joint.name = "TD3, one forward for both losses, two actions";
  td3_joint.critic_first = false;
  td3_joint.policy_delay = 1;
  td3_joint.act = 2;
  td3_joint.obs = 5;
  Config sac{"SAC, twin critics, TanhNormal in [-2, 2], ReLU 64-64, batch 256 (TorchRL's SAC example)"};
  sac.sac = true;
  Config sac_delay{"SAC, three critics, two actions in [-1, 1], tanh_loc, Tanh 32-32, smooth L1, policy delay 2, "
                   "alpha bounds"};
  sac_delay.sac = true;
  sac_delay.tanh_loc = true;
  sac_delay.critics = 3;
  sac_delay.act = 2;
  sac_delay.obs = 4;
  sac_delay.bound = 1.0;
  sac_delay.activation = Activation::Tanh;
  sac_delay.cells = {32, 32};
  sac_delay.loss_function = obj::LossFunction::SmoothL1;
  sac_delay.policy_delay = 2;
  sac_delay.batch = 100;
  sac_delay.min_alpha = 0.69;
  sac_delay.max_alpha = 0.9;
  Config sac_fixed{"SAC, fixed alpha, one critic, tanh_loc in [-2, 2], L1, weight decay"};
  sac_fixed.sac = true;
  sac_fixed.tanh_loc = true;
  sac_fixed.fixed_alpha = true;
  sac_fixed.critics = 1;
  sac_fixed.loss_function = obj::LossFunction::L1;
  sac_fixed.weight_decay = 1e-2;
  sac_fixed.batch = 64;
  for (const auto& c : {relu, tanh, fast, td3, td3_joint, sac, sac_delay, sac_fixed}) {
    DYNAMIC_SECTION(c.name) {
      const int64_t updates = 6;
      std::string fused_path, op_path;
      const auto fused = train(c, UpdateEngine::Fused, updates, {}, &fused_path);
      const auto op = train(c, UpdateEngine::OpByOp, updates, {}, &op_path);
      CHECK(fused_path == "fused");
      CHECK(op_path == "op-by-op");
      // The tolerance: how far reordering the rows (every reduction over the batch) moves the
      // op-by-op numbers, as the parity suite derives it.
      torch::manual_seed(99);
      const auto permuted = train(c, UpdateEngine::OpByOp, updates, torch::randperm(c.batch));
      REQUIRE(fused.size() == op.size());
      double worst = 0;
      for (size_t i = 0; i < op.size(); ++i) {
        const double spread = (permuted[i] - op[i]).abs().max().item<double>();
        const double scale = op[i].abs().max().item<double>();
        const double tol = rlobj_test::parity::kSafety * spread + rlobj_test::parity::kUlpFloor * rlobj_test::parity::ulp32(scale);
        const double err = (fused[i] - op[i]).abs().max().item<double>();
        INFO("tensor " << i << ": |fused - op-by-op| " << err << ", tolerance " << tol);
        CHECK(err <= tol);
        worst = std::max(worst, err / tol);
      }
      // The updates moved the parameters (the comparison is not of the initial weights).
      const auto initial = train(c, UpdateEngine::OpByOp, 0, {});
      double moved = 0;
      for (size_t i = 0; i < op.size(); ++i) moved = std::max(moved, (op[i] - initial[i]).abs().max().item<double>());
      CHECK(moved > 1e-3);
      INFO("worst |fused - op-by-op| / tolerance " << worst);
      CHECK(worst < 1);
    }
  }
}

TEST_CASE("The fused engine says why it does not compute a loss, and ActorCriticUpdate falls back", "[engine]") {
  rlobj::Bounded spec(-2.0, 2.0, {1});
  auto actor_of = [&](MLPOptions o) {
    return mod::TensorDictSequential(mod::TensorDictModule(MLP(o), {"observation"}, {"param"}),
                                     mod::TanhModule({"param"}, {"action"}, spec));
  };
  auto critic_of = [](MLPOptions o) { return mod::ValueOperator(MLP(o), {"observation", "action"}); };
  const auto actor_options = MLPOptions(3, 1).num_cells({8}).activation(Activation::ReLU);
  const auto critic_options = MLPOptions(4, 1).num_cells({8}).activation(Activation::ReLU);
  auto adam = [](std::vector<torch::Tensor> p) { return std::make_shared<torch::optim::Adam>(std::move(p)); };
  auto why_not = [&](auto loss, std::shared_ptr<torch::optim::Optimizer> oa = nullptr,
                     std::shared_ptr<torch::optim::Optimizer> oc = nullptr) {
    if (!oa) oa = adam(loss->parameters_of("actor_network"));
    if (!oc) oc = adam(loss->parameters_of("value_network"));
    auto updater = std::make_shared<obj::SoftUpdate>(loss, obj::SoftUpdateOptions().tau(0.05));
    std::string why;
    auto engine = ActorCriticEngine::make(loss, oa, oc, nullptr, updater, &why);
    CHECK(engine == nullptr);
    // ActorCriticUpdate: Auto falls back and says why; Fused refuses with the reason.
    ActorCriticUpdate<decltype(loss)> automatic(loss, "loss_value", oa, oc, nullptr, updater);
    CHECK(std::string(automatic.path()) == "op-by-op");
    CHECK(automatic.reason() == why);
    CHECK_THROWS_WITH((ActorCriticUpdate<decltype(loss)>(loss, "loss_value", oa, oc, nullptr, updater,
                                                         ActorCriticUpdateOptions().engine(UpdateEngine::Fused))),
                      Contains("UpdateEngine::Fused") && Contains(why));
    return why;
  };
  SECTION("applies: DDPG over rlobj MLPs, Adam, float32") {
    auto loss = obj::DDPGLoss(actor_of(actor_options), critic_of(critic_options));
    auto oa = adam(loss->parameters_of("actor_network")), oc = adam(loss->parameters_of("value_network"));
    auto updater = std::make_shared<obj::SoftUpdate>(loss, obj::SoftUpdateOptions().tau(0.05));
    std::string why;
    CHECK(ActorCriticEngine::make(loss, oa, oc, nullptr, updater, &why) != nullptr);
    ActorCriticUpdate<decltype(loss)> update(loss, "loss_value", oa, oc, nullptr, updater);
    CHECK(std::string(update.path()) == "fused");
    CHECK(update.reason().empty());
    ActorCriticUpdate<decltype(loss)> asked(loss, "loss_value", oa, oc, nullptr, updater,
                                            ActorCriticUpdateOptions().engine(UpdateEngine::OpByOp));
    CHECK(std::string(asked.path()) == "op-by-op");
    CHECK_THAT(asked.reason(), Contains("OpByOp"));
  }
  SECTION("another optimizer") {
    auto loss = obj::DDPGLoss(actor_of(actor_options), critic_of(critic_options));
    auto sgd = std::make_shared<torch::optim::SGD>(loss->parameters_of("actor_network"), torch::optim::SGDOptions(0.1));
    CHECK_THAT(why_not(loss, sgd), Contains("torch::optim::Adam"));
  }
  SECTION("amsgrad") {
    auto loss = obj::DDPGLoss(actor_of(actor_options), critic_of(critic_options));
    auto ams = std::make_shared<torch::optim::Adam>(loss->parameters_of("actor_network"),
                                                    torch::optim::AdamOptions().amsgrad(true));
    CHECK_THAT(why_not(loss, ams), Contains("amsgrad"));
  }
  SECTION("an optimizer over other tensors") {
    auto loss = obj::DDPGLoss(actor_of(actor_options), critic_of(critic_options));
    auto other = adam({torch::zeros({3}, torch::requires_grad())});
    CHECK_THAT(why_not(loss, other), Contains("other than the loss's"));
  }
  SECTION("a sum reduction") {
    auto loss = obj::DDPGLoss(actor_of(actor_options), critic_of(critic_options),
                              obj::DDPGLossOptions().reduction(obj::Reduction::Sum));
    CHECK_THAT(why_not(loss), Contains("reduction"));
  }
  SECTION("another value estimator") {
    auto loss = obj::DDPGLoss(actor_of(actor_options), critic_of(critic_options));
    loss->make_value_estimator(obj::ValueEstimators::TD1);
    CHECK_THAT(why_not(loss), Contains("TD0"));
  }
  SECTION("dropout, layer norm, an activation the engine does not run") {
    CHECK_THAT(why_not(obj::DDPGLoss(actor_of(MLPOptions(actor_options).dropout(0.1)), critic_of(critic_options))),
               Contains("dropout"));
    CHECK_THAT(why_not(obj::DDPGLoss(actor_of(actor_options), critic_of(MLPOptions(critic_options).layer_norm(true)))),
               Contains("layer norm"));
    CHECK_THAT(why_not(obj::DDPGLoss(actor_of(MLPOptions(actor_options).activation(Activation::ELU)),
                                     critic_of(critic_options))),
               Contains("ELU") || Contains("elu"));
  }
  SECTION("float64") {
    auto actor = actor_of(actor_options);
    auto critic = critic_of(critic_options);
    actor->to(torch::kFloat64);
    critic->to(torch::kFloat64);
    CHECK_THAT(why_not(obj::DDPGLoss(actor, critic)), Contains("float32"));
  }
  SECTION("a frozen parameter") {
    auto mlp = MLP(actor_options);
    mlp->linears()[0]->weight.requires_grad_(false);
    auto actor = mod::TensorDictSequential(mod::TensorDictModule(mlp, {"observation"}, {"param"}),
                                           mod::TanhModule({"param"}, {"action"}, spec));
    CHECK_THAT(why_not(obj::DDPGLoss(actor, critic_of(critic_options))), Contains("frozen"));
  }
  SECTION("a network that is not an rlobj MLP") {
    auto seq = torch::nn::Sequential(torch::nn::Linear(3, 8), torch::nn::ReLU(), torch::nn::Linear(8, 1));
    auto actor = mod::TensorDictSequential(mod::TensorDictModule(seq, {"observation"}, {"param"}),
                                           mod::TanhModule({"param"}, {"action"}, spec));
    CHECK_THAT(why_not(obj::DDPGLoss(actor, critic_of(critic_options))), Contains("not an rlobj MLP"));
  }
  SECTION("SAC: its temperature, its distribution, a derived class") {
    const auto sac_actor = [&](mod::DistributionFactory factory) {
      return mod::ProbabilisticActor(
          mod::TensorDictSequential(mod::TensorDictModule(MLP(MLPOptions(3, 2).num_cells({8})), {"observation"}, {"param"}),
                                    mod::TensorDictModule(mod::NormalParamExtractor(), {"param"}, {"loc", "scale"})),
          std::move(factory));
    };
    const auto tanh_normal = mod::TanhNormal::factory(mod::TanhNormalOptions::from_spec(spec));
    const auto path_of = [&](auto loss, bool with_alpha_optimizer) {
      auto updater = std::make_shared<obj::SoftUpdate>(loss, obj::SoftUpdateOptions().tau(0.05));
      std::shared_ptr<torch::optim::Optimizer> optim_alpha;
      if (with_alpha_optimizer) optim_alpha = adam(loss->parameters_of("log_alpha"));
      ActorCriticUpdate<decltype(loss)> update(loss, "loss_qvalue", adam(loss->parameters_of("actor_network")),
                                               adam(loss->parameters_of("qvalue_network")), optim_alpha, updater);
      return std::string(update.path()) + ": " + update.reason();
    };
    CHECK(path_of(obj::SACLoss(sac_actor(tanh_normal), critic_of(critic_options), spec), true) == "fused: ");
    CHECK(path_of(obj::SACLoss(sac_actor(tanh_normal), critic_of(critic_options), spec,
                               obj::SACLossOptions().fixed_alpha(true)),
                  false) == "fused: ");
    CHECK_THAT(path_of(obj::SACLoss(sac_actor(tanh_normal), critic_of(critic_options), spec), false),
               Contains("op-by-op") && Contains("without a temperature optimizer"));
    CHECK_THAT(path_of(obj::SACLoss(sac_actor(mod::TanhNormal::factory(mod::TanhNormalOptions::from_spec(spec).event_dims(2))),
                                    critic_of(critic_options), spec),
                       true),
               Contains("event_dims"));
    CHECK_THAT(path_of(obj::SACLoss(sac_actor(mod::IndependentNormal::factory()), critic_of(critic_options), spec), true),
               Contains("other than TanhNormal"));
    auto derived = std::make_shared<NormalsSAC>(sac_actor(tanh_normal), critic_of(critic_options), spec);
    CHECK_THAT(path_of(obj::SACLoss<>(derived), true), Contains("derived from SACLoss"));
    // DDPG with a temperature optimizer: nothing for it to train.
    auto loss = obj::DDPGLoss(actor_of(actor_options), critic_of(critic_options));
    std::string why;
    CHECK(ActorCriticEngine::make(loss, adam(loss->parameters_of("actor_network")), adam(loss->parameters_of("value_network")),
                                  adam({torch::zeros({1}, torch::requires_grad())}), nullptr, &why) == nullptr);
    CHECK_THAT(why, Contains("temperature optimizer for a loss without a temperature"));
  }
  SECTION("one optimizer for actor and critic is refused by ActorCriticUpdate") {
    auto loss = obj::DDPGLoss(actor_of(actor_options), critic_of(critic_options));
    auto both = adam(loss->parameters());
    auto updater = std::make_shared<obj::SoftUpdate>(loss, obj::SoftUpdateOptions().tau(0.05));
    CHECK_THROWS_WITH((ActorCriticUpdate<decltype(loss)>(loss, "loss_value", both, both, nullptr, updater)),
                      Contains("optimizers of their own"));
  }
}

TEST_CASE("The fused engine refuses bad batches as the loss does, before changing anything", "[engine]") {
  torch::manual_seed(3);
  auto [actor, critic] = small_networks();
  auto loss = obj::TD3Loss(actor, critic, small_spec());
  auto oa = adam_of(loss, "actor_network");
  auto oc = adam_of(loss, "qvalue_network");
  auto updater = std::make_shared<obj::SoftUpdate>(loss, obj::SoftUpdateOptions().tau(0.05));
  ActorCriticUpdate<decltype(loss)> update(loss, "loss_qvalue", oa, oc, nullptr, updater,
                                           ActorCriticUpdateOptions().engine(UpdateEngine::Fused));
  Config c;
  c.batch = 16;
  std::vector<torch::Tensor> before;
  for (const auto& p : loss->parameters()) before.push_back(p.detach().clone());
  for (const auto& b : loss->buffers()) before.push_back(b.detach().clone());
  auto unchanged = [&] {
    std::vector<torch::Tensor> now;
    for (const auto& p : loss->parameters()) now.push_back(p.detach());
    for (const auto& b : loss->buffers()) now.push_back(b.detach());
    for (size_t i = 0; i < now.size(); ++i) CHECK(torch::equal(now[i], before[i]));
    CHECK(oa->state().empty());
    CHECK(oc->state().empty());
  };
  auto message_of = [](const std::function<void()>& f) {
    try {
      f();
    } catch (const c10::Error& e) {
      return std::string(e.what_without_backtrace());
    }
    return std::string("no error");
  };
  SECTION("a missing key") {
    TensorDict b = random_batch(c, 1, /*with_reward=*/false);
    const std::string fused = message_of([&] { update(b); });
    CHECK_THAT(fused, Contains("reward"));
    CHECK(fused == message_of([&] { loss(b); }));
    unchanged();
  }
  SECTION("a wrong shape or dtype") {
    TensorDict b = random_batch(c, 1);
    b.set("observation", torch::randn({16, 4}));
    CHECK_THROWS_WITH(update(b), Contains("\"observation\" of shape [16, 4]") && Contains("the engine reads [16, 3]"));
    CHECK_THROWS(loss(b));  // the op-by-op path refuses it too (in the first product)
    unchanged();
    TensorDict t = random_batch(c, 1);
    t.set(NestedKey({"next", "reward"}), torch::randn({16, 1}, torch::kFloat64));
    const std::string fused = message_of([&] { update(t); });
    CHECK(fused != "no error");
    CHECK(fused == message_of([&] { loss(t); }));  // the loss's own dtype check comes first
    unchanged();
  }
  SECTION("a batch with two batch dims") {
    TensorDict b = random_batch(c, 1).reshape({4, 4});
    CHECK_THROWS_WITH(update(b), Contains("UpdateEngine::Fused") && Contains("2 batch dims"));
    unchanged();
  }
}

TEST_CASE("What changes after the engine is made is seen at the next update", "[engine]") {
  // A DDPG update (no random draw) on fresh networks for each section.
  torch::manual_seed(11);
  auto [actor, critic] = small_networks();
  auto loss = obj::DDPGLoss(actor, critic);
  auto oa = adam_of(loss, "actor_network");
  auto oc = adam_of(loss, "value_network");
  auto updater = std::make_shared<obj::SoftUpdate>(loss, obj::SoftUpdateOptions().tau(0.05));
  ActorCriticUpdate<decltype(loss)> update(loss, "loss_value", oa, oc, nullptr, updater);
  REQUIRE(std::string(update.path()) == "fused");
  Config c;
  c.batch = 16;
  const TensorDict b = random_batch(c, 1);
  auto falls_back = [&](const TensorDict& batch, const std::string& why) {
    update(batch);
    CHECK(std::string(update.path()) == "op-by-op");
    CHECK_THAT(update.reason(), Contains(why));
    // UpdateEngine::Fused refuses it instead (when made, or at the update).
    CHECK_THROWS_WITH(([&] {
                        ActorCriticUpdate<decltype(loss)> fused(loss, "loss_value", oa, oc, nullptr, updater,
                                                                ActorCriticUpdateOptions().engine(UpdateEngine::Fused));
                        fused(batch);
                      }()),
                      Contains("UpdateEngine::Fused asked for, but the fused engine does not compute"));
  };
  SECTION("another gamma: the fused loss is the op-by-op loss with it") {
    loss->make_value_estimator(obj::ValueEstimators::TD0, obj::value::ValueEstimatorOptions().gamma(0.5));
    const float expected = loss(b).get("loss_value").item<float>();
    const float got = update(b).get("loss_value").item<float>();
    CHECK(std::string(update.path()) == "fused");
    CHECK(got == Approx(expected).epsilon(1e-5));
  }
  SECTION("average_rewards") {
    loss->make_value_estimator(obj::ValueEstimators::TD0, obj::value::ValueEstimatorOptions().average_rewards(true));
    falls_back(b, "average_rewards");
  }
  SECTION("n-step returns in the batch") {
    TensorDict n = b.clone();
    n.set("steps_to_next_obs", torch::full({16, 1}, 3, torch::kLong));
    falls_back(n, "steps_to_next_obs");
  }
  SECTION("a parameter frozen") {
    actor->parameters()[0].requires_grad_(false);  // the first layer's weight
    falls_back(b, "frozen");
  }
  SECTION("a parameter group added to an optimizer") {
    oc->add_param_group(torch::optim::OptimizerParamGroup({torch::zeros({2}, torch::requires_grad())}));
    falls_back(b, "parameter groups changed");
  }
  SECTION("amsgrad turned on") {
    static_cast<torch::optim::AdamOptions&>(oa->param_groups()[0].options()).amsgrad(true);
    falls_back(b, "amsgrad");
  }
  SECTION("a batch with two batch dims, or done without terminated") {
    falls_back(b.reshape({4, 4}), "2 batch dims");
    TensorDict d = b.clone();
    d.erase(NestedKey({"next", "terminated"}));  // op by op, terminated defaults to done
    falls_back(d, "without \"next.terminated\"");
  }
  SECTION("the engine runs again once nothing stops it") {
    falls_back(b.reshape({4, 4}), "2 batch dims");
    update(b);
    CHECK(std::string(update.path()) == "fused");
    CHECK(update.reason().empty());
  }
}

TEST_CASE("The fused engine leaves the actor's gradient as op by op on the critic's turns", "[engine]") {
  // A critic-only turn (TD3's policy delay): op by op, one loss and one backward zero the actor's
  // gradient and add nothing to it; with the critic first, the actor's gradient is not touched.
  torch::manual_seed(13);
  auto [actor, critic] = small_networks();
  auto loss = obj::TD3Loss(actor, critic, small_spec());
  auto oa = adam_of(loss, "actor_network");
  auto oc = adam_of(loss, "qvalue_network");
  auto updater = std::make_shared<obj::SoftUpdate>(loss, obj::SoftUpdateOptions().tau(0.05));
  std::string why;
  auto engine = ActorCriticEngine::make(loss, oa, oc, nullptr, updater, &why);
  REQUIRE(engine != nullptr);
  Config c;
  c.batch = 16;
  engine->step(random_batch(c, 1), /*actor_turn=*/true, /*critic_first=*/false);
  REQUIRE(loss->parameters_of("actor_network")[0].grad().abs().sum().item<double>() > 0);
  engine->step(random_batch(c, 2), /*actor_turn=*/false, /*critic_first=*/false);
  CHECK(loss->parameters_of("actor_network")[0].grad().abs().sum().item<double>() == 0);
  // TorchRL's TD3 example (critic first) zeroes and steps the critic alone on those turns.
  engine->step(random_batch(c, 3), /*actor_turn=*/true, /*critic_first=*/true);
  const torch::Tensor after_actor_turn = loss->parameters_of("actor_network")[0].grad().clone();
  REQUIRE(after_actor_turn.abs().sum().item<double>() > 0);
  engine->step(random_batch(c, 4), /*actor_turn=*/false, /*critic_first=*/true);
  CHECK(torch::equal(loss->parameters_of("actor_network")[0].grad(), after_actor_turn));
}

TEST_CASE("The fused and op-by-op paths share their state: updates may alternate between them", "[engine]") {
  // Two ActorCriticUpdates over one loss, its optimisers and its updater, taking turns: the
  // parameters, the Adam moments and step counts and the targets carry from one path to the
  // other, so the run matches one made op by op throughout.
  Config c;
  c.td3 = true;
  c.critic_first = true;
  c.batch = 32;
  c.cells = {16, 16};
  const int64_t updates = 6;
  auto run = [&](bool alternate, const torch::Tensor& perm) {
    torch::manual_seed(5);
    auto [actor, critic] = small_networks(c.cells);
    auto loss = obj::TD3Loss(actor, critic, small_spec(), obj::TD3LossOptions().policy_noise(0.0));
    auto oa = adam_of(loss, "actor_network");
    auto oc = adam_of(loss, "qvalue_network");
    auto updater = std::make_shared<obj::SoftUpdate>(loss, obj::SoftUpdateOptions().tau(0.05));
    using Update = ActorCriticUpdate<decltype(loss)>;
    const auto options = ActorCriticUpdateOptions().critic_first(true);
    Update fused(loss, "loss_qvalue", oa, oc, nullptr, updater, ActorCriticUpdateOptions(options).engine(UpdateEngine::Fused));
    Update op(loss, "loss_qvalue", oa, oc, nullptr, updater, ActorCriticUpdateOptions(options).engine(UpdateEngine::OpByOp));
    for (int64_t i = 0; i < updates; ++i) {
      TensorDict b = random_batch(c, 300 + i);
      if (perm.defined()) b = b.index({perm});
      (alternate && i % 2 == 0 ? fused : op)(b);
    }
    // Every step is in the optimisers' own state, whichever path made it.
    for (const auto& o : {oa, oc}) {
      REQUIRE(o->state().size() == 1);
      CHECK(static_cast<torch::optim::AdamParamState&>(*o->state().begin()->second).step() == updates);
    }
    std::vector<torch::Tensor> out;
    for (const auto& p : loss->parameters()) out.push_back(p.detach().clone());
    for (const auto& b : loss->buffers()) {
      if (b.is_floating_point()) out.push_back(b.detach().clone());
    }
    return out;
  };
  const auto alternating = run(true, {});
  const auto op = run(false, {});
  torch::manual_seed(99);
  const auto permuted = run(false, torch::randperm(c.batch));
  for (size_t i = 0; i < op.size(); ++i) {
    const double spread = (permuted[i] - op[i]).abs().max().item<double>();
    const double tol = rlobj_test::parity::kSafety * spread +
                       rlobj_test::parity::kUlpFloor * rlobj_test::parity::ulp32(op[i].abs().max().item<double>());
    const double err = (alternating[i] - op[i]).abs().max().item<double>();
    INFO("tensor " << i << ": |alternating - op-by-op| " << err << ", tolerance " << tol);
    CHECK(err <= tol);
  }
}

}  // namespace rlobj_test_engine_actor_critic_test
