#include "server/services.h"

#include <thread>

#include "absl/strings/str_cat.h"
#include "common/states.h"
#include "server/validation.h"

namespace gpt2 {
namespace {

absl::Status Required(const std::string& value, const char* field) {
  if (value.empty()) return absl::InvalidArgumentError(absl::StrCat(field, ": required"));
  return absl::OkStatus();
}

// The tail of most handlers: an OK result becomes the response, an error the call's status.
template <typename T>
absl::Status Respond(absl::StatusOr<T> result, T* response) {
  if (!result.ok()) return result.status();
  *response = *std::move(result);
  return absl::OkStatus();
}

}  // namespace

// ---- JobService

grpc::Status JobServiceImpl::SubmitJob(grpc::ServerContext* ctx, const v1::SubmitJobRequest* req,
                                       v1::SubmitJobResponse* resp) {
  return guard_(ctx, "SubmitJob", [&]() -> absl::Status {
    if (!req->has_spec()) return absl::InvalidArgumentError("spec: required");
    absl::StatusOr<JobShape> shape = ValidateSubmission(req->spec(), req->idempotency_key());
    if (!shape.ok()) return shape.status();
    return Respond(coordinator_.Submit(req->spec(), *shape, req->idempotency_key()), resp->mutable_job());
  });
}

grpc::Status JobServiceImpl::GetJob(grpc::ServerContext* ctx, const v1::GetJobRequest* req, v1::Job* resp) {
  return guard_(ctx, "GetJob", [&]() -> absl::Status {
    if (absl::Status s = Required(req->id(), "id"); !s.ok()) return s;
    return Respond(store_.GetJob(req->id()), resp);
  });
}

grpc::Status JobServiceImpl::ListJobs(grpc::ServerContext* ctx, const v1::ListJobsRequest* req,
                                      v1::ListJobsResponse* resp) {
  return guard_(ctx, "ListJobs", [&]() -> absl::Status {
    if (req->page_size() < 0 || req->page_size() > 500)
      return absl::InvalidArgumentError(absl::StrCat("page_size: ", req->page_size(), " is not in [0, 500]"));
    std::vector<v1::JobState> states;
    for (int s : req->states()) {
      if (s == v1::JOB_STATE_UNSPECIFIED || !v1::JobState_IsValid(s))
        return absl::InvalidArgumentError(absl::StrCat("states: ", s, " is not a job state"));
      states.push_back(static_cast<v1::JobState>(s));
    }
    std::string next;
    absl::StatusOr<std::vector<v1::Job>> jobs =
        store_.ListJobs(states, req->page_size() == 0 ? 50 : req->page_size(), req->page_token(), &next);
    if (!jobs.ok()) return jobs.status();
    for (v1::Job& j : *jobs) *resp->add_jobs() = std::move(j);
    resp->set_next_page_token(next);
    return absl::OkStatus();
  });
}

grpc::Status JobServiceImpl::WatchJob(grpc::ServerContext* ctx, const v1::WatchJobRequest* req,
                                      grpc::ServerWriter<v1::JobEvent>* writer) {
  return guard_(ctx, "WatchJob", [&]() -> absl::Status {
    if (absl::Status s = Required(req->id(), "id"); !s.ok()) return s;
    if (req->after_sequence() < 0) return absl::InvalidArgumentError("after_sequence: must be >= 0");
    if (absl::StatusOr<v1::Job> job = store_.GetJob(req->id()); !job.ok()) return job.status();
    int64_t after = req->after_sequence();
    constexpr int kBatch = 500;
    while (!ctx->IsCancelled()) {
      absl::StatusOr<std::vector<v1::JobEvent>> events = store_.ListEvents(req->id(), after, kBatch);
      if (!events.ok()) return events.status();
      for (const v1::JobEvent& e : *events) {
        if (!writer->Write(e)) return absl::CancelledError("the client went away");
        after = e.sequence();
      }
      if (static_cast<int>(events->size()) == kBatch) continue;
      absl::StatusOr<v1::Job> job = store_.GetJob(req->id());
      if (!job.ok()) return job.status();
      if (IsTerminal(job->state()) && after >= job->last_sequence()) return absl::OkStatus();
      coordinator_.WaitForEvents(req->id(), after, Clock::now() + std::chrono::seconds(1));
    }
    return absl::CancelledError("the client cancelled the watch");
  });
}

grpc::Status JobServiceImpl::CancelJob(grpc::ServerContext* ctx, const v1::CancelJobRequest* req, v1::Job* resp) {
  return guard_(ctx, "CancelJob", [&]() -> absl::Status {
    if (absl::Status s = Required(req->id(), "id"); !s.ok()) return s;
    return Respond(coordinator_.Cancel(req->id()), resp);
  });
}

grpc::Status JobServiceImpl::ListCheckpoints(grpc::ServerContext* ctx, const v1::ListCheckpointsRequest* req,
                                             v1::ListCheckpointsResponse* resp) {
  return guard_(ctx, "ListCheckpoints", [&]() -> absl::Status {
    if (absl::Status s = Required(req->job_id(), "job_id"); !s.ok()) return s;
    if (absl::StatusOr<v1::Job> job = store_.GetJob(req->job_id()); !job.ok()) return job.status();
    absl::StatusOr<std::vector<v1::Checkpoint>> all = store_.ListCheckpoints(req->job_id());
    if (!all.ok()) return all.status();
    for (v1::Checkpoint& c : *all) *resp->add_checkpoints() = std::move(c);
    return absl::OkStatus();
  });
}

// ---- DeploymentService

grpc::Status DeploymentServiceImpl::CreateDeployment(grpc::ServerContext* ctx, const v1::CreateDeploymentRequest* req,
                                                     v1::Deployment* resp) {
  return guard_(ctx, "CreateDeployment", [&]() -> absl::Status {
    absl::StatusOr<v1::Deployment> valid = ValidateDeployment(req->deployment());
    if (!valid.ok()) return valid.status();
    return Respond(coordinator_.CreateDeployment(*std::move(valid)), resp);
  });
}

grpc::Status DeploymentServiceImpl::ListDeployments(grpc::ServerContext* ctx, const v1::ListDeploymentsRequest*,
                                                    v1::ListDeploymentsResponse* resp) {
  return guard_(ctx, "ListDeployments", [&]() -> absl::Status {
    for (v1::Deployment& d : coordinator_.ListDeployments()) *resp->add_deployments() = std::move(d);
    return absl::OkStatus();
  });
}

grpc::Status DeploymentServiceImpl::GetDeployment(grpc::ServerContext* ctx, const v1::GetDeploymentRequest* req,
                                                  v1::Deployment* resp) {
  return guard_(ctx, "GetDeployment", [&]() -> absl::Status {
    if (absl::Status s = Required(req->name(), "name"); !s.ok()) return s;
    return Respond(coordinator_.GetDeployment(req->name()), resp);
  });
}

grpc::Status DeploymentServiceImpl::DeleteDeployment(grpc::ServerContext* ctx, const v1::DeleteDeploymentRequest* req,
                                                     v1::DeleteDeploymentResponse*) {
  return guard_(ctx, "DeleteDeployment", [&]() -> absl::Status {
    if (absl::Status s = Required(req->name(), "name"); !s.ok()) return s;
    return coordinator_.DeleteDeployment(req->name());
  });
}

// ---- ClusterService

grpc::Status ClusterServiceImpl::ListWorkers(grpc::ServerContext* ctx, const v1::ListWorkersRequest*,
                                             v1::ListWorkersResponse* resp) {
  return guard_(ctx, "ListWorkers", [&]() -> absl::Status {
    for (v1::Worker& w : coordinator_.ListWorkers()) *resp->add_workers() = std::move(w);
    return absl::OkStatus();
  });
}

grpc::Status ClusterServiceImpl::GetWorker(grpc::ServerContext* ctx, const v1::GetWorkerRequest* req,
                                           v1::Worker* resp) {
  return guard_(ctx, "GetWorker", [&]() -> absl::Status {
    if (absl::Status s = Required(req->id(), "id"); !s.ok()) return s;
    return Respond(coordinator_.GetWorker(req->id()), resp);
  });
}

// ---- WorkerService

grpc::Status WorkerServiceImpl::Connect(grpc::ServerContext* ctx,
                                        grpc::ServerReaderWriter<v1::CoordinatorMessage, v1::WorkerMessage>* stream) {
  return guard_(ctx, "Connect", [&]() -> absl::Status {
    v1::WorkerMessage first;
    if (!stream->Read(&first)) return absl::CancelledError("the worker closed the stream before registering");
    if (!first.has_register_()) return absl::InvalidArgumentError("the first message on the stream must be a Register");
    if (absl::Status s = ValidateRegistration(first.register_()); !s.ok()) return s;
    absl::StatusOr<std::shared_ptr<WorkerSession>> session =
        coordinator_.Connect(first.register_(), [ctx] { ctx->TryCancel(); });
    if (!session.ok()) return session.status();
    const std::string id = first.register_().worker_id();
    std::thread writer([&, s = *session] {
      while (true) {
        std::optional<v1::CoordinatorMessage> m = s->Next(Clock::now() + std::chrono::seconds(1));
        if (m) {
          if (!stream->Write(*m)) break;
        } else if (s->closed()) {
          break;
        }
      }
    });
    v1::WorkerMessage m;
    while (stream->Read(&m)) coordinator_.Receive(id, *session, m);
    coordinator_.Disconnect(id, *session, ctx->IsCancelled() ? "stream cancelled" : "stream closed");
    (*session)->Close();
    writer.join();
    return absl::OkStatus();
  });
}

}  // namespace gpt2
