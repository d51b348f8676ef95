// `gpt2ctl generate`: a completion from a deployment, through gpt2d. The Generate stream's text is
// written as it arrives; the last message's usage becomes a summary line on stderr. Ctrl-C cancels
// the call, so that the replica frees its slot at once, and exits 130.
#include <fcntl.h>
#include <grpcpp/client_context.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <iostream>
#include <sstream>
#include <thread>

#include "absl/strings/str_cat.h"
#include "client/commands.h"
#include "client/format.h"
#include "common/utf8.h"

namespace gpt2::ctl {
namespace {

namespace v1 = gpt2d::v1;

// The SIGINT handler wakes CancelOnInterrupt's thread through this pipe: TryCancel is not
// async-signal-safe, write is.
int g_wake[2] = {-1, -1};
volatile std::sig_atomic_t g_interrupted = 0;

void ExitOnInterrupt(int) { _exit(kExitInterrupted); }

void CancelOnSignal(int) {
  if (g_interrupted) _exit(kExitInterrupted);  // a second Ctrl-C does not wait for the cancel
  g_interrupted = 1;
  (void)!write(g_wake[1], "c", 1);
}

// While it lives, Ctrl-C cancels the call made with `context`, which then ends with CANCELLED.
class CancelOnInterrupt {
 public:
  explicit CancelOnInterrupt(grpc::ClientContext* context) {
    if (pipe2(g_wake, O_CLOEXEC) != 0) {
      std::signal(SIGINT, ExitOnInterrupt);  // the connection's close cancels the call all the same
      return;
    }
    thread_ = std::thread([context] {
      char c = 0;
      while (read(g_wake[0], &c, 1) < 0 && errno == EINTR) {
      }
      if (c == 'c') context->TryCancel();
    });
    std::signal(SIGINT, CancelOnSignal);
  }

  ~CancelOnInterrupt() {
    std::signal(SIGINT, ExitOnInterrupt);
    if (!thread_.joinable()) return;
    (void)!write(g_wake[1], "q", 1);
    thread_.join();
    close(g_wake[0]);
    close(g_wake[1]);
  }

  CancelOnInterrupt(const CancelOnInterrupt&) = delete;
  CancelOnInterrupt& operator=(const CancelOnInterrupt&) = delete;

 private:
  std::thread thread_;
};

absl::StatusOr<v1::GenerateRequest> MakeRequest(const GenerateOptions& options) {
  v1::GenerateRequest request;
  std::string prompt = options.prompt;
  if (prompt == "-") {
    if (isatty(STDIN_FILENO)) std::cerr << "gpt2ctl: reading the prompt from stdin (Ctrl-D ends it)\n";
    std::stringstream text;
    text << std::cin.rdbuf();
    prompt = text.str();
  }
  if (ValidUtf8PrefixLength(prompt) != prompt.size())
    return absl::InvalidArgumentError("the prompt is not valid UTF-8");
  request.set_deployment(options.deployment);
  request.set_prompt(prompt);
  v1::SamplingParams& s = *request.mutable_sampling();
  if (options.temperature) s.set_temperature(*options.temperature);
  s.set_top_k(options.top_k);
  s.set_top_p(options.top_p);
  if (options.seed) s.set_seed(*options.seed);
  if (options.max_tokens) s.set_max_tokens(*options.max_tokens);
  for (const std::string& stop : options.stop) s.add_stop(stop);
  s.set_ignore_eos(options.ignore_eos);
  s.set_logprobs(options.logprobs);
  return request;
}

std::optional<double> Mean(double sum, int64_t n) {
  return n > 0 ? std::optional<double>(sum / static_cast<double>(n)) : std::nullopt;
}

int Complete(Client& client, const v1::GenerateRequest& request, std::unique_ptr<grpc::ClientContext> context) {
  v1::CompleteResponse response;
  grpc::Status status;
  {
    CancelOnInterrupt cancel(context.get());
    status = client.generate().Complete(context.get(), request, &response);
  }
  if (g_interrupted) return kExitInterrupted;
  if (!status.ok()) return client.Fail(status);
  if (client.json()) {
    std::cout << ToJson(response, /*pretty=*/true) << std::endl;
    return kExitOk;
  }
  if (response.choices_size() == 0)
    return client.Fail(grpc::Status(grpc::StatusCode::INTERNAL, "no choice in the reply"));
  const v1::Choice& choice = response.choices(0);  // gpt2ctl asks for one
  std::cout << choice.text() << "\n" << std::flush;
  double sum = 0;
  for (float lp : choice.logprobs()) sum += lp;
  std::cerr << FormatGenerateSummary(choice.finish_reason(), response.usage(), response.model(),
                                     Mean(sum, choice.logprobs_size()))
            << "\n";
  return kExitOk;
}

}  // namespace

int Generate(Client& client, const GenerateOptions& options) {
  absl::StatusOr<v1::GenerateRequest> request = MakeRequest(options);
  if (!request.ok()) return UsageError(std::string(request.status().message()));
  // Generation takes as long as it takes: a deadline only when --timeout says so.
  std::unique_ptr<grpc::ClientContext> context =
      client.options().timeout_given ? client.UnaryContext() : client.StreamContext();
  if (options.complete) return Complete(client, *request, std::move(context));

  const bool json = client.json();
  bool printed = false;  // text without its final newline is on stdout
  std::optional<v1::GenerateResponse> last;
  double logprob_sum = 0;
  int64_t logprob_count = 0;
  grpc::Status status;
  {
    CancelOnInterrupt cancel(context.get());
    std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader =
        client.generate().Generate(context.get(), *request);
    v1::GenerateResponse response;
    while (reader->Read(&response)) {
      if (json) {
        std::cout << ToJson(response, /*pretty=*/false) << std::endl;
      } else if (!response.text().empty()) {
        std::cout << response.text() << std::flush;
        printed = true;
      }
      for (float lp : response.logprobs()) logprob_sum += lp;
      logprob_count += response.logprobs_size();
      if (response.done()) last = response;
    }
    status = reader->Finish();
  }
  if (!json && (printed || (status.ok() && last))) std::cout << "\n" << std::flush;
  if (g_interrupted) return kExitInterrupted;
  if (!status.ok()) return client.Fail(status);
  if (!last) {
    std::cerr << "error: the stream from gpt2d ended before its last message\n";
    return kExitFailed;
  }
  if (!json)
    std::cerr << FormatGenerateSummary(last->finish_reason(), last->usage(), last->model(),
                                       Mean(logprob_sum, logprob_count))
              << "\n";
  return kExitOk;
}

}  // namespace gpt2::ctl
