// TokenStream: events in order across threads, and a consumer that leaves before the last event.
#include "worker/serve/token_stream.h"

#include <gtest/gtest.h>

#include <thread>

namespace gpt2 {
namespace {

TEST(TokenStreamTest, DeliversEveryEventInOrderAcrossThreads) {
  TokenStream stream;
  Engine::Callback cb = stream.Callback();
  std::thread engine([cb] {
    for (int32_t t = 0; t < 1000; ++t) cb({t, -0.5f, t == 999 ? FinishReason::kLength : FinishReason::kNone, ""});
  });
  std::vector<int32_t> got;
  for (bool done = false; !done;) {
    for (const TokenEvent& e : stream.Next(std::chrono::seconds(10))) {
      got.push_back(e.token);
      done = e.finish != FinishReason::kNone;
    }
  }
  engine.join();
  ASSERT_EQ(got.size(), 1000u);
  for (int32_t t = 0; t < 1000; ++t) EXPECT_EQ(got[t], t);
}

TEST(TokenStreamTest, NextTimesOutEmptyAndWaitForEndSkipsToTheLastEvent) {
  TokenStream stream;
  EXPECT_TRUE(stream.Next(std::chrono::milliseconds(20)).empty());
  EXPECT_FALSE(stream.WaitForEnd(std::chrono::milliseconds(20)).has_value());
  Engine::Callback cb = stream.Callback();
  cb({7, -1.0f, FinishReason::kNone, ""});
  cb({-1, 0, FinishReason::kError, "boom"});
  std::optional<TokenEvent> last = stream.WaitForEnd(std::chrono::seconds(1));
  ASSERT_TRUE(last.has_value());
  EXPECT_EQ(last->finish, FinishReason::kError);
  EXPECT_EQ(last->error, "boom");
}

TEST(TokenStreamTest, EventsAfterTheConsumerLeftGoNowhere) {
  Engine::Callback cb;
  {
    TokenStream stream;
    cb = stream.Callback();
    EXPECT_FALSE(stream.WaitForEnd(std::chrono::milliseconds(10)).has_value());  // a timeout: it leaves
  }
  cb({1, -1.0f, FinishReason::kLength, ""});  // the engine's late event: no dangling state (ASan)
}

}  // namespace
}  // namespace gpt2
