// gpt2d's gRPC services. Each checks its requests (validation.h: INVALID_ARGUMENT naming the
// field), then hands the work to the coordinator (state changes) or the job store (reads).
#pragma once

#include "gpt2d/v1/cluster.grpc.pb.h"
#include "gpt2d/v1/jobs.grpc.pb.h"
#include "gpt2d/v1/worker.grpc.pb.h"
#include "server/coordinator.h"
#include "server/rpc.h"
#include "server/store.h"

namespace gpt2 {

class JobServiceImpl final : public v1::JobService::Service {
 public:
  JobServiceImpl(JobStore& store, Coordinator& coordinator, RpcGuard guard)
      : store_(store), coordinator_(coordinator), guard_(std::move(guard)) {}
  grpc::Status SubmitJob(grpc::ServerContext*, const v1::SubmitJobRequest*, v1::SubmitJobResponse*) override;
  grpc::Status GetJob(grpc::ServerContext*, const v1::GetJobRequest*, v1::Job*) override;
  grpc::Status ListJobs(grpc::ServerContext*, const v1::ListJobsRequest*, v1::ListJobsResponse*) override;
  grpc::Status WatchJob(grpc::ServerContext*, const v1::WatchJobRequest*, grpc::ServerWriter<v1::JobEvent>*) override;
  grpc::Status CancelJob(grpc::ServerContext*, const v1::CancelJobRequest*, v1::Job*) override;
  grpc::Status ListCheckpoints(grpc::ServerContext*, const v1::ListCheckpointsRequest*,
                               v1::ListCheckpointsResponse*) override;

 private:
  JobStore& store_;
  Coordinator& coordinator_;
  RpcGuard guard_;
};

class DeploymentServiceImpl final : public v1::DeploymentService::Service {
 public:
  DeploymentServiceImpl(Coordinator& coordinator, RpcGuard guard)
      : coordinator_(coordinator), guard_(std::move(guard)) {}
  grpc::Status CreateDeployment(grpc::ServerContext*, const v1::CreateDeploymentRequest*, v1::Deployment*) override;
  grpc::Status ListDeployments(grpc::ServerContext*, const v1::ListDeploymentsRequest*,
                               v1::ListDeploymentsResponse*) override;
  grpc::Status GetDeployment(grpc::ServerContext*, const v1::GetDeploymentRequest*, v1::Deployment*) override;
  grpc::Status DeleteDeployment(grpc::ServerContext*, const v1::DeleteDeploymentRequest*,
                                v1::DeleteDeploymentResponse*) override;

 private:
  Coordinator& coordinator_;
  RpcGuard guard_;
};

class ClusterServiceImpl final : public v1::ClusterService::Service {
 public:
  ClusterServiceImpl(Coordinator& coordinator, RpcGuard guard) : coordinator_(coordinator), guard_(std::move(guard)) {}
  grpc::Status ListWorkers(grpc::ServerContext*, const v1::ListWorkersRequest*, v1::ListWorkersResponse*) override;
  grpc::Status GetWorker(grpc::ServerContext*, const v1::GetWorkerRequest*, v1::Worker*) override;

 private:
  Coordinator& coordinator_;
  RpcGuard guard_;
};

// The workers' stream. The handler's thread reads; a second thread writes what the coordinator
// queues for the worker. The stream ending (or a heartbeat timeout) means the worker is lost.
class WorkerServiceImpl final : public v1::WorkerService::Service {
 public:
  WorkerServiceImpl(Coordinator& coordinator, RpcGuard guard) : coordinator_(coordinator), guard_(std::move(guard)) {}
  grpc::Status Connect(grpc::ServerContext*,
                       grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) override;

 private:
  Coordinator& coordinator_;
  RpcGuard guard_;
};

}  // namespace gpt2
