// Server-side security shared by gpt2d's services: TLS credentials from PEM files, and the bearer
// token check ("authorization: Bearer <token>" metadata) that guards every RPC but health.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace grpc {
class ServerContext;
class ServerCredentials;
}  // namespace grpc

namespace gpt2 {

struct ServerTlsOptions {
  std::string cert_file, key_file;  // both empty: plaintext
  std::string client_ca_file;       // set: clients must present a certificate signed by it (mTLS)
};

absl::StatusOr<std::shared_ptr<grpc::ServerCredentials>> MakeServerCredentials(const ServerTlsOptions& tls);

// OK when `token` is empty (auth off) or the call carries it; else UNAUTHENTICATED.
// The comparison does not stop at the first differing byte.
absl::Status CheckBearerToken(const grpc::ServerContext& ctx, const std::string& token);

}  // namespace gpt2
