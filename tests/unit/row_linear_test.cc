// RowLinear against at::linear (PyTorch's own), and its promise: a row's bits never depend on how
// many rows came with it or on the thread count.
#include "worker/serve/row_linear.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

namespace gpt2 {
namespace {

class RowLinearTest : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!RowLinearAvailable()) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  }
};

TEST_F(RowLinearTest, EqualsTorchLinearWithinRounding) {
  torch::manual_seed(1);
  // K with and without a multiple of 8, N with and without a multiple of 4, m over every tile height.
  for (auto [K, N] : {std::pair<int64_t, int64_t>{64, 256}, {768, 2304}, {13, 7}, {100, 50257}}) {
    for (int64_t m : {1, 2, 3, 4, 5, 7, 32}) {
      at::Tensor x = torch::randn({m, K}), w = torch::randn({N, K}) * 0.02, b = torch::randn({N});
      at::Tensor want = torch::nn::functional::linear(x, w, b);
      EXPECT_TRUE(torch::allclose(RowLinear(x, w, b), want, 1e-4, 1e-5)) << "K=" << K << " N=" << N << " m=" << m;
      EXPECT_TRUE(torch::allclose(RowLinear(x, w, {}), torch::nn::functional::linear(x, w), 1e-4, 1e-5));
    }
  }
}

TEST_F(RowLinearTest, ARowsBitsDependOnNothingElse) {
  torch::manual_seed(2);
  const int64_t K = 768, N = 3072;
  at::Tensor x = torch::randn({33, K}), w = torch::randn({N, K}) * 0.02, b = torch::randn({N});
  const at::Tensor full = RowLinear(x, w, b);
  for (int64_t m = 1; m < 33; ++m) {
    EXPECT_TRUE(torch::equal(RowLinear(x.narrow(0, 0, m), w, b), full.narrow(0, 0, m))) << "m=" << m;
    EXPECT_TRUE(torch::equal(RowLinear(x.narrow(0, 33 - m, m), w, b), full.narrow(0, 33 - m, m))) << "last m=" << m;
  }
  const int threads = at::get_num_threads();
  at::set_num_threads(1);
  const at::Tensor one_thread = RowLinear(x, w, b);
  at::set_num_threads(threads);
  EXPECT_TRUE(torch::equal(one_thread, full));
  // A BLAS does not promise this: on this machine's MKL some row counts round differently.
}

}  // namespace
}  // namespace gpt2
