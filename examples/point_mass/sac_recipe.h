#pragma once

// A SAC recipe: TorchRL's SAC loop written by hand with rlobj's public API (networks, loss,
// optimisers, target updater, replay buffer, collector, loop) on the point mass of
// docs/environments.md. docs/trainers.md shows this file; tests/trainers/trainer_test.cpp runs it.
#include <cstdint>
#include <vector>

#include <rlobj/rlobj.h>

#include "point_mass/point_mass.h"

namespace point_mass {

/// Trains SAC on 4 point masses for `total_frames` frames (random actions for the first 400,
/// then one update per frame) and returns the mean deterministic return of 16 new episodes.
inline double train_sac(int64_t total_frames = 4000, uint64_t seed = 0) {
  namespace rl = rlobj;
  namespace m = rlobj::modules;
  torch::manual_seed(seed);  // the networks' initial weights and SAC's samples
  PointMass env(PointMassOptions().batch_size({4}).seed(seed));
  const int64_t n_obs = env.observation_spec().at("observation").shape().back();  // 2
  const int64_t n_act = env.action_spec().shape().back();                          // 1

  // The actor: MLP -> (loc, scale) -> TanhNormal within the action bounds. It explores by
  // sampling; evaluated deterministically, it acts with the distribution's mode.
  auto actor = m::ProbabilisticActor(
      m::TensorDictSequential(
          m::TensorDictModule(m::MLP(m::MLPOptions(n_obs, 2 * n_act).num_cells({64, 64}).activation(m::Activation::ReLU)),
                              {"observation"}, {"param"}),
          m::TensorDictModule(m::NormalParamExtractor(), {"param"}, {"loc", "scale"})),
      m::TanhNormal::factory(m::TanhNormalOptions::from_spec(env.action_spec())));
  // The critic Q(observation, action). SACLoss makes two independently initialised copies of it
  // (num_qvalue_nets = 2) and their targets.
  auto qvalue = m::ValueOperator(
      m::MLP(m::MLPOptions(n_obs + n_act, 1).num_cells({64, 64}).activation(m::Activation::ReLU)),
      /*in_keys=*/{"observation", "action"});

  // The loss with TD(0) targets, one Adam per part (actor, critics, temperature), and the soft
  // update of the target critics.
  rl::objectives::SACLoss<m::ProbabilisticActor, m::ValueOperator> loss(actor, qvalue, env.action_spec());
  loss->make_value_estimator(rl::objectives::ValueEstimators::TD0,
                             rl::objectives::value::ValueEstimatorOptions().gamma(0.99));
  torch::optim::Adam optim_actor(loss->parameters_of("actor_network"), torch::optim::AdamOptions(1e-3));
  torch::optim::Adam optim_qvalue(loss->parameters_of("qvalue_network"), torch::optim::AdamOptions(1e-3));
  torch::optim::Adam optim_alpha(loss->parameters_of("log_alpha"), torch::optim::AdamOptions(1e-3));
  rl::objectives::SoftUpdate updater(loss, rl::objectives::SoftUpdateOptions().tau(0.005));

  // Data: a collector stepping the 4 point masses with the sampling actor (random actions for the
  // first 400 frames), and a replay buffer of transitions.
  const int64_t init_random_frames = 400;
  rl::collectors::SyncDataCollector collector(env, m::TensorDictSequential(actor), /*frames_per_batch=*/4,
                                              total_frames, init_random_frames);
  rl::data::ReplayBuffer buffer(rl::data::ReplayBufferOptions(100000).seed(seed + 1));
  // What the loss reads of a transition (the actor's own outputs, such as "loc", are left out:
  // the random frames do not have them).
  const std::vector<rl::NestedKey> transition = {"observation", "action", {"next", "observation"},
                                                 {"next", "reward"}, {"next", "done"}, {"next", "terminated"}};

  // The loop: store each batch ([4, 1]: one step of every point mass), then one update per frame.
  int64_t frames = 0;
  for (rl::TensorDict batch : collector) {
    buffer.extend(batch.select(transition));
    frames += batch.numel();
    if (frames <= init_random_frames) continue;
    for (int64_t i = 0; i < batch.numel(); ++i) {
      rl::TensorDict out = loss(buffer.sample(256));
      optim_actor.zero_grad();
      optim_qvalue.zero_grad();
      optim_alpha.zero_grad();
      // Each loss trains only its own part (the critics are detached in the actor's loss, and
      // so on), so one backward of the sum gives every part its gradient.
      (out.get("loss_actor") + out.get("loss_qvalue") + out.get("loss_alpha")).backward();
      optim_actor.step();
      optim_qvalue.step();
      optim_alpha.step();
      updater.step();
    }
  }

  // Evaluation: 16 new episodes with deterministic actions.
  PointMass eval_env(PointMassOptions().batch_size({16}).seed(seed + 100));
  return rl::trainers::Evaluator(eval_env, actor, rl::trainers::EvaluatorOptions().max_steps(200))();
}

}  // namespace point_mass
