#pragma once

/// \file
/// `TensorDictModule` and `TensorDictSequential`, TorchRL's (tensordict's) wrappers that make
/// a tensor-to-tensor module read its inputs from, and write its outputs to, a TensorDict.

#include <algorithm>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace modules {

namespace detail {

/// The module implementation behind a holder (`MLP` -> `MLPImpl`) or a `shared_ptr<Impl>`.
template <typename M>
auto impl_ptr(const torch::nn::ModuleHolder<M>& holder) {
  TORCH_CHECK(!holder.is_empty(), "TensorDictModule: the wrapped module holder is empty");
  return holder.ptr();
}
template <typename M>
std::shared_ptr<M> impl_ptr(const std::shared_ptr<M>& ptr) {
  TORCH_CHECK(ptr != nullptr, "TensorDictModule: the wrapped module is null");
  return ptr;
}

template <typename M, typename... Args>
using forward_result_t = decltype(std::declval<M&>().forward(std::declval<Args>()...));

template <typename M, typename Enable, typename... Args>
struct can_forward_impl : std::false_type {};
template <typename M, typename... Args>
struct can_forward_impl<M, std::void_t<forward_result_t<M, Args...>>, Args...> : std::true_type {};
/// True if `M::forward` accepts `Args...`.
template <typename M, typename... Args>
constexpr bool can_forward = can_forward_impl<M, void, Args...>::value;

/// How `call_forward` passes each input tensor.
using TensorArg = const torch::Tensor&;

inline void append_outputs(std::vector<torch::Tensor>* out, torch::Tensor t) {
  out->push_back(std::move(t));
}
inline void append_outputs(std::vector<torch::Tensor>* out, std::vector<torch::Tensor> ts) {
  for (auto& t : ts) out->push_back(std::move(t));
}
template <typename... Ts>
void append_outputs(std::vector<torch::Tensor>* out, std::tuple<Ts...> ts) {
  std::apply([&](auto&... t) { (out->push_back(std::move(t)), ...); }, ts);
}

/// Calls `m.forward` with `in`: as separate tensors when `forward` takes that many, else — for
/// single-input modules — concatenated on the last dim (TorchRL's MLP behaviour), else as a
/// `std::vector<torch::Tensor>` when `forward` takes one.
template <typename M>
void call_forward(M& m, const std::vector<torch::Tensor>& in, std::vector<torch::Tensor>* out) {
  const size_t n = in.size();
  if constexpr (can_forward<M, TensorArg, TensorArg, TensorArg, TensorArg>) {
    if (n == 4) return append_outputs(out, m.forward(in[0], in[1], in[2], in[3]));
  }
  if constexpr (can_forward<M, TensorArg, TensorArg, TensorArg>) {
    if (n == 3) return append_outputs(out, m.forward(in[0], in[1], in[2]));
  }
  if constexpr (can_forward<M, TensorArg, TensorArg>) {
    if (n == 2) return append_outputs(out, m.forward(in[0], in[1]));
  }
  if constexpr (can_forward<M, TensorArg>) {
    if (n == 1) return append_outputs(out, m.forward(in[0]));
    return append_outputs(out, m.forward(torch::cat(in, -1)));
  } else if constexpr (can_forward<M, const std::vector<torch::Tensor>&>) {
    return append_outputs(out, m.forward(in));
  } else {
    TORCH_CHECK(false, "TensorDictModule: the wrapped module's forward does not take ", n,
                " tensor(s)");
  }
}

/// Whether `archive` holds every parameter and buffer of `module` under its current names
/// (children as nested archives): how a `load` tells the current layout from an older one.
inline bool archive_holds(torch::serialize::InputArchive& archive, const torch::nn::Module& module) {
  for (const auto& p : module.named_parameters(/*recurse=*/false)) {
    torch::Tensor t;  // a fresh one each time: try_read would set_ a defined one in place
    if (p.value().defined() && !archive.try_read(p.key(), t)) return false;
  }
  for (const auto& b : module.named_buffers(/*recurse=*/false)) {
    torch::Tensor t;
    if (b.value().defined() && !archive.try_read(b.key(), t, /*is_buffer=*/true)) return false;
  }
  for (const auto& c : module.named_children()) {
    torch::serialize::InputArchive child;
    if (!archive.try_read(c.key(), child) || !archive_holds(child, *c.value())) return false;
  }
  return true;
}

}  // namespace detail

/// Base of every module that maps a TensorDict to a TensorDict (tensordict's
/// `TensorDictModuleBase`): wrapped networks, exploration noise, sequences of them.
class TensorDictModuleBase : public torch::nn::Module {
 public:
  /// Reads `in_keys()` from `td`, writes `out_keys()` into it and returns it.
  virtual TensorDict forward(TensorDict td) = 0;
  /// Keys read.
  virtual const std::vector<NestedKey>& in_keys() const = 0;
  /// Keys written.
  virtual const std::vector<NestedKey>& out_keys() const = 0;
};

/// Wraps any LibTorch module so that it reads `in_keys` from a TensorDict and writes its
/// outputs under `out_keys` (tensordict's `TensorDictModule`).
///
/// The module's `forward` may take one tensor per in_key; a single-input module given several
/// in_keys receives them concatenated on the last dim (TorchRL's `MLP` does the same). It may
/// return a tensor, a `std::tuple` of tensors or a `std::vector<torch::Tensor>`, one per
/// out_key. The wrapped module is registered as the child `"module"`, so parameter names read
/// `module.0.weight`, as in TorchRL.
///
/// ```
/// auto policy = rlobj::modules::TensorDictModule(
///     rlobj::modules::MLP(rlobj::modules::MLPOptions(3, 1).num_cells({32})),
///     /*in_keys=*/{"observation"}, /*out_keys=*/{"action"});
/// policy(td);  // td["action"] = mlp(td["observation"])
/// ```
class TensorDictModuleImpl : public TensorDictModuleBase {
 public:
  /// Wraps `module` (a module holder or a `shared_ptr` to a LibTorch module); `in_keys` and
  /// `out_keys` must not be empty (`c10::ValueError`).
  template <typename M>
  TensorDictModuleImpl(const M& module, std::vector<NestedKey> in_keys,
                       std::vector<NestedKey> out_keys)
      : TensorDictModuleImpl(detail::impl_ptr(module), std::move(in_keys), std::move(out_keys),
                             0) {}

  /// Reads the in_keys (throwing, naming the key, if one is missing), runs the module and
  /// writes the out_keys into `td`, which it returns (the same handle, as TorchRL does).
  TensorDict forward(TensorDict td) override {
    std::vector<torch::Tensor> inputs;
    inputs.reserve(in_keys_.size());
    for (const auto& key : in_keys_) {
      const torch::Tensor* t = td.find(key);
      TORCH_CHECK(t != nullptr, name_, ": input key \"", key.str(),
                  "\" not found in the TensorDict; keys present: ",
                  rlobj::detail::keys_str(td.keys(/*include_nested=*/true)));
      inputs.push_back(*t);
    }
    std::vector<torch::Tensor> outputs = forward_tensors(inputs);
    if (out_keys_.size() == 1) {
      td.set(out_keys_[0], std::move(outputs[0]));  // one set: all or nothing
    } else {
      // Several outputs go in together (TensorDict::update is all or nothing): a bad one
      // leaves `td` as it was.
      TensorDict staged(td.batch_size(), td.device());
      for (size_t i = 0; i < out_keys_.size(); ++i) staged.set(out_keys_[i], std::move(outputs[i]));
      td.update(staged);
    }
    return td;
  }

  /// The module on plain tensors (one per in_key), projected into the spec when `safe`.
  std::vector<torch::Tensor> forward_tensors(const std::vector<torch::Tensor>& inputs) {
    TORCH_CHECK(inputs.size() == in_keys_.size(), name_, ": expected ", in_keys_.size(),
                " inputs, got ", inputs.size());
    std::vector<torch::Tensor> outputs;
    outputs.reserve(out_keys_.size());
    call_(inputs, &outputs);
    TORCH_CHECK(outputs.size() == out_keys_.size(), name_, ": the module returned ",
                outputs.size(), " tensor(s) but there are ", out_keys_.size(), " out_keys ",
                rlobj::detail::keys_str(out_keys_));
    if (safe_ && spec_ && outputs.size() == 1) outputs[0] = spec_->project(outputs[0]);
    return outputs;
  }

  /// Keys read, in the order they are passed to the module.
  const std::vector<NestedKey>& in_keys() const override { return in_keys_; }
  /// Keys written, in the order of the module's outputs.
  const std::vector<NestedKey>& out_keys() const override { return out_keys_; }
  /// The wrapped module.
  const std::shared_ptr<torch::nn::Module>& module() const noexcept { return module_; }
  /// The wrapped module as its concrete type (`module_as<MLPImpl>()`); throws on a mismatch.
  template <typename M>
  std::shared_ptr<M> module_as() const {
    auto p = std::dynamic_pointer_cast<M>(module_);
    TORCH_CHECK(p != nullptr, name_, ": the wrapped module is not of the requested type");
    return p;
  }
  /// The spec of the (single) output, if any.
  const std::shared_ptr<const TensorSpec>& spec() const noexcept { return spec_; }
  /// Attaches a spec to the output; with `safe`, outputs are projected into it (TorchRL's
  /// `safe=True`). Returns `*this` for chaining.
  TensorDictModuleImpl& set_spec(std::shared_ptr<const TensorSpec> spec, bool safe = false) {
    TORCH_CHECK_VALUE(!safe || spec != nullptr, name_, ": safe=true needs a spec");
    TORCH_CHECK_VALUE(!safe || out_keys_.size() == 1, name_,
                      ": safe=true is supported for a single out_key");
    spec_ = std::move(spec);
    safe_ = safe;
    return *this;
  }
  /// True if outputs are projected into the spec.
  bool safe() const noexcept { return safe_; }

  /// A deep copy (the wrapped module is cloned too).
  std::shared_ptr<torch::nn::Module> clone(
      const c10::optional<torch::Device>& device = c10::nullopt) const override {
    return clone_as<TensorDictModuleImpl>(device);
  }

  /// Prints `TensorDictModule(in_keys=[...], out_keys=[...])`, with a subclass's own name.
  void pretty_print(std::ostream& stream) const override {
    stream << name_ << "(in_keys=" << rlobj::detail::keys_str(in_keys_)
           << ", out_keys=" << rlobj::detail::keys_str(out_keys_) << ")";
  }

 protected:
  /// The wrapped module's forward, type-erased: reads the inputs, appends the outputs.
  using Call = std::function<void(const std::vector<torch::Tensor>&, std::vector<torch::Tensor>*)>;
  /// Makes the `Call` of the wrapped module (at construction and after cloning).
  using Binder = Call (*)(torch::nn::Module*);

  // Module is a virtual base of Cloneable, so the concrete type is recovered once, here (at
  // construction and after cloning), not on every call.
  /// The `Call` of a module whose concrete type is `Impl`.
  template <typename Impl>
  static Call bind(torch::nn::Module* module) {
    auto* typed = dynamic_cast<Impl*>(module);
    TORCH_CHECK(typed != nullptr, "TensorDictModule: cloned module changed type");
    return [typed](const std::vector<torch::Tensor>& in, std::vector<torch::Tensor>* out) {
      detail::call_forward(*typed, in, out);
    };
  }

  /// For subclasses: wraps `module`, of concrete type `Impl`; the `int` tag sets this
  /// constructor apart from the public one.
  template <typename Impl>
  TensorDictModuleImpl(std::shared_ptr<Impl> module, std::vector<NestedKey> in_keys,
                       std::vector<NestedKey> out_keys, int /*tag*/)
      : in_keys_(std::move(in_keys)), out_keys_(std::move(out_keys)) {
    static_assert(std::is_base_of<torch::nn::Module, Impl>::value,
                  "TensorDictModule wraps torch::nn modules (holders or shared_ptr<Impl>)");
    TORCH_CHECK_VALUE(!in_keys_.empty(), name_, ": in_keys must not be empty");
    TORCH_CHECK_VALUE(!out_keys_.empty(), name_, ": out_keys must not be empty");
    module_ = register_module("module", std::static_pointer_cast<torch::nn::Module>(module));
    binder_ = &bind<Impl>;
    call_ = binder_(module_.get());
  }

  /// Used by subclasses to give errors their own name (`"Actor"`, `"ValueOperator"`).
  void set_name(std::string name) { name_ = std::move(name); }

  /// Clone into `Derived` (the subclass's own type), cloning the wrapped module.
  template <typename Derived>
  std::shared_ptr<Derived> clone_as(const c10::optional<torch::Device>& device) const {
    auto copy = std::make_shared<Derived>(static_cast<const Derived&>(*this));
    copy->module_ = copy->replace_module("module", module_->clone(device));
    copy->call_ = binder_(copy->module_.get());
    copy->train(is_training());
    return copy;
  }

 private:
  std::vector<NestedKey> in_keys_;
  std::vector<NestedKey> out_keys_;
  std::shared_ptr<torch::nn::Module> module_;
  Binder binder_ = nullptr;
  Call call_;
  std::shared_ptr<const TensorSpec> spec_;
  bool safe_ = false;
  std::string name_ = "TensorDictModule";
};

namespace detail {

/// Holder base for TensorDict modules: `nullptr` and `shared_ptr<Impl>` constructors, but not
/// ModuleHolder's variadic forwarding one, which cannot take braced key lists.
template <typename Impl>
class TDModuleHolder : public torch::nn::ModuleHolder<Impl> {
 public:
  using Base = torch::nn::ModuleHolder<Impl>;
  using Base::get;
  TDModuleHolder(std::nullptr_t) : Base(nullptr) {}                           // NOLINT
  TDModuleHolder(std::shared_ptr<Impl> impl) : Base(std::move(impl)) {}      // NOLINT
};

template <typename M>
using enable_if_module_t = std::enable_if_t<
    std::is_base_of<torch::nn::Module, typename std::decay_t<decltype(*impl_ptr(std::declval<M>()))>>::value>;

}  // namespace detail

/// Holder of `TensorDictModuleImpl`.
class TensorDictModule : public detail::TDModuleHolder<TensorDictModuleImpl> {
 public:
  using detail::TDModuleHolder<TensorDictModuleImpl>::TDModuleHolder;
  /// A `TensorDictModuleImpl` around `module` (see its constructor).
  template <typename M, typename = detail::enable_if_module_t<M>>
  TensorDictModule(const M& module, std::vector<NestedKey> in_keys, std::vector<NestedKey> out_keys)
      : TDModuleHolder(std::make_shared<TensorDictModuleImpl>(module, std::move(in_keys),
                                                              std::move(out_keys))) {}
};

/// Runs TensorDict modules one after the other on the same TensorDict (tensordict's
/// `TensorDictSequential`; TorchRL's `ActorCriticWrapper` is one: actor, then critic; a policy
/// with exploration is another: actor, then noise). The modules are held, as in tensordict, in a
/// list registered as `"module"`: their state-dict names are `module.0.*`, `module.1.*`, ...,
/// TorchRL's names. `in_keys` are the keys read before being written, `out_keys` everything
/// written. An archive written by rlobj before 0.2 (children `"0"`, `"1"`, ... directly) still
/// loads with `torch::load`; `rlobj::load_state_dict` renames such a state dict as well.
class TensorDictSequentialImpl : public TensorDictModuleBase {
 public:
  /// Runs `modules` in order; `c10::ValueError` if there is none or one is null.
  explicit TensorDictSequentialImpl(std::vector<std::shared_ptr<TensorDictModuleBase>> modules) {
    TORCH_CHECK_VALUE(!modules.empty(), "TensorDictSequential: needs at least one module");
    for (size_t i = 0; i < modules.size(); ++i) {
      TORCH_CHECK_VALUE(modules[i] != nullptr, "TensorDictSequential: module ", i, " is null");
    }
    list_ = register_module("module", torch::nn::ModuleList());
    for (const auto& m : modules) {
      list_->push_back(m);
      modules_.push_back(m);
    }
    compute_keys();
  }
  /// From module holders: `TensorDictSequentialImpl(actor, noise)`.
  template <typename... Holders>
  explicit TensorDictSequentialImpl(const Holders&... holders)
      : TensorDictSequentialImpl(
            std::vector<std::shared_ptr<TensorDictModuleBase>>{holders.ptr()...}) {}

  /// Runs every module in order on `td` and returns it.
  TensorDict forward(TensorDict td) override {
    for (auto& m : modules_) td = m->forward(td);
    return td;
  }

  const std::vector<NestedKey>& in_keys() const override { return in_keys_; }
  const std::vector<NestedKey>& out_keys() const override { return out_keys_; }
  /// The i-th module.
  const std::shared_ptr<TensorDictModuleBase>& operator[](size_t i) const { return modules_.at(i); }
  /// Number of modules.
  size_t size() const noexcept { return modules_.size(); }

  /// A deep copy (every module is cloned).
  std::shared_ptr<torch::nn::Module> clone(
      const c10::optional<torch::Device>& device = c10::nullopt) const override {
    std::vector<std::shared_ptr<TensorDictModuleBase>> copies;
    for (const auto& m : modules_) {
      auto copy = std::dynamic_pointer_cast<TensorDictModuleBase>(m->clone(device));
      TORCH_CHECK(copy != nullptr, "TensorDictSequential: a module's clone() changed its type");
      copies.push_back(std::move(copy));
    }
    auto copy = std::make_shared<TensorDictSequentialImpl>(std::move(copies));
    copy->train(is_training());
    return copy;
  }

  /// `torch::load`: TorchRL's layout (`module/0`, `module/1`, ...), or rlobj's before 0.2
  /// (`0`, `1`, ... directly).
  void load(torch::serialize::InputArchive& archive) override {
    torch::serialize::InputArchive list;
    if (archive.try_read("module", list)) {
      list_->load(list);
      return;
    }
    for (size_t i = 0; i < modules_.size(); ++i) {
      torch::serialize::InputArchive child;
      TORCH_CHECK_VALUE(archive.try_read(std::to_string(i), child), "TensorDictSequential.load: the archive has "
                        "neither \"module\" (rlobj 0.2 and TorchRL's layout) nor \"", i, "\" (rlobj before 0.2)");
      modules_[i]->load(child);
    }
  }

  /// Prints `TensorDictSequential(in_keys=[...], out_keys=[...])`.
  void pretty_print(std::ostream& stream) const override {
    stream << "TensorDictSequential(in_keys=" << rlobj::detail::keys_str(in_keys_)
           << ", out_keys=" << rlobj::detail::keys_str(out_keys_) << ")";
  }

 private:
  void compute_keys() {
    auto has = [](const std::vector<NestedKey>& v, const NestedKey& k) {
      return std::find(v.begin(), v.end(), k) != v.end();
    };
    for (const auto& m : modules_) {
      for (const auto& k : m->in_keys()) {
        if (!has(out_keys_, k) && !has(in_keys_, k)) in_keys_.push_back(k);
      }
      for (const auto& k : m->out_keys()) {
        if (!has(out_keys_, k)) out_keys_.push_back(k);
      }
    }
  }

  torch::nn::ModuleList list_{nullptr};  // "module": what the state dict names
  std::vector<std::shared_ptr<TensorDictModuleBase>> modules_;
  std::vector<NestedKey> in_keys_;
  std::vector<NestedKey> out_keys_;
};

/// Holder of `TensorDictSequentialImpl`: `TensorDictSequential(actor, critic)`.
TORCH_MODULE(TensorDictSequential);

}  // namespace modules
}  // namespace rlobj
