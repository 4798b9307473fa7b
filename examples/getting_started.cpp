// TorchRL's "getting started with model optimization", in C++ (the README's first example).
#include <iostream>

#include <rlobj/rlobj.h>
namespace rl = rlobj;

int main() {
  torch::manual_seed(0);
  auto env = rl::envs::Pendulum();                  // gym "Pendulum-v1" semantics, 200-step limit
  int64_t n_obs = env.observation_spec().at("observation").shape().back();
  int64_t n_act = env.action_spec().shape().back();

  auto actor = rl::modules::Actor(
      rl::modules::MLP(rl::modules::MLPOptions(n_obs, n_act).num_cells({32, 32})));
  auto value_net = rl::modules::ValueOperator(
      rl::modules::MLP(rl::modules::MLPOptions(n_obs + n_act, 1).num_cells({32, 32})),
      /*in_keys=*/{"observation", "action"});

  auto ddpg_loss = rl::objectives::DDPGLoss(actor, value_net);

  rl::TensorDict rollout = env.rollout(/*max_steps=*/100, actor);
  rl::TensorDict loss_vals = ddpg_loss(rollout);
  std::cout << loss_vals << "\n";                   // a TorchRL-like listing of fields

  torch::Tensor total_loss = rl::objectives::sum_losses(loss_vals);   // sum of "loss_*"
  torch::optim::Adam optim(ddpg_loss->parameters());
  total_loss.backward();
  optim.step();
  optim.zero_grad();

  auto updater = rl::objectives::SoftUpdate(ddpg_loss, rl::objectives::SoftUpdateOptions().eps(0.99));
  updater.step();

  std::cout << "total loss: " << total_loss.item<float>() << "\n";
  return 0;
}
