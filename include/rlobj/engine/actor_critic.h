#pragma once

/// \file
/// `ActorCriticEngine`: one DDPG, TD3 or SAC update — the forward passes, the losses, their
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
#include <typeinfo>
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
#include "rlobj/modules/distributions.h"
#include "rlobj/modules/probabilistic.h"
#include "rlobj/modules/tensordict_module.h"
#include "rlobj/modules/value_operator.h"
#include "rlobj/objectives/ddpg.h"
#include "rlobj/objectives/sac.h"
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
template <typename T>
struct is_sac : std::false_type {};
template <typename A, typename Q>
struct is_sac<objectives::SACLossImpl<A, Q>> : std::true_type {};

/// A network's MLP, its keys, and (actors) the TanhModule squashing its output.
struct NetworkPlan {
  MlpPlan mlp;
  std::vector<NestedKey> in_keys;  ///< concatenated in this order
  NestedKey out_key{"action"};
  torch::Tensor low, span;         ///< TanhModule's `low` and `high - low` (float32 CPU), or undefined
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
    if (tanh->clamp()) return fail("a TanhModule with clamp");
    const torch::Tensor &low = tanh->low(), &high = tanh->high();
    if (low.scalar_type() != torch::kFloat || !low.is_cpu() || high.scalar_type() != torch::kFloat || !high.is_cpu()) {
      return fail("TanhModule bounds that are not float32 on the CPU");
    }
    const int64_t n = plan->out_features();
    if ((low.numel() != 1 && low.numel() != n) || (high.numel() != 1 && high.numel() != n)) {
      return fail("TanhModule bounds of another size than the action");
    }
    // high - low as ATen computes it in the module's forward (float32), per feature.
    out.low = low.reshape({-1}).expand({n}).contiguous();
    out.span = (high - low).reshape({-1}).expand({n}).contiguous();
    out.out_key = tanh->out_keys()[0];
  }
  return out;
}

/// What a SAC actor adds to its MLP: tensordict's `NormalParamExtractor` and the `TanhNormal`.
struct TanhNormalPlan {
  float scale_lb = 1e-4f;  ///< the extractor's scale floor
  float bias = 0;          ///< `NormalParamExtractor::bias()`, as float32 adds it
  float limit = 1.0f;      ///< `TanhNormal::limit()`, as float32 clamps with it
  /// `tanh_loc`'s `upscale` (the location becomes `tanh(loc / upscale) * upscale`), as float32
  /// multiplies by it; 0 without `tanh_loc`.
  float upscale = 0;
  /// `TanhNormal`'s affine map and low bound, one per action feature (float32), and
  /// `log|affine_scale|`; undefined with the bounds (-1, 1).
  torch::Tensor affine_loc, affine_scale, low, log_affine_scale;
};

/// The plan of a SAC actor: a `ProbabilisticActor` over a `TensorDictSequential` of an MLP
/// module (writing `loc` and the scale's pre-image side by side) and a `NormalParamExtractor`
/// module, with a `TanhNormal` (one event dim) writing `action_key`; or nothing,
/// with the reason in `why`. The distribution's bounds are read from one made by its factory.
inline std::optional<std::pair<NetworkPlan, TanhNormalPlan>> plan_tanh_normal_actor(torch::nn::Module& module,
                                                                                    const torch::Tensor& flat,
                                                                                    const NestedKey& action_key,
                                                                                    std::string* why) {
  using Result = std::optional<std::pair<NetworkPlan, TanhNormalPlan>>;
  const auto fail = [&](const std::string& reason) -> Result {
    *why = reason;
    return std::nullopt;
  };
  auto* actor = dynamic_cast<modules::ProbabilisticActorImpl*>(&module);
  if (actor == nullptr) return fail("a stochastic actor that is not a ProbabilisticActor");
  if (actor->options().out_key() != action_key) return fail("a ProbabilisticActor writing another key than the action");
  auto* seq = dynamic_cast<modules::TensorDictSequentialImpl*>(actor->module().get());
  auto* extract = seq != nullptr && seq->size() == 2 ? dynamic_cast<modules::TensorDictModuleImpl*>((*seq)[1].get()) : nullptr;
  auto* extractor = extract != nullptr ? dynamic_cast<modules::NormalParamExtractorImpl*>(extract->module().get()) : nullptr;
  if (extractor == nullptr) {
    return fail("a ProbabilisticActor whose module is not an MLP module followed by a NormalParamExtractor module");
  }
  auto net = plan_network(*(*seq)[0], flat, /*trained=*/true, why);
  if (!net) return std::nullopt;
  const int64_t features = net->mlp.out_features() / 2;
  if (net->mlp.out_features() % 2 != 0 || extract->in_keys() != std::vector<NestedKey>{net->out_key} ||
      extract->out_keys().size() != 2 || actor->options().in_keys() != extract->out_keys()) {
    return fail("a ProbabilisticActor whose distribution parameters are not its NormalParamExtractor's (loc, scale)");
  }
  std::shared_ptr<modules::Distribution> probe;
  try {
    probe = actor->factory()({torch::zeros({1, features}), torch::ones({1, features})});
  } catch (const c10::Error&) {
    return fail("a distribution the engine cannot read (its factory refuses float32 CPU parameters)");
  }
  const auto* tanh_normal = dynamic_cast<const modules::TanhNormal*>(probe.get());
  if (tanh_normal == nullptr) return fail("a distribution other than TanhNormal");
  if (tanh_normal->options().event_dims() != 1) return fail("TanhNormal with event_dims other than 1");
  TanhNormalPlan p;
  p.scale_lb = static_cast<float>(extractor->options.scale_lb());
  p.bias = static_cast<float>(modules::NormalParamExtractorImpl::bias());
  p.limit = static_cast<float>(tanh_normal->limit());
  if (tanh_normal->options().tanh_loc()) p.upscale = static_cast<float>(tanh_normal->options().upscale());
  if (tanh_normal->affine_scale().defined()) {
    const auto per_feature = [&](const torch::Tensor& t) -> torch::Tensor {
      if (t.numel() != 1 && t.numel() != features) return {};
      return t.to(torch::kFloat).reshape({-1}).expand({features}).contiguous();
    };
    p.affine_loc = per_feature(tanh_normal->affine_loc());
    p.affine_scale = per_feature(tanh_normal->affine_scale());
    p.low = per_feature(tanh_normal->low());
    if (!p.affine_loc.defined() || !p.affine_scale.defined() || !p.low.defined()) {
      return fail("TanhNormal bounds of another size than the action");
    }
    p.log_affine_scale = p.affine_scale.abs().log();
  }
  return std::make_pair(*net, p);
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

/// `a = low + (high - low) * (tanh(h) + 1) / 2` (TanhModule, TorchRL's order of operations),
/// `h` kept; `t` receives `tanh(h)`. `low` and `span = high - low` hold one value per column.
inline void squash(const torch::Tensor& h, torch::Tensor& t, float* a, const torch::Tensor& low,
                   const torch::Tensor& span) {
  at::tanh_out(t, h);
  const int64_t rows = t.size(0), cols = t.size(1);
  const float* tp = t.data_ptr<float>();
  const float* lo = low.data_ptr<float>();
  const float* sp = span.data_ptr<float>();
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = 0; c < cols; ++c) {
      const float m = sp[c] * (tp[r * cols + c] + 1.0f);
      a[r * cols + c] = lo[c] + m / 2.0f;
    }
  }
}

}  // namespace detail

/// The fused DDPG / TD3 update (see the file comment).
///
/// ```
/// std::string why;
/// auto engine = rlobj::engine::ActorCriticEngine::make(loss, optim_actor, optim_critic, /*optim_alpha=*/nullptr,
///                                                     updater, &why);
/// if (engine) {
///   rlobj::TensorDict losses = engine->step(batch, /*actor_turn=*/true, /*critic_first=*/false);
/// }
/// ```
class ActorCriticEngine {
 public:
  /// The engine for `loss` (a `DDPGLoss`, `TD3Loss` or `SACLoss` holder) trained by
  /// `optim_actor`, `optim_critic` (`torch::optim::Adam` over the loss's actor and critic groups;
  /// one optimizer may hold both) and `optim_alpha` (SAC with a trained temperature: an Adam of
  /// its own over `log_alpha`; else null) and moved by `updater` (any `TargetNetUpdater`; a
  /// `SoftUpdate` runs fused, others as they are; null for none), or null with the reason in
  /// `why`. The engine computes: MLP networks (`engine::MlpPlan::of`) in `Actor` /
  /// `ValueOperator` / `TensorDictModule`s (an actor may end in a `TanhModule`; SAC's is a
  /// `ProbabilisticActor` over an MLP module, a `NormalParamExtractor` module and a `TanhNormal`,
  /// see `detail::plan_tanh_normal_actor`), a critic reading the observation and the action, mean
  /// reduction, TD0, no `separate_losses`, float32 on the CPU, a BLAS `sgemm_` in the process.
  template <typename Loss>
  static std::unique_ptr<ActorCriticEngine> make(Loss& loss, const std::shared_ptr<torch::optim::Optimizer>& optim_actor,
                                                 const std::shared_ptr<torch::optim::Optimizer>& optim_critic,
                                                 const std::shared_ptr<torch::optim::Optimizer>& optim_alpha,
                                                 const std::shared_ptr<objectives::TargetNetUpdater>& updater,
                                                 std::string* why) {
    using Impl = typename Loss::ContainedType;
    constexpr bool ddpg = detail::is_ddpg<Impl>::value, td3 = detail::is_td3<Impl>::value,
                   sac = detail::is_sac<Impl>::value;
    if constexpr (!ddpg && !td3 && !sac) {
      *why = "a loss the engine does not compute (it computes DDPGLoss, TD3Loss and SACLoss)";
      return nullptr;
    } else {
      auto& impl = *loss;
      auto fail = [&](const std::string& reason) -> std::unique_ptr<ActorCriticEngine> {
        *why = reason;
        return nullptr;
      };
      if (const std::string b = engine::detail::blas_unavailable(); !b.empty()) return fail(b);
      if (optim_actor == nullptr || optim_critic == nullptr) return fail("no actor or critic optimizer");
      if (optim_alpha != nullptr && (optim_alpha == optim_actor || optim_alpha == optim_critic)) {
        return fail("one optimizer for the temperature and a network");
      }
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
      if constexpr (sac) {
        // Its samples are drawn as SACLoss::draw_action draws them; a derived class may draw
        // otherwise.
        if (typeid(impl) != typeid(Impl)) return fail("a class derived from SACLoss (its draws may differ)");
        if (o.fixed_alpha() != (optim_alpha == nullptr)) {
          return fail(o.fixed_alpha() ? "a temperature optimizer with fixed_alpha"
                                      : "a trained temperature without a temperature optimizer");
        }
        auto planned = detail::plan_tanh_normal_actor(*impl.actor_network().ptr(), e->actor_flat_,
                                                      impl.tensor_keys().action, why);
        if (!planned) return nullptr;
        e->actor_ = planned->first;
        e->tanh_normal_ = planned->second;
        e->sac_ = true;
        e->alpha_fn_ = [&impl]() { return impl.alpha(); };
        e->log_alpha_ = impl.log_alpha();
        e->target_entropy_ = impl.target_entropy();
        for (const torch::Tensor* t : {&e->log_alpha_, &e->target_entropy_}) {
          if (t->numel() != 1 || t->scalar_type() != torch::kFloat || !t->is_cpu()) {
            return fail("a temperature that is not one float32 CPU value");
          }
        }
        e->act_dim_ = e->actor_.mlp.out_features() / 2;
      } else {
        if (optim_alpha != nullptr) return fail("a temperature optimizer for a loss without a temperature");
        auto actor = detail::plan_network(*impl.actor_network().ptr(), e->actor_flat_, /*trained=*/true, why);
        if (!actor) return nullptr;
        auto target_actor = detail::plan_network(*impl.target_actor_network(), e->target_actor_flat_, false, why);
        if (!target_actor) return nullptr;
        e->actor_ = *actor;
        e->target_actor_ = *target_actor;
        e->act_dim_ = e->actor_.mlp.out_features();
        if (e->target_actor_.mlp.in_features() != e->actor_.mlp.in_features() ||
            e->target_actor_.mlp.out_features() != e->actor_.mlp.out_features()) {
          return fail("a target actor of another shape than the actor");
        }
      }
      std::vector<std::shared_ptr<torch::nn::Module>> critics, targets;
      if constexpr (ddpg) {
        critics = {impl.value_network().ptr()};
        targets = {impl.target_value_network()};
        e->action_key_ = e->actor_.out_key;
      } else {
        for (const auto& c : impl.qvalue_networks()) critics.push_back(c);
        for (const auto& c : impl.target_qvalue_networks()) targets.push_back(c);
        e->action_key_ = impl.tensor_keys().action;
      }
      if constexpr (td3) {
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
      if (e->actor_.in_keys.size() != 1 || (!sac && e->actor_.out_key != e->action_key_)) {
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
        const int64_t in = e->actor_.mlp.in_features() + e->act_dim_;
        if (e->critics_[c].mlp.in_features() != in || e->target_critics_[c].mlp.in_features() != in) {
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
      // The optimisers: Adam over the loss's two flat groups (and SAC's log_alpha), nothing else.
      e->shared_optimizer_ = optim_actor == optim_critic;
      std::vector<std::shared_ptr<torch::optim::Optimizer>> optimizers{optim_critic};
      if (!e->shared_optimizer_) optimizers.push_back(optim_actor);
      if (optim_alpha != nullptr) optimizers.push_back(optim_alpha);
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
            const c10::TensorImpl* impl_of = p.unsafeGetTensorImpl();
            const Role role = impl_of == e->actor_flat_.unsafeGetTensorImpl()    ? Role::Actor
                              : impl_of == e->critic_flat_.unsafeGetTensorImpl() ? Role::Critic
                              : (e->sac_ && impl_of == e->log_alpha_.unsafeGetTensorImpl()) ? Role::Alpha
                                                                                             : Role::None;
            if (role == Role::None) {
              return fail(e->sac_ ? "an optimizer over tensors other than the loss's actor and critic groups and log_alpha"
                                  : "an optimizer over tensors other than the loss's actor and critic groups");
            }
            const Role expected = optimizer == optim_alpha ? Role::Alpha
                                  : optimizer == optim_critic && !e->shared_optimizer_ ? Role::Critic
                                  : optimizer == optim_actor && !e->shared_optimizer_  ? Role::Actor
                                                                                       : role;
            if (role != expected || (e->shared_optimizer_ && role == Role::Alpha)) {
              return fail("an optimizer over another network's parameters than its own (actor, critic, temperature)");
            }
            e->adam_.push_back({adam, gi, p, role, {}});
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
  void step_critic() { adam(Role::Critic); }
  /// The actor optimizer's step.
  void step_actor() { adam(Role::Actor); }
  /// The temperature optimizer's step (SAC with a trained temperature; else nothing).
  void step_alpha() { adam(Role::Alpha); }

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
    TORCH_CHECK_VALUE(!(sac_ && critic_first), "ActorCriticEngine: critic_first needs a loss with split losses (TD3Loss)");
    prepare(batch);
    return run_step(batch, actor_turn, critic_first);
  }

  /// `step` where the engine computes this update, else nothing, with the reason in `why`
  /// (`inapplicable`, read once); the loss's own checks throw as in `step`.
  std::optional<TensorDict> try_step(TensorDict batch, bool actor_turn, bool critic_first, std::string* why) {
    TORCH_CHECK_VALUE(!(sac_ && critic_first), "ActorCriticEngine: critic_first needs a loss with split losses (TD3Loss)");
    *why = inapplicable(batch);
    if (!why->empty()) return std::nullopt;
    loss_->validate(batch);
    ready(batch);
    return run_step(batch, actor_turn, critic_first);
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

  // What a parameter an optimizer steps is.
  enum class Role { None, Critic, Actor, Alpha };

  struct AdamParam {
    torch::optim::Adam* optimizer;
    size_t group;  // its index in the optimizer's param_groups
    torch::Tensor param;  // a loss flat group, or SAC's log_alpha
    Role role;
    torch::Tensor sqrt_v;  // scratch
  };

  static const float* ptr(const torch::Tensor& t) { return t.data_ptr<float>(); }

  // The loss's checks, the engine's own (the layouts it reads raw), the buffers for the batch
  // size: all before anything changes.
  void prepare(const TensorDict& batch) {
    loss_->validate(batch);
    const std::string reason = inapplicable(batch);
    TORCH_CHECK(reason.empty(), loss_->loss_name(), ": the update engine does not compute this update: ", reason);
    ready(batch);
  }
  // Gradients and buffers, for a batch checked.
  void ready(const TensorDict& batch) {
    loss_->ensure_linked();  // gradients a zero_grad(set_to_none) dropped
    resize(batch.batch_size()[0]);
  }

  // `step` on a batch checked and made ready.
  TensorDict run_step(TensorDict& batch, bool actor_turn, bool critic_first) {
    TensorDict out(TensorDict::BatchSize{});
    compute_critic(batch, out);
    if (critic_first) step_critic();
    if (actor_turn) {
      compute_actor(batch, out);
      if (!critic_first) step_critic();
      step_actor();
      step_alpha();
      update_targets();
    } else if (!critic_first) {
      step_critic();
      // Op by op, SAC's loss draws the actor loss's sample on every update.
      if (sac_) draw_.eps.normal_();
    }
    // Op by op, the actor's (and temperature's) optimizer zeroes its gradient on the critic's
    // turns too (one loss, one backward), and the critic's loss adds nothing to it; with
    // critic_first only the critic's optimizer is zeroed, so the actor's gradient stays as it was.
    if (!actor_turn && !critic_first) {
      actor_flat_.grad().zero_();
      if (sac_ && log_alpha_.grad().defined()) log_alpha_.mutable_grad().zero_();
    }
    return out;
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
    if (sac_ && (log_alpha_.scalar_type() != torch::kFloat || !log_alpha_.is_cpu() ||
                 target_entropy_.scalar_type() != torch::kFloat || !target_entropy_.is_cpu())) {
      return "a temperature that is not one float32 CPU value (loss->to(...)?)";
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
    const int64_t obs_dim = actor_.mlp.in_features(), act_dim = act_dim_;
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
    const int64_t act = act_dim_;
    const int64_t critic_in = critics_[0].mlp.in_features();
    const auto f = torch::TensorOptions().dtype(torch::kFloat);
    actor_pass_.resize(actor_.mlp, rows);
    if (sac_) {
      for (Draw* d : {&next_draw_, &draw_}) d->resize(actor_.mlp, rows, act);
    } else {
      target_actor_pass_.resize(target_actor_.mlp, rows);
    }
    critic_passes_.assign(critics_.size(), MlpPass());
    target_passes_.assign(critics_.size(), MlpPass());
    // DDPG's and TD3's actor loss reads critic 0 alone; SAC's the smallest of all.
    actor_critic_passes_.assign(sac_ ? critics_.size() : 1, MlpPass());
    dxs_.clear();
    for (size_t c = 0; c < critics_.size(); ++c) {
      critic_passes_[c].resize(critics_[c].mlp, rows);
      target_passes_[c].resize(target_critics_[c].mlp, rows);
    }
    dqs_.clear();
    for (size_t c = 0; c < actor_critic_passes_.size(); ++c) {
      actor_critic_passes_[c].resize(critics_[c].mlp, rows);
      dxs_.push_back(torch::empty({rows, critic_in}, f));
      dqs_.push_back(torch::empty({rows}, f));
    }
    x_ = torch::empty({rows, critic_in}, f);
    next_x_ = torch::empty({rows, critic_in}, f);
    actor_x_ = torch::empty({rows, critic_in}, f);
    next_action_ = torch::empty({rows, act}, f);
    action_ = torch::empty({rows, act}, f);
    tanh_next_ = torch::empty({rows, act}, f);
    tanh_ = torch::empty({rows, act}, f);
    target_ = torch::empty({rows}, f);
    dq_ = torch::empty({rows, 1}, f);
    da_ = torch::empty({rows, act}, f);
  }

  // The actor (or target actor) on `obs`: its action into `action` (`tanh_out` keeps tanh(h)).
  void act(const detail::NetworkPlan& net, MlpPass& pass, const torch::Tensor& flat, const float* obs,
           torch::Tensor& tanh_out, torch::Tensor& action) {
    pass.forward(net.mlp, ptr(flat), obs);
    if (net.low.defined()) {
      detail::squash(pass.output(), tanh_out, action.data_ptr<float>(), net.low, net.span);
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

  // ATen's softplus (beta 1, threshold 20) and its backward, element by element.
  static float softplus(float x) { return x > 20.0f ? x : std::log1p(std::exp(x)); }
  static float softplus_grad(float grad, float x) {
    if (x > 20.0f) return grad;
    const float z = std::exp(x);
    return grad * z / (z + 1.0f);
  }

  // SAC's next values: ``min_i (Q'_i(s', a') - alpha log pi(a'|s'))`` with ``a' ~ pi(.|s')``
  // drawn from the online actor; TD3's and DDPG's: ``min_i Q'_i(s', mu'(s') [+ clipped noise])``.
  // Into `target_`; the target critics' input into `next_x_`.
  void next_values(const TensorDict& batch, const torch::Tensor& next_obs) {
    const int64_t obs_dim = next_obs.size(-1), act_dim = act_dim_;
    const float* action = nullptr;
    if (sac_) {
      next_draw_.eps.normal_();  // TanhNormal::rsample's draw, the first of the update
      sample(next_draw_, ptr(next_obs));
      action = ptr(next_draw_.action);
    } else {
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
      action = ptr(next_action_);
    }
    critic_input(next_x_.data_ptr<float>(), ptr(next_obs), action, obs_dim, act_dim, rows_);
    const size_t n_critics = critics_.size();
    for (size_t c = 0; c < n_critics; ++c) {
      target_passes_[c].forward(target_critics_[c].mlp, ptr(target_critic_flat_), ptr(next_x_));
    }
    float* v = target_.data_ptr<float>();
    const float* log_prob = sac_ ? ptr(next_draw_.log_prob) : nullptr;
    for (int64_t i = 0; i < rows_; ++i) {
      // SAC: next_q - alpha * next_log_prob, then the minimum over the critics.
      const float entropy_term = sac_ ? alpha_value_ * log_prob[i] : 0.0f;
      float q = ptr(target_passes_[0].output())[i] - entropy_term;
      for (size_t c = 1; c < n_critics; ++c) q = std::min(q, ptr(target_passes_[c].output())[i] - entropy_term);
      v[i] = q;
    }
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
    torch::NoGradGuard no_grad;
    if (sac_) read_alpha();

    // Targets: y = r + (gamma * !terminated) * next value.
    next_values(batch, next_obs);
    const float* r = ptr(reward);
    const bool* term = terminated.data_ptr<bool>();
    float* y = target_.data_ptr<float>();
    for (int64_t i = 0; i < rows_; ++i) {
      const float not_terminated = term[i] ? 0.0f : 1.0f;
      const float discount = gamma_ * not_terminated;
      const float bootstrap = discount * y[i];
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
    for (size_t c = 0; c < critics_.size(); ++c) {
      critic_passes_[c].forward(critics_[c].mlp, ptr(critic_flat_), ptr(x_));
      const float* q = ptr(critic_passes_[c].output());
      float* dq = dq_.data_ptr<float>();
      for (int64_t i = 0; i < rows_; ++i) {
        const float d = q[i] - y[i];
        total += distance(d);
        dq[i] = distance_grad(d, inv_rows);
        // td_error: SAC's max_i |Q_i - y|, DDPG's and TD3's max_i (Q_i - y)^2.
        prio[i] = std::max(prio[i], sac_ ? std::abs(d) : d * d);
      }
      critic_passes_[c].backward(critics_[c].mlp, ptr(critic_flat_), ptr(x_), dq, grads, nullptr, sums_);
    }
    batch.set(priority_key_, priority);
    out.set(critic_loss_key_, torch::tensor(static_cast<float>(total / static_cast<double>(rows_))));
  }

  // The actor loss and the actor group's gradient: DDPG's and TD3's -mean Q_0(s, mu(s)) through
  // critic 0 (whose parameters get nothing), SAC's below.
  void compute_actor(const TensorDict& batch, TensorDict& out) {
    torch::NoGradGuard no_grad;
    if (sac_) {
      compute_sac_actor(batch, out);
      return;
    }
    const torch::Tensor obs = batch.get(obs_key_).contiguous();
    const int64_t obs_dim = obs.size(-1), act_dim = act_dim_;
    act(actor_, actor_pass_, actor_flat_, ptr(obs), tanh_, action_);
    critic_input(actor_x_.data_ptr<float>(), ptr(obs), ptr(action_), obs_dim, act_dim, rows_);
    MlpPass& critic = actor_critic_passes_[0];
    critic.forward(critics_[0].mlp, ptr(critic_flat_), ptr(actor_x_));
    const float* q = ptr(critic.output());
    const float inv_rows = 1.0f / static_cast<float>(rows_);
    float* dq = dq_.data_ptr<float>();
    double total = 0;
    for (int64_t i = 0; i < rows_; ++i) {
      total -= static_cast<double>(q[i]);
      dq[i] = -inv_rows;
    }
    critic.backward(critics_[0].mlp, ptr(critic_flat_), ptr(actor_x_), dq, nullptr, dxs_[0].data_ptr<float>(), sums_);
    float* da = da_.data_ptr<float>();
    action_gradient(da, obs_dim);
    // Back through the TanhModule.
    if (actor_.low.defined()) {
      // Autograd's order: DivBackward (/ 2), MulBackward (* (high - low)), then tanh's.
      const float* sp = ptr(actor_.span);
      for (int64_t r = 0; r < rows_; ++r) {
        for (int64_t c = 0; c < act_dim; ++c) da[r * act_dim + c] = (da[r * act_dim + c] / 2.0f) * sp[c];
      }
      kernels::tanh_backward_(da, ptr(tanh_), rows_ * act_dim);
    }
    actor_pass_.backward(actor_.mlp, ptr(actor_flat_), ptr(obs), da, actor_flat_.grad().data_ptr<float>(), nullptr,
                         sums_);
    out.set("loss_actor", torch::tensor(static_cast<float>(total / static_cast<double>(rows_))));
  }

  // The action's columns of the critics' input gradients (`dxs_`, summed), into `da`.
  void action_gradient(float* da, int64_t obs_dim) const {
    const int64_t in = critics_[0].mlp.in_features(), act_dim = act_dim_;
    const int64_t first = action_first_ ? 0 : obs_dim;
    for (int64_t r = 0; r < rows_; ++r) {
      for (int64_t j = 0; j < act_dim; ++j) {
        float g = ptr(dxs_[0])[r * in + first + j];
        for (size_t c = 1; c < dxs_.size(); ++c) g += ptr(dxs_[c])[r * in + first + j];
        da[r * act_dim + j] = g;
      }
    }
  }

  // -- SAC ---------------------------------------------------------------------------------------

  // One TanhNormal sample of the SAC actor on a batch, its log-probability, and what their
  // backward reads.
  struct Draw {
    MlpPass pass;  // the actor's MLP: loc and the scale's pre-image side by side
    torch::Tensor eps, base_loc, scale, tanh, action, z, x, loc_tanh;  // [rows, act]
    torch::Tensor log_prob;                                   // [rows]
    torch::Tensor dparam;                                     // [rows, 2 act]: the MLP output's gradient
    void resize(const MlpPlan& plan, int64_t rows, int64_t act) {
      pass.resize(plan, rows);
      for (torch::Tensor* t : {&eps, &base_loc, &scale, &tanh, &action, &z, &x, &loc_tanh}) {
        *t = torch::empty({rows, act}, torch::kFloat);
      }
      log_prob = torch::empty({rows}, torch::kFloat);
      dparam = torch::empty({rows, 2 * act}, torch::kFloat);
    }
  };

  // alpha (SACLoss::alpha: log_alpha clamped into its bounds, exp) for this update.
  void read_alpha() {
    alpha_ = alpha_fn_();
    alpha_value_ = *ptr(alpha_);
  }

  // The sample `d.eps` (standard normals) gives on observations `obs`, and its log-probability,
  // as NormalParamExtractor, TanhNormal::rsample_with and TanhNormal::log_prob compute them, op
  // for op (tanh and atanh by ATen's kernels, whose last bits the re-inverted sample depends on).
  void sample(Draw& d, const float* obs) {
    const auto& tn = tanh_normal_;
    const int64_t rows = rows_, n = act_dim_;
    d.pass.forward(actor_.mlp, ptr(actor_flat_), obs);
    const float* param = ptr(d.pass.output());
    const float* eps = ptr(d.eps);
    const bool affine = tn.affine_scale.defined();
    const float* am = affine ? ptr(tn.affine_loc) : nullptr;
    const float* as = affine ? ptr(tn.affine_scale) : nullptr;
    const float* low = affine ? ptr(tn.low) : nullptr;
    const float* log_as = affine ? ptr(tn.log_affine_scale) : nullptr;
    float* base_loc = d.base_loc.data_ptr<float>();
    float* scale = d.scale.data_ptr<float>();
    float* t = d.tanh.data_ptr<float>();
    if (tn.upscale != 0) {
      // tanh_loc: loc = tanh(loc / upscale) * upscale, tanh by ATen's kernel (kept for the backward).
      float* loc_tanh = d.loc_tanh.data_ptr<float>();
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < n; ++j) loc_tanh[r * n + j] = param[r * 2 * n + j] / tn.upscale;
      }
      at::tanh_out(d.loc_tanh, d.loc_tanh);
    }
    const float* loc_tanh = tn.upscale != 0 ? ptr(d.loc_tanh) : nullptr;
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = r * n + j;
        const float loc = loc_tanh != nullptr ? loc_tanh[i] * tn.upscale : param[r * 2 * n + j];
        const float s0 = softplus(param[r * 2 * n + n + j] + tn.bias) + 0.01f;
        const float s = s0 < tn.scale_lb ? tn.scale_lb : s0;  // clamp_min (NaN stays)
        const float bl = affine ? (loc + as[j]) + low[j] : loc;
        base_loc[i] = bl;
        scale[i] = s;
        t[i] = bl + eps[i] * s;
      }
    }
    at::tanh_out(d.tanh, d.tanh);
    const float lim = tn.limit;
    float* action = d.action.data_ptr<float>();
    float* z = d.z.data_ptr<float>();
    float* x = d.x.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = r * n + j;
        const float clamped = std::min(std::max(t[i], -lim), lim);
        action[i] = affine ? am[j] + as[j] * clamped : clamped;
        // log_prob inverts the sample: x = atanh(clamp((a - m) / s)).
        z[i] = affine ? (action[i] - am[j]) / as[j] : action[i];
        x[i] = std::min(std::max(z[i], -lim), lim);
      }
    }
    at::atanh_out(d.x, d.x);
    const float log2 = static_cast<float>(std::log(2.0));
    const float log_sqrt_2pi = static_cast<float>(std::log(std::sqrt(2 * M_PI)));
    float* log_prob = d.log_prob.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      float ladj_sum = 0, normal_sum = 0;
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = r * n + j;
        float ladj = ((log2 - x[i]) - softplus(x[i] * -2.0f)) * 2.0f;
        if (affine) ladj = ladj + log_as[j];
        const float diff = x[i] - base_loc[i];
        const float var = scale[i] * scale[i];
        const float normal = (-(diff * diff)) / (var * 2.0f) - std::log(scale[i]) - log_sqrt_2pi;
        ladj_sum += ladj;
        normal_sum += normal;
      }
      log_prob[r] = -ladj_sum + normal_sum;
    }
  }

  // SAC's actor loss ``mean(alpha log pi(a~|s) - min_i Q_i(s, a~))`` (`a~` reparameterised, the
  // critics' parameters frozen) with the actor group's gradient, the temperature loss
  // ``mean(-log_alpha (log pi(a~|s) + target_entropy))`` with log_alpha's gradient (when trained),
  // alpha and the entropy estimate ``-mean log pi(a~|s)``.
  void compute_sac_actor(const TensorDict& batch, TensorDict& out) {
    read_alpha();
    const torch::Tensor obs = batch.get(obs_key_).contiguous();
    const int64_t obs_dim = obs.size(-1), n = act_dim_, rows = rows_;
    Draw& d = draw_;
    d.eps.normal_();  // the update's second draw
    sample(d, ptr(obs));
    critic_input(actor_x_.data_ptr<float>(), ptr(obs), ptr(d.action), obs_dim, n, rows);
    const size_t n_critics = critics_.size();
    for (size_t c = 0; c < n_critics; ++c) {
      actor_critic_passes_[c].forward(critics_[c].mlp, ptr(critic_flat_), ptr(actor_x_));
    }
    // The loss, and the minimum's gradient -1/B to the critic holding it (min(0)'s first index).
    const float g = 1.0f / static_cast<float>(rows);  // MeanBackward
    const float g_log_prob = g * alpha_value_;
    const float* log_prob = ptr(d.log_prob);
    std::vector<float*> dq(n_critics);
    for (size_t c = 0; c < n_critics; ++c) dq[c] = dqs_[c].data_ptr<float>();
    double loss_actor = 0, loss_alpha = 0, lp_sum = 0, alpha_grad = 0;
    const float target_entropy = *ptr(target_entropy_);
    const float log_alpha = *ptr(log_alpha_);
    for (int64_t r = 0; r < rows; ++r) {
      size_t arg = 0;
      float min_q = ptr(actor_critic_passes_[0].output())[r];
      for (size_t c = 1; c < n_critics; ++c) {
        const float q = ptr(actor_critic_passes_[c].output())[r];
        if (q < min_q || std::isnan(q)) {
          if (!std::isnan(min_q)) {
            min_q = q;
            arg = c;
          }
        }
      }
      for (size_t c = 0; c < n_critics; ++c) dq[c][r] = c == arg ? -g : 0.0f;
      loss_actor += static_cast<double>(alpha_value_ * log_prob[r] - min_q);
      lp_sum += static_cast<double>(log_prob[r]);
      loss_alpha += static_cast<double>(-log_alpha * (log_prob[r] + target_entropy));
      alpha_grad += static_cast<double>(g * (log_prob[r] + target_entropy));
    }
    for (size_t c = 0; c < n_critics; ++c) {
      actor_critic_passes_[c].backward(critics_[c].mlp, ptr(critic_flat_), ptr(actor_x_), dq[c], nullptr,
                                       dxs_[c].data_ptr<float>(), sums_);
    }
    float* da = da_.data_ptr<float>();
    action_gradient(da, obs_dim);
    sample_backward(d, g_log_prob, da);
    d.pass.backward(actor_.mlp, ptr(actor_flat_), ptr(obs), d.dparam.data_ptr<float>(),
                    actor_flat_.grad().data_ptr<float>(), nullptr, sums_);
    // The temperature's gradient (its loss is computed, as TorchRL, even when alpha is fixed).
    if (log_alpha_.requires_grad()) {
      if (!log_alpha_.grad().defined()) log_alpha_.mutable_grad() = torch::zeros_like(log_alpha_);
      *log_alpha_.mutable_grad().data_ptr<float>() = static_cast<float>(-alpha_grad);
    }
    out.set("loss_actor", torch::tensor(static_cast<float>(loss_actor / static_cast<double>(rows))));
    out.set("loss_alpha", torch::tensor(static_cast<float>(loss_alpha / static_cast<double>(rows))));
    out.set("alpha", alpha_.clone());
    out.set("entropy", torch::tensor(static_cast<float>(-lp_sum / static_cast<double>(rows))));
  }

  // The backward of `sample` for the actor loss, as autograd takes it: `g_log_prob` on every
  // row's log-probability, `da` on the action (the critics' part), into `d.dparam` (the gradient
  // of the actor MLP's output).
  void sample_backward(Draw& d, float g_log_prob, const float* da) {
    const auto& tn = tanh_normal_;
    const int64_t rows = rows_, n = act_dim_;
    const bool affine = tn.affine_scale.defined();
    const float* as = affine ? ptr(tn.affine_scale) : nullptr;
    const float lim = tn.limit;
    const float* param = ptr(d.pass.output());
    const float *eps = ptr(d.eps), *base_loc = ptr(d.base_loc), *scale = ptr(d.scale), *t = ptr(d.tanh), *z = ptr(d.z),
                *x = ptr(d.x);
    const float* loc_tanh = tn.upscale != 0 ? ptr(d.loc_tanh) : nullptr;
    float* dparam = d.dparam.data_ptr<float>();
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t j = 0; j < n; ++j) {
        const int64_t i = r * n + j;
        // log_prob = -sum(ladj) + sum(normal); ladj = ((log 2 - x) - softplus(x * -2)) * 2 (+ log s_a).
        const float g_ladj_inner = -g_log_prob * 2.0f;
        const float g_x_ladj = -g_ladj_inner + softplus_grad(-g_ladj_inner, x[i] * -2.0f) * -2.0f;
        // normal = -(x - loc')^2 / (2 var) - log(scale) - log(sqrt(2 pi)), var = scale^2.
        const float diff = x[i] - base_loc[i];
        const float den = (scale[i] * scale[i]) * 2.0f;
        const float g_neg = g_log_prob / den;
        const float g_den = -g_log_prob * (-(diff * diff)) / (den * den);
        const float g_diff = -g_neg * (2.0f * diff);
        const float g_x = g_x_ladj + g_diff;
        // x = atanh(clamp(z)), z = (a - m) / s_a.
        const float clamped = std::min(std::max(z[i], -lim), lim);
        const float g_z = (z[i] >= -lim && z[i] <= lim) ? g_x * (1.0f / (1.0f - clamped * clamped)) : 0.0f;
        const float g_action = da[i] + (affine ? g_z / as[j] : g_z);
        // a = m + s_a * clamp(tanh(u)), u = loc' + eps * scale.
        const float g_clamped = affine ? g_action * as[j] : g_action;
        const float g_tanh = (t[i] >= -lim && t[i] <= lim) ? g_clamped : 0.0f;
        const float g_u = g_tanh * (1.0f - t[i] * t[i]);
        const float g_loc = g_u + -g_diff;
        const float g_scale = (g_u * eps[i] + (g_den * 2.0f) * (2.0f * scale[i])) + -g_log_prob / scale[i];
        // scale = clamp_min(softplus(p + bias) + 0.01, scale_lb).
        const float pre = param[r * 2 * n + n + j] + tn.bias;
        const float g_pre = softplus(pre) + 0.01f >= tn.scale_lb ? softplus_grad(g_scale, pre) : 0.0f;
        // tanh_loc: back through tanh(loc / upscale) * upscale.
        dparam[r * 2 * n + j] =
            loc_tanh != nullptr ? ((g_loc * tn.upscale) * (1.0f - loc_tanh[i] * loc_tanh[i])) / tn.upscale : g_loc;
        dparam[r * 2 * n + n + j] = g_pre;
      }
    }
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

  // The optimizer steps of the parameters playing `role`.
  void adam(Role role) {
    torch::NoGradGuard no_grad;
    for (auto& a : adam_) {
      if (a.role == role) adam_step(a);
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
  int64_t act_dim_ = 0;  // action features
  float gamma_ = 0.99f;
  torch::Tensor min_action_, max_action_;
  std::function<torch::Tensor(const torch::Tensor&)> td3_noise_;
  std::vector<AdamParam> adam_;
  bool shared_optimizer_ = false;
  std::shared_ptr<objectives::TargetNetUpdater> updater_;
  objectives::SoftUpdate* soft_ = nullptr;  // the updater, when it runs fused

  int64_t rows_ = -1;
  MlpPass actor_pass_, target_actor_pass_;
  std::vector<MlpPass> actor_critic_passes_;  // the critics in the actor loss
  std::vector<MlpPass> critic_passes_, target_passes_;
  torch::Tensor x_, next_x_, actor_x_, next_action_, action_, tanh_next_, tanh_, target_, dq_, da_;
  std::vector<torch::Tensor> dxs_, dqs_;  // per critic in the actor loss: input and output gradients

  // SAC: its actor's sampling, the temperature, the two draws of an update.
  bool sac_ = false;
  detail::TanhNormalPlan tanh_normal_;
  std::function<torch::Tensor()> alpha_fn_;  // SACLoss::alpha
  torch::Tensor log_alpha_, target_entropy_, alpha_;
  float alpha_value_ = 1.0f;
  Draw next_draw_, draw_;
  std::vector<double> sums_;
};

}  // namespace engine
}  // namespace rlobj
