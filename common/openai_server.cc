#include "common/openai_server.h"

#include <grpcpp/client_context.h>
#include <grpcpp/support/sync_stream.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include <atomic>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <optional>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "common/grpc_status.h"
#include "common/openai_protocol.h"
#include "gpt2d/v1/generate.grpc.pb.h"
#include "nlohmann/json.hpp"

namespace gpt2::openai {

namespace net = boost::asio;
namespace http = boost::beast::http;
namespace v1 = ::gpt2d::v1;
using tcp = net::ip::tcp;
using nlohmann::json;
using Request = http::request<http::string_body>;

namespace {

constexpr size_t kMaxBody = 32 << 20;
constexpr int kIdleSeconds = 120;  // a keep-alive connection with no request for this long is closed

// Whether the peer closed its side (or the connection broke): a non-blocking peek reads EOF.
bool PeerGone(int fd) {
  char c;
  const ssize_t n = ::recv(fd, &c, 1, MSG_PEEK | MSG_DONTWAIT);
  if (n > 0) return false;  // data (a pipelined request): still there
  if (n == 0) return true;
  return errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR;
}

std::string Header(const Request& req, http::field f) {
  auto it = req.find(f);
  return it == req.end() ? std::string() : std::string(it->value());
}

bool ConstantTimeEqual(std::string_view a, std::string_view b) {
  unsigned char diff = a.size() != b.size();
  for (size_t i = 0; i < std::min(a.size(), b.size()); ++i) diff |= static_cast<unsigned char>(a[i] ^ b[i]);
  return diff == 0;
}

int64_t UnixNow() {
  return std::chrono::duration_cast<std::chrono::seconds>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// One prompt's Generate call, read on its own thread into the completion's shared queue.
struct Call {
  grpc::ClientContext ctx;
  std::thread reader;
};

}  // namespace

class Server::Impl {
 public:
  explicit Impl(ServerOptions o) : opts_(std::move(o)), stub_(v1::GenerateService::NewStub(opts_.channel)) {}

  absl::Status Listen() {
    std::string host = opts_.listen, port = "0";
    if (size_t colon = host.rfind(':'); colon != std::string::npos) {
      port = host.substr(colon + 1);
      host = host.substr(0, colon);
    }
    if (host.empty()) host = "0.0.0.0";
    if (host.size() > 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
    boost::system::error_code ec;
    tcp::resolver resolver(io_);
    auto endpoints = resolver.resolve(host, port, tcp::resolver::passive, ec);
    if (ec || endpoints.empty())
      return absl::InvalidArgumentError(absl::StrCat("cannot resolve ", opts_.listen, ": ", ec.message()));
    const tcp::endpoint ep = endpoints.begin()->endpoint();
    acceptor_.open(ep.protocol(), ec);
    if (!ec) acceptor_.set_option(net::socket_base::reuse_address(true), ec);
    if (!ec) acceptor_.bind(ep, ec);
    if (!ec) acceptor_.listen(net::socket_base::max_listen_connections, ec);
    if (ec) return absl::UnavailableError(absl::StrCat("cannot listen on ", opts_.listen, ": ", ec.message()));
    port_ = acceptor_.local_endpoint().port();
    accept_thread_ = std::thread([this] { AcceptLoop(); });
    return absl::OkStatus();
  }

  ~Impl() {
    stopping_ = true;
    ::shutdown(acceptor_.native_handle(), SHUT_RDWR);  // wakes the blocked accept
    if (accept_thread_.joinable()) accept_thread_.join();
    std::unique_lock lock(mu_);
    for (int fd : open_) ::shutdown(fd, SHUT_RDWR);  // each connection's read or write fails now
    closed_.wait(lock, [&] { return open_.empty(); });
  }

  int port() const { return port_; }

 private:
  void AcceptLoop() {
    while (!stopping_) {
      boost::system::error_code ec;
      tcp::socket sock(io_);
      acceptor_.accept(sock, ec);
      if (stopping_) break;
      if (ec) {
        std::this_thread::sleep_for(std::chrono::milliseconds(10));  // e.g. out of descriptors
        continue;
      }
      const tcp::socket::protocol_type protocol = sock.local_endpoint(ec).protocol();
      const int fd = sock.release(ec);  // the connection's thread owns it, on its own io_context
      if (ec) continue;
      {
        std::lock_guard lock(mu_);
        if (static_cast<int>(open_.size()) >= opts_.max_connections) {
          ::close(fd);
          continue;
        }
        open_.insert(fd);
      }
      std::thread([this, protocol, fd] {
        net::io_context ctx;
        boost::system::error_code ignored;
        tcp::socket s(ctx);
        s.assign(protocol, fd, ignored);
        Connection(s);
        s.shutdown(tcp::socket::shutdown_both, ignored);
        // The last touch of this server: ~Impl waits for open_ to empty under mu_, and the
        // descriptor is closed while ~Impl can no longer shut it down (it is out of open_).
        std::lock_guard lock(mu_);
        open_.erase(fd);
        s.close(ignored);
        closed_.notify_all();
      }).detach();
    }
  }

  // Requests on one connection, one after another (keep-alive).
  void Connection(tcp::socket& sock) {
    timeval idle{kIdleSeconds, 0};
    ::setsockopt(sock.native_handle(), SOL_SOCKET, SO_RCVTIMEO, &idle, sizeof idle);
    boost::beast::flat_buffer buffer;
    while (!stopping_) {
      http::request_parser<http::string_body> parser;
      parser.body_limit(kMaxBody);
      boost::system::error_code ec;
      http::read_header(sock, buffer, parser, ec);
      if (!ec && boost::beast::iequals(parser.get()[http::field::expect], "100-continue")) {
        // curl asks before sending a body over 1 KiB; without the answer it waits a second.
        net::write(sock, net::buffer(std::string_view("HTTP/1.1 100 Continue\r\n\r\n")), ec);
      }
      if (!ec && !parser.is_done()) http::read(sock, buffer, parser, ec);
      if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset) return;
      if (ec) {
        if (parser.is_header_done() || buffer.size() > 0) {
          Reply(sock, 11, false, http::status::bad_request,
                ErrorBody(absl::InvalidArgumentError(absl::StrCat("bad HTTP request: ", ec.message()))));
        }
        return;
      }
      Request req = parser.release();
      if (!Handle(sock, req) || !req.keep_alive()) return;
    }
  }

  static json ErrorBody(const absl::Status& s) { return ToError(s).body; }

  // Writes a JSON reply; false if the client is gone.
  static bool Reply(tcp::socket& sock, unsigned version, bool keep_alive, http::status status, const json& body) {
    http::response<http::string_body> res{status, version};
    res.set(http::field::content_type, "application/json");
    res.set(http::field::server, "gpt2d");
    res.keep_alive(keep_alive);
    res.body() = body.dump(-1, ' ', false, json::error_handler_t::replace);
    res.prepare_payload();
    boost::system::error_code ec;
    http::write(sock, res, ec);
    return !ec;
  }

  bool Fail(tcp::socket& sock, const Request& req, const absl::Status& s, bool count = true) {
    if (count && opts_.refused) opts_.refused(absl::StatusCodeToString(s.code()));
    const Error e = ToError(s);
    return Reply(sock, req.version(), req.keep_alive(), static_cast<http::status>(e.http_status), e.body);
  }

  // Routes one request; false when the connection should close.
  bool Handle(tcp::socket& sock, const Request& req) {
    std::string path(req.target());
    if (size_t q = path.find('?'); q != std::string::npos) path.resize(q);
    const bool get = req.method() == http::verb::get, post = req.method() == http::verb::post;
    if (path == "/health" && get) return Reply(sock, req.version(), req.keep_alive(), http::status::ok, json::object());
    const bool known = path == "/v1/completions" || path == "/v1/models" || path.rfind("/v1/models/", 0) == 0 ||
                       path == "/tokenize" || path == "/detokenize" || path == "/tokenizer_info";
    if (!known)
      return Fail(sock, req,
                  absl::NotFoundError(absl::StrCat("no such endpoint: ", std::string(req.method_string()), " ", path)),
                  false);
    const std::string authorization = Header(req, http::field::authorization);
    if (!opts_.token.empty() && !ConstantTimeEqual(authorization, "Bearer " + opts_.token))
      return Fail(sock, req,
                  absl::UnauthenticatedError("a valid bearer token is required (Authorization: Bearer ...)"));
    if (path == "/v1/completions" && post) return Completions(sock, req, authorization);
    if (path == "/v1/models" && get) return Models(sock, req, authorization, "");
    if (path.rfind("/v1/models/", 0) == 0 && get) return Models(sock, req, authorization, path.substr(11));
    if (path == "/tokenize" && post) return Tokenize(sock, req);
    if (path == "/detokenize" && post) return Detokenize(sock, req);
    if (path == "/tokenizer_info" && get) {
      return Reply(sock, req.version(), req.keep_alive(), http::status::ok,
                   {{"eos_token", "<|endoftext|>"},
                    {"bos_token", "<|endoftext|>"},
                    {"pad_token", nullptr},
                    {"tokenizer_class", "GPT2Tokenizer"},
                    {"model_max_length", opts_.max_context}});
    }
    return Fail(
        sock, req,
        absl::InvalidArgumentError(absl::StrCat("method ", std::string(req.method_string()), " not allowed on ", path)),
        false);
  }

  static json ModelJson(const ModelInfo& m) {
    return {{"id", m.id},           {"object", "model"},
            {"created", m.created}, {"owned_by", "gpt2d"},
            {"root", m.checkpoint}, {"checkpoint", {{"job", m.job_id}, {"step", m.step}, {"path", m.checkpoint}}}};
  }

  bool Models(tcp::socket& sock, const Request& req, const std::string& authorization, const std::string& one) {
    absl::StatusOr<std::vector<ModelInfo>> models = opts_.models(authorization);
    if (!models.ok()) return Fail(sock, req, models.status());
    json data = json::array();
    for (const ModelInfo& m : *models) {
      if (!one.empty() && m.id == one)
        return Reply(sock, req.version(), req.keep_alive(), http::status::ok, ModelJson(m));
      data.push_back(ModelJson(m));
    }
    if (!one.empty()) return Fail(sock, req, absl::NotFoundError(absl::StrCat("no model ", one)));
    return Reply(sock, req.version(), req.keep_alive(), http::status::ok, {{"object", "list"}, {"data", data}});
  }

  bool Tokenize(tcp::socket& sock, const Request& req) {
    json body = json::parse(req.body(), nullptr, false);
    if (!body.is_object() || !body.contains("prompt") || !body["prompt"].is_string())
      return Fail(sock, req, absl::InvalidArgumentError("prompt: a string is required"));
    // As vLLM's (a Hugging Face tokenizer's): the text <|endoftext|> is the special token.
    std::vector<TokenId> ids = opts_.tokenizer->Encode(body["prompt"].get<std::string>(), /*allow_special=*/true);
    return Reply(sock, req.version(), req.keep_alive(), http::status::ok,
                 {{"tokens", ids}, {"count", ids.size()}, {"max_model_len", opts_.max_context}});
  }

  bool Detokenize(tcp::socket& sock, const Request& req) {
    json body = json::parse(req.body(), nullptr, false);
    if (!body.is_object() || !body.contains("tokens") || !body["tokens"].is_array())
      return Fail(sock, req, absl::InvalidArgumentError("tokens: a list of token ids is required"));
    std::vector<TokenId> ids;
    for (const json& t : body["tokens"]) {
      if (!t.is_number_integer()) return Fail(sock, req, absl::InvalidArgumentError("tokens: token ids are integers"));
      ids.push_back(t.get<TokenId>());
    }
    absl::StatusOr<std::string> text = opts_.tokenizer->Decode(ids);
    if (!text.ok())
      return Fail(sock, req, absl::InvalidArgumentError(absl::StrCat("tokens: ", text.status().message())));
    return Reply(sock, req.version(), req.keep_alive(), http::status::ok, {{"prompt", *text}});
  }

  bool Completions(tcp::socket& sock, const Request& req, const std::string& authorization) {
    absl::StatusOr<CompletionsCall> parsed = ParseCompletions(req.body());
    if (!parsed.ok()) return Fail(sock, req, parsed.status());
    CompletionsCall& call = *parsed;
    absl::StatusOr<std::vector<ModelInfo>> models = opts_.models(authorization);
    if (!models.ok()) return Fail(sock, req, models.status());
    std::string model = call.model;
    if (model.empty() && !models->empty()) model = models->front().id;
    bool found = false;
    for (const ModelInfo& m : *models) found = found || m.id == model;
    if (!found) {
      return Fail(sock, req,
                  absl::NotFoundError(models->empty() ? std::string("no model is served")
                                                      : absl::StrCat("model: no model named ", model)));
    }

    // One Generate call per prompt; their pieces and ends meet in one queue.
    struct Item {
      size_t prompt;
      std::optional<v1::GenerateResponse> piece;  // else the call ended with `status`
      grpc::Status status;
    };
    std::mutex mu;
    std::condition_variable cv;
    std::deque<Item> queue;
    std::vector<std::unique_ptr<Call>> calls;
    for (size_t i = 0; i < call.prompts.size(); ++i) {
      auto& c = calls.emplace_back(std::make_unique<Call>());
      if (!authorization.empty()) c->ctx.AddMetadata("authorization", authorization);
      c->ctx.AddMetadata(std::string(kApiMetadataKey), "openai");
      call.prompts[i].set_deployment(model);
      c->reader = std::thread([&, i, c = c.get()] {
        std::unique_ptr<grpc::ClientReader<v1::GenerateResponse>> reader = stub_->Generate(&c->ctx, call.prompts[i]);
        v1::GenerateResponse m;
        auto push = [&](Item item) {
          {
            std::lock_guard lock(mu);
            queue.push_back(std::move(item));
          }
          cv.notify_all();
        };
        while (reader->Read(&m)) push({i, m, {}});
        push({i, std::nullopt, reader->Finish()});
      });
    }

    const std::string id = NewCompletionId();
    const int64_t created = UnixNow();
    const int n = call.n;
    std::vector<ChoiceBuilder> choices;
    for (size_t i = 0; i < call.prompts.size() * static_cast<size_t>(n); ++i)
      choices.emplace_back(*opts_.tokenizer, static_cast<int>(i), call.echo, call.logprobs);
    size_t ended = 0;
    bool gone = false, started = false;
    std::optional<grpc::Status> failure;
    std::optional<http::response_serializer<http::empty_body>> sr;
    http::response<http::empty_body> head{http::status::ok, req.version()};
    auto send = [&](const std::string& event) {
      boost::system::error_code ec;
      if (!started) {
        head.set(http::field::content_type, "text/event-stream");
        head.set(http::field::cache_control, "no-cache");
        head.set(http::field::server, "gpt2d");
        head.keep_alive(req.keep_alive());
        head.chunked(true);
        sr.emplace(head);
        http::write_header(sock, *sr, ec);
        started = true;
      }
      if (!ec) net::write(sock, http::make_chunk(net::buffer(event)), ec);
      if (ec) gone = true;
    };
    auto cancel_all = [&] {
      for (auto& c : calls) c->ctx.TryCancel();
    };
    while (ended < calls.size()) {
      std::deque<Item> items;
      {
        std::unique_lock lock(mu);
        cv.wait_for(lock, std::chrono::milliseconds(20), [&] { return !queue.empty(); });
        items.swap(queue);
      }
      if (!gone && PeerGone(sock.native_handle())) {
        gone = true;
        cancel_all();
      }
      for (Item& item : items) {
        if (!item.piece) {
          ++ended;
          if (!item.status.ok() && !failure && !gone) {
            failure = item.status;
            cancel_all();  // one prompt failed: the request fails
          }
          continue;
        }
        if (failure || gone) continue;
        const size_t k = item.prompt * static_cast<size_t>(n) + static_cast<size_t>(item.piece->index());
        if (k >= choices.size()) continue;
        json delta = choices[k].Add(*item.piece);
        if (call.stream) {
          send("data: " +
               Chunk(id, created, model, std::move(delta), call.include_usage)
                   .dump(-1, ' ', false, json::error_handler_t::replace) +
               "\n\n");
          if (gone) cancel_all();
        }
      }
    }
    for (auto& c : calls) c->reader.join();
    if (gone) return false;
    if (failure) {
      const absl::Status s = FromGrpcStatus(*failure);
      if (!started) return Fail(sock, req, s, /*count=*/false);  // GenerateService counted it
      send("data: " + ErrorBody(s).dump(-1, ' ', false, json::error_handler_t::replace) + "\n\n");
      send("data: [DONE]\n\n");
      boost::system::error_code ec;
      net::write(sock, http::make_chunk_last(), ec);
      return false;
    }
    if (!call.stream)
      return Reply(sock, req.version(), req.keep_alive(), http::status::ok, Completion(id, created, model, choices, n));
    if (call.include_usage)
      send("data: " + UsageChunk(id, created, model, choices, n).dump(-1, ' ', false, json::error_handler_t::replace) +
           "\n\n");
    send("data: [DONE]\n\n");
    boost::system::error_code ec;
    if (!gone) net::write(sock, http::make_chunk_last(), ec);
    return !gone && !ec;
  }

  ServerOptions opts_;
  std::unique_ptr<v1::GenerateService::Stub> stub_;
  net::io_context io_;
  tcp::acceptor acceptor_{io_};
  int port_ = 0;
  std::atomic<bool> stopping_{false};
  std::thread accept_thread_;
  std::mutex mu_;
  std::condition_variable closed_;
  std::set<int> open_;  // connections' sockets
};

absl::StatusOr<std::unique_ptr<Server>> Server::Start(ServerOptions options) {
  if (!options.channel) return absl::InvalidArgumentError("the OpenAI server needs a GenerateService channel");
  if (!options.models) return absl::InvalidArgumentError("the OpenAI server needs its models");
  if (!options.tokenizer) return absl::InvalidArgumentError("the OpenAI server needs the tokenizer");
  auto impl = std::make_unique<Impl>(std::move(options));
  if (absl::Status s = impl->Listen(); !s.ok()) return s;
  return std::unique_ptr<Server>(new Server(std::move(impl)));
}

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::~Server() = default;
int Server::port() const { return impl_->port(); }

}  // namespace gpt2::openai
