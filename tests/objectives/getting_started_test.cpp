// The README's first example (examples/getting_started.cpp) with assertions on every step.
#include <rlobj/rlobj.h>

#include <catch2/catch.hpp>
#include <torch/torch.h>

// Everything in a namespace of its own, so that a unity build can join test files.
namespace rlobj_test_objectives_getting_started_test {

namespace rl = rlobj;

TEST_CASE("The getting-started loop runs as in TorchRL", "[ddpg][example]") {
  torch::manual_seed(0);
  auto env = rl::envs::Pendulum();
  int64_t n_obs = env.observation_spec().at("observation").shape().back();
  int64_t n_act = env.action_spec().shape().back();
  CHECK(n_obs == 3);
  CHECK(n_act == 1);

  auto actor = rl::modules::Actor(rl::modules::MLP(rl::modules::MLPOptions(n_obs, n_act).num_cells({32, 32})));
  auto value_net = rl::modules::ValueOperator(
      rl::modules::MLP(rl::modules::MLPOptions(n_obs + n_act, 1).num_cells({32, 32})),
      /*in_keys=*/{"observation", "action"});
  auto ddpg_loss = rl::objectives::DDPGLoss(actor, value_net);

  rl::TensorDict rollout = env.rollout(/*max_steps=*/100, actor);
  CHECK(rollout.batch_size() == std::vector<int64_t>{100});

  rl::TensorDict loss_vals = ddpg_loss(rollout);
  CHECK(rollout.get("td_error").sizes() == torch::IntArrayRef({100}));
  std::ostringstream listing;
  listing << loss_vals;
  CHECK(listing.str().find("loss_value: Tensor(shape=[], device=cpu, dtype=float32)") != std::string::npos);

  torch::Tensor total_loss = rl::objectives::sum_losses(loss_vals);
  // Summing the "loss_*" entries by hand gives the same.
  torch::Tensor by_hand = torch::zeros({});
  for (const auto& [key, value] : loss_vals.items()) {
    if (key.str().rfind("loss_", 0) == 0) by_hand = by_hand + value;
  }
  CHECK(torch::allclose(total_loss, by_hand));

  auto actor_before = actor->parameters()[0].clone();
  auto value_before = value_net->parameters()[0].clone();
  torch::optim::Adam optim(ddpg_loss->parameters());
  total_loss.backward();
  optim.step();
  optim.zero_grad();
  CHECK_FALSE(torch::equal(actor->parameters()[0], actor_before));  // the user's networks moved
  CHECK_FALSE(torch::equal(value_net->parameters()[0], value_before));

  auto target = ddpg_loss->target_value_network()->parameters()[0];
  auto target_before = target.clone();
  auto updater = rl::objectives::SoftUpdate(ddpg_loss, rl::objectives::SoftUpdateOptions().eps(0.99));
  CHECK(torch::equal(target, value_net->parameters()[0]));  // the updater initialised the target
  updater.step();
  CHECK(torch::allclose(target, value_net->parameters()[0]));  // already equal: the blend keeps it
  CHECK_FALSE(torch::equal(target, target_before));
}

}  // namespace rlobj_test_objectives_getting_started_test
