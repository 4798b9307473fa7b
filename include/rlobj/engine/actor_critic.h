#pragma once

/// \file
/// `ActorCriticEngine`: one DDPG or TD3 update — the forward passes, the losses, their
/// gradients, the Adam steps and the soft target update — computed directly on the losses' flat
/// parameter groups, with preallocated buffers, no autograd graph and no per-op dispatch: the
/// matrix products on LibTorch's BLAS (`blas.h`), everything else in fused passes
/// (`kernels.h`). It computes the quantities TorchRL's losses define, in another order where
/// reductions are concerned (the parity suite checks it against TorchRL under every kernel
/// combination), and keeps its state where the op-by-op path keeps it: the loss's parameter
/// groups and gradients, the `torch::optim::Adam` objects' own state, the updater's targets. So
/// the two paths can take turns, and checkpoints are the same.
///
/// `rlobj::trainers::ActorCriticUpdate` uses it wherever it applies (`make` says why not
/// otherwise) and falls back to the op-by-op update.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <torch/optim/adam.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/engine/blas.h"
#include "rlobj/engine/kernels.h"
#include "rlobj/engine/mlp.h"
#include "rlobj/modules/actor.h"
#include "rlobj/modules/tensordict_module.h"
#include "rlobj/modules/value_operator.h"
#include "rlobj/objectives/ddpg.h"
#include "rlobj/objectives/td3.h"
#include "rlobj/objectives/utils.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace engine {

namespace detail {

template <typename T>
struct is_ddpg : std::false_type {};
template <typename A, typename V>
struct is_ddpg<objectives::DDPGLossImpl<A, V>> : std::true_type {};
template <typename T>
struct is_td3 : std::false_type {};
template <typename A, typename Q>
struct is_td3<objectives::TD3LossImpl<A, Q>> : std::true_type {};

/// A network's MLP, its keys, and (actors) the TanhModule squashing its output.
struct NetworkPlan {
  MlpPlan mlp;
  std::vector<NestedKey> in_keys;  ///< concatenated in this order
  NestedKey out_key{"action"};
  torch::Tensor scale, shift;      ///< TanhModule's bounds (float32 CPU, contiguous), or undefined
};

/// The plan of `module` (a `TensorDictModule` / `Actor` / `ValueOperator` over an `MLP`, or a
/// `TensorDictSequential` of such a module, optionally followed by a `TanhModule`) whose parameters
/// live in `flat`
/// (`trained`: see `MlpPlan::of`).
inline std::optional<NetworkPlan> plan_network(torch::nn::Module& module, const torch::Tensor& flat, bool trained,
                                               std::string* why) {
  const auto fail = [&](const std::string& reason) -> std::optional<NetworkPlan> {
    *why = reason;
    return std::nullopt;
  };
  modules::TensorDictModuleImpl* td_module = dynamic_cast<modules::TensorDictModuleImpl*>(&module);
  modules::TanhModuleImpl* tanh = nullptr;
  if (auto* seq = dynamic_cast<modules::TensorDictSequentialImpl*>(&module)) {
    if (seq->size() == 1 || seq->size() == 2) td_module = dynamic_cast<modules::TensorDictModuleImpl*>((*seq)[0].get());
    if (seq->size() == 2) tanh = dynamic_cast<modules::TanhModuleImpl*>((*seq)[1].get());
    if (td_module == nullptr || (seq->size() == 2 && tanh == nullptr)) {
      return fail("a TensorDictSequential that is not an MLP module, optionally followed by a TanhModule");
    }
  }
  if (td_module == nullptr) return fail("a network that is not a TensorDictModule over an MLP");
  auto* mlp = dynamic_cast<modules::MLPImpl*>(td_module->module().get());
  if (mlp == nullptr) return fail("a network that is not an rlobj MLP");
  if (td_module->spec() != nullptr) return fail("a network with an output spec");
  if (td_module->out_keys().size() != 1) return fail("a network with several outputs");
  auto plan = MlpPlan::of(*mlp, flat, trained, why);
  if (!plan) return std::nullopt;
  NetworkPlan out{*plan, td_module->in_keys(), td_module->out_keys()[0], {}, {}};
  if (tanh != nullptr) {
    if (tanh->in_keys().size() != 1 || tanh->in_keys()[0] != out.out_key) return fail("a TanhModule on another key");
    auto buffers = tanh->named_buffers();
    const torch::Tensor* scale = buffers.find("scale");
    const torch::Tensor* shift = buffers.find("shift");
    if (scale == nullptr || shift == nullptr) return fail("a TanhModule without bounds");
    if (scale->scalar_type() != torch::kFloat || !scale->is_cpu() || shift->scalar_type() != torch::kFloat) {
      return fail("TanhModule bounds that are not float32 on the CPU");
    }
    const int64_t n = plan->out_features();
    if ((scale->numel() != 1 && scale->numel() != n) || (shift->numel() != 1 && shift->numel() != n)) {
      return fail("TanhModule bounds of another size than the action");
    }
    out.scale = *scale;
    out.shift = *shift;
    out.out_key = tanh->out_keys()[0];
  }
  return out;
}

/// `out` (`rows x total`) = the concatenation of `parts` (each `rows x cols_i`) on the last dim.
inline void concat_columns(float* out, const std::vector<std::pair<const float*, int64_t>>& parts, int64_t rows) {
  int64_t total = 0;
  for (const auto& p : parts) total += p.second;
  int64_t col = 0;
  for (const auto& [data, cols] : parts) {
    for (int64_t r = 0; r < rows; ++r) std::copy(data + r * cols, data + (r + 1) * cols, out + r * total + col);
    col += cols;
  }
}

/// `a = tanh(h) * scale + shift` (TanhModule), `h` kept; `t` receives `tanh(h)`.
inline void squash(const torch::Tensor& h, torch::Tensor& t, float* a, const torch::Tensor& scale,
                   const torch::Tensor& shift) {
  at::tanh_out(t, h);
  const int64_t rows = t.size(0), cols = t.size(1);
  const float* tp = t.data_ptr<float>();
  const float* sc = scale.data_ptr<float>();
  const float* sh = shift.data_ptr<float>();
  const bool scalar_scale = scale.numel() == 1, scalar_shift = shift.numel() == 1;
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float m = tp[r * cols + c] * sc[scalar_scale ? 0 : c];
      a[r * cols + c] = m + sh[scalar_shift ? 0 : c];
    }
  }
}

}  // namespace detail

/// The fused DDPG / TD3 update (see the file comment).
///
/// ```
/// std::string why;
/// auto engine = rlobj::engine::ActorCriticEngine::make(loss, optim_actor, optim_critic, updater, &why);
/// if (engine) {
///   rlobj::TensorDict losses = engine->step(batch, /*actor_turn=*/true, /*critic_first=*/false);
/// }
/// ```
class ActorCriticEngine {
 public:
  /// The engine for `loss` (a `DDPGLoss` or `TD3Loss` holder) trained by `optim_actor` and
  /// `optim_critic` (`torch::optim::Adam` over the loss's actor and critic groups; one optimizer
  /// may hold both) and moved by `updater` (any `TargetNetUpdater`; a `SoftUpdate` runs fused,
  /// others as they are; null for none), or null with the reason in `why`. The engine computes:
  /// MLP networks (`engine::MlpPlan::of`) in `Actor` / `ValueOperator` / `TensorDictModule`s (an
  /// actor may end in a `TanhModule`), a critic reading the observation and the action, mean
  /// reduction, TD0, no `separate_losses`, float32 on the CPU, a BLAS `sgemm_` in the process.
  template <typename Loss>
  static std::unique_ptr<ActorCriticEngine> make(Loss& loss, const std::shared_ptr<torch::optim::Optimizer>& optim_actor,
                                                 const std::shared_ptr<torch::optim::Optimizer>& optim_critic,
                                                 const std::shared_ptr<objectives::TargetNetUpdater>& updater,
                                                 std::string* why) {
    using Impl = typename Loss::ContainedType;
    constexpr bool ddpg = detail::is_ddpg<Impl>::value, td3 = detail::is_td3<Impl>::value;
    if constexpr (!ddpg && !td3) {
      *why = "a loss the engine does not compute (it computes DDPGLoss and TD3Loss)";
      return nullptr;
    } else {
      auto& impl = *loss;
      auto fail = [&](const std::string& reason) -> std::unique_ptr<ActorCriticEngine> {
        *why = reason;
        return nullptr;
      };
      if (const std::string b = engine::detail::blas_unavailable(); !b.empty()) return fail(b);
      if (optim_actor == nullptr || optim_critic == nullptr) return fail("no actor or critic optimizer");
      const auto& o = impl.options;
      if (o.reduction() != objectives::Reduction::Mean) return fail("a reduction other than mean");
      if (o.separate_losses()) return fail("separate_losses");
      impl.ensure_linked();
      std::unique_ptr<ActorCriticEngine> e(new ActorCriticEngine());
      e->loss_ = loss.ptr();
      e->loss_function_ = o.loss_function();
      e->critic_loss_key_ = ddpg ? "loss_value" : "loss_qvalue";
      const std::string critic_group = ddpg ? "value_network" : "qvalue_network";
      e->critic_group_ = critic_group;
      const auto actor_groups = impl.parameters_of("actor_network");
      const auto critic_groups = impl.parameters_of(critic_group);
      if (actor_groups.size() != 1 || critic_groups.size() != 1) return fail("networks without one parameter group each");
      e->actor_flat_ = actor_groups[0];
      e->critic_flat_ = critic_groups[0];
      const auto buffer = [&](const std::string& name) -> torch::Tensor {
        for (const auto& b : impl.named_buffers(/*recurse=*/false)) {
          if (b.key() == name) return b.value();
        }
        return {};
      };
      const torch::Tensor target_actor_flat = buffer("target_actor_network_params");
      const torch::Tensor target_critic_flat = buffer("target_" + critic_group + "_params");
      e->target_actor_flat_ = target_actor_flat.defined() ? target_actor_flat : e->actor_flat_;
      e->target_critic_flat_ = target_critic_flat.defined() ? target_critic_flat : e->critic_flat_;
      auto actor = detail::plan_network(*impl.actor_network().ptr(), e->actor_flat_, /*trained=*/true, why);
      if (!actor) return nullptr;
      auto target_actor = detail::plan_network(*impl.target_actor_network(), e->target_actor_flat_, false, why);
      if (!target_actor) return nullptr;
      e->actor_ = *actor;
      e->target_actor_ = *target_actor;
      std::vector<std::shared_ptr<torch::nn::Module>> critics, targets;
      if constexpr (ddpg) {
        critics = {impl.value_network().ptr()};
        targets = {impl.target_value_network()};
        e->action_key_ = e->actor_.out_key;
      } else {
        for (const auto& c : impl.qvalue_networks()) critics.push_back(c);
        for (const auto& c : impl.target_qvalue_networks()) targets.push_back(c);
        e->action_key_ = impl.tensor_keys().action;
        e->min_action_ = impl.min_action().contiguous();
        e->max_action_ = impl.max_action().contiguous();
        e->td3_noise_ = [&impl](const torch::Tensor& action) { return impl.smoothing_noise(action); };
      }
      for (size_t c = 0; c < critics.size(); ++c) {
        auto online = detail::plan_network(*critics[c], e->critic_flat_, /*trained=*/true, why);
        if (!online) return nullptr;
        auto target = detail::plan_network(*targets[c], e->target_critic_flat_, false, why);
        if (!target) return nullptr;
        e->critics_.push_back(*online);
        e->target_critics_.push_back(*target);
      }
      const auto& keys = impl.tensor_keys();
      e->value_key_ = keys.state_action_value;
      e->reward_key_ = keys.reward;
      e->terminated_key_ = keys.terminated;
      e->priority_key_ = keys.priority;
      // The actor reads one key; the critic reads that key and the action, in either order.
      if (e->actor_.in_keys.size() != 1 || e->actor_.out_key != e->action_key_) {
        return fail("an actor that does not map one observation key to the action");
      }
      e->obs_key_ = e->actor_.in_keys[0];
      for (const auto& c : e->critics_) {
        if (c.in_keys.size() != 2 || c.out_key != e->value_key_ || c.mlp.out_features() != 1 ||
            !((c.in_keys[0] == e->obs_key_ && c.in_keys[1] == e->action_key_) ||
              (c.in_keys[1] == e->obs_key_ && c.in_keys[0] == e->action_key_))) {
          return fail("a critic that does not read the observation and the action into one value");
        }
      }
      e->action_first_ = e->critics_[0].in_keys[0] == e->action_key_;
      for (size_t c = 0; c < e->critics_.size(); ++c) {
        const int64_t in = e->actor_.mlp.in_features() + e->actor_.mlp.out_features();
        if (e->critics_[c].mlp.in_features() != in || e->target_critics_[c].mlp.in_features() != in ||
            e->target_actor_.mlp.in_features() != e->actor_.mlp.in_features() ||
            e->target_actor_.mlp.out_features() != e->actor_.mlp.out_features()) {
          return fail("a critic whose input is not the observation and the action the actor reads and writes");
        }
      }
      // What the loss's options, estimator and keys may change after this: read again before
      // every update (a change the engine does not compute sends the update op by op).
      ActorCriticEngine* self = e.get();
      e->config_ = [&impl, self]() -> std::string {
        const auto& options = impl.options;
        if (options.reduction() != objectives::Reduction::Mean) return "a reduction other than mean";
        if (options.separate_losses()) return "separate_losses";
        if (impl.value_type() != objectives::ValueEstimators::TD0) return "a value estimator other than TD0";
        const auto& estimator = impl.value_estimator();
        if (estimator.options().average_rewards()) return "a value estimator with average_rewards";
        if (estimator.options().differentiable()) return "a differentiable value estimator";
        const torch::Tensor& gamma = estimator.gamma();
        if (gamma.numel() != 1 || !gamma.is_cpu() || gamma.scalar_type() != torch::kFloat) {
          return "a gamma that is not one float32 CPU value";
        }
        self->gamma_ = *gamma.data_ptr<float>();
        self->steps_key_ = estimator.tensor_keys().steps_to_next_obs;
        self->loss_function_ = options.loss_function();
        const auto& keys = impl.tensor_keys();
        if (!(keys.state_action_value == self->value_key_) || !(keys.reward == self->reward_key_) ||
            !(keys.terminated == self->terminated_key_) || !(keys.priority == self->priority_key_)) {
          return "tensor keys renamed (set_keys) since the engine was made";
        }
        if constexpr (!ddpg) {
          if (!(keys.action == self->action_key_)) return "tensor keys renamed (set_keys) since the engine was made";
        }
        return "";
      };
      if (std::string reason = e->config_(); !reason.empty()) return fail(reason);
      // The trained networks' parameters, whose requires_grad a user may turn off later.
      for (const auto& p : impl.actor_network()->parameters()) e->trained_params_.push_back(p);
      for (const auto& c : critics) {
        for (const auto& p : c->parameters()) e->trained_params_.push_back(p);
      }
      // The optimisers: Adam over the loss's two flat groups, nothing else.
      e->shared_optimizer_ = optim_actor == optim_critic;
      const std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizers =
          e->shared_optimizer_ ? std::vector<std::shared_ptr<torch::optim::Optimizer>>{optim_critic}
                               : std::vector<std::shared_ptr<torch::optim::Optimizer>>{optim_critic, optim_actor};
      for (const auto& optimizer : optimizers) {
        auto* adam = dynamic_cast<torch::optim::Adam*>(optimizer.get());
        if (adam == nullptr) return fail("an optimizer other than torch::optim::Adam");
        e->optimizers_.push_back({adam, {}});
        for (size_t gi = 0; gi < adam->param_groups().size(); ++gi) {
          e->optimizers_.back().groups.emplace_back();
          for (const auto& p : adam->param_groups()[gi].params()) {
            e->optimizers_.back().groups.back().push_back(p.unsafeGetTensorImpl());
          }
          auto& group = adam->param_groups()[gi];
          const auto& ao = static_cast<const torch::optim::AdamOptions&>(group.options());
          if (ao.amsgrad()) return fail("Adam with amsgrad");
          for (auto& p : group.params()) {
            const bool is_actor = p.unsafeGetTensorImpl() == e->actor_flat_.unsafeGetTensorImpl();
            const bool is_critic = p.unsafeGetTensorImpl() == e->critic_flat_.unsafeGetTensorImpl();
            if (!is_actor && !is_critic) {
              return fail("an optimizer over tensors other than the loss's actor and critic groups");
            }
            if (!e->shared_optimizer_ && is_actor != (optimizer == optim_actor)) {
              return fail("an actor optimizer over the critic or a critic optimizer over the actor");
            }
            e->adam_.push_back({adam, gi, p, is_actor, {}});
          }
        }
      }
      if (std::string reason = e->state_inapplicable(); !reason.empty()) return fail(reason);
      e->updater_ = updater;
      e->soft_ = dynamic_cast<objectives::SoftUpdate*>(updater.get());
      if (e->soft_ != nullptr) {
        for (const auto& pair : e->soft_->pairs()) {
          bool plain = pair.target.is_contiguous() && pair.source.is_contiguous() &&
                       pair.target.scalar_type() == torch::kFloat && pair.source.scalar_type() == torch::kFloat;
          for (const auto& b : pair.buffers) plain = plain && b.first.is_contiguous() && b.second.is_contiguous();
          if (!plain) e->soft_ = nullptr;  // then SoftUpdate::step itself
        }
      }
      return e;
    }
  }

  /// The critic loss on `batch` (checked as the loss's `forward` checks it) and its gradient,
  /// written into the critic group's `.grad()` (replacing what was there, as `zero_grad` then
  /// `backward` would); writes the priority (`td_error`) into `batch`. Returns
  /// `{"loss_value" | "loss_qvalue"}`.
  TensorDict critic_loss(TensorDict batch) {
    prepare(batch);
    TensorDict out(TensorDict::BatchSize{});
    compute_critic(batch, out);
    return out;
  }

  /// The actor loss on `batch` (checked) and its gradient, written into the actor group's
  /// `.grad()`. Returns `{"loss_actor"}`.
  TensorDict actor_loss(TensorDict batch) {
    prepare(batch);
    TensorDict out(TensorDict::BatchSize{});
    compute_actor(batch, out);
    return out;
  }

  /// The critic optimizer's step (with one shared optimizer: the critic group's part of it).
  void step_critic() { adam(/*actor=*/false); }
  /// The actor optimizer's step.
  void step_actor() { adam(/*actor=*/true); }

  /// The target updater's step (fused for a `SoftUpdate`).
  void update_targets() {
    if (soft_ != nullptr) {
      soft_update();
    } else if (updater_) {
      updater_->step();
    }
  }

  /// One update on `batch`: the critic is stepped every update; on `actor_turn` also the actor,
  /// then the targets. With `critic_first` (TorchRL's TD3 example) the critic is stepped before
  /// the actor loss is computed, against the updated critic; else both losses come from the
  /// same parameters (`loss(batch)`, one `backward`, the steps). Returns the losses computed
  /// (0-dim tensors).
  TensorDict step(TensorDict batch, bool actor_turn, bool critic_first) {
    prepare(batch);
    TensorDict out(TensorDict::BatchSize{});
    compute_critic(batch, out);
    if (critic_first) step_critic();
    if (actor_turn) {
      compute_actor(batch, out);
      if (!critic_first) step_critic();
      step_actor();
      update_targets();
    } else if (!critic_first) {
      step_critic();
    }
    // Op by op, the actor's optimizer zeroes its gradient on the critic's turns too (one loss,
    // one backward), and the critic's loss adds nothing to it; with critic_first only the
    // critic's optimizer is zeroed, so the actor's gradient stays as it was.
    if (!actor_turn && !critic_first) actor_flat_.grad().zero_();
    return out;
  }

  /// Why the engine cannot compute an update on `batch` now, or empty: a loss option, estimator,
  /// key, parameter (frozen, moved, retyped) or optimizer (groups, amsgrad) changed since `make`,
  /// or a batch whose layout the engine does not read (not one batch dim, a missing
  /// `terminated`, `steps_to_next_obs`, other dtypes, shapes or devices). Changes nothing but the
  /// engine's copy of the loss's gamma and loss function; `ActorCriticUpdate` runs such an update
  /// op by op. The loss's own checks are `validate`'s, not repeated here.
  std::string inapplicable(const TensorDict& batch) {
    if (std::string reason = config_(); !reason.empty()) return reason;
    if (std::string reason = state_inapplicable(); !reason.empty()) return reason;
    return batch_inapplicable(batch);
  }

  /// The critic loss's output key (`"loss_value"` or `"loss_qvalue"`).
  const std::string& critic_loss_key() const noexcept { return critic_loss_key_; }

 private:
  ActorCriticEngine() = default;

  struct AdamParam {
    torch::optim::Adam* optimizer;
    size_t group;  // its index in the optimizer's param_groups
    torch::Tensor param;  // a loss flat group
    bool actor;
    torch::Tensor sqrt_v;  // scratch
  };

  static const float* ptr(const torch::Tensor& t) { return t.data_ptr<float>(); }

  // The loss's checks, the engine's own (the layouts it reads raw), the buffers for the batch
  // size: all before anything changes.
  void prepare(const TensorDict& batch) {
    loss_->validate(batch);
    const std::string reason = inapplicable(batch);
    TORCH_CHECK(reason.empty(), loss_->loss_name(), ": the update engine does not compute this update: ", reason);
    loss_->ensure_linked();  // gradients a zero_grad(set_to_none) dropped
    resize(batch.batch_size()[0]);
  }

  // The parameters and optimizers as the engine reads them raw.
  std::string state_inapplicable() const {
    if (loss_->parameters_of("actor_network")[0].unsafeGetTensorImpl() != actor_flat_.unsafeGetTensorImpl() ||
        loss_->parameters_of(critic_group_)[0].unsafeGetTensorImpl() != critic_flat_.unsafeGetTensorImpl()) {
      return "parameter groups replaced since the engine was made (loss->to(...)?)";
    }
    for (const torch::Tensor* t : {&actor_flat_, &critic_flat_, &target_actor_flat_, &target_critic_flat_}) {
      if (!t->is_cpu() || t->scalar_type() != torch::kFloat || !t->is_contiguous()) {
        return "parameters that are not contiguous float32 CPU tensors (loss->to(...)?)";
      }
    }
    if (!actor_flat_.requires_grad() || !critic_flat_.requires_grad()) return "a frozen parameter";
    for (const auto& p : trained_params_) {
      if (!p.requires_grad()) return "a frozen parameter";
    }
    for (const auto& o : optimizers_) {
      const auto& groups = o.adam->param_groups();
      if (groups.size() != o.groups.size()) return "optimizer parameter groups changed since the engine was made";
      for (size_t g = 0; g < groups.size(); ++g) {
        const auto& params = groups[g].params();
        if (params.size() != o.groups[g].size()) return "optimizer parameter groups changed since the engine was made";
        for (size_t i = 0; i < params.size(); ++i) {
          if (params[i].unsafeGetTensorImpl() != o.groups[g][i]) {
            return "optimizer parameter groups changed since the engine was made";
          }
        }
        if (static_cast<const torch::optim::AdamOptions&>(groups[g].options()).amsgrad()) return "Adam with amsgrad";
      }
    }
    return "";
  }

  // The batch's layout: what the engine reads raw.
  std::string batch_inapplicable(const TensorDict& batch) const {
    if (batch.batch_dims() != 1) {
      return fmt::format("a batch with {} batch dims (batch size {}; the engine takes one)", batch.batch_dims(),
                         rlobj::detail::shape_str(batch.batch_size()));
    }
    const int64_t rows = batch.batch_size()[0];
    if (rows <= 0) return "an empty batch";
    if (rows > std::numeric_limits<int>::max() / std::max<int64_t>(1, critics_[0].mlp.in_features() + 1)) {
      return "a batch beyond the BLAS's 32-bit sizes";
    }
    if (batch.find(steps_key_) != nullptr) return fmt::format("a batch with \"{}\" (n-step returns)", steps_key_.str());
    const NestedKey next("next");
    if (batch.find(next / terminated_key_) == nullptr) {
      return fmt::format("a batch without \"{}\" (done alone)", (next / terminated_key_).str());
    }
    const int64_t obs_dim = actor_.mlp.in_features(), act_dim = actor_.mlp.out_features();
    std::string reason;
    const auto check = [&](const NestedKey& key, int64_t features, torch::ScalarType dtype, bool flat_ok) {
      if (!reason.empty()) return;
      const torch::Tensor* found = batch.find(key);
      if (found == nullptr) {
        reason = fmt::format("a batch without \"{}\"", key.str());  // the loss's own check names it
        return;
      }
      const torch::Tensor& t = *found;
      const bool shape = (t.dim() == 2 && t.size(0) == rows && t.size(1) == features) ||
                         (flat_ok && t.dim() == 1 && t.size(0) == rows);
      if (!shape || t.scalar_type() != dtype || !t.is_cpu()) {
        reason = fmt::format("\"{}\" of shape {} and dtype {} on {} (the engine reads [{}, {}] {} on the CPU)", key.str(),
                             rlobj::detail::shape_str(t.sizes()), rlobj::detail::dtype_str(t.scalar_type()),
                             t.device().str(), rows, features, rlobj::detail::dtype_str(dtype));
      }
    };
    check(obs_key_, obs_dim, torch::kFloat, false);
    check(action_key_, act_dim, torch::kFloat, false);
    check(next / obs_key_, obs_dim, torch::kFloat, false);
    check(next / reward_key_, 1, torch::kFloat, true);
    check(next / terminated_key_, 1, torch::kBool, true);
    return reason;
  }

  // The input of a critic for observations `obs` and actions `act` (each row-major).
  void critic_input(float* out, const float* obs, const float* act, int64_t obs_dim, int64_t act_dim, int64_t rows) const {
    if (action_first_) {
      detail::concat_columns(out, {{act, act_dim}, {obs, obs_dim}}, rows);
    } else {
      detail::concat_columns(out, {{obs, obs_dim}, {act, act_dim}}, rows);
    }
  }
  void resize(int64_t rows) {
    if (rows == rows_) return;
    rows_ = rows;
    const int64_t act = actor_.mlp.out_features();
    const int64_t critic_in = critics_[0].mlp.in_features();
    actor_pass_.resize(actor_.mlp, rows);
    target_actor_pass_.resize(target_actor_.mlp, rows);
    critic_passes_.assign(critics_.size(), MlpPass());
    target_passes_.assign(critics_.size(), MlpPass());
    for (size_t c = 0; c < critics_.size(); ++c) {
      critic_passes_[c].resize(critics_[c].mlp, rows);
      target_passes_[c].resize(target_critics_[c].mlp, rows);
    }
    actor_critic_pass_.resize(critics_[0].mlp, rows);
    const auto f = torch::TensorOptions().dtype(torch::kFloat);
    x_ = torch::empty({rows, critic_in}, f);
    next_x_ = torch::empty({rows, critic_in}, f);
    actor_x_ = torch::empty({rows, critic_in}, f);
    next_action_ = torch::empty({rows, act}, f);
    action_ = torch::empty({rows, act}, f);
    tanh_next_ = torch::empty({rows, act}, f);
    tanh_ = torch::empty({rows, act}, f);
    target_ = torch::empty({rows}, f);
    dq_ = torch::empty({rows, 1}, f);
    dx_ = torch::empty({rows, critic_in}, f);
    da_ = torch::empty({rows, act}, f);
  }

  // The actor (or target actor) on `obs`: its action into `action` (`tanh_out` keeps tanh(h)).
  void act(const detail::NetworkPlan& net, MlpPass& pass, const torch::Tensor& flat, const float* obs,
           torch::Tensor& tanh_out, torch::Tensor& action) {
    pass.forward(net.mlp, ptr(flat), obs);
    if (net.scale.defined()) {
      detail::squash(pass.output(), tanh_out, action.data_ptr<float>(), net.scale, net.shift);
    } else {
      std::copy(ptr(pass.output()), ptr(pass.output()) + action.numel(), action.data_ptr<float>());
    }
  }

  // d loss / d pred for pred - target = d (per element, already divided by the batch size
  // `inv_rows` as MeanBackward does), as ATen's distance backwards compute it.
  float distance_grad(float d, float inv_rows) const {
    switch (loss_function_) {
      case objectives::LossFunction::L2: return (2.0f * d) * inv_rows;
      case objectives::LossFunction::L1: return (d > 0 ? 1.0f : (d < 0 ? -1.0f : 0.0f)) * inv_rows;
      case objectives::LossFunction::SmoothL1:
        if (d < -1.0f) return -inv_rows;
        if (d > 1.0f) return inv_rows;
        return d * inv_rows;
    }
    return 0;
  }
  double distance(float d) const {
    switch (loss_function_) {
      case objectives::LossFunction::L2: return static_cast<double>(d * d);
      case objectives::LossFunction::L1: return std::abs(static_cast<double>(d));
      case objectives::LossFunction::SmoothL1: {
        const float a = std::abs(d);
        return a < 1.0f ? static_cast<double>(0.5f * d * d) : static_cast<double>(a - 0.5f);
      }
    }
    return 0;
  }

  // The critics' loss and gradients (written into the critic group's gradient), the targets
  // from the target networks; writes the priority into `batch` and the loss into `out`.
  void compute_critic(TensorDict& batch, TensorDict& out) {
    const torch::Tensor obs = batch.get(obs_key_).contiguous();
    const torch::Tensor action = batch.get(action_key_).contiguous();
    const NestedKey next("next");
    const torch::Tensor next_obs = batch.get(next / obs_key_).contiguous();
    const torch::Tensor reward = batch.get(next / reward_key_).contiguous();
    const torch::Tensor terminated = batch.get(next / terminated_key_).contiguous();
    const int64_t obs_dim = obs.size(-1), act_dim = action.size(-1);
    TORCH_CHECK(reward.numel() == rows_ && terminated.numel() == rows_ && terminated.scalar_type() == torch::kBool,
                "ActorCriticEngine: expected a reward and a bool terminated flag per row");

    // Targets: y = r + (gamma * !terminated) * Q'(s', mu'(s') [+ clipped noise]).
    torch::NoGradGuard no_grad;
    torch::Tensor noise;
    // Drawn first, as TorchRL, from the batch's tensor itself (randn_like keeps its strides).
    if (td3_noise_) noise = td3_noise_(batch.get(action_key_)).contiguous();
    act(target_actor_, target_actor_pass_, target_actor_flat_, ptr(next_obs), tanh_next_, next_action_);
    if (noise.defined()) {
      // (a' + noise).clamp(min_action, max_action), bounds per action feature.
      float* a = next_action_.data_ptr<float>();
      const float* n = ptr(noise);
      const float* lo = ptr(min_action_);
      const float* hi = ptr(max_action_);
      const bool scalar = min_action_.numel() == 1;
      for (int64_t r = 0; r < rows_; ++r) {
        for (int64_t c = 0; c < act_dim; ++c) {
          const float v = a[r * act_dim + c] + n[r * act_dim + c];
          const float l = lo[scalar ? 0 : c], h = hi[scalar ? 0 : c];
          a[r * act_dim + c] = std::min(std::max(v, l), h);
        }
      }
    }
    critic_input(next_x_.data_ptr<float>(), ptr(next_obs), ptr(next_action_), obs_dim, act_dim, rows_);
    const size_t n_critics = critics_.size();
    for (size_t c = 0; c < n_critics; ++c) {
      target_passes_[c].forward(target_critics_[c].mlp, ptr(target_critic_flat_), ptr(next_x_));
    }
    const float* r = ptr(reward);
    const bool* term = terminated.data_ptr<bool>();
    float* y = target_.data_ptr<float>();
    for (int64_t i = 0; i < rows_; ++i) {
      float q = ptr(target_passes_[0].output())[i];
      for (size_t c = 1; c < n_critics; ++c) q = std::min(q, ptr(target_passes_[c].output())[i]);
      const float not_terminated = term[i] ? 0.0f : 1.0f;
      const float discount = gamma_ * not_terminated;
      const float bootstrap = discount * q;
      y[i] = r[i] + bootstrap;
    }

    // The critics on (s, a): loss and gradient.
    critic_input(x_.data_ptr<float>(), ptr(obs), ptr(action), obs_dim, act_dim, rows_);
    float* grads = critic_flat_.grad().data_ptr<float>();
    const float inv_rows = 1.0f / static_cast<float>(rows_);
    double total = 0;
    torch::Tensor priority = torch::empty({rows_}, torch::kFloat);
    float* prio = priority.data_ptr<float>();
    std::fill(prio, prio + rows_, -1.0f);
    for (size_t c = 0; c < n_critics; ++c) {
      critic_passes_[c].forward(critics_[c].mlp, ptr(critic_flat_), ptr(x_));
      const float* q = ptr(critic_passes_[c].output());
      float* dq = dq_.data_ptr<float>();
      for (int64_t i = 0; i < rows_; ++i) {
        const float d = q[i] - y[i];
        total += distance(d);
        dq[i] = distance_grad(d, inv_rows);
        prio[i] = std::max(prio[i], d * d);
      }
      critic_passes_[c].backward(critics_[c].mlp, ptr(critic_flat_), ptr(x_), dq, grads, nullptr, sums_);
    }
    batch.set(priority_key_, priority);
    out.set(critic_loss_key_,
            torch::tensor(static_cast<float>(total / static_cast<double>(rows_))));
  }

  // The actor loss -mean Q_0(s, mu(s)) and the actor group's gradient (through critic 0, whose
  // parameters get nothing).
  void compute_actor(const TensorDict& batch, TensorDict& out) {
    torch::NoGradGuard no_grad;
    const torch::Tensor obs = batch.get(obs_key_).contiguous();
    const int64_t obs_dim = obs.size(-1), act_dim = action_.size(1);
    act(actor_, actor_pass_, actor_flat_, ptr(obs), tanh_, action_);
    critic_input(actor_x_.data_ptr<float>(), ptr(obs), ptr(action_), obs_dim, act_dim, rows_);
    actor_critic_pass_.forward(critics_[0].mlp, ptr(critic_flat_), ptr(actor_x_));
    const float* q = ptr(actor_critic_pass_.output());
    const float inv_rows = 1.0f / static_cast<float>(rows_);
    float* dq = dq_.data_ptr<float>();
    double total = 0;
    for (int64_t i = 0; i < rows_; ++i) {
      total -= static_cast<double>(q[i]);
      dq[i] = -inv_rows;
    }
    actor_critic_pass_.backward(critics_[0].mlp, ptr(critic_flat_), ptr(actor_x_), dq, nullptr,
                                dx_.data_ptr<float>(), sums_);
    // The action's columns of the critic's input gradient, back through the TanhModule.
    const int64_t in = critics_[0].mlp.in_features();
    const int64_t first = action_first_ ? 0 : obs_dim;
    const float* dx = ptr(dx_);
    float* da = da_.data_ptr<float>();
    for (int64_t r = 0; r < rows_; ++r) std::copy(dx + r * in + first, dx + r * in + first + act_dim, da + r * act_dim);
    if (actor_.scale.defined()) {
      const float* sc = ptr(actor_.scale);
      const bool scalar = actor_.scale.numel() == 1;
      for (int64_t r = 0; r < rows_; ++r) {
        for (int64_t c = 0; c < act_dim; ++c) da[r * act_dim + c] = da[r * act_dim + c] * sc[scalar ? 0 : c];
      }
      kernels::tanh_backward_(da, ptr(tanh_), rows_ * act_dim);
    }
    actor_pass_.backward(actor_.mlp, ptr(actor_flat_), ptr(obs), da, actor_flat_.grad().data_ptr<float>(), nullptr,
                         sums_);
    out.set("loss_actor", torch::tensor(static_cast<float>(total / static_cast<double>(rows_))));
  }

  // The optimizer state's key of `param`: its TensorImpl's address, as a string (1.13, whose
  // optimizers key it by `c10::guts::to_string` of the pointer: an ostream's text) or not.
  template <typename Key>
  static Key state_key(const torch::Tensor& param) {
    if constexpr (std::is_same<Key, std::string>::value) {
      std::ostringstream text;
      text << static_cast<const void*>(param.unsafeGetTensorImpl());
      return text.str();
    } else {
      return param.unsafeGetTensorImpl();
    }
  }

  // LibTorch's Adam step on one flat group, with the optimizer's own state (created as
  // `Adam::step` creates it).
  static void adam_step(AdamParam& a) {
    auto& state_map = a.optimizer->state();
    using Key = typename std::decay_t<decltype(state_map)>::key_type;
    const Key key = state_key<Key>(a.param);
    auto it = state_map.find(key);
    if (it == state_map.end()) {
      auto state = std::make_unique<torch::optim::AdamParamState>();
      state->step(0);
      state->exp_avg(torch::zeros_like(a.param, torch::MemoryFormat::Preserve));
      state->exp_avg_sq(torch::zeros_like(a.param, torch::MemoryFormat::Preserve));
      it = state_map.emplace(key, std::move(state)).first;
    }
    auto& state = static_cast<torch::optim::AdamParamState&>(*it->second);
    auto& groups = a.optimizer->param_groups();
    TORCH_CHECK(a.group < groups.size(), "ActorCriticEngine: the optimizer's parameter groups changed since the engine was made");
    const auto* options = static_cast<const torch::optim::AdamOptions*>(&groups[a.group].options());
    TORCH_CHECK(!options->amsgrad(), "ActorCriticEngine: the optimizer turned amsgrad on since the engine was made");
    for (const torch::Tensor* t : {&state.exp_avg(), &state.exp_avg_sq()}) {
      TORCH_CHECK(t->is_contiguous() && t->scalar_type() == torch::kFloat && t->numel() == a.param.numel() && t->is_cpu(),
                  "ActorCriticEngine: the Adam state of a parameter group is not a contiguous float32 CPU tensor "
                  "of its size (a loaded optimizer state of another network?)");
    }
    state.step(state.step() + 1);
    const double beta1 = std::get<0>(options->betas()), beta2 = std::get<1>(options->betas());
    const double bias_correction1 = 1 - std::pow(beta1, state.step());
    const double bias_correction2 = 1 - std::pow(beta2, state.step());
    const double step_size = options->lr() / bias_correction1;
    torch::Tensor grad = a.param.grad();
    const int64_t n = a.param.numel();
    float* p = a.param.data_ptr<float>();
    float* m = state.exp_avg().data_ptr<float>();
    float* v = state.exp_avg_sq().data_ptr<float>();
    kernels::adam_moments(p, grad.data_ptr<float>(), m, v, n, static_cast<float>(beta1), static_cast<float>(1 - beta1),
                          static_cast<float>(beta2), static_cast<float>(1 - beta2),
                          static_cast<float>(options->weight_decay()));
    if (!a.sqrt_v.defined() || a.sqrt_v.numel() != n) a.sqrt_v = torch::empty({n}, torch::kFloat);
    at::sqrt_out(a.sqrt_v, state.exp_avg_sq().view({n}));
    kernels::adam_apply(p, m, a.sqrt_v.data_ptr<float>(), n, static_cast<float>(std::sqrt(bias_correction2)),
                        static_cast<float>(options->eps()), static_cast<float>(-step_size));
  }

  // The critic's (actor = false) or the actor's optimizer steps.
  void adam(bool actor) {
    torch::NoGradGuard no_grad;
    for (auto& a : adam_) {
      if (a.actor == actor) adam_step(a);
    }
  }

  // SoftUpdate::step on every delayed pair, buffers included.
  void soft_update() {
    torch::NoGradGuard no_grad;
    const float eps = static_cast<float>(soft_->eps());
    const float weight = static_cast<float>(1.0 - soft_->eps());
    for (const auto& p : soft_->pairs()) {
      kernels::soft_update(p.target.data_ptr<float>(), ptr(p.source), p.target.numel(), eps, weight);
      for (const auto& b : p.buffers) {
        if (b.first.scalar_type() == torch::kFloat) {
          kernels::soft_update(b.first.data_ptr<float>(), ptr(b.second), b.first.numel(), eps, weight);
        } else {
          torch::Tensor target = b.first;
          target.copy_(b.second);
        }
      }
    }
  }

  struct OptimizerLayout {
    torch::optim::Adam* adam;
    std::vector<std::vector<const c10::TensorImpl*>> groups;  // its groups' parameters at make
  };

  std::shared_ptr<objectives::LossModuleImpl> loss_;
  std::function<std::string()> config_;  // the loss's options, estimator and keys, read again
  std::vector<torch::Tensor> trained_params_;
  std::vector<OptimizerLayout> optimizers_;
  NestedKey steps_key_{"steps_to_next_obs"};
  objectives::LossFunction loss_function_ = objectives::LossFunction::L2;
  std::string critic_loss_key_, critic_group_;
  torch::Tensor actor_flat_, critic_flat_, target_actor_flat_, target_critic_flat_;
  detail::NetworkPlan actor_, target_actor_;
  std::vector<detail::NetworkPlan> critics_, target_critics_;
  NestedKey obs_key_{"observation"}, action_key_{"action"}, value_key_{"state_action_value"}, reward_key_{"reward"},
      terminated_key_{"terminated"}, priority_key_{"td_error"};
  bool action_first_ = false;
  float gamma_ = 0.99f;
  torch::Tensor min_action_, max_action_;
  std::function<torch::Tensor(const torch::Tensor&)> td3_noise_;
  std::vector<AdamParam> adam_;
  bool shared_optimizer_ = false;
  std::shared_ptr<objectives::TargetNetUpdater> updater_;
  objectives::SoftUpdate* soft_ = nullptr;  // the updater, when it runs fused

  int64_t rows_ = -1;
  MlpPass actor_pass_, target_actor_pass_, actor_critic_pass_;
  std::vector<MlpPass> critic_passes_, target_passes_;
  torch::Tensor x_, next_x_, actor_x_, next_action_, action_, tanh_next_, tanh_, target_, dq_, dx_, da_;
  std::vector<double> sums_;
};

}  // namespace engine
}  // namespace rlobj
