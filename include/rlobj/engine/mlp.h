#pragma once

/// \file
/// An `rlobj::modules::MLP` as rlobj's fused update engine runs it: `MlpPlan` reads the
/// network's layers and where each parameter lives in its loss's flat parameter group; `MlpPass`
/// holds one pass's activations and runs the forward (per layer: the bias broadcast, one `sgemm`
/// as ATen's `addmm`, the activation in place) and the backward (the activation's derivative from
/// its output, `g^T x` for the weight, a column sum for the bias, `g W` for the input: the
/// products `AddmmBackward` computes) on raw memory, with no autograd graph and no dispatch but
/// Tanh's (ATen's own kernel, whose last bits the parity tolerances depend on).

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include <ATen/ATen.h>
#include <c10/util/Exception.h>
#include <torch/types.h>

#include "rlobj/engine/blas.h"
#include "rlobj/engine/kernels.h"
#include "rlobj/modules/mlp.h"

namespace rlobj {
namespace engine {

/// One Linear layer of an MLP, inside a flat parameter buffer.
struct LayerPlan {
  int64_t in = 0;              ///< input features
  int64_t out = 0;             ///< output features
  int64_t weight = 0;          ///< offset of the `[out, in]` weight in the flat buffer
  int64_t bias = -1;           ///< offset of the bias, or -1 without one
  bool activated = false;      ///< followed by the activation
};

/// How the engine runs an MLP whose parameters alias a flat buffer.
struct MlpPlan {
  std::vector<LayerPlan> layers;                              ///< input layer first
  modules::Activation activation = modules::Activation::ReLU;  ///< between layers
  bool fast_tanh = false;                                      ///< `MLPOptions::fast_tanh`

  /// Input features.
  int64_t in_features() const { return layers.front().in; }
  /// Output features.
  int64_t out_features() const { return layers.back().out; }
  /// The widest layer output (scratch sizes).
  int64_t max_width() const {
    int64_t w = in_features();
    for (const auto& l : layers) w = std::max({w, l.in, l.out});
    return w;
  }

  /// The plan of `mlp` whose parameters live in `flat` (a loss's parameter group; `trained`: the
  /// online network, whose every parameter must require grad), or nothing
  /// with the reason in `why`: the engine runs Linear layers with ReLU, Tanh or identity
  /// activations, float32 on the CPU, no dropout or layer norm, no frozen parameter in a trained network.
  static std::optional<MlpPlan> of(const modules::MLPImpl& mlp, const torch::Tensor& flat, bool trained,
                                   std::string* why) {
    const auto& o = mlp.options;
    const auto fail = [&](const std::string& reason) -> std::optional<MlpPlan> {
      *why = reason;
      return std::nullopt;
    };
    if (o.dropout() > 0) return fail("an MLP with dropout");
    if (o.layer_norm()) return fail("an MLP with layer norm");
    const auto act = o.activation();
    if (act != modules::Activation::ReLU && act != modules::Activation::Tanh && act != modules::Activation::Identity) {
      return fail(std::string("an MLP with ") + modules::activation_name(act) + " (the engine runs ReLU, Tanh, identity)");
    }
    if (!flat.defined() || !flat.is_cpu() || flat.scalar_type() != torch::kFloat || !flat.is_contiguous()) {
      return fail("parameters that are not float32 on the CPU");
    }
    MlpPlan plan;
    plan.activation = act;
    plan.fast_tanh = o.fast_tanh();
    const char* base = static_cast<const char*>(flat.data_ptr());
    const auto offset_of = [&](const torch::Tensor& t) -> int64_t {
      const auto bytes = static_cast<const char*>(t.data_ptr()) - base;
      if (bytes < 0 || bytes % 4 != 0 || bytes / 4 + t.numel() > flat.numel() || !t.is_contiguous()) return -2;
      return bytes / 4;
    };
    const auto& linears = mlp.linears();
    for (size_t i = 0; i < linears.size(); ++i) {
      LayerPlan l;
      const auto& lin = linears[i];
      l.out = lin->weight.size(0);
      l.in = lin->weight.size(1);
      l.weight = offset_of(lin->weight);
      l.bias = lin->bias.defined() ? offset_of(lin->bias) : -1;
      if (l.weight < 0 || l.bias == -2) return fail("an MLP whose parameters are not in the loss's flat group");
      if (trained && (!lin->weight.requires_grad() || (lin->bias.defined() && !lin->bias.requires_grad()))) {
        return fail("an MLP with frozen parameters");
      }
      l.activated = i + 1 < linears.size() || o.activate_last_layer();
      plan.layers.push_back(l);
    }
    return plan;
  }
};

/// One forward pass of an `MlpPlan` on a batch and what its backward needs: every layer's output
/// (after the activation), in buffers reused from update to update.
class MlpPass {
 public:
  /// Buffers for batches of `rows`.
  void resize(const MlpPlan& plan, int64_t rows) {
    if (rows == rows_ && outputs_.size() == plan.layers.size()) return;
    rows_ = rows;
    outputs_.clear();
    for (const auto& l : plan.layers) outputs_.push_back(torch::empty({rows, l.out}, torch::kFloat));
    const int64_t w = plan.max_width();
    grad_a_ = torch::empty({rows, w}, torch::kFloat);
    grad_b_ = torch::empty({rows, w}, torch::kFloat);
  }

  /// The forward pass on `x` (`rows x in_features`, row-major), parameters at `params` (the
  /// flat buffer's start). The result is `output()`.
  void forward(const MlpPlan& plan, const float* params, const float* x) {
    const float* in = x;
    for (size_t i = 0; i < plan.layers.size(); ++i) {
      const auto& l = plan.layers[i];
      float* y = outputs_[i].data_ptr<float>();
      const bool bias = l.bias >= 0;
      if (bias) kernels::broadcast_rows(y, params + l.bias, rows_, l.out);
      // addmm(bias, x, W^T): x [rows, in] times the transpose of the row-major [out, in] weight.
      gemm(MatrixView::rows_of(in, rows_, l.in), MatrixView::transpose_of(params + l.weight, l.out, l.in), y, 1.0f,
           bias ? 1.0f : 0.0f);
      if (l.activated) activate(plan, outputs_[i]);
      in = y;
    }
  }

  /// The last layer's output (`rows x out_features`).
  const torch::Tensor& output() const { return outputs_.back(); }
  /// Layer `i`'s output.
  const torch::Tensor& output(size_t i) const { return outputs_[i]; }

  /// The backward pass from `grad_out` (`rows x out_features`, the gradient of the output; used
  /// as scratch): with `grads`, every parameter's gradient is written at its offset (overwriting:
  /// the update zeroes nothing first); with `grad_in` (`rows x in_features`), the input's.
  /// `x` is the forward's input.
  void backward(const MlpPlan& plan, const float* params, const float* x, float* grad_out, float* grads,
                float* grad_in, std::vector<double>& sum_scratch) {
    float* g = grad_out;
    float* spare[2] = {grad_a_.data_ptr<float>(), grad_b_.data_ptr<float>()};
    int which = 0;
    for (size_t i = plan.layers.size(); i-- > 0;) {
      const auto& l = plan.layers[i];
      const float* y = outputs_[i].data_ptr<float>();
      if (l.activated) {
        if (plan.activation == modules::Activation::ReLU) {
          kernels::relu_backward_(g, y, rows_ * l.out);
        } else if (plan.activation == modules::Activation::Tanh) {
          kernels::tanh_backward_(g, y, rows_ * l.out);
        }
      }
      const float* input = i == 0 ? x : outputs_[i - 1].data_ptr<float>();
      if (grads != nullptr) {
        // g^T x: [out, rows] x [rows, in].
        gemm(MatrixView::transpose_of(g, rows_, l.out), MatrixView::rows_of(input, rows_, l.in), grads + l.weight,
             1.0f, 0.0f);
        if (l.bias >= 0) {
          sum_scratch.resize(static_cast<size_t>(l.out));
          kernels::column_sums(grads + l.bias, g, rows_, l.out, sum_scratch.data());
        }
      }
      if (i == 0 && grad_in == nullptr) break;
      // g W: [rows, out] x [out, in].
      float* next = i == 0 ? grad_in : spare[which];
      gemm(MatrixView::rows_of(g, rows_, l.out), MatrixView::rows_of(params + l.weight, l.out, l.in), next, 1.0f, 0.0f);
      g = next;
      which ^= 1;
    }
  }

 private:
  static void activate(const MlpPlan& plan, torch::Tensor& y) {
    if (plan.activation == modules::Activation::ReLU) {
      kernels::relu_(y.data_ptr<float>(), y.numel());
    } else {
      modules::detail::activate_inplace(y, plan.activation, 0.0, plan.fast_tanh);  // Tanh: ATen's or rlobj's kernel
    }
  }

  int64_t rows_ = -1;
  std::vector<torch::Tensor> outputs_;
  torch::Tensor grad_a_, grad_b_;
};

}  // namespace engine
}  // namespace rlobj
