#pragma once

/// \file
/// A policy as a flat program of simple operations, the common ground of rlobj's exporters
/// (`rlobj/deploy/c.h`, `rlobj/deploy/onnx.h`).
///
/// `lower_policy(actor, example_observation)` walks an actor's modules — `MLP`, `Linear`,
/// `torch::nn::Sequential` and activations inside `TensorDictModule`/`Actor`/`ValueOperator`,
/// `TensorDictSequential`, `TanhModule`, `NormalParamExtractor`, `ProbabilisticActor` with a
/// `TanhNormal`, `IndependentNormal`, `Normal`, `Delta`, `Categorical` or `OneHotCategorical`
/// (its deterministic action: the mode), `QValueActor`/`QValueModule` (the greedy action) —
/// and writes what the actor computes from its observation to its action as a list of
/// operations on per-sample vectors: affine layers, activations, layer norms, slices,
/// element-wise constants, clamps and argmax. An `ObservationNorm` given in the options is
/// folded in front. Any other module is refused with a `c10::Error` naming it and its place in
/// the actor. The program is then checked against the actor on the example observation.
///
/// The program keeps the actor's own operations in the actor's order (`(loc + s) + low`
/// stays two additions), so an exporter that follows it computes the same function with the
/// same rounding steps; only the order of each dot product's sum and the activation kernels
/// differ between runtimes. `PolicyProgram::error_bound` turns that into a tolerance: a
/// running forward-error bound (Higham's `gamma_n` for each dot product, one rounding per
/// element-wise operation, a stated accuracy for activation kernels, and each operation's
/// Lipschitz constant for the error it inherits). `PolicyProgram::check` compares two
/// runtimes' actions with it.

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include <c10/util/Exception.h>
#include <rlobj/detail/format.h>
#include <rlobj/envs/transforms.h>
#include <rlobj/modules/actor.h>
#include <rlobj/modules/distributions.h>
#include <rlobj/modules/exploration_type.h>
#include <rlobj/modules/mlp.h>
#include <rlobj/modules/probabilistic.h>
#include <rlobj/modules/qvalue.h>
#include <rlobj/modules/tensordict_module.h>
#include <rlobj/specs.h>
#include <rlobj/tensordict.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/types.h>

namespace rlobj {
namespace deploy {

/// What one program operation computes on a per-sample vector `x`.
enum class OpKind {
  Linear,      ///< `W x + b` (`weight` [out, in], `bias` [out] or undefined)
  Activation,  ///< `activation(x)` element-wise (`negative_slope` for LeakyReLU)
  LayerNorm,   ///< `(x - mean) / sqrt(var + eps) * weight + bias` over the features
  Slice,       ///< `x[begin:end]`
  Mul,         ///< `x * constant` (`constant`: a scalar or one value per feature)
  Add,         ///< `x + constant`
  Sub,         ///< `x - constant`
  Div,         ///< `x / constant`
  Clamp,       ///< `min(max(x, low), high)` (`constant` = low, `bias` = high)
  ArgMax,      ///< the index of the first largest element (int64, no feature dim)
  OneHotMax,   ///< int64 `x == max(x)` (TorchRL's one-hot greedy action; ties give several ones)
};

/// The name of `k` (`"Linear"`, ...).
inline const char* op_name(OpKind k) {
  switch (k) {
    case OpKind::Linear: return "Linear";
    case OpKind::Activation: return "Activation";
    case OpKind::LayerNorm: return "LayerNorm";
    case OpKind::Slice: return "Slice";
    case OpKind::Mul: return "Mul";
    case OpKind::Add: return "Add";
    case OpKind::Sub: return "Sub";
    case OpKind::Div: return "Div";
    case OpKind::Clamp: return "Clamp";
    case OpKind::ArgMax: return "ArgMax";
    case OpKind::OneHotMax: return "OneHotMax";
  }
  return "?";
}

/// One operation: reads value `input`, writes value `output`.
struct Op {
  /// An operation of kind `kind` on value `input`, made by `origin` (its output is set when the
  /// program takes it).
  Op(OpKind kind, int input, std::string origin) : kind(kind), input(input), origin(std::move(origin)) {}
  /// What it computes.
  OpKind kind;
  /// The value it reads.
  int input = 0;
  /// The value it writes.
  int output = 0;
  /// Where it comes from in the actor (`"module.0.module.2 (MLP layer 1)"`), for messages.
  std::string origin;
  /// Linear: the weight; LayerNorm: the scale; Mul/Add/Sub/Div: the constant; Clamp: low.
  torch::Tensor weight;
  /// Linear and LayerNorm: the bias (may be undefined for Linear); Clamp: high.
  torch::Tensor bias;
  /// Activation: which.
  modules::Activation activation = modules::Activation::Identity;
  /// Activation: LeakyReLU's slope.
  double negative_slope = 0.01;
  /// LayerNorm: the variance's epsilon.
  double eps = 1e-5;
  /// Slice: the first feature kept.
  int64_t begin = 0;
  /// Slice: one past the last feature kept.
  int64_t end = 0;
  /// ArgMax / OneHotMax: the actor chose on normalised logits (`Categorical`,
  /// `OneHotCategorical`), which can tie where the logits do not (`PolicyProgram::check` allows it).
  bool normalized_logits = false;
};

/// A value of the program: a vector of `size` features per sample.
struct Value {
  /// Features per sample.
  int64_t size = 0;
  /// int64 (an argmax or a one-hot action) rather than the program's floating dtype.
  bool integer = false;
  /// No feature dim: one number per sample (ArgMax's output).
  bool scalar = false;
};

/// How accurate the runtimes' kernels are assumed to be (see `PolicyProgram::error_bound`).
struct ErrorModel {
  /// Relative accuracy of an activation kernel (tanh, sigmoid, exp-based ones), in units of the
  /// program dtype's roundoff `u` (2^-24 for float32, 2^-53 for float64): 16, i.e. 2^-20 in
  /// float32. Measured kernels are within 1-4 (ATen's Sleef-based ones, glibc's tanhf and expf,
  /// ONNX Runtime's); the margin covers vectorised approximations.
  TORCH_ARG(double, activation_ulps) = 16;
  /// Absolute accuracy of an activation kernel near zero output, in units of `u`: 2 (2^-23 in
  /// float32: ONNX Runtime's Elu computes `exp(x) - 1`, its Sigmoid `0.5 + p(x) / q(x)`, both
  /// off by about half a unit of 1 near 0).
  TORCH_ARG(double, activation_abs_ulps) = 2;
  /// Bound the difference from an int8-quantised export of the same program (`export_c` with
  /// `int8`): adds each layer's quantisation error (the int8 weights' known deviation times the
  /// computed input, plus its action on the inherited error).
  TORCH_ARG(bool, int8) = false;
};

/// What `PolicyProgram::check` found.
struct CheckResult {
  /// The largest `|actual - expected|` (for integer actions: the largest gap between the
  /// best action value and the value of an action taken).
  double max_abs_diff = 0;
  /// The largest `difference / tolerance` (<= 1: within the derived tolerance).
  double max_ratio = 0;
  /// Every action within its tolerance.
  bool ok = true;
  /// The sample with the largest ratio.
  int64_t worst_row = 0;
};

namespace detail {

/// `max|W_row| / 127` per output row, and the int8 weights `round(W / step)` (zero rows: step 1).
inline std::pair<torch::Tensor, torch::Tensor> int8_quantize(const torch::Tensor& weight) {
  torch::Tensor w = weight.to(torch::kFloat32);
  torch::Tensor step = w.abs().amax(1) / 127.0f;
  step = torch::where(step > 0, step, torch::ones_like(step));
  torch::Tensor q = (w / step.unsqueeze(1)).round().clamp(-127, 127).to(torch::kInt8);
  return {q, step};
}

/// Unit roundoff of `dtype`.
inline double unit_roundoff(torch::ScalarType dtype) {
  return dtype == torch::kFloat64 ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
}

/// Higham's `gamma_k = k u / (1 - k u)`: the relative error bound of a k-term sum in any order.
inline double gamma(int64_t k, double u) {
  const double ku = static_cast<double>(k) * u;
  TORCH_CHECK(ku < 0.5, "rlobj::deploy: a dot product of ", k, " terms is too long for an error bound");
  return ku / (1 - ku);
}

/// The largest `|f'(x)|` of activation `a` (its Lipschitz constant).
inline double lipschitz(modules::Activation a, double negative_slope) {
  switch (a) {
    case modules::Activation::Sigmoid: return 0.25;
    case modules::Activation::GELU: return 1.13;  // max of Phi(x) + x phi(x), at x = sqrt(2)
    case modules::Activation::SiLU: return 1.1;   // max of s(x) (1 + x (1 - s(x))), at x ~ 2.4
    case modules::Activation::LeakyReLU: return std::max(1.0, std::abs(negative_slope));
    default: return 1.0;  // Tanh, ReLU, ELU (alpha 1), Identity
  }
}

/// Whether activation `a` is computed exactly up to one rounding (no transcendental kernel).
inline bool exact_activation(modules::Activation a) {
  return a == modules::Activation::ReLU || a == modules::Activation::LeakyReLU || a == modules::Activation::Identity;
}

}  // namespace detail

/// A policy lowered by `lower_policy`: `values[0]` is the observation (after the folded
/// `ObservationNorm`, if any, which is the program's first operations), `values[output]` the
/// action.
struct PolicyProgram {
  /// Every value; `values[0]` is the observation.
  std::vector<Value> values;
  /// The operations, in order.
  std::vector<Op> ops;
  /// The action's value.
  int output = 0;
  /// The floating dtype of the observation, the weights and the continuous action.
  torch::ScalarType dtype = torch::kFloat32;
  /// The key the actor reads (the exporters' input name).
  std::string in_key = "observation";
  /// The key of the action (the exporters' output name).
  std::string out_key = "action";

  /// Features of the observation.
  int64_t in_size() const { return values.at(0).size; }
  /// The action's value.
  const Value& action() const { return values.at(static_cast<size_t>(output)); }
  /// Parameters (weights, biases, constants) the program holds.
  int64_t parameter_count() const {
    int64_t n = 0;
    for (const auto& op : ops) n += (op.weight.defined() ? op.weight.numel() : 0) + (op.bias.defined() ? op.bias.numel() : 0);
    return n;
  }

  /// Every value of the program on `observation` ([batch, in_size]; other leading dims are
  /// flattened), with ATen's kernels. `values[output]` is the action.
  std::vector<torch::Tensor> run_all(const torch::Tensor& observation) const {
    TORCH_CHECK_VALUE(observation.dim() >= 1 && observation.size(-1) == in_size(), "PolicyProgram: expected an "
                      "observation with last dim ", in_size(), ", got shape ", rlobj::detail::shape_str(observation.sizes()));
    std::vector<torch::Tensor> v(values.size());
    v[0] = observation.to(dtype).reshape({-1, in_size()});
    for (const auto& op : ops) {
      const torch::Tensor& x = v[static_cast<size_t>(op.input)];
      torch::Tensor y;
      switch (op.kind) {
        case OpKind::Linear: y = at::linear(x, op.weight, op.bias); break;
        case OpKind::Activation: y = modules::detail::activate(x, op.activation, op.negative_slope); break;
        case OpKind::LayerNorm: y = at::layer_norm(x, {x.size(-1)}, op.weight, op.bias, op.eps); break;
        case OpKind::Slice: y = x.slice(-1, op.begin, op.end); break;
        case OpKind::Mul: y = x * op.weight; break;
        case OpKind::Add: y = x + op.weight; break;
        case OpKind::Sub: y = x - op.weight; break;
        case OpKind::Div: y = x / op.weight; break;
        case OpKind::Clamp: y = torch::min(torch::max(x, op.weight), op.bias); break;
        case OpKind::ArgMax: y = x.argmax(-1); break;
        case OpKind::OneHotMax: y = (x == std::get<0>(x.max(-1, /*keepdim=*/true))).to(torch::kLong); break;
      }
      v[static_cast<size_t>(op.output)] = y;
    }
    return v;
  }

  /// The action for `observation` (shape `[*batch, action features]`, or `[*batch]` for an
  /// index action).
  torch::Tensor run(const torch::Tensor& observation) const {
    torch::Tensor a = run_all(observation)[static_cast<size_t>(output)];
    std::vector<int64_t> shape(observation.sizes().begin(), observation.sizes().end() - 1);
    if (!action().scalar) shape.push_back(action().size);
    return a.reshape(shape);
  }

  /// A bound on `|computed - exact|` of every value (float64, the shapes of `run_all`'s), for any
  /// runtime that follows the program with kernels as accurate as `model` says: a dot product of
  /// k terms summed in any order (`gamma_{k+1}` of the sum of magnitudes), one rounding per
  /// element-wise operation, activations within `(activation_ulps |f(x)| + activation_abs_ulps) u`
  /// (plus the error they inherit times their Lipschitz constant). Two such runtimes differ by
  /// at most twice the bound. With `model.int8()`, also the error of int8 weights (`export_c`).
  /// Integer values get a zero bound (see `check`).
  std::vector<torch::Tensor> error_bound(const std::vector<torch::Tensor>& computed, const ErrorModel& model = {}) const {
    const double u = detail::unit_roundoff(dtype);
    const double tiny = static_cast<double>(std::numeric_limits<float>::min());  // a flushed subnormal
    std::vector<torch::Tensor> e(values.size());
    auto mag = [&](size_t i) { return computed[i].to(torch::kFloat64).abs() + e[i]; };
    e[0] = torch::zeros_like(computed[0], torch::kFloat64);
    // Rows where some value overflowed (or is NaN): the bound assumes no overflow, so theirs is
    // infinite, for every value (check() then passes only an identical answer).
    torch::Tensor broken = ~torch::isfinite(computed[0]).all(-1, /*keepdim=*/true);
    for (const auto& op : ops) {
      const size_t in = static_cast<size_t>(op.input), out = static_cast<size_t>(op.output);
      const torch::Tensor& ex = e[in];
      torch::Tensor y = computed[out].to(torch::kFloat64).abs();
      torch::Tensor ey;
      auto c = [&](const torch::Tensor& t) { return t.to(torch::kFloat64).abs(); };
      switch (op.kind) {
        case OpKind::Linear: {
          const int64_t k = op.weight.size(1) + (op.bias.defined() ? 1 : 0);
          torch::Tensor w = c(op.weight);
          torch::Tensor sum = at::linear(mag(in), w, op.bias.defined() ? c(op.bias) : torch::Tensor());
          ey = at::linear(ex, w) + detail::gamma(k + 1, u) * sum + static_cast<double>(k) * tiny;
          if (model.int8()) {
            // The int8 weights' own error dW = q * step - W is known: it moves the output by
            // dW x (x as computed) plus at most |dW| e_x; the sum of q x and its product by the
            // step round as the float sum does, on |q * step| <= |W| + step / 2.
            auto [q, step] = detail::int8_quantize(op.weight);
            const torch::Tensor dw = q.to(torch::kFloat64) * step.to(torch::kFloat64).unsqueeze(1) - op.weight.to(torch::kFloat64);
            const torch::Tensor xd = computed[in].to(torch::kFloat64);
            ey = ey + at::linear(xd, dw).abs() + at::linear(ex, dw.abs()) +
                 (detail::gamma(k + 2, u) * step.to(torch::kFloat64) / 2).unsqueeze(0) * mag(in).sum(-1, true) + u * sum;
          }
          break;
        }
        case OpKind::Activation: {
          const double lip = detail::lipschitz(op.activation, op.negative_slope);
          const double rel = model.activation_ulps() * u, abs = model.activation_abs_ulps() * u;
          ey = lip * ex + (detail::exact_activation(op.activation) ? u * y + tiny : rel * y + abs);
          // A bounded activation cannot be further off than its range.
          if (op.activation == modules::Activation::Tanh) ey = ey.clamp_max(2.0);
          if (op.activation == modules::Activation::Sigmoid) ey = ey.clamp_max(1.0);
          if (op.activation == modules::Activation::GELU || op.activation == modules::Activation::SiLU ||
              op.activation == modules::Activation::ELU) {
            // x * g(x) and expm1-based kernels: their error scales with |x| too.
            ey = ey + rel * computed[in].to(torch::kFloat64).abs();
          }
          break;
        }
        case OpKind::LayerNorm: {
          // z = (x - mean) / sigma moves by at most (2 + |z|) max(e_x) / sigma under an input
          // error (mean and sigma are 1-Lipschitz in the max norm). Its own rounding: the mean's
          // error (gamma_n of the mean magnitude) over sigma, the subtraction's and division's
          // gamma (|z| + 1), and the variance's: a one-pass E[x^2] - mean^2 (ONNX Runtime) is off
          // by gamma_{2n} (mean^2 + var), which moves sigma, hence z, by half that relative to var.
          // Then y = z * w + b rounds twice.
          const torch::Tensor xd = computed[in].to(torch::kFloat64);
          const int64_t n = xd.size(-1);
          const torch::Tensor var = xd.var(-1, /*unbiased=*/false, /*keepdim=*/true);
          const torch::Tensor sigma = (var + op.eps).sqrt();
          const torch::Tensor mean = xd.mean(-1, true).abs();
          torch::Tensor z = ((xd - xd.mean(-1, true)) / sigma).abs();
          torch::Tensor ex_max = std::get<0>(ex.max(-1, true));
          const double g = detail::gamma(2 * n + 8, u);
          torch::Tensor ez = (2 + z) * ex_max / (sigma - ex_max).clamp_min(std::sqrt(op.eps)) +
                             g * (z + 1 + xd.abs().mean(-1, true) / sigma) +
                             g * z * (1 + mean.pow(2) / (var + op.eps)) / 2;
          ey = c(op.weight) * ez + 2 * u * ((z + ez) * c(op.weight) + c(op.bias)) + tiny;
          break;
        }
        case OpKind::Slice: ey = ex.slice(-1, op.begin, op.end); break;
        case OpKind::Mul: ey = ex * c(op.weight) + u * y + tiny; break;
        case OpKind::Add:
        case OpKind::Sub: ey = ex + u * y; break;
        case OpKind::Div: ey = ex / c(op.weight) + u * y + tiny; break;
        case OpKind::Clamp: ey = ex.clone(); break;
        case OpKind::ArgMax:
        case OpKind::OneHotMax: ey = torch::zeros(computed[out].sizes(), torch::kFloat64); break;
      }
      if (!values[out].integer) broken = broken | ~torch::isfinite(computed[out]).all(-1, /*keepdim=*/true);
      e[out] = ey;
    }
    const torch::Tensor inf = torch::full({}, std::numeric_limits<double>::infinity(), torch::kFloat64);
    for (size_t i = 0; i < e.size(); ++i) {
      if (values[i].integer) continue;
      e[i] = torch::where(broken, inf, e[i]);
    }
    return e;
  }

  /// Compares `actual` (another runtime's actions for `observation`) with `expected` (rlobj's,
  /// e.g. the actor's own or `run`'s): each continuous action element must be within twice
  /// `error_bound` (both runtimes are within it of the exact value). An integer action (argmax,
  /// one-hot) is right when every action it takes has a value within twice the values' bound of
  /// the best one (a near tie may go either way).
  CheckResult check(const torch::Tensor& observation, const torch::Tensor& expected, const torch::Tensor& actual,
                    const ErrorModel& model = {}) const {
    const auto computed = run_all(observation);
    const auto bound = error_bound(computed, model);
    const size_t out = static_cast<size_t>(output);
    const int64_t rows = computed[0].size(0);
    const torch::Tensor a = actual.reshape(computed[out].sizes());
    const torch::Tensor b = expected.reshape(computed[out].sizes());
    CheckResult r;
    torch::Tensor diff, tol;
    if (!action().integer) {
      TORCH_CHECK_VALUE(actual.numel() == computed[out].numel() && expected.numel() == computed[out].numel(),
                        "PolicyProgram.check: expected ", computed[out].numel(), " action numbers, got ",
                        expected.numel(), " and ", actual.numel());
      diff = (a.to(torch::kFloat64) - b.to(torch::kFloat64)).abs();
      tol = 2 * bound[out];
      // A NaN anywhere fails.
      diff = torch::where(torch::isnan(diff), torch::full({}, std::numeric_limits<double>::infinity(), diff.options()), diff);
    } else {
      // The values the greedy choice was made on, and their bound.
      const Op& last = *std::find_if(ops.begin(), ops.end(), [&](const Op& op) { return op.output == output; });
      const torch::Tensor q = computed[static_cast<size_t>(last.input)].to(torch::kFloat64);
      const torch::Tensor eq = bound[static_cast<size_t>(last.input)];
      const torch::Tensor best = std::get<0>(q.max(-1, true));
      // Each taken action's shortfall from the best value.
      auto shortfall = [&](const torch::Tensor& act) {
        if (action().scalar) {
          TORCH_CHECK_VALUE(act.numel() == rows, "PolicyProgram.check: expected ", rows, " action indices, got ", act.numel());
          torch::Tensor idx = act.reshape({rows, 1}).to(torch::kLong);
          TORCH_CHECK_VALUE((idx >= 0).all().item<bool>() && (idx < q.size(-1)).all().item<bool>(),
                            "PolicyProgram.check: an action index is outside [0, ", q.size(-1), ")");
          return (best - q.gather(-1, idx)).squeeze(-1);
        }
        TORCH_CHECK_VALUE(act.numel() == q.numel(), "PolicyProgram.check: expected ", q.numel(), " one-hot numbers, got ",
                          act.numel());
        torch::Tensor taken = act.reshape(q.sizes()) != 0;
        torch::Tensor gap = torch::where(taken, best - q, torch::zeros_like(q));
        // A row with no action taken fails.
        gap = torch::where(taken.any(-1, true), gap, torch::full({}, std::numeric_limits<double>::infinity(), q.options()));
        return std::get<0>(gap.max(-1));
      };
      diff = torch::max(shortfall(a), shortfall(b));
      tol = 4 * std::get<0>(eq.max(-1));
      if (last.normalized_logits) {
        // The actor chose on logits - logsumexp(logits) (and their softmax): that subtraction
        // and the exp can merge values within a few roundings of |logsumexp| + |logit|, which is
        // at most 2 max|logit| + log(n).
        const double u = detail::unit_roundoff(dtype);
        tol = tol + 8 * u * (2 * std::get<0>(q.abs().max(-1)) + std::log(static_cast<double>(q.size(-1))));
      }
    }
    torch::Tensor ratio = diff / tol.clamp_min(std::numeric_limits<double>::min());
    ratio = torch::where(diff == 0, torch::zeros_like(ratio), ratio);
    // A tolerance that overflowed (an infinite intermediate) proves nothing: only an identical
    // answer passes.
    ratio = torch::where(torch::isfinite(tol) | (diff == 0), ratio,
                         torch::full({}, std::numeric_limits<double>::infinity(), ratio.options()));
    const torch::Tensor per_row = std::get<0>(ratio.reshape({rows, -1}).max(-1));
    r.max_abs_diff = diff.max().item<double>();
    r.worst_row = per_row.argmax().item<int64_t>();
    r.max_ratio = per_row.max().item<double>();
    r.ok = r.max_ratio <= 1.0;
    return r;
  }
};

/// Options of `lower_policy`.
struct LowerOptions {
  /// The observation key the program reads (the actor must read only it).
  TORCH_ARG(std::string, in_key) = "observation";
  /// The action key whose value the program returns.
  TORCH_ARG(std::string, out_key) = "action";
  /// Folded in front: the program takes raw observations and normalises them as this transform
  /// does (it must be initialised and normalise `in_key`).
  TORCH_ARG(std::shared_ptr<const envs::ObservationNorm>, observation_norm) = nullptr;
};

namespace detail {

/// Builds a `PolicyProgram` from an actor's modules (see `lower_policy`).
class Lowerer {
 public:
  Lowerer(torch::ScalarType dtype, int64_t in_size) {
    p_.dtype = dtype;
    p_.values.push_back(Value{in_size, false, false});
  }

  PolicyProgram& program() { return p_; }
  void set(const std::string& key, int value) { keys_[key] = value; }
  int get(const std::string& key, const std::string& who) const {
    auto it = keys_.find(key);
    TORCH_CHECK_VALUE(it != keys_.end(), "export: ", who, " reads \"", key,
                      "\", which is neither the observation nor written by an earlier module");
    auto why = opaque_.find(it->second);
    TORCH_CHECK_VALUE(why == opaque_.end(), "export: ", who, " reads \"", key, "\": ", why == opaque_.end() ? "" : why->second);
    return it->second;
  }

  /// A value the exporters cannot compute (an exploration-only output), with the reason.
  int opaque(std::string why, int64_t size = 1) {
    const int id = new_value(Value{size, false, false});
    opaque_[id] = std::move(why);
    return id;
  }

  int emit(Op op, Value out) {
    op.output = new_value(out);
    p_.ops.push_back(std::move(op));
    return p_.ops.back().output;
  }
  /// `t` as a program constant for `n` features: on the CPU, in the program's dtype, a scalar
  /// (shape []) or one value per feature (shape [n]), finite.
  torch::Tensor constant(const torch::Tensor& t, int64_t n, const std::string& origin) const {
    torch::Tensor c = t.detach().to(torch::kCPU, p_.dtype).reshape({-1});
    TORCH_CHECK_VALUE(c.numel() == 1 || c.numel() == n, "export: ", origin, ": a constant of ", c.numel(),
                      " values for ", n, " features");
    if (c.numel() == 1) c = c.reshape({});
    TORCH_CHECK_VALUE(torch::isfinite(c).all().item<bool>(), "export: ", origin, " has a non-finite constant");
    return c.clone();
  }
  int constant_op(OpKind kind, int input, const torch::Tensor& value, const std::string& origin) {
    const int64_t n = size(input);
    Op op(kind, input, origin);
    op.weight = constant(value, n, origin);
    return emit(std::move(op), Value{n, false, false});
  }
  int64_t size(int v) const { return p_.values.at(static_cast<size_t>(v)).size; }

  /// A TensorDict module.
  void module(const modules::TensorDictModuleBase& m, const std::string& path) {
    using namespace modules;
    const std::string where = describe(m, path);
    if (const auto* q = dynamic_cast<const QValueModuleImpl*>(&m)) return qvalue(*q, where);
    if (const auto* s = dynamic_cast<const TensorDictSequentialImpl*>(&m)) {
      for (size_t i = 0; i < s->size(); ++i) module(*(*s)[i], join(path, "module." + std::to_string(i)));
      return;
    }
    if (const auto* a = dynamic_cast<const ProbabilisticActorImpl*>(&m)) return probabilistic(*a, path, where);
    if (const auto* t = dynamic_cast<const TanhModuleImpl*>(&m)) return tanh_module(*t, where);
    if (const auto* td = dynamic_cast<const TensorDictModuleImpl*>(&m)) {
      TORCH_CHECK_VALUE(td->in_keys().size() == 1, "export: ", where, " reads ", td->in_keys().size(),
                        " keys; the exporters take modules of one input");
      const int x = get(td->in_keys()[0].str(), where);
      auto outs = tensor_module(*td->module(), x, join(path, "module"), td->out_keys().size());
      TORCH_CHECK_VALUE(outs.size() == td->out_keys().size(), "export: ", where, " returns ", outs.size(),
                        " tensors for ", td->out_keys().size(), " out_keys");
      if (td->safe() && td->spec() && outs.size() == 1) {
        TORCH_CHECK_VALUE(dynamic_cast<const Bounded*>(td->spec().get()) != nullptr, "export: ", where,
                          " projects into a spec that is not Bounded; the exporters clamp into Bounded specs only");
        // One box for every row (action_bounds refuses rows that differ), scalar or per feature.
        const auto [low, high] = rlobj::detail::action_bounds(*td->spec(), "export");
        const int lo = outs[0];
        Op op(OpKind::Clamp, lo, where + " (safe: clamped into its spec)");
        op.weight = constant(low, size(lo), op.origin);
        op.bias = constant(high, size(lo), op.origin);
        outs[0] = emit(std::move(op), Value{size(lo), false, false});
      }
      for (size_t i = 0; i < outs.size(); ++i) set(td->out_keys()[i].str(), outs[i]);
      return;
    }
    TORCH_CHECK_VALUE(false, "export: unsupported module ", where,
                      "; the exporters take TensorDictModule/Actor/ValueOperator, TensorDictSequential, TanhModule, "
                      "ProbabilisticActor and QValueActor/QValueModule (exploration modules are not part of a "
                      "deployed policy: export the actor)");
  }

  /// A LibTorch module inside a `TensorDictModule`, applied to value `x`.
  std::vector<int> tensor_module(const torch::nn::Module& m, int x, const std::string& path, size_t n_out) {
    using namespace modules;
    const std::string where = describe(m, path);
    if (const auto* mlp = dynamic_cast<const MLPImpl*>(&m)) {
      const auto& linears = mlp->linears();
      for (size_t i = 0; i < linears.size(); ++i) {
        const std::string layer = where + " layer " + std::to_string(i);
        x = linear(*linears[i], x, layer);
        if (i + 1 < linears.size() || mlp->options.activate_last_layer()) {
          // Dropout is the identity at inference.
          if (mlp->options.layer_norm()) x = layer_norm(*mlp->norms().at(i), x, layer + " LayerNorm");
          x = activation(x, mlp->options.activation(), mlp->options.negative_slope(), layer + " activation");
        }
      }
      return {x};
    }
    if (const auto* l = dynamic_cast<const torch::nn::LinearImpl*>(&m)) return {linear(*l, x, where)};
    if (const auto* seq = dynamic_cast<const torch::nn::SequentialImpl*>(&m)) {
      const auto children = seq->named_children();
      for (const auto& item : children) {
        auto outs = tensor_module(*item.value(), x, join(path, item.key()), 1);
        TORCH_CHECK_VALUE(outs.size() == 1, "export: ", where, ": a Sequential's child returns several tensors");
        x = outs[0];
      }
      return {x};
    }
    if (const auto* ln = dynamic_cast<const torch::nn::LayerNormImpl*>(&m)) return {layer_norm(*ln, x, where)};
    if (dynamic_cast<const torch::nn::DropoutImpl*>(&m) || dynamic_cast<const torch::nn::IdentityImpl*>(&m)) return {x};
    if (dynamic_cast<const torch::nn::TanhImpl*>(&m)) return {activation(x, Activation::Tanh, 0, where)};
    if (dynamic_cast<const torch::nn::ReLUImpl*>(&m)) return {activation(x, Activation::ReLU, 0, where)};
    if (dynamic_cast<const torch::nn::SigmoidImpl*>(&m)) return {activation(x, Activation::Sigmoid, 0, where)};
    if (dynamic_cast<const torch::nn::SiLUImpl*>(&m)) return {activation(x, Activation::SiLU, 0, where)};
    if (const auto* g = dynamic_cast<const torch::nn::GELUImpl*>(&m)) {
      TORCH_CHECK_VALUE(g->options.approximate() == "none", "export: ", where, " uses approximate=\"",
                        g->options.approximate(), "\"; the exporters take the exact GELU");
      return {activation(x, Activation::GELU, 0, where)};
    }
    if (const auto* e = dynamic_cast<const torch::nn::ELUImpl*>(&m)) {
      TORCH_CHECK_VALUE(e->options.alpha() == 1.0, "export: ", where, " has alpha ", e->options.alpha(),
                        "; the exporters take ELU with alpha 1");
      return {activation(x, Activation::ELU, 0, where)};
    }
    if (const auto* lr = dynamic_cast<const torch::nn::LeakyReLUImpl*>(&m)) {
      return {activation(x, Activation::LeakyReLU, lr->options.negative_slope(), where)};
    }
    if (dynamic_cast<const NormalParamExtractorImpl*>(&m)) {
      TORCH_CHECK_VALUE(n_out == 2, "export: ", where, " returns (loc, scale) but its module writes ", n_out, " keys");
      const int64_t n = size(x);
      TORCH_CHECK_VALUE(n % 2 == 0, "export: ", where, " gets ", n, " features; it needs an even number");
      Op op(OpKind::Slice, x, where + " (loc)");
      op.begin = 0;
      op.end = n / 2;
      const int loc = emit(std::move(op), Value{n / 2, false, false});
      return {loc, opaque(where + " computes the scale, which a deterministic policy does not use; "
                                  "the exporters export deterministic policies", n / 2)};
    }
    if (dynamic_cast<const AddStateIndependentNormalScaleImpl*>(&m)) {
      TORCH_CHECK_VALUE(n_out == 2, "export: ", where, " returns (loc, scale) but its module writes ", n_out, " keys");
      return {x, opaque(where + " computes the scale, which a deterministic policy does not use; the exporters "
                                "export deterministic policies", size(x))};
    }
    TORCH_CHECK_VALUE(false, "export: unsupported module ", where,
                      "; inside a TensorDictModule the exporters take MLP, Linear, Sequential, LayerNorm, Dropout, "
                      "Identity, the activations MLP supports, NormalParamExtractor and AddStateIndependentNormalScale");
  }

 private:
  static std::string join(const std::string& a, const std::string& b) { return a.empty() ? b : a + "." + b; }
  static std::string describe(const torch::nn::Module& m, const std::string& path) {
    return m.name() + " at \"" + (path.empty() ? std::string("(the actor)") : path) + "\"";
  }

  int new_value(Value v) {
    p_.values.push_back(v);
    return static_cast<int>(p_.values.size()) - 1;
  }

  int linear(const torch::nn::LinearImpl& l, int x, const std::string& origin) {
    TORCH_CHECK_VALUE(l.weight.dim() == 2 && l.weight.size(1) == size(x), "export: ", origin, " takes ",
                      l.weight.size(1), " features, gets ", size(x));
    Op op(OpKind::Linear, x, origin);
    op.weight = l.weight.detach().to(torch::kCPU, p_.dtype).clone();
    if (l.bias.defined()) op.bias = l.bias.detach().to(torch::kCPU, p_.dtype).clone();
    TORCH_CHECK_VALUE(torch::isfinite(op.weight).all().item<bool>() &&
                          (!op.bias.defined() || torch::isfinite(op.bias).all().item<bool>()),
                      "export: ", origin, " has non-finite parameters");
    return emit(std::move(op), Value{l.weight.size(0), false, false});
  }
  int layer_norm(const torch::nn::LayerNormImpl& ln, int x, const std::string& origin) {
    const auto& shape = ln.options.normalized_shape();
    TORCH_CHECK_VALUE(shape.size() == 1 && shape[0] == size(x), "export: ", origin, " normalises shape [",
                      rlobj::detail::shape_str(shape), "]; the exporters normalise the ", size(x), " features");
    Op op(OpKind::LayerNorm, x, origin);
    op.eps = ln.options.eps();
    op.weight = ln.options.elementwise_affine() ? ln.weight.detach().to(torch::kCPU, p_.dtype).clone()
                                                : torch::ones({size(x)}, p_.dtype);
    op.bias = ln.options.elementwise_affine() ? ln.bias.detach().to(torch::kCPU, p_.dtype).clone()
                                              : torch::zeros({size(x)}, p_.dtype);
    return emit(std::move(op), Value{size(x), false, false});
  }
  int activation(int x, modules::Activation a, double slope, const std::string& origin) {
    if (a == modules::Activation::Identity) return x;
    Op op(OpKind::Activation, x, origin);
    op.activation = a;
    op.negative_slope = slope;
    return emit(std::move(op), Value{size(x), false, false});
  }

  // TorchRL's order: low + (high - low) * (tanh(x) + 1) / 2, tanh(x) clamped first with `clamp`.
  void tanh_module(const modules::TanhModuleImpl& t, const std::string& where) {
    for (size_t i = 0; i < t.in_keys().size(); ++i) {
      int x = activation(get(t.in_keys()[i].str(), where), modules::Activation::Tanh, 0, where + " tanh");
      const torch::Tensor& low = t.low(i);
      if (t.clamp()) {
        const double r = modules::TanhModuleImpl::resolution(low.scalar_type());
        Op clamp(OpKind::Clamp, x, where + " clamp");
        clamp.weight = constant(torch::full({}, -1 + r, torch::kFloat64), size(x), clamp.origin);
        clamp.bias = constant(torch::full({}, 1 - r, torch::kFloat64), size(x), clamp.origin);
        x = emit(std::move(clamp), Value{size(x), false, false});
      }
      x = constant_op(OpKind::Add, x, torch::ones({}, low.options()), where + " + 1");
      x = constant_op(OpKind::Mul, x, t.high(i) - low, where + " * (high - low)");
      x = constant_op(OpKind::Div, x, torch::full({}, 2, low.options()), where + " / 2");
      x = constant_op(OpKind::Add, x, low, where + " + low");
      set(t.out_keys()[i].str(), x);
    }
  }

  void qvalue(const modules::QValueModuleImpl& q, const std::string& where) {
    const auto& o = q.options();
    TORCH_CHECK_VALUE(!o.action_mask_key(), "export: ", where, " reads an action mask \"",
                      o.action_mask_key() ? o.action_mask_key()->str() : "",
                      "\"; the exporters take policies of the observation alone");
    const int values = get(o.action_value_key().str(), where);
    Op op(o.action_space() == modules::ActionSpace::OneHot ? OpKind::OneHotMax : OpKind::ArgMax, values, where);
    const bool one_hot = op.kind == OpKind::OneHotMax;
    const int action = emit(std::move(op), Value{one_hot ? size(values) : 1, true, !one_hot});
    set(o.action_key().str(), action);
    set(o.action_value_key().str(), values);
    set(o.chosen_action_value_key().str(), opaque(where + " writes the chosen action's value, which the exporters "
                                                          "do not compute (export the action)"));
  }

  void probabilistic(const modules::ProbabilisticActorImpl& a, const std::string& path, const std::string& where) {
    using namespace modules;
    module(*a.module(), join(path, "module.0"));
    const auto& keys = a.options().in_keys();
    // The distribution's type and options, from one built on placeholder parameters.
    std::vector<torch::Tensor> placeholders;
    std::vector<int> params;
    for (const auto& k : keys) {
      auto it = keys_.find(k.str());
      const int id = it == keys_.end() ? -1 : it->second;
      params.push_back(id);
      placeholders.push_back(torch::ones({1, id < 0 ? 1 : std::max<int64_t>(size(id), 1)}, p_.dtype));
    }
    std::shared_ptr<Distribution> dist = a.factory()(placeholders);
    TORCH_CHECK(dist != nullptr, "export: ", where, ": the distribution factory returned nothing");
    const std::string name = dist->name();
    auto param = [&](size_t i) { return get(keys.at(i).str(), where + " (" + name + ")"); };
    int action = -1;
    if (const auto* tn = dynamic_cast<const TanhNormal*>(dist.get())) {
      // mode = squash(loc'): the constructor's loc' then squash, operation for operation.
      int x = param(0);
      const std::string w = where + " (TanhNormal mode)";
      if (tn->options().tanh_loc()) {
        const torch::Tensor up = torch::full({}, tn->options().upscale(), torch::kFloat64);
        x = constant_op(OpKind::Div, x, up, w + " tanh_loc");
        x = activation(x, Activation::Tanh, 0, w + " tanh_loc");
        x = constant_op(OpKind::Mul, x, up, w + " tanh_loc");
      }
      if (tn->affine_scale().defined()) {
        x = constant_op(OpKind::Add, x, tn->affine_scale(), w + " loc shift");
        x = constant_op(OpKind::Add, x, tn->low(), w + " loc shift");
      }
      x = activation(x, Activation::Tanh, 0, w + " squash");
      Op clamp(OpKind::Clamp, x, w + " clamp");
      clamp.weight = constant(torch::full({}, -tn->limit(), torch::kFloat64), size(x), clamp.origin);
      clamp.bias = constant(torch::full({}, tn->limit(), torch::kFloat64), size(x), clamp.origin);
      x = emit(std::move(clamp), Value{size(x), false, false});
      if (tn->affine_scale().defined()) {
        x = constant_op(OpKind::Mul, x, tn->affine_scale(), w + " affine");
        x = constant_op(OpKind::Add, x, tn->affine_loc(), w + " affine");
      }
      action = x;
    } else if (dynamic_cast<const IndependentNormal*>(dist.get()) != nullptr || dynamic_cast<const Delta*>(dist.get()) != nullptr) {
      action = param(0);  // the location / the parameter itself
    } else if (dynamic_cast<const modules::OneHotCategorical*>(dist.get()) != nullptr) {
      // The mode compares logits - logsumexp(logits): the order of the logits up to rounding
      // (near ties: see Op::normalized_logits).
      const int logits = param(0);
      Op op(OpKind::OneHotMax, logits, where + " (OneHotCategorical mode)");
      op.normalized_logits = true;
      action = emit(std::move(op), Value{size(logits), true, false});
    } else if (dynamic_cast<const modules::Categorical*>(dist.get()) != nullptr) {
      const int logits = param(0);
      Op op(OpKind::ArgMax, logits, where + " (Categorical mode)");
      op.normalized_logits = true;
      action = emit(std::move(op), Value{1, true, true});
    } else {
      TORCH_CHECK_VALUE(false, "export: ", where, " samples from a ", name,
                        ", which the exporters do not take (TanhNormal, IndependentNormal, Normal, Delta, Categorical, "
                        "OneHotCategorical)");
    }
    set(a.options().out_key().str(), action);
    if (a.options().return_log_prob()) {
      set(a.options().log_prob_key().str(), opaque(where + " writes a log-probability, which the exporters do not compute"));
    }
  }

  PolicyProgram p_;
  std::map<std::string, int> keys_;
  std::map<int, std::string> opaque_;
};

/// Keeps only the operations the action needs, renumbering the values in order.
inline PolicyProgram prune(const PolicyProgram& p) {
  std::vector<bool> needed(p.values.size(), false);
  needed[static_cast<size_t>(p.output)] = true;
  for (size_t i = p.ops.size(); i-- > 0;) {
    if (needed[static_cast<size_t>(p.ops[i].output)]) needed[static_cast<size_t>(p.ops[i].input)] = true;
  }
  needed[0] = true;
  std::vector<int> id(p.values.size(), -1);
  PolicyProgram q;
  q.dtype = p.dtype;
  q.in_key = p.in_key;
  q.out_key = p.out_key;
  for (size_t i = 0; i < p.values.size(); ++i) {
    if (needed[i]) {
      id[i] = static_cast<int>(q.values.size());
      q.values.push_back(p.values[i]);
    }
  }
  for (const auto& op : p.ops) {
    if (!needed[static_cast<size_t>(op.output)]) continue;
    Op o = op;
    o.input = id[static_cast<size_t>(op.input)];
    o.output = id[static_cast<size_t>(op.output)];
    q.ops.push_back(std::move(o));
  }
  q.output = id[static_cast<size_t>(p.output)];
  return q;
}

}  // namespace detail

/// Lowers `actor` (observation -> action, deterministic) into a `PolicyProgram`, then checks it:
/// the program's actions on `example_observation` ([batch, features], floating; its dtype is the
/// program's) must match the actor's under `ExplorationType::Deterministic` within the program's
/// own derived tolerance (`PolicyProgram::check`), or a `c10::Error` says where they differ (an
/// actor whose modules do more than their type says, e.g. a subclass with its own `forward`).
inline PolicyProgram lower_policy(const modules::TensorDictModuleBase& actor, const torch::Tensor& example_observation,
                                  const LowerOptions& options = {}) {
  TORCH_CHECK_VALUE(example_observation.defined() && example_observation.dim() == 2 &&
                        example_observation.is_floating_point() && example_observation.size(0) >= 1,
                    "export: the example observation must be a floating-point [batch, features] tensor, got ",
                    example_observation.defined() ? rlobj::detail::shape_str(example_observation.sizes()) : "undefined");
  const int64_t n = example_observation.size(1);
  detail::Lowerer lower(example_observation.scalar_type(), n);
  int x = 0;
  if (const auto& norm = options.observation_norm()) {
    TORCH_CHECK_VALUE(norm->initialized(), "export: the ObservationNorm is not initialised (loc and scale unset)");
    const auto& keys = norm->options().in_keys();
    TORCH_CHECK_VALUE(std::find(keys.begin(), keys.end(), options.in_key()) != keys.end(), "export: the ObservationNorm "
                      "does not normalise \"", options.in_key(), "\"");
    if (norm->options().standard_normal()) {
      x = lower.constant_op(OpKind::Sub, x, norm->loc(), "ObservationNorm loc");
      x = lower.constant_op(OpKind::Div, x, norm->scale(), "ObservationNorm scale");
    } else {
      x = lower.constant_op(OpKind::Mul, x, norm->scale(), "ObservationNorm scale");
      x = lower.constant_op(OpKind::Add, x, norm->loc(), "ObservationNorm loc");
    }
  }
  lower.set(options.in_key(), x);
  lower.module(actor, "");
  PolicyProgram& raw = lower.program();
  raw.in_key = options.in_key();
  raw.out_key = options.out_key();
  raw.output = lower.get(options.out_key(), "the exported policy");
  PolicyProgram program = detail::prune(raw);
  TORCH_CHECK_VALUE(program.output != 0, "export: the action \"", options.out_key(), "\" is the observation itself");

  // The program against the actor itself.
  TensorDict td({example_observation.size(0)});
  td.set(options.in_key(), options.observation_norm() ? options.observation_norm()->apply(example_observation)
                                                      : example_observation);
  torch::Tensor expected;
  {
    torch::NoGradGuard no_grad;
    modules::SetExplorationType deterministic(modules::ExplorationType::Deterministic);
    auto& mutable_actor = const_cast<modules::TensorDictModuleBase&>(actor);
    // Every module's own training flag, restored afterwards (train() recurses: parents first,
    // as modules() lists them, then each child as it was).
    std::vector<std::pair<torch::nn::Module*, bool>> modes{{&mutable_actor, mutable_actor.is_training()}};
    for (const auto& m : mutable_actor.modules(/*include_self=*/false)) modes.emplace_back(m.get(), m->is_training());
    auto restore = [&] {
      for (auto& [m, training] : modes) m->train(training);
    };
    mutable_actor.eval();
    try {
      expected = mutable_actor.forward(td).get(options.out_key());
    } catch (...) {
      restore();
      throw;
    }
    restore();
  }
  const torch::Tensor got = program.run(example_observation);
  TORCH_CHECK_VALUE(expected.numel() == got.numel(), "export: the actor's \"", options.out_key(), "\" has shape ",
                    rlobj::detail::shape_str(expected.sizes()), ", the lowered program's ",
                    rlobj::detail::shape_str(got.sizes()));
  const CheckResult r = program.check(example_observation, expected, got);
  TORCH_CHECK(r.ok, "export: the lowered program differs from the actor on example row ", r.worst_row, " by ",
              r.max_abs_diff, " (", r.max_ratio, " times the derived tolerance): some module computes more than "
              "its type says");
  return program;
}

/// `lower_policy` on a holder (`Actor`, `ProbabilisticActor`, `TensorDictSequential`, ...).
template <typename Impl, typename = std::enable_if_t<std::is_base_of<modules::TensorDictModuleBase, Impl>::value>>
PolicyProgram lower_policy(const torch::nn::ModuleHolder<Impl>& actor, const torch::Tensor& example_observation,
                           const LowerOptions& options = {}) {
  return lower_policy(static_cast<const modules::TensorDictModuleBase&>(*actor), example_observation, options);
}

}  // namespace deploy
}  // namespace rlobj
