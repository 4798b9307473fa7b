// Rollouts on a batched Pendulum: 4 pendulums stepped as one tensor batch, first with random
// actions from the action spec, then with an MLP policy.
#include <iostream>

#include <rlobj/rlobj.h>
namespace rl = rlobj;

int main() {
  torch::manual_seed(0);
  auto env = rl::envs::Pendulum(rl::envs::PendulumOptions().batch_size({4}).seed(0));

  rl::TensorDict random = env.rollout(/*max_steps=*/50);
  std::cout << "random policy:\n" << random << "\n";

  auto policy = rl::modules::Actor(rl::modules::MLP(rl::modules::MLPOptions(3, 1).num_cells({32, 32})));
  rl::TensorDict rollout = env.rollout(/*max_steps=*/50, policy);
  torch::Tensor returns = rollout.get({"next", "reward"}).sum(/*dim=*/-2).squeeze(-1).contiguous();  // [4]
  fmt::print("MLP policy: batch_size {}, return of each pendulum over 50 steps: [{:.1f}]\n",
             rl::detail::shape_str(rollout.batch_size()),
             fmt::join(returns.data_ptr<float>(), returns.data_ptr<float>() + returns.numel(), ", "));
  return 0;
}
