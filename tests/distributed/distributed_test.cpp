// Worker program of the distributed tests (tests/distributed/cases.sh launches it with
// scripts/launch.sh): each mode checks one behaviour of rlobj/distributed.h across 2-4
// processes and exits 0 when it holds, non-zero with a message when it does not.
//
//   dp        data-parallel DDPG updates: ranks start from different weights, broadcast makes
//             them rank 0's; after every step the parameters are identical bit for bit, and the
//             averaged gradient equals the gradient of the whole (all ranks') batch
//   dp_errors DataParallel's bad input: names, dtypes, layouts that differ between ranks, a
//             gradient defined on some ranks only
//   collect   every collector's transitions reach the learner exactly once, in order; the
//             collectors see each weight push
//   die       the last rank kills itself mid-run (SIGKILL); the others must fail fast
//   die0      the same with rank 0 (the store's host)
//   config    one rank has another configuration: every rank fails, naming it
//   hold      rank 0 of 2 holds the store's port for a few seconds (for the port-in-use case)
//   init      only sets up the process group (for the bad-setup cases)
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <rlobj/distributed.h>
#include <rlobj/rlobj.h>
#include <torch/torch.h>

namespace rl = rlobj;
namespace dist = rlobj::distributed;

namespace {

// RLOBJ_TEST_TIMEOUT_MS shortens the timeout for a case that can only end in one (cases.sh).
dist::ProcessGroupOptions options() {
  const char* ms = std::getenv("RLOBJ_TEST_TIMEOUT_MS");
  return dist::ProcessGroupOptions().timeout(std::chrono::milliseconds(ms != nullptr ? std::stoll(ms) : 15000));
}

#define EXPECT(cond, ...)                                                          \
  do {                                                                             \
    if (!(cond)) {                                                                 \
      fmt::print(stderr, "FAILED {}: {}\n", #cond, fmt::format(__VA_ARGS__));      \
      std::exit(1);                                                                \
    }                                                                              \
  } while (0)

rl::TensorDict random_batch(int64_t n, uint64_t seed) {
  auto gen = at::make_generator<at::CPUGeneratorImpl>(seed);
  rl::TensorDict td({n});
  td.set("observation", torch::randn({n, 3}, gen));
  td.set("action", torch::rand({n, 1}, gen) * 4 - 2);
  td.set({"next", "observation"}, torch::randn({n, 3}, gen));
  td.set({"next", "reward"}, -torch::rand({n, 1}, gen) * 10);
  auto done = torch::rand({n, 1}, gen) < 0.1;
  td.set({"next", "done"}, done);
  td.set({"next", "terminated"}, done);
  return td;
}

int data_parallel(dist::ProcessGroup& pg) {
  rl::envs::Pendulum env;
  const auto& spec = env.action_spec();
  // Different initial weights on every rank: the broadcast must make them rank 0's.
  auto gen = at::make_generator<at::CPUGeneratorImpl>(100 + pg.rank());
  auto actor = rl::modules::TensorDictSequential(
      rl::modules::TensorDictModule(rl::modules::MLP(rl::modules::MLPOptions(3, 1).num_cells({16, 16}).generator(gen)),
                                    {"observation"}, {"param"}),
      rl::modules::TanhModule({"param"}, {"action"}, spec));
  auto critic = rl::modules::ValueOperator(
      rl::modules::MLP(rl::modules::MLPOptions(4, 1).num_cells({16, 16}).generator(gen)), {"observation", "action"});
  auto loss = rl::objectives::DDPGLoss(actor, critic);
  loss->make_value_estimator(rl::objectives::ValueEstimators::TD0);
  dist::DataParallel dp(pg);
  dp.add_group("actor", loss->parameters_of("actor_network"));
  dp.add_group("critic", loss->parameters_of("value_network"));
  EXPECT(pg.world_size() == 1 || !dp.parameters_identical(), "ranks should start from different weights");
  dp.broadcast_parameters();
  // The updater copies the (now broadcast) networks into their targets.
  rl::objectives::SoftUpdate updater(loss, rl::objectives::SoftUpdateOptions().tau(0.05));
  EXPECT(dp.parameters_identical(), "parameters differ after broadcast_parameters");
  torch::optim::Adam optim(loss->parameters(), torch::optim::AdamOptions(1e-3));
  const int64_t n = 32;
  for (int step = 0; step < 20; ++step) {
    rl::TensorDict batch = random_batch(n, 1000 * step + pg.rank());
    optim.zero_grad();
    rl::objectives::sum_losses(loss(batch)).backward();
    dp.average_gradients();
    if (step == 0) {
      // The mean of the ranks' gradients is the gradient of the mean loss over all ranks' batches.
      std::vector<rl::TensorDict> all;
      for (int64_t r = 0; r < pg.world_size(); ++r) all.push_back(random_batch(n, 1000 * step + r));
      std::vector<torch::Tensor> averaged;
      for (auto& p : loss->parameters()) averaged.push_back(p.grad().clone());
      optim.zero_grad();
      rl::objectives::sum_losses(loss(rl::TensorDict::cat(all, 0))).backward();
      auto params = loss->parameters();
      for (size_t i = 0; i < params.size(); ++i) {
        EXPECT(torch::allclose(averaged[i], params[i].grad(), 1e-4, 1e-6), "parameter {}: averaged gradient differs "
               "from the whole batch's by {}", i, (averaged[i] - params[i].grad()).abs().max().item<double>());
        params[i].mutable_grad().copy_(averaged[i]);
      }
    }
    optim.step();
    updater.step();
    EXPECT(dp.parameters_identical(), "parameters differ after step {}", step);
  }
  pg.finish();
  fmt::print("rank {}: dp ok: parameters identical after 20 steps on {} ranks\n", pg.rank(), pg.world_size());
  return 0;
}

/// Runs `f`, which must throw a c10::Error whose message contains `needle`.
template <typename F>
void expect_error(F&& f, const std::string& needle) {
  try {
    f();
  } catch (const c10::Error& e) {
    const std::string what = e.what_without_backtrace();
    EXPECT(what.find(needle) != std::string::npos, "error \"{}\" does not say \"{}\"", what, needle);
    return;
  }
  EXPECT(false, "no error (expected one saying \"{}\")", needle);
}

int data_parallel_errors(dist::ProcessGroup& pg) {
  dist::DataParallel dp(pg);
  expect_error([&] { dp.add_group("", {torch::zeros({2})}); }, "the name is empty");
  expect_error([&] { dp.add_group("a", {}); }, "'a'): no parameters");
  expect_error([&] { dp.add_group("a", {torch::zeros({2}, torch::kFloat64)}); },
               "parameter 0 must be a defined float32 CPU tensor (Gloo), got Double on cpu");
  dp.add_group("a", {torch::zeros({2})});
  expect_error([&] { dp.add_group("a", {torch::zeros({2})}); }, "a group named 'a' exists already");
  expect_error([&] { dp.average_gradients("b"); }, "no parameter group named 'b'");
  // Another layout on rank 1: every rank refuses, naming the group; the group stays usable.
  dist::DataParallel uneven(pg);
  uneven.add_group("net", {torch::zeros({pg.rank() == 1 ? 3 : 2}, torch::requires_grad())});
  expect_error([&] { uneven.broadcast_parameters(); }, "layout of parameter group 'net' differs between ranks");
  // A gradient defined on rank 0 only.
  torch::Tensor w = torch::zeros({2}, torch::requires_grad());
  dist::DataParallel half(pg);
  half.add_group("w", {w});
  if (pg.rank() == 0) w.mutable_grad() = torch::ones({2});
  expect_error([&] { half.average_gradients(); }, "is defined on 1 of 2 ranks");
  pg.finish();
  fmt::print("rank {}: dp errors ok\n", pg.rank());
  return 0;
}

int collect(dist::ProcessGroup& pg) {
  dist::DistributedCollector channel(pg);
  const int64_t rounds = 25, rows = 3, weights_every = 4;
  torch::Tensor weights = torch::zeros({5});
  if (channel.is_learner()) {
    std::multiset<int64_t> seen;
    for (int64_t round = 0; round < rounds; ++round) {
      rl::TensorDict batch = channel.receive();
      EXPECT(batch.batch_size() == rl::TensorDict::BatchSize({channel.num_collectors() * rows, 1}), "batch size");
      auto id = batch.get("id").reshape({-1});
      auto reward = batch.get({"next", "reward"}).reshape({-1});
      for (int64_t i = 0; i < id.numel(); ++i) {
        seen.insert(id[i].item<int64_t>());
        EXPECT(reward[i].item<double>() == static_cast<double>(id[i].item<int64_t>() % 1000), "reward of row {}", i);
      }
      if ((round + 1) % weights_every == 0) {
        weights.fill_(static_cast<double>(round));
        channel.push_weights({weights});
      }
    }
    int64_t expected = 0;
    for (int64_t r : channel.collector_ranks()) {
      for (int64_t k = 0; k < rounds * rows; ++k) {
        const int64_t id = r * 1000000 + k;
        EXPECT(seen.count(id) == 1, "transition {} of rank {} arrived {} times", k, r, seen.count(id));
        ++expected;
      }
    }
    EXPECT(static_cast<int64_t>(seen.size()) == expected, "{} transitions arrived, expected {}", seen.size(), expected);
    fmt::print("rank 0: collect ok: {} transitions from {} collectors, each exactly once\n", expected,
               channel.num_collectors());
  } else {
    for (int64_t round = 0; round < rounds; ++round) {
      rl::TensorDict batch({rows, 1});
      auto id = torch::arange(round * rows, (round + 1) * rows, torch::kInt64).view({rows, 1}) + pg.rank() * 1000000;
      batch.set("id", id);
      batch.set({"next", "reward"}, (id % 1000).to(torch::kFloat32).unsqueeze(-1));
      batch.set({"next", "done"}, torch::zeros({rows, 1, 1}, torch::kBool));
      channel.send(batch);
      if ((round + 1) % weights_every == 0) {
        channel.pull_weights({weights});
        EXPECT(torch::all(weights == static_cast<double>(round)).item<bool>(), "weights after round {}", round);
      }
    }
  }
  pg.finish();
  return 0;
}

int die(dist::ProcessGroup& pg, int64_t victim) {
  torch::Tensor t = torch::ones({16});
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < 400; ++i) {
    if (i == 5 && pg.rank() == victim) ::raise(SIGKILL);
    try {
      pg.allreduce_sum_(t, "step " + std::to_string(i));
    } catch (const c10::Error& e) {
      const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      fmt::print(stderr, "rank {} detected after {:.1f} s: {}\n", pg.rank(), s, e.what_without_backtrace());
      return 3;
    }
    t.fill_(1);
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  fmt::print(stderr, "rank {}: nobody died\n", pg.rank());
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  try {
    if (mode == "hold") {
      auto pg_options = dist::ProcessGroupOptions().timeout(std::chrono::milliseconds(8000));
      try {
        dist::ProcessGroup pg(dist::LaunchInfo::from_env(), pg_options);
      } catch (const c10::Error&) {
      }
      return 0;
    }
    if (mode == "handmade_bad_rank") {  // a LaunchInfo made by hand is checked as the environment is
      dist::LaunchInfo info;
      info.rank = 5;
      info.world_size = 1;
      dist::ProcessGroup pg(info, options());
      return 0;
    }
    auto pg = dist::ProcessGroup::from_env(options());
    if (mode == "dp") return data_parallel(pg);
    if (mode == "collect") return collect(pg);
    if (mode == "dp_errors") return data_parallel_errors(pg);
    if (mode == "die") return die(pg, pg.world_size() - 1);
    if (mode == "die0") return die(pg, 0);
    if (mode == "config") {
      pg.check_same("configuration", pg.rank() == 1 ? "lr=0.1" : "lr=0.01");
      return 0;
    }
    if (mode == "init") {
      pg.finish();
      fmt::print("rank {} of {}: ready (NCCL backend compiled in: {})\n", pg.rank(), pg.world_size(),
                 dist::has_nccl() ? "yes" : "no");
      return 0;
    }
    fmt::print(stderr, "usage: {} dp|dp_errors|collect|die|die0|config|hold|init|handmade_bad_rank\n", argv[0]);
    return 2;
  } catch (const c10::Error& e) {
    fmt::print(stderr, "error: {}\n", e.what_without_backtrace());
    return 1;
  }
}
