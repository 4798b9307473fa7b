// A downstream program built against rlobj (see tests/CMakeLists.txt, packaging.*).
#include <iostream>

#include <rlobj/rlobj.h>

int second_translation_unit();  // consumer_second_tu.cpp also includes every rlobj header

int main() {
  rlobj::TensorDict td({{"observation", torch::zeros({2, 3})}}, /*batch_size=*/{2});
  std::cout << td << "\n";
  const bool ok = td.get("observation").size(1) == 3 && second_translation_unit() == 2;
  std::cout << (ok ? "consumer OK" : "consumer FAILED") << "\n";
  return ok ? 0 : 1;
}
