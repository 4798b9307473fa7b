// CUDA checks: hidden from the default run ([.cuda]); scripts/gpu_check.sh runs them on a
// machine with a GPU. Every check compares the CUDA result with the same work on the CPU.

#include <rlobj/rlobj.h>

#include <catch2/catch.hpp>
#include <torch/cuda.h>
#include <torch/torch.h>

#include "objectives/reference.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_cuda_test {

using rlobj::TensorDict;
using namespace rlobj::objectives;
using rlobj_test::reference_batch;
using rlobj_test::ReferenceNets;

namespace {

void require_cuda() {
  // Hidden tests only run when asked for by tag; asking for them without a GPU is a mistake.
  REQUIRE(torch::cuda::is_available());
}

TensorDict to_device(const TensorDict& td, const torch::Device& device) { return td.to(device); }

}  // namespace

TEST_CASE("CUDA: DDPGLoss, Adam and SoftUpdate match the CPU", "[.cuda]") {
  require_cuda();
  const torch::Device cuda(torch::kCUDA);
  ReferenceNets cpu_nets, cuda_nets;
  auto cpu_loss = DDPGLoss(cpu_nets.actor, cpu_nets.value);
  auto cuda_loss = DDPGLoss(cuda_nets.actor, cuda_nets.value);
  cuda_loss->to(cuda);
  for (const auto& p : cuda_nets.actor->parameters()) CHECK(p.device() == cuda);
  for (const auto& p : cuda_loss->target_value_network()->parameters()) CHECK(p.device() == cuda);
  SoftUpdate cpu_updater(cpu_loss, SoftUpdateOptions().eps(0.9));
  SoftUpdate cuda_updater(cuda_loss, SoftUpdateOptions().eps(0.9));
  torch::optim::Adam cpu_optim(cpu_loss->parameters()), cuda_optim(cuda_loss->parameters());
  auto batch = reference_batch();
  for (int i = 0; i < 3; ++i) {
    auto a = cpu_loss(batch.clone());
    auto b = cuda_loss(to_device(batch, cuda));
    CHECK(b.get("loss_value").device() == cuda);
    CHECK(torch::allclose(a.get("loss_value"), b.get("loss_value").cpu(), 1e-5, 1e-6));
    CHECK(torch::allclose(a.get("loss_actor"), b.get("loss_actor").cpu(), 1e-5, 1e-6));
    sum_losses(a).backward();
    sum_losses(b).backward();
    cpu_optim.step();
    cuda_optim.step();
    cpu_optim.zero_grad();
    cuda_optim.zero_grad();  // sets to none on 2.x: the next backward must still land
    cpu_updater.step();
    cuda_updater.step();
  }
  auto pa = cpu_loss->parameters(), pb = cuda_loss->parameters();
  for (size_t i = 0; i < pa.size(); ++i) CHECK(torch::allclose(pa[i], pb[i].cpu(), 1e-4, 1e-6));
}

TEST_CASE("CUDA: loss->to(cuda) moves the networks' buffers", "[.cuda]") {
  require_cuda();
  const torch::Device cuda(torch::kCUDA);
  using Seq = rlobj::modules::TensorDictSequential;
  auto actor = Seq(rlobj::modules::TensorDictModule(rlobj::modules::MLP(rlobj::modules::MLPOptions(3, 1).num_cells({8})),
                                                    {"observation"}, {"param"}),
                   rlobj::modules::TanhModule({"param"}, {"action"}, rlobj::Bounded(-2.0, 2.0, {1})));
  auto critic = rlobj::modules::ValueOperator(rlobj::modules::MLP(rlobj::modules::MLPOptions(4, 1).num_cells({8})),
                                              {"observation", "action"});
  auto loss = DDPGLoss<Seq, rlobj::modules::ValueOperator>(actor, critic, DDPGLossOptions().delay_actor(true));
  loss->to(cuda);
  for (const auto& b : actor->buffers()) CHECK(b.device() == cuda);
  for (const auto& b : loss->target_actor_network()->buffers()) CHECK(b.device() == cuda);
  auto out = loss(reference_batch().to(cuda));
  CHECK(out.get("loss_actor").device() == cuda);
}

TEST_CASE("CUDA: a non-finite input is caught when asked for", "[.cuda]") {
  require_cuda();
  const torch::Device cuda(torch::kCUDA);
  ReferenceNets nets;
  auto loss = DDPGLoss(nets.actor, nets.value, DDPGLossOptions().check_finite(FiniteCheck::Always));
  loss->to(cuda);
  auto batch = reference_batch().to(cuda);
  batch.get("observation").index_put_({0, 0}, INFINITY);
  REQUIRE_THROWS_WITH(loss(batch), Catch::Matchers::Contains("input \"observation\" contains NaN or Inf"));
}

TEST_CASE("CUDA: Pendulum's tensor path matches the CPU's fused loop", "[.cuda]") {
  require_cuda();
  auto opts = rlobj::envs::PendulumOptions().batch_size({16}).seed(3).dtype(torch::kFloat64);
  auto cpu = rlobj::envs::Pendulum(opts);
  auto gpu = rlobj::envs::Pendulum(rlobj::envs::PendulumOptions(opts).device(torch::Device(torch::kCUDA)));
  auto a = cpu.reset();
  auto b = gpu.reset(a.select({"th", "thdot"}).to(torch::Device(torch::kCUDA)));
  for (int t = 0; t < 50; ++t) {
    auto action = torch::sin(torch::arange(16, torch::kFloat64) * 0.3 + t).view({16, 1}) * 2;
    a.set("action", action);
    b.set("action", action.cuda());
    a = rlobj::envs::step_mdp(cpu.step(a));
    b = rlobj::envs::step_mdp(gpu.step(b));
  }
  CHECK(torch::allclose(a.get("observation"), b.get("observation").cpu(), 1e-9, 1e-12));
}

TEST_CASE("CUDA: the collector and the replay buffer work on the device", "[.cuda]") {
  require_cuda();
  const torch::Device cuda(torch::kCUDA);
  auto env = rlobj::envs::Pendulum(rlobj::envs::PendulumOptions().batch_size({4}).seed(0).device(cuda));
  auto policy = rlobj::modules::Actor(rlobj::modules::MLP(rlobj::modules::MLPOptions(3, 1).num_cells({8})));
  policy->to(cuda);
  rlobj::collectors::SyncDataCollector collector(env, policy, /*frames_per_batch=*/8, /*total_frames=*/1600,
                                                 /*init_random_frames=*/0);
  int64_t batches = 0;
  for (TensorDict batch : collector) {
    CHECK(batch.get("action").device() == cuda);
    ++batches;
  }
  CHECK(batches == 200);
  CHECK(collector.episodes() == 8);  // 4 pendulums x 400 steps, 200 steps an episode
}

}  // namespace rlobj_test_cuda_test
