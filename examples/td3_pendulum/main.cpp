// td3_pendulum: trains TD3 on gym's Pendulum-v1 with rlobj, evaluates it, logs it.
//
//   td3_pendulum --seed 0 --total-frames 20000 --log-csv returns.csv
//   td3_pendulum --help
//
// The training loop and the command line are shared with the other off-policy examples
// (examples/offpolicy/).

#include "offpolicy/main.h"

int main(int argc, char** argv) { return offpolicy::main<offpolicy::TD3>(argc, argv); }
