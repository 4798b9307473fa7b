#pragma once

/// \file
/// `ParameterGroup`: one network's parameters in one contiguous buffer, the storage behind every
/// loss's `parameters()` (see `LossModuleImpl`).

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <c10/util/intrusive_ptr.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"

namespace rlobj {
namespace objectives {

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

  /// The name the loss registers `flat()` under: `actor_network_params`,
  /// `target_actor_network_params`, ...
  const std::string& name() const noexcept { return state_->name; }
  /// The contiguous leaf holding every parameter.
  const torch::Tensor& flat() const noexcept { return state_->flat; }
  /// The network's parameter tensors, aliases into `flat()`.
  const std::vector<torch::Tensor>& params() const noexcept { return state_->params; }
  /// The number of elements of `flat()`: every parameter's, summed.
  int64_t numel() const noexcept { return state_->flat.numel(); }
  /// Whether `flat()` is trained (requires grad, gradients aliased); false for targets.
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

}  // namespace objectives
}  // namespace rlobj
