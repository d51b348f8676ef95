// The HellaSwag dataset's JSONL (one example a line: ctx, endings, label), read without libtorch.
#pragma once

#include <cstdint>
#include <istream>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/statusor.h"

namespace gpt2 {

struct HellaSwagExample {
  std::string ctx;
  std::vector<std::string> endings;  // four
  int label = 0;
};

// Parses the official JSONL (fields ctx, endings, label; others ignored; blank lines skipped);
// `limit` > 0 keeps the first `limit`. InvalidArgument "name:line: problem" for a bad line.
absl::StatusOr<std::vector<HellaSwagExample>> ParseHellaSwag(std::istream& in, const std::string& name,
                                                             int64_t limit = 0);
// ParseHellaSwag of the file at `path`. NotFound when it cannot be opened.
absl::StatusOr<std::vector<HellaSwagExample>> ReadHellaSwag(const std::string& path, int64_t limit = 0);

}  // namespace gpt2
