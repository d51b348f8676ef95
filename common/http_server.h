// The HTTP face of gpt2d and gpt2-worker: GET /metrics (Prometheus text format of one registry)
// and GET /healthz (200 "ok" while the health callback says so, else 503 with its reason).
// Backed by cpp-httplib (Debian's libcpp-httplib-dev); requests are served on its thread pool,
// the listener on a thread of ours. (Not civetweb: its threads get 100 KiB stacks, too small for
// the static TLS of a process that loads libtorch, so it cannot start inside gpt2-worker.)
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "absl/status/statusor.h"

namespace prometheus {
class Registry;
}
namespace httplib {
class Server;
}

namespace gpt2 {

class HttpServer {
 public:
  // Returns an empty string when healthy, else the reason.
  using HealthCheck = std::function<std::string()>;

  // listen: "host:port" ("127.0.0.1:9400"; port 0 picks a free one).
  static absl::StatusOr<std::unique_ptr<HttpServer>> Start(const std::string& listen,
                                                           std::shared_ptr<prometheus::Registry> registry,
                                                           HealthCheck health);
  ~HttpServer();
  int port() const { return port_; }

 private:
  HttpServer() = default;
  std::shared_ptr<prometheus::Registry> registry_;
  HealthCheck health_;
  std::unique_ptr<httplib::Server> server_;
  std::thread thread_;
  int port_ = 0;
};

}  // namespace gpt2
