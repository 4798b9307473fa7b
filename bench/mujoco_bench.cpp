// Batched MuJoCo steps per second (rlobj::envs::mujoco::HalfCheetah, gymnasium's v5 defaults):
// N copies stepped with random actions on 1 and 2 threads, the cost of the TensorDict around
// the physics included. scripts/bench_mujoco.sh runs it beside EnvPool and gymnasium.
//   rlobj_mujoco_bench --benchmark_filter='HalfCheetahStep'

#include <cstdint>

#include <benchmark/benchmark.h>
#include <torch/torch.h>

#include <rlobj/envs/mujoco.h>

namespace {

namespace mj = rlobj::envs::mujoco;

void HalfCheetahStep(benchmark::State& state) {
  const int64_t n = state.range(0);
  const int64_t threads = state.range(1);
  torch::set_num_threads(1);
  mj::HalfCheetah env(mj::HalfCheetahOptions(), mj::MujocoOptions().batch_size({n}).num_threads(threads));
  rlobj::TensorDict td = env.reset();
  // A fixed set of random actions, drawn once: the benchmark times the environment.
  const torch::Tensor actions = torch::rand({16, n, 6}) * 2 - 1;
  int64_t t = 0;
  for (auto _ : state) {
    td.set("action", actions[t++ % 16]);
    auto stepped = env.step_and_maybe_reset(td);
    td = stepped.second;
  }
  state.counters["steps_per_s"] =
      benchmark::Counter(static_cast<double>(state.iterations() * n), benchmark::Counter::kIsRate);
}
BENCHMARK(HalfCheetahStep)
    ->ArgNames({"envs", "threads"})
    ->Args({1, 1})
    ->Args({16, 1})
    ->Args({16, 2})
    ->Args({256, 1})
    ->Args({256, 2})
    ->UseRealTime()
    ->MeasureProcessCPUTime()  // the pool's worker threads too
    ->Unit(benchmark::kMicrosecond);

}  // namespace

BENCHMARK_MAIN();
