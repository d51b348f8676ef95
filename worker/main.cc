// gpt2-worker: the process that runs GPT-2. Offline commands (tokenize, prep, init, score, sample,
// train, eval-hellaswag), `serve` (one serving replica on its own: gRPC and the OpenAI API), and
// `run`, the daemon that runs the training ranks and serving replicas gpt2d assigns.
#include <signal.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <iostream>
#include <thread>

#include "common/client_channel.h"
#include "worker/agent/agent.h"
#include "worker/data/prep_command.h"
#include "worker/offline_commands.h"
#include "worker/serve/serve_command.h"
#include "worker/serve/weight_format.h"
#include "worker/tokenizer/tokenize_command.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/train_command.h"

// jemalloc's settings, read at start-up: keep freed pages for reuse and never hand them back to the
// kernel. A training step frees and reallocates hundreds of MB of logits and gradients; returning
// them (glibc, or jemalloc's default or even a 30 s decay) makes every step page-fault them in
// again, which on CPU costs as much as the model itself (measured: 1.3k -> 2.6k tokens/s for a
// 2-layer model). The process so holds its peak memory, as PyTorch's CUDA caching allocator does.
// MALLOC_CONF in the environment still overrides this.
extern "C" {
const char* malloc_conf = "dirty_decay_ms:-1,muzzy_decay_ms:-1";
}

namespace {

// An integer flag's lower bound, said plainly ("must be >= 1, got 0").
CLI::Validator AtLeast(int64_t min) {
  return CLI::Validator(
      [min](std::string& value) -> std::string {
        int64_t v = 0;
        if (!CLI::detail::lexical_cast(value, v)) return "must be an integer, got " + value;
        return v < min ? "must be >= " + std::to_string(min) + ", got " + value : std::string();
      },
      ">=" + std::to_string(min));
}

// The serving engine's flags, shared by `serve` and `run`; `when` prefixes each description.
void AddEngineFlags(CLI::App* cmd, gpt2::EngineOptions& eo, const std::string& when) {
  cmd->add_option_function<int64_t>(
         "--kv-cache-mb", [&eo](int64_t mb) { eo.kv_cache_bytes = mb << 20; }, when + "KV-cache memory (MiB)")
      ->default_str(std::to_string(eo.kv_cache_bytes >> 20))
      ->check(AtLeast(1));
  cmd->add_option("--max-slots", eo.max_slots, when + "most concurrent requests (the KV budget may allow fewer)")
      ->capture_default_str()
      ->check(AtLeast(1));
  cmd->add_option("--max-context", eo.max_context,
                  when + "tokens a request may span (prompt + max_tokens); 0 = the model's context")
      ->capture_default_str()
      ->check(AtLeast(0));
  cmd->add_option("--max-queue", eo.max_queue, when + "most waiting requests before RESOURCE_EXHAUSTED")
      ->capture_default_str()
      ->check(AtLeast(0));
  cmd->add_option("--max-prefill-tokens", eo.max_prefill_tokens,
                  when + "prompt tokens prefilled together between two decode steps (a longer prompt goes alone)")
      ->capture_default_str()
      ->check(AtLeast(1));
  cmd->add_flag("!--no-prefix-caching", eo.prefix_caching,
                when + "compute every prompt in full instead of reusing the KV rows of cached prefixes");
  cmd->add_option("--weights", eo.weights,
                  when + "weight format: fp32, bf16 (half the bytes), int8 (a quarter; a scale per row) or w8a8 "
                         "(int8 weights and activations)")
      ->capture_default_str()
      ->check(CLI::IsMember(gpt2::WeightFormatNames()));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"gpt2-worker: trains and serves GPT-2 (libtorch)"};
  app.require_subcommand(1);
  std::string vocab;
  app.add_option("--vocab", vocab,
                 "GPT-2 vocabulary: a .tiktoken file or a directory with encoder.json + vocab.bpe "
                 "(default: $GPT2_VOCAB, then the one installed with gpt2d)");

  gpt2::TokenizeCommandOptions tokenize;
  CLI::App* tok_cmd = app.add_subcommand("tokenize", "Text on stdin -> GPT-2 token ids on stdout");
  tok_cmd->add_flag("--json", tokenize.json, "Print a JSON array");
  tok_cmd->add_flag("--jsonl", tokenize.jsonl, "Each input line is a JSON string; print one JSON array per line");
  tok_cmd->add_flag("--allow-special", tokenize.allow_special, "Map the text <|endoftext|> to token 50256");
  tok_cmd->add_flag("--decode", tokenize.decode, "Token ids on stdin -> text on stdout");

  gpt2::ScoreOptions score;
  CLI::App* score_cmd = app.add_subcommand("score", "Mean loss and perplexity of a model on text files");
  score_cmd->add_option("--model", score.model_dir, "Checkpoint directory (config.json + model.safetensors)")
      ->required();
  score_cmd->add_option("--stride", score.stride, "Sliding-window step in tokens (default: half the context)")
      ->check(AtLeast(0));
  score_cmd->add_option("files", score.files, "Text files; each is one document")->required()->check(CLI::ExistingFile);

  gpt2::SampleOptions sample;
  CLI::App* sample_cmd = app.add_subcommand("sample", "Continue a prompt");
  sample_cmd->add_option("--model", sample.model_dir, "Checkpoint directory")->required();
  sample_cmd->add_option("--prompt", sample.prompt, "Prompt text (empty: start a new document)");
  sample_cmd->add_option("--max-new-tokens", sample.max_new_tokens, "Tokens to generate")->capture_default_str();
  sample_cmd->add_option("--temperature", sample.temperature, "0 = greedy")->capture_default_str();
  sample_cmd->add_option("--top-k", sample.top_k, "Keep the k most likely tokens; 0 = all")->capture_default_str();
  sample_cmd->add_option("--top-p", sample.top_p, "Nucleus sampling threshold in (0, 1]")->capture_default_str();
  sample_cmd->add_option("--seed", sample.seed, "Random seed")->capture_default_str();
  sample_cmd->add_flag("--ignore-eos", sample.ignore_eos, "Do not stop at <|endoftext|>");
  sample_cmd->add_flag("--json", sample.json, "Print one JSON object (text, tokens, logprobs, finish_reason)");
  sample_cmd->add_option("--weights", sample.weights, "Weight format: fp32, bf16, int8 or w8a8 (as `serve --weights`)")
      ->capture_default_str()
      ->check(CLI::IsMember(gpt2::WeightFormatNames()));

  gpt2::InitOptions init;
  CLI::App* init_cmd = app.add_subcommand("init", "Write a freshly initialised GPT-2 as a checkpoint directory");
  init_cmd->add_option("--config", init.preset, "gpt2, gpt2-medium, gpt2-large or gpt2-xl")->capture_default_str();
  init_cmd->add_option("--n-layer", init.n_layer, "Override the number of layers");
  init_cmd->add_option("--n-head", init.n_head, "Override the number of heads");
  init_cmd->add_option("--n-embd", init.n_embd, "Override the channels");
  init_cmd->add_option("--n-positions", init.n_positions, "Override the context length");
  init_cmd->add_option("--vocab-size", init.vocab_size, "Override the vocabulary size");
  init_cmd->add_option("--seed", init.seed, "Seed of the initialisation")->capture_default_str();
  init_cmd->add_option("--out", init.out_dir, "Directory to write")->required();

  gpt2::PrepOptions prep;
  CLI::App* prep_cmd =
      app.add_subcommand("prep", "Text files, directories and JSONL (a \"text\" field) -> token shards");
  prep_cmd->add_option("--out", prep.out_dir, "Output directory")->required();
  prep_cmd->add_option("--name", prep.name, "Shard name prefix")->capture_default_str();
  prep_cmd->add_option("--shard-tokens", prep.shard_tokens, "Tokens per shard")->capture_default_str();
  prep_cmd->add_option("--val-tokens", prep.val_tokens,
                       "Tokens in the first (validation) shard (default: --shard-tokens)");
  prep_cmd->add_option("--format", prep.format, "bin (llm.c) or npy (build-nanogpt)")->capture_default_str();
  prep_cmd->add_option("--threads", prep.threads, "Tokenizer threads (default: all cores)");
  prep_cmd->add_flag("--force", prep.force, "Overwrite existing shards");
  prep_cmd->add_flag("--skip-bad-lines", prep.skip_bad_lines, "Skip malformed JSONL lines with a warning");
  prep_cmd->add_option("inputs", prep.inputs, "Files and directories")->required();

  gpt2::TrainCommandOptions train;
  CLI::App* train_cmd =
      app.add_subcommand("train", "Train GPT-2 from a job spec (one rank; start one process per rank)");
  train_cmd->add_option("--spec", train.spec, "Job spec, YAML or JSON (gpt2d.v1.TrainSpec)")
      ->required()
      ->check(CLI::ExistingFile);
  train_cmd->add_option("--rank", train.rank, "This process's rank")->capture_default_str();
  train_cmd->add_option("--world-size", train.world_size, "Number of ranks")->capture_default_str();
  train_cmd->add_option("--master-addr", train.master_addr, "Rank 0's address (TCPStore rendezvous)")
      ->capture_default_str();
  train_cmd->add_option("--master-port", train.master_port, "Rank 0's rendezvous port")->capture_default_str();
  train_cmd->add_option("--timeout", train.timeout_s, "Seconds before a silent peer is declared dead")
      ->capture_default_str();
  train_cmd->add_option("--resume", train.resume, "Checkpoint directory to resume from, or 'latest'");
  train_cmd->add_option("--metrics-jsonl", train.metrics_jsonl,
                        "Write every event as a JSON line (rank 0 only, or one file per rank if the path has {rank})");

  gpt2::HellaSwagCommandOptions hellaswag;
  CLI::App* hs_cmd = app.add_subcommand("eval-hellaswag", "HellaSwag accuracy of a model (official jsonl)");
  hs_cmd->add_option("--model", hellaswag.model_dir, "Checkpoint directory")->required();
  hs_cmd->add_option("--data", hellaswag.data, "hellaswag_val.jsonl")->required()->check(CLI::ExistingFile);
  hs_cmd->add_option("--limit", hellaswag.limit, "Only the first N examples");
  hs_cmd->add_option("--per-example", hellaswag.per_example, "Write per-example losses as JSONL");

  gpt2::AgentOptions agent;
  std::string token_file;
  double collective_timeout_s = 60, cancel_grace_s = 120;
  CLI::App* run_cmd = app.add_subcommand("run", "The worker daemon: register with gpt2d and run what it assigns");
  run_cmd->add_option("--coordinator", agent.coordinator.address, "gpt2d's gRPC address (host:port)")
      ->envname("GPT2D_SERVER")
      ->required();
  run_cmd->add_option("--device", agent.device, "cpu, cuda or cuda:N")->capture_default_str();
  run_cmd->add_option("--id", agent.worker_id, "Worker id, stable across restarts (default: <hostname>/<device>)");
  run_cmd->add_option("--advertise-host", agent.advertise_host,
                      "Address other workers reach this one at for the rendezvous (default: the hostname)");
  run_cmd->add_option("--http-listen", agent.http_listen, "Address for /metrics and /healthz; empty: none")
      ->capture_default_str();
  run_cmd->add_option("--token", agent.coordinator.token, "The cluster token")->envname("GPT2D_CLUSTER_TOKEN");
  run_cmd->add_option("--token-file", token_file, "A file holding the cluster token");
  run_cmd->add_flag("--tls", agent.coordinator.tls, "Connect with TLS");
  run_cmd->add_option("--tls-ca", agent.coordinator.tls_ca_file, "CA certificate to verify gpt2d with (PEM)");
  run_cmd->add_option("--tls-cert", agent.coordinator.tls_cert_file, "Client certificate for mutual TLS (PEM)");
  run_cmd->add_option("--tls-key", agent.coordinator.tls_key_file, "Client key for mutual TLS (PEM)");
  run_cmd->add_option("--tls-server-name", agent.coordinator.tls_server_name, "Name to verify in gpt2d's certificate");
  run_cmd
      ->add_option("--collective-timeout", collective_timeout_s, "Seconds before a silent peer rank is declared dead")
      ->capture_default_str();
  run_cmd
      ->add_option("--cancel-grace", cancel_grace_s,
                   "Seconds a cancelled rank may take to stop; past them the worker exits with status 75 so that "
                   "its supervisor restarts it (longer than --collective-timeout)")
      ->capture_default_str();
  run_cmd->add_option("--serve-tls-cert", agent.serve_tls.cert_file,
                      "Certificate (PEM) of this worker's GenerateService port; with --serve-tls-key: TLS only");
  run_cmd->add_option("--serve-tls-key", agent.serve_tls.key_file, "Private key (PEM) for --serve-tls-cert");
  run_cmd->add_option("--serve-tls-client-ca", agent.serve_tls.client_ca_file,
                      "Require client certificates signed by this CA on the serving port (mTLS)");
  run_cmd
      ->add_option("--serve-listen", agent.serve_listen,
                   "Address of this worker's GenerateService when gpt2d has it serve (port 0: any free one)")
      ->capture_default_str();
  AddEngineFlags(run_cmd, agent.engine, "When serving: ");

  gpt2::ServeOptions serve;
  CLI::App* serve_cmd =
      app.add_subcommand("serve", "One serving replica on its own: GenerateService over a checkpoint");
  serve_cmd->add_option("--model", serve.model_dir, "Checkpoint directory (config.json + model.safetensors)")
      ->required();
  serve_cmd->add_option("--listen", serve.listen, "gRPC address")->capture_default_str();
  serve_cmd->add_option("--http-listen", serve.http_listen, "Address for /metrics and /healthz; empty: none")
      ->capture_default_str();
  serve_cmd->add_option("--device", serve.device, "cpu or cuda:N")->capture_default_str();
  AddEngineFlags(serve_cmd, serve.engine, "");
  serve_cmd
      ->add_option("--openai-listen", serve.openai_listen,
                   "HTTP address of the OpenAI-compatible API (/v1/completions, /v1/models), e.g. :8000; empty: none")
      ->capture_default_str();
  serve_cmd->add_option("--served-model-name", serve.served_model_name, "The model's id in the OpenAI API")
      ->capture_default_str();
  std::string serve_token_file;
  serve_cmd->add_option("--auth-token-file", serve_token_file,
                        "Require \"authorization: Bearer <token>\" with this file's token on gRPC and the OpenAI API "
                        "(all but health)");
  serve_cmd->add_option("--job-id", serve.job_id, "The training job the checkpoint came from (reported in responses)");
  serve_cmd->add_option(
      "--follow", serve.follow_dir,
      "Hot-load every newer step_* checkpoint that appears in this directory (a job's checkpoint dir)");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;  // --help: 0; a usage error: 2, as gpt2ctl
  }
  std::ios::sync_with_stdio(false);
  score.vocab = sample.vocab = prep.vocab = train.vocab = hellaswag.vocab = agent.vocab = serve.vocab = vocab;

  if (*run_cmd || *serve_cmd) {
    if (!token_file.empty()) {
      absl::StatusOr<std::string> t = gpt2::ReadTokenFile(token_file);
      if (!t.ok()) {
        std::cerr << "error: " << t.status().message() << "\n";
        return 2;
      }
      agent.coordinator.token = *t;
    }
    if (!serve_token_file.empty()) {
      absl::StatusOr<std::string> t = gpt2::ReadTokenFile(serve_token_file);
      if (!t.ok()) {
        std::cerr << "error: " << t.status().message() << "\n";
        return 2;
      }
      serve.token = *t;
    }
    if (!agent.coordinator.tls_ca_file.empty() || !agent.coordinator.tls_cert_file.empty())
      agent.coordinator.tls = true;
    agent.collective_timeout = std::chrono::milliseconds(static_cast<int64_t>(collective_timeout_s * 1000));
    agent.cancel_grace = std::chrono::milliseconds(static_cast<int64_t>(cancel_grace_s * 1000));
    // SIGINT/SIGTERM: stop the rank at its next micro-step and leave. Blocked before any thread
    // starts, so that only the waiter below receives them.
    sigset_t signals;
    sigemptyset(&signals);
    sigaddset(&signals, SIGINT);
    sigaddset(&signals, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &signals, nullptr);
    static std::atomic<bool> stop{false};
    std::thread([signals] {
      int sig = 0;
      sigwait(&signals, &sig);
      stop = true;
    }).detach();
    return *serve_cmd ? gpt2::RunServeCommand(serve, stop) : gpt2::RunAgent(agent, stop);
  }

  try {
    if (*tok_cmd) {
      absl::StatusOr<gpt2::Tokenizer> tok = gpt2::LoadTokenizer(vocab);
      if (!tok.ok()) {
        std::cerr << "error: " << tok.status().message() << "\n";
        return 1;
      }
      return gpt2::RunTokenizeCommand(*tok, tokenize, std::cin, std::cout, std::cerr);
    }
    if (*score_cmd) return gpt2::RunScore(score, std::cout, std::cerr);
    if (*sample_cmd) return gpt2::RunSample(sample, std::cout, std::cerr);
    if (*init_cmd) return gpt2::RunInit(init, std::cout, std::cerr);
    if (*prep_cmd) return gpt2::RunPrepCommand(prep, std::cout, std::cerr);
    if (*train_cmd) return gpt2::RunTrainCommand(train, std::cout, std::cerr);
    if (*hs_cmd) return gpt2::RunHellaSwagCommand(hellaswag, std::cout, std::cerr);
  } catch (const std::exception& e) {
    // libtorch reports shape and device errors as exceptions; they end the command, not the process abruptly.
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
