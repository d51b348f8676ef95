#include "common/client_channel.h"

#include <grpcpp/client_context.h>
#include <grpcpp/create_channel.h>
#include <grpcpp/security/credentials.h>
#include <grpcpp/support/channel_arguments.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace gpt2 {
namespace {

// Keepalive pings only while a call is open (a WatchJob can be quiet for hours while its job
// queues). A gRPC server punishes pings more frequent than it allows with GOAWAY; the client sends
// at most two pings without data in between, which stays under the default strike limit.
constexpr int kKeepaliveTimeMs = 60'000;
constexpr int kKeepaliveTimeoutMs = 20'000;

absl::StatusOr<std::string> ReadFile(const std::string& path, const char* what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::InvalidArgumentError(absl::StrCat("cannot read the ", what, " ", path, ": ", std::strerror(errno)));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return absl::InvalidArgumentError(absl::StrCat("cannot read the ", what, " ", path));
  return ss.str();
}

absl::StatusOr<std::string> ReadPem(const std::string& path, const char* what) {
  absl::StatusOr<std::string> pem = ReadFile(path, what);
  if (!pem.ok()) return pem.status();
  if (pem->find("-----BEGIN") == std::string::npos)
    return absl::InvalidArgumentError(absl::StrCat("the ", what, " ", path, " is not a PEM file"));
  return pem;
}

}  // namespace

bool UsesTls(const ClientChannelOptions& options) {
  return options.tls || !options.tls_ca_file.empty() || !options.tls_cert_file.empty() ||
         !options.tls_server_name.empty();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> MakeClientChannel(const ClientChannelOptions& options) {
  if (options.address.empty()) return absl::InvalidArgumentError("no server address (--server)");
  if (options.tls_cert_file.empty() != options.tls_key_file.empty())
    return absl::InvalidArgumentError("mutual TLS needs both a client certificate and its key (--tls-cert, --tls-key)");

  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_KEEPALIVE_TIME_MS, kKeepaliveTimeMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_TIMEOUT_MS, kKeepaliveTimeoutMs);
  args.SetInt(GRPC_ARG_KEEPALIVE_PERMIT_WITHOUT_CALLS, 0);

  if (!UsesTls(options)) {
    return grpc::CreateCustomChannel(options.address, grpc::InsecureChannelCredentials(), args);
  }

  grpc::SslCredentialsOptions ssl;
  if (!options.tls_ca_file.empty()) {
    absl::StatusOr<std::string> ca = ReadPem(options.tls_ca_file, "TLS CA file");
    if (!ca.ok()) return ca.status();
    ssl.pem_root_certs = *std::move(ca);
  }
  if (!options.tls_cert_file.empty()) {
    absl::StatusOr<std::string> cert = ReadPem(options.tls_cert_file, "TLS client certificate");
    if (!cert.ok()) return cert.status();
    absl::StatusOr<std::string> key = ReadPem(options.tls_key_file, "TLS client key");
    if (!key.ok()) return key.status();
    ssl.pem_cert_chain = *std::move(cert);
    ssl.pem_private_key = *std::move(key);
  }
  if (!options.tls_server_name.empty()) args.SetSslTargetNameOverride(options.tls_server_name);
  return grpc::CreateCustomChannel(options.address, grpc::SslCredentials(ssl), args);
}

void PrepareContext(grpc::ClientContext& context, const std::string& token) {
  if (!token.empty()) context.AddMetadata("authorization", "Bearer " + token);
}

absl::Status CheckToken(const std::string& token) {
  for (char c : token)
    if (c < 0x21 || c > 0x7e)
      return absl::InvalidArgumentError("a token is printable ASCII without spaces or line breaks");
  return absl::OkStatus();
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  absl::StatusOr<std::string> text = ReadFile(path, "token file");
  if (!text.ok()) return text.status();
  std::string token(absl::StripAsciiWhitespace(*text));
  if (token.empty()) return absl::InvalidArgumentError(absl::StrCat("the token file ", path, " is empty"));
  if (absl::Status s = CheckToken(token); !s.ok())
    return absl::InvalidArgumentError(absl::StrCat("the token file ", path, ": ", s.message()));
  return token;
}

}  // namespace gpt2
