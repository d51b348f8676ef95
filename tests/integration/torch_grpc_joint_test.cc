// libtorch (with its bundled protobuf) and Debian's gRPC + protobuf share one process: a model
// forward pass served over a real gRPC call on loopback, concurrently. Also run under ASan by the
// test command (build-asan).
#include <gtest/gtest.h>

#include <thread>

#include "tests/integration/joint/engine.h"
#include "tests/integration/joint/rpc.h"

namespace gpt2::joint {
namespace {

TEST(TorchGrpcJointTest, ForwardPassServedOverGrpcEqualsTheDirectCall) {
  GreedyEngine engine(/*seed=*/1234);
  const std::vector<int32_t> prompt = {464, 2068, 7586, 21831};
  const std::vector<int32_t> direct = engine.Continue(prompt, 8);
  ASSERT_EQ(direct.size(), 8u);

  auto server = LoopbackServer::Start([&](const std::vector<int32_t>& p, int n) { return engine.Continue(p, n); });
  absl::StatusOr<std::vector<int32_t>> remote = CallComplete(server->port(), prompt, 8);
  ASSERT_TRUE(remote.ok()) << remote.status();
  EXPECT_EQ(*remote, direct);

  // Concurrent calls: gRPC's threads and libtorch's intra-op threads together.
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int i = 0; i < 8; ++i) {
    threads.emplace_back([&, i] {
      auto r = CallComplete(server->port(), prompt, 8);
      ok[i] = r.ok() && *r == direct;
    });
  }
  for (auto& t : threads) t.join();
  for (int i = 0; i < 8; ++i) EXPECT_TRUE(ok[i]) << "call " << i;

  EXPECT_EQ(CallComplete(server->port(), {}, 8).status().code(), absl::StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace gpt2::joint
