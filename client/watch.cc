// `gpt2ctl jobs watch`: a job's events as they happen. On a terminal the step events redraw one
// progress line in place; elsewhere (a pipe, a log file) they print as lines at most once a second.
// Evals, checkpoints, state changes and messages always get a line of their own. A stream that
// breaks is resumed after the last event seen; the exit code is the job's outcome.
#include <grpcpp/client_context.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <iostream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_replace.h"
#include "client/commands.h"
#include "client/format.h"
#include "common/job_spec.h"
#include "common/states.h"

namespace gpt2::ctl {
namespace {

namespace v1 = gpt2d::v1;
using Clock = std::chrono::steady_clock;

// Set while a progress line without its newline is on the terminal, for the SIGINT handler.
volatile std::sig_atomic_t g_progress_on_screen = 0;

void OnInterrupt(int) {
  // Async-signal-safe calls only: end the progress line and leave; gpt2d sees the stream close.
  if (g_progress_on_screen) (void)!write(STDOUT_FILENO, "\n", 1);
  _exit(kExitInterrupted);
}

// Renders events as text on stdout.
class EventPrinter {
 public:
  EventPrinter(bool tty, int64_t max_steps) : tty_(tty) { progress_.max_steps = max_steps; }

  void OnEvent(const v1::JobEvent& event) {
    switch (event.event_case()) {
      case v1::JobEvent::kStep:
        OnStep(event.step());
        break;
      case v1::JobEvent::kState:
        Line("state", absl::StrCat(JobStateName(event.state()), "  ", FormatTimestamp(event.time())));
        break;
      case v1::JobEvent::kEval:
        OnEval(event.eval());
        break;
      case v1::JobEvent::kCheckpoint: {
        const v1::Checkpoint& c = event.checkpoint();
        std::string text = absl::StrCat("step ", c.step(), ": ", c.path());
        if (c.has_val_loss()) absl::StrAppendFormat(&text, " (val %.4f)", c.val_loss());
        Line("checkpoint", text);
        break;
      }
      case v1::JobEvent::kMessage:
        Line("note", event.message());
        break;
      case v1::JobEvent::EVENT_NOT_SET:
        break;
    }
  }

  // Shows what the throttle held back and ends the progress line, so that whatever is printed
  // next (to stdout or stderr) starts on a line of its own.
  void Finish() {
    if (dirty_) Show();
    if (g_progress_on_screen) {
      std::cout << "\n" << std::flush;
      g_progress_on_screen = 0;
    }
  }

  // "kind       text", on its own line; on a terminal the progress line stays the last one.
  void Line(const std::string& kind, const std::string& text) {
    if (tty_) {
      if (g_progress_on_screen) std::cout << "\r\x1b[K";
      std::cout << absl::StrFormat("%-10s %s\n", kind, text);
      g_progress_on_screen = 0;
      if (has_progress_) Show();
    } else {
      if (dirty_) Show();  // the step before this event, so the log keeps the order
      std::cout << absl::StrFormat("%-10s %s\n", kind, text);
    }
    std::cout << std::flush;
  }

 private:
  // History replays arrive by the thousand: redraw a terminal at most this often, and write a step
  // line elsewhere at most once a second.
  static constexpr auto kRedrawEvery = std::chrono::milliseconds(100);
  static constexpr auto kLineEvery = std::chrono::seconds(1);

  void OnStep(const v1::StepMetrics& m) {
    progress_.step = m.step();
    progress_.loss = m.loss();
    progress_.tokens_per_second = m.tokens_per_second();
    if (m.step_seconds() > 0)
      step_seconds_ = step_seconds_ > 0 ? 0.9 * step_seconds_ + 0.1 * m.step_seconds() : m.step_seconds();
    if (m.tokens_seen() > 0 && m.step() > 0)
      tokens_per_step_ = static_cast<double>(m.tokens_seen()) / static_cast<double>(m.step());
    progress_.eta_seconds.reset();
    const int64_t remaining = progress_.max_steps - progress_.step;
    if (progress_.max_steps > 0 && remaining >= 0) {
      if (step_seconds_ > 0) {
        progress_.eta_seconds = static_cast<double>(remaining) * step_seconds_;
      } else if (tokens_per_step_ > 0 && m.tokens_per_second() > 0) {
        progress_.eta_seconds = static_cast<double>(remaining) * tokens_per_step_ / m.tokens_per_second();
      }
    }
    has_progress_ = true;
    dirty_ = true;
    if (Clock::now() - last_shown_ >= (tty_ ? Clock::duration(kRedrawEvery) : Clock::duration(kLineEvery))) Show();
  }

  void OnEval(const v1::EvalResult& e) {
    if (!tty_ && dirty_) Show();  // the step line before the eval, with the previous val
    std::string text = absl::StrCat("step ", e.step(), ":");
    if (e.has_val_loss()) {
      absl::StrAppendFormat(&text, " val %.4f", e.val_loss());
      progress_.val_loss = e.val_loss();
    }
    if (e.has_hellaswag_acc_norm()) {
      absl::StrAppendFormat(&text, "%s hellaswag acc_norm %.4f", e.has_val_loss() ? " |" : "", e.hellaswag_acc_norm());
      if (e.has_hellaswag_acc()) absl::StrAppendFormat(&text, " (acc %.4f", e.hellaswag_acc());
      absl::StrAppendFormat(&text, "%s%d examples)", e.has_hellaswag_acc() ? ", " : " (", e.hellaswag_examples());
    }
    Line("eval", text);
    for (const std::string& sample : e.samples())
      Line("sample", absl::StrReplaceAll(sample, {{"\r", "\\r"}, {"\n", "\\n"}}));
  }

  void Show() {
    std::string line = FormatProgress(progress_);
    if (tty_) {
      // A line wider than the terminal wraps, and "\r" would then redraw only its last part.
      winsize size{};
      if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &size) == 0 && size.ws_col > 1 && line.size() >= size.ws_col)
        line.resize(size.ws_col - 1);
      std::cout << "\r\x1b[K" << line << std::flush;
      g_progress_on_screen = 1;
    } else {
      std::cout << line << "\n" << std::flush;
    }
    dirty_ = false;
    last_shown_ = Clock::now();
  }

  const bool tty_;
  Progress progress_;
  bool has_progress_ = false;
  bool dirty_ = false;  // progress_ changed since it was last shown
  Clock::time_point last_shown_{};
  double step_seconds_ = 0;  // moving average, for the ETA
  double tokens_per_step_ = 0;
};

// Steps the job runs for: gpt2d's number, else the spec's (with its defaults); 0 when unknown.
int64_t MaxSteps(const v1::Job& job) {
  if (job.max_steps() > 0) return job.max_steps();
  absl::StatusOr<TrainConfig> config = ResolveTrainSpec(job.spec());
  return config.ok() ? config->max_steps : 0;
}

// Failures a watch outlives: gpt2d restarting or the network dropping the stream.
bool Resumable(const grpc::Status& status) {
  return status.error_code() == grpc::StatusCode::UNAVAILABLE || status.error_code() == grpc::StatusCode::CANCELLED ||
         status.error_code() == grpc::StatusCode::INTERNAL;
}

int Outcome(const Client& client, const v1::Job& job) {
  switch (job.state()) {
    case v1::JOB_STATE_SUCCEEDED:
      if (!client.json()) {
        std::string text = absl::StrCat(job.id(), " SUCCEEDED");
        if (job.started_at().seconds() > 0 && job.finished_at().seconds() >= job.started_at().seconds())
          absl::StrAppend(&text, " in ", FormatDuration(job.finished_at().seconds() - job.started_at().seconds()));
        absl::StrAppend(&text, ": step ", job.step());
        if (job.max_steps() > 0) absl::StrAppend(&text, "/", job.max_steps());
        if (job.has_last_step()) absl::StrAppendFormat(&text, ", loss %.4f", job.last_step().loss());
        if (job.has_best_val_loss()) absl::StrAppendFormat(&text, ", best val %.4f", job.best_val_loss());
        std::cout << text << std::endl;
      }
      return kExitOk;
    case v1::JOB_STATE_FAILED:
      std::cerr << "error: " << job.id()
                << " FAILED: " << (job.failure_reason().empty() ? "(no reason given)" : job.failure_reason()) << "\n";
      return kExitFailed;
    case v1::JOB_STATE_CANCELLED:
      if (!client.json()) std::cout << job.id() << " CANCELLED" << std::endl;
      return kExitCancelled;
    default:
      std::cerr << "error: the watch of " << job.id() << " ended while it is " << JobStateName(job.state()) << "\n";
      return kExitFailed;
  }
}

}  // namespace

int WatchJob(Client& client, const WatchOptions& options) {
  // The job first: an unreachable gpt2d or an unknown job fails here, within --timeout.
  v1::GetJobRequest get;
  get.set_id(options.job_id);
  v1::Job job;
  grpc::Status status = client.jobs().GetJob(client.UnaryContext().get(), get, &job);
  if (!status.ok()) return client.Fail(status);

  EventPrinter printer(!client.json() && isatty(STDOUT_FILENO), MaxSteps(job));
  std::signal(SIGINT, OnInterrupt);

  // How long a broken watch keeps trying to resume before it gives up.
  const auto resume_for = std::chrono::duration<double>(std::max(60.0, client.options().timeout_seconds));
  bool failing = false;  // since failing_since, no call has succeeded
  Clock::time_point failing_since;
  auto backoff = std::chrono::milliseconds(500);
  int64_t after = options.after_sequence;
  while (true) {
    v1::WatchJobRequest request;
    request.set_id(options.job_id);
    request.set_after_sequence(after);
    std::unique_ptr<grpc::ClientContext> context = client.StreamContext();
    std::unique_ptr<grpc::ClientReader<v1::JobEvent>> reader = client.jobs().WatchJob(context.get(), request);
    v1::JobEvent event;
    bool received = false;
    while (reader->Read(&event)) {
      received = true;
      after = std::max(after, event.sequence());
      if (client.json()) {
        std::cout << ToJson(event, /*pretty=*/false) << std::endl;
      } else {
        printer.OnEvent(event);
      }
    }
    status = reader->Finish();
    if (received) {
      failing = false;
      backoff = std::chrono::milliseconds(500);
    }
    if (status.ok()) {
      // The stream closes when the job has ended; check, and resume if it has not.
      status = client.jobs().GetJob(client.UnaryContext().get(), get, &job);
      if (status.ok() && IsTerminal(job.state())) break;
      if (status.ok())
        status = grpc::Status(grpc::StatusCode::UNAVAILABLE,
                              absl::StrCat("the stream closed while the job is ", JobStateName(job.state())));
    }
    const bool outage_begins = !failing;
    if (outage_begins) {
      failing = true;
      failing_since = Clock::now();
    }
    printer.Finish();
    if (!Resumable(status) || Clock::now() - failing_since > resume_for) return client.Fail(status);
    if (outage_begins)
      std::cerr << "gpt2ctl: lost the watch of " << options.job_id << " (" << status.error_message()
                << "); resuming after event " << after << "\n";
    std::this_thread::sleep_for(backoff);
    backoff = std::min(backoff * 2, std::chrono::milliseconds(5000));
  }
  printer.Finish();
  return Outcome(client, job);
}

}  // namespace gpt2::ctl
