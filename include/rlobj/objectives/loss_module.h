#pragma once

/// \file
/// `LossModuleImpl`, the base of rlobj's objectives (TorchRL's `torchrl.objectives.LossModule`),
/// `LossModuleBase` (a loss's options and keys) and `LossHolder` (its `ModuleHolder`).
///
/// The base owns the invariants every loss shares, so that a loss is its options, its keys
/// and its maths:
///
/// * **One `forward`** (a template method, TorchRL's wrapped `forward`): it checks the batch
///   against the keys the loss declared (present, floating point in the networks' dtype, a
///   feature dim, no NaN/Inf by `FiniteCheck`), re-links the flat parameter groups, sets the
///   exploration type (`deterministic_sampling_mode`), then calls the loss's protected
///   `compute`. A loss's other entry points (`actor_loss`, `value_loss`) go through the same
///   `run`. Every check runs before anything changes: a rejected batch leaves the loss, the
///   batch and the random generators as they were.
/// * **Keys declared once**: a loss's keys struct lists its fields (`fields()`); `set_keys`,
///   `tensor_keys()`, `in_keys()` and their errors are the base's.
/// * **Networks registered once** (`register_network`): each network's parameters live in one
///   contiguous buffer — a *parameter group* (`parameter_group.h`) — whose flat leaf is what
///   `parameters()` yields, so `torch::optim::Adam(loss->parameters())` updates a handful of flat
///   tensors and target updaters blend whole groups in one pass. The networks themselves are
///   unchanged for every other use: `actor->parameters()`, `actor->forward(td)`,
///   `torch::save(actor, ...)` all work as before.
/// * **One value estimator** slot (`make_value_estimator`, `value_estimator()`).
///
/// docs/contributing.md walks through writing a new loss on this contract.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <type_traits>
#include <string>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <torch/arg.h>
#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/detail/keys.h"
#include "rlobj/detail/memory.h"
#include "rlobj/modules/exploration_type.h"
#include "rlobj/objectives/checks.h"
#include "rlobj/objectives/functional.h"
#include "rlobj/objectives/parameter_group.h"
#include "rlobj/objectives/value/advantages.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace objectives {

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
  /// The number of copies (`NetworkOptions::ensemble`).
  int64_t size() const noexcept { return static_cast<int64_t>(online.size()); }
};

/// Base class of rlobj's losses (TorchRL's `LossModule`): a `torch::nn::Module` whose
/// `forward(TensorDict)` returns a TensorDict with `batch_size` `[]` holding `loss_*` scalars
/// and logging entries.
///
/// A loss derives from `LossModuleBase<Options, Keys>` (or from this class directly), registers
/// its networks in its constructor, declares the keys it reads (`set_input_keys`, from
/// `keys_changed()`), and implements `compute(td)`; `forward` runs the checks around it.
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
  /// The loss on a batch of transitions: `batch_size` `[]` with the `loss_*` entries and the
  /// loss's logging entries (`out_keys()`). Every check first (see the file comment), then the
  /// loss's `compute` under `deterministic_sampling_mode()`. A loss may write into `td` (its
  /// `td_error`), as TorchRL's do.
  TensorDict forward(TensorDict td) {
    return run(td, [this](TensorDict& batch) { return compute(batch); });
  }

  /// `forward`'s checks of `td` (the declared keys, dtypes, shapes, the finite rule) and the
  /// re-linking of the parameter groups, without computing anything: what an update engine that
  /// computes the loss itself (`rlobj::engine`) runs first, so that a batch the loss would refuse
  /// is refused the same way, before anything changes.
  void validate(const TensorDict& td) {
    check_inputs(td);
    detail::check_finite_inputs(name_.c_str(), td, input_keys_, finite_check());
    ensure_linked();
  }

  /// The loss's TorchRL class name (`"SACLoss"`), which starts its error messages.
  const std::string& loss_name() const noexcept { return name_; }
  /// Every key `forward` may read, sorted (TorchRL's `in_keys`).
  const std::vector<NestedKey>& in_keys() const noexcept { return input_keys_; }
  /// The entries of `forward`'s output, in order (TorchRL's `out_keys`).
  virtual std::vector<std::string> out_keys() const = 0;

  /// Renames the keys the loss reads and writes by their TorchRL names (TorchRL's
  /// `set_keys(reward="r")`): `loss->set_keys({{"reward", "r"}})`. An unknown name throws a
  /// `c10::ValueError` listing the accepted ones, before any key changes. Renaming a network's
  /// output (`state_action_value`, `value`) only changes where the loss reads it: the network's
  /// out_keys must be changed to match.
  void set_keys(const std::map<std::string, NestedKey>& keys) {
    rlobj::detail::set_named_keys(name_.c_str(), keys, key_slots());
    keys_changed();
  }

  /// The exploration type `forward` runs under (TorchRL's `deterministic_sampling_mode`):
  /// stochastic modules inside the loss's networks act deterministically (noise modules add
  /// none, a `ProbabilisticActor` called through `forward` takes its mode). The distributions a
  /// loss samples explicitly (SAC's `rsample`) are not affected. Default `Mode`, TorchRL 0.4's.
  modules::ExplorationType deterministic_sampling_mode() const noexcept { return sampling_mode_; }
  /// Sets the exploration type `forward` runs under (see `deterministic_sampling_mode()`).
  void set_deterministic_sampling_mode(modules::ExplorationType type) noexcept { sampling_mode_ = type; }

  /// Builds the loss's value estimator (TorchRL's `make_value_estimator`): `type` with
  /// `hyperparams` (gamma, lmbda, ...). Which types a loss accepts, and the networks the
  /// estimator runs, are the loss's (DDPG: TD0, TD1, TDLambda over its target networks).
  void make_value_estimator(ValueEstimators type, value::ValueEstimatorOptions hyperparams = {}) {
    estimator_ = build_value_estimator(type, hyperparams);
    value_type_ = type;
    keys_changed();
  }
  /// The same with the loss's default type (TD0 for the off-policy losses, GAE on-policy).
  void make_value_estimator() { make_value_estimator(default_value_type_); }
  /// The value estimator (the default one unless `make_value_estimator` chose another).
  value::ValueEstimatorBase& value_estimator() const {
    TORCH_CHECK(estimator_ != nullptr, name_, " has no value estimator");
    return *estimator_;
  }
  /// The type of `value_estimator()`.
  ValueEstimators value_type() const noexcept { return value_type_; }

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
  /// Whether a target updater was built over the loss (`SoftUpdate` and `HardUpdate` mark it).
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
  /// Converts the dtype only: parameters and floating-point buffers, as above.
  void to(torch::Dtype dtype, bool non_blocking = false) override {
    torch::nn::Module::to(dtype, non_blocking);
    move_network_buffers([&](const torch::Tensor& b) { return b.is_floating_point() ? b.to(dtype, non_blocking) : b; });
    after_storage_change();
  }
  /// Moves to `device` only: parameters and every buffer.
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
  /// Sets training mode on the loss and on every network copy it holds (online, target, frozen),
  /// which are not registered as its submodules.
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
    {
      // Every copy holds its parameters and buffers, and so do its target and frozen copies and
      // its gradients, plus a module's own bookkeeping: refuse what cannot fit in memory before
      // cloning (a huge ensemble would otherwise be killed for memory, or fail in an allocator
      // that does not name the option).
      int64_t bytes = 0;
      for (const auto& p : network->parameters()) bytes += p.numel() * static_cast<int64_t>(p.element_size());
      for (const auto& b : network->buffers()) bytes += b.numel() * static_cast<int64_t>(b.element_size());
      const int64_t per_copy = 4 * bytes + (int64_t{16} << 10);
      const int64_t memory = rlobj::detail::physical_memory_bytes();
      TORCH_CHECK_VALUE(options.ensemble() <= memory / per_copy, "LossModule: ", name, ": an ensemble of ",
                        options.ensemble(), " copies (num_qvalue_nets or the like) needs about ", per_copy,
                        " bytes per copy, more than this machine's ", memory, " bytes of memory hold");
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

 protected:
  /// `name`: the loss's TorchRL class name, for errors. `default_value_type`: the estimator
  /// `make_value_estimator()` builds (call it at the end of the loss's constructor).
  explicit LossModuleImpl(std::string name, ValueEstimators default_value_type = ValueEstimators::TD0)
      : name_(std::move(name)), value_type_(default_value_type), default_value_type_(default_value_type) {}

  /// The loss's maths on a checked batch (what `forward` returns).
  virtual TensorDict compute(TensorDict& td) = 0;

  /// Runs `body(td)` inside the contract: `check_inputs`, the finite check over `in_keys()`,
  /// `ensure_linked`, and `deterministic_sampling_mode()`. Every public entry point of a loss
  /// (`forward`, `actor_loss`, ...) goes through it.
  template <typename Body>
  TensorDict run(TensorDict& td, Body&& body) {
    validate(td);
    modules::SetExplorationType exploration(sampling_mode_);
    return body(td);
  }

  /// Declares what `forward` reads, after construction and after every `set_keys` (call it
  /// from `keys_changed`): `required` must be present; `computed` (present ones among them)
  /// must be floating point in the networks' dtype with a feature dim; `optional` may be read
  /// when present. `in_keys()` is their sorted union.
  void set_input_keys(std::vector<NestedKey> required, std::vector<NestedKey> computed,
                      const std::vector<NestedKey>& optional = {}) {
    std::vector<NestedKey> all = required;
    all.insert(all.end(), computed.begin(), computed.end());
    all.insert(all.end(), optional.begin(), optional.end());
    input_keys_ = detail::sorted_unique(std::move(all));
    required_keys_ = std::move(required);
    computed_keys_ = std::move(computed);
  }

  /// Re-derives the key lists (`set_input_keys`) and the estimator's keys from the loss's keys
  /// and networks; called by `set_keys` and `make_value_estimator`.
  virtual void keys_changed() {}
  /// The loss's renameable keys, by TorchRL name (`LossModuleBase` derives them from its keys
  /// struct's `fields()`).
  virtual std::vector<std::pair<const char*, NestedKey*>> key_slots() { return {}; }
  /// Checks of the batch beyond the declared keys (an action's feature count), run after the
  /// required keys and the batch dims and before the dtype checks.
  virtual void check_batch(const TensorDict& td) const { (void)td; }
  /// When `forward` checks its inputs for NaN and Inf (`LossModuleBase`: the options').
  virtual FiniteCheck finite_check() const { return FiniteCheck::Auto; }
  /// The estimator of `type` for this loss; the base has none.
  virtual std::shared_ptr<value::ValueEstimatorBase> build_value_estimator(
      ValueEstimators type, const value::ValueEstimatorOptions& hyperparams) {
    (void)hyperparams;
    TORCH_CHECK_NOT_IMPLEMENTED(false, name_, " has no value estimator (asked for ",
                                static_cast<int>(type), ")");
  }

  /// The float dtype of the loss's parameters (what the computed keys are checked against).
  torch::Dtype dtype() const {
    TORCH_CHECK(!groups_.empty(), name_, ": no network registered");
    return groups_.front()->flat().scalar_type();
  }

  /// The value estimator, null until `make_value_estimator`.
  std::shared_ptr<value::ValueEstimatorBase> estimator_;

 private:
  void check_inputs(const TensorDict& td) const {
    detail::require_keys(name_.c_str(), td, required_keys_);
    TORCH_CHECK(td.batch_dims() >= 1, name_, ": expected a batch of transitions (batch_dims >= 1), got batch_size ",
                rlobj::detail::shape_str(td.batch_size()));
    check_batch(td);
    // The reward is among them: a float64 reward would silently promote the targets.
    detail::check_network_inputs(name_.c_str(), td, computed_keys_, dtype());
  }

  std::string name_;
  std::vector<NestedKey> input_keys_;     // in_keys()
  std::vector<NestedKey> required_keys_;  // what forward cannot do without
  std::vector<NestedKey> computed_keys_;  // network inputs and the reward, dtype/shape-checked
  modules::ExplorationType sampling_mode_ = modules::ExplorationType::Mode;
  ValueEstimators value_type_;
  ValueEstimators default_value_type_;

 public:
  /// Re-checks that every network still aliases the loss's buffers (cheap pointer
  /// comparisons), repairing what `torch::load(network, ...)` or `zero_grad(set_to_none)`
  /// undid. `forward` and the target updaters call it.
  void ensure_linked() {
    for (auto& g : groups_) g->ensure_linked();
    relink_aliases();
  }

 protected:

  /// The parameter groups, in registration order (`adopt`): each network's trained
  /// `<name>_params` and, with a delayed target, its `target_<name>_params` buffer.
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

/// One entry of a keys struct's `fields()`: the key's TorchRL name and its member.
template <typename Keys>
using KeyField = std::pair<const char*, NestedKey Keys::*>;

/// A loss's options and keys (the base every rlobj loss derives from): the public `options`
/// (TorchRL's constructor arguments, a `TORCH_ARG` struct with a `check_finite` field) and the
/// keys struct `Keys`, whose static `fields()` lists each key's TorchRL name and member, so that
/// `set_keys` and `tensor_keys()` come for free.
///
/// ```
/// struct MyLossKeys {
///   NestedKey value = "state_value";
///   NestedKey reward = "reward";
///   static std::vector<rlobj::objectives::KeyField<MyLossKeys>> fields() {
///     return {{"value", &MyLossKeys::value}, {"reward", &MyLossKeys::reward}};
///   }
/// };
/// class MyLossImpl : public rlobj::objectives::LossModuleBase<MyLossOptions, MyLossKeys> { ... };
/// ```
template <typename Options, typename Keys>
class LossModuleBase : public LossModuleImpl {
 public:
  /// The keys the loss reads and writes (TorchRL's `tensor_keys`).
  const Keys& tensor_keys() const noexcept { return keys_; }

  /// The options the loss was built with.
  Options options;

 protected:
  /// `name` and `default_value_type` as for `LossModuleImpl`; `opts` becomes `options`.
  LossModuleBase(std::string name, Options opts, ValueEstimators default_value_type = ValueEstimators::TD0)
      : LossModuleImpl(std::move(name), default_value_type), options(std::move(opts)) {}

  /// The members `Keys::fields()` lists, in `keys_`, by TorchRL name.
  std::vector<std::pair<const char*, NestedKey*>> key_slots() override {
    std::vector<std::pair<const char*, NestedKey*>> slots;
    for (const auto& [name, member] : Keys::fields()) slots.emplace_back(name, &(keys_.*member));
    return slots;
  }
  /// The options' `check_finite`.
  FiniteCheck finite_check() const override { return options.check_finite(); }

  /// The keys (renamed by `set_keys`).
  Keys keys_;
};

/// The `ModuleHolder` of a loss: `auto loss = SACLoss(actor, qvalue, spec);` builds the `Impl`
/// from the arguments, `loss->parameters()`, `loss(batch)`. A loss's holder is
/// `template <...> class SACLoss : public LossHolder<SACLossImpl<...>> { using LossHolder<...>::LossHolder; };`
/// plus a deduction guide for its network types.
template <typename Impl>
class LossHolder : public torch::nn::ModuleHolder<Impl> {
 public:
  using torch::nn::ModuleHolder<Impl>::ModuleHolder;
  using torch::nn::ModuleHolder<Impl>::get;
  /// Holds a loss of a class derived from `Impl` (one that overrides its random draws, say).
  template <typename Derived, typename = std::enable_if_t<std::is_base_of<Impl, Derived>::value>>
  LossHolder(std::shared_ptr<Derived> impl)  // NOLINT(google-explicit-constructor): as ModuleHolder's
      : torch::nn::ModuleHolder<Impl>(std::shared_ptr<Impl>(std::move(impl))) {}
};

namespace detail {

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

}  // namespace detail

}  // namespace objectives
}  // namespace rlobj
