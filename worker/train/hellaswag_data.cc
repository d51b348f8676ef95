#include "worker/train/hellaswag_data.h"

#include <filesystem>
#include <fstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace gpt2 {

absl::StatusOr<std::vector<HellaSwagExample>> ParseHellaSwag(std::istream& in, const std::string& name,
                                                             int64_t limit) {
  std::vector<HellaSwagExample> out;
  std::string line;
  for (int64_t lineno = 1; std::getline(in, line); ++lineno) {
    if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
    auto bad = [&](const std::string& why) { return absl::InvalidArgumentError(absl::StrCat(name, ":", lineno, ": ", why)); };
    const nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_discarded() || !j.is_object()) return bad("not a JSON object");
    if (!j.contains("ctx") || !j["ctx"].is_string()) return bad("missing string field ctx");
    if (!j.contains("endings") || !j["endings"].is_array() || j["endings"].size() != 4)
      return bad("endings must be a list of 4 strings");
    if (!j.contains("label") || !j["label"].is_number_integer()) return bad("missing integer field label");
    HellaSwagExample ex;
    ex.ctx = j["ctx"].get<std::string>();
    for (const auto& e : j["endings"]) {
      if (!e.is_string()) return bad("endings must be strings");
      ex.endings.push_back(e.get<std::string>());
    }
    const int64_t label = j["label"].get<int64_t>();
    if (label < 0 || label > 3 || (j["label"].is_number_unsigned() && j["label"].get<uint64_t>() > 3))
      return bad("label must be 0..3");
    ex.label = static_cast<int>(label);
    out.push_back(std::move(ex));
    if (limit > 0 && static_cast<int64_t>(out.size()) >= limit) break;
  }
  return out;
}

absl::StatusOr<std::vector<HellaSwagExample>> ReadHellaSwag(const std::string& path, int64_t limit) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open HellaSwag file ", path));
  const std::string name = std::filesystem::path(path).filename().string();
  if (name == kHellaSwagTestName)
    return absl::InvalidArgumentError(absl::StrCat(path, ": the HellaSwag test split has no labels; use ",
                                                   kHellaSwagValName, " (the validation split)"));
  absl::StatusOr<std::vector<HellaSwagExample>> examples = ParseHellaSwag(in, path, limit);
  if (examples.ok() && limit == 0 && name == kHellaSwagValName &&
      static_cast<int64_t>(examples->size()) != kHellaSwagValRows)
    return absl::InvalidArgumentError(absl::StrCat(path, ": ", examples->size(), " examples; the official ",
                                                   kHellaSwagValName, " has ", kHellaSwagValRows,
                                                   " (a truncated or different file?)"));
  return examples;
}

}  // namespace gpt2
