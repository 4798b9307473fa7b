// rlobj::trainers: the loop's stages and gates, the hooks, the checkpoint registry, and training
// through the library trainer with a toy loss and with a user-defined environment
// (examples/point_mass/point_mass.h, the one docs/environments.md writes).
#include <rlobj/rlobj.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include <catch2/catch.hpp>
#include <torch/torch.h>

#include "objectives/toy_loss.h"
#include "point_mass/point_mass.h"
#include "point_mass/sac_recipe.h"

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_trainers_trainer_test {

namespace rl = rlobj;
using Catch::Matchers::Contains;
using rl::TensorDict;
using rl::trainers::Stage;
using rl::trainers::StepContext;
using rl::trainers::Trainer;
using rl::trainers::TrainerOptions;

namespace {

std::string temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("rlobj_trainer_test_" + name)).string();
}

/// A collector over point masses with random actions (no policy).
std::shared_ptr<rl::collectors::SyncDataCollector> random_collector(point_mass::PointMass& env, int64_t per_batch,
                                                                    int64_t total) {
  return std::make_shared<rl::collectors::SyncDataCollector>(
      env, [&env](TensorDict& td) { env.rand_action(td); }, per_batch, total);
}

}  // namespace

TEST_CASE("Trainer: the stages run in TorchRL's order, updates wait for init_random_frames and the gates",
          "[trainers]") {
  point_mass::PointMass env(point_mass::PointMassOptions().batch_size({2}).seed(1));
  std::vector<std::string> log;
  int64_t updates_seen = 0;
  Trainer trainer(
      random_collector(env, /*per_batch=*/4, /*total=*/16),
      [&](const TensorDict& sub) {
        log.push_back("update" + std::to_string(sub.numel()));
        ++updates_seen;
        return TensorDict(TensorDict::BatchSize{});
      },
      TrainerOptions().optim_steps_per_batch(2).init_random_frames(8));
  bool gate_open = false;
  trainer.add_gate([&] { return gate_open; });
  for (Stage stage : {Stage::BatchProcess, Stage::PreStepsLog, Stage::PreOptimSteps, Stage::ProcessOptimBatch,
                      Stage::PostLoss, Stage::PostOptim, Stage::PostOptimLog, Stage::PostSteps, Stage::PostStepsLog}) {
    trainer.register_op(stage, [&log, stage](StepContext& c) {
      log.push_back(rl::trainers::stage_name(stage));
      if (stage == Stage::ProcessOptimBatch) c.sub_batch = c.batch.index({0});  // one env's steps
    });
  }
  REQUIRE(trainer.step());  // 4 frames: before init_random_frames
  CHECK(log == std::vector<std::string>{"batch_process", "pre_steps_log", "post_steps", "post_steps_log"});
  log.clear();
  REQUIRE(trainer.step());  // 8 frames, but the gate is closed
  CHECK(updates_seen == 0);
  gate_open = true;
  log.clear();
  REQUIRE(trainer.step());  // 12 frames: two updates on a sub-batch of 2 steps
  CHECK(log == std::vector<std::string>{"batch_process", "pre_steps_log", "pre_optim_steps", "process_optim_batch",
                                        "update2", "post_loss", "post_optim", "post_optim_log", "process_optim_batch",
                                        "update2", "post_loss", "post_optim", "post_optim_log", "post_steps",
                                        "post_steps_log"});
  REQUIRE(trainer.step());
  CHECK_FALSE(trainer.step());  // 16 frames: the collector is exhausted
  CHECK(trainer.frames() == 16);
  CHECK(trainer.updates() == 4);
  CHECK(trainer.batches() == 4);

  CHECK_THROWS_WITH(Trainer(nullptr, [](const TensorDict& b) { return b; }), Contains("the collector is empty"));
  CHECK_THROWS_WITH(trainer.register_op(Stage::PostLoss, nullptr), Contains("post_loss"));
}

TEST_CASE("Trainer: a toy loss and a user-defined environment train through the library trainer", "[trainers]") {
  // The toy loss (tests/objectives/toy_loss.h), with gamma 0, regresses the critic on the point
  // mass's rewards under random actions, from a replay buffer: on transitions it never saw, its
  // error falls to a fraction of the untrained critic's.
  point_mass::PointMass env(point_mass::PointMassOptions().batch_size({4}).seed(2));
  point_mass::PointMass held_out_env(point_mass::PointMassOptions().batch_size({8}).seed(12));
  torch::manual_seed(5);
  rl::modules::ValueOperator critic(rl::modules::MLP(rl::modules::MLPOptions(2, 1).num_cells({32, 32})));
  rlobj_test::ToyLoss loss(critic, rlobj_test::ToyLossOptions().gamma(0.0));
  auto update = std::make_shared<rl::trainers::LossUpdate<rlobj_test::ToyLoss>>(
      loss, std::make_shared<torch::optim::Adam>(loss->parameters(), torch::optim::AdamOptions(3e-3)),
      std::make_shared<rl::objectives::SoftUpdate>(loss, rl::objectives::SoftUpdateOptions().tau(0.05)));
  Trainer trainer(random_collector(env, 4, 4000), [update](const TensorDict& b) { return (*update)(b); },
                  TrainerOptions().optim_steps_per_batch(1).init_random_frames(200));
  rl::data::ReplayBuffer rb(rl::data::ReplayBufferOptions(4000).seed(3));
  rl::trainers::ReplayBufferHook(rb, 64).register_with(trainer);
  rl::trainers::LossTracker losses({"loss_value"});
  losses.register_with(trainer);
  int64_t updates = 0;
  trainer.register_op(Stage::PostLoss, [&](StepContext& c) {
    ++updates;
    CHECK(c.losses.get("loss_value").item<double>() == losses.last("loss_value"));
  });
  const TensorDict held_out = held_out_env.rollout(/*max_steps=*/200).reshape({-1});
  const auto error = [&] {
    torch::NoGradGuard no_grad;
    TensorDict in = critic(held_out.select({"observation"}));
    return (in.get("state_value") - held_out.get({"next", "reward"})).pow(2).mean().item<double>();
  };
  const double before = error();
  trainer.train();
  CHECK(updates == 951);  // from frame 200: batches 50 to 1000
  const double after = error();
  INFO("held-out error before " << before << ", after " << after);
  CHECK(after < 0.2 * before);
}

TEST_CASE("Trainer: DDPG learns the user-defined point mass through the library trainer", "[trainers]") {
  // The recipe of docs/environments.md: the environment, an actor and a critic, DDPGLoss, the
  // replay buffer, ActorCriticUpdate, and the trainer. 2,000 frames take the mean evaluation
  // return from that of an untrained actor to near the best a bounded force allows.
  namespace m = rl::modules;
  point_mass::PointMass env(point_mass::PointMassOptions().batch_size({4}).seed(0));
  point_mass::PointMass eval_env(point_mass::PointMassOptions().batch_size({16}).seed(100));
  torch::manual_seed(0);
  auto actor = m::TensorDictSequential(
      m::TensorDictModule(m::MLP(m::MLPOptions(2, 1).num_cells({64, 64}).activation(m::Activation::ReLU)),
                          {"observation"}, {"param"}),
      m::TanhModule({"param"}, {"action"}, env.action_spec()));
  auto critic = m::ValueOperator(m::MLP(m::MLPOptions(3, 1).num_cells({64, 64}).activation(m::Activation::ReLU)),
                                 {"observation", "action"});
  rl::objectives::DDPGLoss<m::TensorDictSequential> loss(actor, critic);
  auto adam = [](std::vector<torch::Tensor> p, double lr) {
    return std::make_shared<torch::optim::Adam>(std::move(p), torch::optim::AdamOptions(lr));
  };
  auto update = std::make_shared<rl::trainers::ActorCriticUpdate<decltype(loss)>>(
      loss, "loss_value", adam(loss->parameters_of("actor_network"), 1e-3),
      adam(loss->parameters_of("value_network"), 1e-3), nullptr,
      std::make_shared<rl::objectives::SoftUpdate>(loss, rl::objectives::SoftUpdateOptions().tau(0.01)));
  auto noise = m::AdditiveGaussianModule(env.action_spec(), m::AdditiveGaussianModuleOptions().std(0.2).seed(1));
  auto collector = std::make_shared<rl::collectors::SyncDataCollector>(env, m::TensorDictSequential(actor, noise),
                                                                       /*frames_per_batch=*/4, /*total_frames=*/2000,
                                                                       /*init_random_frames=*/200);
  Trainer trainer(collector, [update](const TensorDict& b) { return (*update)(b); },
                  TrainerOptions().optim_steps_per_batch(4).init_random_frames(200));
  rl::data::ReplayBuffer rb(rl::data::ReplayBufferOptions(10000).seed(2));
  const std::vector<rl::NestedKey> transition = {"observation", "action", {"next", "observation"},
                                                 {"next", "reward"}, {"next", "done"}, {"next", "terminated"}};
  rl::trainers::ReplayBufferHook(rb, 128, transition).register_with(trainer);
  rl::trainers::Evaluator evaluate(eval_env, actor, rl::trainers::EvaluatorOptions().max_steps(200).seed(7));
  const double before = evaluate();
  trainer.train();
  const double after = evaluate();
  INFO("evaluation return before " << before << ", after " << after);
  // x, v ~ U(-1, 1) at the start: a policy that brings the mass to rest at 0 collects about -20;
  // the untrained actor (measured: about -1100) pushes it away.
  CHECK(after > -30);
  CHECK(after > before + 20);
}

TEST_CASE("The SAC recipe of docs/trainers.md learns the user-defined point mass", "[trainers][sac]") {
  // examples/point_mass/sac_recipe.h: the loop by hand. An untrained actor collects about -1100
  // (it pushes the mass away); bringing the mass to rest at 0 from x, v ~ U(-1, 1) collects about
  // -10 to -20. Measured after 4,000 frames: -10.9, -10.7, -10.4 on seeds 0, 1, 2 (-14 to -31
  // after 3,000).
  const double after = point_mass::train_sac(/*total_frames=*/4000, /*seed=*/0);
  INFO("evaluation return after 4,000 frames: " << after);
  CHECK(after > -30);
}

TEST_CASE("Trainer checkpoints: every record round-trips, and wrong files are refused naming file and record",
          "[trainers][checkpoint]") {
  const std::string path = temp_path("records.pt");
  auto make = [](point_mass::PointMass& env, int64_t& value) {
    auto trainer = std::make_unique<Trainer>(random_collector(env, 2, 20),
                                             [](const TensorDict&) { return TensorDict(TensorDict::BatchSize{}); });
    trainer->records().set_kind("rlobj.test.trainer");
    trainer->records().set_fingerprint("size=1");
    trainer->records().add(
        "value", [&value](torch::serialize::OutputArchive& a) { a.write("v", torch::tensor(value)); },
        [&value](torch::serialize::InputArchive& a) {
          torch::Tensor v;
          a.read("v", v);
          TORCH_CHECK_VALUE(v.item<int64_t>() >= 0, "value must be >= 0");
          value = v.item<int64_t>();
        });
    return trainer;
  };
  point_mass::PointMass env_a(point_mass::PointMassOptions().batch_size({2}).seed(4));
  int64_t value_a = 7;
  auto a = make(env_a, value_a);
  for (int i = 0; i < 3; ++i) a->step();
  a->save(path);
  CHECK(a->records().names() == std::vector<std::string>{"collector", "trainer_counters", "value"});

  point_mass::PointMass env_b(point_mass::PointMassOptions().batch_size({2}).seed(9));
  int64_t value_b = 0;
  auto b = make(env_b, value_b);
  b->load(path);
  CHECK(value_b == 7);
  CHECK(b->frames() == 6);
  CHECK(b->batches() == 3);
  // Both continue identically (the collector's environments and generator came back).
  a->step();
  b->step();
  CHECK(a->frames() == b->frames());

  SECTION("another fingerprint") {
    b->records().set_fingerprint("size=2");
    REQUIRE_THROWS_WITH(b->load(path), Contains("was made with size=1 but this run uses size=2"));
  }
  SECTION("another kind") {
    b->records().set_kind("rlobj.test.other");
    REQUIRE_THROWS_WITH(b->load(path), Contains("expected a rlobj.test.other"));
  }
  SECTION("a record that fails to load names the file and the record") {
    value_a = -1;
    a->save(path);
    REQUIRE_THROWS_WITH(b->load(path), Contains("record \"value\": value must be >= 0") && Contains(path));
  }
  SECTION("a record the file lacks") {
    b->records().add("extra", [](torch::serialize::OutputArchive&) {}, [](torch::serialize::InputArchive&) {});
    REQUIRE_THROWS_WITH(b->load(path), Contains("has no record \"extra\""));
  }
  SECTION("a checkpoint of the examples' own trainers (layout 1)") {
    torch::serialize::OutputArchive old;
    rl::write_format(old, "rlobj.test.trainer");
    old.write("config", c10::IValue(std::string("size=1")));
    rl::save_atomic(old, path);
    REQUIRE_THROWS_WITH(b->load(path), Contains("has layout 1"));
  }
  SECTION("a name taken twice") {
    REQUIRE_THROWS_WITH(b->records().add("value", nullptr, nullptr), Contains("already registered"));
  }
  std::remove(path.c_str());
}

TEST_CASE("Offline trainer: updates from a dataset until total_updates, resumable, errors named", "[trainers]") {
  // A dataset of 50 transitions whose "id" says which one was sampled.
  rl::data::ReplayBuffer dataset(rl::data::ReplayBufferOptions(64).seed(4));
  TensorDict rows({50});
  rows.set("id", torch::arange(50, torch::kLong).unsqueeze(-1));
  rows.set("observation", torch::randn({50, 3}));
  dataset.extend(rows);
  std::vector<torch::Tensor> seen;
  auto make = [&](int64_t total) {
    auto t = std::make_unique<Trainer>(rl::trainers::Offline{},
                                       [&](const TensorDict& sub) {
                                         seen.push_back(sub.get("id").squeeze(-1).clone());
                                         return TensorDict(TensorDict::BatchSize{});
                                       },
                                       TrainerOptions().optim_steps_per_batch(3).total_updates(total));
    rl::trainers::DatasetHook(dataset, /*batch_size=*/8).register_with(*t);
    return t;
  };
  auto trainer = make(7);
  CHECK(trainer->offline());
  int64_t steps = 0;
  while (trainer->step()) ++steps;
  CHECK(steps == 3);  // 3 + 3 + 1 updates
  CHECK(trainer->updates() == 7);
  CHECK(trainer->frames() == 0);
  CHECK(trainer->episodes() == 0);
  REQUIRE(seen.size() == 7);
  for (const auto& ids : seen) CHECK(ids.numel() == 8);
  CHECK_FALSE(trainer->step());  // done stays done
  REQUIRE_THROWS_WITH(trainer->collector(), Contains("an offline trainer has no collector"));

  SECTION("a resumed run draws the same batches") {
    const std::string path = temp_path("offline.pt");
    seen.clear();
    auto first = make(6);
    first->step();
    first->save(path);
    first->train();
    const std::vector<torch::Tensor> straight(seen.begin() + 3, seen.end());
    seen.clear();
    auto resumed = make(6);
    resumed->load(path);
    CHECK(resumed->updates() == 3);
    resumed->train();
    REQUIRE(seen.size() == straight.size());
    for (size_t i = 0; i < seen.size(); ++i) CHECK(torch::equal(seen[i], straight[i]));
    // Another dataset size is refused, naming both.
    rl::data::ReplayBuffer other(rl::data::ReplayBufferOptions(64));
    other.extend(rows.index({torch::indexing::Slice(0, 40)}));
    Trainer mismatched(rl::trainers::Offline{}, [](const TensorDict&) { return TensorDict(TensorDict::BatchSize{}); },
                       TrainerOptions().total_updates(6));
    rl::trainers::DatasetHook(other, 8).register_with(mismatched);
    REQUIRE_THROWS_WITH(mismatched.load(path), Contains("a dataset of 50 transitions; this one holds 40"));
    std::remove(path.c_str());
  }
  SECTION("a dataset smaller than a batch is an error, not an endless loop") {
    auto big_batch = std::make_unique<Trainer>(rl::trainers::Offline{},
                                               [](const TensorDict&) { return TensorDict(TensorDict::BatchSize{}); },
                                               TrainerOptions().total_updates(5));
    rl::trainers::DatasetHook(dataset, /*batch_size=*/51).register_with(*big_batch);
    REQUIRE_THROWS_WITH(big_batch->step(), Contains("a gate is closed, so no update can ever run"));
  }
  SECTION("bad options") {
    auto noop = [](const TensorDict&) { return TensorDict(TensorDict::BatchSize{}); };
    REQUIRE_THROWS_WITH(Trainer(rl::trainers::Offline{}, noop, TrainerOptions()),
                        Contains("total_updates must be >= 1, got 0"));
    REQUIRE_THROWS_WITH(Trainer(rl::trainers::Offline{}, noop, TrainerOptions().total_updates(3).init_random_frames(10)),
                        Contains("init_random_frames must be 0"));
    REQUIRE_THROWS_WITH(Trainer(rl::trainers::Offline{}, noop, TrainerOptions().total_updates(3).optim_steps_per_batch(0)),
                        Contains("optim_steps_per_batch must be >= 1"));
    REQUIRE_THROWS_WITH(Trainer(rl::trainers::Offline{}, Trainer::Update(), TrainerOptions().total_updates(3)),
                        Contains("the update is empty"));
    REQUIRE_THROWS_WITH(rl::trainers::DatasetHook(dataset, 0), Contains("batch_size must be positive, got 0"));
  }
}

TEST_CASE("ReturnTracker: episode returns in time order per environment, in the chosen dtype", "[trainers]") {
  // Two environments, three steps: env 0 ends an episode at t = 1, env 1 at t = 2.
  TensorDict batch({2, 3});
  batch.set({"next", "reward"}, torch::tensor({{1.f, 2.f, 4.f}, {0.5f, 0.25f, 0.125f}}).unsqueeze(-1));
  batch.set({"next", "done"}, torch::tensor({{false, true, false}, {false, false, true}}).unsqueeze(-1));
  rl::trainers::ReturnTracker tracker(rl::trainers::ReturnTrackerOptions().window(2).dtype(torch::kFloat64));
  CHECK(std::isnan(tracker.recent_return()));
  CHECK(tracker.track(batch) == 2);
  CHECK(tracker.recent_return() == Approx((3.0 + 0.875) / 2));
  // env 0 carried 4 over; it ends now with 4 + 1.
  batch.set({"next", "done"}, torch::tensor({{true, false, false}, {false, false, false}}).unsqueeze(-1));
  CHECK(tracker.track(batch) == 1);
  CHECK(tracker.recent_return() == Approx((0.875 + 5.0) / 2));  // a window of 2
  CHECK_THROWS_WITH(rl::trainers::ReturnTracker(rl::trainers::ReturnTrackerOptions().window(0)),
                    Contains("window must be positive"));
}

TEST_CASE("MiniBatchHook: epochs of minibatches, each transition once per epoch", "[trainers]") {
  point_mass::PointMass env(point_mass::PointMassOptions().batch_size({2}).seed(3));
  rl::data::MiniBatches minibatches(rl::data::MiniBatchesOptions(4).seed(5));
  std::vector<TensorDict> seen;
  TensorDict flat;
  Trainer trainer(
      random_collector(env, 8, 8),
      [&](const TensorDict& sub) {
        seen.push_back(sub);
        return TensorDict(TensorDict::BatchSize{});
      },
      TrainerOptions().optim_steps_per_batch(3 * 2));  // 3 epochs of 2 minibatches
  trainer.register_op(Stage::BatchProcess, [&](StepContext& c) {
    c.batch = c.batch.reshape({-1});
    flat = c.batch;
  });
  rl::trainers::MiniBatchHook(minibatches, 3).register_with(trainer);
  trainer.train();
  REQUIRE(seen.size() == 6);
  const auto sorted_x = [](const torch::Tensor& obs) { return std::get<0>(obs.select(-1, 0).sort()); };
  for (int epoch = 0; epoch < 3; ++epoch) {
    const torch::Tensor obs = torch::cat({seen[2 * epoch].get("observation"), seen[2 * epoch + 1].get("observation")});
    CHECK(torch::equal(sorted_x(obs), sorted_x(flat.get("observation"))));  // every transition once
  }
  CHECK_FALSE(torch::equal(seen[0].get("observation"), seen[2].get("observation")));  // a new order each epoch

  // More optimisation steps than the epochs give is an error naming the setting.
  point_mass::PointMass env2(point_mass::PointMassOptions().batch_size({2}).seed(3));
  Trainer too_many(random_collector(env2, 8, 8), [](const TensorDict&) { return TensorDict(TensorDict::BatchSize{}); },
                   TrainerOptions().optim_steps_per_batch(7));
  too_many.register_op(Stage::BatchProcess, [](StepContext& c) { c.batch = c.batch.reshape({-1}); });
  rl::trainers::MiniBatchHook(minibatches, 3).register_with(too_many);
  CHECK_THROWS_WITH(too_many.step(), Contains("more optimisation steps than num_epochs"));
}

}  // namespace rlobj_test_trainers_trainer_test
