#include "worker/serve/replica.h"

#include <cmath>
#include <filesystem>
#include <iostream>
#include <optional>
#include <regex>

#include "absl/strings/str_cat.h"
#include "common/model_config.h"
#include "worker/serve/serve_metrics.h"
#include "worker/serve/token_stream.h"

namespace gpt2 {
namespace {

namespace fs = std::filesystem;

// One greedy token from <|endoftext|>: the weights run and give a finite log-probability.
absl::Status SelfTest(Engine& engine) {
  GenerationParams p;
  p.prompt = {kEndOfTextToken};
  p.temperature = 0;
  p.max_tokens = 1;
  p.ignore_eos = true;
  TokenStream stream;
  absl::StatusOr<int64_t> id = engine.Submit(p, stream.Callback());
  if (!id.ok()) return id.status();
  std::optional<TokenEvent> last = stream.WaitForEnd(std::chrono::seconds(120));
  if (!last) return absl::DeadlineExceededError("the new weights did not produce a token within 120 s");
  if (last->token < 0 || !std::isfinite(last->logprob))
    return absl::DataLossError("the new weights produce non-finite log-probabilities");
  return absl::OkStatus();
}

// The newest complete checkpoint directory under `dir` (config.json and model.safetensors
// present; the trainer renames a step directory into place only when it is complete).
std::optional<std::string> Newest(const std::string& dir) {
  std::error_code ec;
  std::optional<std::string> best;
  int64_t best_step = -1;
  for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
    const std::string path = e.path().string();
    const int64_t step = CheckpointStep(path);
    if (!e.path().filename().string().starts_with("step_") || step <= best_step) continue;
    if (!fs::exists(e.path() / "config.json", ec) || !fs::exists(e.path() / "model.safetensors", ec)) continue;
    best = path;
    best_step = step;
  }
  return best;
}

}  // namespace

int64_t CheckpointStep(const std::string& dir) {
  static const std::regex kStep(R"(step_0*([0-9]+))");
  std::smatch m;
  const std::string name = fs::path(dir).lexically_normal().filename().string();
  return std::regex_match(name, m, kStep) ? std::stoll(m[1].str()) : 0;
}

absl::StatusOr<std::unique_ptr<Replica>> Replica::Start(const std::string& model_dir, std::string job_id,
                                                        EngineOptions options) {
  std::unique_ptr<Replica> r(new Replica(std::move(job_id), std::move(options)));
  if (absl::Status s = r->Load(model_dir); !s.ok()) return s;
  return r;
}

Replica::~Replica() {
  stop_ = true;
  if (follower_.joinable()) follower_.join();
}

Replica::Current Replica::current() const {
  std::lock_guard lock(mu_);
  return current_;
}

absl::Status Replica::Load(const std::string& model_dir) {
  std::lock_guard load(load_mu_);
  absl::StatusOr<std::unique_ptr<Engine>> engine = Engine::Load(model_dir, options_);
  if (!engine.ok()) return engine.status();
  if (absl::Status s = SelfTest(**engine); !s.ok()) return s;
  Current next{std::shared_ptr<Engine>(*std::move(engine)),
               {job_id_, fs::absolute(model_dir).lexically_normal().string(), CheckpointStep(model_dir)}};
  std::lock_guard lock(mu_);
  current_ = std::move(next);  // the old engine lives on in the requests that hold it
  return absl::OkStatus();
}

void Replica::Follow(const std::string& dir, std::chrono::milliseconds interval,
                     std::function<void(const ModelVersion&, const absl::Status&)> on_result) {
  follower_ = std::thread([this, dir, interval, on_result = std::move(on_result)] {
    std::string failed;  // a directory that failed to load is not retried
    while (!stop_) {
      std::optional<std::string> newest = Newest(dir);
      if (newest && *newest != failed && CheckpointStep(*newest) > current().version.step) {
        absl::Status s = Load(*newest);
        if (!s.ok()) failed = *newest;
        on_result({job_id_, *newest, CheckpointStep(*newest)}, s);
      }
      for (auto waited = std::chrono::milliseconds(0); waited < interval && !stop_;
           waited += std::chrono::milliseconds(50))
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  });
}

void Replica::FollowReported(const std::string& dir, ServeMetrics& metrics) {
  Follow(dir, std::chrono::seconds(1), [&metrics](const ModelVersion& v, const absl::Status& s) {
    metrics.CheckpointLoad(s.ok());
    if (s.ok())
      std::cerr << "gpt2-worker: now serving " << v.path << " (step " << v.step << ")" << std::endl;
    else
      std::cerr << "gpt2-worker: kept the current weights: cannot load " << v.path << ": " << s.message() << std::endl;
  });
}

}  // namespace gpt2
