// rlobj's benchmarks (Google Benchmark). Each "X/rlobj/..." has a "X/handwritten/..." twin
// doing the same work in raw LibTorch; the closing table prints their ratio (rlobj /
// hand-written, from medians when --benchmark_repetitions is given). scripts/bench.sh runs
// them all, interleaved, with repetitions.

#include <benchmark/benchmark.h>

#include <limits>
#include <map>
#include <string>
#include <type_traits>
#include <vector>

#include <fmt/format.h>
#include <rlobj/rlobj.h>

#include "handwritten_ddpg.h"
#include "handwritten_td3_sac.h"

namespace rl = rlobj;
using rlobj_bench::HandwrittenDDPG;

namespace {

constexpr int64_t kBatch = 256;  // transitions per update (TorchRL's DDPG default)

rl::TensorDict random_batch(int64_t n) {
  torch::manual_seed(1);
  auto done = torch::rand({n, 1}) < 0.05;
  return rl::TensorDict({{"observation", torch::randn({n, 3})},
                         {"action", torch::rand({n, 1}) * 4 - 2},
                         {{"next", "observation"}, torch::randn({n, 3})},
                         {{"next", "reward"}, -torch::rand({n, 1}) * 10},
                         {{"next", "done"}, done},
                         {{"next", "terminated"}, done.clone()}},
                        {n});
}

struct RlobjDDPG {
  rl::modules::Actor actor{nullptr};
  rl::modules::ValueOperator value{nullptr};
  rl::objectives::DDPGLoss<> loss{nullptr};
  std::unique_ptr<torch::optim::Adam> optim;
  std::unique_ptr<rl::objectives::SoftUpdate> updater;

  RlobjDDPG(int64_t cells, rl::modules::Activation act) {
    torch::manual_seed(0);
    actor = rl::modules::Actor(rl::modules::MLP(rl::modules::MLPOptions(3, 1).num_cells({cells, cells}).activation(act)));
    value = rl::modules::ValueOperator(
        rl::modules::MLP(rl::modules::MLPOptions(4, 1).num_cells({cells, cells}).activation(act)), {"observation", "action"});
    loss = rl::objectives::DDPGLoss(actor, value);
    optim = std::make_unique<torch::optim::Adam>(loss->parameters(), torch::optim::AdamOptions(1e-3));
    updater = std::make_unique<rl::objectives::SoftUpdate>(loss, rl::objectives::SoftUpdateOptions().tau(0.005));
  }
  void update(const rl::TensorDict& batch) {
    auto out = loss(batch);
    rl::objectives::sum_losses(out).backward();
    optim->step();
    optim->zero_grad();
    updater->step();
  }
};

rl::modules::Activation activation_of(int64_t code) {
  return code == 0 ? rl::modules::Activation::Tanh : rl::modules::Activation::ReLU;
}

std::shared_ptr<torch::optim::Adam> adam_over(std::vector<torch::Tensor> params) {
  return std::make_shared<torch::optim::Adam>(std::move(params), torch::optim::AdamOptions(1e-3));
}

/// What the trainers run: `ActorCriticUpdate` over a loss, its actor and critic optimisers and a
/// soft updater, on the path `engine` asks for (Auto: the fused engine where it applies).
template <typename Loss>
std::unique_ptr<rl::trainers::ActorCriticUpdate<Loss>> trainer_update(Loss loss, const std::string& critic,
                                                                       rl::trainers::UpdateEngine engine) {
  const std::string critic_loss = critic == "value_network" ? "loss_value" : "loss_qvalue";
  // SAC's temperature has an optimizer of its own, as in TorchRL's SAC example.
  std::shared_ptr<torch::optim::Optimizer> optim_alpha;
  if constexpr (std::is_same<Loss, rl::objectives::SACLoss<>>::value) optim_alpha = adam_over(loss->parameters_of("log_alpha"));
  return std::make_unique<rl::trainers::ActorCriticUpdate<Loss>>(
      loss, critic_loss, adam_over(loss->parameters_of("actor_network")), adam_over(loss->parameters_of(critic)),
      optim_alpha,
      std::make_shared<rl::objectives::SoftUpdate>(loss, rl::objectives::SoftUpdateOptions().tau(0.005)),
      rl::trainers::ActorCriticUpdateOptions().engine(engine));
}

/// The matrix products of one update, alone: the update's `sgemm_` calls recorded once
/// (`engine::gemm_log`), then replayed on buffers of the same sizes. The BLAS floor of an update.
template <typename Update>
void replay_products(benchmark::State& state, Update& update, const rl::TensorDict& batch) {
  std::vector<rl::engine::GemmCall> calls;
  rl::engine::gemm_log() = &calls;
  update(batch);
  rl::engine::gemm_log() = nullptr;
  int64_t most = 0;
  for (const auto& c : calls) {
    most = std::max<int64_t>({most, static_cast<int64_t>(c.lda) * std::max(c.k, std::max(c.m, c.n)),
                              static_cast<int64_t>(c.ldb) * std::max(c.k, std::max(c.m, c.n)),
                              static_cast<int64_t>(c.ldc) * std::max(c.m, c.n)});
  }
  auto a = torch::randn({most}), b = torch::randn({most}), c = torch::zeros({most});
  for (auto _ : state) {
    for (const auto& call : calls) rl::engine::sgemm(call, a.data_ptr<float>(), b.data_ptr<float>(), c.data_ptr<float>());
  }
  state.SetLabel(fmt::format("{} products", calls.size()));
}

// -- the full update ---------------------------------------------------------------------------

// Args: cells, threads, activation (0 tanh, 1 relu). "rlobj" is what the trainers run (the fused
// engine), "rlobj_opbyop" the loss -> backward -> step -> update loop a user writes.
void DDPGUpdate_rlobj_opbyop(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  RlobjDDPG ddpg(state.range(0), activation_of(state.range(2)));
  auto batch = random_batch(kBatch);
  for (auto _ : state) ddpg.update(batch);
  state.SetItemsProcessed(state.iterations());
}

void DDPGUpdate_rlobj(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  RlobjDDPG ddpg(state.range(0), activation_of(state.range(2)));
  auto update = trainer_update(ddpg.loss, "value_network", rl::trainers::UpdateEngine::Auto);
  auto batch = random_batch(kBatch);
  for (auto _ : state) (*update)(batch);
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(update->path());
}

void DDPGUpdate_blas_floor(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  RlobjDDPG ddpg(state.range(0), activation_of(state.range(2)));
  auto update = trainer_update(ddpg.loss, "value_network", rl::trainers::UpdateEngine::Fused);
  replay_products(state, *update, random_batch(kBatch));
}

void DDPGUpdate_handwritten(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  torch::manual_seed(0);
  HandwrittenDDPG ddpg(3, 1, {state.range(0), state.range(0)}, state.range(2) == 1);
  auto b = random_batch(kBatch);
  auto obs = b.get("observation"), act = b.get("action"), next_obs = b.get({"next", "observation"});
  auto rew = b.get({"next", "reward"}), term = b.get({"next", "terminated"});
  for (auto _ : state) ddpg.update(obs, act, rew, term, next_obs);
  state.SetItemsProcessed(state.iterations());
}

// TD3 and SAC: one update of every network (TD3's actor every step here, to compare the same
// work per call; the examples update it every 2nd step). Args: cells, threads, activation.
template <typename Loss>
struct RlobjOffPolicy {
  Loss loss{nullptr};
  std::unique_ptr<torch::optim::Adam> optim;
  std::unique_ptr<rl::objectives::SoftUpdate> updater;
  template <typename Actor>
  RlobjOffPolicy(Actor actor, rl::modules::ValueOperator value) {
    loss = Loss(actor, value, rl::Bounded(-2.0, 2.0, {1}));
    optim = std::make_unique<torch::optim::Adam>(loss->parameters(), torch::optim::AdamOptions(1e-3));
    updater = std::make_unique<rl::objectives::SoftUpdate>(loss, rl::objectives::SoftUpdateOptions().tau(0.005));
  }
  void update(const rl::TensorDict& batch) {
    auto out = loss(batch);
    rl::objectives::sum_losses(out).backward();
    optim->step();
    optim->zero_grad();
    updater->step();
  }
};

rl::modules::ValueOperator bench_critic(int64_t cells, rl::modules::Activation act) {
  return rl::modules::ValueOperator(
      rl::modules::MLP(rl::modules::MLPOptions(4, 1).num_cells({cells, cells}).activation(act)), {"observation", "action"});
}

RlobjOffPolicy<rl::objectives::TD3Loss<>> bench_td3(const benchmark::State& state) {
  torch::manual_seed(0);
  const auto act = activation_of(state.range(2));
  const int64_t cells = state.range(0);
  return RlobjOffPolicy<rl::objectives::TD3Loss<>>(
      rl::modules::Actor(rl::modules::MLP(rl::modules::MLPOptions(3, 1).num_cells({cells, cells}).activation(act))),
      bench_critic(cells, act));
}

void TD3Update_rlobj_opbyop(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  auto td3 = bench_td3(state);
  auto batch = random_batch(kBatch);
  for (auto _ : state) td3.update(batch);
  state.SetItemsProcessed(state.iterations());
}

void TD3Update_rlobj(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  auto td3 = bench_td3(state);
  auto update = trainer_update(td3.loss, "qvalue_network", rl::trainers::UpdateEngine::Auto);
  auto batch = random_batch(kBatch);
  for (auto _ : state) (*update)(batch);
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(update->path());
}

void TD3Update_blas_floor(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  auto td3 = bench_td3(state);
  auto update = trainer_update(td3.loss, "qvalue_network", rl::trainers::UpdateEngine::Fused);
  replay_products(state, *update, random_batch(kBatch));
}

RlobjOffPolicy<rl::objectives::SACLoss<>> bench_sac(const benchmark::State& state) {
  torch::manual_seed(0);
  const auto act = activation_of(state.range(2));
  const int64_t cells = state.range(0);
  namespace m = rl::modules;
  auto params = m::TensorDictSequential(
      m::TensorDictModule(m::MLP(m::MLPOptions(3, 2).num_cells({cells, cells}).activation(act)), {"observation"}, {"param"}),
      m::TensorDictModule(m::NormalParamExtractor(), {"param"}, {"loc", "scale"}));
  m::ProbabilisticActor actor(params, m::TanhNormal::factory(m::TanhNormalOptions::from_spec(rl::Bounded(-2.0, 2.0, {1}))));
  return RlobjOffPolicy<rl::objectives::SACLoss<>>(actor, bench_critic(cells, act));
}

void SACUpdate_rlobj_opbyop(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  auto sac = bench_sac(state);
  auto batch = random_batch(kBatch);
  for (auto _ : state) sac.update(batch);
  state.SetItemsProcessed(state.iterations());
}

void SACUpdate_rlobj(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  auto sac = bench_sac(state);
  auto update = trainer_update(sac.loss, "qvalue_network", rl::trainers::UpdateEngine::Auto);
  auto batch = random_batch(kBatch);
  for (auto _ : state) (*update)(batch);
  state.SetItemsProcessed(state.iterations());
  state.SetLabel(update->path());
}

void SACUpdate_blas_floor(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  auto sac = bench_sac(state);
  auto update = trainer_update(sac.loss, "qvalue_network", rl::trainers::UpdateEngine::Fused);
  replay_products(state, *update, random_batch(kBatch));
}

template <typename Handwritten>
void OffPolicyUpdate_handwritten(benchmark::State& state) {
  torch::set_num_threads(static_cast<int>(state.range(1)));
  torch::manual_seed(0);
  Handwritten algo(3, 1, {state.range(0), state.range(0)}, state.range(2) == 1);
  auto b = random_batch(kBatch);
  auto obs = b.get("observation"), act = b.get("action"), next_obs = b.get({"next", "observation"});
  auto rew = b.get({"next", "reward"}), term = b.get({"next", "terminated"});
  for (auto _ : state) algo.update(obs, act, rew, term, next_obs);
  state.SetItemsProcessed(state.iterations());
}

// -- the pieces --------------------------------------------------------------------------------

void LossForward_rlobj(benchmark::State& state) {
  torch::set_num_threads(1);
  RlobjDDPG ddpg(state.range(0), activation_of(state.range(1)));
  auto batch = random_batch(kBatch);
  for (auto _ : state) benchmark::DoNotOptimize(ddpg.loss(batch));
}

void LossBackward_rlobj(benchmark::State& state) {
  torch::set_num_threads(1);
  RlobjDDPG ddpg(state.range(0), activation_of(state.range(1)));
  auto batch = random_batch(kBatch);
  for (auto _ : state) {
    state.PauseTiming();
    auto total = rl::objectives::sum_losses(ddpg.loss(batch));
    state.ResumeTiming();
    total.backward();
  }
}

// Adam over the loss's flat parameter groups vs over every weight and bias.
void AdamStep_rlobj(benchmark::State& state) {
  torch::set_num_threads(1);
  RlobjDDPG ddpg(state.range(0), rl::modules::Activation::Tanh);
  rl::objectives::sum_losses(ddpg.loss(random_batch(kBatch))).backward();
  for (auto _ : state) ddpg.optim->step();
}

void AdamStep_handwritten(benchmark::State& state) {
  torch::set_num_threads(1);
  HandwrittenDDPG ddpg(3, 1, {state.range(0), state.range(0)}, false);
  std::vector<torch::Tensor> params = ddpg.actor->parameters();
  for (auto& p : ddpg.critic->parameters()) params.push_back(p);
  torch::optim::Adam optim(params, torch::optim::AdamOptions(1e-3));
  for (auto& p : params) p.mutable_grad() = torch::randn_like(p);
  for (auto _ : state) optim.step();
}

void SoftUpdate_rlobj(benchmark::State& state) {
  torch::set_num_threads(1);
  RlobjDDPG ddpg(state.range(0), rl::modules::Activation::Tanh);
  for (auto _ : state) ddpg.updater->step();
}

void SoftUpdate_handwritten(benchmark::State& state) {
  torch::set_num_threads(1);
  HandwrittenDDPG ddpg(3, 1, {state.range(0), state.range(0)}, false);
  auto src = ddpg.critic->parameters();
  auto dst = ddpg.critic_target->parameters();
  torch::NoGradGuard no_grad;
  for (auto _ : state) {
    for (size_t i = 0; i < src.size(); ++i) dst[i].mul_(1 - 0.005).add_(src[i], 0.005);
  }
}

void ReplaySample_rlobj(benchmark::State& state) {
  torch::set_num_threads(1);
  rl::envs::Pendulum env(rl::envs::PendulumOptions().batch_size({1000}));
  rl::data::ReplayBuffer rb(rl::data::ReplayBufferOptions(100000));
  for (int i = 0; i < 20; ++i) rb.extend(env.rollout(5, rl::envs::RolloutOptions()));
  for (auto _ : state) benchmark::DoNotOptimize(rb.sample(kBatch));
}

// The same sample written by hand: one index_select per stored tensor.
void ReplaySample_handwritten(benchmark::State& state) {
  torch::set_num_threads(1);
  rl::envs::Pendulum env(rl::envs::PendulumOptions().batch_size({1000}));
  std::vector<torch::Tensor> columns;
  auto data = rl::TensorDict::cat([&] {
    std::vector<rl::TensorDict> parts;
    for (int i = 0; i < 20; ++i) parts.push_back(env.rollout(5, rl::envs::RolloutOptions()).reshape({-1}));
    return parts;
  }());
  for (const auto& item : data.items(true, true)) columns.push_back(item.second.tensor().contiguous());
  auto gen = at::make_generator<at::CPUGeneratorImpl>(0);
  for (auto _ : state) {
    auto idx = torch::randint(0, columns[0].size(0), {kBatch}, gen, torch::kLong);
    for (auto& c : columns) benchmark::DoNotOptimize(c.index_select(0, idx));
  }
}

// Args: N pendulums, fused (1) or tensor-op (0) step
void PendulumStep(benchmark::State& state) {
  torch::set_num_threads(1);
  const int64_t n = state.range(0);
  rl::envs::Pendulum env(rl::envs::PendulumOptions()
                             .batch_size({n})
                             .fused_cpu_step(state.range(1) == 1)
                             .fused_cpu_max_batch(std::numeric_limits<int64_t>::max()));
  auto td = env.reset();
  td.set("action", torch::zeros({n, 1}));
  for (auto _ : state) {
    env.step(td);
    td = rl::envs::step_mdp(td, rl::envs::StepMdpOptions().exclude_action(false));
  }
  state.SetItemsProcessed(state.iterations() * n);
}

// Args: N pendulums; 200 steps of an MLP(32, 32) actor.
void Rollout(benchmark::State& state) {
  torch::set_num_threads(1);
  const int64_t n = state.range(0);
  rl::envs::Pendulum env(rl::envs::PendulumOptions().batch_size({n}));
  auto actor = rl::modules::Actor(rl::modules::MLP(rl::modules::MLPOptions(3, 1).num_cells({32, 32})));
  for (auto _ : state) benchmark::DoNotOptimize(env.rollout(200, actor));
  state.SetItemsProcessed(state.iterations() * n * 200);
}

// One acting frame of the off-policy examples for one Pendulum: the policy (MLP(32, 32) ReLU,
// TanhModule, Gaussian exploration noise) under no-grad, the env step with step_mdp and
// auto-reset (SyncDataCollector, one frame per batch), the replay write of the six
// transition keys.
void ActingFrame(benchmark::State& state) {
  torch::set_num_threads(1);
  rl::envs::Pendulum env(rl::envs::PendulumOptions().batch_size({1}).seed(0));
  auto mlp = rl::modules::MLP(rl::modules::MLPOptions(3, 1).num_cells({32, 32}).activation(rl::modules::Activation::ReLU));
  rl::modules::TensorDictSequential actor(rl::modules::TensorDictModule(mlp, {"observation"}, {"param"}),
                                          rl::modules::TanhModule({"param"}, {"action"}, env.action_spec()));
  auto noise = rl::modules::AdditiveGaussianModule(
      env.action_spec(), rl::modules::AdditiveGaussianModuleOptions().sigma_init(1.0).sigma_end(1.0).std(0.1).seed(1));
  rl::modules::TensorDictSequential policy(actor, noise);
  rl::collectors::SyncDataCollector collector(env, policy, /*frames_per_batch=*/1);
  rl::data::ReplayBuffer rb(rl::data::ReplayBufferOptions(100000).seed(2));
  const std::vector<rl::NestedKey> keys = {"observation", "action", {"next", "observation"}, {"next", "reward"},
                                           {"next", "done"}, {"next", "terminated"}};
  for (auto _ : state) rb.extend(collector.next()->select(keys));
  state.SetItemsProcessed(state.iterations());
}

// Args: width. rlobj's vectorised float tanh (what MLP's fused path runs), in place.
void TanhRlobj(benchmark::State& state) {
  torch::set_num_threads(1);
  auto x = torch::randn({kBatch, state.range(0)});
  auto y = x.clone();
  for (auto _ : state) {
    y.copy_(x);  // same input every time (the copy is ~1 us of it)
    rl::detail::tanh_inplace(y);
    benchmark::DoNotOptimize(y);
  }
}

// Args: activation code, width. What each non-linearity costs in this LibTorch build.
void Activation(benchmark::State& state) {
  torch::set_num_threads(1);
  auto x = torch::randn({kBatch, state.range(1)});
  const auto a = static_cast<rl::modules::Activation>(state.range(0));
  rl::modules::MLP probe(rl::modules::MLPOptions(1, 1).activation(a));
  torch::Tensor y;
  for (auto _ : state) {
    switch (a) {
      case rl::modules::Activation::Tanh: y = torch::tanh(x); break;
      case rl::modules::Activation::ReLU: y = torch::relu(x); break;
      case rl::modules::Activation::ELU: y = torch::elu(x); break;
      case rl::modules::Activation::Sigmoid: y = torch::sigmoid(x); break;
      case rl::modules::Activation::GELU: y = torch::gelu(x); break;
      case rl::modules::Activation::SiLU: y = torch::silu(x); break;
      default: y = x;
    }
    benchmark::DoNotOptimize(y);
  }
  state.SetLabel(rl::modules::activation_name(a));
}

// Args: width, fused (1: addmm, what Linear does) or mm + add (0).
void LinearLayer(benchmark::State& state) {
  torch::set_num_threads(1);
  const int64_t w = state.range(0);
  auto x = torch::randn({kBatch, w}), weight = torch::randn({w, w}), bias = torch::randn({w});
  for (auto _ : state) {
    if (state.range(1) == 1) {
      benchmark::DoNotOptimize(torch::addmm(bias, x, weight.t()));
    } else {
      benchmark::DoNotOptimize(torch::mm(x, weight.t()) + bias);
    }
  }
}

// Prints the closing table of rlobj / hand-written ratios.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& run : runs) {
      const bool median = run.run_type == Run::RT_Aggregate && run.aggregate_name == "median";
      const bool single = run.run_type == Run::RT_Iteration && run.repetitions <= 1;
      if (median || single) times_[run.run_name.str()] = run.GetAdjustedRealTime();
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void Finalize() override {
    ConsoleReporter::Finalize();
    // rlobj (what the trainers run) against each twin that exists.
    for (const char* twin_kind : {"handwritten", "rlobj_opbyop", "blas_floor"}) {
      bool header = false;
      for (const auto& [name, t] : times_) {
        const auto pos = name.find("/rlobj/");
        if (pos == std::string::npos) continue;
        std::string twin = name;
        twin.replace(pos + 1, 5, twin_kind);
        auto it = times_.find(twin);
        if (it == times_.end()) continue;
        if (!header) {
          fmt::print("\n{:<48} {:>12} {:>14} {:>8}\n", fmt::format("benchmark (rlobj vs {})", twin_kind), "rlobj",
                     twin_kind, "ratio");
          header = true;
        }
        fmt::print("{:<48} {:>12.1f} {:>14.1f} {:>8.3f}\n", name, t, it->second, t / it->second);
      }
    }
  }

 private:
  std::map<std::string, double> times_;
};

}  // namespace

int main(int argc, char** argv) {
  using benchmark::RegisterBenchmark;
  const auto us = benchmark::kMicrosecond;
  // cells x threads x activation (0 tanh: TorchRL's default; 1 relu)
  const std::vector<std::pair<const char*, void (*)(benchmark::State&)>> ddpg = {
      {"DDPGUpdate/rlobj", &DDPGUpdate_rlobj},
      {"DDPGUpdate/rlobj_opbyop", &DDPGUpdate_rlobj_opbyop},
      {"DDPGUpdate/blas_floor", &DDPGUpdate_blas_floor},
      {"DDPGUpdate/handwritten", &DDPGUpdate_handwritten}};
  for (const auto& [name, fn] : ddpg) {
    RegisterBenchmark(name, fn)
        ->ArgNames({"cells", "threads", "relu"})
        ->ArgsProduct({{32, 256}, {1, 2}, {0, 1}})
        ->Unit(us)
        ->UseRealTime();
  }
  const std::vector<std::pair<const char*, void (*)(benchmark::State&)>> off_policy = {
      {"TD3Update/rlobj", &TD3Update_rlobj},
      {"TD3Update/rlobj_opbyop", &TD3Update_rlobj_opbyop},
      {"TD3Update/blas_floor", &TD3Update_blas_floor},
      {"TD3Update/handwritten", &OffPolicyUpdate_handwritten<rlobj_bench::HandwrittenTD3>},
      {"SACUpdate/rlobj", &SACUpdate_rlobj},
      {"SACUpdate/rlobj_opbyop", &SACUpdate_rlobj_opbyop},
      {"SACUpdate/blas_floor", &SACUpdate_blas_floor},
      {"SACUpdate/handwritten", &OffPolicyUpdate_handwritten<rlobj_bench::HandwrittenSAC>}};
  for (const auto& [name, fn] : off_policy) {
    RegisterBenchmark(name, fn)
        ->ArgNames({"cells", "threads", "relu"})
        ->ArgsProduct({{32, 256}, {1}, {1}})
        ->Unit(us)
        ->UseRealTime();
  }
  RegisterBenchmark("LossForward/rlobj_only", LossForward_rlobj)->ArgNames({"cells", "relu"})->ArgsProduct({{32, 256}, {0}})->Unit(us);
  RegisterBenchmark("LossBackward/rlobj_only", LossBackward_rlobj)->ArgNames({"cells", "relu"})->ArgsProduct({{32, 256}, {0}})->Unit(us);
  RegisterBenchmark("AdamStep/rlobj", AdamStep_rlobj)->ArgName("cells")->Arg(32)->Arg(256)->Unit(us);
  RegisterBenchmark("AdamStep/handwritten", AdamStep_handwritten)->ArgName("cells")->Arg(32)->Arg(256)->Unit(us);
  RegisterBenchmark("SoftUpdate/rlobj", SoftUpdate_rlobj)->ArgName("cells")->Arg(32)->Arg(256)->Unit(us);
  RegisterBenchmark("SoftUpdate/handwritten", SoftUpdate_handwritten)->ArgName("cells")->Arg(32)->Arg(256)->Unit(us);
  RegisterBenchmark("ReplaySample/rlobj", ReplaySample_rlobj)->Unit(us);
  RegisterBenchmark("ReplaySample/handwritten", ReplaySample_handwritten)->Unit(us);
  RegisterBenchmark("PendulumStep", PendulumStep)->ArgNames({"N", "fused"})->ArgsProduct({{1, 64, 4096}, {1, 0}})->Unit(us);
  RegisterBenchmark("Rollout200", Rollout)->ArgName("N")->Arg(1)->Arg(64)->Unit(us);
  RegisterBenchmark("Activation", Activation)
      ->ArgNames({"act", "width"})
      ->ArgsProduct({{0, 1, 2, 4, 5, 6}, {32, 256}})
      ->Unit(us);
  RegisterBenchmark("TanhRlobj", TanhRlobj)->ArgName("width")->Arg(32)->Arg(256)->Unit(us);
  RegisterBenchmark("ActingFrame/rlobj_only", ActingFrame)->Unit(us);
  RegisterBenchmark("Linear", LinearLayer)->ArgNames({"width", "addmm"})->ArgsProduct({{32, 256}, {1, 0}})->Unit(us);

  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  benchmark::Shutdown();
  return 0;
}
