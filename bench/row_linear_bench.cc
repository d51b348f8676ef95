// RowLinear (worker/serve/row_linear) in each weight format against at::linear (MKL on this CPU) over
// the linear layers of a GPT-2 124M step (12 x QKV, proj, fc, fc-proj, and the LM head), at row
// counts 1..128.
// Not a test: `build/bench/row_linear_bench [n_layer n_embd]`.
#include <ATen/Parallel.h>
#include <torch/torch.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <vector>

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
  const gpt2::WeightFormat formats[] = {gpt2::WeightFormat::kFp32, gpt2::WeightFormat::kBf16,
                                        gpt2::WeightFormat::kInt8, gpt2::WeightFormat::kW8A8};
  std::vector<std::vector<gpt2::PackedWeight>> packed(4);
  for (int f = 0; f < 4; ++f)
    for (auto& [w, b] : layers) packed[f].push_back(gpt2::PackWeight(w, formats[f]));
  // f = -1: at::linear; else RowLinear over formats[f].
  std::vector<at::Tensor> inputs;  // per layer, for this row count: made before the clock starts
  auto step = [&](int64_t m, int f) {
    if (inputs.empty() || inputs[0].size(0) != m) {
      inputs.clear();
      for (auto& [w, b] : layers) inputs.push_back(torch::randn({m, w.size(1)}));
    }
    for (size_t l = 0; l < layers.size(); ++l) {
      auto& [w, b] = layers[l];
      const at::Tensor& x = inputs[l];
      if (f >= 0)
        gpt2::RowLinear(x, packed[f][l], b);
      else
        torch::nn::functional::linear(x, w, b);
    }
  };
  std::printf("%d threads, %s kernels; ms per decode step's linear layers (%lld layers, %lld channels)\n",
              at::get_num_threads(), gpt2::RowLinearAmx() ? "AVX-512 (w8a8: AMX)" : gpt2::RowLinearWide() ? "AVX-512" : "AVX2", static_cast<long long>(L),
              static_cast<long long>(C));
  std::printf("%5s %10s %10s %10s %10s %10s %7s\n", "rows", "at::linear", "fp32", "bf16", "int8", "w8a8", "fp32 x");
  for (int64_t m : {1, 2, 4, 8, 16, 32, 64, 128, 512}) {
    double ms[5];
    for (int f = -1; f < 4; ++f) {
      step(m, f);
      const auto t0 = std::chrono::steady_clock::now();
      for (int i = 0; i < 5; ++i) step(m, f);
      ms[f + 1] = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count() / 5;
    }
    std::printf("%5lld %10.1f %10.1f %10.1f %10.1f %10.1f %7.2f\n", static_cast<long long>(m), ms[0], ms[1], ms[2],
                ms[3], ms[4], ms[0] / ms[1]);
  }
}
