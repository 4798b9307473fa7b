#pragma once

/// \file
/// `rlobj::modules::ExplorationType` and `SetExplorationType`: TorchRL's exploration-type switch
/// (`set_exploration_type`, tensordict's `InteractionType`), read by the noise modules
/// (`exploration.h`) and by `ProbabilisticActor` (`probabilistic.h`).
///
/// As in TorchRL, no type is set by default: noise modules then add noise (they treat "unset" as
/// `Random`), and a `ProbabilisticActor` acts with its own `default_interaction_type` (`Mode`).
/// `SyncDataCollector` sets `Random` while its policy acts; evaluate under
/// `SetExplorationType guard(ExplorationType::Deterministic);`.

#include <optional>

namespace rlobj {
namespace modules {

/// How stochastic modules act (TorchRL's `ExplorationType`).
enum class ExplorationType {
  Random,         ///< sample (`rsample()` when the distribution has one); noise modules add noise
  Deterministic,  ///< the distribution's `deterministic_sample()` (its mode); no noise
  Mode,           ///< the distribution's mode; no noise
  Mean,           ///< the distribution's mean (estimated from 1000 samples where it has none); no noise
};

/// `"random"`, `"deterministic"`, `"mode"`, `"mean"`.
inline const char* exploration_type_name(ExplorationType type) {
  switch (type) {
    case ExplorationType::Random: return "random";
    case ExplorationType::Deterministic: return "deterministic";
    case ExplorationType::Mode: return "mode";
    case ExplorationType::Mean: return "mean";
  }
  return "?";
}

namespace detail {
inline std::optional<ExplorationType>& exploration_type_slot() {
  static thread_local std::optional<ExplorationType> type;
  return type;
}
}  // namespace detail

/// The exploration type set on the calling thread by a `SetExplorationType` guard, if any
/// (TorchRL's `exploration_type()`, which is `None` outside any context).
inline std::optional<ExplorationType> explicit_exploration_type() { return detail::exploration_type_slot(); }

/// The exploration type of the calling thread, `Random` when none is set (how TorchRL's noise
/// modules read an unset type).
inline ExplorationType exploration_type() {
  return detail::exploration_type_slot().value_or(ExplorationType::Random);
}

/// Sets the exploration type of the calling thread for the guard's lifetime (TorchRL's
/// `with set_exploration_type(...)`); guards nest.
class SetExplorationType {
 public:
  /// Sets `type` on the calling thread until the guard is destroyed, which restores the previous one.
  explicit SetExplorationType(ExplorationType type) : previous_(detail::exploration_type_slot()) {
    detail::exploration_type_slot() = type;
  }
  ~SetExplorationType() { detail::exploration_type_slot() = previous_; }
  SetExplorationType(const SetExplorationType&) = delete;
  SetExplorationType& operator=(const SetExplorationType&) = delete;

 private:
  std::optional<ExplorationType> previous_;
};

}  // namespace modules
}  // namespace rlobj
