#pragma once

/// \file
/// `LossModule`, the base of rlobj's objectives (TorchRL's `torchrl.objectives.LossModule`),
/// and the enums shared by losses (`LossFunction`, `Reduction`, `ValueEstimators`).
///
/// A loss owns the networks it trains. It keeps each network's parameters in one contiguous
/// buffer — a *parameter group* — whose flat leaf is what `parameters()` yields: the
/// network's own parameter tensors become aliases into that buffer, and so do their
/// gradients. `torch::optim::Adam(loss->parameters())` therefore updates a handful of flat
/// tensors instead of looping over every weight and bias, and target updaters blend whole
/// groups in one pass. The networks themselves are unchanged for every other use:
/// `actor->parameters()`, `actor->forward(td)`, `torch::save(actor, ...)` all work as before.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/arg.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/nn/module.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/objectives/value/advantages.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

/// The distance between predictions and targets (TorchRL's `loss_function`).
enum class LossFunction {
  L1,        ///< `|x - y|`
  L2,        ///< `(x - y)^2` (`F.mse_loss`; no 1/2 factor)
  SmoothL1,  ///< Huber with beta 1: `0.5 d^2` if `|d| < 1`, else `|d| - 0.5`
};

/// How per-sample losses are reduced (TorchRL's `reduction`).
enum class Reduction { Mean, Sum, None };

/// TorchRL's `ValueEstimators`.
enum class ValueEstimators { TD0, TD1, TDLambda, GAE };

/// `"l1"`, `"l2"`, `"smooth_l1"` (TorchRL's strings).
inline LossFunction loss_function_from_string(const std::string& name) {
  if (name == "l2") return LossFunction::L2;
  if (name == "l1") return LossFunction::L1;
  if (name == "smooth_l1") return LossFunction::SmoothL1;
  TORCH_CHECK_VALUE(false, "unknown loss_function \"", name, "\"; expected l1, l2 or smooth_l1");
}

/// `"mean"`, `"sum"`, `"none"` (TorchRL's strings).
inline Reduction reduction_from_string(const std::string& name) {
  if (name == "mean") return Reduction::Mean;
  if (name == "sum") return Reduction::Sum;
  if (name == "none") return Reduction::None;
  TORCH_CHECK_VALUE(false, "unknown reduction \"", name, "\"; expected mean, sum or none");
}

/// `"td0"`, `"td1"`, `"td_lambda"`, `"gae"` (TorchRL's lowercase aliases).
inline ValueEstimators value_estimator_from_string(const std::string& name) {
  if (name == "td0") return ValueEstimators::TD0;
  if (name == "td1") return ValueEstimators::TD1;
  if (name == "td_lambda" || name == "tdlambda") return ValueEstimators::TDLambda;
  if (name == "gae") return ValueEstimators::GAE;
  TORCH_CHECK_VALUE(false, "unknown value estimator \"", name, "\"; expected td0, td1, td_lambda or gae");
}

/// When a loss checks the floating-point entries it reads for NaN and Inf. A non-finite
/// input (an `Inf` observation gives a finite loss but NaN gradients) would otherwise poison
/// the networks for good; the check names the entry instead.
enum class FiniteCheck {
  Auto,    ///< on the CPU (one fused reduction, a few us); skipped on accelerators, where
           ///< reading the result back would stall every update on a host sync
  Always,  ///< on every device (one host sync per forward on CUDA)
  Never,   ///< no check
};

namespace detail {

/// Whether every element of a contiguous float32/float64 CPU tensor is finite, by one pass over
/// its memory (`|x| <= max` is false for NaN and +-Inf); nullopt for any other tensor.
template <typename T>
bool all_finite(const T* p, int64_t n) {
  bool ok = true;
  for (int64_t i = 0; i < n; ++i) ok &= std::abs(p[i]) <= std::numeric_limits<T>::max();
  return ok;
}
inline std::optional<bool> all_finite_cpu(const torch::Tensor& t) {
  if (!t.is_cpu() || !t.is_contiguous()) return std::nullopt;
  if (t.scalar_type() == torch::kFloat) return all_finite(t.data_ptr<float>(), t.numel());
  if (t.scalar_type() == torch::kDouble) return all_finite(t.data_ptr<double>(), t.numel());
  return std::nullopt;
}

/// Throws a `c10::ValueError` naming the first floating entry of `td` among `keys` that holds
/// NaN or Inf (keys absent from `td` are skipped). On the common, finite path this costs one
/// pass over each entry's memory (contiguous float CPU entries), else one sum per entry and
/// one read of a scalar.
inline void check_finite_inputs(const char* loss, const TensorDict& td, const std::vector<NestedKey>& keys,
                                FiniteCheck mode) {
  if (mode == FiniteCheck::Never) return;
  std::vector<std::pair<const NestedKey*, const torch::Tensor*>> inputs;
  for (const auto& key : keys) {
    const torch::Tensor* t = td.find(key);
    if (t != nullptr && t->is_floating_point() && t->numel() > 0) inputs.emplace_back(&key, t);
  }
  if (inputs.empty()) return;
  if (mode == FiniteCheck::Auto && !inputs.front().second->device().is_cpu()) return;
  {
    bool fast = true;
    for (const auto& [key, t] : inputs) {
      const std::optional<bool> finite = all_finite_cpu(*t);
      if (!finite) {
        fast = false;
        break;
      }
      TORCH_CHECK_VALUE(*finite, loss, ": input \"", key->str(), "\" contains NaN or Inf");
    }
    if (fast) return;
  }
  torch::NoGradGuard no_grad;
  // A sum is finite when every term is (an overflow to Inf only sends us to the exact check).
  torch::Tensor total = inputs.front().second->sum();
  for (size_t i = 1; i < inputs.size(); ++i) total = total + inputs[i].second->sum();
  if (std::isfinite(total.item<double>())) return;
  for (const auto& [key, t] : inputs) {
    TORCH_CHECK_VALUE(t->isfinite().all().item<bool>(), loss, ": input \"", key->str(),
                      "\" contains NaN or Inf");
  }
}

/// Checks the entries a loss computes with (its networks' inputs, rewards) before anything is
/// computed: floating point in the networks' dtype (no silent promotion, no LibTorch-internal "expected scalar type"),
/// at least one feature dim after the batch dims (an action of shape `[B]` where `[B, 1]` is
/// meant), and a non-empty batch. Errors name the key, what it got and what was expected.
inline void check_network_inputs(const char* loss, const TensorDict& td, const std::vector<NestedKey>& keys,
                                 torch::Dtype dtype) {
  const int64_t batch_dims = static_cast<int64_t>(td.batch_size().size());
  TORCH_CHECK_VALUE(td.numel() > 0, loss, ": the batch is empty (batch_size ",
                    rlobj::detail::shape_str(td.batch_size()), ")");
  for (const auto& key : keys) {
    const torch::Tensor* t = td.find(key);
    if (t == nullptr) continue;  // reported by the loss's own key check
    TORCH_CHECK_TYPE(t->is_floating_point(), loss, ": input \"", key.str(), "\" is ",
                     rlobj::detail::dtype_str(t->scalar_type()), " but the networks are ",
                     rlobj::detail::dtype_str(dtype), "; convert it (e.g. td.set(key, t.to(",
                     rlobj::detail::dtype_str(dtype), ")))");
    TORCH_CHECK_TYPE(t->scalar_type() == dtype, loss, ": input \"", key.str(), "\" is ",
                     rlobj::detail::dtype_str(t->scalar_type()), " but the networks are ",
                     rlobj::detail::dtype_str(dtype), "; convert the batch (td.to(...)) or the loss (loss->to(...))");
    TORCH_CHECK_VALUE(t->dim() > batch_dims, loss, ": input \"", key.str(), "\" has shape ",
                      rlobj::detail::shape_str(t->sizes()), ", no feature dim after the batch dims ",
                      rlobj::detail::shape_str(td.batch_size()), "; expected [", 
                      fmt::format("{}", fmt::join(td.batch_size(), ", ")), ", F]");
  }
}

/// Throws a clear error naming the first of `keys` missing from `td`.
inline void require_keys(const char* loss, const TensorDict& td, const std::vector<NestedKey>& keys) {
  for (const auto& key : keys) {
    TORCH_CHECK(td.contains(key), loss, ": input key \"", key.str(), "\" not found; keys present: ",
                rlobj::detail::keys_str(td.keys(true)));
  }
}

/// `keys` sorted by their dotted names, each once (a loss's `in_keys()`).
inline std::vector<NestedKey> sorted_unique(std::vector<NestedKey> keys) {
  std::sort(keys.begin(), keys.end(), [](const NestedKey& a, const NestedKey& b) { return a.str() < b.str(); });
  keys.erase(std::unique(keys.begin(), keys.end()), keys.end());
  return keys;
}

/// What an actor loss feeds the actor: its in_keys, plus the keys only the critic reads
/// (TorchRL's `value_exclusive_keys`), all detached from `td`.
template <typename Actor>
TensorDict actor_loss_input(const Actor& actor, const std::vector<NestedKey>& critic_in_keys, const TensorDict& td) {
  TensorDict in(td.batch_size(), td.device());
  const auto& actor_in = actor.in_keys();
  const auto& actor_out = actor.out_keys();
  for (const auto& k : actor_in) in.set(k, td.get(k).detach());
  for (const auto& k : critic_in_keys) {
    const bool mine = std::find(actor_in.begin(), actor_in.end(), k) != actor_in.end() ||
                      std::find(actor_out.begin(), actor_out.end(), k) != actor_out.end();
    if (!mine) in.set(k, td.get(k).detach());
  }
  return in;
}

/// The bootstrapping estimator of an off-policy loss (TD0, TD1 or TDLambda over `net`, the
/// loss's target networks, or null when the loss passes next values itself); GAE is refused.
inline std::shared_ptr<value::ValueEstimatorBase> make_bootstrap_estimator(
    const char* loss, ValueEstimators type, value::ValueEstimatorBase::ValueNetwork net,
    const value::ValueEstimatorOptions& hyperparams) {
  switch (type) {
    case ValueEstimators::TD0: return std::make_shared<value::TD0Estimator>(std::move(net), hyperparams);
    case ValueEstimators::TD1: return std::make_shared<value::TD1Estimator>(std::move(net), hyperparams);
    case ValueEstimators::TDLambda: return std::make_shared<value::TDLambdaEstimator>(std::move(net), hyperparams);
    case ValueEstimators::GAE: break;
  }
  TORCH_CHECK_NOT_IMPLEMENTED(false, loss, ": value estimator GAE is not implemented (", loss,
                              " supports TD0, TD1 and TDLambda)");
}

/// Points `estimator` at the loss's keys: the value under "next", reward, done, terminated.
inline void set_estimator_keys(value::ValueEstimatorBase& estimator, const NestedKey& value, const NestedKey& reward,
                               const NestedKey& done, const NestedKey& terminated) {
  estimator.set_keys({{"value", value}, {"reward", reward}, {"done", done}, {"terminated", terminated}});
}

/// Checks that every parameter of `networks` (name, module) shares one dtype and device (a
/// loss checks its inputs against one dtype, and its flat groups hold one).
inline void check_same_placement(const char* loss,
                                 const std::vector<std::pair<const char*, const torch::nn::Module*>>& networks) {
  std::optional<torch::Tensor> first;
  for (const auto& [name, net] : networks) {
    for (const auto& item : net->named_parameters()) {
      if (!first) first = item.value();
      TORCH_CHECK_VALUE(item.value().scalar_type() == first->scalar_type() && item.value().device() == first->device(),
                        loss, ": ", name, " parameter \"", item.key(), "\" is ",
                        rlobj::detail::dtype_str(item.value().scalar_type()), " on ", item.value().device().str(),
                        " but the networks' first parameter is ", rlobj::detail::dtype_str(first->scalar_type()), " on ",
                        first->device().str(), "; put the networks on one dtype and device");
    }
  }
}

}  // namespace detail

/// The element-wise distance between `v1` and `v2` (TorchRL's `distance_loss`); shapes must
/// match exactly.
inline torch::Tensor distance_loss(const torch::Tensor& v1, const torch::Tensor& v2,
                                   LossFunction loss_function) {
  TORCH_CHECK(v1.sizes() == v2.sizes(), "distance_loss: the input tensors have shapes ",
              v1.sizes(), " and ", v2.sizes(), ", which are incompatible");
  switch (loss_function) {
    case LossFunction::L2: return torch::mse_loss(v1, v2, at::Reduction::None);
    case LossFunction::L1: return torch::l1_loss(v1, v2, at::Reduction::None);
    case LossFunction::SmoothL1: return torch::smooth_l1_loss(v1, v2, at::Reduction::None, 1.0);
  }
  return {};
}

/// Reduces a per-sample loss (TorchRL's `_reduce`).
inline torch::Tensor reduce(const torch::Tensor& loss, Reduction reduction) {
  switch (reduction) {
    case Reduction::Mean: return loss.mean();
    case Reduction::Sum: return loss.sum();
    case Reduction::None: return loss;
  }
  return loss;
}

namespace detail {

/// A tensor aliasing `n` elements of `base`'s storage from `offset`, shaped `sizes`
/// (contiguous). Unlike `narrow().view()` it is not an autograd view, so optimizers may
/// `detach_()` it (LibTorch 1.13's `Optimizer::zero_grad` does).
inline torch::Tensor alias(const torch::Tensor& base, int64_t offset, c10::IntArrayRef sizes) {
  return torch::empty({0}, base.options()).set_(base.storage(), base.storage_offset() + offset, sizes,
                                                c10::contiguous_strides(sizes));
}

}  // namespace detail

/// One network's parameters in one contiguous buffer.
///
/// `flat` is a leaf of shape `[numel]` whose storage holds every parameter of the network;
/// each parameter tensor of the network is re-pointed (`set_data`) at its slice, and its
/// `.grad` at the matching slice of `flat.grad()`. Autograd accumulates into the network's
/// parameters as usual, which fills `flat.grad()`; an optimizer stepping `flat` updates
/// the network in place.
///
/// Gradients survive every way of zeroing them. LibTorch 1.13's `Optimizer::zero_grad()`
/// zeroes `flat.grad()` in place; 2.x's sets it to none, and `Module::zero_grad()` on a
/// network sets that network's own `.grad`s to none. Either may happen between the forward
/// and the backward. So every trainable parameter carries a hook that runs just before
/// autograd accumulates into it: if the group's gradient buffer was detached from `flat`
/// (optimizer `set_to_none`), the buffer is zeroed and re-attached; if that parameter's own
/// `.grad` was reset, its slice is zeroed and re-aliased. Accumulation then lands in
/// `flat.grad()` whatever the order of forward, `zero_grad`, backward and step.
class ParameterGroup {
 public:
  ParameterGroup() = default;

  /// Adopts `params` (copying their values into a new buffer). With `trainable`, `flat`
  /// requires grad and gradients are aliased too; else (targets) nothing requires grad.
  ParameterGroup(std::string name, std::vector<torch::Tensor> params, bool trainable)
      : state_(std::make_shared<State>()) {
    auto& s = *state_;
    s.name = std::move(name);
    s.params = std::move(params);
    s.trainable = trainable;
    int64_t total = 0;
    for (size_t i = 0; i < s.params.size(); ++i) {
      const auto& p = s.params[i];
      TORCH_CHECK(p.defined(), "LossModule: undefined parameter in ", s.name);
      if (i > 0) {
        TORCH_CHECK(p.scalar_type() == s.params[0].scalar_type() && p.device() == s.params[0].device(),
                    "LossModule: every parameter of ", s.name,
                    " must share one dtype and device (found ", p.scalar_type(), " on ", p.device(),
                    " and ", s.params[0].scalar_type(), " on ", s.params[0].device(), ")");
      }
      s.offsets.push_back(total);
      s.shapes.push_back(p.sizes().vec());
      total += p.numel();
    }
    auto options = s.params.empty() ? torch::TensorOptions() : s.params[0].options();
    s.flat = torch::empty({total}, options.requires_grad(false));
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < s.params.size(); ++i) {
        s.flat.narrow(0, s.offsets[i], s.params[i].numel()).copy_(s.params[i].detach().reshape({-1}));
      }
    }
    if (trainable) {
      s.flat.requires_grad_(true);
      s.grad = torch::zeros_like(s.flat);
    }
    relink_all();
    if (trainable) {
      // A frozen parameter (requires_grad false) gets no gradient, hence no hook.
      for (size_t i = 0; i < s.params.size(); ++i) {
        if (s.params[i].requires_grad()) add_grad_hook(s.params[i], i);
      }
    }
  }

  const std::string& name() const noexcept { return state_->name; }
  /// The contiguous leaf holding every parameter.
  const torch::Tensor& flat() const noexcept { return state_->flat; }
  /// The network's parameter tensors, aliases into `flat()`.
  const std::vector<torch::Tensor>& params() const noexcept { return state_->params; }
  int64_t numel() const noexcept { return state_->flat.numel(); }
  bool trainable() const noexcept { return state_->trainable; }

  /// The position of `param` (by identity) in `params()`, or -1.
  int64_t index_of(const torch::Tensor& param) const noexcept {
    const auto& ps = state_->params;
    for (size_t i = 0; i < ps.size(); ++i) {
      if (ps[i].unsafeGetTensorImpl() == param.unsafeGetTensorImpl()) return static_cast<int64_t>(i);
    }
    return -1;
  }

  /// Makes autograd accumulate `tensor`'s gradient (a clone's parameter evaluating with
  /// `params()[index]`'s values) into the same slice of `flat().grad()`.
  void add_grad_hook(const torch::Tensor& tensor, size_t index) {
    // Both held weakly: the hook lives in `tensor`'s autograd metadata, so a strong
    // reference to `tensor` (or to the state, which holds the parameters) would be a cycle.
    std::weak_ptr<State> weak_state = state_;
    c10::weak_intrusive_ptr<c10::TensorImpl, c10::UndefinedTensorImpl> weak_tensor(tensor.getIntrusivePtr());
    torch::Tensor(tensor).register_hook([weak_state, weak_tensor, index](const torch::Tensor&) {
      auto s = weak_state.lock();
      auto impl = weak_tensor.lock();
      if (!s || !impl) return;
      s->prepare_accumulation(index, torch::Tensor(std::move(impl)));
    });
  }

  /// Points `tensor`'s gradient (a clone's parameter evaluating with `params()[index]`'s
  /// values) at that parameter's slice of `flat().grad()`.
  void link_grad(size_t index, const torch::Tensor& tensor) { state_->prepare_accumulation(index, tensor); }

  /// Re-establishes the aliasing after something outside the loss replaced a parameter's
  /// storage (`torch::load(actor, ...)`) or a gradient (`zero_grad(set_to_none=true)` in
  /// LibTorch 2.x). A replaced parameter's values are copied into the buffer first.
  void ensure_linked() {
    auto& s = *state_;
    const auto elem = static_cast<int64_t>(s.flat.element_size());
    const char* base = static_cast<const char*>(s.flat.data_ptr());
    // Every replaced parameter is checked before any is re-linked: all or nothing.
    for (size_t i = 0; i < s.params.size(); ++i) {
      const auto& p = s.params[i];
      if (p.data_ptr() != base + s.offsets[i] * elem) {
        TORCH_CHECK(p.device() == s.flat.device() && p.scalar_type() == s.flat.scalar_type(),
                    "LossModule: a parameter of ", s.name, " moved to ", p.device(), " / ",
                    p.scalar_type(), " but the loss lives on ", s.flat.device(), " / ",
                    s.flat.scalar_type(), "; move the loss (loss->to(...)), not its networks");
        TORCH_CHECK(p.sizes().vec() == s.shapes[i], "LossModule: a parameter of ", s.name,
                    " changed shape from ", rlobj::detail::shape_str(s.shapes[i]), " to ", p.sizes());
      }
    }
    if (s.trainable) s.attach_grad();
    for (size_t i = 0; i < s.params.size(); ++i) {
      auto& p = s.params[i];
      if (p.data_ptr() != base + s.offsets[i] * elem) {
        torch::NoGradGuard no_grad;
        s.flat.narrow(0, s.offsets[i], p.numel()).copy_(p.detach().reshape({-1}));
        s.relink(i);
      }
      if (s.trainable && p.requires_grad()) s.attach_param_grad(i, p);
    }
  }

  /// Points every parameter (and gradient) back at `flat()` after `flat()` itself got new
  /// storage (`loss->to(device)`, `torch::load(loss, ...)`).
  void relink_all() {
    auto& s = *state_;
    if (s.trainable) {
      if (!s.grad.defined() || s.grad.sizes() != s.flat.sizes() || s.grad.device() != s.flat.device() ||
          s.grad.scalar_type() != s.flat.scalar_type()) {
        s.grad = torch::zeros_like(s.flat);
      }
      s.flat.mutable_grad() = s.grad;
    }
    for (size_t i = 0; i < s.params.size(); ++i) s.relink(i);
  }

 private:
  // Shared with the gradient hooks, which hold it weakly: a network that outlives its loss
  // keeps working, its hooks then do nothing.
  struct State {
    std::string name;
    std::vector<torch::Tensor> params;
    std::vector<int64_t> offsets;
    std::vector<std::vector<int64_t>> shapes;
    torch::Tensor flat;
    torch::Tensor grad;
    bool trainable = false;

    bool owns_grad_slice(const torch::Tensor& g, size_t i) const {
      return g.defined() &&
             g.data_ptr() == static_cast<const char*>(grad.data_ptr()) + offsets[i] * grad.element_size();
    }

    // `flat.grad()` must be the buffer the aliases point into. If an optimizer set it to none
    // (or replaced it), what the buffer holds is stale: start from zero.
    void attach_grad() {
      const auto& g = flat.grad();
      if (g.defined() && g.unsafeGetTensorImpl() == grad.unsafeGetTensorImpl()) return;
      torch::NoGradGuard no_grad;
      grad.zero_();
      flat.mutable_grad() = grad;
    }
    // `t` (params[i] or a clone aliasing it) must accumulate into slice i. A parameter whose
    // own `.grad` was reset (Module::zero_grad) has its slice zeroed; a clone's reset grad is
    // only re-aliased (the slice belongs to params[i]).
    void attach_param_grad(size_t i, torch::Tensor t) {
      if (owns_grad_slice(t.grad(), i)) return;
      torch::NoGradGuard no_grad;
      if (t.unsafeGetTensorImpl() == params[i].unsafeGetTensorImpl()) {
        grad.narrow(0, offsets[i], t.numel()).zero_();
      }
      t.mutable_grad() = detail::alias(grad, offsets[i], shapes[i]);
    }
    // Before autograd accumulates into `t` (params[i], or a clone evaluating with its values):
    // the owner's slice is made current first (zeroed if the owner's grad was reset), then
    // `t` is pointed at it. A clone's hook may fire without the owner's (the owner is not in
    // that graph), and either may fire first when both are.
    void prepare_accumulation(size_t i, torch::Tensor t) {
      attach_grad();
      attach_param_grad(i, params[i]);
      if (t.unsafeGetTensorImpl() != params[i].unsafeGetTensorImpl()) attach_param_grad(i, std::move(t));
    }
    void relink(size_t i) {
      auto& p = params[i];
      {
        torch::NoGradGuard no_grad;
        p.set_data(detail::alias(flat.detach(), offsets[i], shapes[i]));
      }
      if (trainable) {
        if (p.requires_grad()) p.mutable_grad() = detail::alias(grad, offsets[i], shapes[i]);
      } else {
        p.requires_grad_(false);
      }
    }
  };

  std::shared_ptr<State> state_;
};

/// A target network and the network it tracks, as the updaters see them.
struct TargetPair {
  std::string name;         ///< `"actor_network"`, `"value_network"`
  torch::Tensor target;     ///< flat target parameters
  torch::Tensor source;     ///< flat online parameters
  std::vector<std::pair<torch::Tensor, torch::Tensor>> buffers;  ///< (target, source) buffers
  bool delayed = false;     ///< false: the "target" is the online network itself (no copy)
};

/// How a loss holds one of its networks: TorchRL's `convert_to_functional` arguments.
struct NetworkOptions {
  /// Keep a delayed copy for targets (`target_<name>_params`), moved by `SoftUpdate` /
  /// `HardUpdate` (TorchRL's `create_target_params`).
  TORCH_ARG(bool, target) = false;
  /// N independent copies trained side by side (TorchRL's `expand_dim`: TD3's and SAC's twin
  /// critics). As in TorchRL 0.4, every copy's parameters (the network's own included) are
  /// redrawn: for each parameter in order, one `uniform_(min, max)` over `[N, *shape]` from
  /// LibTorch's default generator, `min`/`max` being the network's values. Parameters listed in
  /// `compare_against` are not redrawn (every copy keeps the network's values).
  TORCH_ARG(int64_t, ensemble) = 1;
  /// Also keep copies that evaluate with the online weights but train nothing (gradients still
  /// flow through their inputs): the critic an actor loss maximises.
  TORCH_ARG(bool, frozen) = false;
  /// Parameters shared with a network registered earlier (TorchRL's `compare_against`): they
  /// are trained by that network's group only; `LossNetwork::for_loss` evaluates with them
  /// frozen, for this network's own loss (DDPG's `separate_losses`).
  TORCH_ARG(std::vector<torch::Tensor>, compare_against) = {};
};

/// A network as its loss holds it (see `LossModuleImpl::register_network`). Every vector has
/// one entry per ensemble copy, or is empty when not asked for.
template <typename Impl>
struct LossNetwork {
  std::vector<std::shared_ptr<Impl>> online;    ///< trained copies; online[0] is the user's module
  std::vector<std::shared_ptr<Impl>> target;    ///< delayed copies (`NetworkOptions::target`)
  std::vector<std::shared_ptr<Impl>> frozen;    ///< `NetworkOptions::frozen` copies
  std::vector<std::shared_ptr<Impl>> for_loss;  ///< copies with the `compare_against` parameters frozen
  ParameterGroup* group = nullptr;              ///< `<name>_params`: every online copy's parameters
  ParameterGroup* target_group = nullptr;       ///< `target_<name>_params`, or null

  /// What targets are computed with: the delayed copies, else the online ones.
  const std::vector<std::shared_ptr<Impl>>& targets() const noexcept { return target.empty() ? online : target; }
  /// What this network's own loss evaluates: `for_loss` when there is one, else `online`.
  const std::vector<std::shared_ptr<Impl>>& trained() const noexcept { return for_loss.empty() ? online : for_loss; }
  int64_t size() const noexcept { return static_cast<int64_t>(online.size()); }
};

/// Base class of rlobj's losses (TorchRL's `LossModule`): a `torch::nn::Module` whose
/// `forward(TensorDict)` returns a TensorDict with `batch_size` `[]` holding `loss_*` scalars
/// and logging entries.
///
/// * `parameters()` yields one flat leaf per trained network (no target), so
///   `torch::optim::Adam(loss->parameters())` just works; `named_parameters()` names them
///   `actor_network_params`, `value_network_params`, as TorchRL does.
/// * Delayed targets are buffers named `target_<network>_params`.
/// * Move the loss (`loss->to(device)`), not its networks; `torch::save(loss, path)` /
///   `torch::load(loss, path)` save and restore online and target parameters.
///
/// A loss registers each network once with `register_network` (a name and `NetworkOptions`)
/// and learnable tensors that are not modules with `register_learnable` (SAC's `log_alpha`);
/// parameters, target pairs, frozen aliases, `to()`, save and load all follow from those
/// registrations.
///
/// Why losses are templates over their network types (`DDPGLossImpl<ActorT, ValueT>`) while
/// this base is not: a loss calls its networks' `forward(TensorDict)` and hands back the user's
/// holders (`actor_network()` returns an `ActorT`), which needs the concrete types, as
/// `Cloneable<Derived>` needs its derived type to clone. Everything here works on
/// `torch::nn::Module` (parameters, buffers, aliasing), so it is compiled once per program,
/// not once per pair of network types.
class LossModuleImpl : public torch::nn::Module {
 public:
  /// The (target, source) pairs, delayed or not, for `SoftUpdate` / `HardUpdate`: one per
  /// registered network, in registration order.
  virtual std::vector<TargetPair> target_pairs() const {
    std::vector<TargetPair> pairs;
    for (const auto& r : registered_) {
      TargetPair p;
      p.name = r.name;
      p.source = r.group->flat();
      p.delayed = r.target_group != nullptr;
      p.target = p.delayed ? r.target_group->flat() : r.group->flat();
      if (p.delayed) {
        for (size_t c = 0; c < r.online.size(); ++c) {
          auto tb = r.target[c]->buffers();
          auto sb = r.online[c]->buffers();
          for (size_t i = 0; i < tb.size() && i < sb.size(); ++i) p.buffers.emplace_back(tb[i], sb[i]);
        }
      }
      pairs.push_back(std::move(p));
    }
    return pairs;
  }

  /// Marks the loss as having a target updater (TorchRL warns when a loss with delayed targets
  /// has none; rlobj only records it).
  void set_has_updater(bool v) noexcept { has_updater_ = v; }
  bool has_updater() const noexcept { return has_updater_; }

  /// The flat parameter leaves of one network (`"actor_network"`, `"value_network"`), to give
  /// networks their own optimizer or learning rate.
  std::vector<torch::Tensor> parameters_of(const std::string& network) const {
    for (const auto& g : groups_) {
      if (g->name() == network + "_params" && g->trainable()) return {g->flat()};
    }
    for (const auto& [name, tensor] : learnables_) {
      if (name == network) return {tensor};
    }
    std::vector<std::string> names;
    for (const auto& r : registered_) names.push_back(r.name);
    for (const auto& l : learnables_) names.push_back(l.first);
    TORCH_CHECK_VALUE(false, "LossModule: no trained network or tensor named \"", network, "\"; this loss has [",
                      fmt::format("{}", fmt::join(names, ", ")), "]");
  }

  /// Moves everything the loss owns: its parameter groups (and so every network's
  /// parameters, online, target and frozen copies) and every buffer of its networks
  /// (`TanhModule`'s bounds, ...). A dtype change, as in PyTorch, converts floating-point
  /// buffers only.
  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override {
    torch::nn::Module::to(device, dtype, non_blocking);
    move_network_buffers([&](const torch::Tensor& b) {
      return b.is_floating_point() ? b.to(device, dtype, non_blocking) : b.to(device, non_blocking);
    });
    after_storage_change();
  }
  void to(torch::Dtype dtype, bool non_blocking = false) override {
    torch::nn::Module::to(dtype, non_blocking);
    move_network_buffers([&](const torch::Tensor& b) { return b.is_floating_point() ? b.to(dtype, non_blocking) : b; });
    after_storage_change();
  }
  void to(torch::Device device, bool non_blocking = false) override {
    torch::nn::Module::to(device, non_blocking);
    move_network_buffers([&](const torch::Tensor& b) { return b.to(device, non_blocking); });
    after_storage_change();
  }
  /// `torch::load(loss, path)`. All or nothing: if the archive lacks an entry or holds one of
  /// the wrong shape, every parameter and buffer is restored to its value before the call.
  void load(torch::serialize::InputArchive& archive) override {
    struct Saved {
      std::string name;
      torch::Tensor tensor, before;
    };
    std::vector<Saved> saved;
    {
      torch::NoGradGuard no_grad;
      for (auto& item : named_parameters()) saved.push_back({item.key(), item.value(), item.value().detach().clone()});
      for (auto& item : named_buffers()) saved.push_back({item.key(), item.value(), item.value().detach().clone()});
    }
    try {
      torch::nn::Module::load(archive);
      for (const auto& [name, tensor, before] : saved) {
        TORCH_CHECK_VALUE(tensor.sizes() == before.sizes(), "LossModule.load: the checkpoint's \"", name,
                          "\" has shape ", rlobj::detail::shape_str(tensor.sizes()), " where the loss has ",
                          rlobj::detail::shape_str(before.sizes()), "; was it saved from a loss over other networks?");
        TORCH_CHECK_VALUE(tensor.scalar_type() == before.scalar_type() && tensor.device() == before.device(),
                          "LossModule.load: the checkpoint's \"", name, "\" is ",
                          rlobj::detail::dtype_str(tensor.scalar_type()),
                          " on ", tensor.device().str(), " where the loss has ",
                          rlobj::detail::dtype_str(before.scalar_type()), " on ", before.device().str(),
                          "; move or convert the loss (loss->to(...)) to match the checkpoint first");
      }
    } catch (...) {
      torch::NoGradGuard no_grad;
      for (auto& entry : saved) entry.tensor.set_data(entry.before);
      after_storage_change();
      throw;
    }
    after_storage_change();
  }
  void train(bool on = true) override {
    torch::nn::Module::train(on);
    for (auto* m : networks_) m->train(on);
  }

 protected:
  /// Registers `network` under `name` (`"actor_network"`, `"qvalue_network"`): its copies
  /// (see `NetworkOptions`), a flat trained group `<name>_params` holding every copy's
  /// parameters, and a target group `target_<name>_params`. Call it once per network, in the
  /// constructor; `Impl::clone()` must return an `Impl`.
  template <typename Impl>
  LossNetwork<Impl> register_network(const std::string& name, std::shared_ptr<Impl> network,
                                     const NetworkOptions& options = {}) {
    TORCH_CHECK_VALUE(network != nullptr, "LossModule: ", name, " is empty");
    TORCH_CHECK_VALUE(options.ensemble() >= 1, "LossModule: ", name, ": ensemble must be >= 1, got ",
                      options.ensemble());
    for (const auto& r : registered_) {
      TORCH_CHECK_VALUE(r.name != name, "LossModule: a network named \"", name, "\" is already registered");
    }
    if (options.ensemble() > 1) {
      // TorchRL gives every copy its own redrawn values (shared ones: a view the copies' loss
      // does not train); rlobj's copies would write into, or drift from, the other network's
      // tensors. Refused until supported, before anything changes.
      for (const auto& p : network->parameters()) {
        for (const auto& g : groups_) {
          TORCH_CHECK_NOT_IMPLEMENTED(g->index_of(p) < 0, "LossModule: ", name, " shares parameters with ",
                                      g->name(), "; an ensemble (", options.ensemble(), " copies) over shared "
                                      "parameters is not supported yet: give the networks separate layers");
        }
      }
    }
    LossNetwork<Impl> net;
    net.online.push_back(network);
    for (int64_t c = 1; c < options.ensemble(); ++c) net.online.push_back(clone_of(*network, name));
    if (options.ensemble() > 1) redraw_ensemble(net.online, options.compare_against());
    // Copies are cloned before adoption, so they start equal to the online networks.
    if (options.target()) {
      for (const auto& m : net.online) net.target.push_back(clone_of(*m, name));
    }
    if (options.frozen()) {
      for (const auto& m : net.online) net.frozen.push_back(clone_of(*m, name));
    }
    std::vector<torch::nn::Module*> online, target;
    for (const auto& m : net.online) online.push_back(m.get());
    for (const auto& m : net.target) target.push_back(m.get());
    // The loss owns every copy (the raw pointers below and in networks_ point into these).
    for (const auto& m : net.online) owned_.push_back(m);
    for (const auto& m : net.target) owned_.push_back(m);
    for (const auto& m : net.frozen) owned_.push_back(m);
    net.group = &adopt(name, online, /*trainable=*/true);
    if (!target.empty()) net.target_group = &adopt("target_" + name, target, /*trainable=*/false);
    for (size_t c = 0; c < net.frozen.size(); ++c) alias_network(*net.frozen[c], *net.online[c], /*frozen_all=*/true);
    if (!options.compare_against().empty()) {
      for (const auto& m : net.online) {
        net.for_loss.push_back(clone_of(*m, name));
        owned_.push_back(net.for_loss.back());
        alias_network(*net.for_loss.back(), *m, /*frozen_all=*/false, options.compare_against());
      }
    }
    registered_.push_back({name, online, target, net.group, net.target_group});
    return net;
  }

  /// Registers a learnable tensor that is no module's parameter (SAC's `log_alpha`), trained
  /// when `trainable` (a parameter named `name`; `parameters_of(name)`), else a buffer.
  torch::Tensor register_learnable(const std::string& name, torch::Tensor tensor, bool trainable) {
    if (trainable) {
      learnables_.emplace_back(name, register_parameter(name, std::move(tensor)));
      return learnables_.back().second;
    }
    return register_buffer(name, std::move(tensor));
  }

  /// Adopts `network`'s parameters into a group registered as `<name>_params` (a parameter
  /// when `trainable`, else a buffer). Parameters already adopted by an earlier group (shared
  /// between networks) are left out.
  ParameterGroup& adopt(const std::string& name, torch::nn::Module& network, bool trainable) {
    return adopt(name, std::vector<torch::nn::Module*>{&network}, trainable);
  }
  /// The same over several networks (an ensemble's copies), in order, in one group.
  ParameterGroup& adopt(const std::string& name, const std::vector<torch::nn::Module*>& networks, bool trainable) {
    std::vector<torch::Tensor> params;
    std::vector<torch::Tensor> all;
    for (auto* network : networks) {
      for (auto& p : network->parameters()) all.push_back(p);
    }
    for (auto& p : all) {
      bool seen = false;
      for (const auto& g : groups_) {
        for (const auto& q : g->params()) seen |= q.unsafeGetTensorImpl() == p.unsafeGetTensorImpl();
      }
      for (const auto& q : params) seen |= q.unsafeGetTensorImpl() == p.unsafeGetTensorImpl();
      if (!seen) params.push_back(p);
    }
    groups_.push_back(std::make_unique<ParameterGroup>(name + "_params", std::move(params), trainable));
    auto& group = *groups_.back();
    if (trainable) {
      register_parameter(group.name(), group.flat());
    } else {
      register_buffer(group.name(), group.flat());
    }
    for (auto* network : networks) networks_.push_back(network);
    return group;
  }

  /// A deep copy of `source` of the same type.
  template <typename Impl>
  static std::shared_ptr<Impl> clone_of(const Impl& source, const std::string& name) {
    // LibTorch's Cloneable::clone() re-runs reset(), whose initialisers draw from the default
    // generator; TorchRL's copies draw nothing. Restore the generator so that a seeded loss
    // consumes the same draws as TorchRL's (the ensemble redraw that follows depends on it).
    at::Generator generator = at::detail::getDefaultCPUGenerator();
    const torch::Tensor state = generator.get_state();
    std::shared_ptr<Impl> copy;
    try {
      copy = std::dynamic_pointer_cast<Impl>(source.clone());
    } catch (...) {
      generator.set_state(state);
      throw;
    }
    generator.set_state(state);
    TORCH_CHECK(copy != nullptr, "LossModule: ", name, "->clone() did not return a module of the same type; "
                "implement clone() for it (see TensorDictModuleImpl::clone)");
    return copy;
  }

  /// Makes `copy` (a clone of `source`) evaluate with `source`'s parameters: every parameter
  /// of `copy` aliases the storage of its counterpart. Parameters in `frozen` (by
  /// TensorImpl), or all of them when `frozen_all`, do not require grad — gradients still flow
  /// through the inputs; the others also alias their counterpart's gradient, so autograd
  /// accumulates into the same buffer. The aliasing is re-checked by `ensure_linked()`.
  void alias_network(torch::nn::Module& copy, torch::nn::Module& source, bool frozen_all,
                     const std::vector<torch::Tensor>& frozen = {}) {
    auto copies = copy.parameters();
    auto sources = source.parameters();
    TORCH_CHECK(copies.size() == sources.size(), "LossModule: a network clone has ", copies.size(),
                " parameters but its source has ", sources.size());
    for (size_t i = 0; i < copies.size(); ++i) {
      bool freeze = frozen_all;
      for (const auto& f : frozen) freeze |= f.unsafeGetTensorImpl() == sources[i].unsafeGetTensorImpl();
      Alias a{copies[i], sources[i], freeze, nullptr, 0};
      if (!freeze) {
        for (auto& g : groups_) {
          const int64_t index = g->index_of(sources[i]);
          if (index >= 0 && g->trainable()) {
            a.group = g.get();
            a.index = static_cast<size_t>(index);
          }
        }
        TORCH_CHECK(a.group != nullptr, "LossModule: a trained network clone's parameter belongs to no "
                    "trained network of the loss");
        if (copies[i].requires_grad()) a.group->add_grad_hook(copies[i], a.index);
      }
      aliases_.push_back(std::move(a));
    }
    networks_.push_back(&copy);
    relink_aliases();
  }

 public:
  /// Re-checks that every network still aliases the loss's buffers (cheap pointer
  /// comparisons), repairing what `torch::load(network, ...)` or `zero_grad(set_to_none)`
  /// undid. `forward` and the target updaters call it.
  void ensure_linked() {
    for (auto& g : groups_) g->ensure_linked();
    relink_aliases();
  }

 protected:

  std::vector<std::unique_ptr<ParameterGroup>> groups_;

 private:
  void after_storage_change() {
    // Module::to / load gave the registered flat tensors new storage: re-alias the networks.
    for (auto& g : groups_) g->relink_all();
    relink_aliases();
  }

  template <typename Fn>
  void move_network_buffers(const Fn& convert) {
    std::vector<const torch::TensorImpl*> done;
    for (auto* network : networks_) {
      for (auto& b : network->buffers(/*recurse=*/true)) {
        const auto* impl = b.unsafeGetTensorImpl();
        if (std::find(done.begin(), done.end(), impl) != done.end()) continue;
        done.push_back(impl);
        torch::NoGradGuard no_grad;
        b.set_data(convert(b));
      }
    }
  }

  struct Alias {
    torch::Tensor copy, source;
    bool frozen;
    ParameterGroup* group;  // the trained group holding `source` (non-frozen aliases)
    size_t index;           // `source`'s position in it
  };
  void relink_aliases() {
    for (auto& a : aliases_) {
      if (a.copy.data_ptr() != a.source.data_ptr() || a.copy.sizes() != a.source.sizes()) {
        torch::NoGradGuard no_grad;
        a.copy.set_data(a.source.detach());
      }
      if (a.frozen) {
        if (a.copy.requires_grad()) a.copy.requires_grad_(false);
      } else if (a.copy.requires_grad()) {
        a.group->link_grad(a.index, a.copy);
      }
    }
  }

  /// TorchRL 0.4's ensemble initialisation (`convert_to_functional(expand_dim=N)`): per
  /// parameter, `p.repeat(N, ...).uniform_(p.min(), p.max())`, copy c taking row c.
  template <typename Impl>
  static void redraw_ensemble(const std::vector<std::shared_ptr<Impl>>& copies,
                              const std::vector<torch::Tensor>& keep) {
    torch::NoGradGuard no_grad;
    std::vector<std::vector<torch::Tensor>> params;
    for (const auto& m : copies) params.push_back(m->parameters());
    const auto original = params.front();
    for (size_t j = 0; j < original.size(); ++j) {
      const auto& p = original[j];
      const bool kept = std::any_of(keep.begin(), keep.end(), [&](const torch::Tensor& k) {
        return k.unsafeGetTensorImpl() == p.unsafeGetTensorImpl();
      });
      if (kept) continue;
      std::vector<int64_t> shape = {static_cast<int64_t>(copies.size())};
      for (auto d : p.sizes()) shape.push_back(d);
      torch::Tensor draw = torch::empty(shape, p.options().requires_grad(false));
      if (p.numel() > 0) draw.uniform_(p.min().item<double>(), p.max().item<double>());
      for (size_t c = 0; c < copies.size(); ++c) params[c][j].copy_(draw[static_cast<int64_t>(c)]);
    }
  }

  struct Registered {
    std::string name;
    std::vector<torch::nn::Module*> online, target;
    ParameterGroup* group;
    ParameterGroup* target_group;
  };

  std::vector<Alias> aliases_;
  std::vector<torch::nn::Module*> networks_;
  std::vector<Registered> registered_;
  std::vector<std::shared_ptr<torch::nn::Module>> owned_;
  std::vector<std::pair<std::string, torch::Tensor>> learnables_;
  bool has_updater_ = false;
};

}  // namespace objectives
}  // namespace rlobj
