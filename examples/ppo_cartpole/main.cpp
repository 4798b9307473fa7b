// ppo_cartpole: PPO (ClipPPOLoss, a OneHotCategorical policy) on gymnasium's CartPole-v1 with
// rlobj. Its default flags solve CartPole-v1 (a deterministic evaluation return of 500, the
// maximum) on seeds 0, 1 and 2. The run is examples/common/ppo.h's; this file is the task.
//
//   ppo_cartpole --seed 0 --log-csv returns.csv
//   ppo_cartpole --help

#include "ppo_cartpole/task.h"

int main(int argc, char** argv) { return ppo::main<ppo_cartpole::Task>(argc, argv); }
