#pragma once

// The DDPG update as a LibTorch user writes it by hand today: torch::nn::Sequential networks,
// a cloned target critic, two Adam optimizers, a loop of per-tensor ops for the soft update.
// It does the same work as rlobj's DDPGLoss with TorchRL's defaults (delay_actor=false,
// delay_value=true, TD(0), l2, mean): the benchmark's honest baseline.

#include <cstdint>
#include <memory>
#include <vector>

#include <torch/torch.h>

namespace rlobj_bench {

inline torch::nn::Sequential make_mlp(int64_t in, int64_t out, const std::vector<int64_t>& cells, bool relu) {
  torch::nn::Sequential net;
  int64_t width = in;
  for (auto c : cells) {
    net->push_back(torch::nn::Linear(width, c));
    if (relu) {
      net->push_back(torch::nn::ReLU());
    } else {
      net->push_back(torch::nn::Tanh());
    }
    width = c;
  }
  net->push_back(torch::nn::Linear(width, out));
  return net;
}

struct HandwrittenDDPG {
  torch::nn::Sequential actor, critic, critic_target;
  std::unique_ptr<torch::optim::Adam> actor_opt, critic_opt;
  double gamma = 0.99, tau = 0.005;

  HandwrittenDDPG(int64_t n_obs, int64_t n_act, const std::vector<int64_t>& cells, bool relu)
      : actor(make_mlp(n_obs, n_act, cells, relu)),
        critic(make_mlp(n_obs + n_act, 1, cells, relu)),
        critic_target(std::dynamic_pointer_cast<torch::nn::SequentialImpl>(critic->clone())) {
    for (auto& p : critic_target->parameters()) p.requires_grad_(false);
    actor_opt = std::make_unique<torch::optim::Adam>(actor->parameters(), torch::optim::AdamOptions(1e-3));
    critic_opt = std::make_unique<torch::optim::Adam>(critic->parameters(), torch::optim::AdamOptions(1e-3));
  }

  // obs [B, n_obs], act [B, n_act], reward [B, 1], terminated [B, 1] bool, next_obs [B, n_obs]
  void update(const torch::Tensor& obs, const torch::Tensor& act, const torch::Tensor& reward,
              const torch::Tensor& terminated, const torch::Tensor& next_obs) {
    torch::Tensor y;
    {
      torch::NoGradGuard no_grad;
      auto next_act = actor->forward(next_obs);
      auto next_q = critic_target->forward(torch::cat({next_obs, next_act}, 1));
      y = reward + gamma * terminated.logical_not() * next_q;
    }
    auto q = critic->forward(torch::cat({obs, act}, 1));
    auto critic_loss = (q - y).pow(2).mean();
    critic_opt->zero_grad();
    critic_loss.backward();
    critic_opt->step();

    auto actor_loss = -critic->forward(torch::cat({obs, actor->forward(obs)}, 1)).mean();
    actor_opt->zero_grad();
    actor_loss.backward();
    actor_opt->step();

    torch::NoGradGuard no_grad;
    auto src = critic->parameters();
    auto dst = critic_target->parameters();
    for (size_t i = 0; i < src.size(); ++i) dst[i].mul_(1 - tau).add_(src[i], tau);
  }
};

}  // namespace rlobj_bench
