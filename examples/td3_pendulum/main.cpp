// td3_pendulum: trains TD3 on gym's Pendulum-v1 with rlobj, evaluates it, logs it.
//
//   td3_pendulum --seed 0 --total-frames 20000 --log-csv returns.csv
//   td3_pendulum --help
//
// The run (networks, loss, update, replay buffer on rlobj's trainer) and the command line are the
// off-policy examples' (examples/common/offpolicy.h); this program picks TD3.

#include "common/offpolicy_main.h"

int main(int argc, char** argv) { return offpolicy::main<offpolicy::TD3>(argc, argv); }
