// The client side of gpt2d's security: a channel to gpt2d (plaintext, TLS, or mutual TLS from PEM
// files) and the bearer token that every call but health carries as "authorization: Bearer <token>"
// metadata (the server's check is common/server_credentials.h). gRPC only, no libtorch.
#pragma once

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace grpc {
class Channel;
class ClientContext;
}  // namespace grpc

namespace gpt2 {

struct ClientChannelOptions {
  std::string address;        // "host:port" or any gRPC target ("dns:///host:port", "unix:/path")
  std::string token;          // bearer token; empty: send none
  bool tls = false;           // TLS with the system roots; any tls_* field below implies TLS too
  std::string tls_ca_file;    // PEM roots to verify gpt2d with; empty: the system's roots
  std::string tls_cert_file;  // client certificate and key for mutual TLS: both or neither
  std::string tls_key_file;
  std::string tls_server_name;  // name to verify in gpt2d's certificate instead of the address's host
};

// Whether the channel is TLS: options.tls or any tls_* field set.
bool UsesTls(const ClientChannelOptions& options);

// A channel to options.address. It connects lazily: an unreachable server shows up as UNAVAILABLE
// on the first call, not here. Errors are INVALID_ARGUMENT and name the file or flag at fault.
// The channel sends keepalive pings on open calls, so a long WatchJob notices a dead connection.
absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeClientChannel(const ClientChannelOptions& options);

// Adds "authorization: Bearer <token>" to the call's metadata when token is non-empty. Plain
// metadata rather than CallCredentials, which gRPC refuses to send over a plaintext channel.
void PrepareContext(grpc::ClientContext& context, const std::string& token);

// OK when the token can travel as metadata: printable ASCII, no spaces around it.
absl::Status CheckToken(const std::string& token);

// The token stored in a file, surrounding whitespace (the trailing newline) removed.
// INVALID_ARGUMENT naming the file when it cannot be read or holds no token.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

}  // namespace gpt2
