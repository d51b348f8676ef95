// RowLinear (worker/serve/row_linear) against at::linear (MKL on this CPU) over the linear layers of
// a GPT-2 124M decode step (12 x QKV, proj, fc, fc-proj, and the LM head), at row counts 1..32.
// Not a test: `build/bench/row_linear_bench [n_layer n_embd]`.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>

#include "worker/serve/row_linear.h"

int main(int argc, char** argv) {
  const int64_t L = argc > 1 ? std::atoll(argv[1]) : 12, C = argc > 2 ? std::atoll(argv[2]) : 768;
  torch::InferenceMode inference;
  std::vector<std::pair<at::Tensor, at::Tensor>> layers;  // (weight, bias)
  for (int64_t l = 0; l < L; ++l) {
    for (auto [n, k] : {std::pair{3 * C, C}, {C, C}, {4 * C, C}, {C, 4 * C}})
      layers.emplace_back(torch::randn({n, k}) * 0.02, torch::randn({n}));
  }
  layers.emplace_back(torch::randn({50304, C}) * 0.02, at::Tensor());
  auto step = [&](int64_t m, bool ours) {
    for (auto& [w, b] : layers) {
      at::Tensor x = torch::randn({m, w.size(1)});
      if (ours)
        gpt2::RowLinear(x, w, b);
      else
        torch::nn::functional::linear(x, w, b);
    }
  };
  std::printf("%d threads; ms per decode step's linear layers (%lld layers, %lld channels)\n", at::get_num_threads(),
              static_cast<long long>(L), static_cast<long long>(C));
  std::printf("%5s %10s %10s %7s\n", "rows", "RowLinear", "at::linear", "ratio");
  for (int64_t m : {1, 2, 4, 8, 16, 32}) {
    double ms[2];
    for (int ours = 0; ours < 2; ++ours) {
      step(m, ours);
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 5; ++i) step(m, ours);
      ms[ours] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 5;
    }
    std::printf("%5lld %10.1f %10.1f %7.2f\n", static_cast<long long>(m), ms[1], ms[0], ms[0] / ms[1]);
  }
}
