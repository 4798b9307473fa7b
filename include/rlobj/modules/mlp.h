#pragma once

/// \file
/// `rlobj::modules::MLP`, TorchRL's `torchrl.modules.MLP`: `Linear, act, Linear, act, ...,
/// Linear`, Tanh by default, children named like a `torch::nn::Sequential` so that parameter
/// names are `0.weight, 0.bias, 2.weight, ...`.

#include <cctype>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <ostream>
#include <string>
#include <vector>

#include <ATen/core/Generator.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/util/Exception.h>
#include <rlobj/detail/vec_tanh.h>
#include <torch/autograd.h>
#include <torch/nn/cloneable.h>
#include <torch/nn/module.h>
#include <torch/nn/modules/activation.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/modules/normalization.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>
#include <torch/version.h>

namespace rlobj {
namespace modules {

/// The non-linearity between layers. TorchRL's default is `Tanh`.
///
/// Measured on this project's reference machine (LibTorch 1.13 from Debian, one thread):
/// element-wise `tanh` on 256x32 floats takes ~19 us, `relu` ~1 us, `sigmoid` ~5 us;
/// see the README's benchmark section before picking one for speed.
enum class Activation { Tanh, ReLU, ELU, LeakyReLU, GELU, Sigmoid, SiLU, Identity };

/// The name TorchRL / PyTorch uses for `a` (`"Tanh"`, `"ReLU"`...).
inline const char* activation_name(Activation a) {
  switch (a) {
    case Activation::Tanh: return "Tanh";
    case Activation::ReLU: return "ReLU";
    case Activation::ELU: return "ELU";
    case Activation::LeakyReLU: return "LeakyReLU";
    case Activation::GELU: return "GELU";
    case Activation::Sigmoid: return "Sigmoid";
    case Activation::SiLU: return "SiLU";
    case Activation::Identity: return "Identity";
  }
  return "?";
}

/// Parses `"tanh"`, `"relu"`, ... (case-insensitive), for command lines and configs.
inline Activation activation_from_string(const std::string& name) {
  std::string n;
  for (char c : name) n.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
  if (n == "tanh") return Activation::Tanh;
  if (n == "relu") return Activation::ReLU;
  if (n == "elu") return Activation::ELU;
  if (n == "leakyrelu" || n == "leaky_relu") return Activation::LeakyReLU;
  if (n == "gelu") return Activation::GELU;
  if (n == "sigmoid") return Activation::Sigmoid;
  if (n == "silu") return Activation::SiLU;
  if (n == "identity") return Activation::Identity;
  TORCH_CHECK_VALUE(false, "unknown activation \"", name,
                    "\"; expected one of tanh, relu, elu, leaky_relu, gelu, sigmoid, silu, identity");
}

namespace detail {

/// `a(x)`, out of place, with LibTorch's own op for each activation (`MLP`'s per-layer path).
inline torch::Tensor activate(const torch::Tensor& x, Activation a, double negative_slope) {
  switch (a) {
    case Activation::Tanh: return torch::tanh(x);
    case Activation::ReLU: return torch::relu(x);
    case Activation::ELU: return torch::elu(x);
    case Activation::LeakyReLU: return torch::leaky_relu(x, negative_slope);
    case Activation::GELU: return torch::gelu(x);
    case Activation::Sigmoid: return torch::sigmoid(x);
    case Activation::SiLU: return torch::silu(x);
    case Activation::Identity: return x;
  }
  return x;
}

/// Whether `MLP`'s fused path differentiates `a` by hand (from the activation's output, as
/// autograd's own formulas do). ELU, GELU and SiLU need their input and take the plain path;
/// so does a LeakyReLU with a negative slope (its output does not tell the input's sign).
inline bool fusable_activation(Activation a, double negative_slope) {
  switch (a) {
    case Activation::Tanh:
    case Activation::ReLU:
    case Activation::Sigmoid:
    case Activation::Identity: return true;
    case Activation::LeakyReLU: return negative_slope >= 0.0;
    default: return false;
  }
}

/// `x = act(x)` in place: the same kernels as the out-of-place ops, hence the same values. With
/// `fast_tanh`, Tanh's float32 CPU kernel is rlobj's vectorised one instead (`detail/vec_tanh.h`).
inline void activate_inplace(torch::Tensor& x, Activation a, double negative_slope, bool fast_tanh = false) {
  switch (a) {
    case Activation::Tanh:
      if (fast_tanh) {
        rlobj::detail::tanh_inplace(x);
      } else {
        x.tanh_();
      }
      break;
    case Activation::ReLU: x.relu_(); break;
    case Activation::Sigmoid: x.sigmoid_(); break;
    case Activation::LeakyReLU: at::leaky_relu_(x, negative_slope); break;
    default: break;  // Identity (others never reach the fused path)
  }
}

/// ``grad * act'(.)`` from the activation's output `y`: the ops autograd's ReLU/Tanh/Sigmoid/
/// LeakyReLU backward nodes run.
inline torch::Tensor activation_backward(const torch::Tensor& grad, const torch::Tensor& y, Activation a,
                                         double negative_slope) {
  switch (a) {
    case Activation::Tanh: return at::tanh_backward(grad, y);
    case Activation::ReLU: return at::threshold_backward(grad, y, 0);
    case Activation::Sigmoid: return at::sigmoid_backward(grad, y);
    case Activation::LeakyReLU: return at::leaky_relu_backward(grad, y, negative_slope, /*self_is_result=*/true);
    default: return grad;
  }
}

/// A whole MLP as one autograd node: the forward runs `addmm` and an in-place activation per
/// layer with no graph recorded; the backward is written out (activation backward from the
/// saved output, `g^T x` for the weight, a row sum for the bias, `g W` for the input), the
/// same ops and operand layouts autograd's `AddmmBackward` uses for a `Linear`, so gradients
/// match the per-layer graph. Gradients of inputs that do not need them (a frozen copy's
/// weights, a detached input) are not computed.
///
/// `params` is `w0, [b0], w1, [b1], ...`; `layout` packs, per layer, whether it has a bias
/// (bit 0) and is activated (bit 1).
struct FusedMLPFunction : public torch::autograd::Function<FusedMLPFunction> {
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& input,
                               at::TensorList params, const std::vector<int64_t>& layout, int64_t activation,
                               double negative_slope, bool fast_tanh) {
    const auto act = static_cast<Activation>(activation);
    std::vector<torch::Tensor> saved;
    saved.reserve(1 + params.size() + layout.size());
    saved.push_back(input);
    torch::Tensor x = input;
    size_t j = 0;
    for (size_t i = 0; i < layout.size(); ++i) {
      const torch::Tensor& w = params[j++];
      saved.push_back(w);
      torch::Tensor y = (layout[i] & 1) ? at::addmm(params[j++], x, w.t()) : at::mm(x, w.t());
      if (layout[i] & 2) activate_inplace(y, act, negative_slope, fast_tanh);
      if (i + 1 < layout.size() || (layout[i] & 2)) saved.push_back(y);
      x = std::move(y);
    }
    ctx->save_for_backward(saved);
    ctx->saved_data["layout"] = c10::IValue(c10::List<int64_t>(layout));
    ctx->saved_data["activation"] = activation;
    ctx->saved_data["negative_slope"] = negative_slope;
    return x;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    // backward(create_graph=true) runs this with grad mode on: the activations were saved
    // without history, so a second derivative would silently miss terms.
    TORCH_CHECK(!at::GradMode::is_enabled(),
                "MLP: the fused path has no double backward (backward with create_graph); build the MLP with "
                "MLPOptions().fused(false)");
    const auto saved = ctx->get_saved_variables();
    const auto layout = ctx->saved_data["layout"].toIntVector();
    const auto act = static_cast<Activation>(ctx->saved_data["activation"].toInt());
    const double slope = ctx->saved_data["negative_slope"].toDouble();
    const size_t n = layout.size();
    // saved = input, then per layer its weight and (but for an unactivated last layer) its output.
    std::vector<size_t> weight_at(n), output_at(n), param_at(n);
    size_t k = 1, p = 1;  // edge 0 is the input
    for (size_t i = 0; i < n; ++i) {
      weight_at[i] = k++;
      output_at[i] = (i + 1 < n || (layout[i] & 2)) ? k++ : 0;
      param_at[i] = p;
      p += (layout[i] & 1) ? 2 : 1;
    }
    torch::autograd::variable_list grads(p + 4);  // + layout, activation, negative_slope, fast_tanh
    torch::Tensor g = grad_outputs[0];
    for (size_t i = n; i-- > 0;) {
      if (layout[i] & 2) g = activation_backward(g, saved[output_at[i]], act, slope);
      const torch::Tensor& x = i == 0 ? saved[0] : saved[output_at[i - 1]];
      if (ctx->needs_input_grad(param_at[i])) grads[param_at[i]] = g.t().mm(x);
      if ((layout[i] & 1) && ctx->needs_input_grad(param_at[i] + 1)) grads[param_at[i] + 1] = g.sum(0);
      if (i == 0 && !ctx->needs_input_grad(0)) break;
      g = g.mm(saved[weight_at[i]]);
      if (i == 0) grads[0] = g;
    }
    return grads;
  }
};

}  // namespace detail

/// Options for `MLP`, with TorchRL's keyword names.
///
/// ```
/// auto mlp = rlobj::modules::MLP(rlobj::modules::MLPOptions(3, 1).num_cells({32, 32}));
/// auto deep = rlobj::modules::MLPOptions(4, 1).num_cells({64}).depth(3);  // 64, 64, 64
/// ```
struct MLPOptions {
  /// An MLP from `in_features` inputs to `out_features` outputs; other options at their defaults.
  MLPOptions(int64_t in_features, int64_t out_features)
      : in_features_(in_features), out_features_(out_features) {}

  /// Size of the (concatenated) input.
  TORCH_ARG(int64_t, in_features);
  /// Size of the output.
  TORCH_ARG(int64_t, out_features);
  /// Hidden layer sizes. With `depth`, a single value is repeated `depth` times. Neither given
  /// means no hidden layer (TorchRL >= 0.7; older releases defaulted to three layers of 32):
  /// always pass it.
  TORCH_ARG(std::vector<int64_t>, num_cells) = {};
  /// Number of hidden layers (optional; must agree with `num_cells`).
  TORCH_ARG(std::optional<int64_t>, depth) = std::nullopt;
  /// Non-linearity after each hidden layer.
  TORCH_ARG(Activation, activation) = Activation::Tanh;
  /// Negative slope for `Activation::LeakyReLU`.
  TORCH_ARG(double, negative_slope) = 0.01;
  /// Also apply (dropout, norm and) the activation after the last layer.
  TORCH_ARG(bool, activate_last_layer) = false;
  /// Give the last layer a bias.
  TORCH_ARG(bool, bias_last_layer) = true;
  /// Dropout probability after each activated layer (0 = no dropout layer).
  TORCH_ARG(double, dropout) = 0.0;
  /// A `LayerNorm` after each activated layer (TorchRL's `norm_class=nn.LayerNorm`).
  TORCH_ARG(bool, layer_norm) = false;
  /// Draw the initial weights from this generator instead of LibTorch's global one (same
  /// distribution and draws: a generator seeded `s` gives the weights `torch::manual_seed(s)`
  /// would). The weights then depend only on this generator, whatever other threads draw
  /// meanwhile (LibTorch's `Linear` still advances the global generator with its default
  /// initialisation, which is overwritten). Pass one generator to several networks to draw
  /// them in sequence. `clone()` does not draw from it.
  TORCH_ARG(std::optional<at::Generator>, generator) = std::nullopt;
  /// Run the whole network as one autograd node (`detail::FusedMLPFunction`: no per-layer
  /// graph, in-place activations, a written-out backward; under `NoGradGuard`/`InferenceMode`
  /// a plain loop of `addmm` and in-place activations). Same values and gradients as the
  /// per-layer path. It applies when there is no dropout or layer norm and the activation is
  /// Tanh, ReLU, Sigmoid, Identity or a LeakyReLU with a slope >= 0; other MLPs take the
  /// per-layer path whatever this says, and so does every MLP under the JIT tracer or
  /// autocast. Turn it off for double backward (`create_graph`): the written-out backward is
  /// not itself differentiable, and says so with a `c10::Error`.
  TORCH_ARG(bool, fused) = true;
  /// On the fused path, compute float32 Tanh on the CPU with rlobj's vectorised tanh
  /// (`detail/vec_tanh.h`): about twice LibTorch's speed (9.6 against 18.2 us for 256x32 with
  /// AVX-512; a [32, 32] Tanh DDPG update ~15% faster) and within 1 ulp of the exact tanh, but
  /// not LibTorch's function: results move by a few ulps, and one TD3 parity scenario leaves
  /// its derived tolerance under two of the nine BLAS/ATen kernel combinations. Off by default.
  TORCH_ARG(bool, fast_tanh) = false;
};

/// A multi-layer perceptron with TorchRL's layout (see `MLPOptions`). Layers are registered
/// as children `"0"`, `"1"`, ... exactly as `torch::nn::Sequential` would, so parameter names
/// and `torch::save` archives line up with TorchRL's `state_dict` keys.
///
/// `clone()` (from `torch::nn::Cloneable`) returns an independent deep copy — that is how
/// target networks are made.
class MLPImpl : public torch::nn::Cloneable<MLPImpl> {
 public:
  /// A deep copy; unlike a fresh `MLP`, it does not draw from `options.generator()` (the copy
  /// constructor below leaves the generator out; the copy gets it back afterwards).
  std::shared_ptr<torch::nn::Module> clone(const c10::optional<torch::Device>& device = c10::nullopt) const override {
    auto copy = torch::nn::Cloneable<MLPImpl>::clone(device);
    std::dynamic_pointer_cast<MLPImpl>(copy)->options.generator(options.generator());
    // Training modes, module by module. LibTorch 1.13's Cloneable derives virtually from
    // Module, so its copy leaves the flag at its default; 2.x copies only the top one.
    // named_modules() lists parents before children, and train() recurses, so setting each
    // in that order leaves every module as it is here.
    // (include_self=false: named_modules() on the module itself needs a shared_ptr owner.)
    copy->train(is_training());
    const auto mine = named_modules("", /*include_self=*/false);
    const auto theirs = copy->named_modules("", /*include_self=*/false);
    for (const auto& item : mine) {
      if (const auto* other = theirs.find(item.key())) {
        (*other)->train(item.value()->is_training());
      }
    }
    return copy;
  }
  /// What `Cloneable::clone` copies before it calls `reset()` on the copy: everything but the
  /// generator, so that reset draws from LibTorch's global generator (and clone() then
  /// overwrites the weights with this network's).
  MLPImpl(const MLPImpl& other)
#if TORCH_VERSION_MAJOR < 2
      // LibTorch 1.x: Module is Cloneable's virtual base, initialised by the most derived class.
      : torch::nn::Module(other),
        torch::nn::Cloneable<MLPImpl>(other),
#else
      : torch::nn::Cloneable<MLPImpl>(other),
#endif
        options(other.options),
        hidden_(other.hidden_),
        linears_(other.linears_),
        dropouts_(other.dropouts_),
        norms_(other.norms_),
        layout_(other.layout_) {
    options.generator(std::nullopt);
  }

  /// Used by `Cloneable::clone_` when a module holding this MLP is cloned.
  MLPImpl& operator=(const MLPImpl&) = default;

  /// `MLPImpl(MLPOptions(in_features, out_features))`.
  MLPImpl(int64_t in_features, int64_t out_features) : MLPImpl(MLPOptions(in_features, out_features)) {}
  /// Builds the layers from `options` (see `reset`).
  explicit MLPImpl(const MLPOptions& options) : options(options) { reset(); }

  /// Checks the options (`c10::ValueError` naming the option) and builds the layers with new weights.
  void reset() override {
    TORCH_CHECK_VALUE(options.in_features() > 0, "MLPOptions: in_features must be positive, got ",
                      options.in_features());
    TORCH_CHECK_VALUE(options.out_features() > 0,
                      "MLPOptions: out_features must be positive, got ", options.out_features());
    TORCH_CHECK_VALUE(options.dropout() >= 0.0 && options.dropout() < 1.0,
                      "MLPOptions: dropout must be in [0, 1), got ", options.dropout());
    const auto activation_code = static_cast<int>(options.activation());
    TORCH_CHECK_VALUE(activation_code >= static_cast<int>(Activation::Tanh) &&
                          activation_code <= static_cast<int>(Activation::Identity),
                      "MLPOptions: activation is not an Activation value (got ", activation_code, ")");
    std::vector<int64_t> cells = options.num_cells();
    if (options.depth()) {
      const int64_t depth = *options.depth();
      TORCH_CHECK_VALUE(depth >= 0, "MLPOptions: depth must be >= 0, got ", depth);
      if (cells.empty()) {
        cells.assign(depth, 32);  // TorchRL's default cell count when only depth is given
      } else if (cells.size() == 1 && depth != 1) {
        cells.assign(depth, cells.front());
      }
      TORCH_CHECK_VALUE(static_cast<int64_t>(cells.size()) == depth, "MLPOptions: depth ", depth,
                        " does not match num_cells of length ", cells.size());
    }
    for (auto c : cells) {
      TORCH_CHECK_VALUE(c > 0, "MLPOptions: num_cells must be positive, got ", c);
    }
    hidden_ = cells;

    linears_.clear();
    dropouts_.clear();
    norms_.clear();
    int64_t index = 0;
    int64_t in = options.in_features();
    const size_t n_layers = cells.size() + 1;
    for (size_t i = 0; i < n_layers; ++i) {
      const bool last = i + 1 == n_layers;
      const int64_t out = last ? options.out_features() : cells[i];
      auto linear = torch::nn::Linear(
          torch::nn::LinearOptions(in, out).bias(!last || options.bias_last_layer()));
      if (options.generator()) init_linear(*linear, *options.generator());
      linears_.push_back(register_module(std::to_string(index++), linear));
      if (!last || options.activate_last_layer()) {
        if (options.dropout() > 0.0) {
          dropouts_.push_back(register_module(std::to_string(index++),
                                              torch::nn::Dropout(options.dropout())));
        }
        if (options.layer_norm()) {
          norms_.push_back(register_module(
              std::to_string(index++), torch::nn::LayerNorm(torch::nn::LayerNormOptions({out}))));
        }
        register_activation(std::to_string(index++));
      }
      in = out;
    }
    layout_.clear();
    if (options.fused() && options.dropout() == 0.0 && !options.layer_norm() &&
        detail::fusable_activation(options.activation(), options.negative_slope())) {
      for (size_t i = 0; i < n_layers; ++i) {
        const bool last = i + 1 == n_layers;
        layout_.push_back((linears_[i]->bias.defined() ? 1 : 0) | ((!last || options.activate_last_layer()) ? 2 : 0));
      }
    }
  }

  /// Runs the network on `input` (`[*, in_features]`).
  torch::Tensor forward(const torch::Tensor& input) {
    TORCH_CHECK(input.dim() >= 1 && input.size(-1) == options.in_features(),
                "MLP: expected an input with last dim ", options.in_features(), ", got shape ",
                input.sizes());
    // The per-layer ops under the JIT tracer (`rlobj::trace_policy`: a trace records
    // dispatched ops only, and `fast_tanh` writes memory directly) and under autocast (its
    // casts happen per op, and the fused backward would meet reduced-precision activations
    // with full-precision weights).
    if (!layout_.empty()) {
      const auto tls = c10::impl::tls_local_dispatch_key_set();
      if (!tls.included_.has(c10::DispatchKey::Tracer) && !tls.included_.has_any(c10::autocast_dispatch_keyset)) {
        return fused_forward(input);
      }
    }
    torch::Tensor x = input;
    const size_t n = linears_.size();
    for (size_t i = 0; i < n; ++i) {
      x = linears_[i]->forward(x);
      if (i + 1 < n || options.activate_last_layer()) {
        if (!dropouts_.empty()) x = dropouts_[i]->forward(x);
        if (!norms_.empty()) x = norms_[i]->forward(x);
        x = activate(x);
      }
    }
    return x;
  }

  /// Whether `forward` takes the fused path (see `MLPOptions::fused`).
  bool is_fused() const noexcept { return !layout_.empty(); }

  /// The hidden layer sizes actually used (after expanding `depth`).
  const std::vector<int64_t>& hidden_sizes() const noexcept { return hidden_; }
  /// The Linear layers, input first.
  const std::vector<torch::nn::Linear>& linears() const noexcept { return linears_; }
  /// The layer norms after each activated linear layer (empty without `layer_norm`).
  const std::vector<torch::nn::LayerNorm>& norms() const noexcept { return norms_; }

  /// Prints `rlobj::modules::MLP(in_features=..., out_features=..., num_cells=[...], ...)`.
  void pretty_print(std::ostream& stream) const override {
    stream << "rlobj::modules::MLP(in_features=" << options.in_features()
           << ", out_features=" << options.out_features() << ", num_cells=[";
    for (size_t i = 0; i < hidden_.size(); ++i) stream << (i ? ", " : "") << hidden_[i];
    stream << "], activation=" << activation_name(options.activation()) << ")";
  }

  /// The options used to build this MLP.
  MLPOptions options;

 private:
  torch::Tensor activate(const torch::Tensor& x) const {
    return detail::activate(x, options.activation(), options.negative_slope());
  }

  torch::Tensor fused_forward(const torch::Tensor& input) {
    const auto act = options.activation();
    const double slope = options.negative_slope();
    torch::Tensor x = input.dim() == 2 ? input : input.reshape({-1, options.in_features()});
    std::vector<torch::Tensor> params;
    params.reserve(2 * linears_.size());
    bool any_requires_grad = x.requires_grad();
    for (const auto& l : linears_) {
      params.push_back(l->weight);
      if (l->bias.defined()) params.push_back(l->bias);
    }
    for (const auto& p : params) any_requires_grad = any_requires_grad || p.requires_grad();
    if (torch::GradMode::is_enabled() && any_requires_grad) {
      x = detail::FusedMLPFunction::apply(x, at::TensorList(params), layout_, static_cast<int64_t>(act), slope,
                                          options.fast_tanh());
    } else {
      size_t j = 0;
      for (int64_t layer : layout_) {
        const torch::Tensor& w = params[j++];
        x = (layer & 1) ? at::addmm(params[j++], x, w.t()) : at::mm(x, w.t());
        if (layer & 2) detail::activate_inplace(x, act, slope, options.fast_tanh());
      }
    }
    if (input.dim() == 2) return x;
    std::vector<int64_t> shape = input.sizes().vec();
    shape.back() = options.out_features();
    return x.reshape(shape);
  }

  // The activation modules are registered only so that the children list (and printing)
  // match a torch::nn::Sequential; forward calls the functional ops directly.
  // LibTorch's Linear::reset_parameters (kaiming_uniform_ with a = sqrt(5), then a uniform
  // bias), the same arithmetic and order of draws, from `generator`.
  static void init_linear(torch::nn::LinearImpl& linear, at::Generator& generator) {
    torch::NoGradGuard no_grad;
    const auto fan_in = static_cast<double>(linear.weight.size(1));
    const double gain = std::sqrt(2.0 / (1 + std::pow(std::sqrt(5.0), 2)));
    const double bound = std::sqrt(3.0) * (gain / std::sqrt(fan_in));
    linear.weight.uniform_(-bound, bound, generator);
    if (linear.bias.defined()) {
      const double bias_bound = 1 / std::sqrt(fan_in);
      linear.bias.uniform_(-bias_bound, bias_bound, generator);
    }
  }

  void register_activation(const std::string& name) {
    switch (options.activation()) {
      case Activation::Tanh: register_module(name, torch::nn::Tanh()); break;
      case Activation::ReLU: register_module(name, torch::nn::ReLU()); break;
      case Activation::ELU: register_module(name, torch::nn::ELU()); break;
      case Activation::LeakyReLU:
        register_module(name, torch::nn::LeakyReLU(
                                  torch::nn::LeakyReLUOptions().negative_slope(options.negative_slope())));
        break;
      case Activation::GELU: register_module(name, torch::nn::GELU()); break;
      case Activation::Sigmoid: register_module(name, torch::nn::Sigmoid()); break;
      case Activation::SiLU: register_module(name, torch::nn::SiLU()); break;
      case Activation::Identity: register_module(name, torch::nn::Identity()); break;
    }
  }

  std::vector<int64_t> hidden_;
  std::vector<torch::nn::Linear> linears_;
  std::vector<torch::nn::Dropout> dropouts_;
  std::vector<torch::nn::LayerNorm> norms_;
  // Per layer, for the fused path: bit 0 a bias, bit 1 activated. Empty: the per-layer path.
  std::vector<int64_t> layout_;
};

/// Holder of `MLPImpl` (`std::shared_ptr` semantics), as `TORCH_MODULE` makes.
TORCH_MODULE(MLP);

}  // namespace modules
}  // namespace rlobj
