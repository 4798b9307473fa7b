#pragma once

/// \file
/// Tensor specs, as TorchRL's `torchrl.data` specs: what shape, dtype, device and range a
/// tensor (or a TensorDict of tensors) must have. `Unbounded`, `Bounded`, `Categorical` and
/// `OneHot` describe one tensor; `Composite` maps keys to specs.
///
/// As in TorchRL, an environment's specs include its batch dims: a Pendulum with
/// `batch_size` `[16]` has an `action_spec().shape()` of `[16, 1]`.

#include <algorithm>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#include <ATen/core/Generator.h>
#include <c10/util/Exception.h>
#include <fmt/format.h>
#include <fmt/ranges.h>  // fmt::join (there since fmt 11)
#include <torch/types.h>

#include "rlobj/detail/format.h"
#include "rlobj/tensordict.h"

namespace rlobj {

/// Base class of the specs that describe one tensor.
class TensorSpec {
 public:
  virtual ~TensorSpec() = default;

  /// Full shape, batch dims included.
  const std::vector<int64_t>& shape() const noexcept { return shape_; }
  /// The dtype of values in the spec.
  torch::Dtype dtype() const noexcept { return dtype_; }
  /// The device of values in the spec.
  torch::Device device() const noexcept { return device_; }

  /// A random tensor of shape `[*batch, *shape()]` inside the spec, drawn from `generator`
  /// (the default generator when none is given).
  virtual torch::Tensor rand(c10::IntArrayRef batch = {},
                             std::optional<at::Generator> generator = std::nullopt) const = 0;
  /// Zeros of shape `[*batch, *shape()]`.
  torch::Tensor zero(c10::IntArrayRef batch = {}) const {
    return torch::zeros(full_shape(batch), options());
  }
  /// True if `value` has the spec's trailing shape, dtype and device and lies in its range.
  bool is_in(const torch::Tensor& value) const { return why_not(value).empty(); }
  /// Throws a `c10::Error` saying what is wrong unless `is_in(value)`.
  void assert_is_in(const torch::Tensor& value) const {
    const std::string reason = why_not(value);
    TORCH_CHECK(reason.empty(), repr(), ".assert_is_in: ", reason);
  }
  /// `value` moved into the spec's range (clamped for bounded specs).
  virtual torch::Tensor project(const torch::Tensor& value) const { return value; }
  /// A copy of this spec on `device`.
  virtual std::shared_ptr<TensorSpec> to(torch::Device device) const = 0;
  /// A copy of this spec.
  std::shared_ptr<TensorSpec> clone() const { return to(device_); }
  /// A copy of this spec with `batch` prepended to its shape.
  virtual std::shared_ptr<TensorSpec> expand(c10::IntArrayRef batch) const = 0;
  /// `Bounded(shape=[1], low=-2, high=2, dtype=float32, device=cpu)`.
  virtual std::string repr() const = 0;

 protected:
  /// For subclasses; throws `c10::ValueError` on a negative dim.
  TensorSpec(std::vector<int64_t> shape, torch::Dtype dtype, torch::Device device)
      : shape_(std::move(shape)), dtype_(dtype), device_(device) {
    for (auto s : shape_) {
      TORCH_CHECK_VALUE(s >= 0, "TensorSpec: negative dimension in shape ",
                        detail::shape_str(shape_));
    }
  }
  /// Tensor options with the spec's dtype and device.
  torch::TensorOptions options() const { return torch::TensorOptions().dtype(dtype_).device(device_); }
  /// Options for drawing with `generator`: on the generator's device (a CPU generator can
  /// seed a CUDA spec; the sample is moved afterwards by `on_device`).
  static torch::Device draw_device(const std::optional<at::Generator>& generator, torch::Device fallback) {
    return generator ? generator->device() : fallback;
  }
  /// `generator` as the `c10::optional` LibTorch's factory functions take.
  static c10::optional<at::Generator> c10_generator(const std::optional<at::Generator>& g) {
    return g ? c10::optional<at::Generator>(*g) : c10::nullopt;
  }
  /// `t` moved to the spec's device (unchanged if it is there).
  torch::Tensor on_device(const torch::Tensor& t) const { return t.device() == device_ ? t : t.to(device_); }
  /// `[*batch, *shape()]`.
  std::vector<int64_t> full_shape(c10::IntArrayRef batch) const {
    std::vector<int64_t> s(batch.begin(), batch.end());
    s.insert(s.end(), shape_.begin(), shape_.end());
    return s;
  }
  /// Empty if `value` fits, else what does not.
  virtual std::string why_not(const torch::Tensor& value) const {
    if (!value.defined()) return "the value is undefined";
    const auto sizes = value.sizes();
    const bool shape_ok =
        sizes.size() >= shape_.size() &&
        std::equal(shape_.begin(), shape_.end(), sizes.end() - static_cast<long>(shape_.size()));
    if (!shape_ok) {
      return fmt::format("shape {} does not end with the spec's shape {}",
                         detail::shape_str(sizes), detail::shape_str(shape_));
    }
    if (value.scalar_type() != dtype_) {
      return fmt::format("dtype {} differs from the spec's {}",
                         detail::dtype_str(value.scalar_type()), detail::dtype_str(dtype_));
    }
    if (value.device() != device_) {
      return fmt::format("device {} differs from the spec's {}", value.device().str(),
                         device_.str());
    }
    return {};
  }
  /// `shape=..., dtype=..., device=...`: the part of `repr()` every spec shares.
  std::string common_repr() const {
    return fmt::format("shape={}, dtype={}, device={}", detail::shape_str(shape_),
                       detail::dtype_str(dtype_), device_.str());
  }

 private:
  std::vector<int64_t> shape_;
  torch::Dtype dtype_;
  torch::Device device_;
};

/// Prints `spec.repr()`.
inline std::ostream& operator<<(std::ostream& os, const TensorSpec& spec) { return os << spec.repr(); }

/// Any value of the right shape and dtype (TorchRL's `Unbounded`). `rand` draws from a
/// standard normal (integers: from [-100, 100)).
class Unbounded : public TensorSpec {
 public:
  /// Any value of `shape` (batch dims included, for an environment's spec), `dtype` and `device`.
  explicit Unbounded(std::vector<int64_t> shape = {}, torch::Dtype dtype = torch::kFloat32,
                     torch::Device device = torch::kCPU)
      : TensorSpec(std::move(shape), dtype, device) {}

  torch::Tensor rand(c10::IntArrayRef batch = {},
                     std::optional<at::Generator> generator = std::nullopt) const override {
    auto gen = c10_generator(generator);
    auto opts = options().device(draw_device(generator, device()));
    if (at::isFloatingType(dtype())) return on_device(torch::randn(full_shape(batch), gen, opts));
    if (dtype() == torch::kBool) return on_device(torch::randint(0, 2, full_shape(batch), gen, opts));
    return on_device(torch::randint(-100, 100, full_shape(batch), gen, opts));
  }
  std::shared_ptr<TensorSpec> to(torch::Device device) const override {
    return std::make_shared<Unbounded>(shape(), dtype(), device);
  }
  std::shared_ptr<TensorSpec> expand(c10::IntArrayRef batch) const override {
    return std::make_shared<Unbounded>(full_shape(batch), dtype(), device());
  }
  std::string repr() const override { return fmt::format("Unbounded({})", common_repr()); }
};

/// Values in `[low, high]` (TorchRL's `Bounded`). Bounds are scalars or tensors of the
/// spec's shape.
class Bounded : public TensorSpec {
 public:
  /// Scalar bounds.
  Bounded(double low, double high, std::vector<int64_t> shape, torch::Dtype dtype = torch::kFloat32,
          torch::Device device = torch::kCPU)
      : Bounded(torch::full(shape, low, torch::TensorOptions().dtype(dtype).device(device)),
                torch::full(shape, high, torch::TensorOptions().dtype(dtype).device(device))) {}
  /// Element-wise bounds; the shape, dtype and device are `low`'s.
  Bounded(torch::Tensor low, torch::Tensor high)
      : TensorSpec(low.sizes().vec(), low.scalar_type(), low.device()),
        low_(std::move(low)),
        high_(std::move(high)) {
    TORCH_CHECK_VALUE(high_.sizes() == low_.sizes(), "Bounded: low has shape ",
                      detail::shape_str(low_.sizes()), " but high has shape ",
                      detail::shape_str(high_.sizes()));
    TORCH_CHECK_VALUE(high_.scalar_type() == low_.scalar_type() && high_.device() == low_.device(),
                      "Bounded: low and high must share dtype and device");
    TORCH_CHECK_VALUE((low_ <= high_).all().item<bool>(), "Bounded: low must be <= high");
  }

  /// Lower bound, of the spec's shape.
  const torch::Tensor& low() const noexcept { return low_; }
  /// Upper bound, of the spec's shape.
  const torch::Tensor& high() const noexcept { return high_; }

  torch::Tensor rand(c10::IntArrayRef batch = {},
                     std::optional<at::Generator> generator = std::nullopt) const override {
    auto gen = c10_generator(generator);
    const auto dev = draw_device(generator, device());
    if (at::isFloatingType(dtype())) {
      auto u = on_device(torch::rand(full_shape(batch), gen, options().device(dev)));
      return u * (high_ - low_) + low_;
    }
    // Integers: uniform over [low, high] inclusive.
    auto u = on_device(torch::rand(full_shape(batch), gen, torch::TensorOptions().dtype(torch::kFloat64).device(dev)));
    auto span = (high_ - low_ + 1).to(torch::kFloat64);
    return (u * span).floor().to(dtype()) + low_;
  }
  torch::Tensor project(const torch::Tensor& value) const override {
    return torch::max(torch::min(value, high_), low_);
  }
  std::shared_ptr<TensorSpec> to(torch::Device device) const override {
    return std::make_shared<Bounded>(low_.to(device), high_.to(device));
  }
  std::shared_ptr<TensorSpec> expand(c10::IntArrayRef batch) const override {
    auto s = full_shape(batch);
    return std::make_shared<Bounded>(low_.expand(s).contiguous(), high_.expand(s).contiguous());
  }
  std::string repr() const override {
    return fmt::format("Bounded({}, low={}, high={})", common_repr(), bound_str(low_),
                       bound_str(high_));
  }

 protected:
  std::string why_not(const torch::Tensor& value) const override {
    auto reason = TensorSpec::why_not(value);
    if (!reason.empty()) return reason;
    if (value.numel() == 0) return {};
    if (at::isFloatingType(value.scalar_type()) && value.isnan().any().item<bool>()) {
      return "the value contains NaN";
    }
    const bool inside = ((value >= low_) & (value <= high_)).all().item<bool>();
    if (!inside) {
      return fmt::format("values in [{}, {}] fall outside [low, high] = [{}, {}]",
                         value.min().item<double>(), value.max().item<double>(), bound_str(low_),
                         bound_str(high_));
    }
    return {};
  }

 private:
  static std::string bound_str(const torch::Tensor& b) {
    auto flat = b.detach().to(torch::kCPU, torch::kFloat64).flatten();
    if (flat.numel() == 0) return "[]";
    const double first = flat[0].item<double>();
    if ((flat == first).all().item<bool>()) return fmt::format("{}", first);
    std::vector<double> v(flat.data_ptr<double>(), flat.data_ptr<double>() + flat.numel());
    return fmt::format("[{}]", fmt::join(v, ", "));
  }

  torch::Tensor low_;
  torch::Tensor high_;
};

namespace detail {

/// The bounds of one action from a `Bounded` spec whose last dim holds the action features:
/// `(low, high)`, each of shape `[features]`. Leading dims (an environment's batch dims) must
/// repeat the same bounds. `who` names the caller in errors.
inline std::pair<torch::Tensor, torch::Tensor> action_bounds(const TensorSpec& spec, const char* who) {
  const auto* bounded = dynamic_cast<const Bounded*>(&spec);
  TORCH_CHECK_VALUE(bounded != nullptr, who, ": the action spec must be Bounded, got ", spec.repr());
  const int64_t features = spec.shape().empty() ? 1 : spec.shape().back();
  TORCH_CHECK_VALUE(features > 0 && bounded->low().numel() > 0, who, ": the spec ", shape_str(spec.shape()),
                    " holds no bounds");
  const auto low = bounded->low().reshape({-1, features}), high = bounded->high().reshape({-1, features});
  TORCH_CHECK_VALUE(torch::equal(low, low[0].expand_as(low)) && torch::equal(high, high[0].expand_as(high)), who,
                    ": the spec's bounds differ between its leading rows (shape ", shape_str(spec.shape()),
                    "); one set of bounds applies to every action: pass a spec of the action features only");
  return {low[0], high[0]};
}

}  // namespace detail

/// Integers in `[0, n)` (TorchRL's `Categorical`); with `dtype` `bool` and `n = 2` this is
/// the spec of done flags.
class Categorical : public TensorSpec {
 public:
  /// Integers in `[0, n)` of `shape`; `c10::ValueError` if `n` is not positive, `dtype` is
  /// floating point, or a bool spec has `n != 2`.
  Categorical(int64_t n, std::vector<int64_t> shape = {}, torch::Dtype dtype = torch::kInt64,
              torch::Device device = torch::kCPU)
      : TensorSpec(std::move(shape), dtype, device), n_(n) {
    TORCH_CHECK_VALUE(n > 0, "Categorical: n must be positive, got ", n);
    TORCH_CHECK_VALUE(dtype != torch::kBool || n == 2, "Categorical: a bool spec needs n == 2, got ", n);
    TORCH_CHECK_VALUE(!at::isFloatingType(dtype), "Categorical: dtype must be integral or bool");
  }

  /// Number of categories.
  int64_t n() const noexcept { return n_; }

  torch::Tensor rand(c10::IntArrayRef batch = {},
                     std::optional<at::Generator> generator = std::nullopt) const override {
    return on_device(torch::randint(0, n_, full_shape(batch), c10_generator(generator),
                                    options().device(draw_device(generator, device()))));
  }
  torch::Tensor project(const torch::Tensor& value) const override {
    if (dtype() == torch::kBool) return value;
    return value.clamp(0, n_ - 1);
  }
  std::shared_ptr<TensorSpec> to(torch::Device device) const override {
    return std::make_shared<Categorical>(n_, shape(), dtype(), device);
  }
  std::shared_ptr<TensorSpec> expand(c10::IntArrayRef batch) const override {
    return std::make_shared<Categorical>(n_, full_shape(batch), dtype(), device());
  }
  std::string repr() const override {
    return fmt::format("Categorical(n={}, {})", n_, common_repr());
  }

 protected:
  std::string why_not(const torch::Tensor& value) const override {
    auto reason = TensorSpec::why_not(value);
    if (!reason.empty() || dtype() == torch::kBool || value.numel() == 0) return reason;
    if (!((value >= 0) & (value < n_)).all().item<bool>()) {
      return fmt::format("values fall outside [0, {})", n_);
    }
    return {};
  }

 private:
  int64_t n_;
};

/// One-hot vectors of `n` categories along the last dim (TorchRL's `OneHot`): each row of the
/// last dim holds one 1 and `n - 1` zeros. This is how TorchRL's `GymEnv` wraps a gym
/// `Discrete(n)` action space (with `dtype` int64); TorchRL's own default dtype is bool.
///
/// ```
/// rlobj::OneHot spec(2, {}, torch::kInt64);  // shape [2]
/// spec.rand({4});                            // e.g. [[0, 1], [1, 0], [1, 0], [0, 1]]
/// spec.is_in(torch::tensor({1, 1}));         // false: two ones
/// ```
class OneHot : public TensorSpec {
 public:
  /// `shape` is the full shape, its last dim `n`; empty means `[n]`.
  OneHot(int64_t n, std::vector<int64_t> shape = {}, torch::Dtype dtype = torch::kBool,
         torch::Device device = torch::kCPU)
      : TensorSpec(checked_shape(n, std::move(shape)), dtype, device), n_(n) {
    TORCH_CHECK_VALUE(this->shape().back() == n, "OneHot: the last dim of shape ", detail::shape_str(this->shape()),
                      " must be n = ", n);
    TORCH_CHECK_VALUE(!at::isFloatingType(dtype) && !at::isComplexType(dtype),
                      "OneHot: dtype must be integral or bool, got ", detail::dtype_str(dtype));
  }

  /// Number of categories (the last dim).
  int64_t n() const noexcept { return n_; }

  /// Uniform over the `n` categories, independently for every row.
  torch::Tensor rand(c10::IntArrayRef batch = {},
                     std::optional<at::Generator> generator = std::nullopt) const override {
    std::vector<int64_t> rows = full_shape(batch);
    rows.pop_back();
    const auto dev = draw_device(generator, device());
    auto index = torch::randint(0, n_, rows, c10_generator(generator),
                                torch::TensorOptions().dtype(torch::kInt64).device(dev));
    return on_device(torch::one_hot(index, n_).to(dtype()));
  }
  /// The one-hot vector of each row's largest entry (the first one on ties): valid rows are
  /// unchanged; an all-zero row becomes category 0. TorchRL samples from the row instead.
  torch::Tensor project(const torch::Tensor& value) const override {
    auto index = value.dtype() == torch::kBool ? value.to(torch::kInt64).argmax(-1) : value.argmax(-1);
    return torch::one_hot(index, n_).to(dtype());
  }
  /// The category of each one-hot row, int64 without the last dim (TorchRL's
  /// `OneHot.to_categorical`). Not checked: call `assert_is_in` first if in doubt.
  torch::Tensor to_categorical(const torch::Tensor& value) const { return value.to(torch::kInt64).argmax(-1); }
  std::shared_ptr<TensorSpec> to(torch::Device device) const override {
    return std::make_shared<OneHot>(n_, shape(), dtype(), device);
  }
  std::shared_ptr<TensorSpec> expand(c10::IntArrayRef batch) const override {
    return std::make_shared<OneHot>(n_, full_shape(batch), dtype(), device());
  }
  std::string repr() const override { return fmt::format("OneHot(n={}, {})", n_, common_repr()); }

 protected:
  std::string why_not(const torch::Tensor& value) const override {
    auto reason = TensorSpec::why_not(value);
    if (!reason.empty() || value.numel() == 0) return reason;
    // Stricter than TorchRL, which only checks that rows sum to 1 (and so accepts [2, -1]).
    const auto v = value.to(torch::kInt64);
    const auto ok = ((v == 0) | (v == 1)).all(-1) & (v.sum(-1) == 1);
    if (!ok.all().item<bool>()) {
      return fmt::format("{} of its rows are not one-hot (one 1 and {} zeros along the last dim)",
                         ok.logical_not().sum().item<int64_t>(), n_ - 1);
    }
    return {};
  }

 private:
  // n is checked before the base class sees the shape, so that `OneHot(0)` names n.
  static std::vector<int64_t> checked_shape(int64_t n, std::vector<int64_t> shape) {
    TORCH_CHECK_VALUE(n > 0, "OneHot: n must be positive, got ", n);
    if (shape.empty()) shape.push_back(n);
    return shape;
  }

  int64_t n_;
};

/// A map from keys to specs (TorchRL's `Composite`), possibly nested. `rand`, `zero` and
/// `project` produce TensorDicts; `is_in` checks one.
///
/// ```
/// rlobj::Composite spec;
/// spec.set("observation", rlobj::Unbounded({3})).set("reward", rlobj::Unbounded({1}));
/// spec.at("observation").shape();  // [3]
/// ```
class Composite {
 public:
  /// An empty composite whose entries share leading dims `shape` (the batch dims).
  explicit Composite(std::vector<int64_t> shape = {}) : shape_(std::move(shape)) {}

  /// Adds or replaces the spec under `key`.
  template <typename Spec, typename = std::enable_if_t<std::is_base_of<TensorSpec, Spec>::value &&
                                                      !std::is_abstract<Spec>::value>>
  Composite& set(const std::string& key, const Spec& spec) {
    return set(key, std::static_pointer_cast<const TensorSpec>(std::make_shared<Spec>(spec)));
  }
  /// Adds or replaces the spec under `key`.
  Composite& set(const std::string& key, std::shared_ptr<const TensorSpec> spec) {
    TORCH_CHECK_VALUE(spec != nullptr, "Composite.set: null spec for \"", key, "\"");
    TORCH_CHECK_VALUE(detail::starts_with(spec->shape(), shape_), "Composite.set: spec \"", key,
                      "\" has shape ", detail::shape_str(spec->shape()),
                      ", which does not start with the composite's shape ",
                      detail::shape_str(shape_));
    for (auto& kv : entries_) {
      if (kv.first == key) {
        kv.second = std::move(spec);
        return *this;
      }
    }
    entries_.emplace_back(key, std::move(spec));
    return *this;
  }

  /// The spec under `key`; throws, listing the keys present, if there is none.
  const TensorSpec& at(const std::string& key) const {
    for (const auto& kv : entries_) {
      if (kv.first == key) return *kv.second;
    }
    TORCH_CHECK(false, "Composite.at: no spec \"", key, "\"; keys present: ",
                detail::keys_str(nested_keys()));
  }
  /// The spec under `key`, shared.
  std::shared_ptr<const TensorSpec> ptr(const std::string& key) const {
    for (const auto& kv : entries_) {
      if (kv.first == key) return kv.second;
    }
    TORCH_CHECK(false, "Composite.ptr: no spec \"", key, "\"; keys present: ",
                detail::keys_str(nested_keys()));
  }
  /// True if there is a spec under `key`.
  bool contains(const std::string& key) const noexcept {
    for (const auto& kv : entries_) {
      if (kv.first == key) return true;
    }
    return false;
  }
  /// Keys in insertion order.
  std::vector<std::string> keys() const {
    std::vector<std::string> out;
    for (const auto& kv : entries_) out.push_back(kv.first);
    return out;
  }
  /// The shared leading dims.
  const std::vector<int64_t>& shape() const noexcept { return shape_; }

  /// A TensorDict of random values (batch size `[*batch, *shape()]`).
  TensorDict rand(c10::IntArrayRef batch = {},
                  std::optional<at::Generator> generator = std::nullopt) const {
    TensorDict td(full(batch));
    for (const auto& kv : entries_) td.set(kv.first, kv.second->rand(batch, generator));
    return td;
  }
  /// A TensorDict of zeros.
  TensorDict zero(c10::IntArrayRef batch = {}) const {
    TensorDict td(full(batch));
    for (const auto& kv : entries_) td.set(kv.first, kv.second->zero(batch));
    return td;
  }
  /// True if `td` holds every key and each value is in its spec.
  bool is_in(const TensorDict& td) const {
    for (const auto& kv : entries_) {
      const torch::Tensor* t = td.find(kv.first);
      if (t == nullptr || !kv.second->is_in(*t)) return false;
    }
    return true;
  }
  /// Throws, naming the key, unless `is_in(td)`.
  void assert_is_in(const TensorDict& td) const {
    for (const auto& kv : entries_) {
      const torch::Tensor* t = td.find(kv.first);
      TORCH_CHECK(t != nullptr, "Composite.assert_is_in: missing key \"", kv.first, "\"");
      try {
        kv.second->assert_is_in(*t);
      } catch (const c10::Error& e) {
        TORCH_CHECK(false, "Composite.assert_is_in: key \"", kv.first, "\": ",
                    e.what_without_backtrace());
      }
    }
  }
  /// A copy of `td` with every spec'd entry projected into its spec.
  TensorDict project(const TensorDict& td) const {
    TensorDict out = td.copy();
    for (const auto& kv : entries_) {
      if (const torch::Tensor* t = td.find(kv.first)) out.set(kv.first, kv.second->project(*t));
    }
    return out;
  }
  /// A copy on `device`.
  Composite to(torch::Device device) const {
    Composite c(shape_);
    for (const auto& kv : entries_) c.set(kv.first, kv.second->to(device));
    return c;
  }

  /// The specs of the entries, one per line, and the composite's shape.
  std::string repr() const {
    std::vector<std::string> lines;
    for (const auto& kv : entries_) lines.push_back(fmt::format("    {}: {}", kv.first, kv.second->repr()));
    return fmt::format("Composite(\n{},\n    shape={})", fmt::join(lines, ",\n"),
                       detail::shape_str(shape_));
  }

 private:
  std::vector<NestedKey> nested_keys() const {
    std::vector<NestedKey> out;
    for (const auto& kv : entries_) out.emplace_back(kv.first);
    return out;
  }
  std::vector<int64_t> full(c10::IntArrayRef batch) const {
    std::vector<int64_t> s(batch.begin(), batch.end());
    s.insert(s.end(), shape_.begin(), shape_.end());
    return s;
  }

  std::vector<int64_t> shape_;
  std::vector<std::pair<std::string, std::shared_ptr<const TensorSpec>>> entries_;
};

/// Prints `spec.repr()`.
inline std::ostream& operator<<(std::ostream& os, const Composite& spec) { return os << spec.repr(); }

}  // namespace rlobj

/// \cond FMT_FORMATTERS
/// `fmt::format("{}", spec)` for any leaf spec.
template <typename Spec>
struct fmt::formatter<Spec, char, std::enable_if_t<std::is_base_of<rlobj::TensorSpec, Spec>::value>>
    : fmt::formatter<std::string> {
  template <typename FormatContext>
  auto format(const Spec& spec, FormatContext& ctx) const -> decltype(ctx.out()) {
    return fmt::formatter<std::string>::format(spec.repr(), ctx);
  }
};
/// \endcond

/// \cond FMT_FORMATTERS
/// `fmt::format("{}", composite)`.
template <>
struct fmt::formatter<rlobj::Composite> : fmt::formatter<std::string> {
  template <typename FormatContext>
  auto format(const rlobj::Composite& spec, FormatContext& ctx) const -> decltype(ctx.out()) {
    return fmt::formatter<std::string>::format(spec.repr(), ctx);
  }
};
/// \endcond
