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

#include <cstdint>
#include <memory>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

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
class ParameterGroup {
 public:
  ParameterGroup() = default;

  /// Adopts `params` (copying their values into a new buffer). With `trainable`, `flat`
  /// requires grad and gradients are aliased too; else (targets) nothing requires grad.
  ParameterGroup(std::string name, std::vector<torch::Tensor> params, bool trainable)
      : name_(std::move(name)), params_(std::move(params)), trainable_(trainable) {
    int64_t total = 0;
    for (size_t i = 0; i < params_.size(); ++i) {
      const auto& p = params_[i];
      TORCH_CHECK(p.defined(), "LossModule: undefined parameter in ", name_);
      if (i > 0) {
        TORCH_CHECK(p.scalar_type() == params_[0].scalar_type() && p.device() == params_[0].device(),
                    "LossModule: every parameter of ", name_,
                    " must share one dtype and device (found ", p.scalar_type(), " on ", p.device(),
                    " and ", params_[0].scalar_type(), " on ", params_[0].device(), ")");
      }
      offsets_.push_back(total);
      shapes_.push_back(p.sizes().vec());
      total += p.numel();
    }
    auto options = params_.empty() ? torch::TensorOptions() : params_[0].options();
    flat_ = torch::empty({total}, options.requires_grad(false));
    {
      torch::NoGradGuard no_grad;
      for (size_t i = 0; i < params_.size(); ++i) {
        flat_.narrow(0, offsets_[i], params_[i].numel()).copy_(params_[i].detach().reshape({-1}));
      }
    }
    if (trainable_) {
      flat_.requires_grad_(true);
      grad_ = torch::zeros_like(flat_);
    }
    relink_all();
  }

  const std::string& name() const noexcept { return name_; }
  /// The contiguous leaf holding every parameter.
  const torch::Tensor& flat() const noexcept { return flat_; }
  /// The network's parameter tensors, aliases into `flat()`.
  const std::vector<torch::Tensor>& params() const noexcept { return params_; }
  int64_t numel() const noexcept { return flat_.numel(); }
  bool trainable() const noexcept { return trainable_; }

  /// Re-establishes the aliasing after something outside the loss replaced a parameter's
  /// storage (`torch::load(actor, ...)`) or a gradient (`zero_grad(set_to_none=true)` in
  /// LibTorch 2.x). A replaced parameter's values are copied into the buffer first.
  void ensure_linked() {
    if (trainable_ && !flat_.grad().defined()) {
      grad_.zero_();
      flat_.mutable_grad() = grad_;
    }
    const auto elem = static_cast<int64_t>(flat_.element_size());
    const char* base = static_cast<const char*>(flat_.data_ptr());
    const char* gbase = trainable_ ? static_cast<const char*>(grad_.data_ptr()) : nullptr;
    for (size_t i = 0; i < params_.size(); ++i) {
      auto& p = params_[i];
      if (p.data_ptr() != base + offsets_[i] * elem) {
        TORCH_CHECK(p.device() == flat_.device() && p.scalar_type() == flat_.scalar_type(),
                    "LossModule: a parameter of ", name_, " moved to ", p.device(), " / ",
                    p.scalar_type(), " but the loss lives on ", flat_.device(), " / ",
                    flat_.scalar_type(), "; move the loss (loss->to(...)), not its networks");
        TORCH_CHECK(p.sizes().vec() == shapes_[i], "LossModule: a parameter of ", name_,
                    " changed shape from ", rlobj::detail::shape_str(shapes_[i]), " to ", p.sizes());
        torch::NoGradGuard no_grad;
        flat_.narrow(0, offsets_[i], p.numel()).copy_(p.detach().reshape({-1}));
        relink(i);
      }
      if (trainable_ && (!p.grad().defined() || p.grad().data_ptr() != gbase + offsets_[i] * elem)) {
        grad_.narrow(0, offsets_[i], p.numel()).zero_();
        p.mutable_grad() = detail::alias(grad_, offsets_[i], p.sizes());
      }
    }
  }

  /// Points every parameter (and gradient) back at `flat()` after `flat()` itself got new
  /// storage (`loss->to(device)`, `torch::load(loss, ...)`).
  void relink_all() {
    if (trainable_) {
      if (!grad_.defined() || grad_.sizes() != flat_.sizes() || grad_.device() != flat_.device() ||
          grad_.scalar_type() != flat_.scalar_type()) {
        grad_ = torch::zeros_like(flat_);
      }
      flat_.mutable_grad() = grad_;
    }
    for (size_t i = 0; i < params_.size(); ++i) relink(i);
  }

 private:
  void relink(size_t i) {
    auto& p = params_[i];
    const auto& sizes = shapes_[i];
    {
      torch::NoGradGuard no_grad;
      p.set_data(detail::alias(flat_.detach(), offsets_[i], sizes));
    }
    if (trainable_) {
      p.mutable_grad() = detail::alias(grad_, offsets_[i], sizes);
    } else {
      p.requires_grad_(false);
    }
  }

  std::string name_;
  std::vector<torch::Tensor> params_;
  std::vector<int64_t> offsets_;
  std::vector<std::vector<int64_t>> shapes_;
  torch::Tensor flat_;
  torch::Tensor grad_;
  bool trainable_ = false;
};

/// A target network and the network it tracks, as the updaters see them.
struct TargetPair {
  std::string name;         ///< `"actor_network"`, `"value_network"`
  torch::Tensor target;     ///< flat target parameters
  torch::Tensor source;     ///< flat online parameters
  std::vector<std::pair<torch::Tensor, torch::Tensor>> buffers;  ///< (target, source) buffers
  bool delayed = false;     ///< false: the "target" is the online network itself (no copy)
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
class LossModuleImpl : public torch::nn::Module {
 public:
  /// The (target, source) pairs, delayed or not, for `SoftUpdate` / `HardUpdate`.
  virtual std::vector<TargetPair> target_pairs() const = 0;

  /// Marks the loss as having a target updater (TorchRL warns when a loss with delayed targets
  /// has none; rlobj only records it).
  void set_has_updater(bool v) noexcept { has_updater_ = v; }
  bool has_updater() const noexcept { return has_updater_; }

  /// The flat parameter leaves of one network (`"actor_network"`, `"value_network"`), to give
  /// networks their own optimizer or learning rate.
  std::vector<torch::Tensor> parameters_of(const std::string& network) const {
    for (const auto& g : groups_) {
      if (g->name() == network + "_params") return {g->flat()};
    }
    TORCH_CHECK(false, "LossModule: no trained network named \"", network, "\"");
  }

  void to(torch::Device device, torch::Dtype dtype, bool non_blocking = false) override {
    torch::nn::Module::to(device, dtype, non_blocking);
    after_storage_change();
  }
  void to(torch::Dtype dtype, bool non_blocking = false) override {
    torch::nn::Module::to(dtype, non_blocking);
    after_storage_change();
  }
  void to(torch::Device device, bool non_blocking = false) override {
    torch::nn::Module::to(device, non_blocking);
    after_storage_change();
  }
  void load(torch::serialize::InputArchive& archive) override {
    torch::nn::Module::load(archive);
    after_storage_change();
  }
  void train(bool on = true) override {
    torch::nn::Module::train(on);
    for (auto* m : networks_) m->train(on);
  }

 protected:
  /// Adopts `network`'s parameters into a group registered as `<name>_params` (a parameter
  /// when `trainable`, else a buffer). Parameters already adopted by an earlier group (shared
  /// between networks) are left out.
  ParameterGroup& adopt(const std::string& name, torch::nn::Module& network, bool trainable) {
    std::vector<torch::Tensor> params;
    for (auto& p : network.parameters()) {
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
    networks_.push_back(&network);
    return group;
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
      aliases_.push_back({copies[i], sources[i], freeze});
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

  struct Alias {
    torch::Tensor copy, source;
    bool frozen;
  };
  void relink_aliases() {
    for (auto& a : aliases_) {
      if (a.copy.data_ptr() != a.source.data_ptr() || a.copy.sizes() != a.source.sizes()) {
        torch::NoGradGuard no_grad;
        a.copy.set_data(a.source.detach());
      }
      if (a.frozen) {
        if (a.copy.requires_grad()) a.copy.requires_grad_(false);
      } else {
        const auto& g = a.source.grad();
        if (g.defined() && (!a.copy.grad().defined() || a.copy.grad().data_ptr() != g.data_ptr())) {
          a.copy.mutable_grad() = detail::alias(g, 0, g.sizes());
        }
      }
    }
  }

  std::vector<Alias> aliases_;
  std::vector<torch::nn::Module*> networks_;
  bool has_updater_ = false;
};

}  // namespace objectives
}  // namespace rlobj
