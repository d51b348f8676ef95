// LoadTokenizer (declared in tokenizer.h): finds the vocabulary files and reads them.

#include <cstdlib>
#include <filesystem>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/tokenizer/tokenizer.h"
#include "common/tokenizer/vocab_files.h"

namespace gpt2 {
namespace {

namespace fs = std::filesystem;

#ifdef GPT2D_DEFAULT_VOCAB
constexpr std::string_view kDefaultVocab = GPT2D_DEFAULT_VOCAB;
#else
constexpr std::string_view kDefaultVocab = "";
#endif

// Reads the vocabulary at `path` (a file or a directory, see LoadTokenizer); `origin` says where
// the path came from, for error messages.
absl::StatusOr<std::vector<std::string>> ReadVocabulary(const std::string& path, const std::string& origin) {
  std::error_code ec;
  if (fs::is_regular_file(path, ec)) return ReadTiktokenFile(path);
  if (!fs::is_directory(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat("no GPT-2 vocabulary at ", path, " (", origin, "): no such file or directory"));
  }
  const fs::path dir(path);
  if (fs::is_regular_file(dir / "gpt2.tiktoken", ec)) {
    return ReadTiktokenFile(dir / "gpt2.tiktoken");
  }
  const std::pair<const char*, const char*> json_forms[] = {{"encoder.json", "vocab.bpe"},
                                                            {"vocab.json", "merges.txt"}};
  std::vector<std::string> looked_for = {(dir / "gpt2.tiktoken").string()};
  for (const auto& [json_name, merges_name] : json_forms) {
    if (fs::is_regular_file(dir / json_name, ec) && fs::is_regular_file(dir / merges_name, ec)) {
      return ReadEncoderJsonFiles(dir / json_name, dir / merges_name);
    }
    looked_for.push_back(absl::StrCat((dir / json_name).string(), " + ", merges_name));
  }
  return absl::NotFoundError(absl::StrCat("no GPT-2 vocabulary in directory ", path, " (", origin, "); looked for ",
                                          absl::StrJoin(looked_for, ", ")));
}

}  // namespace

absl::StatusOr<Tokenizer> LoadTokenizer(std::string_view explicit_path) {
  const char* env = std::getenv("GPT2_VOCAB");
  std::string path, origin;
  if (!explicit_path.empty()) {
    path = std::string(explicit_path);
    origin = "the explicit path";
  } else if (env != nullptr && *env != '\0') {
    path = env;
    origin = "$GPT2_VOCAB";
  } else if (!kDefaultVocab.empty()) {
    path = std::string(kDefaultVocab);
    origin = "the build default GPT2D_DEFAULT_VOCAB: no path given, GPT2_VOCAB unset";
  } else {
    return absl::NotFoundError(
        "no GPT-2 vocabulary: no path was given, GPT2_VOCAB is unset, and this build has no "
        "GPT2D_DEFAULT_VOCAB");
  }
  absl::StatusOr<std::vector<std::string>> token_bytes = ReadVocabulary(path, origin);
  if (!token_bytes.ok()) return token_bytes.status();
  absl::StatusOr<Tokenizer> tokenizer = Tokenizer::FromRanks(*std::move(token_bytes));
  if (!tokenizer.ok()) {
    return absl::Status(tokenizer.status().code(), absl::StrCat(path, ": ", tokenizer.status().message()));
  }
  return tokenizer;
}

}  // namespace gpt2
