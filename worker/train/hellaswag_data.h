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
// The official files (github.com/rowanz/hellaswag, data/): their names and row counts.
inline constexpr const char kHellaSwagValName[] = "hellaswag_val.jsonl";
inline constexpr int64_t kHellaSwagValRows = 10'042;
inline constexpr const char kHellaSwagTestName[] = "hellaswag_test.jsonl";  // no labels: not scorable

// ParseHellaSwag of the file at `path`. NotFound when it cannot be opened. A file named
// hellaswag_val.jsonl must be the whole official validation set: InvalidArgument unless it holds
// kHellaSwagValRows examples (a truncated or different download), checked when limit is 0. The
// test split (hellaswag_test.jsonl) has no labels and is refused by name.
absl::StatusOr<std::vector<HellaSwagExample>> ReadHellaSwag(const std::string& path, int64_t limit = 0);

}  // namespace gpt2
