// rlobj's scale-out benchmarks (Google Benchmark), run on every rank of a multi-process job:
//
//   scripts/launch.sh -n 2 -- build/bench/bench/rlobj_dist_bench
//   scripts/bench_distributed.sh            # 1, 2 and 4 processes, one table
//
// Every benchmark runs a fixed number of iterations (collectives need every rank in lockstep,
// so Google Benchmark's adaptive iteration count is off); rank 0 reports, the others run silent.
//
//   Allreduce/floats:N      one all-reduce of N floats: the per-message cost (latency + bytes /
//                           bandwidth) that gradient averaging pays once per network per update
//   SendBatch/rows:N        every collector sends one batch of N Pendulum transitions, the learner
//                           receives them all (DistributedCollector::send / receive)
//   Collect/envs:N/sim_us:S collection throughput: every collector steps N Pendulums with a
//                           64-64 MLP actor plus exploration noise and ships the batch; frames/s
//                           counts every collector's frames (on 1 process: collection alone).
//                           sim_us > 0 models a slower simulator: S us of work per env step
//   DataParallelUpdate/cells:C/batch:B  one DDPG update (C-C networks, Adam) on B samples per rank,
//                           the gradients averaged over the ranks (one all-reduce): updates/s,
//                           and samples/s over all ranks
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <benchmark/benchmark.h>
#include <rlobj/distributed.h>
#include <rlobj/rlobj.h>
#include <torch/torch.h>

namespace rl = rlobj;
namespace dist = rlobj::distributed;

namespace {

dist::ProcessGroup* g_pg = nullptr;

rl::TensorDict transitions(int64_t n) {
  rl::TensorDict td({n, 1});
  td.set("observation", torch::randn({n, 1, 3}));
  td.set("action", torch::randn({n, 1, 1}));
  td.set({"next", "observation"}, torch::randn({n, 1, 3}));
  td.set({"next", "reward"}, torch::randn({n, 1, 1}));
  td.set({"next", "done"}, torch::zeros({n, 1, 1}, torch::kBool));
  td.set({"next", "terminated"}, torch::zeros({n, 1, 1}, torch::kBool));
  return td;
}

void Allreduce(benchmark::State& state) {
  torch::Tensor t = torch::ones({state.range(0)});
  for (auto _ : state) g_pg->allreduce_sum_(t, "benchmark");
  state.SetBytesProcessed(state.iterations() * t.nbytes());
}

void SendBatch(benchmark::State& state) {
  dist::DistributedCollector channel(*g_pg);
  const rl::TensorDict batch = transitions(state.range(0));
  for (auto _ : state) {
    if (channel.is_learner()) {
      benchmark::DoNotOptimize(channel.receive());
    } else {
      channel.send(batch);
    }
  }
  state.SetItemsProcessed(state.iterations() * state.range(0) * std::max<int64_t>(1, channel.num_collectors()));
}

struct Acting {
  rl::envs::Pendulum env;
  rl::modules::TensorDictSequential policy{nullptr};
  std::optional<rl::collectors::SyncDataCollector> collector;
  explicit Acting(int64_t n) : env(rl::envs::PendulumOptions().batch_size({n}).seed(7 + g_pg->rank())) {
    auto actor = rl::modules::TensorDictSequential(
        rl::modules::TensorDictModule(rl::modules::MLP(rl::modules::MLPOptions(3, 1).num_cells({64, 64})),
                                      {"observation"}, {"param"}),
        rl::modules::TanhModule({"param"}, {"action"}, env.action_spec()));
    auto noise = rl::modules::AdditiveGaussianModule(
        env.action_spec(), rl::modules::AdditiveGaussianModuleOptions().sigma_init(1.0).sigma_end(1.0).std(0.1));
    policy = rl::modules::TensorDictSequential(actor, noise);
    collector.emplace(env, policy, /*frames_per_batch=*/n);
  }
};

/// A slower simulator: busy for `us` microseconds (what a physics step costs beyond Pendulum's).
void simulate(int64_t us) {
  if (us == 0) return;
  const auto end = std::chrono::steady_clock::now() + std::chrono::microseconds(us);
  while (std::chrono::steady_clock::now() < end) {
  }
}

void Collect(benchmark::State& state) {
  const int64_t n = state.range(0), sim_us = state.range(1);
  const bool alone = g_pg->world_size() == 1;
  std::optional<dist::DistributedCollector> channel;
  if (!alone) channel.emplace(*g_pg);
  std::optional<Acting> acting;
  if (alone || !channel->is_learner()) acting.emplace(n);
  const std::vector<rl::NestedKey> keys = {"observation", "action", {"next", "observation"}, {"next", "reward"},
                                           {"next", "done"}, {"next", "terminated"}};
  for (auto _ : state) {
    if (acting) {
      rl::TensorDict batch = acting->collector->next()->select(keys);
      simulate(sim_us * n);
      if (channel) channel->send(batch);
    } else {
      benchmark::DoNotOptimize(channel->receive());
    }
  }
  const int64_t producers = alone ? 1 : channel->num_collectors();
  state.SetItemsProcessed(state.iterations() * n * producers);
  state.counters["frames_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n * producers), benchmark::Counter::kIsRate);
}

void DataParallelUpdate(benchmark::State& state) {
  const int64_t cells = state.range(0), batch_size = state.range(1);
  rl::envs::Pendulum env;
  auto gen = at::make_generator<at::CPUGeneratorImpl>(1);
  auto actor = rl::modules::TensorDictSequential(
      rl::modules::TensorDictModule(rl::modules::MLP(rl::modules::MLPOptions(3, 1).num_cells({cells, cells}).generator(gen)),
                                    {"observation"}, {"param"}),
      rl::modules::TanhModule({"param"}, {"action"}, env.action_spec()));
  auto critic = rl::modules::ValueOperator(
      rl::modules::MLP(rl::modules::MLPOptions(4, 1).num_cells({cells, cells}).generator(gen)),
      {"observation", "action"});
  auto loss = rl::objectives::DDPGLoss(actor, critic);
  loss->make_value_estimator(rl::objectives::ValueEstimators::TD0);
  dist::DataParallel dp(*g_pg);
  dp.add_group("actor", loss->parameters_of("actor_network"));
  dp.add_group("critic", loss->parameters_of("value_network"));
  dp.broadcast_parameters();
  rl::objectives::SoftUpdate updater(loss, rl::objectives::SoftUpdateOptions().tau(0.005));
  torch::optim::Adam optim(loss->parameters(), torch::optim::AdamOptions(1e-3));
  rl::TensorDict batch = transitions(batch_size);
  rl::TensorDict flat({batch_size});
  for (const auto& key : batch.keys(true, true)) flat.set(key, batch.get(key).squeeze(1));
  for (auto _ : state) {
    optim.zero_grad();
    rl::objectives::sum_losses(loss(flat)).backward();
    dp.average_gradients();
    optim.step();
    updater.step();
  }
  state.SetItemsProcessed(state.iterations() * batch_size * g_pg->world_size());
  state.counters["updates_per_s"] = benchmark::Counter(static_cast<double>(state.iterations()),
                                                       benchmark::Counter::kIsRate);
}

/// Rank != 0: runs everything, reports nothing.
class Silent : public benchmark::BenchmarkReporter {
 public:
  bool ReportContext(const Context&) override { return true; }
  void ReportRuns(const std::vector<Run>&) override {}
};

}  // namespace

int main(int argc, char** argv) {
  torch::set_num_threads(1);
  dist::ProcessGroup pg = dist::ProcessGroup::from_env();
  g_pg = &pg;
  const int reps = 5;
  for (int64_t floats : {int64_t{1} << 10, int64_t{1} << 14, int64_t{1} << 18, int64_t{1} << 20}) {
    benchmark::RegisterBenchmark(("Allreduce/floats:" + std::to_string(floats)).c_str(), Allreduce)
        ->Arg(floats)->Iterations(floats >= (1 << 18) ? 50 : 500)->Repetitions(reps)->UseRealTime();
  }
  if (pg.world_size() > 1) {
    for (int64_t rows : {1, 64, 1024}) {
      benchmark::RegisterBenchmark(("SendBatch/rows:" + std::to_string(rows)).c_str(), SendBatch)
          ->Arg(rows)->Iterations(500)->Repetitions(reps)->UseRealTime();
    }
  }
  for (int64_t sim_us : {0, 500}) {
    for (int64_t envs : {1, 16}) {
      benchmark::RegisterBenchmark(
          ("Collect/envs:" + std::to_string(envs) + "/sim_us:" + std::to_string(sim_us)).c_str(), Collect)
          ->Args({envs, sim_us})->Iterations(sim_us > 0 ? 2000 / envs : 2000)->Repetitions(reps)->UseRealTime();
    }
  }
  for (int64_t cells : {64, 256}) {
    const int64_t batch = cells == 64 ? 256 : 1024;
    benchmark::RegisterBenchmark(
        ("DataParallelUpdate/cells:" + std::to_string(cells) + "/batch:" + std::to_string(batch)).c_str(),
        DataParallelUpdate)
        ->Args({cells, batch})->Iterations(cells == 64 ? 300 : 60)->Repetitions(reps)->UseRealTime();
  }
  // Only rank 0 writes --benchmark_out.
  std::vector<char*> args(argv, argv + argc);
  if (pg.rank() != 0) {
    std::vector<char*> kept;
    for (char* a : args) {
      if (std::string(a).rfind("--benchmark_out", 0) != 0) kept.push_back(a);
    }
    args = kept;
  }
  int n_args = static_cast<int>(args.size());
  benchmark::Initialize(&n_args, args.data());
  if (pg.rank() == 0) {
    benchmark::AddCustomContext("world_size", std::to_string(pg.world_size()));
    benchmark::RunSpecifiedBenchmarks();
  } else {
    Silent silent;
    benchmark::RunSpecifiedBenchmarks(&silent);
  }
  pg.finish();
  return 0;
}
