#include "worker/tokenize_command.h"

#include <algorithm>
#include <cstdint>
#include <iterator>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"
#include "worker/command_flags.h"

namespace gpt2 {
namespace {

constexpr int kOk = 0;
constexpr int kWriteFailed = 1;
constexpr int kBadInput = 2;

std::string ReadAll(std::istream& in) {
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string JsonArray(const std::vector<TokenId>& ids) { return absl::StrCat("[", absl::StrJoin(ids, ", "), "]"); }

// 1-based line of byte `offset` in `text`.
size_t LineOf(std::string_view text, size_t offset) {
  offset = std::min(offset, text.size());
  return 1 + std::count(text.begin(), text.begin() + offset, '\n');
}

// Checks that `value` is a token id of `tokenizer`; `where` prefixes the error.
absl::StatusOr<TokenId> CheckedId(const Tokenizer& tokenizer, int64_t value, absl::string_view where) {
  if (value < 0 || value >= tokenizer.vocab_size()) {
    return absl::InvalidArgumentError(
        absl::StrCat(where, ": id ", value, " is not in the vocabulary [0, ", tokenizer.vocab_size(), ")"));
  }
  return static_cast<TokenId>(value);
}

// Ids from a JSON array. `first_line` is the line the array starts on, for messages.
absl::StatusOr<std::vector<TokenId>> IdsFromJson(const Tokenizer& tokenizer, std::string_view text, size_t first_line) {
  nlohmann::json array;
  try {
    array = nlohmann::json::parse(text);
  } catch (const nlohmann::json::parse_error& e) {
    return absl::InvalidArgumentError(absl::StrCat("line ", first_line + LineOf(text, e.byte == 0 ? 0 : e.byte - 1) - 1,
                                                   ": invalid JSON: ", e.what()));
  } catch (const nlohmann::json::exception& e) {  // out_of_range: a number too large (1e309)
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", e.what()));
  }
  if (!array.is_array()) {
    return absl::InvalidArgumentError(absl::StrCat("line ", first_line, ": expected a JSON array of token ids"));
  }
  std::vector<TokenId> ids;
  ids.reserve(array.size());
  for (size_t i = 0; i < array.size(); ++i) {
    const std::string where = absl::StrCat("line ", first_line, ", element ", i);
    if (!array[i].is_number_integer()) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": ", array[i].dump(), " is not a token id"));
    }
    absl::StatusOr<TokenId> id = CheckedId(tokenizer, array[i].get<int64_t>(), where);
    if (!id.ok()) return id.status();
    ids.push_back(*id);
  }
  return ids;
}

// Ids written as whitespace-separated decimal numbers, or as one JSON array.
absl::StatusOr<std::vector<TokenId>> IdsFromText(const Tokenizer& tokenizer, absl::string_view text) {
  const absl::string_view trimmed = absl::StripLeadingAsciiWhitespace(text);
  if (!trimmed.empty() && trimmed.front() == '[') {
    return IdsFromJson(tokenizer, std::string_view(text.data(), text.size()), 1);
  }
  std::vector<TokenId> ids;
  size_t line = 1, pos = 0;
  while (pos < text.size()) {
    if (absl::ascii_isspace(static_cast<unsigned char>(text[pos]))) {
      if (text[pos] == '\n') ++line;
      ++pos;
      continue;
    }
    size_t end = pos;
    while (end < text.size() && !absl::ascii_isspace(static_cast<unsigned char>(text[end]))) ++end;
    const absl::string_view word = text.substr(pos, end - pos);
    const std::string where = absl::StrCat("line ", line);
    int64_t value = 0;
    if (!absl::SimpleAtoi(word, &value)) {
      return absl::InvalidArgumentError(absl::StrCat(where, ": '", word, "' is not a token id"));
    }
    absl::StatusOr<TokenId> id = CheckedId(tokenizer, value, where);
    if (!id.ok()) return id.status();
    ids.push_back(*id);
    pos = end;
  }
  return ids;
}

// The text of one --jsonl line: a JSON string, or an object with a string field "text".
absl::StatusOr<std::string> TextFromJsonLine(std::string_view line, size_t line_number) {
  nlohmann::json value;
  try {
    value = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for 1e309
    return absl::InvalidArgumentError(absl::StrCat("line ", line_number, ": invalid JSON: ", e.what()));
  }
  if (value.is_string()) return value.get<std::string>();
  if (value.is_object()) {
    auto text = value.find("text");
    if (text != value.end() && text->is_string()) return text->get<std::string>();
  }
  return absl::InvalidArgumentError(
      absl::StrCat("line ", line_number, ": expected a JSON string or an object with a string field \"text\""));
}

int Fail(std::ostream& err, const absl::Status& status) {
  err << "tokenize: " << status.message() << "\n";
  return kBadInput;
}

int Finish(std::ostream& out, std::ostream& err) {
  out.flush();
  if (!out) {
    err << "tokenize: failed to write the output\n";
    return kWriteFailed;
  }
  return kOk;
}

int RunJsonLines(const Tokenizer& tokenizer, const TokenizeCommandOptions& options, std::istream& in, std::ostream& out,
                 std::ostream& err) {
  std::string line;
  size_t line_number = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (absl::StripAsciiWhitespace(line).empty()) continue;
    if (options.decode) {
      absl::StatusOr<std::vector<TokenId>> ids = IdsFromJson(tokenizer, line, line_number);
      if (!ids.ok()) return Fail(err, ids.status());
      absl::StatusOr<std::string> bytes = tokenizer.Decode(*ids);
      if (!bytes.ok()) return Fail(err, bytes.status());
      out << nlohmann::json(ReplaceInvalidUtf8(*bytes)).dump() << "\n";
    } else {
      absl::StatusOr<std::string> text = TextFromJsonLine(line, line_number);
      if (!text.ok()) return Fail(err, text.status());
      out << JsonArray(tokenizer.Encode(*text, options.allow_special)) << "\n";
    }
    out.flush();  // a caller may be waiting for this line before it sends the next
    if (!out) break;
  }
  return Finish(out, err);
}

}  // namespace

int RunTokenizeCommand(const Tokenizer& tokenizer, const TokenizeCommandOptions& options, std::istream& in,
                       std::ostream& out, std::ostream& err) {
  if (options.jsonl) return RunJsonLines(tokenizer, options, in, out, err);
  const std::string input = ReadAll(in);
  if (options.decode) {
    absl::StatusOr<std::vector<TokenId>> ids = IdsFromText(tokenizer, input);
    if (!ids.ok()) return Fail(err, ids.status());
    absl::StatusOr<std::string> bytes = tokenizer.Decode(*ids);
    if (!bytes.ok()) return Fail(err, bytes.status());
    out.write(bytes->data(), static_cast<std::streamsize>(bytes->size()));
    return Finish(out, err);
  }
  const std::vector<TokenId> ids = tokenizer.Encode(input, options.allow_special);
  out << (options.json ? JsonArray(ids) : absl::StrJoin(ids, " ")) << "\n";
  return Finish(out, err);
}

WorkerCommand AddTokenizeCommand(CLI::App& app, const WorkerGlobals& globals) {
  auto o = std::make_shared<TokenizeCommandOptions>();
  CLI::App* cmd = app.add_subcommand("tokenize", "Text on stdin -> GPT-2 token ids on stdout");
  cmd->add_flag("--json", o->json, "Print a JSON array");
  cmd->add_flag("--jsonl", o->jsonl, "Each input line is a JSON string; print one JSON array per line");
  cmd->add_flag("--allow-special", o->allow_special, "Map the text <|endoftext|> to token 50256");
  cmd->add_flag("--decode", o->decode, "Token ids on stdin -> text on stdout");
  return {cmd, [o, &globals] {
            absl::StatusOr<Tokenizer> tok = LoadTokenizer(globals.vocab);
            if (!tok.ok()) {
              std::cerr << "error: " << tok.status().message() << "\n";
              return 1;
            }
            return RunTokenizeCommand(*tok, *o, std::cin, std::cout, std::cerr);
          }};
}

}  // namespace gpt2
