#include "common/tokenizer/vocab_files.h"

#include <algorithm>
#include <array>
#include <cerrno>
#include <charconv>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "nlohmann/json.hpp"

namespace gpt2 {
namespace {

// Debian's Abseil has its own string_view type, distinct from std::string_view.
std::string_view StdView(absl::string_view s) { return std::string_view(s.data(), s.size()); }

absl::StatusOr<std::string> ReadWholeFile(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec)) {
    return absl::InvalidArgumentError(absl::StrCat("cannot read ", path, ": it is a directory"));
  }
  std::ifstream file(path, std::ios::binary);
  if (!file) {
    const int error = errno;
    return absl::Status(absl::ErrnoToStatusCode(error), absl::StrCat("cannot read ", path, ": ", std::strerror(error)));
  }
  std::ostringstream contents;
  contents << file.rdbuf();
  if (file.bad()) return absl::DataLossError(absl::StrCat("error while reading ", path));
  return std::move(contents).str();
}

absl::Status LineError(const std::string& path, size_t line, absl::string_view message) {
  return absl::InvalidArgumentError(absl::StrCat(path, ":", line, ": ", message));
}

// Parses a rank: decimal digits only, below 2^31.
bool ParseRank(absl::string_view text, int64_t* rank) {
  if (text.empty() || text.size() > 10) return false;
  for (char c : text) {
    if (c < '0' || c > '9') return false;
  }
  std::from_chars(text.data(), text.data() + text.size(), *rank);
  return *rank < INT32_MAX;
}

// Byte <-> stand-in code point tables (see BytesToGpt2Unicode).
struct StandIns {
  std::array<char32_t, 256> of_byte{};
  std::array<int, 256 + 68> byte_of{};  // -1 where the code point stands for no byte

  StandIns() {
    byte_of.fill(-1);
    int shifted = 0;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || b >= 174;
      of_byte[b] = printable ? static_cast<char32_t>(b) : static_cast<char32_t>(256 + shifted++);
      byte_of[of_byte[b]] = b;
    }
  }
};

const StandIns& GetStandIns() {
  static const StandIns tables;
  return tables;
}

// Checks that ranks form 0..N-1, given which ranks were seen.
absl::Status CheckContiguous(const std::string& path, const std::vector<size_t>& line_of_rank, size_t count) {
  for (size_t r = 0; r < line_of_rank.size(); ++r) {
    if (line_of_rank[r] == 0) {
      return absl::InvalidArgumentError(absl::StrCat(path, ": ranks are not contiguous: rank ", r, " is missing (",
                                                     count, " tokens, highest rank ", line_of_rank.size() - 1, ")"));
    }
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::vector<std::string>> ReadTiktokenFile(const std::string& path) {
  absl::StatusOr<std::string> contents = ReadWholeFile(path);
  if (!contents.ok()) return contents.status();

  std::vector<std::pair<std::string, int64_t>> entries;  // (bytes, rank) in file order
  std::vector<size_t> line_of_rank;                      // 0: rank not seen yet
  absl::flat_hash_map<std::string, size_t> line_of_bytes;
  // A rank can be no larger than the number of lines if ranks are to be contiguous; checking
  // that first keeps a corrupt rank from sizing line_of_rank.
  const size_t max_tokens = std::count(contents->begin(), contents->end(), '\n') + 1;
  size_t line_number = 0;
  for (absl::string_view line : absl::StrSplit(*contents, '\n')) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    if (space == absl::string_view::npos) {
      return LineError(path, line_number, "expected '<base64 bytes> <rank>', found no rank");
    }
    const absl::string_view encoded = line.substr(0, space);
    const absl::string_view rank_text = line.substr(space + 1);
    int64_t rank = 0;
    if (!ParseRank(rank_text, &rank)) {
      return LineError(path, line_number, absl::StrCat("rank '", rank_text, "' is not a non-negative integer"));
    }
    if (static_cast<size_t>(rank) >= max_tokens) {
      return LineError(
          path, line_number,
          absl::StrCat("rank ", rank, " is beyond the file's ", max_tokens, " lines: ranks are not contiguous"));
    }
    std::string bytes;
    if (encoded.empty() || !absl::Base64Unescape(encoded, &bytes) || bytes.empty()) {
      return LineError(path, line_number, absl::StrCat("'", encoded, "' is not valid base64"));
    }
    if (static_cast<size_t>(rank) >= line_of_rank.size()) line_of_rank.resize(rank + 1, 0);
    if (line_of_rank[rank] != 0) {
      return LineError(path, line_number, absl::StrCat("rank ", rank, " already given on line ", line_of_rank[rank]));
    }
    line_of_rank[rank] = line_number;
    auto [it, inserted] = line_of_bytes.emplace(bytes, line_number);
    if (!inserted) {
      return LineError(path, line_number, absl::StrCat("token '", encoded, "' already given on line ", it->second));
    }
    entries.emplace_back(std::move(bytes), rank);
  }
  if (entries.empty()) return absl::InvalidArgumentError(absl::StrCat(path, ": no tokens"));
  if (absl::Status gaps = CheckContiguous(path, line_of_rank, entries.size()); !gaps.ok()) {
    return gaps;
  }
  std::vector<std::string> token_bytes(entries.size());
  for (auto& [bytes, rank] : entries) token_bytes[rank] = std::move(bytes);
  return token_bytes;
}

absl::StatusOr<std::vector<std::string>> ReadEncoderJsonFiles(const std::string& encoder_json_path,
                                                              const std::string& merges_path) {
  absl::StatusOr<std::string> json_text = ReadWholeFile(encoder_json_path);
  if (!json_text.ok()) return json_text.status();
  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(*json_text);
  } catch (const nlohmann::json::exception& e) {
    return absl::InvalidArgumentError(absl::StrCat(encoder_json_path, ": not valid JSON: ", e.what()));
  }
  if (!encoder.is_object()) {
    return absl::InvalidArgumentError(
        absl::StrCat(encoder_json_path, ": expected a JSON object mapping tokens to ids"));
  }

  // Read every mergeable token; <|endoftext|> is checked once the count is known.
  std::vector<std::string> token_bytes;
  std::vector<size_t> seen;  // 1 where an id was given
  int64_t eot_id = -1;
  for (const auto& [key, value] : encoder.items()) {
    int64_t id = -1;
    if (value.is_number_integer()) id = value.get<int64_t>();
    if (id < 0 || id >= INT32_MAX) {
      return absl::InvalidArgumentError(
          absl::StrCat(encoder_json_path, ": token '", key, "' has id ", value.dump(), ", not a non-negative integer"));
    }
    if (static_cast<size_t>(id) >= encoder.size()) {
      return absl::InvalidArgumentError(absl::StrCat(encoder_json_path, ": token '", key, "' has id ", id,
                                                     " but there are only ", encoder.size(),
                                                     " tokens: ids are not contiguous"));
    }
    if (key == "<|endoftext|>") {
      eot_id = id;
      continue;
    }
    absl::StatusOr<std::string> bytes = Gpt2UnicodeToBytes(key);
    if (!bytes.ok()) {
      return absl::InvalidArgumentError(
          absl::StrCat(encoder_json_path, ": token '", key, "': ", bytes.status().message()));
    }
    if (static_cast<size_t>(id) >= token_bytes.size()) {
      token_bytes.resize(id + 1);
      seen.resize(id + 1, 0);
    }
    if (seen[id] != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(encoder_json_path, ": id ", id, " is given to more than one token"));
    }
    seen[id] = 1;
    token_bytes[id] = *std::move(bytes);
  }
  size_t count = 0;
  for (size_t s : seen) count += s;
  if (count == 0) return absl::InvalidArgumentError(absl::StrCat(encoder_json_path, ": no tokens"));
  if (absl::Status gaps = CheckContiguous(encoder_json_path, seen, count); !gaps.ok()) return gaps;
  if (eot_id >= 0 && static_cast<size_t>(eot_id) != token_bytes.size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(encoder_json_path, ": <|endoftext|> has id ", eot_id, ", expected ", token_bytes.size()));
  }

  // The merges must produce every multi-byte token, in the order of their ids.
  absl::StatusOr<std::string> merges_text = ReadWholeFile(merges_path);
  if (!merges_text.ok()) return merges_text.status();
  absl::flat_hash_map<absl::string_view, int64_t> id_of;
  id_of.reserve(token_bytes.size());
  size_t multi_byte = 0;
  for (size_t id = 0; id < token_bytes.size(); ++id) {
    if (!id_of.emplace(token_bytes[id], id).second) {
      return absl::InvalidArgumentError(
          absl::StrCat(encoder_json_path, ": token '", BytesToGpt2Unicode(token_bytes[id]), "' is listed twice"));
    }
    if (token_bytes[id].size() > 1) ++multi_byte;
  }
  size_t line_number = 0, merges = 0;
  int64_t previous_id = -1;
  for (absl::string_view line : absl::StrSplit(*merges_text, '\n')) {
    ++line_number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (line.empty() || (line_number == 1 && line.front() == '#')) continue;  // "#version: 0.2"
    const std::vector<absl::string_view> halves = absl::StrSplit(line, ' ');
    if (halves.size() != 2 || halves[0].empty() || halves[1].empty()) {
      return LineError(merges_path, line_number, "expected '<token> <token>'");
    }
    absl::StatusOr<std::string> left = Gpt2UnicodeToBytes(StdView(halves[0]));
    absl::StatusOr<std::string> right = Gpt2UnicodeToBytes(StdView(halves[1]));
    if (!left.ok() || !right.ok() || !id_of.contains(*left) || !id_of.contains(*right)) {
      return LineError(merges_path, line_number, "merges a token that is not in the vocabulary");
    }
    auto joined = id_of.find(*left + *right);
    if (joined == id_of.end()) {
      return LineError(merges_path, line_number, "merges into a token that is not in the vocabulary");
    }
    if (joined->second <= previous_id) {
      return LineError(merges_path, line_number,
                       absl::StrCat("merge into id ", joined->second, " comes after id ", previous_id,
                                    ": merge order must follow ids"));
    }
    previous_id = joined->second;
    ++merges;
  }
  if (merges != multi_byte) {
    return absl::InvalidArgumentError(
        absl::StrCat(merges_path, ": ", merges, " merges for ", multi_byte, " multi-byte tokens"));
  }
  return token_bytes;
}

std::string BytesToGpt2Unicode(std::string_view bytes) {
  const StandIns& tables = GetStandIns();
  std::string text;
  text.reserve(bytes.size() * 2);
  for (char c : bytes) {
    const char32_t cp = tables.of_byte[static_cast<uint8_t>(c)];
    if (cp < 0x80) {
      text += static_cast<char>(cp);
    } else {  // every stand-in is below U+0800: two bytes of UTF-8
      text += static_cast<char>(0xC0 | (cp >> 6));
      text += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }
  return text;
}

absl::StatusOr<std::string> Gpt2UnicodeToBytes(std::string_view text) {
  const StandIns& tables = GetStandIns();
  std::string bytes;
  bytes.reserve(text.size());
  for (size_t i = 0; i < text.size();) {
    const auto lead = static_cast<uint8_t>(text[i]);
    char32_t cp;
    if (lead < 0x80) {
      cp = lead;
      i += 1;
    } else if (lead >= 0xC2 && lead <= 0xDF && i + 1 < text.size() &&
               (static_cast<uint8_t>(text[i + 1]) & 0xC0) == 0x80) {
      cp = (static_cast<char32_t>(lead & 0x1F) << 6) | (static_cast<uint8_t>(text[i + 1]) & 0x3F);
      i += 2;
    } else {
      return absl::InvalidArgumentError("contains a character that stands for no byte");
    }
    if (cp >= tables.byte_of.size() || tables.byte_of[cp] < 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("U+", absl::Hex(static_cast<uint32_t>(cp), absl::kZeroPad4), " stands for no byte"));
    }
    bytes += static_cast<char>(tables.byte_of[cp]);
  }
  return bytes;
}

}  // namespace gpt2
