#pragma once

// ppo_pendulum's task for examples/common/ppo.h: the environment, the actor and the defaults.

#include <cmath>
#include <cstdint>
#include <tuple>

#include <ATen/core/Generator.h>
#include <rlobj/rlobj.h>

#include "common/ppo.h"

namespace ppo_pendulum {

namespace rl = rlobj;


/// Pendulum-v1 (gym's, 200-step episodes): TorchRL's PPO MuJoCo example adapted — an MLP writes
/// the location, a state-independent learned scale is added, a TanhNormal within the action
/// bounds samples; 2048 frames per batch, minibatches of 64, 10 epochs, lr 3e-4 annealed, critic
/// coefficient 0.25, no entropy bonus, l2 critic loss. Pendulum's changes: rewards scaled by 0.1
/// (the critic's targets would otherwise reach the hundreds) and gamma 0.97 (0.99 learns slowly
/// over 200-step episodes; 0.9, rl-baselines3-zoo's, plateaus higher).
struct Task {
  static constexpr const char* kProgram = "ppo_pendulum";
  static constexpr const char* kEnvName = "Pendulum-v1";
  static constexpr int64_t kMaxEpisodeSteps = 200;
  static constexpr bool kDiscrete = false;
  using Env = rl::envs::Pendulum;

  static ppo::Config defaults() {
    ppo::Config c;
    c.total_frames = 245760;  // 120 batches
    c.frames_per_batch = 2048;
    c.mini_batch_size = 64;
    c.num_epochs = 10;
    c.gamma = 0.97;
    c.critic_coef = 0.25;
    c.reward_scale = 0.1;
    c.eval_every = 20480;
    return c;
  }
  static Env make_env(const ppo::Config& c, int64_t n, uint64_t seed) {
    return Env(rl::envs::PendulumOptions().batch_size({n}).seed(seed).device(torch::Device(c.device)));
  }
  static rl::modules::ProbabilisticActor make_actor(const Env& env, const ppo::Config& c, at::Generator& init) {
    const int64_t n_obs = env.observation_spec().at("observation").shape().back();
    const int64_t n_act = env.action_spec().shape().back();
    // TorchRL's PPO MuJoCo example: the MLP writes the location, the scale is learned apart
    // from the state (AddStateIndependentNormalScale, scale_lb 1e-8).
    auto mlp = ppo::make_mlp(c, n_obs, n_act, init);
    if (c.orthogonal_init) ppo::orthogonal_init(mlp, std::sqrt(2.0), 0.01, init);
    return rl::modules::ProbabilisticActor(
        rl::modules::TensorDictSequential(
            rl::modules::TensorDictModule(mlp, {"observation"}, {"loc"}),
            rl::modules::TensorDictModule(rl::modules::AddStateIndependentNormalScale(n_act, /*scale_lb=*/1e-8), {"loc"},
                                          {"loc", "scale"})),
        rl::modules::TanhNormal::factory(rl::modules::TanhNormalOptions::from_spec(env.action_spec())),
        rl::modules::ProbabilisticActorOptions().return_log_prob(true));
  }
  static void to_env_action(rl::TensorDict&, const ppo::Config&) {}
};

}  // namespace ppo_pendulum

