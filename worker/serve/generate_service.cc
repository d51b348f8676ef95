#include "worker/serve/generate_service.h"

#include <chrono>
#include <optional>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "worker/serve/completion_request.h"
#include "worker/serve/token_stream.h"
#include "worker/tokenizer/stream_decoder.h"

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

// gpt2d.v1's request in the edge's terms: proto3's zero top_k, top_p and max_tokens mean unset.
CompletionRequest FromProto(const v1::GenerateRequest& req) {
  CompletionRequest r;
  const v1::SamplingParams& s = req.sampling();
  if (!req.prompt().empty()) r.prompt = req.prompt();
  if (req.prompt_tokens_size() > 0) r.prompt_tokens.emplace(req.prompt_tokens().begin(), req.prompt_tokens().end());
  if (s.has_temperature()) r.temperature = s.temperature();
  if (s.top_k() != 0) r.top_k = s.top_k();
  if (s.top_p() != 0) r.top_p = s.top_p();
  if (s.has_seed()) r.seed = s.seed();
  if (s.max_tokens() != 0) r.max_tokens = s.max_tokens();
  r.stop.assign(s.stop().begin(), s.stop().end());
  r.ignore_eos = s.ignore_eos();
  r.logprobs = s.logprobs();
  return r;
}

}  // namespace

GenerateServiceImpl::GenerateServiceImpl(Source source, Tokenizer tokenizer, ServeMetrics& metrics)
    : source_(std::move(source)), tokenizer_(std::move(tokenizer)), metrics_(metrics) {
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
  absl::StatusOr<Replica::Current> source = source_();
  if (!source.ok()) return ToGrpcStatus(source.status());
  const Replica::Current cur = *std::move(source);  // held to the end: a hot-load never changes it
  Engine& engine = *cur.engine;
  absl::StatusOr<Completion> completion_req =
      ToCompletion(FromProto(req), GrpcApiFields(), tokenizer_, engine.config(), engine.max_context());
  if (!completion_req.ok()) return ToGrpcStatus(completion_req.status());
  const int64_t prompt_tokens = static_cast<int64_t>(completion_req->params.prompt.size());
  TokenStream stream;
  absl::StatusOr<int64_t> id = engine.Submit(completion_req->params, stream.Callback());
  if (!id.ok()) return ToGrpcStatus(id.status());  // a full queue (the parameters passed above)

  const std::vector<std::string>& stops = completion_req->stop;
  StreamDecoder decoder(tokenizer_);
  std::string unsent;  // decoded text held back while it could still become a stop sequence
  int64_t completion = 0;
  bool cancel_sent = false, client_gone = false;
  FinishReason finish = FinishReason::kNone;
  std::string error;  // with kError
  std::optional<Clock::time_point> first, previous;
  while (finish == FinishReason::kNone) {
    const std::vector<TokenEvent> batch = stream.Next(std::chrono::milliseconds(50));
    if (!cancel_sent && (client_gone || ctx->IsCancelled())) {
      engine.Cancel(*id);  // the slot is free after the engine's current step
      cancel_sent = true;
    }
    v1::GenerateResponse out;
    for (const TokenEvent& e : batch) {
      if (finish != FinishReason::kNone) break;  // after a stop sequence: the rest is discarded
      if (e.token >= 0) {
        const auto now = Clock::now();
        if (!first) {
          first = now;
          metrics_.FirstToken(Seconds(now - arrived));
        } else {
          metrics_.InterToken(Seconds(now - *previous));
        }
        previous = now;
        ++completion;
        out.add_token_ids(e.token);
        if (completion_req->logprobs) out.add_logprobs(e.logprob);
        absl::StatusOr<std::string> delta = decoder.push(static_cast<TokenId>(e.token));
        if (delta.ok()) unsent += *delta;
      }
      if (e.finish != FinishReason::kNone) {
        finish = e.finish;
        error = e.error;
        unsent += decoder.finish();
      }
      if (!stops.empty()) {
        size_t cut = std::string::npos;
        for (const std::string& s : stops) cut = std::min(cut, unsent.find(s));
        if (cut != std::string::npos) {
          unsent.resize(cut);
          if (finish == FinishReason::kNone) {
            finish = FinishReason::kStop;
            if (!cancel_sent) engine.Cancel(*id);
            cancel_sent = true;
          }
        }
      }
    }
    // Send what can no longer become the start of a stop sequence.
    size_t keep = 0;
    if (finish == FinishReason::kNone) {
      for (const std::string& s : stops)
        for (size_t n = std::min(s.size() - 1, unsent.size()); n > keep; --n)
          if (unsent.compare(unsent.size() - n, n, s, 0, n) == 0) keep = std::max(keep, n);
    }
    out.set_text(unsent.substr(0, unsent.size() - keep));
    unsent.erase(0, unsent.size() - keep);
    if (finish != FinishReason::kNone) {
      out.set_done(true);
      out.set_finish_reason(ToProto(finish));
      v1::Usage& u = *out.mutable_usage();
      u.set_prompt_tokens(static_cast<int32_t>(prompt_tokens));
      u.set_completion_tokens(static_cast<int32_t>(completion));
      u.set_time_to_first_token_seconds(first ? Seconds(*first - arrived) : 0);
      u.set_duration_seconds(Seconds(Clock::now() - arrived));
      v1::ModelVersion& m = *out.mutable_model();
      m.set_job_id(cur.version.job_id);
      m.set_step(cur.version.step);
      m.set_path(cur.version.path);
    }
    if ((!out.text().empty() || out.token_ids_size() > 0 || out.done()) && !client_gone) client_gone = !emit(out);
  }
  metrics_.Duration(Seconds(Clock::now() - arrived));
  metrics_.Tokens(prompt_tokens, completion);
  if (finish == FinishReason::kCancelled || client_gone)
    return grpc::Status(grpc::StatusCode::CANCELLED, "cancelled by the client");
  if (finish == FinishReason::kError)
    return grpc::Status(grpc::StatusCode::INTERNAL, error.empty() ? "generation failed" : error);
  return grpc::Status::OK;
}

grpc::Status GenerateServiceImpl::Generate(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                           grpc::ServerWriter<v1::GenerateResponse>* writer) {
  grpc::Status s = Serve(ctx, *req, [&](const v1::GenerateResponse& r) { return writer->Write(r); });
  metrics_.Request(absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())));
  return s;
}

grpc::Status GenerateServiceImpl::Complete(grpc::ServerContext* ctx, const v1::GenerateRequest* req,
                                           v1::CompleteResponse* resp) {
  grpc::Status s = Serve(ctx, *req, [&](const v1::GenerateResponse& r) {
    resp->mutable_text()->append(r.text());
    resp->mutable_token_ids()->MergeFrom(r.token_ids());
    resp->mutable_logprobs()->MergeFrom(r.logprobs());
    if (r.done()) {
      resp->set_finish_reason(r.finish_reason());
      *resp->mutable_usage() = r.usage();
      *resp->mutable_model() = r.model();
    }
    return true;
  });
  metrics_.Request(absl::StatusCodeToString(static_cast<absl::StatusCode>(s.error_code())));
  return s;
}

}  // namespace gpt2
