// gpt2ctl's verbs: each one calls gpt2d, prints the answer as a table or JSON, and returns the
// process's exit code. Client holds the connection and turns a failed call into an `error: ...`
// line on stderr with what to do, and its exit code (kExit*). The verbs never throw.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/client_channel.h"
#include "gpt2d/v1/cluster.grpc.pb.h"
#include "gpt2d/v1/generate.grpc.pb.h"
#include "gpt2d/v1/jobs.grpc.pb.h"

namespace grpc {
class Status;
}

namespace gpt2::ctl {

// The exit codes, as `gpt2ctl --help` and the README list them.
enum ExitCode : int {
  kExitOk = 0,
  kExitFailed = 1,       // an RPC failed (RESOURCE_EXHAUSTED: at capacity), or the watched job FAILED
  kExitUsage = 2,        // bad flags or files, or gpt2d said INVALID_ARGUMENT
  kExitAuth = 3,         // UNAUTHENTICATED or PERMISSION_DENIED
  kExitCancelled = 4,    // the watched job was CANCELLED
  kExitUnreachable = 5,  // UNAVAILABLE or DEADLINE_EXCEEDED: gpt2d did not answer
  kExitNotFound = 6,     // NOT_FOUND: no such job, worker, checkpoint or deployment
  kExitInterrupted = 130,
};

enum class Output { kTable, kJson };

struct GlobalOptions {
  ClientChannelOptions channel;  // address, token, TLS
  Output output = Output::kTable;
  double timeout_seconds = 30;  // deadline of each unary call; streams have none
  bool timeout_given = false;   // --timeout was on the command line: generate honours it too
};

// One connection to gpt2d.
class Client {
 public:
  // Fails (INVALID_ARGUMENT) only on local problems such as unreadable TLS files; gpt2d is first
  // contacted by the first call.
  static absl::StatusOr<std::unique_ptr<Client>> Connect(const GlobalOptions& options);

  const GlobalOptions& options() const { return options_; }
  bool json() const { return options_.output == Output::kJson; }
  gpt2d::v1::JobService::Stub& jobs() { return *jobs_; }
  gpt2d::v1::ClusterService::Stub& cluster() { return *cluster_; }
  gpt2d::v1::DeploymentService::Stub& deployments() { return *deployments_; }
  gpt2d::v1::GenerateService::Stub& generate() { return *generate_; }

  // A context carrying the token, with the --timeout deadline (unary) or none (streams).
  std::unique_ptr<grpc::ClientContext> UnaryContext() const;
  std::unique_ptr<grpc::ClientContext> StreamContext() const;

  // Prints "error: ..." for a failed call to stderr and returns its exit code.
  int Fail(const grpc::Status& status) const;

 private:
  Client(GlobalOptions options, std::shared_ptr<grpc::Channel> channel);
  GlobalOptions options_;
  std::shared_ptr<grpc::Channel> channel_;
  std::unique_ptr<gpt2d::v1::JobService::Stub> jobs_;
  std::unique_ptr<gpt2d::v1::ClusterService::Stub> cluster_;
  std::unique_ptr<gpt2d::v1::DeploymentService::Stub> deployments_;
  std::unique_ptr<gpt2d::v1::GenerateService::Stub> generate_;
};

// Prints "error: <message>" to stderr and returns kExitUsage.
int UsageError(const std::string& message);

struct SubmitOptions {
  std::string spec_file;  // YAML or JSON TrainSpec
  std::string idempotency_key;
  bool watch = false;
  bool dry_run = false;  // check the spec and print it as JSON; contact no one
};

struct ListJobsOptions {
  std::vector<std::string> states;  // names ParseJobState accepts; empty = all
  int32_t limit = 0;                // page size; 0 = the server's default
  std::string page_token;
  bool all = false;  // follow next_page_token to the end
};

struct WatchOptions {
  std::string job_id;
  int64_t after_sequence = 0;
};

int SubmitJob(Client& client, const SubmitOptions& options);
int ListJobs(Client& client, const ListJobsOptions& options);
int GetJob(Client& client, const std::string& job_id);
int CancelJob(Client& client, const std::string& job_id);
int ListCheckpoints(Client& client, const std::string& job_id);
int ListWorkers(Client& client);
int GetWorker(Client& client, const std::string& worker_id);

struct CreateDeploymentOptions {
  std::string name;
  std::string checkpoint;  // exactly one of checkpoint and follow_job
  std::string follow_job;
  int32_t replicas = 1;
};

int CreateDeployment(Client& client, const CreateDeploymentOptions& options);
int ListDeployments(Client& client);
int GetDeployment(Client& client, const std::string& name);
int DeleteDeployment(Client& client, const std::string& name);

struct GenerateOptions {
  std::string prompt;                 // "-": read stdin (as is, a trailing newline included)
  std::string deployment;             // empty: gpt2d's default deployment
  std::optional<int32_t> max_tokens;  // unset: the server's default (16)
  std::optional<float> temperature;   // unset: the server's default (1.0)
  int32_t top_k = 0;
  float top_p = 0;
  std::optional<uint64_t> seed;
  std::vector<std::string> stop;
  bool ignore_eos = false;
  bool logprobs = false;
  bool complete = false;  // the unary Complete instead of the Generate stream
};

// Streams a completion to stdout as it is generated (client/generate.cc). Ctrl-C cancels the call.
int Generate(Client& client, const GenerateOptions& options);

// Streams the job's events until it ends; the exit code is the job's outcome (client/watch.cc).
int WatchJob(Client& client, const WatchOptions& options);

}  // namespace gpt2::ctl
