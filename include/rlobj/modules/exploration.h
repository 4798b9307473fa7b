#pragma once

/// \file
/// Exploration noise for deterministic policies, as TorchRL's `AdditiveGaussianModule` and
/// `OrnsteinUhlenbeckProcessModule`, and epsilon-greedy exploration for discrete actions
/// (`EGreedyModule`). The exploration-type switch they read is in
/// `exploration_type.h` (included here).
///
/// Put a noise module after the actor: `TensorDictSequential(actor, noise)`. Noise is added
/// only while the exploration type is `Random` or unset (the default); evaluate with
/// `SetExplorationType guard(ExplorationType::Deterministic);`.

#include <algorithm>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <ATen/CPUGeneratorImpl.h>
#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/modules/exploration_type.h"
#include "rlobj/modules/tensordict_module.h"
#include "rlobj/specs.h"
#include "rlobj/tensordict.h"

namespace rlobj {
namespace modules {

namespace detail {

/// Shared plumbing of the noise modules: the action spec, a private seeded generator whose
/// state is saved with the module, and TorchRL's float32 annealing.
class NoiseModuleBase : public TensorDictModuleBase {
 public:
  const std::vector<NestedKey>& in_keys() const override { return in_keys_; }
  const std::vector<NestedKey>& out_keys() const override { return out_keys_; }
  const TensorSpec& spec() const { return *spec_; }
  /// The generator the noise is drawn from.
  at::Generator& generator() noexcept { return generator_; }

  void save(torch::serialize::OutputArchive& archive) const override {
    generator_state_.set_(generator_.get_state());
    torch::nn::Module::save(archive);
  }
  void load(torch::serialize::InputArchive& archive) override {
    torch::nn::Module::load(archive);
    generator_.set_state(generator_state_);
  }

 protected:
  NoiseModuleBase(const TensorSpec& spec, NestedKey action_key, std::optional<uint64_t> seed)
      : spec_(spec.clone()),
        // Unseeded: the seed comes from the global generator, so torch::manual_seed governs it.
        generator_(at::make_generator<at::CPUGeneratorImpl>(
            seed ? *seed
                 : static_cast<uint64_t>(torch::randint(0, std::numeric_limits<int64_t>::max(), {1},
                                                        torch::kInt64)
                                             .item<int64_t>()))) {
    generator_state_ = register_buffer("generator_state", generator_.get_state());
    in_keys_ = {action_key};
    out_keys_ = {std::move(action_key)};
  }

  /// Standard normal noise of `like`'s shape, drawn on the CPU generator, moved to `like`.
  torch::Tensor randn_like(const torch::Tensor& like) {
    auto n = torch::randn(like.sizes(), generator_, torch::TensorOptions().dtype(like.scalar_type()));
    return like.device().is_cpu() ? n : n.to(like.device());
  }

  /// `value` annealed `frames` times towards `end` by `(init - end) / num_steps`, in float32
  /// as TorchRL's buffers are.
  static float anneal(float value, float init, float end, int64_t num_steps, int64_t frames) {
    if (num_steps <= 0) return value;
    const float delta = (init - end) / static_cast<float>(num_steps);
    for (int64_t i = 0; i < frames && value > end; ++i) value = std::max(end, value - delta);
    return value;
  }

  torch::Tensor project(const torch::Tensor& action) const { return spec_->project(action); }

  std::shared_ptr<TensorSpec> spec_;
  at::Generator generator_;
  mutable torch::Tensor generator_state_;
  std::vector<NestedKey> in_keys_;
  std::vector<NestedKey> out_keys_;
};

}  // namespace detail

/// Options of `AdditiveGaussianModule` (TorchRL's names and defaults).
struct AdditiveGaussianModuleOptions {
  /// Initial noise scale.
  TORCH_ARG(double, sigma_init) = 1.0;
  /// Final noise scale.
  TORCH_ARG(double, sigma_end) = 0.1;
  /// Number of `step()` frames to go from `sigma_init` to `sigma_end`.
  TORCH_ARG(int64_t, annealing_num_steps) = 1000;
  /// Mean of the unscaled noise.
  TORCH_ARG(double, mean) = 0.0;
  /// Standard deviation of the unscaled noise.
  TORCH_ARG(double, std) = 1.0;
  /// Where the action is read and written.
  TORCH_ARG(NestedKey, action_key) = "action";
  /// Seed of the module's generator (default: drawn from the global generator).
  TORCH_ARG(std::optional<uint64_t>, seed) = std::nullopt;
};

/// Adds `sigma * N(mean, std)` to the action and projects it into the action spec (TorchRL's
/// `AdditiveGaussianModule`). `step(frames)` anneals `sigma` linearly to `sigma_end`.
class AdditiveGaussianModuleImpl : public detail::NoiseModuleBase {
 public:
  /// Noise for actions of `spec` (noisy actions are projected into it); throws
  /// `c10::ValueError` on a bad option, before any generator draws.
  AdditiveGaussianModuleImpl(const TensorSpec& spec, AdditiveGaussianModuleOptions options = {})
      // checked() runs first: a rejected option leaves even the global generator untouched.
      : NoiseModuleBase(spec, checked(options).action_key(), options.seed()), options(std::move(options)) {
    sigma_ = register_buffer("sigma", torch::tensor(static_cast<float>(this->options.sigma_init())));
  }

  /// The options' checks (every number finite; the rest as below); returns `o`.
  static const AdditiveGaussianModuleOptions& checked(const AdditiveGaussianModuleOptions& o) {
    constexpr const char* where = "AdditiveGaussianModuleOptions";
    for (auto [name, v] : {std::pair<const char*, double>{"sigma_init", o.sigma_init()}, {"sigma_end", o.sigma_end()},
                           {"mean", o.mean()}, {"std", o.std()}}) {
      TORCH_CHECK_VALUE(std::isfinite(v), where, ": ", name, " must be finite, got ", v);
    }
    TORCH_CHECK_VALUE(o.sigma_end() <= o.sigma_init(), where, ": sigma should decrease over time or be constant "
                      "(sigma_init ", o.sigma_init(), " < sigma_end ", o.sigma_end(), ")");
    TORCH_CHECK_VALUE(o.std() >= 0, where, ": std must be >= 0, got ", o.std());
    TORCH_CHECK_VALUE(o.annealing_num_steps() > 0, where, ": annealing_num_steps must be positive, got ",
                      o.annealing_num_steps());
    return o;
  }

  TensorDict forward(TensorDict td) override {
    if (exploration_type() != ExplorationType::Random) return td;
    const NestedKey& key = in_keys_.front();
    const torch::Tensor* action = td.find(key);
    TORCH_CHECK(action != nullptr, "AdditiveGaussianModule: no \"", key.str(), "\" in the TensorDict; put the "
                "module after the actor");
    auto noise = randn_like(*action) * options.std() + options.mean();
    td.set(key, project(*action + noise * sigma_.to(action->device())));
    return td;
  }

  /// Anneals sigma by `frames` steps.
  void step(int64_t frames = 1) {
    TORCH_CHECK_VALUE(frames >= 0, "AdditiveGaussianModule.step: frames must be >= 0");
    sigma_.fill_(anneal(sigma_.item<float>(), static_cast<float>(options.sigma_init()),
                        static_cast<float>(options.sigma_end()), options.annealing_num_steps(), frames));
  }
  /// The current noise scale.
  double sigma() const { return sigma_.item<double>(); }

  /// The options the module was built with.
  AdditiveGaussianModuleOptions options;

 private:
  torch::Tensor sigma_;
};

/// Holder of `AdditiveGaussianModuleImpl`.
TORCH_MODULE(AdditiveGaussianModule);

/// Options of `OrnsteinUhlenbeckProcessModule` (TorchRL's names and defaults).
struct OrnsteinUhlenbeckProcessModuleOptions {
  /// Initial weight of the noise.
  TORCH_ARG(double, eps_init) = 1.0;
  /// Final weight of the noise.
  TORCH_ARG(double, eps_end) = 0.1;
  /// Number of `step()` frames to go from `eps_init` to `eps_end`.
  TORCH_ARG(int64_t, annealing_num_steps) = 1000;
  /// Rate of mean reversion.
  TORCH_ARG(double, theta) = 0.15;
  /// The mean the noise reverts to.
  TORCH_ARG(double, mu) = 0.0;
  /// Scale of the random term (its starting value when `sigma_min` is set).
  TORCH_ARG(double, sigma) = 0.2;
  /// Time step of the process.
  TORCH_ARG(double, dt) = 1e-2;
  /// With a value, sigma decreases linearly per environment step from `sigma` to it over
  /// `n_steps_annealing` steps.
  TORCH_ARG(std::optional<double>, sigma_min) = std::nullopt;
  /// Environment steps over which sigma goes from `sigma` to `sigma_min`.
  TORCH_ARG(int64_t, n_steps_annealing) = 1000;
  /// Where the action is read and written.
  TORCH_ARG(NestedKey, action_key) = "action";
  /// The flag that resets a sub-environment's noise (written by every rlobj environment).
  TORCH_ARG(NestedKey, is_init_key) = "is_init";
  /// Seed of the module's generator (default: drawn from the global generator).
  TORCH_ARG(std::optional<uint64_t>, seed) = std::nullopt;
};

/// Temporally correlated noise (TorchRL's `OrnsteinUhlenbeckProcessModule`):
/// `n <- n + theta (mu - n) dt + sigma_t sqrt(dt) N(0, 1)`, added as `action + eps * n` and
/// projected into the action spec. The per-environment noise state lives in the TensorDict
/// (`_ou_prev_noise`, `_ou_steps`) and restarts from zero wherever `is_init` is true.
class OrnsteinUhlenbeckProcessModuleImpl : public detail::NoiseModuleBase {
 public:
  /// Noise for actions of `spec` (noisy actions are projected into it); throws
  /// `c10::ValueError` on a bad option, before any generator draws.
  OrnsteinUhlenbeckProcessModuleImpl(const TensorSpec& spec, OrnsteinUhlenbeckProcessModuleOptions options = {})
      // checked() runs first: a rejected option leaves even the global generator untouched.
      : NoiseModuleBase(spec, checked(options).action_key(), options.seed()), options(std::move(options)) {
    const auto& o = this->options;
    eps_ = register_buffer("eps", torch::tensor(static_cast<float>(o.eps_init())));
    out_keys_ = {o.action_key(), kNoiseKey, kStepsKey};
  }

  /// The options' checks (every number finite; the rest as below); returns `o`.
  static const OrnsteinUhlenbeckProcessModuleOptions& checked(const OrnsteinUhlenbeckProcessModuleOptions& o) {
    constexpr const char* where = "OrnsteinUhlenbeckProcessModuleOptions";
    for (auto [name, v] : {std::pair<const char*, double>{"eps_init", o.eps_init()}, {"eps_end", o.eps_end()},
                           {"theta", o.theta()}, {"mu", o.mu()}, {"sigma", o.sigma()}, {"dt", o.dt()},
                           {"sigma_min", o.sigma_min().value_or(0.0)}}) {
      TORCH_CHECK_VALUE(std::isfinite(v), where, ": ", name, " must be finite, got ", v);
    }
    TORCH_CHECK_VALUE(o.eps_end() <= o.eps_init(), where, ": eps should decrease over time or be constant "
                      "(eps_init ", o.eps_init(), " < eps_end ", o.eps_end(), ")");
    TORCH_CHECK_VALUE(o.dt() > 0, where, ": dt must be positive, got ", o.dt());
    TORCH_CHECK_VALUE(o.theta() >= 0, where, ": theta must be >= 0, got ", o.theta());
    TORCH_CHECK_VALUE(o.sigma() >= 0, where, ": sigma must be >= 0, got ", o.sigma());
    TORCH_CHECK_VALUE(o.sigma_min().value_or(0.0) >= 0, where, ": sigma_min must be >= 0, got ", *o.sigma_min());
    TORCH_CHECK_VALUE(o.n_steps_annealing() > 0, where, ": n_steps_annealing must be positive, got ",
                      o.n_steps_annealing());
    TORCH_CHECK_VALUE(o.annealing_num_steps() > 0, where, ": annealing_num_steps must be positive, got ",
                      o.annealing_num_steps());
    return o;
  }

  /// Key of the per-environment noise state.
  static constexpr const char* kNoiseKey = "_ou_prev_noise";
  /// Key of the per-environment step counter.
  static constexpr const char* kStepsKey = "_ou_steps";

  TensorDict forward(TensorDict td) override {
    if (exploration_type() != ExplorationType::Random) return td;
    const auto& o = options;
    const NestedKey& key = in_keys_.front();
    const torch::Tensor* action_ptr = td.find(key);
    TORCH_CHECK(action_ptr != nullptr, "OrnsteinUhlenbeckProcessModule: no \"", key.str(),
                "\" in the TensorDict; put the module after the actor");
    const torch::Tensor action = *action_ptr;
    torch::Tensor noise, steps;
    if (const torch::Tensor* s = td.find(kStepsKey)) {
      noise = td.get(kNoiseKey);
      steps = *s;
    } else {
      noise = torch::zeros_like(action);
      steps = torch::zeros(td.batch_size(), torch::TensorOptions().dtype(torch::kLong).device(action.device()));
    }
    if (const torch::Tensor* is_init = td.find(o.is_init_key())) {
      torch::Tensor init = *is_init;
      if (init.dim() > td.batch_dims() && init.size(-1) == 1) init = init.squeeze(-1);
      TORCH_CHECK(init.sizes() == c10::IntArrayRef(td.batch_size()), "OrnsteinUhlenbeckProcessModule: \"",
                  o.is_init_key().str(), "\" has shape ", rlobj::detail::shape_str(is_init->sizes()),
                  ", not compatible with the batch_size ", rlobj::detail::shape_str(td.batch_size()));
      auto noise_mask = init.reshape(extended_shape(init, noise.dim()));
      noise = noise.masked_fill(noise_mask, 0);
      steps = steps.masked_fill(init, 0);
    }
    auto steps_like_noise = steps.reshape(extended_shape(steps, noise.dim())).to(noise.scalar_type());
    torch::Tensor sigma = o.sigma_min()
                              ? (steps_like_noise * (-(o.sigma() - *o.sigma_min()) / static_cast<double>(o.n_steps_annealing())) +
                                 o.sigma())
                                    .clamp_min(*o.sigma_min())
                              : torch::full_like(noise, o.sigma());
    noise = noise + o.theta() * (o.mu() - noise) * o.dt() + sigma * std::sqrt(o.dt()) * randn_like(noise);
    td.set(kNoiseKey, noise);
    td.set(kStepsKey, steps + 1);
    td.set(key, project(action + eps_.to(action.device()) * noise));
    return td;
  }

  /// Anneals eps by `frames` steps.
  void step(int64_t frames = 1) {
    TORCH_CHECK_VALUE(frames >= 0, "OrnsteinUhlenbeckProcessModule.step: frames must be >= 0");
    eps_.fill_(anneal(eps_.item<float>(), static_cast<float>(options.eps_init()),
                      static_cast<float>(options.eps_end()), options.annealing_num_steps(), frames));
  }
  /// The current weight of the noise.
  double eps() const { return eps_.item<double>(); }

  /// The options the module was built with.
  OrnsteinUhlenbeckProcessModuleOptions options;

 private:
  static std::vector<int64_t> extended_shape(const torch::Tensor& t, int64_t dims) {
    std::vector<int64_t> s = t.sizes().vec();
    s.resize(static_cast<size_t>(std::max<int64_t>(dims, t.dim())), 1);
    return s;
  }

  torch::Tensor eps_;
};

/// Holder of `OrnsteinUhlenbeckProcessModuleImpl`.
TORCH_MODULE(OrnsteinUhlenbeckProcessModule);

/// Options of `EGreedyModule` (TorchRL's names and defaults).
struct EGreedyModuleOptions {
  /// Initial probability of a random action.
  TORCH_ARG(double, eps_init) = 1.0;
  /// Final probability of a random action.
  TORCH_ARG(double, eps_end) = 0.1;
  /// Number of `step()` frames to go from `eps_init` to `eps_end`.
  TORCH_ARG(int64_t, annealing_num_steps) = 1000;
  /// Where the action is read and written.
  TORCH_ARG(NestedKey, action_key) = "action";
  /// Optional bool mask `[*batch, n]` of the allowed actions: random actions are drawn among
  /// them only.
  TORCH_ARG(std::optional<NestedKey>, action_mask_key) = std::nullopt;
  /// Seed of the module's generator (default: drawn from the global generator).
  TORCH_ARG(std::optional<uint64_t>, seed) = std::nullopt;
};

/// Epsilon-greedy exploration for discrete actions (TorchRL's `EGreedyModule`): with
/// probability `eps`, independently per batch element, the action is replaced by a uniform
/// draw from the action spec (`OneHot` or `Categorical`). Only while the exploration type is
/// `Random` or unset; `step(frames)` anneals `eps` linearly (float32, as TorchRL's buffer) from
/// `eps_init` to `eps_end`. Put it after a `QValueActor`: `TensorDictSequential(qnet, egreedy)`.
class EGreedyModuleImpl : public detail::NoiseModuleBase {
 public:
  /// Random actions drawn from `spec` (`OneHot` or `Categorical`); throws `c10::ValueError` on
  /// a bad option, before any generator draws.
  EGreedyModuleImpl(const TensorSpec& spec, EGreedyModuleOptions options = {})
      // checked() runs first: a rejected option leaves even the global generator untouched.
      : NoiseModuleBase(spec, checked(options).action_key(), options.seed()), options(std::move(options)) {
    eps_ = register_buffer("eps", torch::tensor(static_cast<float>(this->options.eps_init())));
    if (this->options.action_mask_key()) in_keys_.push_back(*this->options.action_mask_key());
  }

  /// The options' checks; returns `o`.
  static const EGreedyModuleOptions& checked(const EGreedyModuleOptions& o) {
    constexpr const char* where = "EGreedyModuleOptions";
    TORCH_CHECK_VALUE(std::isfinite(o.eps_init()) && o.eps_init() >= 0 && o.eps_init() <= 1, where,
                      ": eps_init must be in [0, 1], got ", o.eps_init());
    TORCH_CHECK_VALUE(std::isfinite(o.eps_end()) && o.eps_end() >= 0 && o.eps_end() <= 1, where,
                      ": eps_end must be in [0, 1], got ", o.eps_end());
    TORCH_CHECK_VALUE(o.eps_end() <= o.eps_init(), where, ": eps should decrease over time or be constant "
                      "(eps_init ", o.eps_init(), " < eps_end ", o.eps_end(), ")");
    TORCH_CHECK_VALUE(o.annealing_num_steps() > 0, where, ": annealing_num_steps must be positive, got ",
                      o.annealing_num_steps());
    return o;
  }

  TensorDict forward(TensorDict td) override {
    if (exploration_type() != ExplorationType::Random) return td;
    const NestedKey& key = in_keys_.front();
    const torch::Tensor* found = td.find(key);
    TORCH_CHECK(found != nullptr, "EGreedyModule: no \"", key.str(), "\" in the TensorDict; put the module after "
                "the Q-value actor");
    const torch::Tensor action = *found;
    const auto& spec_shape = spec_->shape();
    int64_t event_dims = static_cast<int64_t>(spec_shape.size());
    // A spec of the whole batch (an env's `action_spec()`, e.g. [N, 2]) is accepted as in
    // TorchRL: its trailing dims past the TensorDict's batch dims describe one action.
    const bool whole_batch = action.sizes() == c10::IntArrayRef(spec_shape) && action.dim() >= td.batch_dims() &&
                             event_dims > 0 && td.batch_dims() > 0;
    if (whole_batch) event_dims = action.dim() - td.batch_dims();
    TORCH_CHECK_VALUE(action.dim() >= event_dims &&
                          (whole_batch ||
                           action.sizes().slice(static_cast<size_t>(action.dim() - event_dims)) == c10::IntArrayRef(spec_shape)),
                      "EGreedyModule: \"", key.str(), "\" has shape ", rlobj::detail::shape_str(action.sizes()),
                      " but the action spec's shape is ", rlobj::detail::shape_str(spec_shape),
                      "; give the spec of one action (or of the whole batch)");
    const auto batch = action.sizes().slice(0, static_cast<size_t>(action.dim() - event_dims));
    TORCH_CHECK_VALUE(batch.size() >= td.batch_size().size() &&
                          batch.slice(0, td.batch_size().size()) == c10::IntArrayRef(td.batch_size()),
                      "EGreedyModule: \"", key.str(), "\" has shape ", rlobj::detail::shape_str(action.sizes()),
                      ", which does not start with the batch_size ", rlobj::detail::shape_str(td.batch_size()),
                      " (the action spec's shape is ", rlobj::detail::shape_str(spec_shape), ")");
    // One coin per batch element (TorchRL: torch.rand(td.shape) < eps), spread over the action.
    torch::Tensor cond = torch::rand(td.batch_size(), generator_, torch::TensorOptions()) < eps_.item<float>();
    std::vector<int64_t> view = cond.sizes().vec();
    view.resize(static_cast<size_t>(action.dim()), 1);
    cond = cond.view(view).to(action.device());
    torch::Tensor random =
        (whole_batch && !options.action_mask_key() ? spec_->rand({}, generator_) : random_actions(td, batch, event_dims))
            .to(action.device(), action.scalar_type());
    td.set(key, torch::where(cond, random, action));
    return td;
  }

  /// Anneals eps by `frames` steps.
  void step(int64_t frames = 1) {
    TORCH_CHECK_VALUE(frames >= 0, "EGreedyModule.step: frames must be >= 0");
    eps_.fill_(anneal(eps_.item<float>(), static_cast<float>(options.eps_init()),
                      static_cast<float>(options.eps_end()), options.annealing_num_steps(), frames));
  }
  /// The current probability of a random action.
  double eps() const { return eps_.item<double>(); }

  /// The options the module was built with.
  EGreedyModuleOptions options;

 private:
  torch::Tensor random_actions(const TensorDict& td, c10::IntArrayRef batch, int64_t event_dims) {
    if (!options.action_mask_key()) return spec_->rand(batch, generator_);
    const torch::Tensor* mask = td.find(*options.action_mask_key());
    TORCH_CHECK(mask != nullptr, "EGreedyModule: action mask key \"", options.action_mask_key()->str(), "\" not found");
    TORCH_CHECK_TYPE(mask->scalar_type() == torch::kBool, "EGreedyModule: the action mask must be bool, got ",
                     rlobj::detail::dtype_str(mask->scalar_type()));
    TORCH_CHECK_VALUE(mask->dim() == static_cast<int64_t>(batch.size()) + 1 &&
                          mask->sizes().slice(0, batch.size()) == batch,
                      "EGreedyModule: the action mask has shape ", rlobj::detail::shape_str(mask->sizes()),
                      "; expected the action's batch dims ", rlobj::detail::shape_str(batch), " then one flag per action");
    TORCH_CHECK_VALUE(mask->any(-1).all().item<bool>(), "EGreedyModule: the action mask allows no action in some row");
    const int64_t n = mask->size(-1);
    torch::Tensor index = torch::multinomial(mask->reshape({-1, n}).to(torch::kCPU, torch::kFloat), 1, false, generator_)
                              .view(mask->sizes().slice(0, mask->dim() - 1));
    if (event_dims == 0) return index.to(spec_->dtype());  // categorical
    return torch::one_hot(index, n).to(spec_->dtype());
  }

  torch::Tensor eps_;
};

/// Holder of `EGreedyModuleImpl`.
TORCH_MODULE(EGreedyModule);

}  // namespace modules
}  // namespace rlobj
