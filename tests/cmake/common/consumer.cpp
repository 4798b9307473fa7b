// A downstream program built against rlobj (see tests/CMakeLists.txt, packaging.*): it proves the
// package is found and links. (That every header compiles alone and links twice is checked by the
// build's rlobj_standalone_headers and by all_headers_{a,b}_test.)
#include <iostream>

#include <rlobj/tensordict.h>

int main() {
  rlobj::TensorDict td({{"observation", torch::zeros({2, 3})}}, /*batch_size=*/{2});
  std::cout << td << "\n";
  const bool ok = td.get("observation").size(1) == 3 && td.batch_size()[0] == 2;
  std::cout << (ok ? "consumer OK" : "consumer FAILED") << "\n";
  return ok ? 0 : 1;
}
