#pragma once

/// \file
/// TorchRL's environment transforms: `TransformedEnv` over any `EnvBase`, with `ObservationNorm`,
/// `RewardScaling`, `DoubleToFloat`, `StepCounter` and `RewardSum` (TorchRL 0.14.1's
/// `torchrl/envs/transforms`). `InitTracker` needs no transform: every environment writes
/// `is_init` (`envs/common.h`).
///
/// A `TransformedEnv` is an environment: its specs are the base's, rewritten by each transform in
/// order; `reset` and `step` run the base and then each transform's `reset`/`step` in order; the
/// action goes through each transform's `inv` in reverse order before the base steps. Transforms
/// with state (`ObservationNorm`'s `loc`/`scale`) save and load it with the environment
/// (`TransformedEnv::save`/`load`), which a trainer registers as a checkpoint record.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/envs/common.h"
#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace envs {

/// The specs a transform sees and rewrites: those of the environment below it.
struct EnvSpecs {
  /// The root entries a reset or a step writes (`is_init` included).
  Composite observation;
  /// `"action"`.
  std::shared_ptr<const TensorSpec> action;
  /// `("next", "reward")`.
  std::shared_ptr<const TensorSpec> reward;
  /// `done`, `terminated`, `truncated`.
  Composite done;
};

/// Base of the transforms (TorchRL's `Transform`). Every hook has a do-nothing default.
class Transform {
 public:
  virtual ~Transform() = default;
  /// The transform's name, in messages and checkpoints.
  virtual std::string name() const = 0;
  /// Checks that the transform applies to `specs` (those below it) and rewrites them; throws a
  /// `c10::Error` naming the key otherwise. Called once, by `TransformedEnv`'s constructor.
  virtual void transform_specs(EnvSpecs& specs) { (void)specs; }
  /// Root keys of the environment below that this transform rewrites in place (their values
  /// in a transformed root are not the base's own, so a reset does not hand them to the base).
  virtual std::vector<std::string> rewritten_keys() const { return {}; }
  /// TorchRL's `_reset(tensordict, tensordict_reset)`: `out` is the reset's root so far; `td` the
  /// guiding TensorDict (or nullptr) and `mask` its `"_reset"` mask (undefined: every
  /// sub-environment restarts).
  virtual void reset(const TensorDict* td, const torch::Tensor& mask, TensorDict& out) {
    (void)td;
    (void)mask;
    (void)out;
  }
  /// TorchRL's `_step(tensordict, next_tensordict)`: `td` is the transformed root the step
  /// started from, `next` the step's `"next"` entries so far.
  virtual void step(const TensorDict& td, TensorDict& next) {
    (void)td;
    (void)next;
  }
  /// Throws a `c10::Error` if the transform cannot run yet (`ObservationNorm` without
  /// statistics): `TransformedEnv` asks every transform before the base resets or steps, so that
  /// a refused call draws nothing.
  virtual void check_ready(const char* where) const { (void)where; }
  /// TorchRL's `inv`: rewrites the root the environment below steps from (an action cast back).
  virtual void inv(TensorDict& td) const { (void)td; }
  /// Writes the transform's state (none by default).
  virtual void save(torch::serialize::OutputArchive& archive) const { (void)archive; }
  /// Reads what `save` wrote.
  virtual void load(torch::serialize::InputArchive& archive) { (void)archive; }
};

namespace detail {

/// `td[key]`, checked present, for a transform's message.
inline const torch::Tensor& transform_input(const TensorDict& td, const std::string& key, const std::string& who,
                                            const char* where) {
  const torch::Tensor* t = td.find(key);
  TORCH_CHECK_VALUE(t != nullptr, who, ".", where, ": the TensorDict has no \"", key,
                    "\"; use a root made by this environment's reset() or step_mdp()");
  return *t;
}

}  // namespace detail

/// An environment with transforms (TorchRL's `TransformedEnv` over a `Compose`): the base
/// environment's specs and data, rewritten by each transform in order. Its generator is the
/// base's (`set_seed` seeds the base).
class TransformedEnv : public EnvBase {
 public:
  /// Wraps `base` (shared: the caller may keep it) with `transforms`, applied in order. Throws a
  /// `c10::ValueError` for a null base or transform, and each transform's error when it does not
  /// apply to the specs below it.
  TransformedEnv(std::shared_ptr<EnvBase> base, std::vector<std::shared_ptr<Transform>> transforms)
      : EnvBase(checked_base(base).batch_size(), checked_base(base).device(), 0),
        base_(std::move(base)),
        transforms_(std::move(transforms)) {
    EnvSpecs specs{base_->observation_spec(), base_->action_spec().clone(), base_->reward_spec().clone(),
                   base_->done_spec()};
    for (size_t i = 0; i < transforms_.size(); ++i) {
      TORCH_CHECK_VALUE(transforms_[i] != nullptr, "TransformedEnv: transform ", i, " is null");
      transforms_[i]->transform_specs(specs);
      for (const auto& k : transforms_[i]->rewritten_keys()) {
        if (std::find(rewritten_.begin(), rewritten_.end(), NestedKey(k)) == rewritten_.end()) rewritten_.emplace_back(k);
      }
    }
    observation_spec_ = std::move(specs.observation);
    action_spec_ = std::move(specs.action);
    reward_spec_ = std::move(specs.reward);
    done_spec_ = std::move(specs.done);
    for (const auto& k : base_->observation_spec().keys()) base_keys_.emplace_back(k);
    for (const auto& k : base_->done_spec().keys()) base_keys_.emplace_back(k);
    base_keys_.emplace_back("_reset");
  }

  const char* name() const override { return "TransformedEnv"; }
  /// The environment below the transforms.
  EnvBase& base_env() const noexcept { return *base_; }
  /// The transforms, in the order they apply.
  const std::vector<std::shared_ptr<Transform>>& transforms() const noexcept { return transforms_; }
  /// The base's generator: resets and random actions draw from it.
  at::Generator& generator() noexcept override { return base_->generator(); }
  /// Seeds the base.
  void set_seed(uint64_t seed) override { base_->set_seed(seed); }

  /// Writes every transform's state, each under `"<index>_<name>"`.
  void save(torch::serialize::OutputArchive& archive) const {
    for (size_t i = 0; i < transforms_.size(); ++i) {
      torch::serialize::OutputArchive sub;
      transforms_[i]->save(sub);
      archive.write(record_name(i), sub);
    }
  }
  /// Reads what `save` wrote, for the same transforms in the same order; throws a `c10::Error`
  /// naming the transform whose record is missing or wrong.
  void load(torch::serialize::InputArchive& archive) {
    for (size_t i = 0; i < transforms_.size(); ++i) {
      torch::serialize::InputArchive sub;
      TORCH_CHECK(archive.try_read(record_name(i), sub), "TransformedEnv.load: no record \"", record_name(i),
                  "\" (saved with other transforms?)");
      transforms_[i]->load(sub);
    }
  }

 protected:
  TensorDict reset_impl(const TensorDict* td) override {
    for (const auto& t : transforms_) t->check_ready("reset");
    const torch::Tensor mask = reset_mask(td);
    TensorDict out;
    if (td != nullptr) {
      // The base gets its own entries, less those a transform rewrote (their values are not its own).
      out = base_->reset(td->select(base_keys_, /*strict=*/false).exclude(rewritten_));
    } else {
      out = base_->reset();
    }
    out = out.exclude({"is_init"});  // EnvBase writes it
    for (auto& t : transforms_) t->reset(td, mask, out);
    if (mask.defined()) {
      // TorchRL's _update_during_reset: the rows outside the mask keep td's (transformed) entries.
      for (const auto& key : out.keys()) {
        const torch::Tensor* before = td->find(key);
        if (before == nullptr) continue;
        const torch::Tensor& after = out.get(key);
        if (before->sizes() != after.sizes() || before->scalar_type() != after.scalar_type()) continue;
        out.set(key, torch::where(detail::rows_mask(mask, after), after, *before));
      }
    }
    return out;
  }

  TensorDict step_impl(const TensorDict& td) override {
    for (const auto& t : transforms_) t->check_ready("step");
    TensorDict base_td = td.copy();
    for (auto it = transforms_.rbegin(); it != transforms_.rend(); ++it) (*it)->inv(base_td);
    TensorDict next = base_->step(base_td).get_sub("next").exclude({"is_init"});
    for (auto& t : transforms_) t->step(td, next);
    return next;
  }

 private:
  static EnvBase& checked_base(const std::shared_ptr<EnvBase>& base) {
    TORCH_CHECK_VALUE(base != nullptr, "TransformedEnv: the base environment is null");
    return *base;
  }
  std::string record_name(size_t i) const { return std::to_string(i) + "_" + transforms_[i]->name(); }

  std::shared_ptr<EnvBase> base_;
  std::vector<std::shared_ptr<Transform>> transforms_;
  std::vector<NestedKey> rewritten_;
  std::vector<NestedKey> base_keys_;
};

/// Options of `ObservationNorm`, with TorchRL's names and defaults (`in_keys` has no default in
/// TorchRL; `"observation"` here).
struct ObservationNormOptions {
  /// The entries normalised, all with the same `loc` and `scale`.
  TORCH_ARG(std::vector<std::string>, in_keys) = {"observation"};
  /// `(obs - loc) / scale` instead of `obs * scale + loc`.
  TORCH_ARG(bool, standard_normal) = false;
  /// The floor of `scale` (TorchRL: the scale dtype's epsilon when `scale` is a floating tensor).
  TORCH_ARG(std::optional<double>, eps) = std::nullopt;
};

/// TorchRL's `ObservationNorm`: `obs * scale + loc`, or `(obs - loc) / scale` with
/// `standard_normal`, on every `in_keys` entry of resets and steps, and on their specs' bounds.
/// `loc` and `scale` are given or computed by `init_stats` from random rollouts; they are the
/// transform's state in checkpoints.
class ObservationNorm : public Transform {
 public:
  /// Given statistics (broadcast against each entry's feature dims; cast to its dtype).
  ObservationNorm(torch::Tensor loc, torch::Tensor scale, ObservationNormOptions options = {})
      : options_(std::move(options)) {
    TORCH_CHECK_VALUE(loc.defined() && scale.defined(), "ObservationNorm: loc and scale must both be given");
    TORCH_CHECK_VALUE(at::isFloatingType(loc.scalar_type()) && at::isFloatingType(scale.scalar_type()),
                      "ObservationNorm: loc and scale must be floating-point tensors");
    set_stats(std::move(loc), std::move(scale));
  }
  /// Statistics still to be computed (`init_stats`) or loaded.
  explicit ObservationNorm(ObservationNormOptions options = {}) : options_(std::move(options)) {
    TORCH_CHECK_VALUE(!options_.in_keys().empty(), "ObservationNorm: in_keys is empty");
  }

  std::string name() const override { return "ObservationNorm"; }
  /// True once `loc` and `scale` are set.
  bool initialized() const noexcept { return loc_.defined(); }
  /// The location (undefined before `init_stats`).
  const torch::Tensor& loc() const noexcept { return loc_; }
  /// The scale, floored at `eps` (undefined before `init_stats`).
  const torch::Tensor& scale() const noexcept { return scale_; }
  /// The options it was made with.
  const ObservationNormOptions& options() const noexcept { return options_; }
  /// `x` normalised: `(x - loc) / scale` with `standard_normal`, else `x * scale + loc` (the
  /// statistics cast to `x`'s dtype). Throws if the statistics are not set.
  torch::Tensor apply(const torch::Tensor& x) const {
    check_ready("apply");
    const torch::Tensor loc = loc_.to(x.scalar_type()), scale = scale_.to(x.scalar_type());
    return options_.standard_normal() ? (x - loc) / scale : x * scale + loc;
  }

  /// TorchRL's `init_stats(num_iter)`: rollouts of random actions in `env` (the environment this
  /// transform's input comes from: the base, for the first transform) until `num_iter` frames are
  /// collected, each stopping at its first done; `loc` and `scale` are the mean and standard
  /// deviation (unbiased) of the first `in_keys` entry over every batch and time dim (TorchRL's
  /// `reduce_dim` over them) or, without `standard_normal`, `-mean / std` and `1 / std`.
  void init_stats(EnvBase& env, int64_t num_iter) {
    TORCH_CHECK_VALUE(num_iter > 0, "ObservationNorm.init_stats: num_iter must be positive, got ", num_iter);
    TORCH_CHECK(!initialized(), "ObservationNorm.init_stats: loc and scale are already set");
    const std::string& key = options_.in_keys().front();
    std::vector<torch::Tensor> data;
    int64_t frames = 0;
    while (frames < num_iter) {
      TensorDict rollout = env.rollout(num_iter);
      frames += rollout.numel();
      const torch::Tensor& x = detail::transform_input(rollout, key, name(), "init_stats");
      data.push_back(x.reshape({rollout.numel(), -1}));
    }
    torch::Tensor all = torch::cat(data, 0);
    torch::Tensor loc = all.mean(0);
    torch::Tensor scale = all.std(0);
    if (!options_.standard_normal()) {
      scale = 1 / scale.clamp_min(eps_for(scale));
      loc = -loc * scale;
    }
    TORCH_CHECK(torch::isfinite(loc).all().item<bool>() && torch::isfinite(scale).all().item<bool>(),
                "ObservationNorm.init_stats: non-finite statistics of \"", key, "\"");
    set_stats(loc, scale);
  }

  void transform_specs(EnvSpecs& specs) override {
    for (const auto& key : options_.in_keys()) {
      TORCH_CHECK_VALUE(specs.observation.contains(key), "ObservationNorm: the environment has no observation \"", key,
                        "\"");
      const auto spec = specs.observation.ptr(key);
      TORCH_CHECK_VALUE(at::isFloatingType(spec->dtype()), "ObservationNorm: \"", key, "\" is ",
                        rlobj::detail::dtype_str(spec->dtype()), ", expected a floating-point observation");
      if (const auto* bounded = dynamic_cast<const Bounded*>(spec.get())) {
        if (initialized()) {
          // TorchRL transforms a box's bounds (a negative scale cannot happen: it is floored at eps).
          specs.observation.set(key, std::make_shared<Bounded>(apply(bounded->low()), apply(bounded->high())));
        } else {
          // Unknown until init_stats: any value.
          specs.observation.set(key, std::make_shared<Unbounded>(spec->shape(), spec->dtype(), spec->device()));
        }
      }
    }
  }
  std::vector<std::string> rewritten_keys() const override { return options_.in_keys(); }
  void check_ready(const char* where) const override {
    TORCH_CHECK(initialized(), "ObservationNorm.", where,
                ": loc and scale are not set: pass them to the constructor, call init_stats, or load a checkpoint");
  }
  void reset(const TensorDict* td, const torch::Tensor& mask, TensorDict& out) override {
    (void)td;
    (void)mask;
    apply_to(out, "reset");
  }
  void step(const TensorDict& td, TensorDict& next) override {
    (void)td;
    apply_to(next, "step");
  }
  void save(torch::serialize::OutputArchive& archive) const override {
    TORCH_CHECK(initialized(), "ObservationNorm.save: loc and scale are not set (call init_stats first)");
    archive.write("loc", loc_, /*is_buffer=*/true);
    archive.write("scale", scale_, /*is_buffer=*/true);
    archive.write("standard_normal", torch::tensor(options_.standard_normal()), /*is_buffer=*/true);
  }
  void load(torch::serialize::InputArchive& archive) override {
    torch::Tensor loc, scale, standard_normal;
    TORCH_CHECK(archive.try_read("loc", loc, true) && archive.try_read("scale", scale, true) &&
                    archive.try_read("standard_normal", standard_normal, true),
                "ObservationNorm.load: the record has no loc, scale or standard_normal");
    TORCH_CHECK(standard_normal.numel() == 1 && standard_normal.item<bool>() == options_.standard_normal(),
                "ObservationNorm.load: the record was saved with standard_normal=",
                standard_normal.numel() == 1 && standard_normal.item<bool>() ? "true" : "false",
                ", this transform has ", options_.standard_normal() ? "true" : "false");
    TORCH_CHECK(at::isFloatingType(loc.scalar_type()) && at::isFloatingType(scale.scalar_type()) &&
                    loc.sizes() == scale.sizes() && torch::isfinite(loc).all().item<bool>() &&
                    torch::isfinite(scale).all().item<bool>(),
                "ObservationNorm.load: loc and scale must be finite floating-point tensors of one shape, got ",
                rlobj::detail::shape_str(loc.sizes()), " and ", rlobj::detail::shape_str(scale.sizes()));
    TORCH_CHECK(!initialized() || loc.sizes() == loc_.sizes(), "ObservationNorm.load: loc has shape ",
                rlobj::detail::shape_str(loc.sizes()), ", this transform's ", rlobj::detail::shape_str(loc_.sizes()));
    set_stats(loc, scale);
  }

 private:
  double eps_for(const torch::Tensor& scale) const {
    if (options_.eps()) return *options_.eps();
    return scale.scalar_type() == torch::kFloat64 ? std::numeric_limits<double>::epsilon()
           : scale.scalar_type() == torch::kFloat32 ? static_cast<double>(std::numeric_limits<float>::epsilon())
                                                   : 1e-6;
  }
  void set_stats(torch::Tensor loc, torch::Tensor scale) {
    const double eps = eps_for(scale);
    loc_ = loc.detach().clone();
    scale_ = scale.detach().clamp_min(eps);
  }
  void apply_to(TensorDict& td, const char* where) const {
    check_ready(where);
    for (const auto& key : options_.in_keys()) {
      const torch::Tensor& x = detail::transform_input(td, key, name(), where);
      td.set(key, apply(x));
    }
  }

  ObservationNormOptions options_;
  torch::Tensor loc_, scale_;
};

/// TorchRL's `RewardScaling`: `reward * scale + loc`, or `(reward - loc) / scale` with
/// `standard_normal`; `scale` floored at 1e-6. The reward spec must be `Unbounded` (as TorchRL's).
class RewardScaling : public Transform {
 public:
  /// `reward * scale + loc` (or `(reward - loc) / scale`); throws a `c10::ValueError` for a
  /// non-finite `loc` or `scale`.
  RewardScaling(double loc, double scale, bool standard_normal = false)
      : loc_(loc), scale_(std::max(scale, 1e-6)), standard_normal_(standard_normal) {
    TORCH_CHECK_VALUE(std::isfinite(loc) && std::isfinite(scale), "RewardScaling: loc and scale must be finite, got ",
                      loc, " and ", scale);
  }
  std::string name() const override { return "RewardScaling"; }
  /// The location.
  double loc() const noexcept { return loc_; }
  /// The scale, floored at 1e-6.
  double scale() const noexcept { return scale_; }

  void transform_specs(EnvSpecs& specs) override {
    TORCH_CHECK_VALUE(dynamic_cast<const Unbounded*>(specs.reward.get()) != nullptr,
                      "RewardScaling: the reward spec is ", specs.reward->repr(), "; TorchRL's RewardScaling takes an "
                      "Unbounded reward spec only");
  }
  void step(const TensorDict& td, TensorDict& next) override {
    (void)td;
    const torch::Tensor& r = detail::transform_input(next, "reward", name(), "step");
    next.set("reward", standard_normal_ ? (r - loc_) / scale_ : r * scale_ + loc_);
  }

 private:
  double loc_, scale_;
  bool standard_normal_;
};

/// TorchRL's `DoubleToFloat`: float64 entries (`in_keys`: observations, or `"reward"`) become
/// float32 in resets, steps and specs; a float64 action spec becomes float32 and the action is
/// cast back to float64 before the base steps (TorchRL's `in_keys_inv`). TorchRL's default
/// `in_keys` is every float64 entry; here it is `{"observation"}`, because rlobj's environments
/// keep their state in the root (Pendulum's `th`, `thdot`), which must stay float64.
class DoubleToFloat : public Transform {
 public:
  /// Converts `in_keys` (observation keys, or `"reward"`).
  explicit DoubleToFloat(std::vector<std::string> in_keys = {"observation"}) : in_keys_(std::move(in_keys)) {}
  std::string name() const override { return "DoubleToFloat"; }

  void transform_specs(EnvSpecs& specs) override {
    for (const auto& key : in_keys_) {
      std::shared_ptr<const TensorSpec> spec;
      if (key == "reward") {
        spec = specs.reward;
      } else {
        TORCH_CHECK_VALUE(specs.observation.contains(key), "DoubleToFloat: the environment has no observation \"", key,
                          "\"");
        spec = specs.observation.ptr(key);
      }
      TORCH_CHECK_VALUE(spec->dtype() == torch::kFloat64, "DoubleToFloat: \"", key, "\" is ",
                        rlobj::detail::dtype_str(spec->dtype()), ", expected float64");
      auto cast = to_float(*spec);
      if (key == "reward") {
        specs.reward = cast;
      } else {
        specs.observation.set(key, cast);
      }
    }
    cast_action_ = specs.action->dtype() == torch::kFloat64;
    if (cast_action_) specs.action = to_float(*specs.action);
  }
  std::vector<std::string> rewritten_keys() const override { return in_keys_; }
  void reset(const TensorDict* td, const torch::Tensor& mask, TensorDict& out) override {
    (void)td;
    (void)mask;
    cast(out, "reset");
  }
  void step(const TensorDict& td, TensorDict& next) override {
    (void)td;
    cast(next, "step");
  }
  void inv(TensorDict& td) const override {
    if (!cast_action_) return;
    const torch::Tensor& a = detail::transform_input(td, "action", name(), "step");
    td.set("action", a.to(torch::kFloat64));
  }

 private:
  static std::shared_ptr<const TensorSpec> to_float(const TensorSpec& spec) {
    if (const auto* b = dynamic_cast<const Bounded*>(&spec)) {
      return std::make_shared<Bounded>(b->low().to(torch::kFloat32), b->high().to(torch::kFloat32));
    }
    TORCH_CHECK_VALUE(dynamic_cast<const Unbounded*>(&spec) != nullptr, "DoubleToFloat: cannot cast the spec ",
                      spec.repr());
    return std::make_shared<Unbounded>(spec.shape(), torch::kFloat32, spec.device());
  }
  void cast(TensorDict& td, const char* where) const {
    for (const auto& key : in_keys_) {
      if (key == "reward" && !td.contains("reward")) continue;  // a reset writes none
      td.set(key, detail::transform_input(td, key, name(), where).to(torch::kFloat32));
    }
  }

  std::vector<std::string> in_keys_;
  bool cast_action_ = false;
};

/// Options of `StepCounter`, with TorchRL's names and defaults.
struct StepCounterOptions {
  /// Truncate (`truncated`, and `done` with `update_done`) once this many steps were taken.
  TORCH_ARG(std::optional<int64_t>, max_steps) = std::nullopt;
  /// Where the count is written (int64 `[*batch, 1]`).
  TORCH_ARG(std::string, step_count_key) = "step_count";
  /// Also set `done` when truncating.
  TORCH_ARG(bool, update_done) = true;
};

/// TorchRL's `StepCounter`: counts the steps since each sub-environment's reset and, with
/// `max_steps`, sets `truncated` (and `done`) once `max_steps` were taken. rlobj's own
/// environments already count (`step_count`): give this another `step_count_key` over them.
class StepCounter : public Transform {
 public:
  /// Throws a `c10::ValueError` for `max_steps < 1` or an empty key.
  explicit StepCounter(StepCounterOptions options = {}) : options_(std::move(options)) {
    TORCH_CHECK_VALUE(!options_.max_steps() || *options_.max_steps() >= 1,
                      "StepCounter: max_steps must be >= 1, got ", options_.max_steps().value_or(0));
    TORCH_CHECK_VALUE(!options_.step_count_key().empty(), "StepCounter: step_count_key is empty");
  }
  std::string name() const override { return "StepCounter"; }

  void transform_specs(EnvSpecs& specs) override {
    const std::string& key = options_.step_count_key();
    TORCH_CHECK_VALUE(!specs.observation.contains(key), "StepCounter: the environment already writes \"", key,
                      "\" (rlobj's environments count their steps); choose another "
                      "StepCounterOptions().step_count_key");
    const TensorSpec& done = specs.done.at("done");
    specs.observation.set(key, Bounded(torch::zeros(done.shape(), torch::TensorOptions().dtype(torch::kInt64).device(done.device())),
                                       torch::full(done.shape(), std::numeric_limits<int64_t>::max(),
                                                   torch::TensorOptions().dtype(torch::kInt64).device(done.device()))));
  }
  void reset(const TensorDict* td, const torch::Tensor& mask, TensorDict& out) override {
    const std::string& key = options_.step_count_key();
    const torch::Tensor& done = out.get("done");
    const torch::Tensor* before = td != nullptr ? td->find(key) : nullptr;
    torch::Tensor count = torch::zeros_like(done, torch::TensorOptions().dtype(torch::kInt64));
    if (before != nullptr && mask.defined()) {
      TORCH_CHECK_VALUE(before->scalar_type() == torch::kInt64 && before->sizes() == done.sizes(), name(),
                        ".reset: \"", key, "\" must be int64 ", rlobj::detail::shape_str(done.sizes()), ", got ",
                        rlobj::detail::dtype_str(before->scalar_type()), " ", rlobj::detail::shape_str(before->sizes()));
      count = torch::where(mask, count, *before);
    }
    out.set(key, count);
    if (options_.max_steps()) {
      torch::Tensor truncated = count.ge(*options_.max_steps()) | out.get("truncated");
      if (options_.update_done()) out.set("done", truncated);
      out.set("truncated", truncated);
    }
  }
  void step(const TensorDict& td, TensorDict& next) override {
    const std::string& key = options_.step_count_key();
    const torch::Tensor& count = detail::transform_input(td, key, name(), "step");
    torch::Tensor next_count = count + 1;
    next.set(key, next_count);
    if (options_.max_steps()) {
      torch::Tensor truncated = next_count.ge(*options_.max_steps()) | next.get("truncated");
      if (options_.update_done()) next.set("done", truncated | next.get("done"));
      next.set("truncated", truncated);
    }
  }

 private:
  StepCounterOptions options_;
};

/// TorchRL's `RewardSum`: the running sum of the reward over each episode, written as
/// `out_key` (`"episode_reward"`) in every root (0 after a reset; kept by a partial reset for the
/// other sub-environments). Its spec is `Unbounded` with the reward's shape and dtype (TorchRL
/// clones the reward's spec; a sum of bounded rewards is not bounded by them).
class RewardSum : public Transform {
 public:
  /// Writes the running sum as `out_key`.
  explicit RewardSum(std::string out_key = "episode_reward") : out_key_(std::move(out_key)) {
    TORCH_CHECK_VALUE(!out_key_.empty(), "RewardSum: out_key is empty");
  }
  std::string name() const override { return "RewardSum"; }

  void transform_specs(EnvSpecs& specs) override {
    TORCH_CHECK_VALUE(!specs.observation.contains(out_key_), "RewardSum: the environment already writes \"", out_key_,
                      "\"");
    specs.observation.set(out_key_, std::make_shared<Unbounded>(specs.reward->shape(), specs.reward->dtype(),
                                                                specs.reward->device()));
    reward_dtype_ = specs.reward->dtype();
  }
  void reset(const TensorDict* td, const torch::Tensor& mask, TensorDict& out) override {
    const torch::Tensor& done = out.get("done");
    torch::Tensor sum = torch::zeros(done.sizes(), torch::TensorOptions().dtype(reward_dtype_).device(done.device()));
    const torch::Tensor* before = td != nullptr ? td->find(out_key_) : nullptr;
    if (before != nullptr && mask.defined()) {
      TORCH_CHECK_VALUE(before->scalar_type() == reward_dtype_ && before->sizes() == done.sizes(), name(), ".reset: \"",
                        out_key_, "\" must be ", rlobj::detail::dtype_str(reward_dtype_), " ",
                        rlobj::detail::shape_str(done.sizes()), ", got ", rlobj::detail::dtype_str(before->scalar_type()),
                        " ", rlobj::detail::shape_str(before->sizes()));
      sum = torch::where(mask, sum, *before);
    }
    out.set(out_key_, sum);
  }
  void step(const TensorDict& td, TensorDict& next) override {
    const torch::Tensor& before = detail::transform_input(td, out_key_, name(), "step");
    next.set(out_key_, before + detail::transform_input(next, "reward", name(), "step"));
  }

 private:
  std::string out_key_;
  torch::Dtype reward_dtype_ = torch::kFloat32;
};

}  // namespace envs
}  // namespace rlobj
