// DecodeAttention against PyTorch's scaled_dot_product_attention, and its promise: a request's
// bits depend only on its own query, cache and length.
#include "worker/serve/decode_attention.h"

#include <ATen/Parallel.h>
#include <gtest/gtest.h>
#include <torch/torch.h>

#include "worker/serve/row_linear.h"

namespace gpt2 {
namespace {

TEST(DecodeAttentionTest, EqualsSdpaAndNeverDependsOnTheBatch) {
  if (!RowLinearAvailable()) GTEST_SKIP() << "this CPU has no AVX2/FMA";
  torch::manual_seed(3);
  for (int64_t HS : {64, 12}) {  // a multiple of 8 and not
    const int64_t S = 6, NH = 4, T = 40, C = NH * HS;
    at::Tensor k = torch::randn({S, NH, T, HS}), v = torch::randn({S, NH, T, HS});
    at::Tensor qkv = torch::randn({8, 3 * C});
    at::Tensor q = qkv.narrow(1, 0, C);  // a strided view, as the engine passes it
    const std::vector<int64_t> slots = {4, 0, 2, 5, 1}, lengths = {1, 40, 17, 8, 33};
    at::Tensor out = DecodeAttention(q, k, v, slots, lengths);
    ASSERT_EQ(out.sizes(), (std::vector<int64_t>{8, C}));
    EXPECT_TRUE(torch::equal(out.narrow(0, 5, 3), torch::zeros({3, C})));
    for (size_t i = 0; i < slots.size(); ++i) {
      at::Tensor want =
          at::scaled_dot_product_attention(q[i].view({1, NH, 1, HS}), k[slots[i]].narrow(1, 0, lengths[i]).unsqueeze(0),
                                           v[slots[i]].narrow(1, 0, lengths[i]).unsqueeze(0));
      EXPECT_TRUE(torch::allclose(out[i], want.view({C}), 1e-5, 1e-6)) << "HS=" << HS << " row " << i;
      // Alone, or with others in another order: the same bits.
      at::Tensor alone = DecodeAttention(q.narrow(0, i, 1), k, v, {slots[i]}, {lengths[i]});
      EXPECT_TRUE(torch::equal(alone[0], out[i])) << "row " << i;
    }
    const int threads = at::get_num_threads();
    at::set_num_threads(1);
    EXPECT_TRUE(torch::equal(DecodeAttention(q, k, v, slots, lengths), out));
    at::set_num_threads(threads);
  }
}

TEST(DecodeAttentionTest, BadInputIsAClearError) {
  at::Tensor k = torch::zeros({2, 2, 4, 8}), q = torch::zeros({1, 16});
  EXPECT_THROW(DecodeAttention(q, k, k, {2}, {1}), c10::Error);  // no slot 2
  EXPECT_THROW(DecodeAttention(q, k, k, {0}, {5}), c10::Error);  // longer than the cache
  EXPECT_THROW(DecodeAttention(q, k, k, {0}, {0}), c10::Error);  // nothing to attend to
}

}  // namespace
}  // namespace gpt2
