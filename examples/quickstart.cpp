// The smallest rlobj program: a network writes its output into a TensorDict.
#include <iostream>

#include <rlobj/rlobj.h>
#include <torch/torch.h>

int main() {
  torch::manual_seed(0);
  torch::nn::Linear net(3, 1);
  rlobj::TensorDict td({{"observation", torch::randn({4, 3})}}, /*batch_size=*/{4});
  td.set("action", net->forward(td.get("observation")).detach());
  std::cout << td << "\n";
  return 0;
}
