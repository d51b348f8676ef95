// RowLinear against at::linear (PyTorch's own), and its promise: a row's bits never depend on how
// many rows came with it or on the thread count.
#include "worker/serve/row_linear.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>

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

// bf16 and int8 weights: the values PackWeight keeps are within the format's rounding of the
// originals, and RowLinear over the packed bytes computes what at::linear computes over those
// values, with the same row-independence.
TEST_F(RowLinearTest, ReducedPrecisionWeightsRoundWithinTheFormatAndComputeTheirValues) {
  torch::manual_seed(3);
  for (auto [K, N] : {std::pair<int64_t, int64_t>{768, 2304}, {13, 7}, {100, 50257}}) {
    at::Tensor w = torch::randn({N, K}) * 0.02, b = torch::randn({N});
    w[0].zero_();  // a row of zeros quantizes to zeros
    for (WeightFormat f : {WeightFormat::kBf16, WeightFormat::kInt8}) {
      const PackedWeight p = PackWeight(w, f);
      const at::Tensor values = Unpack(p);
      if (f == WeightFormat::kBf16) {  // nearest bf16 (8 significant bits): relative error <= 2^-8
        EXPECT_TRUE(((values - w).abs() <= w.abs() * std::ldexp(1.0, -8)).all().item<bool>());
      } else {  // nearest multiple of the row's scale, max |w| / 127
        const at::Tensor scale = w.abs().amax(1, true) / 127;
        EXPECT_TRUE(((values - w).abs() <= scale * 0.5 * (1 + 1e-5)).all().item<bool>());
        EXPECT_TRUE(torch::equal(values[0], torch::zeros({K})));
        EXPECT_EQ(p.data.scalar_type(), at::kChar);
      }
      for (int64_t m : {1, 3, 5, 32}) {
        at::Tensor x = torch::randn({m, K});
        EXPECT_TRUE(torch::allclose(RowLinear(x, p, b), torch::nn::functional::linear(x, values, b), 1e-4, 1e-5))
            << WeightFormatName(f) << " K=" << K << " N=" << N << " m=" << m;
      }
      at::Tensor x = torch::randn({17, K});
      const at::Tensor full = RowLinear(x, p, b);
      for (int64_t m : {1, 2, 4, 7, 16})
        EXPECT_TRUE(torch::equal(RowLinear(x.narrow(0, 17 - m, m), p, b), full.narrow(0, 17 - m, m)));
    }
  }
}

// w8a8: each row of x quantized on its own (max |x| / 127), int8 dot products summed exactly, then
// both scales and the bias. PyTorch computes the same integers (int64 matmul) and the same float
// epilogue, so the bits agree exactly, on every kernel (ctest runs this file again with
// GPT2_ROW_LINEAR_ISA=avx2 and =avx512, so the AVX2, the VNNI and, where the CPU has it, the AMX
// kernels all equal the reference; AMX takes rows in tiles of 16 (m=16, 47, 64), VNNI the rest).
TEST_F(RowLinearTest, W8A8IsExactIntegerArithmeticOnRowQuantizedActivations) {
  torch::manual_seed(4);
  for (auto [K, N] : {std::pair<int64_t, int64_t>{768, 2304}, {3072, 768}, {13, 7}, {100, 50257}}) {
    at::Tensor w = torch::randn({N, K}) * 0.02, b = torch::randn({N});
    const PackedWeight p = PackWeight(w, WeightFormat::kW8A8);
    const PackedWeight int8 = PackWeight(w, WeightFormat::kInt8);
    EXPECT_TRUE(torch::equal(Unpack(p), Unpack(int8)));  // the same weights as int8
    const at::Tensor qw = p.data.narrow(1, 0, K).to(at::kLong), sw = p.scale;
    for (int64_t m : {1, 3, 5, 16, 32, 47, 64}) {
      at::Tensor x = torch::randn({m, K});
      x[0].zero_();  // a row of zeros
      const at::Tensor amax = x.abs().amax(1, true);
      const at::Tensor sx = torch::where(amax > 0, amax / 127, torch::ones_like(amax));
      const at::Tensor qx = (x / sx).round().clamp(-127, 127).to(at::kLong);
      const at::Tensor dot = torch::mm(qx, qw.t());
      const at::Tensor want = dot.to(at::kFloat) * sx * sw.unsqueeze(0) + b;
      EXPECT_TRUE(torch::equal(RowLinear(x, p, b), want)) << "K=" << K << " N=" << N << " m=" << m;
      EXPECT_TRUE(torch::equal(RowLinear(x, p, {}), dot.to(at::kFloat) * sx * sw.unsqueeze(0)));
      // and near the fp32 product (activation rounding is within half a step of each row's scale)
      EXPECT_TRUE(torch::allclose(RowLinear(x, p, b), torch::nn::functional::linear(x, w, b), 0.05, 0.05));
    }
  }
}

TEST(WeightFormatTest, NamesParseAndBadOnesAreRefused) {
  for (WeightFormat f : {WeightFormat::kFp32, WeightFormat::kBf16, WeightFormat::kInt8, WeightFormat::kW8A8})
    EXPECT_EQ(*ParseWeightFormat(WeightFormatName(f)), f);
  absl::StatusOr<WeightFormat> bad = ParseWeightFormat("fp16");
  EXPECT_EQ(bad.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(bad.status().message(), "weights: expected fp32, bf16, int8 or w8a8, got fp16");
}

}  // namespace
}  // namespace gpt2
