#pragma once

/// \file
/// `rlobj::modules::ProbabilisticActor`, TorchRL's `ProbabilisticActor`: a TensorDict module
/// that writes a distribution's parameters (`"loc"`, `"scale"`), builds the distribution from
/// them and writes a sample of it as `"action"` (and its log-probability as
/// `"sample_log_prob"` with `return_log_prob`).
///
/// ```
/// namespace m = rlobj::modules;
/// auto params = m::TensorDictSequential(
///     m::TensorDictModule(m::MLP(m::MLPOptions(3, 2).num_cells({64, 64})), {"observation"}, {"param"}),
///     m::TensorDictModule(m::NormalParamExtractor(), {"param"}, {"loc", "scale"}));
/// auto actor = m::ProbabilisticActor(
///     params, m::TanhNormal::factory(m::TanhNormalOptions::from_spec(env.action_spec())));
/// actor(td);                 // td["loc"], td["scale"], td["action"]
/// auto dist = actor->get_dist(td);  // what losses use: rsample, log_prob
/// ```
///
/// Which sample is written depends on the thread's exploration type (`SetExplorationType`), or
/// the actor's `default_interaction_type` (`Mode`, as TorchRL's) when none is set:
/// `Random` draws `rsample()` (or `sample()` where there is none), `Mode` takes `mode()`,
/// `Deterministic` takes `deterministic_sample()`, and `Mean` takes `mean()`, or the mean of
/// 1000 reparameterised samples where the distribution has no mean (tensordict's fallback).

#include <algorithm>
#include <memory>
#include <optional>
#include <ostream>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/modules/distributions.h"
#include "rlobj/modules/exploration_type.h"
#include "rlobj/modules/tensordict_module.h"
#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace modules {

/// Options of `ProbabilisticActor`, with TorchRL's names and defaults.
struct ProbabilisticActorOptions {
  /// The distribution's parameters, read in this order and passed to the factory.
  TORCH_ARG(std::vector<NestedKey>, in_keys) = std::vector<NestedKey>{"loc", "scale"};
  /// Where the sample is written.
  TORCH_ARG(NestedKey, out_key) = NestedKey("action");
  /// Also write `log_prob(sample)` under `log_prob_key`.
  TORCH_ARG(bool, return_log_prob) = false;
  /// Where `log_prob(sample)` is written when `return_log_prob` is set.
  TORCH_ARG(NestedKey, log_prob_key) = NestedKey("sample_log_prob");
  /// How the actor acts when no `SetExplorationType` guard is active.
  TORCH_ARG(ExplorationType, default_interaction_type) = ExplorationType::Mode;
};

/// A stochastic policy: `module` (any TensorDict module) writes the distribution parameters,
/// `factory` builds the distribution from them (`TanhNormal::factory(...)`,
/// `IndependentNormal::factory()`, `Categorical::factory()`, ...). As in TorchRL (a
/// `ProbabilisticTensorDictSequential` of the module and a parameter-free sampling module), the
/// module is the first of a list registered as `"module"`: its state-dict names are `module.0.*`
/// (an archive of rlobj before 0.2, where they were `module.*`, still loads with `torch::load`;
/// `rlobj::load_state_dict` renames such a state dict as well). `spec` documents the action space (as TorchRL's, not used to project).
class ProbabilisticActorImpl : public TensorDictModuleBase {
 public:
  /// Wraps `module`, which writes the distribution's parameters (`options.in_keys()`), and the
  /// distribution `factory`; `c10::ValueError` for a null module, an empty factory or no in_keys.
  ProbabilisticActorImpl(std::shared_ptr<TensorDictModuleBase> module, DistributionFactory factory,
                         ProbabilisticActorOptions options = {}, std::shared_ptr<const TensorSpec> spec = nullptr)
      : options_(std::move(options)), factory_(std::move(factory)), spec_(std::move(spec)) {
    TORCH_CHECK_VALUE(module != nullptr, "ProbabilisticActor: module is null");
    TORCH_CHECK_VALUE(factory_ != nullptr, "ProbabilisticActor: the distribution factory is empty");
    TORCH_CHECK_VALUE(!options_.in_keys().empty(), "ProbabilisticActor: in_keys (the distribution's parameters) "
                      "must not be empty");
    TORCH_CHECK_VALUE(!options_.return_log_prob() || options_.log_prob_key() != options_.out_key(),
                      "ProbabilisticActor: log_prob_key and out_key are both \"", options_.out_key().str(),
                      "\" (the log-probability would overwrite the sample)");
    module_ = std::move(module);
    list_ = register_module("module", torch::nn::ModuleList());
    list_->push_back(module_);
    // Keys read: the module's inputs, plus any parameter the module does not write.
    in_keys_ = module_->in_keys();
    for (const auto& k : options_.in_keys()) {
      const auto& written = module_->out_keys();
      if (std::find(written.begin(), written.end(), k) == written.end() &&
          std::find(in_keys_.begin(), in_keys_.end(), k) == in_keys_.end()) {
        in_keys_.push_back(k);
      }
    }
    out_keys_ = module_->out_keys();
    out_keys_.push_back(options_.out_key());
    if (options_.return_log_prob()) out_keys_.push_back(options_.log_prob_key());
  }

  /// Runs the module on `td` (writing the parameters into it) and returns the distribution.
  std::shared_ptr<Distribution> get_dist(TensorDict& td) {
    td = module_->forward(td);
    std::vector<torch::Tensor> params;
    params.reserve(options_.in_keys().size());
    for (const auto& k : options_.in_keys()) {
      const torch::Tensor* t = td.find(k);
      TORCH_CHECK(t != nullptr, "ProbabilisticActor: distribution parameter \"", k.str(),
                  "\" not found after the module ran; keys present: ", rlobj::detail::keys_str(td.keys(true)));
      params.push_back(*t);
    }
    return factory_(params);
  }

  /// Writes the parameters, the sample (see the file's notes) and, with `return_log_prob`, its
  /// log-probability into `td`.
  TensorDict forward(TensorDict td) override {
    auto dist = get_dist(td);
    const ExplorationType type = explicit_exploration_type().value_or(options_.default_interaction_type());
    torch::Tensor sample = draw(*dist, type);
    if (options_.return_log_prob()) {
      torch::Tensor lp = dist->log_prob(sample);
      TensorDict staged(td.batch_size(), td.device());
      staged.set(options_.out_key(), sample);
      staged.set(options_.log_prob_key(), lp);
      return td.update(staged);
    }
    return td.set(options_.out_key(), sample);
  }

  /// The sample `forward` writes for `type`.
  static torch::Tensor draw(const Distribution& dist, ExplorationType type) {
    switch (type) {
      case ExplorationType::Mode: return dist.mode();
      case ExplorationType::Deterministic: return dist.deterministic_sample();
      case ExplorationType::Mean:
        try {
          return dist.mean();
        } catch (const c10::NotImplementedError&) {
          return (dist.has_rsample() ? dist.rsample({1000}) : dist.sample({1000})).mean(0);
        }
      case ExplorationType::Random: return dist.has_rsample() ? dist.rsample() : dist.sample();
    }
    TORCH_CHECK(false, "ProbabilisticActor: unknown exploration type");
  }

  const std::vector<NestedKey>& in_keys() const override { return in_keys_; }
  const std::vector<NestedKey>& out_keys() const override { return out_keys_; }
  /// The options the actor was built with.
  const ProbabilisticActorOptions& options() const noexcept { return options_; }
  /// The module that writes the distribution's parameters.
  const std::shared_ptr<TensorDictModuleBase>& module() const noexcept { return module_; }
  /// The factory that builds the distribution from its parameters.
  const DistributionFactory& factory() const noexcept { return factory_; }
  /// The action spec given at construction, or null.
  const std::shared_ptr<const TensorSpec>& spec() const noexcept { return spec_; }

  /// A deep copy (the module is cloned; the factory and the spec are shared).
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& device = c10::nullopt) const override {
    auto module = std::dynamic_pointer_cast<TensorDictModuleBase>(module_->clone(device));
    TORCH_CHECK(module != nullptr, "ProbabilisticActor: the module's clone() changed its type");
    auto copy = std::make_shared<ProbabilisticActorImpl>(std::move(module), factory_, options_, spec_);
    copy->train(is_training());
    return copy;
  }

  /// `torch::load`: TorchRL's layout (`module/0`), or rlobj's before 0.2 (`module` the module).
  void load(torch::serialize::InputArchive& archive) override {
    torch::serialize::InputArchive list, first;
    TORCH_CHECK_VALUE(archive.try_read("module", list), "ProbabilisticActor.load: the archive has no \"module\"");
    // TorchRL's layout when "module/0" holds every tensor the module names; else rlobj's before
    // 0.2 ("module" the module itself, whose own load reads any older layout inside it).
    if (list.try_read("0", first) && detail::archive_holds(first, *module_)) {
      module_->load(first);
    } else {
      module_->load(list);
    }
  }

  /// Prints `ProbabilisticActor(in_keys=[...], out_keys=[...])`.
  void pretty_print(std::ostream& stream) const override {
    stream << "ProbabilisticActor(in_keys=" << rlobj::detail::keys_str(in_keys_)
           << ", out_keys=" << rlobj::detail::keys_str(out_keys_) << ")";
  }

 private:
  ProbabilisticActorOptions options_;
  DistributionFactory factory_;
  std::shared_ptr<const TensorSpec> spec_;
  torch::nn::ModuleList list_{nullptr};  // "module": [module_], what the state dict names
  std::shared_ptr<TensorDictModuleBase> module_;
  std::vector<NestedKey> in_keys_, out_keys_;
};

/// Holder of `ProbabilisticActorImpl`.
class ProbabilisticActor : public detail::TDModuleHolder<ProbabilisticActorImpl> {
 public:
  using detail::TDModuleHolder<ProbabilisticActorImpl>::TDModuleHolder;
  /// A `ProbabilisticActorImpl` around `module`, a TensorDict module (see its constructor).
  template <typename M, typename = detail::enable_if_module_t<M>>
  ProbabilisticActor(const M& module, DistributionFactory factory, ProbabilisticActorOptions options = {},
                     std::shared_ptr<const TensorSpec> spec = nullptr)
      : TDModuleHolder(std::make_shared<ProbabilisticActorImpl>(
            std::dynamic_pointer_cast<TensorDictModuleBase>(detail::impl_ptr(module)), std::move(factory),
            std::move(options), std::move(spec))) {}
};

}  // namespace modules
}  // namespace rlobj
