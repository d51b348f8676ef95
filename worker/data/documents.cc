#include "worker/data/documents.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace gpt2 {
namespace {

namespace fs = std::filesystem;

bool IsTextFile(const fs::path& path) {
  const std::string name = path.filename().string();
  return std::any_of(std::begin(kTextExtensions), std::end(kTextExtensions),
                     [&](const char* ext) { return name.ends_with(ext); });
}

bool IsJsonl(const std::string& path) { return path.ends_with(".jsonl"); }

absl::StatusOr<std::string> ReadFile(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
  std::string contents;
  char buffer[1 << 16];
  std::size_t n;
  while ((n = std::fread(buffer, 1, sizeof(buffer), file)) > 0) contents.append(buffer, n);
  const bool failed = std::ferror(file) != 0;
  const int error = errno;
  std::fclose(file);
  if (failed) return absl::ErrnoToStatus(error, absl::StrCat(path, ": read failed"));
  return contents;
}

// The text of one JSONL line, or why it has none.
absl::StatusOr<std::string> TextOfJsonLine(std::string_view line) {
  nlohmann::json object;
  try {
    object = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for 1e309
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", e.what()));
  }
  if (!object.is_object()) return absl::InvalidArgumentError("not a JSON object");
  auto text = object.find("text");
  if (text == object.end()) return absl::InvalidArgumentError("no \"text\" field");
  if (!text->is_string()) return absl::InvalidArgumentError("\"text\" is not a string");
  return text->get<std::string>();
}

}  // namespace

absl::StatusOr<DocumentReader> DocumentReader::Open(const std::vector<std::string>& inputs, bool skip_bad_lines,
                                                    WarningFn warn) {
  DocumentReader reader;
  reader.skip_bad_lines_ = skip_bad_lines;
  reader.warn_ = std::move(warn);
  for (const std::string& input : inputs) {
    std::error_code error;
    const fs::file_status status = fs::status(input, error);
    if (error || !fs::exists(status)) {
      return absl::NotFoundError(absl::StrCat(input, ": no such file or directory"));
    }
    if (!fs::is_directory(status)) {
      reader.files_.push_back(input);
      continue;
    }
    std::vector<std::string> found;
    fs::recursive_directory_iterator it(input, error), end;
    for (; !error && it != end; it.increment(error)) {
      std::error_code file_error;
      if (IsTextFile(it->path()) && it->is_regular_file(file_error)) {
        found.push_back(it->path().string());
      }
    }
    if (error) {
      return absl::Status(absl::ErrnoToStatusCode(error.value()),
                          absl::StrCat(input, ": cannot walk the directory: ", error.message()));
    }
    std::sort(found.begin(), found.end());
    reader.files_.insert(reader.files_.end(), found.begin(), found.end());
  }
  return reader;
}

absl::StatusOr<std::optional<std::string>> DocumentReader::Next() {
  while (true) {
    if (jsonl_ != nullptr) {
      std::string line;
      while (std::getline(*jsonl_, line)) {
        ++jsonl_line_;
        if (absl::StripAsciiWhitespace(line).empty()) continue;
        absl::StatusOr<std::string> text = TextOfJsonLine(line);
        if (text.ok()) {
          bytes_read_ += static_cast<std::int64_t>(text->size());
          return std::optional<std::string>(std::move(*text));
        }
        const std::string problem = absl::StrCat(jsonl_path_, ":", jsonl_line_, ": ", text.status().message());
        if (!skip_bad_lines_) return absl::InvalidArgumentError(problem);
        ++skipped_lines_;
        if (warn_) warn_(problem);
      }
      if (jsonl_->bad()) return absl::DataLossError(absl::StrCat(jsonl_path_, ": read failed"));
      jsonl_.reset();
    }
    if (next_file_ == files_.size()) return std::optional<std::string>();
    const std::string& path = files_[next_file_++];
    if (IsJsonl(path)) {
      jsonl_ = std::make_unique<std::ifstream>(path, std::ios::binary);
      if (!jsonl_->is_open()) {
        return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
      }
      jsonl_path_ = path;
      jsonl_line_ = 0;
      continue;
    }
    absl::StatusOr<std::string> text = ReadFile(path);
    if (!text.ok()) return text.status();
    bytes_read_ += static_cast<std::int64_t>(text->size());
    return std::optional<std::string>(std::move(*text));
  }
}

}  // namespace gpt2
