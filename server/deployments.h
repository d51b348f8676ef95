// The coordinator's deployments: which workers serve which deployment (placement on idle
// workers, refilled when one is lost), each deployment's status from its replicas' heartbeats, and
// routing: the least-loaded ready replica for each request, out of routing after it failed
// requests in a row. The Deployment rows are written to the store before a change is acknowledged.
//
// Not thread-safe: the Coordinator calls it under its lock.
#pragma once

#include <map>
#include <set>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "gpt2d/v1/cluster.pb.h"
#include "server/store.h"
#include "server/store_refusals.h"
#include "server/worker_registry.h"

namespace gpt2 {

struct ReplicaRoute {
  std::string worker_id, address;
};

class Deployments {
 public:
  static constexpr int kFailuresToEject = 2;

  Deployments(JobStore& store, WorkerRegistry& workers, StoreRefusals& refusals)
      : store_(store), workers_(workers), refusals_(refusals) {}
  absl::Status Load();

  // `d` is well formed (DeploymentServiceImpl checked its fields). ALREADY_EXISTS for a taken
  // name, INVALID_ARGUMENT for a follow_job the store does not know, the store's refusal.
  absl::StatusOr<v1::Deployment> Create(v1::Deployment d);
  std::vector<v1::Deployment> List();
  absl::StatusOr<v1::Deployment> Get(const std::string& name);
  // Its replicas are told to stop serving and become IDLE.
  absl::Status Delete(const std::string& name);

  // A worker reconnected saying it serves `deployment`: true (and SERVING again) when it is still
  // one of its replicas; otherwise it is told to stop.
  bool Reattach(WorkerEntry& w, const std::string& deployment);
  // `worker_id` no longer serves `deployment` (empty: any).
  void Remove(const std::string& worker_id, const std::string& deployment = "");
  // Replicas whose workers are not connected leave their deployments (after the recovery grace).
  void DropDisconnected();
  // Deployments short of replicas get idle workers.
  void Place();

  absl::StatusOr<ReplicaRoute> Pick(const std::string& deployment, const std::set<std::string>& exclude);
  void Release(const ReplicaRoute& route, bool failed);

 private:
  v1::Deployment WithStatus(const v1::Deployment& d);
  void Put(const v1::Deployment& d);

  JobStore& store_;
  WorkerRegistry& workers_;
  StoreRefusals& refusals_;
  std::map<std::string, v1::Deployment> deployments_;
};

}  // namespace gpt2
