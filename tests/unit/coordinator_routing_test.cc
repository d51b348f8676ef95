// The coordinator's routing of requests to replicas (PickReplica / Release): least loaded first,
// a retried request never back on a replica it failed on, and a replica that keeps failing out of
// routing until a later heartbeat says it serves again. A real JobStore (SQLite in memory).
#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <memory>
#include <string>
#include <thread>

#include "server/coordinator.h"
#include "server/metrics.h"
#include "server/store.h"

namespace gpt2 {
namespace {

namespace v1 = gpt2d::v1;
using namespace std::chrono_literals;

class RoutingTest : public ::testing::Test {
 protected:
  void SetUp() override {
    absl::StatusOr<std::unique_ptr<JobStore>> store = JobStore::Open(":memory:");
    ASSERT_TRUE(store.ok()) << store.status();
    store_ = *std::move(store);
    CoordinatorOptions o;
    o.heartbeat_interval = 20ms;
    o.replica_ejection = 300ms;
    coordinator_ = std::make_unique<Coordinator>(*store_, o, metrics_);
    ASSERT_TRUE(coordinator_->Start().ok());
    for (const std::string id : {"a", "b"}) {
      v1::Register reg;
      reg.set_worker_id(id);
      reg.set_device("cpu");
      reg.set_host("127.0.0.1");
      reg.set_memory_bytes(int64_t{8} << 30);
      reg.set_serve_address(id + ":50061");
      absl::StatusOr<std::shared_ptr<WorkerSession>> s = coordinator_->Connect(reg, [] {});
      ASSERT_TRUE(s.ok()) << s.status();
      sessions_[id] = *s;
    }
    v1::Deployment d;
    d.set_name("default");
    d.set_checkpoint("/models/step_00000001");
    d.set_replicas(2);
    ASSERT_TRUE(coordinator_->CreateDeployment(d).ok());
    for (int i = 0; i < 200 && coordinator_->GetDeployment("default")->worker_ids_size() < 2; ++i)
      std::this_thread::sleep_for(10ms);
    ASSERT_EQ(coordinator_->GetDeployment("default")->worker_ids_size(), 2);
    Beat("a", 0);
    Beat("b", 0);
  }

  // A heartbeat: serving and ready, with `active` requests in its batch.
  void Beat(const std::string& id, int64_t active) {
    v1::WorkerMessage m;
    v1::ServeStatus* s = m.mutable_heartbeat()->mutable_serving();
    s->set_deployment("default");
    s->set_ready(true);
    s->set_active(active);
    coordinator_->Receive(id, sessions_[id], m);
  }
  std::string Pick(const std::set<std::string>& exclude = {}) {
    absl::StatusOr<ReplicaLease> r = coordinator_->PickReplica("default", exclude);
    if (!r.ok()) return "none";
    return r->route().worker_id;  // released as a success as `r` goes
  }

  ServerMetrics metrics_;
  std::unique_ptr<JobStore> store_;
  std::unique_ptr<Coordinator> coordinator_;
  std::map<std::string, std::shared_ptr<WorkerSession>> sessions_;
};

TEST_F(RoutingTest, LeastLoadedAndNeverAReplicaTheRequestFailedOn) {
  Beat("a", 3);
  EXPECT_EQ(Pick(), "b");
  EXPECT_EQ(Pick({"b"}), "a");
  EXPECT_EQ(Pick({"a", "b"}), "none");
  absl::StatusOr<ReplicaLease> held = coordinator_->PickReplica("default");  // b: 1 in flight
  ASSERT_TRUE(held.ok());
  Beat("a", 0);
  EXPECT_EQ(Pick(), "a");
  held->Release(/*failed=*/false);
  Beat("a", 1);
  EXPECT_EQ(Pick(), "b");  // released: b is back to no load
}

TEST_F(RoutingTest, AReplicaThatKeepsFailingLeavesRoutingUntilItReportsServingAgain) {
  auto fail = [&](const std::string& id) {
    absl::StatusOr<ReplicaLease> r = coordinator_->PickReplica("default", {id == "a" ? "b" : "a"});
    ASSERT_TRUE(r.ok());
    ASSERT_EQ(r->route().worker_id, id);
    r->Release(/*failed=*/true);
    r->Release(/*failed=*/false);  // only the first release counts
  };
  fail("a");
  EXPECT_EQ(Pick({"b"}), "a");  // one failure, then a success: the count starts over
  fail("a");
  EXPECT_EQ(Pick({"b"}), "a");
  fail("a");
  fail("a");  // two in a row: out
  for (int i = 0; i < 5; ++i) EXPECT_EQ(Pick(), "b");
  EXPECT_EQ(Pick({"b"}), "none");
  Beat("a", 0);  // too soon: still out
  EXPECT_EQ(Pick({"b"}), "none");
  std::this_thread::sleep_for(350ms);
  Beat("a", 0);
  EXPECT_EQ(Pick({"b"}), "a");
}

}  // namespace
}  // namespace gpt2
