#pragma once

/// \file
/// Distributions of stochastic policies, as TorchRL 0.4 builds them on `torch.distributions`
/// (PyTorch 1.13's arithmetic, op for op, so that seeded runs reproduce TorchRL's numbers):
///
/// * `Delta` (a deterministic "distribution": TorchRL's `Delta`);
/// * `Normal` and `IndependentNormal` (diagonal Gaussian, log-probabilities summed over the
///   event dims);
/// * `TanhNormal` (a Gaussian squashed by `tanh` into `[low, high]`, TorchRL's);
/// * `Categorical` (integer outcomes) and `OneHotCategorical` (one-hot outcomes, TorchRL's,
///   with its pass-through reparameterised sample);
/// * `NormalParamExtractor`, the module that splits a network's output into `loc` and a
///   positive `scale` (tensordict's, with its biased softplus).
///
/// Every sample comes from LibTorch's default generator, with TorchRL's calls: a reparameterised
/// Gaussian sample is one `torch::empty(shape).normal_()` then `loc + eps * scale`, so that
/// `torch::manual_seed(s)` followed by the same calls gives TorchRL's draws. `rsample_with(eps)`
/// applies the same arithmetic to standard normals the caller supplies.
///
/// Shapes follow `torch.distributions`: a sample has shape `sample_shape + batch_shape +
/// event_shape`; `log_prob(x)` takes such a tensor (the trailing dims must equal
/// `batch_shape + event_shape` exactly: nothing is broadcast) and returns
/// `sample_shape + batch_shape`. What a distribution does not define (`TanhNormal::mean`,
/// `Delta::entropy`, ...) throws `c10::NotImplementedError`.

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <torch/arg.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/functional/activation.h>
#include <torch/nn/pimpl.h>
#include <torch/serialize/archive.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "rlobj/detail/format.h"
#include "rlobj/specs.h"

namespace rlobj {
namespace modules {

/// Base of rlobj's distributions (`torch.distributions.Distribution`'s interface).
class Distribution {
 public:
  virtual ~Distribution() = default;

  /// The class name, for messages (`"TanhNormal"`).
  virtual const char* name() const = 0;
  /// Whether `rsample` exists (reparameterised, differentiable samples).
  virtual bool has_rsample() const { return false; }
  /// A sample of shape `sample_shape + batch_shape + event_shape`, without gradient.
  virtual torch::Tensor sample(c10::IntArrayRef sample_shape = {}) const {
    torch::NoGradGuard no_grad;
    return rsample(sample_shape);
  }
  /// A reparameterised sample (gradients flow to the parameters).
  virtual torch::Tensor rsample(c10::IntArrayRef /*sample_shape*/ = {}) const { not_defined("rsample"); }
  /// Log-density (or log-mass) of `value`, shape `sample_shape + batch_shape`.
  virtual torch::Tensor log_prob(const torch::Tensor& value) const = 0;
  /// The mode.
  virtual torch::Tensor mode() const { not_defined("mode"); }
  /// The mean.
  virtual torch::Tensor mean() const { not_defined("mean"); }
  /// The entropy, shape `batch_shape`.
  virtual torch::Tensor entropy() const { not_defined("entropy"); }
  /// What `ExplorationType::Deterministic` takes: the mode unless a distribution says otherwise.
  virtual torch::Tensor deterministic_sample() const { return mode(); }

  /// The batch shape: the parameters' shape without the event dims.
  const std::vector<int64_t>& batch_shape() const noexcept { return batch_shape_; }
  /// The shape of one event (a sample's trailing dims).
  const std::vector<int64_t>& event_shape() const noexcept { return event_shape_; }

 protected:
  /// Throws `c10::NotImplementedError`: this distribution does not define `what`.
  [[noreturn]] void not_defined(const char* what) const {
    C10_THROW_ERROR(NotImplementedError, c10::str(name(), " does not define ", what));
  }

  /// `sample_shape + batch_shape + event_shape`.
  std::vector<int64_t> extended_shape(c10::IntArrayRef sample_shape) const {
    std::vector<int64_t> shape(sample_shape.begin(), sample_shape.end());
    shape.insert(shape.end(), batch_shape_.begin(), batch_shape_.end());
    shape.insert(shape.end(), event_shape_.begin(), event_shape_.end());
    return shape;
  }

  /// Checks that `value`'s trailing dims are `batch_shape + event_shape` (no broadcasting).
  void check_value(const torch::Tensor& value, const char* what = "log_prob") const {
    std::vector<int64_t> tail = batch_shape_;
    tail.insert(tail.end(), event_shape_.begin(), event_shape_.end());
    const auto n = static_cast<int64_t>(tail.size());
    TORCH_CHECK_VALUE(value.defined() && value.dim() >= n &&
                          value.sizes().slice(static_cast<size_t>(value.dim() - n)) == c10::IntArrayRef(tail),
                      name(), ".", what, ": expected a value whose last dims are batch_shape + event_shape ",
                      rlobj::detail::shape_str(tail), ", got ",
                      value.defined() ? rlobj::detail::shape_str(value.sizes()) : std::string("an undefined tensor"));
  }

  /// Sets the shapes from a parameter: its last `event_dims` dims are the event.
  void set_shapes(const torch::Tensor& param, int64_t event_dims) {
    TORCH_CHECK_VALUE(event_dims >= 0 && event_dims <= param.dim(), name(), ": event_dims must be in [0, ",
                      param.dim(), "] for a parameter of shape ", rlobj::detail::shape_str(param.sizes()), ", got ",
                      event_dims);
    const auto split = static_cast<size_t>(param.dim() - event_dims);
    const auto sizes = param.sizes();
    batch_shape_.assign(sizes.begin(), sizes.begin() + static_cast<std::ptrdiff_t>(split));
    event_shape_.assign(sizes.begin() + static_cast<std::ptrdiff_t>(split), sizes.end());
  }

  /// Set by subclasses (`set_shapes`).
  std::vector<int64_t> batch_shape_;
  /// Set by subclasses (`set_shapes`).
  std::vector<int64_t> event_shape_;
};

/// Builds a distribution from its parameters (the tensors a `ProbabilisticActor` reads from its
/// `in_keys`, in order).
using DistributionFactory = std::function<std::shared_ptr<Distribution>(const std::vector<torch::Tensor>&)>;

namespace detail {

/// `_sum_rightmost(x, n)`: sums the last `n` dims.
inline torch::Tensor sum_rightmost(const torch::Tensor& x, int64_t n) {
  if (n <= 0) return x;
  std::vector<int64_t> shape(x.sizes().begin(), x.sizes().end() - n);
  shape.push_back(-1);
  return x.reshape(shape).sum(-1);
}

/// `torch.distributions.Normal.log_prob` (PyTorch 1.13): element-wise, in its op order.
inline torch::Tensor normal_log_prob(const torch::Tensor& value, const torch::Tensor& loc, const torch::Tensor& scale) {
  const torch::Tensor var = scale.pow(2);
  // -((value - loc) ** 2) / (2 * var) - log(scale) - log(sqrt(2 pi))
  return (-(value - loc).pow(2)) / (var * 2) - scale.log() - std::log(std::sqrt(2 * M_PI));
}

inline void check_loc_scale(const char* name, const torch::Tensor& loc, const torch::Tensor& scale) {
  TORCH_CHECK_VALUE(loc.defined() && scale.defined(), name, ": loc and scale must be defined");
  TORCH_CHECK_VALUE(loc.is_floating_point() && scale.is_floating_point(), name,
                    ": loc and scale must be floating point, got ", loc.scalar_type(), " and ", scale.scalar_type());
  TORCH_CHECK_VALUE(loc.sizes() == scale.sizes(), name, ": loc has shape ", rlobj::detail::shape_str(loc.sizes()),
                    " but scale has shape ", rlobj::detail::shape_str(scale.sizes()), " (nothing is broadcast)");
  TORCH_CHECK_VALUE(loc.scalar_type() == scale.scalar_type() && loc.device() == scale.device(), name,
                    ": loc and scale must share dtype and device");
}

}  // namespace detail

/// TorchRL's `Delta`: all the mass on `param`. `log_prob(x)` is `+inf` where `x` equals `param`
/// within `atol + rtol * |param|` over the whole event, else `-inf`. The last dim of `param` is
/// the event.
class Delta : public Distribution {
 public:
  /// All the mass on `param` (its last dim is the event); `atol` and `rtol` are `log_prob`'s
  /// tolerances.
  explicit Delta(torch::Tensor param, double atol = 1e-6, double rtol = 1e-6)
      : param_(std::move(param)), atol_(atol), rtol_(rtol) {
    TORCH_CHECK_VALUE(param_.defined() && param_.dim() >= 1, "Delta: param must have at least one dim (the event)");
    set_shapes(param_, 1);
  }
  const char* name() const override { return "Delta"; }
  bool has_rsample() const override { return true; }
  torch::Tensor sample(c10::IntArrayRef sample_shape = {}) const override {
    return rsample(sample_shape).detach();
  }
  torch::Tensor rsample(c10::IntArrayRef sample_shape = {}) const override {
    return param_.expand(extended_shape(sample_shape));
  }
  torch::Tensor log_prob(const torch::Tensor& value) const override {
    check_value(value);
    const torch::Tensor param = param_.expand_as(value);
    const torch::Tensor equal = ((value - param).abs() < param.abs() * rtol_ + atol_).all(-1);
    return torch::where(equal, torch::full({}, std::numeric_limits<double>::infinity(), value.options()),
                        torch::full({}, -std::numeric_limits<double>::infinity(), value.options()));
  }
  torch::Tensor mode() const override { return param_; }
  torch::Tensor mean() const override { return param_; }
  /// The point the mass sits on.
  const torch::Tensor& param() const noexcept { return param_; }

  /// For `ProbabilisticActor`: one parameter, `param`.
  static DistributionFactory factory(double atol = 1e-6, double rtol = 1e-6) {
    return [atol, rtol](const std::vector<torch::Tensor>& p) -> std::shared_ptr<Distribution> {
      TORCH_CHECK_VALUE(p.size() == 1, "Delta: expects 1 parameter (param), got ", p.size());
      return std::make_shared<Delta>(p[0], atol, rtol);
    };
  }

 private:
  torch::Tensor param_;
  double atol_, rtol_;
};

/// A diagonal Gaussian whose last `event_dims` dims are one event
/// (`torch.distributions.Independent(Normal(loc, scale), event_dims)`, TorchRL's
/// `IndependentNormal` with `event_dims = 1`). `loc` and `scale` must have the same shape;
/// `scale` is not checked for positivity (that would read it back to the host on every call).
class IndependentNormal : public Distribution {
 public:
  /// From `loc` and `scale` of the same shape; their last `event_dims` dims are the event.
  IndependentNormal(torch::Tensor loc, torch::Tensor scale, int64_t event_dims = 1)
      : loc_(std::move(loc)), scale_(std::move(scale)), event_dims_(event_dims) {
    detail::check_loc_scale(name(), loc_, scale_);
    set_shapes(loc_, event_dims_);
  }
  const char* name() const override { return event_dims_ == 0 ? "Normal" : "IndependentNormal"; }
  bool has_rsample() const override { return true; }
  /// `loc + eps * scale`, `eps = torch::empty(shape).normal_()` (one draw from the default
  /// generator, as PyTorch's `Normal.rsample`).
  torch::Tensor rsample(c10::IntArrayRef sample_shape = {}) const override {
    return rsample_with(torch::empty(extended_shape(sample_shape), loc_.options()).normal_());
  }
  /// `loc + eps * scale` for given standard normals `eps` (shape `sample_shape + batch_shape +
  /// event_shape`).
  torch::Tensor rsample_with(const torch::Tensor& eps) const {
    check_value(eps, "rsample_with");
    return loc_ + eps * scale_;
  }
  torch::Tensor log_prob(const torch::Tensor& value) const override {
    check_value(value);
    return detail::sum_rightmost(detail::normal_log_prob(value, loc_, scale_), event_dims_);
  }
  torch::Tensor mode() const override { return loc_; }
  torch::Tensor mean() const override { return loc_; }
  /// `sum(0.5 + 0.5 log(2 pi) + log(scale))` over the event.
  torch::Tensor entropy() const override {
    return detail::sum_rightmost(scale_.log() + (0.5 + 0.5 * std::log(2 * M_PI)), event_dims_);
  }
  /// The location (the mean).
  const torch::Tensor& loc() const noexcept { return loc_; }
  /// The standard deviation.
  const torch::Tensor& scale() const noexcept { return scale_; }

  /// For `ProbabilisticActor`: two parameters, `loc` and `scale`.
  static DistributionFactory factory(int64_t event_dims = 1) {
    return [event_dims](const std::vector<torch::Tensor>& p) -> std::shared_ptr<Distribution> {
      TORCH_CHECK_VALUE(p.size() == 2, "IndependentNormal: expects 2 parameters (loc, scale), got ", p.size());
      return std::make_shared<IndependentNormal>(p[0], p[1], event_dims);
    };
  }

 private:
  torch::Tensor loc_, scale_;
  int64_t event_dims_;
};

/// A univariate Gaussian per element (`torch.distributions.Normal`): `IndependentNormal` with
/// no event dims.
class Normal : public IndependentNormal {
 public:
  /// From `loc` and `scale` of the same shape; every element is its own event.
  Normal(torch::Tensor loc, torch::Tensor scale) : IndependentNormal(std::move(loc), std::move(scale), 0) {}
  /// For `ProbabilisticActor`: two parameters, `loc` and `scale`.
  static DistributionFactory factory() { return IndependentNormal::factory(0); }
};

/// Options of `TanhNormal`, with TorchRL's names and defaults.
struct TanhNormalOptions {
  /// Lower bound (a tensor broadcastable to the event; undefined: -1).
  TORCH_ARG(torch::Tensor, low);
  /// Upper bound (undefined: 1).
  TORCH_ARG(torch::Tensor, high);
  /// With `tanh_loc`, `loc` becomes `tanh(loc / upscale) * upscale`.
  TORCH_ARG(double, upscale) = 5.0;
  /// Squash `loc` with `tanh(loc / upscale) * upscale` (TorchRL's `tanh_loc`).
  TORCH_ARG(bool, tanh_loc) = false;
  /// How many trailing dims form one event.
  TORCH_ARG(int64_t, event_dims) = 1;

 public:
  /// The bounds of a `Bounded` action spec.
  static TanhNormalOptions from_spec(const TensorSpec& spec) {
    const auto [low, high] = rlobj::detail::action_bounds(spec, "TanhNormal");
    return TanhNormalOptions().low(low).high(high);
  }
};

/// TorchRL 0.4's `TanhNormal`: `a = m + s * safe_tanh(x)`, ``x ~ N(loc', scale)`` per event,
/// with `m = (high + low) / 2`, `s = (high - low) / 2`, and the Gaussian's location
/// ``loc' = (loc + s) + low`` — which is `loc` up to float rounding, and is what TorchRL computes
/// (the reference numbers depend on that rounding). With the default bounds (-1, 1) there is no
/// affine map and ``loc' = loc``. `safe_tanh` clamps to `±(1 - resolution)` of the dtype
/// (`torch.finfo(dtype).resolution`: `1e-6` for float32, `1e-15` for float64, `1e-3` for
/// float16, `1e-2` for bfloat16), so the sample is invertible.
///
/// `log_prob(a)` inverts the sample again (`x = atanh(clamp((a - m) / s))`, not a cached `x`)
/// and subtracts the log-Jacobian `2 (log 2 - x - softplus(-2 x)) + log s`, as PyTorch's
/// `TransformedDistribution`. `mode()` is the squashed location; there is no `mean()` and no
/// `entropy()` (TorchRL's SAC estimates the entropy from `-log_prob`).
class TanhNormal : public Distribution {
 public:
  /// From `loc` and `scale` of the same shape; bounds and options from `options`.
  TanhNormal(torch::Tensor loc, torch::Tensor scale, TanhNormalOptions options = {})
      : TanhNormal(std::move(loc), std::move(scale), prepare(options)) {}
  const char* name() const override { return "TanhNormal"; }
  bool has_rsample() const override { return true; }
  torch::Tensor rsample(c10::IntArrayRef sample_shape = {}) const override {
    return rsample_with(torch::empty(extended_shape(sample_shape), base_loc_.options()).normal_());
  }
  /// The sample for given standard normals `eps`: ``squash(loc' + eps * scale)``.
  torch::Tensor rsample_with(const torch::Tensor& eps) const {
    check_value(eps, "rsample_with");
    return squash(base_loc_ + eps * scale_);
  }
  torch::Tensor log_prob(const torch::Tensor& value) const override {
    check_value(value);
    // Inverse of the transform: affine, then safe atanh.
    torch::Tensor x = affine_scale_.defined() ? (value - affine_loc_) / affine_scale_ : value;
    x = x.clamp(-lim_, lim_).atanh();
    // log|det J| of tanh (PyTorch's TanhTransform), plus that of the affine map.
    torch::Tensor ladj = ((std::log(2.0) - x) - torch::nn::functional::softplus(x * -2.0)) * 2.0;
    if (affine_scale_.defined()) ladj = ladj + affine_scale_.abs().log().expand(x.sizes());
    const int64_t n = options_.event_dims();
    torch::Tensor lp = -detail::sum_rightmost(ladj, n);  // 0.0 - sum: exact negation
    return lp + detail::sum_rightmost(detail::normal_log_prob(x, base_loc_, scale_), n);
  }
  /// ``squash(loc')``.
  torch::Tensor mode() const override { return squash(base_loc_); }
  /// The Gaussian's location after TorchRL's shift (``loc'``).
  const torch::Tensor& base_loc() const noexcept { return base_loc_; }
  /// The Gaussian's scale.
  const torch::Tensor& scale() const noexcept { return scale_; }
  /// The affine map's location `(high + low) / 2`; undefined with the bounds (-1, 1).
  const torch::Tensor& affine_loc() const noexcept { return affine_loc_; }
  /// The affine map's scale `(high - low) / 2`; undefined with the bounds (-1, 1).
  const torch::Tensor& affine_scale() const noexcept { return affine_scale_; }
  /// The lower bound `low` (the location's shift adds it); undefined with the bounds (-1, 1).
  const torch::Tensor& low() const noexcept { return low_; }
  /// The options it was made with.
  const TanhNormalOptions& options() const noexcept { return options_; }
  /// `1 - resolution(dtype)`: samples and inverted samples are clamped to `±limit()`.
  double limit() const noexcept { return lim_; }

  /// For `ProbabilisticActor`: two parameters, `loc` and `scale`. The bounds are checked once,
  /// here, not at every call (which would read them back to the host each time).
  static DistributionFactory factory(TanhNormalOptions options = {}) {
    return [prepared = prepare(options)](const std::vector<torch::Tensor>& p) -> std::shared_ptr<Distribution> {
      TORCH_CHECK_VALUE(p.size() == 2, "TanhNormal: expects 2 parameters (loc, scale), got ", p.size());
      return std::shared_ptr<TanhNormal>(new TanhNormal(p[0], p[1], prepared));
    };
  }

  /// `torch.finfo(dtype).resolution`.
  static double resolution(torch::ScalarType dtype) {
    switch (dtype) {
      case torch::kFloat64: return 1e-15;
      case torch::kFloat16: return 1e-3;
      case torch::kBFloat16: return 1e-2;
      default: return 1e-6;
    }
  }

 private:
  // The options, checked, with the affine map's tensors when the bounds are not (-1, 1).
  struct Prepared {
    TanhNormalOptions options;
    torch::Tensor affine_loc, affine_scale, low;  // undefined without an affine map
  };

  static Prepared prepare(const TanhNormalOptions& options) {
    TORCH_CHECK_VALUE(options.upscale() > 0, "TanhNormal: upscale must be > 0, got ", options.upscale());
    TORCH_CHECK_VALUE(options.event_dims() >= 0, "TanhNormal: event_dims must be >= 0, got ", options.event_dims());
    Prepared p{options, {}, {}, {}};
    torch::Tensor low = options.low(), high = options.high();
    if (!low.defined() && !high.defined()) return p;
    if (!low.defined()) low = torch::full({}, -1.0, high.options());
    if (!high.defined()) high = torch::full({}, 1.0, low.options());
    TORCH_CHECK_VALUE(low.is_floating_point() && high.is_floating_point() && torch::isfinite(low).all().item<bool>() &&
                          torch::isfinite(high).all().item<bool>(),
                      "TanhNormal: low and high must be finite floating-point bounds (an unbounded action has no "
                      "affine map into it)");
    TORCH_CHECK_VALUE((high > low).all().item<bool>(), "TanhNormal: high must be > low everywhere");
    if ((low != -1.0).any().item<bool>() || (high != 1.0).any().item<bool>()) {
      p.affine_loc = (high + low) / 2;
      p.affine_scale = (high - low) / 2;
      p.low = low;
    }
    return p;
  }

  TanhNormal(torch::Tensor loc, torch::Tensor scale, const Prepared& prepared)
      : scale_(std::move(scale)), options_(prepared.options) {
    detail::check_loc_scale(name(), loc, scale_);
    if (prepared.affine_scale.defined()) {
      // The bounds broadcast to the location, never the location to the bounds.
      const auto broadcasts = [&](const torch::Tensor& bound) {
        if (bound.dim() > loc.dim()) return false;
        for (int64_t i = 1; i <= bound.dim(); ++i) {
          if (bound.size(-i) != 1 && bound.size(-i) != loc.size(-i)) return false;
        }
        return true;
      };
      TORCH_CHECK_VALUE(broadcasts(prepared.affine_scale), name(), ": bounds of shape ",
                        rlobj::detail::shape_str(prepared.affine_scale.sizes()), " do not broadcast to loc of shape ",
                        rlobj::detail::shape_str(loc.sizes()));
      // A no-op when the bounds already have the location's dtype and device.
      affine_loc_ = prepared.affine_loc.to(loc.device(), loc.scalar_type());
      affine_scale_ = prepared.affine_scale.to(loc.device(), loc.scalar_type());
      low_ = prepared.low.to(loc.device(), loc.scalar_type());
    }
    if (options_.tanh_loc()) loc = (loc / options_.upscale()).tanh() * options_.upscale();
    // TorchRL: loc = loc + (max - min) / 2 + min, evaluated left to right.
    base_loc_ = affine_scale_.defined() ? (loc + affine_scale_) + low_ : loc;
    set_shapes(base_loc_, options_.event_dims());
    lim_ = 1.0 - resolution(base_loc_.scalar_type());
  }

  torch::Tensor squash(const torch::Tensor& x) const {
    torch::Tensor t = x.tanh().clamp(-lim_, lim_);
    return affine_scale_.defined() ? affine_loc_ + affine_scale_ * t : t;
  }

  torch::Tensor base_loc_, scale_;
  torch::Tensor affine_loc_, affine_scale_, low_;  // undefined without bounds other than (-1, 1)
  TanhNormalOptions options_;
  double lim_ = 1.0 - 1e-6;
};

/// A categorical distribution over the last dim of `logits` (`torch.distributions.Categorical`):
/// outcomes are integer indices (`int64`), `batch_shape` is `logits.shape[:-1]`, there is no event
/// dim. `logits` are normalised (`logits - logsumexp(logits)`); from probabilities, `probs` are
/// normalised to sum to 1 and `logits = log(clamp(probs, eps, 1 - eps))`.
class Categorical : public Distribution {
 public:
  /// From unnormalised log-probabilities.
  explicit Categorical(const torch::Tensor& logits) { init_logits(logits); }
  /// From (unnormalised) probabilities.
  static Categorical from_probs(const torch::Tensor& probs) {
    check_param("Categorical", probs, "probs");
    // One host read: negative or NaN probabilities would give NaN logits and samples.
    TORCH_CHECK_VALUE((probs >= 0).all().item<bool>(),
                      "Categorical: probs must be >= 0 (and not NaN) everywhere");
    Categorical c;
    c.probs_ = probs / probs.sum(-1, /*keepdim=*/true);
    const double eps = probs.scalar_type() == torch::kFloat64 ? std::numeric_limits<double>::epsilon()
                                                              : std::numeric_limits<float>::epsilon();
    c.logits_ = c.probs_.clamp(eps, 1 - eps).log();
    c.finish();
    return c;
  }
  const char* name() const override { return "Categorical"; }
  /// Indices drawn with `torch::multinomial` (with replacement), shape `sample_shape + batch_shape`.
  torch::Tensor sample(c10::IntArrayRef sample_shape = {}) const override {
    torch::NoGradGuard no_grad;
    int64_t n = 1;
    for (auto s : sample_shape) n *= s;
    const torch::Tensor probs_2d = probs_.reshape({-1, num_events()});
    const torch::Tensor samples_2d = torch::multinomial(probs_2d, n, /*replacement=*/true).t();
    return samples_2d.reshape(extended_shape(sample_shape));
  }
  /// `log p(value)` for integer indices `value` (shape `sample_shape + batch_shape`). On the
  /// CPU, indices outside `[0, n)` are refused with a clear error (on accelerators that check
  /// would stall on a host sync; the gather checks them there).
  torch::Tensor log_prob(const torch::Tensor& value) const override {
    check_value(value);
    return index_log_prob(value);
  }
  /// The most likely index.
  torch::Tensor mode() const override { return probs_.argmax(-1); }
  /// `-sum(p log p)`, with `-inf` logits clamped to the dtype's lowest value (PyTorch's).
  torch::Tensor entropy() const override {
    const double lowest = logits_.scalar_type() == torch::kFloat64
                              ? std::numeric_limits<double>::lowest()
                              : static_cast<double>(std::numeric_limits<float>::lowest());
    return -(logits_.clamp_min(lowest) * probs_).sum(-1);
  }
  /// Normalised log-probabilities, shape `batch_shape + [n]`.
  const torch::Tensor& logits() const noexcept { return logits_; }
  /// Probabilities, shape `batch_shape + [n]`.
  const torch::Tensor& probs() const noexcept { return probs_; }
  /// Number of categories (the logits' last dim).
  int64_t num_events() const noexcept { return logits_.size(-1); }

  /// For `ProbabilisticActor`: one parameter, `logits`.
  static DistributionFactory factory() {
    return [](const std::vector<torch::Tensor>& p) -> std::shared_ptr<Distribution> {
      TORCH_CHECK_VALUE(p.size() == 1, "Categorical: expects 1 parameter (logits), got ", p.size());
      return std::make_shared<Categorical>(p[0]);
    };
  }

 protected:
  Categorical() = default;
  /// Throws `c10::ValueError` (naming `name` and `what`) unless `t` is floating point with a
  /// last dim of at least one category.
  static void check_param(const char* name, const torch::Tensor& t, const char* what) {
    TORCH_CHECK_VALUE(t.defined() && t.dim() >= 1 && t.size(-1) >= 1, name, ": ", what,
                      " must have at least one dim holding the categories, got ",
                      t.defined() ? rlobj::detail::shape_str(t.sizes()) : std::string("an undefined tensor"));
    TORCH_CHECK_VALUE(t.is_floating_point(), name, ": ", what, " must be floating point, got ", t.scalar_type());
  }
  /// Sets the normalised logits, the probabilities and the batch shape from `logits`.
  void init_logits(const torch::Tensor& logits) {
    check_param(name(), logits, "logits");
    logits_ = logits - logits.logsumexp(-1, /*keepdim=*/true);
    probs_ = torch::softmax(logits_, -1);
    finish();
  }
  /// Sets the batch shape from the logits (no event dims).
  void finish() {
    const auto sizes = logits_.sizes();
    batch_shape_.assign(sizes.begin(), sizes.end() - 1);
    event_shape_.clear();
  }
  /// `log p(idx)` for indices of shape `sample_shape + batch_shape`.
  torch::Tensor index_log_prob(const torch::Tensor& value) const {
    TORCH_CHECK_VALUE(!value.is_floating_point() && !value.is_complex() && value.scalar_type() != torch::kBool, name(),
                      ".log_prob: expected integer category indices, got ", value.scalar_type());
    const torch::Tensor idx = value.to(torch::kLong);
    check_range(idx);
    const torch::Tensor expanded = idx.unsqueeze(-1);
    std::vector<int64_t> shape(expanded.sizes().begin(), expanded.sizes().end());
    shape.back() = num_events();
    return logits_.expand(shape).gather(-1, expanded).squeeze(-1);
  }
  /// On the CPU, throws `c10::ValueError` if an index lies outside `[0, num_events())`.
  void check_range(const torch::Tensor& idx) const {
    if (idx.numel() == 0 || !idx.device().is_cpu()) return;
    TORCH_CHECK_VALUE(idx.min().item<int64_t>() >= 0 && idx.max().item<int64_t>() < num_events(), name(),
                      ": outcomes must be in [0, ", num_events(), "), got values in [", idx.min().item<int64_t>(),
                      ", ", idx.max().item<int64_t>(), "]");
  }

  /// \var logits_
  /// Normalised log-probabilities, shape `batch_shape + [n]`.
  /// \var probs_
  /// Probabilities, shape `batch_shape + [n]`.
  torch::Tensor logits_, probs_;
};

/// TorchRL's `OneHotCategorical`: a `Categorical` whose outcomes are one-hot vectors (`int64`,
/// last dim `n`, the event). `rsample` is the pass-through estimator
/// `one_hot(sample) + probs - probs.detach()` (TorchRL's default `grad_method`); `mode` marks
/// every maximal logit.
class OneHotCategorical : public Categorical {
 public:
  /// From unnormalised log-probabilities (a trailing dim of size 1 is dropped, as TorchRL does).
  explicit OneHotCategorical(const torch::Tensor& logits) : Categorical(treat(logits)) {
    event_shape_ = {num_events()};
  }
  const char* name() const override { return "OneHotCategorical"; }
  bool has_rsample() const override { return true; }
  torch::Tensor sample(c10::IntArrayRef sample_shape = {}) const override {
    return torch::one_hot(index_sample(sample_shape), num_events());
  }
  torch::Tensor rsample(c10::IntArrayRef sample_shape = {}) const override {
    return torch::one_hot(index_sample(sample_shape), num_events()) + probs_ - probs_.detach();
  }
  /// `log p(argmax(value))`.
  torch::Tensor log_prob(const torch::Tensor& value) const override {
    check_value(value);
    return index_log_prob(value.argmax(-1));
  }
  torch::Tensor mode() const override {
    return (logits_ == std::get<0>(logits_.max(-1, /*keepdim=*/true))).to(torch::kLong);
  }

  /// For `ProbabilisticActor`: one parameter, `logits`.
  static DistributionFactory factory() {
    return [](const std::vector<torch::Tensor>& p) -> std::shared_ptr<Distribution> {
      TORCH_CHECK_VALUE(p.size() == 1, "OneHotCategorical: expects 1 parameter (logits), got ", p.size());
      return std::make_shared<OneHotCategorical>(p[0]);
    };
  }

 private:
  static torch::Tensor treat(const torch::Tensor& logits) {
    return logits.defined() && logits.dim() >= 1 && logits.size(-1) == 1 ? logits.squeeze(-1) : logits;
  }
  torch::Tensor index_sample(c10::IntArrayRef sample_shape) const {
    torch::NoGradGuard no_grad;
    int64_t n = 1;
    for (auto s : sample_shape) n *= s;
    std::vector<int64_t> shape(sample_shape.begin(), sample_shape.end());
    shape.insert(shape.end(), batch_shape_.begin(), batch_shape_.end());
    return torch::multinomial(probs_.reshape({-1, num_events()}), n, true).t().reshape(shape);
  }
};

/// Options of `NormalParamExtractor` (tensordict's `scale_lb`; the scale mapping is its default,
/// `biased_softplus_1.0`).
struct NormalParamExtractorOptions {
  /// The scale's lower bound.
  TORCH_ARG(double, scale_lb) = 1e-4;
};

/// tensordict's `NormalParamExtractor`: splits the last dim of its input in two halves, `loc`
/// and `scale = max(softplus(s + b) + 0.01, scale_lb)` with `b = log(expm1(0.99))` (the biased
/// softplus: `scale = 1` where `s = 0`). Returns `(loc, scale)`; wrap it in a
/// `TensorDictModule` with out_keys `{"loc", "scale"}`.
class NormalParamExtractorImpl : public torch::nn::Cloneable<NormalParamExtractorImpl> {
 public:
  /// Throws `c10::ValueError` unless `options.scale_lb()` is finite and >= 0.
  explicit NormalParamExtractorImpl(NormalParamExtractorOptions options = {}) : options(options) {
    TORCH_CHECK_VALUE(std::isfinite(options.scale_lb()) && options.scale_lb() >= 0,
                      "NormalParamExtractor: scale_lb must be finite and >= 0, got ", options.scale_lb());
  }
  /// No parameters or buffers: nothing to reset.
  void reset() override {}
  /// `(loc, scale)` from the two halves of `x`'s last dim, which must be even.
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x) {
    TORCH_CHECK_VALUE(x.dim() >= 1 && x.size(-1) % 2 == 0, "NormalParamExtractor: the last dim must be even "
                      "(loc and scale halves), got shape ", rlobj::detail::shape_str(x.sizes()));
    auto halves = x.chunk(2, -1);
    torch::Tensor scale = (torch::nn::functional::softplus(halves[1] + bias()) + 0.01).clamp_min(options.scale_lb());
    return {halves[0], scale};
  }
  /// `log(expm1(0.99))` rounded to float32, as tensordict computes it (0.5254586935043335).
  static double bias() { return 0.5254586935043335; }
  /// Prints `rlobj::modules::NormalParamExtractor(scale_lb=...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::modules::NormalParamExtractor(scale_lb=" << options.scale_lb() << ")";
  }
  /// The options the module was built with.
  NormalParamExtractorOptions options;
};
TORCH_MODULE(NormalParamExtractor);

/// TorchRL's `AddStateIndependentNormalScale` (scale_mapping "exp"): passes `loc` through and adds
/// a learned scale that does not depend on the state, `max(exp(log_scale), scale_lb)`, one per
/// action dim, starting at 1. The parameter is named `state_independent_scale`, as in TorchRL
/// 0.14 (tensordict's class); an archive of rlobj before 0.2, which named it `scale`, still loads
/// with `torch::load`, and `rlobj::load_state_dict` renames such a state dict. TorchRL's PPO
/// MuJoCo example puts it after the policy MLP; wrap it in a `TensorDictModule` reading
/// `{"loc"}` and writing `{"loc", "scale"}`.
class AddStateIndependentNormalScaleImpl : public torch::nn::Cloneable<AddStateIndependentNormalScaleImpl> {
 public:
  /// `n` action dims (> 0); `scale_lb` the scale's floor (finite, >= 0).
  explicit AddStateIndependentNormalScaleImpl(int64_t n, double scale_lb = 1e-4) : n_(n), scale_lb_(scale_lb) {
    TORCH_CHECK_VALUE(n > 0, "AddStateIndependentNormalScale: n must be > 0, got ", n);
    TORCH_CHECK_VALUE(std::isfinite(scale_lb) && scale_lb >= 0,
                      "AddStateIndependentNormalScale: scale_lb must be finite and >= 0, got ", scale_lb);
    reset();
  }
  /// The log-scale back to zeros (a scale of 1).
  void reset() override { log_scale = register_parameter("state_independent_scale", torch::zeros({n_})); }
  /// `(loc, max(exp(log_scale), scale_lb))`, the scale broadcast to `loc`'s shape.
  std::tuple<torch::Tensor, torch::Tensor> forward(const torch::Tensor& loc) {
    TORCH_CHECK_VALUE(loc.dim() >= 1 && loc.size(-1) == n_, "AddStateIndependentNormalScale: expected loc with last dim ",
                      n_, ", got shape ", rlobj::detail::shape_str(loc.sizes()));
    return {loc, (torch::zeros_like(loc) + log_scale).exp().clamp_min(scale_lb_)};
  }
  /// The learned log-scale, one per action dim.
  torch::Tensor log_scale;

  /// `torch::load`: TorchRL's name, or `scale` (rlobj before 0.2).
  void load(torch::serialize::InputArchive& archive) override {
    torch::Tensor current, legacy;
    if (!archive.try_read("state_independent_scale", current) && archive.try_read("scale", legacy)) {
      TORCH_CHECK_VALUE(legacy.sizes() == log_scale.sizes(), "AddStateIndependentNormalScale.load: the archive's "
                        "\"scale\" has shape ", rlobj::detail::shape_str(legacy.sizes()), " where the module has ",
                        rlobj::detail::shape_str(log_scale.sizes()));
      torch::NoGradGuard no_grad;
      log_scale.copy_(legacy);
      return;
    }
    torch::nn::Module::load(archive);
  }

 private:
  int64_t n_;
  double scale_lb_;
};
TORCH_MODULE(AddStateIndependentNormalScale);


/// `KL(p || q)` in closed form, as `torch.distributions.kl_divergence`, for two
/// `Normal`/`IndependentNormal` of the same event dims (summed over the event) or two
/// `Categorical`/`OneHotCategorical`; shape `batch_shape`. Other pairs throw
/// `c10::NotImplementedError` (estimate the KL by sampling instead, as `KLPENPPOLoss` does).
inline torch::Tensor kl_divergence(const Distribution& p, const Distribution& q) {
  const auto* pn = dynamic_cast<const IndependentNormal*>(&p);
  const auto* qn = dynamic_cast<const IndependentNormal*>(&q);
  if (pn != nullptr && qn != nullptr && std::string(p.name()) == q.name()) {
    TORCH_CHECK_VALUE(pn->loc().sizes() == qn->loc().sizes(), "kl_divergence: the distributions have shapes ",
                      rlobj::detail::shape_str(pn->loc().sizes()), " and ", rlobj::detail::shape_str(qn->loc().sizes()));
    torch::Tensor var_ratio = (pn->scale() / qn->scale()).pow(2);
    torch::Tensor t1 = ((pn->loc() - qn->loc()) / qn->scale()).pow(2);
    torch::Tensor kl = 0.5 * (var_ratio + t1 - 1 - var_ratio.log());
    return detail::sum_rightmost(kl, pn->loc().dim() - static_cast<int64_t>(p.batch_shape().size()));
  }
  const auto* pc = dynamic_cast<const Categorical*>(&p);
  const auto* qc = dynamic_cast<const Categorical*>(&q);
  if (pc != nullptr && qc != nullptr) {
    TORCH_CHECK_VALUE(pc->probs().sizes() == qc->probs().sizes(), "kl_divergence: the distributions have shapes ",
                      rlobj::detail::shape_str(pc->probs().sizes()), " and ", rlobj::detail::shape_str(qc->probs().sizes()));
    torch::Tensor t = pc->probs() * (pc->logits() - qc->logits());
    t = t.masked_fill(qc->probs() == 0, std::numeric_limits<double>::infinity());
    t = t.masked_fill(pc->probs() == 0, 0);
    return t.sum(-1);
  }
  TORCH_CHECK_NOT_IMPLEMENTED(false, "kl_divergence: no closed form for ", p.name(), " || ", q.name());
}

}  // namespace modules
}  // namespace rlobj
