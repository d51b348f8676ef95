#include "worker/agent/agent.h"

#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <condition_variable>
#include <deque>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/http_server.h"
#include "gpt2d/v1/worker.grpc.pb.h"
#include "worker/agent/rank_runner.h"
#include "worker/agent/worker_metrics.h"
#include "worker/serve/generate_service.h"
#include "worker/serve/replica.h"
#include "worker/serve/serve_metrics.h"
#include "worker/tokenizer/tokenizer.h"
#include "worker/train/spec.h"

namespace gpt2 {
namespace {

namespace v1 = ::gpt2d::v1;
using Clock = std::chrono::steady_clock;

void Log(const std::string& line) { std::cerr << "gpt2-worker: " << line << std::endl; }

// Rank events on their way to gpt2d. Survives reconnects: an event leaves only when gpt2d
// acknowledges it (it is stored then); on a new stream the unacknowledged ones go first, in order.
// Bounded: when gpt2d is away for long, the oldest step reports are dropped first; evals,
// checkpoints and exits are always kept.
class Outbox {
 public:
  void Push(v1::WorkerMessage m) {
    {
      std::lock_guard lock(mu_);
      m.mutable_rank_event()->set_sequence(++next_sequence_);
      queue_.push_back(std::move(m));
      if (queue_.size() > kMax) {
        for (auto it = queue_.begin(); it != queue_.end(); ++it) {
          if (it->rank_event().has_step()) {
            queue_.erase(it);
            break;
          }
        }
      }
    }
    cv_.notify_all();
  }
  // The next message to write (it stays unacknowledged until Ack), waiting until the deadline;
  // nullopt on timeout or Wake().
  std::optional<v1::WorkerMessage> Pop(Clock::time_point deadline) {
    std::unique_lock lock(mu_);
    cv_.wait_until(lock, deadline, [&] { return !queue_.empty() || woken_; });
    woken_ = false;
    if (queue_.empty()) return std::nullopt;
    unacked_.push_back(std::move(queue_.front()));
    queue_.pop_front();
    return unacked_.back();
  }
  // gpt2d stored every event up to `sequence`; returns those events.
  std::vector<v1::WorkerMessage> Ack(int64_t sequence) {
    std::lock_guard lock(mu_);
    std::vector<v1::WorkerMessage> done;
    while (!unacked_.empty() && unacked_.front().rank_event().sequence() <= sequence) {
      done.push_back(std::move(unacked_.front()));
      unacked_.pop_front();
    }
    return done;
  }
  // A new stream: what was written but never acknowledged goes again, first.
  void Resend() {
    std::lock_guard lock(mu_);
    queue_.insert(queue_.begin(), std::make_move_iterator(unacked_.begin()), std::make_move_iterator(unacked_.end()));
    unacked_.clear();
  }
  void Wake() {
    {
      std::lock_guard lock(mu_);
      woken_ = true;
    }
    cv_.notify_all();
  }

 private:
  static constexpr size_t kMax = 10000;
  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<v1::WorkerMessage> queue_, unacked_;
  int64_t next_sequence_ = 0;
  bool woken_ = false;
};

// Turns a rank's training events into RankEvents (rank 0 reports steps and evals for the job;
// every rank updates its own metrics).
class EventForwarder final : public TrainObserver {
 public:
  EventForwarder(const RankTask& task, Outbox& outbox, WorkerMetrics& metrics)
      : job_(task.job_id), attempt_(task.attempt), rank_(task.rank), outbox_(outbox), metrics_(metrics) {}
  void OnStep(const StepMetrics& m) override {
    metrics_.OnStep(job_, rank_, m);
    if (rank_ != 0) return;
    v1::WorkerMessage msg;
    v1::StepMetrics& s = *Event(msg).mutable_step();
    s.set_step(m.step);
    s.set_loss(m.loss);
    s.set_lr(m.lr);
    s.set_grad_norm(m.grad_norm);
    s.set_step_seconds(m.step_seconds);
    s.set_tokens_per_second(m.tokens_per_second);
    s.set_mfu(m.mfu);
    s.set_tokens_seen(m.tokens_seen);
    outbox_.Push(std::move(msg));
  }
  void OnEval(const EvalMetrics& e) override {
    metrics_.OnEval(job_, rank_, e);
    if (rank_ != 0) return;
    v1::WorkerMessage msg;
    v1::EvalResult& r = *Event(msg).mutable_eval();
    r.set_step(e.step);
    if (e.val_loss) r.set_val_loss(*e.val_loss);
    if (e.hellaswag_acc) r.set_hellaswag_acc(*e.hellaswag_acc);
    if (e.hellaswag_acc_norm) r.set_hellaswag_acc_norm(*e.hellaswag_acc_norm);
    r.set_hellaswag_examples(e.hellaswag_examples);
    for (const std::string& s : e.samples) r.add_samples(s);
    outbox_.Push(std::move(msg));
  }
  void OnCheckpoint(const CheckpointEvent& c) override {
    v1::WorkerMessage msg;
    v1::RankEvent& ev = Event(msg);
    v1::Checkpoint& k = *ev.mutable_checkpoint();
    k.set_job_id(job_);
    k.set_step(c.step);
    k.set_path(c.path);
    if (c.val_loss) k.set_val_loss(*c.val_loss);
    for (const std::string& p : c.retained) ev.add_retained_checkpoints(p);
    outbox_.Push(std::move(msg));
  }

 private:
  v1::RankEvent& Event(v1::WorkerMessage& msg) {
    v1::RankEvent& ev = *msg.mutable_rank_event();
    ev.set_job_id(job_);
    ev.set_attempt(attempt_);
    ev.set_rank(rank_);
    return ev;
  }
  std::string job_;
  int attempt_, rank_;
  Outbox& outbox_;
  WorkerMetrics& metrics_;
};

class Agent {
 public:
  Agent(const AgentOptions& opts, const std::atomic<bool>& stop) : opts_(opts), stop_(stop) {}

  int Run() {
    absl::StatusOr<int64_t> memory = ProbeDevice(opts_.device);
    if (!memory.ok()) return Fail(std::string(memory.status().message()));
    memory_bytes_ = *memory;
    std::unique_ptr<HttpServer> http;
    if (!opts_.http_listen.empty()) {
      absl::StatusOr<std::unique_ptr<HttpServer>> h =
          HttpServer::Start(opts_.http_listen, metrics_.registry(), [] { return std::string(); });
      if (!h.ok()) return Fail(std::string(h.status().message()));
      http = *std::move(h);
    }
    // The serving face exists from the start; it refuses requests until gpt2d assigns a deployment.
    absl::StatusOr<Tokenizer> tok = LoadTokenizer(opts_.vocab);
    if (!tok.ok()) return Fail(std::string(tok.status().message()));
    ServeMetrics serve_metrics(metrics_.registry());
    // Its port takes the cluster token too: gpt2d's relay presents it, nobody else has it.
    GenerateServiceImpl generate([this]() { return ServingNow(); }, *tok, serve_metrics, opts_.coordinator.token);
    grpc::ServerBuilder builder;
    int serve_port = 0;
    builder.AddListeningPort(opts_.serve_listen, grpc::InsecureServerCredentials(), &serve_port);
    builder.RegisterService(&generate);
    std::unique_ptr<grpc::Server> serve_server = builder.BuildAndStart();
    if (!serve_server || serve_port == 0) return Fail("cannot serve GenerateService on " + opts_.serve_listen);
    serve_address_ = absl::StrCat(opts_.advertise_host, ":", serve_port);
    serve_metrics_ = &serve_metrics;

    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = MakeClientChannel(opts_.coordinator);
    if (!channel.ok()) return Fail(std::string(channel.status().message()));
    auto stub = v1::WorkerService::NewStub(*channel);
    Log(absl::StrCat("worker ", opts_.worker_id, " (", opts_.device, ") connecting to ", opts_.coordinator.address));

    auto backoff = std::chrono::milliseconds(250);
    while (!stop_) {
      const auto started = Clock::now();
      grpc::Status s = Session(*stub);
      metrics_.SetConnected(false);
      if (stop_) break;
      const auto code = s.error_code();
      if (code == grpc::StatusCode::UNAUTHENTICATED || code == grpc::StatusCode::PERMISSION_DENIED)
        return Fail(absl::StrCat("gpt2d refused the cluster token: ", s.error_message(),
                                 " (pass --token-file or set GPT2D_CLUSTER_TOKEN)"));
      if (code == grpc::StatusCode::INVALID_ARGUMENT || code == grpc::StatusCode::UNIMPLEMENTED)
        return Fail(absl::StrCat("gpt2d refused the registration: ", s.error_message()));
      if (Clock::now() - started > std::chrono::seconds(10)) backoff = std::chrono::milliseconds(250);
      Log(absl::StrCat("stream to gpt2d ended (", s.error_message().empty() ? "closed" : s.error_message(),
                       "); reconnecting in ", backoff.count(), " ms"));
      SleepUnlessStopped(backoff);
      backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
    }
    Log("stopping");
    std::unique_ptr<RankRunner> runner;
    {
      std::lock_guard lock(mu_);
      runner = std::move(runner_);
    }
    runner.reset();  // cancels the rank and waits for it
    StopServingNow("");
    if (serve_loader_.joinable()) serve_loader_.join();
    serve_server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
    return 0;
  }

 private:
  int Fail(const std::string& message) {
    std::cerr << "gpt2-worker: error: " << message << std::endl;
    return 1;
  }

  void SleepUnlessStopped(std::chrono::milliseconds d) {
    const auto until = Clock::now() + d;
    while (!stop_ && Clock::now() < until) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }

  // One stream's life: register, then write (heartbeats, events) on a second thread while this one
  // reads assignments, until the stream breaks or the process stops.
  grpc::Status Session(v1::WorkerService::Stub& stub) {
    grpc::ClientContext ctx;
    PrepareContext(ctx, opts_.coordinator.token);
    std::unique_ptr<grpc::ClientReaderWriter<v1::WorkerMessage, v1::CoordinatorMessage>> stream = stub.Connect(&ctx);
    v1::WorkerMessage hello;
    v1::Register& reg = *hello.mutable_register_();
    reg.set_worker_id(opts_.worker_id);
    reg.set_host(opts_.advertise_host);
    reg.set_device(opts_.device);
    reg.set_memory_bytes(memory_bytes_);
    reg.set_serve_address(serve_address_);
    {
      std::lock_guard lock(serve_mu_);
      reg.set_serving_deployment(deployment_);
    }
    {
      std::lock_guard lock(mu_);
      if (reporting_) {
        reg.set_running_job_id(reporting_->job_id);
        reg.set_running_rank(reporting_->rank);
        reg.set_running_attempt(reporting_->attempt);
      }
    }
    if (!stream->Write(hello)) return stream->Finish();
    outbox_.Resend();

    std::atomic<bool> done{false};
    std::atomic<int64_t> heartbeat_ms{1000};
    std::thread writer([&] {
      auto next_heartbeat = Clock::now();
      while (!done && !stop_) {
        if (Clock::now() >= next_heartbeat) {
          v1::WorkerMessage hb;
          FillServeStatus(*hb.mutable_heartbeat());
          if (!stream->Write(hb)) break;
          next_heartbeat = Clock::now() + std::chrono::milliseconds(heartbeat_ms.load());
        }
        std::optional<v1::WorkerMessage> m =
            outbox_.Pop(std::min(next_heartbeat, Clock::now() + std::chrono::milliseconds(200)));
        // A failed write means the call is over, and the reader sees that too. The message stays
        // unacknowledged: it is sent again on the next stream.
        if (m && !stream->Write(*m)) break;
      }
      if (stop_) ctx.TryCancel();  // unblocks the reader: the process is leaving
    });

    v1::CoordinatorMessage in;
    while (stream->Read(&in)) {
      if (in.has_registered()) {
        heartbeat_ms = std::max(100, in.registered().heartbeat_interval_ms());
        metrics_.SetConnected(true);
        Log(absl::StrCat("registered with gpt2d as ", in.registered().worker_id()));
      } else if (in.has_train()) {
        Assign(in.train());
      } else if (in.has_cancel()) {
        CancelRank(in.cancel());
      } else if (in.has_serve()) {
        Serve(in.serve());
      } else if (in.has_stop_serving()) {
        StopServingNow(in.stop_serving().deployment());
      } else if (in.has_ack()) {
        for (const v1::WorkerMessage& m : outbox_.Ack(in.ack().sequence()))
          if (m.rank_event().has_exit()) Delivered(m.rank_event());
      }
      if (stop_) break;
    }
    done = true;
    outbox_.Wake();
    if (stop_) ctx.TryCancel();  // the call is still open: end it (gpt2d sees the worker leave)
    writer.join();
    return stream->Finish();  // gpt2d's status when it ended the call (e.g. UNAUTHENTICATED)
  }

  void Assign(const v1::TrainAssignment& a) {
    RankTask task;
    task.job_id = a.job_id();
    task.attempt = a.attempt();
    task.rank = a.rank();
    task.world_size = a.world_size();
    task.master_addr = a.master_addr();
    task.master_port = a.master_port();
    task.resume_from = a.resume_from();
    task.collective_timeout = opts_.collective_timeout;
    task.vocab = opts_.vocab;
    Log(absl::StrCat(task.job_id, " attempt ", task.attempt, ": rank ", task.rank, " of ", task.world_size,
                     task.resume_from.empty() ? "" : absl::StrCat(", resuming from ", task.resume_from)));
    absl::StatusOr<TrainConfig> config = ResolveTrainSpec(a.spec());
    std::lock_guard lock(mu_);
    if (runner_ && running_) {
      Exit(task, absl::FailedPreconditionError(
                     absl::StrCat("worker ", opts_.worker_id, " is still running ", runner_->task().job_id)));
      return;
    }
    if (!config.ok()) {
      Exit(task, config.status());
      return;
    }
    task.config = *std::move(config);
    task.config.device = opts_.device;  // the worker owns its device
    task.config.world_size = task.world_size;
    if (runner_) metrics_.Forget(runner_->task().job_id, runner_->task().rank);
    runner_.reset();  // the previous rank has finished; join its thread
    running_ = true;
    reporting_ = task;
    const RankTask t = task;
    runner_ = std::make_unique<RankRunner>(std::move(task), std::make_unique<EventForwarder>(t, outbox_, metrics_),
                                           [this, t](absl::Status s) {
                                             std::lock_guard lock(mu_);
                                             running_ = false;
                                             Exit(t, s);
                                           });
  }

  void CancelRank(const v1::CancelAssignment& c) {
    std::lock_guard lock(mu_);
    if (runner_ && running_ && runner_->task().job_id == c.job_id() && runner_->task().attempt == c.attempt()) {
      Log(absl::StrCat(c.job_id(), " attempt ", c.attempt(), ": cancelling"));
      runner_->Cancel();
    } else if (!running_ && reporting_ && reporting_->job_id == c.job_id()) {
      // Already finished; its exit is queued. Nothing to stop.
    } else if (!(runner_ && running_)) {
      // Nothing of that job runs here (gpt2d may think so after a restart): say so.
      RankTask t;
      t.job_id = c.job_id();
      t.attempt = c.attempt();
      Exit(t, absl::CancelledError("not running"));
    }
  }

  // mu_ held.
  void Exit(const RankTask& t, const absl::Status& s) {
    v1::WorkerMessage msg;
    v1::RankEvent& ev = *msg.mutable_rank_event();
    ev.set_job_id(t.job_id);
    ev.set_attempt(t.attempt);
    ev.set_rank(t.rank);
    v1::RankExit& x = *ev.mutable_exit();
    x.set_ok(s.ok());
    x.set_cancelled(s.code() == absl::StatusCode::kCancelled);
    x.set_code(static_cast<int>(s.code()));
    x.set_error(std::string(s.message()));
    Log(absl::StrCat(t.job_id, " attempt ", t.attempt, " rank ", t.rank, ": ",
                     s.ok() ? "finished" : absl::StrCat(absl::StatusCodeToString(s.code()), ": ", s.message())));
    outbox_.Push(std::move(msg));
  }

  // gpt2d stored the exit of `e`'s rank: nothing is left to report for it.
  void Delivered(const v1::RankEvent& e) {
    std::lock_guard lock(mu_);
    if (reporting_ && !running_ && reporting_->job_id == e.job_id() && reporting_->attempt == e.attempt())
      reporting_.reset();
  }

  const AgentOptions& opts_;
  const std::atomic<bool>& stop_;
  int64_t memory_bytes_ = 0;
  WorkerMetrics metrics_;
  Outbox outbox_;
  std::mutex mu_;
  std::unique_ptr<RankRunner> runner_;
  bool running_ = false;
  std::optional<RankTask> reporting_;  // the rank running, or finished with its exit not yet delivered

  // ---- serving
  absl::StatusOr<Replica::Current> ServingNow() {
    std::lock_guard lock(serve_mu_);
    if (!replica_) {
      return absl::UnavailableError(deployment_.empty()
                                        ? absl::StrCat("worker ", opts_.worker_id, " serves no deployment")
                                        : absl::StrCat("worker ", opts_.worker_id, " is still loading ", deployment_));
    }
    return replica_->current();
  }

  void FillServeStatus(v1::Heartbeat& hb) {
    std::lock_guard lock(serve_mu_);
    if (deployment_.empty()) return;
    v1::ServeStatus& s = *hb.mutable_serving();
    s.set_deployment(deployment_);
    s.set_ready(replica_ != nullptr);
    s.set_error(serve_error_);
    if (replica_) {
      const Replica::Current cur = replica_->current();
      const EngineStats st = cur.engine->stats();
      s.set_step(cur.version.step);
      s.set_active(st.active);
      s.set_queued(st.queued);
    }
  }

  // Loads the deployment's checkpoint on a thread of its own (heartbeats go on meanwhile).
  void Serve(const v1::ServeAssignment& a) {
    Log(absl::StrCat("serving ", a.deployment(), ": ", a.checkpoint(),
                     a.follow_dir().empty() ? "" : absl::StrCat(", following ", a.follow_dir())));
    StopServingNow("");
    if (serve_loader_.joinable()) serve_loader_.join();
    {
      std::lock_guard lock(serve_mu_);
      deployment_ = a.deployment();
      serve_error_.clear();
    }
    serve_loader_ = std::thread([this, a] {
      EngineOptions eo = opts_.engine;
      eo.device = opts_.device;
      eo.on_fault = serve_metrics_->FaultHandler(Log);
      eo.on_admit = serve_metrics_->AdmitHandler();
      absl::StatusOr<std::unique_ptr<Replica>> r = Replica::Start(a.checkpoint(), a.job_id(), eo);
      if (r.ok() && !a.follow_dir().empty()) (*r)->FollowReported(a.follow_dir(), *serve_metrics_);
      std::unique_ptr<Replica> old;
      std::lock_guard lock(serve_mu_);
      if (deployment_ != a.deployment()) return;  // stopped while loading
      if (!r.ok()) {
        serve_error_ = std::string(r.status().message());
        Log(absl::StrCat("cannot serve ", a.deployment(), ": ", serve_error_));
        return;
      }
      old = std::move(replica_);
      replica_ = *std::move(r);
      serve_metrics_->Serving(a.deployment());
      Log(absl::StrCat("serving ", a.deployment(), " from ", replica_->current().version.path));
    });
  }

  // Stops serving `deployment` (empty: whatever is served). Running requests keep their engine.
  void StopServingNow(const std::string& deployment) {
    std::unique_ptr<Replica> old;
    {
      std::lock_guard lock(serve_mu_);
      if (!deployment.empty() && deployment != deployment_) return;
      if (!deployment_.empty()) Log(absl::StrCat("stopped serving ", deployment_));
      deployment_.clear();
      if (serve_metrics_ != nullptr) serve_metrics_->NotServing();
      old = std::move(replica_);
    }
  }

  std::string serve_address_;
  ServeMetrics* serve_metrics_ = nullptr;
  std::mutex serve_mu_;
  std::string deployment_, serve_error_;
  std::unique_ptr<Replica> replica_;
  std::thread serve_loader_;
};

}  // namespace

int RunAgent(const AgentOptions& options, const std::atomic<bool>& stop) {
  AgentOptions opts = options;
  char host[256] = {0};
  gethostname(host, sizeof(host) - 1);
  if (opts.advertise_host.empty()) opts.advertise_host = host;
  if (opts.worker_id.empty()) opts.worker_id = absl::StrCat(host, "/", opts.device);
  return Agent(opts, stop).Run();
}

}  // namespace gpt2
