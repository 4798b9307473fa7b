#pragma once

// TD3's and SAC's updates as a LibTorch user writes them by hand: torch::nn::Sequential
// networks, one module per critic, cloned targets, Adam per network, per-tensor soft updates.
// Each does the same work as rlobj's TD3Loss / SACLoss with TorchRL's defaults (twin critics,
// smooth L1, TD(0), mean; TD3 with target smoothing 0.2 clipped at 0.5; SAC v2 with a TanhNormal
// actor and a learned temperature) and one update of every network: the benchmark's baselines.

#include <cmath>
#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include <torch/torch.h>

#include "handwritten_ddpg.h"

namespace rlobj_bench {

inline void soft_update(torch::nn::Module& target, torch::nn::Module& source, double tau) {
  torch::NoGradGuard no_grad;
  auto src = source.parameters();
  auto dst = target.parameters();
  for (size_t i = 0; i < src.size(); ++i) dst[i].mul_(1 - tau).add_(src[i], tau);
}

inline torch::nn::Sequential frozen_clone(const torch::nn::Sequential& net) {
  auto copy = std::dynamic_pointer_cast<torch::nn::SequentialImpl>(net->clone());
  for (auto& p : copy->parameters()) p.requires_grad_(false);
  return torch::nn::Sequential(copy);
}

struct HandwrittenTD3 {
  torch::nn::Sequential actor, actor_target, q1, q2, q1_target, q2_target;
  std::unique_ptr<torch::optim::Adam> actor_opt, critic_opt;
  double gamma = 0.99, tau = 0.005, policy_noise = 0.2, noise_clip = 0.5, low = -2, high = 2;

  HandwrittenTD3(int64_t n_obs, int64_t n_act, const std::vector<int64_t>& cells, bool relu)
      : actor(make_mlp(n_obs, n_act, cells, relu)),
        actor_target(frozen_clone(actor)),
        q1(make_mlp(n_obs + n_act, 1, cells, relu)),
        q2(make_mlp(n_obs + n_act, 1, cells, relu)),
        q1_target(frozen_clone(q1)),
        q2_target(frozen_clone(q2)) {
    actor_opt = std::make_unique<torch::optim::Adam>(actor->parameters(), torch::optim::AdamOptions(1e-3));
    auto critic_params = q1->parameters();
    for (auto& p : q2->parameters()) critic_params.push_back(p);
    critic_opt = std::make_unique<torch::optim::Adam>(critic_params, torch::optim::AdamOptions(1e-3));
  }

  void update(const torch::Tensor& obs, const torch::Tensor& act, const torch::Tensor& reward,
              const torch::Tensor& terminated, const torch::Tensor& next_obs) {
    torch::Tensor y;
    {
      torch::NoGradGuard no_grad;
      auto noise = (torch::randn_like(act) * policy_noise).clamp(-noise_clip, noise_clip);
      auto next_act = (actor_target->forward(next_obs) + noise).clamp(low, high);
      auto next_in = torch::cat({next_obs, next_act}, 1);
      auto next_q = torch::min(q1_target->forward(next_in), q2_target->forward(next_in));
      y = reward + gamma * terminated.logical_not() * next_q;
    }
    auto in = torch::cat({obs, act}, 1);
    auto critic_loss = torch::smooth_l1_loss(q1->forward(in), y) + torch::smooth_l1_loss(q2->forward(in), y);
    critic_opt->zero_grad();
    critic_loss.backward();
    critic_opt->step();

    auto actor_loss = -q1->forward(torch::cat({obs, actor->forward(obs)}, 1)).mean();
    actor_opt->zero_grad();
    actor_loss.backward();
    actor_opt->step();

    soft_update(*actor_target, *actor, tau);
    soft_update(*q1_target, *q1, tau);
    soft_update(*q2_target, *q2, tau);
  }
};

struct HandwrittenSAC {
  torch::nn::Sequential actor, q1, q2, q1_target, q2_target;
  torch::Tensor log_alpha;
  std::unique_ptr<torch::optim::Adam> actor_opt, critic_opt, alpha_opt;
  double gamma = 0.99, tau = 0.005, target_entropy = -1, scale_half_range = 2;

  HandwrittenSAC(int64_t n_obs, int64_t n_act, const std::vector<int64_t>& cells, bool relu)
      : actor(make_mlp(n_obs, 2 * n_act, cells, relu)),
        q1(make_mlp(n_obs + n_act, 1, cells, relu)),
        q2(make_mlp(n_obs + n_act, 1, cells, relu)),
        q1_target(frozen_clone(q1)),
        q2_target(frozen_clone(q2)),
        log_alpha(torch::zeros({}, torch::requires_grad())) {
    target_entropy = -static_cast<double>(n_act);
    actor_opt = std::make_unique<torch::optim::Adam>(actor->parameters(), torch::optim::AdamOptions(1e-3));
    auto critic_params = q1->parameters();
    for (auto& p : q2->parameters()) critic_params.push_back(p);
    critic_opt = std::make_unique<torch::optim::Adam>(critic_params, torch::optim::AdamOptions(1e-3));
    alpha_opt = std::make_unique<torch::optim::Adam>(std::vector<torch::Tensor>{log_alpha}, torch::optim::AdamOptions(1e-3));
  }

  // A tanh-squashed Gaussian sample in [-2, 2] and its log-probability.
  std::pair<torch::Tensor, torch::Tensor> sample(const torch::Tensor& obs) {
    auto out = actor->forward(obs).chunk(2, -1);
    auto loc = out[0];
    auto scale = (torch::softplus(out[1] + 0.5254586935043335) + 0.01).clamp_min(1e-4);
    auto x = loc + torch::randn_like(loc) * scale;
    auto action = scale_half_range * x.tanh();
    auto log_prob = (-0.5 * ((x - loc) / scale).pow(2) - scale.log() - 0.5 * std::log(2 * M_PI) -
                     2 * (std::log(2.0) - x - torch::softplus(-2 * x)) - std::log(scale_half_range))
                        .sum(-1);
    return {action, log_prob};
  }

  void update(const torch::Tensor& obs, const torch::Tensor& act, const torch::Tensor& reward,
              const torch::Tensor& terminated, const torch::Tensor& next_obs) {
    const auto alpha = log_alpha.detach().exp();
    torch::Tensor y;
    {
      torch::NoGradGuard no_grad;
      auto [next_act, next_lp] = sample(next_obs);
      auto next_in = torch::cat({next_obs, next_act}, 1);
      auto next_q = torch::min(q1_target->forward(next_in), q2_target->forward(next_in)) - alpha * next_lp.unsqueeze(-1);
      y = reward + gamma * terminated.logical_not() * next_q;
    }
    auto in = torch::cat({obs, act}, 1);
    auto critic_loss = torch::smooth_l1_loss(q1->forward(in), y) + torch::smooth_l1_loss(q2->forward(in), y);
    critic_opt->zero_grad();
    critic_loss.backward();
    critic_opt->step();

    auto [a, lp] = sample(obs);
    auto actor_in = torch::cat({obs, a}, 1);
    auto q = torch::min(q1->forward(actor_in), q2->forward(actor_in)).squeeze(-1);
    auto actor_loss = (alpha * lp - q).mean();
    actor_opt->zero_grad();
    actor_loss.backward();
    actor_opt->step();
    q1->zero_grad();  // the actor loss reached the critics' gradients; the next critic step starts clean
    q2->zero_grad();

    auto alpha_loss = (-log_alpha * (lp.detach() + target_entropy)).mean();
    alpha_opt->zero_grad();
    alpha_loss.backward();
    alpha_opt->step();

    soft_update(*q1_target, *q1, tau);
    soft_update(*q2_target, *q2, tau);
  }
};

}  // namespace rlobj_bench
