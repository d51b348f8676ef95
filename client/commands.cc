#include "client/commands.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>

#include <chrono>
#include <cmath>
#include <iostream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/strip.h"
#include "client/format.h"
#include "common/job_spec.h"
#include "common/states.h"

namespace gpt2::ctl {

namespace v1 = gpt2d::v1;

// ---------------------------------------------------------------------------------------------
// Client

absl::StatusOr<std::unique_ptr<Client>> Client::Connect(const GlobalOptions& options) {
  absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeClientChannel(options.channel);
  if (!channel.ok()) return channel.status();
  return std::unique_ptr<Client>(new Client(options, *std::move(channel)));
}

Client::Client(GlobalOptions options, std::shared_ptr<grpc::Channel> channel)
    : options_(std::move(options)),
      channel_(std::move(channel)),
      jobs_(v1::JobService::NewStub(channel_)),
      cluster_(v1::ClusterService::NewStub(channel_)),
      deployments_(v1::DeploymentService::NewStub(channel_)),
      generate_(v1::GenerateService::NewStub(channel_)) {}

std::unique_ptr<grpc::ClientContext> Client::UnaryContext() const {
  auto context = StreamContext();
  const auto timeout = std::chrono::milliseconds(std::llround(options_.timeout_seconds * 1000));
  context->set_deadline(std::chrono::system_clock::now() + timeout);
  return context;
}

std::unique_ptr<grpc::ClientContext> Client::StreamContext() const {
  auto context = std::make_unique<grpc::ClientContext>();
  PrepareContext(*context, options_.channel.token);
  return context;
}

int Client::Fail(const grpc::Status& status) const {
  const std::string& address = options_.channel.address;
  const std::string& message = status.error_message();
  switch (status.error_code()) {
    case grpc::StatusCode::INVALID_ARGUMENT:
      std::cerr << "error: " << message << "\n";
      return kExitUsage;
    case grpc::StatusCode::UNAUTHENTICATED:
    case grpc::StatusCode::PERMISSION_DENIED:
      std::cerr << "error: gpt2d refused the token: pass --token or set GPT2D_TOKEN (gpt2d said: " << message << ")\n";
      return kExitAuth;
    case grpc::StatusCode::NOT_FOUND:
      std::cerr << "error: " << message << "\n";
      return kExitNotFound;
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      // Connected but slow is a different problem from not connected at all.
      if (channel_->GetState(false) == GRPC_CHANNEL_READY) {
        std::cerr << absl::StrFormat("error: gpt2d at %s did not answer within %gs (raise --timeout)\n", address,
                                     options_.timeout_seconds);
        return kExitUnreachable;
      }
      [[fallthrough]];
    case grpc::StatusCode::UNAVAILABLE: {
      // Said by gpt2d itself (a deployment with no ready replica yet) rather than by the transport.
      if (status.error_code() == grpc::StatusCode::UNAVAILABLE && channel_->GetState(false) == GRPC_CHANNEL_READY &&
          !message.empty()) {
        std::cerr << "error: " << message << " (retry later)\n";
        return kExitUnreachable;
      }
      std::string hint = "is it running? --server / GPT2D_SERVER";
      const std::string lower = absl::AsciiStrToLower(message);
      if (UsesTls(options_.channel) && (absl::StrContains(lower, "ssl") || absl::StrContains(lower, "handshake")))
        hint = "TLS failed: check --tls-ca, --tls-server-name, --tls-cert/--tls-key";
      else if (absl::StrContains(lower, "socket closed"))  // it hung up on the handshake
        hint = UsesTls(options_.channel) ? "does gpt2d want a client certificate? --tls-cert/--tls-key"
                                         : "is it running, and does it want TLS? --tls";
      std::cerr << "error: cannot reach gpt2d at " << address << ": " << message << " (" << hint << ")\n";
      return kExitUnreachable;
    }
    case grpc::StatusCode::RESOURCE_EXHAUSTED: {
      absl::string_view reason = message;
      for (absl::string_view suffix : {"; retry later", ", retry later", " (retry later)", "; try again later"})
        if (absl::ConsumeSuffix(&reason, suffix)) break;
      std::cerr << "error: gpt2d is at capacity: " << (reason.empty() ? "RESOURCE_EXHAUSTED" : reason)
                << " (retry later)\n";
      return kExitFailed;
    }
    default:
      std::cerr << "error: " << absl::StatusCodeToString(static_cast<absl::StatusCode>(status.error_code())) << ": "
                << message << "\n";
      return kExitFailed;
  }
}

int UsageError(const std::string& message) {
  std::cerr << "error: " << message << "\n";
  return kExitUsage;
}

namespace {

// The shape of most verbs: one unary call (`call` fills the response under the client's deadline),
// then the response as JSON (--output json) or as `print` shows it. Returns the exit code.
template <typename Response, typename Call, typename Print>
int Unary(Client& client, Call call, Print print) {
  Response response;
  if (grpc::Status status = call(client.UnaryContext().get(), &response); !status.ok()) return client.Fail(status);
  if (client.json()) {
    std::cout << ToJson(response, /*pretty=*/true) << std::endl;
  } else {
    print(response);
  }
  return kExitOk;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// jobs

namespace {

std::string StepOfMax(const v1::Job& job) {
  return job.max_steps() > 0 ? absl::StrCat(job.step(), "/", job.max_steps()) : absl::StrCat(job.step());
}

std::optional<double> LastLoss(const v1::Job& job) {
  if (!job.has_last_step() || job.last_step().step() == 0) return std::nullopt;
  return job.last_step().loss();
}

std::optional<double> BestVal(const v1::Job& job) {
  return job.has_best_val_loss() ? std::optional<double>(job.best_val_loss()) : std::nullopt;
}

std::string OrDash(const std::string& s) { return s.empty() ? "-" : s; }

// The spec in a file ("-": stdin), checked as gpt2d and the worker will check it, so that a mistake
// costs no round trip. Errors name the file and the field.
absl::StatusOr<v1::TrainSpec> LoadJobSpec(const std::string& path) {
  absl::StatusOr<v1::TrainSpec> spec;
  if (path == "-") {
    std::stringstream text;
    text << std::cin.rdbuf();
    spec = ParseTrainSpec(text.str());
  } else {
    spec = ReadTrainSpec(path);
  }
  const std::string name = path == "-" ? "<stdin>" : path;
  if (!spec.ok()) {
    if (path == "-") return absl::InvalidArgumentError(absl::StrCat(name, ": ", spec.status().message()));
    return spec.status();
  }
  if (absl::StatusOr<TrainConfig> config = ResolveTrainSpec(*spec); !config.ok())
    return absl::InvalidArgumentError(absl::StrCat(name, ": ", config.status().message()));
  return spec;
}

}  // namespace

int SubmitJob(Client& client, const SubmitOptions& options) {
  absl::StatusOr<v1::TrainSpec> spec = LoadJobSpec(options.spec_file);
  if (!spec.ok()) return UsageError(std::string(spec.status().message()));
  if (options.dry_run) {
    std::cout << ToJson(*spec, /*pretty=*/true) << std::endl;
    return kExitOk;
  }

  v1::SubmitJobRequest request;
  *request.mutable_spec() = *std::move(spec);
  request.set_idempotency_key(options.idempotency_key);
  v1::SubmitJobResponse response;
  grpc::Status status = client.jobs().SubmitJob(client.UnaryContext().get(), request, &response);
  if (!status.ok()) return client.Fail(status);

  const v1::Job& job = response.job();
  if (client.json()) {
    // Followed by a watch, the output is JSON lines: the job, then its events.
    std::cout << ToJson(job, /*pretty=*/!options.watch) << std::endl;
  } else {
    std::cout << job.id() << " submitted (" << JobStateName(job.state()) << ")" << std::endl;
  }
  if (!options.watch) return kExitOk;
  return WatchJob(client, WatchOptions{.job_id = job.id(), .after_sequence = 0});
}

int ListJobs(Client& client, const ListJobsOptions& options) {
  v1::ListJobsRequest request;
  for (const std::string& name : options.states) {
    std::optional<v1::JobState> state = ParseJobState(name);
    if (!state)
      return UsageError(
          absl::StrCat("unknown job state \"", name, "\": one of ", absl::StrJoin(JobStateChoices(), ", ")));
    request.add_states(*state);
  }
  request.set_page_size(options.limit);
  request.set_page_token(options.page_token);

  v1::ListJobsResponse all;
  while (true) {
    v1::ListJobsResponse page;
    grpc::Status status = client.jobs().ListJobs(client.UnaryContext().get(), request, &page);
    if (!status.ok()) return client.Fail(status);
    for (v1::Job& job : *page.mutable_jobs()) *all.add_jobs() = std::move(job);
    all.set_next_page_token(page.next_page_token());
    if (!options.all || page.next_page_token().empty()) break;
    request.set_page_token(page.next_page_token());
  }

  if (client.json()) {
    std::cout << ToJson(all, /*pretty=*/true) << std::endl;
    return kExitOk;
  }
  if (all.jobs().empty()) {
    std::cerr << "No jobs" << (options.states.empty() ? "" : " in these states") << ".\n";
    return kExitOk;
  }
  const int64_t now = NowUnixSeconds();
  Table table({"ID", "NAME", "STATE", "STEP", "LOSS", "VAL", "WORKERS", "AGE", "UPDATED"});
  for (const v1::Job& job : all.jobs()) {
    table.AddRow({job.id(), OrDash(job.spec().name()), JobStateName(job.state()), StepOfMax(job),
                  FormatLoss(LastLoss(job)), FormatLoss(BestVal(job)),
                  job.world_size() > 0 ? absl::StrCat(job.world_size()) : "-", FormatAge(job.created_at(), now),
                  FormatAge(job.updated_at(), now)});
  }
  table.Print(std::cout);
  if (!all.next_page_token().empty())
    std::cerr << "More jobs: --page-token " << all.next_page_token() << " (or --all)\n";
  return kExitOk;
}

namespace {

void PrintJobSummary(const v1::Job& job) {
  const int64_t now = NowUnixSeconds();
  auto when = [now](const google::protobuf::Timestamp& t) { return FormatTimestampAndAge(t, now); };
  std::vector<std::pair<std::string, std::string>> rows = {
      {"ID", job.id()},
      {"Name", OrDash(job.spec().name())},
      {"State", JobStateName(job.state())},
  };
  if (!job.failure_reason().empty()) rows.push_back({"Failure reason", job.failure_reason()});
  rows.push_back({"Step", StepOfMax(job)});
  if (std::optional<double> loss = LastLoss(job)) {
    const v1::StepMetrics& m = job.last_step();
    std::string detail =
        absl::StrFormat("%.4f (lr %.3e, %s tok/s", *loss, m.lr(), FormatThousands(std::llround(m.tokens_per_second())));
    if (m.mfu() > 0) absl::StrAppendFormat(&detail, ", MFU %.1f%%", m.mfu() * 100);
    rows.push_back({"Loss", detail + ")"});
  } else {
    rows.push_back({"Loss", "-"});
  }
  rows.push_back({"Best val loss", FormatLoss(BestVal(job))});
  rows.push_back({"Attempt", absl::StrCat(job.attempt())});
  rows.push_back({"Restarts", absl::StrCat(job.restarts())});
  std::string workers = job.world_size() > 0 ? absl::StrCat(job.world_size()) : "-";
  if (!job.worker_ids().empty()) absl::StrAppend(&workers, " (", absl::StrJoin(job.worker_ids(), ", "), ")");
  rows.push_back({"Workers", workers});
  rows.push_back({"Checkpoint dir", OrDash(job.spec().checkpoint().dir())});
  rows.push_back({"Created", when(job.created_at())});
  rows.push_back({"Started", when(job.started_at())});
  rows.push_back({"Finished", when(job.finished_at())});

  PrintFields(rows, std::cout);
}

}  // namespace

int GetJob(Client& client, const std::string& job_id) {
  v1::GetJobRequest request;
  request.set_id(job_id);
  return Unary<v1::Job>(
      client, [&](grpc::ClientContext* ctx, v1::Job* r) { return client.jobs().GetJob(ctx, request, r); },
      [&](const v1::Job& job) { PrintJobSummary(job); });
}

int CancelJob(Client& client, const std::string& job_id) {
  v1::CancelJobRequest request;
  request.set_id(job_id);
  return Unary<v1::Job>(
      client, [&](grpc::ClientContext* ctx, v1::Job* r) { return client.jobs().CancelJob(ctx, request, r); },
      [&](const v1::Job& job) { std::cout << job.id() << " " << JobStateName(job.state()) << std::endl; });
}

// ---------------------------------------------------------------------------------------------
// checkpoints

int ListCheckpoints(Client& client, const std::string& job_id) {
  v1::ListCheckpointsRequest request;
  request.set_job_id(job_id);
  return Unary<v1::ListCheckpointsResponse>(
      client,
      [&](grpc::ClientContext* ctx, v1::ListCheckpointsResponse* r) {
        return client.jobs().ListCheckpoints(ctx, request, r);
      },
      [&](const v1::ListCheckpointsResponse& response) {
        if (response.checkpoints().empty()) {
          std::cerr << "No checkpoints of " << job_id << " yet.\n";
          return;
        }
        const int64_t now = NowUnixSeconds();
        Table table({"STEP", "VAL LOSS", "PATH", "CREATED"});
        for (const v1::Checkpoint& c : response.checkpoints()) {
          table.AddRow({absl::StrCat(c.step()),
                        FormatLoss(c.has_val_loss() ? std::optional(c.val_loss()) : std::nullopt), c.path(),
                        FormatAge(c.created_at(), now)});
        }
        table.Print(std::cout);
      });
}

// ---------------------------------------------------------------------------------------------
// workers

int ListWorkers(Client& client) {
  return Unary<v1::ListWorkersResponse>(
      client,
      [&](grpc::ClientContext* ctx, v1::ListWorkersResponse* r) {
        return client.cluster().ListWorkers(ctx, v1::ListWorkersRequest(), r);
      },
      [&](const v1::ListWorkersResponse& response) {
        if (response.workers().empty()) {
          std::cerr << "No workers have registered with gpt2d.\n";
          return;
        }
        const int64_t now = NowUnixSeconds();
        Table table({"ID", "STATE", "DEVICE", "HOST", "JOB", "RANK", "LAST HEARTBEAT"});
        for (const v1::Worker& w : response.workers()) {
          const bool training = !w.job_id().empty();
          table.AddRow({w.id(), WorkerStateName(w.state()), OrDash(w.device()), OrDash(w.host()),
                        training ? w.job_id() : OrDash(w.deployment()), training ? absl::StrCat(w.rank()) : "-",
                        FormatAge(w.last_heartbeat(), now)});
        }
        table.Print(std::cout);
      });
}

int GetWorker(Client& client, const std::string& worker_id) {
  v1::GetWorkerRequest request;
  request.set_id(worker_id);
  return Unary<v1::Worker>(
      client, [&](grpc::ClientContext* ctx, v1::Worker* r) { return client.cluster().GetWorker(ctx, request, r); },
      [&](const v1::Worker& w) {
        const int64_t now = NowUnixSeconds();
        std::vector<std::pair<std::string, std::string>> rows = {
            {"ID", w.id()},
            {"State", WorkerStateName(w.state())},
            {"Host", OrDash(w.host())},
            {"Device", OrDash(w.device())},
            {"Memory", FormatBytes(w.memory_bytes())},
            {"Job", OrDash(w.job_id())},
            {"Rank", w.job_id().empty() ? "-" : absl::StrCat(w.rank())},
            {"Deployment", OrDash(w.deployment())},
            {"Serve address", OrDash(w.serve_address())},
            {"Last heartbeat", FormatTimestampAndAge(w.last_heartbeat(), now)},
        };
        PrintFields(rows, std::cout);
      });
}

// ---------------------------------------------------------------------------------------------
// deployments

namespace {

std::string DeploymentSource(const v1::Deployment& d) {
  if (!d.follow_job().empty()) return "follows " + d.follow_job();
  return OrDash(d.checkpoint());
}

std::string ReadyOfWanted(const v1::Deployment& d) { return absl::StrCat(d.ready_replicas(), "/", d.replicas()); }

std::string ServingStep(const v1::Deployment& d) {
  return d.ready_replicas() > 0 || d.serving_step() > 0 ? absl::StrCat(d.serving_step()) : "-";
}

std::string Replicas(int32_t n) { return absl::StrCat(n, n == 1 ? " replica" : " replicas"); }

}  // namespace

int CreateDeployment(Client& client, const CreateDeploymentOptions& options) {
  if (options.checkpoint.empty() == options.follow_job.empty())
    return UsageError("deploy create needs exactly one of --checkpoint DIR and --follow-job JOB_ID");
  v1::CreateDeploymentRequest request;
  v1::Deployment& d = *request.mutable_deployment();
  d.set_name(options.name);
  d.set_checkpoint(options.checkpoint);
  d.set_follow_job(options.follow_job);
  d.set_replicas(options.replicas);
  return Unary<v1::Deployment>(
      client,
      [&](grpc::ClientContext* ctx, v1::Deployment* r) {
        return client.deployments().CreateDeployment(ctx, request, r);
      },
      [&](const v1::Deployment& created) {
        std::cout << "deployment " << created.name() << " created (" << Replicas(created.replicas()) << ")"
                  << std::endl;
      });
}

int ListDeployments(Client& client) {
  return Unary<v1::ListDeploymentsResponse>(
      client,
      [&](grpc::ClientContext* ctx, v1::ListDeploymentsResponse* r) {
        return client.deployments().ListDeployments(ctx, v1::ListDeploymentsRequest(), r);
      },
      [&](const v1::ListDeploymentsResponse& response) {
        if (response.deployments().empty()) {
          std::cerr << "No deployments (gpt2ctl deploy create).\n";
          return;
        }
        const int64_t now = NowUnixSeconds();
        Table table({"NAME", "SOURCE", "REPLICAS", "STEP", "WORKERS", "AGE"});
        for (const v1::Deployment& d : response.deployments()) {
          table.AddRow({d.name(), DeploymentSource(d), ReadyOfWanted(d), ServingStep(d),
                        d.worker_ids().empty() ? "-" : absl::StrJoin(d.worker_ids(), ","),
                        FormatAge(d.created_at(), now)});
        }
        table.Print(std::cout);
      });
}

int GetDeployment(Client& client, const std::string& name) {
  v1::GetDeploymentRequest request;
  request.set_name(name);
  return Unary<v1::Deployment>(
      client,
      [&](grpc::ClientContext* ctx, v1::Deployment* r) { return client.deployments().GetDeployment(ctx, request, r); },
      [&](const v1::Deployment& d) {
        const int64_t now = NowUnixSeconds();
        std::vector<std::pair<std::string, std::string>> rows = {{"Name", d.name()}};
        if (!d.follow_job().empty()) {
          rows.push_back({"Follows job", d.follow_job()});
        } else {
          rows.push_back({"Checkpoint", OrDash(d.checkpoint())});
        }
        rows.push_back({"Replicas", absl::StrCat(ReadyOfWanted(d), " ready")});
        rows.push_back({"Serving step", ServingStep(d)});
        rows.push_back({"Workers", d.worker_ids().empty() ? "-" : absl::StrJoin(d.worker_ids(), ", ")});
        rows.push_back({"Created", FormatTimestampAndAge(d.created_at(), now)});
        PrintFields(rows, std::cout);
      });
}

int DeleteDeployment(Client& client, const std::string& name) {
  v1::DeleteDeploymentRequest request;
  request.set_name(name);
  return Unary<v1::DeleteDeploymentResponse>(
      client,
      [&](grpc::ClientContext* ctx, v1::DeleteDeploymentResponse* r) {
        return client.deployments().DeleteDeployment(ctx, request, r);
      },
      [&](const v1::DeleteDeploymentResponse& response) {
        std::cout << "deployment " << name << " deleted" << std::endl;
      });
}

}  // namespace gpt2::ctl
