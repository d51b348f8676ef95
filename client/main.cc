// gpt2ctl: the command line of gpt2d. Flags and verbs are wired here; the verbs themselves are in
// commands.cc (and watch.cc), what they print in format.cc.
#include <grpc/support/log.h>
#include <CLI/CLI.hpp>

#include <cstdlib>
#include <iostream>

#include "client/commands.h"
#include "client/format.h"
#include "common/client_channel.h"
#include "common/states.h"

namespace {

using namespace gpt2::ctl;
using gpt2::JobStateChoices;
using gpt2::ParseJobState;

constexpr char kExitCodes[] = R"(
Exit codes:
  0    ok
  1    a call to gpt2d failed (RESOURCE_EXHAUSTED: at capacity), or the watched job FAILED
  2    usage error, a bad job spec, or gpt2d said INVALID_ARGUMENT
  3    gpt2d refused the token (UNAUTHENTICATED, PERMISSION_DENIED)
  4    the watched job was CANCELLED
  5    gpt2d could not be reached or did not answer, or no replica is ready (UNAVAILABLE, DEADLINE_EXCEEDED)
  6    no such job, worker or deployment (NOT_FOUND)
  130  interrupted (Ctrl-C)
)";

constexpr char kExamples[] = R"(
Examples:
  gpt2ctl jobs submit -f job.yaml --watch
  gpt2ctl jobs list --state running --state queued
  gpt2ctl jobs watch job-000001
  gpt2ctl -o json jobs get job-000001
  gpt2ctl checkpoints list job-000001
  gpt2ctl workers list
  gpt2ctl deploy create default --follow-job job-000001 --replicas 2
  gpt2ctl deploy list
  gpt2ctl generate "Hello, I'm a language model," --max-tokens 32 --temperature 0.8 --top-k 50
  echo -n "Once upon a time" | gpt2ctl generate - --deployment tiny --seed 42 --stop "."
)";

// Integers that must be 1 or more (CLI::PositiveNumber's message quotes DBL_MAX in full).
const CLI::Validator kAtLeastOne(
    [](std::string& text) {
      int64_t n = 0;
      if (!CLI::detail::lexical_cast(text, n)) return "not an integer: " + text;
      if (n < 1) return "must be at least 1, got " + text;
      return std::string();
    },
    "", "AT_LEAST_ONE");

// The innermost (sub)command that was named on the command line.
CLI::App* DeepestParsed(CLI::App* app) {
  for (CLI::App* sub : app->get_subcommands())
    if (sub->parsed()) return DeepestParsed(sub);
  return app;
}

// gRPC's own log lines repeat, less clearly, what our "error: ..." says. GRPC_VERBOSITY brings
// them back for debugging.
void DiscardGrpcLog(gpr_log_func_args*) {}

}  // namespace

int main(int argc, char** argv) {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) gpr_set_log_function(DiscardGrpcLog);
  CLI::App app{"gpt2ctl: gpt2d's training jobs, workers and deployments, and text generation", "gpt2ctl"};
  app.fallthrough();  // global flags are accepted after the verb too
  app.require_subcommand(1);
  app.footer(kExitCodes);  // inherited by every subcommand's help
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return std::string("error: ") + e.what() + "\nRun with --help for usage.\n";
  });
  app.get_formatter()->column_width(34);
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);  // a flag given twice: the last wins

  GlobalOptions global;
  global.channel.address = "localhost:50051";
  std::string token, token_file, output = "table";
  app.add_option("--server", global.channel.address, "gpt2d's address")
      ->type_name("HOST:PORT")
      ->envname("GPT2D_SERVER")
      ->capture_default_str();
  CLI::Option* token_opt =
      app.add_option("--token", token, "Bearer token (default: $GPT2D_TOKEN, which unlike a flag does not show in ps)");
  token_opt->type_name("TOKEN");
  app.add_option("--token-file", token_file, "File holding the bearer token")->type_name("FILE")->excludes(token_opt);
  app.add_flag("--tls", global.channel.tls, "Connect with TLS (implied by the --tls-* options)");
  app.add_option("--tls-ca", global.channel.tls_ca_file, "PEM CA certificates to verify gpt2d (default: the system's)")
      ->type_name("FILE");
  CLI::Option* cert = app.add_option("--tls-cert", global.channel.tls_cert_file, "PEM client certificate (mutual TLS)")
                          ->type_name("FILE");
  CLI::Option* key =
      app.add_option("--tls-key", global.channel.tls_key_file, "PEM key of --tls-cert")->type_name("FILE");
  cert->needs(key);
  key->needs(cert);
  app.add_option("--tls-server-name", global.channel.tls_server_name,
                 "Name to verify in gpt2d's certificate (default: the host of --server)")
      ->type_name("NAME");
  app.add_option("-o,--output", output, "Print tables, or JSON (the API's messages)")
      ->type_name("FORMAT")
      ->check(CLI::IsMember({"table", "json"}, CLI::ignore_case))
      ->capture_default_str();
  CLI::Option* timeout_opt =
      app.add_option("--timeout", global.timeout_seconds,
                     "Deadline of each call in seconds (watch streams have none, generate only when given)");
  timeout_opt->type_name("SECONDS")->check(CLI::PositiveNumber)->capture_default_str();

  // jobs
  CLI::App* jobs = app.add_subcommand("jobs", "Training jobs: submit, list, get, watch, cancel");
  jobs->require_subcommand(1);

  SubmitOptions submit;
  CLI::App* submit_cmd = jobs->add_subcommand("submit", "Submit a job spec: YAML or JSON of train.proto's TrainSpec");
  submit_cmd->add_option("-f,--file", submit.spec_file, "Job spec file; - reads stdin")->type_name("FILE")->required();
  submit_cmd
      ->add_option("--idempotency-key", submit.idempotency_key,
                   "Submitting the same key again returns the first job instead of a new one")
      ->type_name("KEY");
  submit_cmd->add_flag("--watch", submit.watch, "Then watch the job until it ends (exit code: its outcome)");
  submit_cmd->add_flag("--dry-run", submit.dry_run,
                       "Check the spec and print it as gpt2d would receive it; submit nothing");

  ListJobsOptions list;
  const CLI::Validator state_name(
      [](std::string& name) { return ParseJobState(name) ? std::string() : "unknown job state \"" + name + "\""; }, "");
  CLI::App* list_cmd = jobs->add_subcommand("list", "Jobs, newest first");
  list_cmd
      ->add_option("--state", list.states,
                   "Only jobs in these states (repeat, or comma-separate): queued, running, restarting, succeeded, "
                   "failed, cancelled")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->delimiter(',')
      ->type_name("STATE")
      ->check(state_name);
  list_cmd->add_option("--limit", list.limit, "Jobs per page (default: gpt2d's, 50; at most 500)")
      ->type_name("N")
      ->check(CLI::NonNegativeNumber);
  list_cmd->add_option("--page-token", list.page_token, "Continue a previous listing")->type_name("TOKEN");
  list_cmd->add_flag("--all", list.all, "Follow the pages to the last job");

  std::string job_id;
  CLI::App* get_cmd = jobs->add_subcommand("get", "One job: state, progress, losses, workers, times");
  get_cmd->add_option("id", job_id, "Job ID")->type_name("ID")->required();

  WatchOptions watch;
  CLI::App* watch_cmd = jobs->add_subcommand(
      "watch", "Follow a job's progress, evals and checkpoints until it ends (exit code: its outcome)");
  watch_cmd->add_option("id", watch.job_id, "Job ID")->type_name("ID")->required();
  watch_cmd->add_option("--after", watch.after_sequence, "Replay the history after this event sequence (0: all)")
      ->type_name("SEQ")
      ->check(CLI::NonNegativeNumber);

  CLI::App* cancel_cmd = jobs->add_subcommand("cancel", "Cancel a job; prints its new state");
  cancel_cmd->add_option("id", job_id, "Job ID")->type_name("ID")->required();

  // checkpoints
  CLI::App* checkpoints = app.add_subcommand("checkpoints", "A job's checkpoints");
  checkpoints->require_subcommand(1);
  CLI::App* ckpt_list_cmd = checkpoints->add_subcommand("list", "Checkpoints kept for a job, with validation loss");
  ckpt_list_cmd->add_option("job", job_id, "Job ID")->type_name("JOB")->required();

  // workers
  CLI::App* workers = app.add_subcommand("workers", "The workers registered with gpt2d");
  workers->require_subcommand(1);
  CLI::App* workers_list_cmd = workers->add_subcommand("list", "Every worker: state, device, host, job");
  std::string worker_id;
  CLI::App* worker_get_cmd = workers->add_subcommand("get", "One worker");
  worker_get_cmd->add_option("id", worker_id, "Worker ID")->type_name("ID")->required();

  // deploy
  CLI::App* deploy = app.add_subcommand("deploy", "Deployments: replicas serving a checkpoint or a training job");
  deploy->require_subcommand(1);
  CreateDeploymentOptions create;
  CLI::App* deploy_create_cmd = deploy->add_subcommand(
      "create", "Serve a checkpoint, or follow a training job (hot-loading each new checkpoint)");
  deploy_create_cmd->add_option("name", create.name, "Deployment name: [a-z0-9-]{1,63}")->type_name("NAME")->required();
  CLI::Option* checkpoint_opt =
      deploy_create_cmd
          ->add_option("--checkpoint", create.checkpoint, "A checkpoint directory on the workers' filesystem")
          ->type_name("DIR");
  CLI::Option* follow_opt =
      deploy_create_cmd
          ->add_option("--follow-job", create.follow_job, "Serve this job's newest checkpoint, and each newer one")
          ->type_name("JOB_ID");
  checkpoint_opt->excludes(follow_opt);
  follow_opt->excludes(checkpoint_opt);
  deploy_create_cmd->add_option("--replicas", create.replicas, "Workers serving it")
      ->type_name("N")
      ->check(kAtLeastOne)
      ->capture_default_str();
  CLI::App* deploy_list_cmd = deploy->add_subcommand("list", "Every deployment: source, ready replicas, step");
  std::string deployment_name;
  CLI::App* deploy_get_cmd = deploy->add_subcommand("get", "One deployment");
  deploy_get_cmd->add_option("name", deployment_name, "Deployment name")->type_name("NAME")->required();
  CLI::App* deploy_delete_cmd =
      deploy->add_subcommand("delete", "Stop a deployment's replicas (running requests finish) and free its workers");
  deploy_delete_cmd->add_option("name", deployment_name, "Deployment name")->type_name("NAME")->required();

  // generate
  GenerateOptions gen;
  float temperature = 1;
  uint64_t seed = 0;
  CLI::App* generate_cmd = app.add_subcommand(
      "generate", "Generate text from a deployment, streamed as it comes (summary on stderr; Ctrl-C cancels)");
  generate_cmd->add_option("prompt", gen.prompt, "The prompt; - reads stdin (as is)")->type_name("PROMPT")->required();
  generate_cmd->add_option("--deployment", gen.deployment, "Which deployment (default: gpt2d's \"default\")")
      ->type_name("NAME");
  int32_t max_tokens = 0;
  CLI::Option* max_tokens_opt =
      generate_cmd->add_option("--max-tokens", max_tokens, "Most tokens to generate (default: the server's, 16)")
          ->type_name("N")
          ->check(kAtLeastOne);
  CLI::Option* temperature_opt =
      generate_cmd->add_option("--temperature", temperature, "Softmax temperature; 0 is greedy (default: 1.0)")
          ->type_name("T");
  generate_cmd->add_option("--top-k", gen.top_k, "Sample from the K most likely tokens (0: all)")->type_name("K");
  generate_cmd->add_option("--top-p", gen.top_p, "Nucleus sampling: the smallest set with probability >= P (0: off)")
      ->type_name("P");
  CLI::Option* seed_opt =
      generate_cmd->add_option("--seed", seed, "Seed: the same seed gives the same tokens (default: random)")
          ->type_name("S");
  generate_cmd->add_option("--stop", gen.stop, "Stop before this string (repeat for several)")
      ->type_name("STR")
      ->multi_option_policy(CLI::MultiOptionPolicy::TakeAll)
      ->allow_extra_args(false);  // --stop . PROMPT: the prompt is no second stop
  generate_cmd->add_flag("--ignore-eos", gen.ignore_eos, "Keep going past <|endoftext|>");
  generate_cmd->add_flag("--logprobs", gen.logprobs,
                         "Ask for each token's log-probability (in -o json; the mean in the summary)");
  generate_cmd->add_flag("--complete", gen.complete, "One unary Complete call: the whole text at the end");

  app.footer(std::string(kExamples) + kExitCodes);

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    CLI::App* where = DeepestParsed(&app);
    // "gpt2ctl jobs" alone: show what it can do rather than "a subcommand is required".
    if (e.get_exit_code() != 0 && where->get_require_subcommand_min() > 0 && where->get_subcommands().empty()) {
      std::cerr << where->help(where == &app ? "" : "gpt2ctl")
                << "\nerror: " << (where == &app ? "gpt2ctl" : "gpt2ctl " + where->get_name())
                << " needs a command (above)\n";
      return kExitUsage;
    }
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }

  if (output == "json") global.output = Output::kJson;
  global.timeout_given = timeout_opt->count() > 0;
  if (temperature_opt->count() > 0) gen.temperature = temperature;
  if (max_tokens_opt->count() > 0) gen.max_tokens = max_tokens;
  if (seed_opt->count() > 0) gen.seed = seed;
  if (deploy_create_cmd->parsed() && create.checkpoint.empty() == create.follow_job.empty())
    return UsageError("deploy create needs exactly one of --checkpoint DIR and --follow-job JOB_ID");
  if (!token_file.empty()) {
    absl::StatusOr<std::string> read = gpt2::ReadTokenFile(token_file);
    if (!read.ok()) return UsageError(std::string(read.status().message()));
    token = *read;
  } else if (token.empty()) {
    if (const char* env = std::getenv("GPT2D_TOKEN")) token = env;
  }
  if (absl::Status s = gpt2::CheckToken(token); !s.ok()) return UsageError(std::string(s.message()));
  global.channel.token = token;

  absl::StatusOr<std::unique_ptr<Client>> connected = Client::Connect(global);
  if (!connected.ok()) return UsageError(std::string(connected.status().message()));
  Client& client = **connected;

  if (submit_cmd->parsed()) return SubmitJob(client, submit);
  if (list_cmd->parsed()) return ListJobs(client, list);
  if (get_cmd->parsed()) return GetJob(client, job_id);
  if (watch_cmd->parsed()) return WatchJob(client, watch);
  if (cancel_cmd->parsed()) return CancelJob(client, job_id);
  if (ckpt_list_cmd->parsed()) return ListCheckpoints(client, job_id);
  if (workers_list_cmd->parsed()) return ListWorkers(client);
  if (worker_get_cmd->parsed()) return GetWorker(client, worker_id);
  if (deploy_create_cmd->parsed()) return CreateDeployment(client, create);
  if (deploy_list_cmd->parsed()) return ListDeployments(client);
  if (deploy_get_cmd->parsed()) return GetDeployment(client, deployment_name);
  if (deploy_delete_cmd->parsed()) return DeleteDeployment(client, deployment_name);
  if (generate_cmd->parsed()) return Generate(client, gen);
  return UsageError("no command given; see gpt2ctl --help");
}
