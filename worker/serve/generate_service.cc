#include "worker/serve/generate_service.h"

#include <chrono>
#include <limits>
#include <optional>

#include <grpcpp/ext/proto_server_reflection_plugin.h>
#include <grpcpp/grpcpp.h>
#include <grpcpp/health_check_service_interface.h>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/server_credentials.h"
#include "common/tokenizer/stream_decoder.h"
#include "worker/serve/completion_request.h"
#include "worker/serve/token_stream.h"

namespace gpt2 {
namespace {

namespace v1 = ::gpt2d::v1;
using Clock = std::chrono::steady_clock;

double Seconds(Clock::duration d) { return std::chrono::duration<double>(d).count(); }

v1::FinishReason ToProto(FinishReason r) {
  switch (r) {
    case FinishReason::kLength:
      return v1::FINISH_REASON_LENGTH;
    case FinishReason::kEos:
      return v1::FINISH_REASON_EOS;
    case FinishReason::kStop:
      return v1::FINISH_REASON_STOP;
    case FinishReason::kCancelled:
      return v1::FINISH_REASON_CANCELLED;
    default:
      return v1::FINISH_REASON_UNSPECIFIED;
  }
}

// gpt2d.v1's request in the edge's terms: proto3's zero top_k, top_p, top_logprobs, min_tokens and
// n mean unset.
CompletionRequest FromProto(const v1::GenerateRequest& req) {
  CompletionRequest r;
  const v1::SamplingParams& s = req.sampling();
  if (!req.prompt().empty()) r.prompt = req.prompt();
  if (req.prompt_tokens_size() > 0) r.prompt_tokens.emplace(req.prompt_tokens().begin(), req.prompt_tokens().end());
  if (s.has_temperature()) r.temperature = s.temperature();
  if (s.top_k() != 0) r.top_k = s.top_k();
  if (s.top_p() != 0) r.top_p = s.top_p();
  if (s.has_seed()) r.seed = s.seed();
  if (s.has_max_tokens()) r.max_tokens = s.max_tokens();
  r.stop.assign(s.stop().begin(), s.stop().end());
  r.ignore_eos = s.ignore_eos();
  r.logprobs = s.logprobs();
  if (s.top_logprobs() != 0) r.top_logprobs = s.top_logprobs();
  if (s.min_tokens() != 0) r.min_tokens = s.min_tokens();
  r.stop_token_ids.assign(s.stop_token_ids().begin(), s.stop_token_ids().end());
  if (req.n() != 0) r.n = req.n();
  r.echo = req.echo();
  return r;
}

void AddTop(const std::vector<std::pair<int32_t, float>>& top, v1::TopLogprobs* out) {
  for (const auto& [id, lp] : top) {
    out->add_token_ids(id);
    out->add_logprobs(lp);
  }
}

// One choice of a request, as it streams.
struct ChoiceState {
  int64_t id = 0;  // the engine's
  StreamDecoder decoder;
  std::string unsent;  // decoded text held back while it could still become a stop sequence
  int64_t completion = 0;
  FinishReason finish = FinishReason::kNone;
  std::string error;  // with kError
  bool cancel_sent = false, done_sent = false;
  std::optional<Clock::time_point> first, previous;
  // With echo: the prompt, sent on the choice's first message once its log-probabilities (if
  // asked) are all here.
  std::optional<v1::Prompt> prompt;
  int64_t prompt_scores_due = 0;
  explicit ChoiceState(const Tokenizer& t) : decoder(t) {}
};

}  // namespace

GenerateServiceImpl::GenerateServiceImpl(Source source, Tokenizer tokenizer, ServeMetrics& metrics, std::string token)
    : source_(std::move(source)), tokenizer_(std::move(tokenizer)), token_(std::move(token)), metrics_(metrics) {
  poller_ = std::thread([this] {
    while (!stop_) {
      absl::StatusOr<Replica::Current> cur = source_();
      if (cur.ok()) {
        EngineStats s = cur->engine->stats();
        metrics_.Engine(s.active, s.queued, s.kv_cache_usage);
        metrics_.CheckpointStep(cur->version.step);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(200));
    }
  });
}

GenerateServiceImpl::~GenerateServiceImpl() {
  stop_ = true;
  if (poller_.joinable()) poller_.join();
}

grpc::Status GenerateServiceImpl::Serve(grpc::ServerContext* ctx, const v1::GenerateRequest& req,
                                        const std::function<bool(const v1::GenerateResponse&)>& emit) {
  const auto arrived = Clock::now();
  if (absl::Status auth = CheckBearerToken(*ctx, token_); !auth.ok()) return ToGrpcStatus(auth);
  absl::StatusOr<Replica::Current> source = source_();
  if (!source.ok()) return ToGrpcStatus(source.status());
  const Replica::Current cur = *std::move(source);  // held to the end: a hot-load never changes it
  Engine& engine = *cur.engine;
  const bool openai = ApiOf(*ctx) == "openai";
  absl::StatusOr<Completion> completion_req = ToCompletion(FromProto(req), openai ? OpenAiApiFields() : GrpcApiFields(),
                                                           tokenizer_, engine.config(), engine.max_context());
  if (!completion_req.ok()) return ToGrpcStatus(completion_req.status());
  const Completion& c = *completion_req;
  const int64_t prompt_tokens = static_cast<int64_t>(c.params.prompt.size());

  // Every choice is submitted before any runs far (choice i draws from seed + i); one refused
  // (a full queue) cancels those already queued.
  TokenStream stream;
  std::vector<ChoiceState> choices;
  choices.reserve(static_cast<size_t>(c.n));
  for (int64_t i = 0; i < c.n; ++i) {
    GenerationParams params = c.params;
    params.seed += static_cast<uint64_t>(i);
    absl::StatusOr<int64_t> id = engine.Submit(std::move(params), stream.Callback(static_cast<int>(i)));
    if (!id.ok()) {
      for (const ChoiceState& ch : choices) engine.Cancel(ch.id);
      return ToGrpcStatus(id.status());
    }
    ChoiceState& ch = choices.emplace_back(tokenizer_);
    ch.id = *id;
    if (c.echo) {
      v1::Prompt& pr = ch.prompt.emplace();
      std::vector<TokenId> ids(c.params.prompt.begin(), c.params.prompt.end());
      absl::StatusOr<std::string> text = tokenizer_.Decode(ids);
      pr.set_text(text.ok() ? *text : "");
      for (int32_t t : c.params.prompt) pr.add_token_ids(t);
      if (c.logprobs) {
        pr.add_logprobs(std::numeric_limits<float>::quiet_NaN());  // the first token has no context
        if (c.params.top_logprobs > 0) pr.add_top_logprobs();
        ch.prompt_scores_due = prompt_tokens - 1;
      }
    }
  }

  const std::vector<std::string>& stops = c.stop;
  bool client_gone = false, failed = false, first_seen = false;
  std::string error;
  size_t running = choices.size();
  while (running > 0) {
    const std::vector<TokenStream::Tagged> batch = stream.NextTagged(std::chrono::milliseconds(50));
    if (client_gone || ctx->IsCancelled()) {
      client_gone = true;
      for (ChoiceState& ch : choices) {
        if (ch.finish == FinishReason::kNone && !ch.cancel_sent) engine.Cancel(ch.id);  // free after the current step
        ch.cancel_sent = true;
      }
    }
    std::vector<bool> touched(choices.size(), false);
    std::vector<v1::GenerateResponse> out(choices.size());
    for (const TokenStream::Tagged& tagged : batch) {
      const TokenEvent& e = tagged.event;
      ChoiceState& ch = choices[static_cast<size_t>(tagged.tag)];
      v1::GenerateResponse& o = out[static_cast<size_t>(tagged.tag)];
      touched[static_cast<size_t>(tagged.tag)] = true;
      if (ch.finish != FinishReason::kNone) continue;  // after a stop sequence: the rest is discarded
      if (e.prompt) {
        if (ch.prompt && c.logprobs) {
          ch.prompt->add_logprobs(e.logprob);
          if (c.params.top_logprobs > 0) AddTop(e.top, ch.prompt->add_top_logprobs());
          --ch.prompt_scores_due;
        }
        continue;
      }
      if (e.token >= 0) {
        const auto now = Clock::now();
        if (!first_seen) {
          first_seen = true;
          metrics_.FirstToken(Seconds(now - arrived));
        } else if (ch.previous) {
          metrics_.InterToken(Seconds(now - *ch.previous));
        }
        if (!ch.first) ch.first = now;
        ch.previous = now;
        ++ch.completion;
        o.add_token_ids(e.token);
        if (c.logprobs) o.add_logprobs(e.logprob);
        if (c.params.top_logprobs > 0) AddTop(e.top, o.add_top_logprobs());
        absl::StatusOr<std::string> delta = ch.decoder.Push(static_cast<TokenId>(e.token));
        if (delta.ok()) ch.unsent += *delta;
      }
      if (e.finish != FinishReason::kNone) {
        ch.finish = e.finish;
        ch.error = e.error;
        ch.unsent += ch.decoder.Finish();
      }
      if (!stops.empty()) {
        size_t cut = std::string::npos;
        for (const std::string& st : stops) cut = std::min(cut, ch.unsent.find(st));
        if (cut != std::string::npos) {
          ch.unsent.resize(cut);
          if (ch.finish == FinishReason::kNone) {
            ch.finish = FinishReason::kStop;
            if (!ch.cancel_sent) engine.Cancel(ch.id);
            ch.cancel_sent = true;
          }
        }
      }
    }
    for (size_t i = 0; i < choices.size(); ++i) {
      ChoiceState& ch = choices[i];
      v1::GenerateResponse& o = out[i];
      if (ch.done_sent) continue;
      if (!touched[i] && !(ch.prompt && ch.prompt_scores_due == 0)) continue;
      o.set_index(static_cast<int32_t>(i));
      if (ch.prompt && (ch.prompt_scores_due == 0 || ch.finish != FinishReason::kNone)) {
        *o.mutable_prompt() = std::move(*ch.prompt);
        ch.prompt.reset();
      }
      // Send what can no longer become the start of a stop sequence.
      size_t keep = 0;
      if (ch.finish == FinishReason::kNone) {
        for (const std::string& st : stops)
          for (size_t n = std::min(st.size() - 1, ch.unsent.size()); n > keep; --n)
            if (ch.unsent.compare(ch.unsent.size() - n, n, st, 0, n) == 0) keep = std::max(keep, n);
      }
      o.set_text(ch.unsent.substr(0, ch.unsent.size() - keep));
      ch.unsent.erase(0, ch.unsent.size() - keep);
      if (ch.finish != FinishReason::kNone) {
        --running;
        ch.done_sent = true;
        if (ch.finish == FinishReason::kError) {
          failed = true;
          error = ch.error;
        }
        o.set_done(true);
        o.set_finish_reason(ToProto(ch.finish));
        v1::Usage& u = *o.mutable_usage();
        u.set_prompt_tokens(static_cast<int32_t>(prompt_tokens));
        u.set_completion_tokens(static_cast<int32_t>(ch.completion));
        u.set_time_to_first_token_seconds(ch.first ? Seconds(*ch.first - arrived) : 0);
        u.set_duration_seconds(Seconds(Clock::now() - arrived));
        v1::ModelVersion& m = *o.mutable_model();
        m.set_job_id(cur.version.job_id);
        m.set_step(cur.version.step);
        m.set_path(cur.version.path);
      }
      if ((!o.text().empty() || o.token_ids_size() > 0 || o.done() || o.has_prompt()) && !client_gone)
        client_gone = !emit(o);
    }
  }
  int64_t completion = 0;
  for (const ChoiceState& ch : choices) completion += ch.completion;
  metrics_.Duration(Seconds(Clock::now() - arrived));
  metrics_.Tokens(prompt_tokens, completion);
  bool cancelled = client_gone;
  for (const ChoiceState& ch : choices) cancelled = cancelled || ch.finish == FinishReason::kCancelled;
  if (cancelled) return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
  if (failed) return grpc::Status(grpc::StatusCode::INTERNAL, error.empty() ? "generation failed" : error);
  return grpc::Status::OK;
}

grpc::Status GenerateServiceImpl::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                           grpc::ServerWriter<v1::GenerateResponse>* writer) {
  grpc::Status s = Serve(ctx, *req, [&](const v1::GenerateResponse& r) { return writer->Write(r); });
  metrics_.Request(ApiOf(*ctx), absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())));
  return s;
}

// The request's one reply, from its streamed pieces.
static void AppendToCompletion(const v1::GenerateResponse& r, v1::CompleteResponse* resp) {
  while (resp->choices_size() <= r.index()) resp->add_choices()->set_index(resp->choices_size() - 1);
  v1::Choice& ch = *resp->mutable_choices(r.index());
  ch.mutable_text()->append(r.text());
  ch.mutable_token_ids()->MergeFrom(r.token_ids());
  ch.mutable_logprobs()->MergeFrom(r.logprobs());
  ch.mutable_top_logprobs()->MergeFrom(r.top_logprobs());
  if (r.has_prompt()) *ch.mutable_prompt() = r.prompt();
  if (r.done()) {
    ch.set_finish_reason(r.finish_reason());
    v1::Usage& u = *resp->mutable_usage();
    u.set_prompt_tokens(r.usage().prompt_tokens());
    u.set_completion_tokens(u.completion_tokens() + r.usage().completion_tokens());
    const double ttft = r.usage().time_to_first_token_seconds(), so_far = u.time_to_first_token_seconds();
    if (ttft > 0 && (so_far == 0 || ttft < so_far)) u.set_time_to_first_token_seconds(ttft);  // the first choice's
    u.set_duration_seconds(std::max(u.duration_seconds(), r.usage().duration_seconds()));
    *resp->mutable_model() = r.model();
  }
}

grpc::Status GenerateServiceImpl::Complete(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                           v1::CompleteResponse* resp) {
  grpc::Status s = Serve(ctx, *req, [&](const v1::GenerateResponse& r) {
    AppendToCompletion(r, resp);
    return true;
  });
  metrics_.Request(ApiOf(*ctx), absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())));
  return s;
}

absl::StatusOr<std::unique_ptr<ReplicaEndpoints>> ReplicaEndpoints::Start(
    GenerateServiceImpl& service, const std::string& listen, std::shared_ptr<grpc::ServerCredentials> credentials,
    const std::string& http_listen, std::shared_ptr<prometheus::Registry> registry) {
  std::unique_ptr<ReplicaEndpoints> e(new ReplicaEndpoints());
  if (!http_listen.empty()) {
    absl::StatusOr<std::unique_ptr<HttpServer>> http = HttpServer::Start(http_listen, std::move(registry), nullptr);
    if (!http.ok()) return http.status();
    e->http_ = *std::move(http);
  }
  grpc::EnableDefaultHealthCheckService(true);
  grpc::reflection::InitProtoReflectionServerBuilderPlugin();
  grpc::ServerBuilder builder;
  builder.AddListeningPort(listen, std::move(credentials), &e->port_);
  builder.RegisterService(&service);
  e->server_ = builder.BuildAndStart();
  if (!e->server_ || e->port_ == 0) return absl::UnavailableError("cannot serve GenerateService on " + listen);
  return e;
}

ReplicaEndpoints::~ReplicaEndpoints() {
  if (server_) server_->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
}

}  // namespace gpt2
