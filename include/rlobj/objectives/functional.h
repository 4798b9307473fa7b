#pragma once

/// \file
/// The functional pieces of rlobj's objectives: the distance between predictions and targets
/// (TorchRL's `distance_loss`), the reduction of per-sample losses (`_reduce`), and the enums
/// with TorchRL's option strings (`loss_function`, `reduction`, value estimators).

#include <string>

#include <c10/util/Exception.h>
#include <torch/types.h>

namespace rlobj {
namespace objectives {

/// The distance between predictions and targets (TorchRL's `loss_function`).
enum class LossFunction {
  L1,        ///< `|x - y|`
  L2,        ///< `(x - y)^2` (`F.mse_loss`; no 1/2 factor)
  SmoothL1,  ///< Huber with beta 1: `0.5 d^2` if `|d| < 1`, else `|d| - 0.5`
};

/// How per-sample losses are reduced (TorchRL's `reduction`).
enum class Reduction { Mean, Sum, None };

/// TorchRL's `ValueEstimators`.
enum class ValueEstimators { TD0, TD1, TDLambda, GAE };

/// `"l1"`, `"l2"`, `"smooth_l1"` (TorchRL's strings).
inline LossFunction loss_function_from_string(const std::string& name) {
  if (name == "l2") return LossFunction::L2;
  if (name == "l1") return LossFunction::L1;
  if (name == "smooth_l1") return LossFunction::SmoothL1;
  TORCH_CHECK_VALUE(false, "unknown loss_function \"", name, "\"; expected l1, l2 or smooth_l1");
}

/// `"mean"`, `"sum"`, `"none"` (TorchRL's strings).
inline Reduction reduction_from_string(const std::string& name) {
  if (name == "mean") return Reduction::Mean;
  if (name == "sum") return Reduction::Sum;
  if (name == "none") return Reduction::None;
  TORCH_CHECK_VALUE(false, "unknown reduction \"", name, "\"; expected mean, sum or none");
}

/// `"td0"`, `"td1"`, `"td_lambda"`, `"gae"` (TorchRL's lowercase aliases).
inline ValueEstimators value_estimator_from_string(const std::string& name) {
  if (name == "td0") return ValueEstimators::TD0;
  if (name == "td1") return ValueEstimators::TD1;
  if (name == "td_lambda" || name == "tdlambda") return ValueEstimators::TDLambda;
  if (name == "gae") return ValueEstimators::GAE;
  TORCH_CHECK_VALUE(false, "unknown value estimator \"", name, "\"; expected td0, td1, td_lambda or gae");
}

/// When a loss checks the floating-point entries it reads for NaN and Inf. A non-finite

/// The element-wise distance between `v1` and `v2` (TorchRL's `distance_loss`); shapes must
/// match exactly.
inline torch::Tensor distance_loss(const torch::Tensor& v1, const torch::Tensor& v2,
                                   LossFunction loss_function) {
  TORCH_CHECK(v1.sizes() == v2.sizes(), "distance_loss: the input tensors have shapes ",
              v1.sizes(), " and ", v2.sizes(), ", which are incompatible");
  switch (loss_function) {
    case LossFunction::L2: return torch::mse_loss(v1, v2, at::Reduction::None);
    case LossFunction::L1: return torch::l1_loss(v1, v2, at::Reduction::None);
    case LossFunction::SmoothL1: return torch::smooth_l1_loss(v1, v2, at::Reduction::None, 1.0);
  }
  return {};
}

/// Reduces a per-sample loss (TorchRL's `_reduce`).
inline torch::Tensor reduce(const torch::Tensor& loss, Reduction reduction) {
  switch (reduction) {
    case Reduction::Mean: return loss.mean();
    case Reduction::Sum: return loss.sum();
    case Reduction::None: return loss;
  }
  return loss;
}

}  // namespace objectives
}  // namespace rlobj
