#pragma once

/// \file
/// The update of a training loop, as one object that composes a loss, its optimisers and its
/// target updater: `Trainer` calls it on each sub-batch (`update(sub_batch)` returns the
/// detached losses). TorchRL's trainers do `loss(batch)`, `sum(loss_*).backward()`,
/// `optimizer.step()`, `target_updater.step()`; these are the same steps, op by op:
///
/// * `LossUpdate`: one optimiser over the loss's parameters, the chosen `loss_*` entries summed
///   (DQN, PPO, A2C, ...), an optional gradient-norm clip and target updater;
/// * `ActorCriticUpdate`: separate actor, critic (and SAC's temperature) optimisers with a
///   delayed policy update (DDPG, TD3, SAC), the critic stepped first where TorchRL's TD3
///   example does; DDPG, TD3 and SAC on the fused update engine (`rlobj/engine/`) where it applies.
///
/// A hand-written `loss -> backward -> step -> update` gives the same numbers.

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

// Before clip_grad.h, which uses torch::Tensor without including its definition.
#include <torch/types.h>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/utils/clip_grad.h>
#include <torch/optim/optimizer.h>
#include <torch/serialize/archive.h>

#include "rlobj/engine/actor_critic.h"
#include "rlobj/objectives/utils.h"
#include "rlobj/tensordict.h"
#include "rlobj/trainers/checkpoint.h"

namespace rlobj {
namespace trainers {

namespace detail {

/// The sum of `keys`' entries of `out`, in that order (absent keys skipped: optional terms such
/// as PPO's entropy bonus); with no keys, `sum_losses(out)`.
inline torch::Tensor total_loss(const TensorDict& out, const std::vector<std::string>& keys) {
  if (keys.empty()) return objectives::sum_losses(out);
  torch::Tensor total;
  for (const auto& key : keys) {
    const torch::Tensor* t = out.find(key);
    if (t == nullptr) continue;
    total = total.defined() ? total + *t : *t;
  }
  TORCH_CHECK(total.defined(), "LossUpdate: none of the loss entries [", fmt::format("{}", fmt::join(keys, ", ")),
              "] is in the loss's output; keys present: ", rlobj::detail::keys_str(out.keys()));
  return total;
}

/// Registers `optimizer`'s state as the record `name`.
inline void add_optimizer_record(CheckpointRegistry& records, const std::string& name,
                                 std::shared_ptr<torch::optim::Optimizer> optimizer) {
  records.add(
      name, [optimizer](torch::serialize::OutputArchive& a) { optimizer->save(a); },
      [optimizer](torch::serialize::InputArchive& a) { optimizer->load(a); });
}

/// Whether `Impl` has TD3's split entry points `actor_loss(td)` and `value_loss(td)`.
template <typename Impl, typename = void>
struct has_split_losses : std::false_type {};
template <typename Impl>
struct has_split_losses<Impl, std::void_t<decltype(std::declval<Impl&>().actor_loss(std::declval<TensorDict>())),
                                          decltype(std::declval<Impl&>().value_loss(std::declval<TensorDict>()))>>
    : std::true_type {};

}  // namespace detail

/// Options of `LossUpdate`.
struct LossUpdateOptions {
  /// The output entries summed into the loss that is back-propagated, in this order (absent
  /// ones skipped); empty: every `loss` / `loss_*` entry (`sum_losses`).
  TORCH_ARG(std::vector<std::string>, loss_keys) = {};
  /// Clip the global norm of the gradients of the loss's parameters to this (0: no clipping).
  TORCH_ARG(double, max_grad_norm) = 0;
};

/// One optimiser over a loss: `out = loss(batch)`, `zero_grad`, `backward` of the summed loss
/// entries, optional gradient clipping, `step`, then the target updater's `step` (if any).
///
/// ```
/// auto optim = std::make_shared<torch::optim::Adam>(loss->parameters(), torch::optim::AdamOptions(2.5e-4));
/// auto update = trainers::LossUpdate<objectives::DQNLoss<>>(loss, optim, std::make_shared<objectives::HardUpdate>(loss, 50),
///                                                           trainers::LossUpdateOptions().max_grad_norm(10));
/// rlobj::TensorDict losses = update(batch);
/// ```
template <typename Loss>
class LossUpdate {
 public:
  /// `updater` may be null (a loss without target networks).
  LossUpdate(Loss loss, std::shared_ptr<torch::optim::Optimizer> optimizer,
             std::shared_ptr<objectives::TargetNetUpdater> updater = nullptr, LossUpdateOptions options = {})
      : loss_(std::move(loss)), optimizer_(std::move(optimizer)), updater_(std::move(updater)), options_(options) {
    TORCH_CHECK_VALUE(!loss_.is_empty(), "LossUpdate: the loss is empty");
    TORCH_CHECK_VALUE(optimizer_ != nullptr, "LossUpdate: the optimizer is empty");
    TORCH_CHECK_VALUE(options_.max_grad_norm() >= 0, "LossUpdate: max_grad_norm must be >= 0, got ",
                      options_.max_grad_norm());
  }

  /// One update on `batch`; returns the loss's output, detached.
  TensorDict operator()(const TensorDict& batch) {
    TensorDict out = loss_(batch);
    torch::Tensor total = detail::total_loss(out, options_.loss_keys());
    optimizer_->zero_grad();
    total.backward();
    if (options_.max_grad_norm() > 0) torch::nn::utils::clip_grad_norm_(loss_->parameters(), options_.max_grad_norm());
    optimizer_->step();
    if (updater_) updater_->step();
    return out.detach();
  }

  /// Registers the optimiser's state as the record `optimizer_record` (the loss's own record is
  /// the caller's: it may hold more than this update trains).
  void register_records(CheckpointRegistry& records, const std::string& optimizer_record = "optim") const {
    detail::add_optimizer_record(records, optimizer_record, optimizer_);
  }

  /// The loss.
  Loss& loss() noexcept { return loss_; }
  /// The optimiser.
  torch::optim::Optimizer& optimizer() noexcept { return *optimizer_; }
  /// The target updater, or null.
  objectives::TargetNetUpdater* updater() const noexcept { return updater_.get(); }

 private:
  Loss loss_;
  std::shared_ptr<torch::optim::Optimizer> optimizer_;
  std::shared_ptr<objectives::TargetNetUpdater> updater_;
  LossUpdateOptions options_;
};

/// How `ActorCriticUpdate` computes an update.
enum class UpdateEngine {
  /// The fused engine (`rlobj::engine::ActorCriticEngine`) where it applies, else op by op.
  Auto,
  /// The fused engine; a `c10::ValueError` saying why when it does not apply.
  Fused,
  /// `loss(batch)`, `backward`, the optimisers' and the updater's `step`, op by op.
  OpByOp,
};

/// Options of `ActorCriticUpdate`.
struct ActorCriticUpdateOptions {
  /// The actor (and the temperature) are stepped, and the targets updated, every
  /// `policy_delay`-th update (TD3: 2); the critic every update.
  TORCH_ARG(int64_t, policy_delay) = 1;
  /// TorchRL's TD3 example: the critic loss and the critic's step first, then, on the actor's
  /// turn, the actor loss against the updated critic (needs the loss's `value_loss` and
  /// `actor_loss`). Otherwise (DDPG's and SAC's examples) one forward, the summed losses (only
  /// the critic's off the actor's turn), one backward, every optimiser.
  TORCH_ARG(bool, critic_first) = false;
  /// Which path computes the update (`path()` and `reason()` say which one did and why).
  TORCH_ARG(UpdateEngine, engine) = UpdateEngine::Auto;
};

/// The update of TorchRL's DDPG, TD3 and SAC examples: an actor optimiser, a critic optimiser
/// and, for SAC, a temperature optimiser, with a delayed policy update and a soft target update.
///
/// Where it applies (DDPG, TD3 and SAC over rlobj MLPs, Adam, float32 on the CPU: see
/// `engine::ActorCriticEngine::make`), the update runs on the fused engine: the same quantities
/// without autograd or per-op dispatch, its state where the op-by-op path keeps it (the loss's
/// parameters, the optimisers' state, the targets), so checkpoints and a hand-written loop
/// interoperate. There the result holds the losses only (`loss_actor` on the actor's turns and
/// the critic's), not the loss's logging entries. `path()` says which path runs, `reason()` why
/// not the fused one.
///
/// ```
/// trainers::ActorCriticUpdate<objectives::TD3Loss<Actor>> update(
///     loss, "loss_qvalue", optim_actor, optim_critic, /*optim_alpha=*/nullptr,
///     std::make_shared<objectives::SoftUpdate>(loss, objectives::SoftUpdateOptions().tau(0.005)),
///     trainers::ActorCriticUpdateOptions().policy_delay(2).critic_first(true));
/// ```
template <typename Loss>
class ActorCriticUpdate {
 public:
  /// `critic_loss`: the critic's output entry (`"loss_value"`, `"loss_qvalue"`); `optim_alpha`
  /// may be null.
  ActorCriticUpdate(Loss loss, std::string critic_loss, std::shared_ptr<torch::optim::Optimizer> optim_actor,
                    std::shared_ptr<torch::optim::Optimizer> optim_critic,
                    std::shared_ptr<torch::optim::Optimizer> optim_alpha,
                    std::shared_ptr<objectives::TargetNetUpdater> updater, ActorCriticUpdateOptions options = {})
      : loss_(std::move(loss)),
        critic_loss_(std::move(critic_loss)),
        optim_actor_(std::move(optim_actor)),
        optim_critic_(std::move(optim_critic)),
        optim_alpha_(std::move(optim_alpha)),
        updater_(std::move(updater)),
        options_(options) {
    TORCH_CHECK_VALUE(!loss_.is_empty(), "ActorCriticUpdate: the loss is empty");
    TORCH_CHECK_VALUE(optim_actor_ != nullptr && optim_critic_ != nullptr,
                      "ActorCriticUpdate: the actor and critic optimizers are required");
    TORCH_CHECK_VALUE(options_.policy_delay() >= 1, "ActorCriticUpdate: policy_delay must be >= 1, got ",
                      options_.policy_delay());
    TORCH_CHECK_VALUE(!options_.critic_first() || detail::has_split_losses<typename Loss::ContainedType>::value,
                      "ActorCriticUpdate: critic_first needs a loss with value_loss() and actor_loss() (TD3Loss)");
    TORCH_CHECK_VALUE(optim_actor_ != optim_critic_,
                      "ActorCriticUpdate: the actor and the critic need optimizers of their own (one optimizer would "
                      "be stepped twice per update); for one optimizer over the whole loss, use LossUpdate");
    if (options_.engine() == UpdateEngine::OpByOp) {
      reason_ = "UpdateEngine::OpByOp was asked for";
    } else {
      engine_ = engine::ActorCriticEngine::make(loss_, optim_actor_, optim_critic_, optim_alpha_, updater_, &reason_);
    }
    fused_ = engine_ != nullptr;
    TORCH_CHECK_VALUE(engine_ != nullptr || options_.engine() != UpdateEngine::Fused,
                      "ActorCriticUpdate: UpdateEngine::Fused asked for, but the fused engine does not compute ",
                      reason_);
  }

  /// One update on `batch`; returns the losses computed, detached. On the fused engine where it
  /// computes this update (the loss, its optimizers and the batch as they are now), else op by op
  /// (`UpdateEngine::Fused`: a `c10::ValueError` saying why instead).
  TensorDict operator()(const TensorDict& batch) {
    const bool actor_turn = (steps_ + 1) % options_.policy_delay() == 0;  // TorchRL counts from 1
    if (engine_) {
      std::string why;
      if (std::optional<TensorDict> losses = engine_->try_step(batch, actor_turn, options_.critic_first(), &why)) {
        ++steps_;
        fused_ = true;
        reason_.clear();
        return *losses;
      }
      if (options_.engine() == UpdateEngine::Fused) loss_->validate(batch);  // the loss's own message first
      TORCH_CHECK_VALUE(options_.engine() != UpdateEngine::Fused,
                        "ActorCriticUpdate: UpdateEngine::Fused asked for, but the fused engine does not compute "
                        "this update: ", why);
      fused_ = false;
      reason_ = std::move(why);
    }
    TensorDict result;
    if constexpr (detail::has_split_losses<typename Loss::ContainedType>::value) {
      if (options_.critic_first()) {
        result = critic_first(batch, actor_turn);
        ++steps_;
        return result;
      }
    }
    TensorDict out = loss_(batch);
    torch::Tensor total = actor_turn ? objectives::sum_losses(out) : out.get(critic_loss_);
    optim_actor_->zero_grad();
    optim_critic_->zero_grad();
    if (optim_alpha_) optim_alpha_->zero_grad();
    total.backward();
    optim_critic_->step();
    if (actor_turn) {
      optim_actor_->step();
      if (optim_alpha_) optim_alpha_->step();
      if (updater_) updater_->step();
    }
    ++steps_;
    return out.detach();
  }

  /// Registers the optimisers' states (`optim_actor`, `optim_critic`, `optim_alpha`) and the
  /// update count (`update_steps`, which decides the actor's turns).
  void register_records(CheckpointRegistry& records) {
    detail::add_optimizer_record(records, "optim_actor", optim_actor_);
    detail::add_optimizer_record(records, "optim_critic", optim_critic_);
    if (optim_alpha_) detail::add_optimizer_record(records, "optim_alpha", optim_alpha_);
    records.add(
        "update_steps", [this](torch::serialize::OutputArchive& a) { a.write("steps", torch::tensor(steps_)); },
        [this](torch::serialize::InputArchive& a) {
          torch::Tensor steps;
          a.read("steps", steps);
          TORCH_CHECK_VALUE(steps.numel() == 1 && steps.scalar_type() == torch::kLong && steps.item<int64_t>() >= 0,
                            "the update count must be one int64 >= 0");
          steps_ = steps.item<int64_t>();
        });
  }

  /// Updates so far.
  int64_t steps() const noexcept { return steps_; }
  /// The loss.
  Loss& loss() noexcept { return loss_; }
  /// `"fused"` or `"op-by-op"`: the path the last update took (before the first, the path updates
  /// take where nothing changes).
  const char* path() const noexcept { return fused_ ? "fused" : "op-by-op"; }
  /// Why the last update (before the first: the updates) took the op-by-op path, or empty.
  const std::string& reason() const noexcept { return reason_; }

 private:
  TensorDict critic_first(const TensorDict& batch, bool actor_turn) {
    auto& impl = *loss_;
    TensorDict value_out = impl.value_loss(batch);
    optim_critic_->zero_grad();
    value_out.get(critic_loss_).backward();
    optim_critic_->step();
    TensorDict result = value_out.detach();
    if (actor_turn) {
      TensorDict actor_out = impl.actor_loss(batch);
      optim_actor_->zero_grad();
      actor_out.get("loss_actor").backward();
      optim_actor_->step();
      if (updater_) updater_->step();
      result.update(actor_out.detach());
    }
    return result;
  }

  Loss loss_;
  std::string critic_loss_;
  std::shared_ptr<torch::optim::Optimizer> optim_actor_, optim_critic_, optim_alpha_;
  std::shared_ptr<objectives::TargetNetUpdater> updater_;
  ActorCriticUpdateOptions options_;
  int64_t steps_ = 0;
  bool fused_ = false;
  std::unique_ptr<engine::ActorCriticEngine> engine_;
  std::string reason_;
};

}  // namespace trainers
}  // namespace rlobj
