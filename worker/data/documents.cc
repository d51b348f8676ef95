#include "worker/data/documents.h"

#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string_view>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "common/utf8.h"
#include "nlohmann/json.hpp"

extern char** environ;

namespace gpt2 {
namespace {

namespace fs = std::filesystem;
using namespace std::string_view_literals;

bool IsListedFile(const fs::path& path) {
  const std::string name = path.filename().string();
  return std::any_of(std::begin(kTextExtensions), std::end(kTextExtensions),
                     [&](const char* ext) { return name.ends_with(ext); });
}

bool IsJsonl(const std::string& path) { return path.ends_with(".jsonl") || path.ends_with(".jsonl.gz"); }

// What a file's first bytes say it is.
struct Sniffed {
  bool gzip = false;
  bool parquet = false;
};

absl::StatusOr<Sniffed> Sniff(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (file == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
  char head[8] = {};
  const size_t n = std::fread(head, 1, sizeof(head), file);
  std::fclose(file);
  const std::string_view start(head, n);
  if (start.starts_with("PAR1")) return Sniffed{.parquet = true};
  if (start.starts_with("\x1f\x8b"sv)) return Sniffed{.gzip = true};
  struct Refused {
    std::string_view magic;
    const char* what;
    const char* undo;
  };
  static constexpr Refused kRefused[] = {
      {"\x28\xb5\x2f\xfd"sv, "zstd-compressed", "zstd -d"},
      {"\xfd"
       "7zXZ\0"sv,
       "xz-compressed", "xz -d"},
      {"BZh"sv, "bzip2-compressed", "bunzip2"},
      {"PK\x03\x04"sv, "a zip archive", "unzip"},
      {"7z\xbc\xaf\x27\x1c"sv, "a 7z archive", "7z x"},
  };
  for (const Refused& r : kRefused) {
    if (start.starts_with(r.magic)) {
      return absl::InvalidArgumentError(absl::StrCat(
          path, ": ", r.what, "; prep reads text, JSONL, parquet and gzip: decompress it first (", r.undo, ")"));
    }
  }
  if (path.ends_with(".parquet"))
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a parquet file (no PAR1)"));
  return Sniffed{};
}

// OK when `text` reads as text: no NUL byte and at most kMaxInvalidUtf8 of its bytes (and more
// than one) in ill-formed UTF-8, which the tokenizer would turn into U+FFFD.
absl::Status CheckText(const std::string& path, std::string_view text) {
  if (const size_t nul = text.find('\0'); nul != std::string_view::npos)
    return absl::InvalidArgumentError(absl::StrCat(path, ": binary, not text (a NUL byte at offset ", nul, ")"));
  int64_t bad = 0;  // bytes of ill-formed sequences: each stops a valid run and is stepped over
  for (size_t pos = 0; (pos += ValidUtf8PrefixLength(text.substr(pos))) < text.size(); ++pos) ++bad;
  if (bad > 1 && static_cast<double>(bad) > kMaxInvalidUtf8 * static_cast<double>(text.size()))
    return absl::InvalidArgumentError(absl::StrCat(path, ": not UTF-8 text (", bad, " of ", text.size(),
                                                   " bytes are ill-formed; prep tolerates 1 in 1,000)"));
  return absl::OkStatus();
}

// A file read through zlib, which passes a file that is not gzip through unchanged.
class ZFile {
 public:
  static absl::StatusOr<std::unique_ptr<ZFile>> Open(const std::string& path) {
    gzFile f = gzopen(path.c_str(), "rb");
    if (f == nullptr) return absl::ErrnoToStatus(errno, absl::StrCat(path, ": cannot open"));
    gzbuffer(f, 1 << 17);
    return std::unique_ptr<ZFile>(new ZFile(path, f));
  }
  ~ZFile() { gzclose(file_); }

  // The next line (without its '\n') in *line; false at the end. Lines may hold any bytes.
  absl::StatusOr<bool> ReadLine(std::string* line) {
    line->clear();
    while (true) {
      if (pos_ == buffer_.size()) {
        absl::StatusOr<bool> more = Fill();
        if (!more.ok()) return more.status();
        if (!*more) return !line->empty();
      }
      const size_t end = buffer_.find('\n', pos_);
      if (end == std::string::npos) {
        line->append(buffer_, pos_);
        pos_ = buffer_.size();
        continue;
      }
      line->append(buffer_, pos_, end - pos_);
      pos_ = end + 1;
      return true;
    }
  }

  // The rest of the file.
  absl::StatusOr<std::string> ReadAll() {
    std::string contents(buffer_, pos_);
    while (true) {
      absl::StatusOr<bool> more = Fill();
      if (!more.ok()) return more.status();
      if (!*more) return contents;
      contents += buffer_;
    }
  }

 private:
  ZFile(std::string path, gzFile file) : path_(std::move(path)), file_(file) {}

  // Reads the next chunk into buffer_ (from pos_ 0); false at the end of the file.
  absl::StatusOr<bool> Fill() {
    buffer_.resize(1 << 16);
    const int n = gzread(file_, buffer_.data(), static_cast<unsigned>(buffer_.size()));
    buffer_.resize(n > 0 ? static_cast<size_t>(n) : 0);
    pos_ = 0;
    if (n > 0) return true;
    if (absl::Status s = Error(); !s.ok()) return s;
    if (n < 0) return absl::DataLossError(absl::StrCat(path_, ": read failed"));
    return false;
  }

  absl::Status Error() {
    int code = Z_OK;
    const char* message = gzerror(file_, &code);
    if (code == Z_OK || code == Z_STREAM_END) return absl::OkStatus();
    if (code == Z_ERRNO) return absl::ErrnoToStatus(errno, absl::StrCat(path_, ": read failed"));
    return absl::DataLossError(absl::StrCat(path_, ": corrupt gzip data: ", message));
  }

  std::string path_;
  gzFile file_;
  std::string buffer_;  // the chunk read last; bytes before pos_ are consumed
  size_t pos_ = 0;
};

// The text of one JSONL line, or why it has none.
absl::StatusOr<std::string> TextOfJsonLine(std::string_view line, const std::string& field) {
  nlohmann::json object;
  try {
    object = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {  // parse_error, and out_of_range for 1e309
    return absl::InvalidArgumentError(absl::StrCat("invalid JSON: ", e.what()));
  }
  if (!object.is_object()) return absl::InvalidArgumentError("not a JSON object");
  auto text = object.find(field);
  if (text == object.end()) return absl::InvalidArgumentError(absl::StrCat("no \"", field, "\" field"));
  if (!text->is_string()) return absl::InvalidArgumentError(absl::StrCat("\"", field, "\" is not a string"));
  return text->get<std::string>();
}

}  // namespace

// A file that holds many documents.
class DocumentReader::Source {
 public:
  virtual ~Source() = default;
  // The next document, nullopt at the end of the file.
  virtual absl::StatusOr<std::optional<std::string>> Next(DocumentReader& reader) = 0;
};

class DocumentReader::JsonlSource final : public DocumentReader::Source {
 public:
  JsonlSource(std::string path, std::unique_ptr<ZFile> file, std::string field)
      : path_(std::move(path)), file_(std::move(file)), field_(std::move(field)) {}

  // A malformed line is an error, or with skip_bad_lines is reported to the reader's warn_ and
  // skipped.
  absl::StatusOr<std::optional<std::string>> Next(DocumentReader& reader) override {
    std::string line;
    while (true) {
      absl::StatusOr<bool> more = file_->ReadLine(&line);
      if (!more.ok()) return more.status();
      if (!*more) return std::optional<std::string>();
      ++line_;
      if (absl::StripAsciiWhitespace(line).empty()) continue;
      absl::StatusOr<std::string> text = TextOfJsonLine(line, field_);
      if (text.ok()) return std::optional<std::string>(*std::move(text));
      const std::string problem = absl::StrCat(path_, ":", line_, ": ", text.status().message());
      if (!reader.skip_bad_lines_) return absl::InvalidArgumentError(problem);
      ++reader.skipped_lines_;
      if (reader.warn_) reader.warn_(problem);
    }
  }

 private:
  std::string path_;
  std::unique_ptr<ZFile> file_;
  std::string field_;
  int64_t line_ = 0;
};

// worker/data/parquet_text.py in a child process, its records read from a pipe.
class DocumentReader::ParquetSource final : public DocumentReader::Source {
 public:
  static absl::StatusOr<std::unique_ptr<ParquetSource>> Start(const std::string& path, const std::string& column) {
    const char* env_python = std::getenv("GPT2_PYTHON");
    const char* env_tool = std::getenv("GPT2_PARQUET_TOOL");
    const std::string python = env_python && *env_python ? env_python : GPT2D_PREP_PYTHON;
    const std::string tool = env_tool && *env_tool ? env_tool : GPT2D_PARQUET_TOOL;
    if (!fs::exists(tool))
      return absl::FailedPreconditionError(absl::StrCat(path, ": reading parquet needs parquet_text.py, not found at ",
                                                        tool, " (set GPT2_PARQUET_TOOL)"));
    int fds[2];
    if (::pipe(fds) != 0) return absl::ErrnoToStatus(errno, "pipe");
    posix_spawn_file_actions_t actions;
    posix_spawn_file_actions_init(&actions);
    posix_spawn_file_actions_adddup2(&actions, fds[1], STDOUT_FILENO);
    posix_spawn_file_actions_addclose(&actions, fds[0]);
    posix_spawn_file_actions_addclose(&actions, fds[1]);
    std::vector<std::string> args = {python, tool, path, column};
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    pid_t pid = 0;
    const int error = posix_spawnp(&pid, python.c_str(), &actions, nullptr, argv.data(), environ);
    posix_spawn_file_actions_destroy(&actions);
    ::close(fds[1]);
    if (error != 0) {
      ::close(fds[0]);
      return absl::FailedPreconditionError(absl::StrCat(path,
                                                        ": reading parquet needs Python with pyarrow; cannot run ",
                                                        python, ": ", std::strerror(error), " (set GPT2_PYTHON)"));
    }
    std::FILE* out = ::fdopen(fds[0], "rb");
    return std::unique_ptr<ParquetSource>(new ParquetSource(path, pid, out));
  }

  ~ParquetSource() override {
    if (out_ != nullptr) std::fclose(out_);
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);  // stopped early (an error downstream): nobody reads its output
      Wait();
    }
  }

  absl::StatusOr<std::optional<std::string>> Next(DocumentReader&) override {
    int64_t n = 0;
    const size_t got = std::fread(&n, 1, sizeof(n), out_);
    if (got == 0 && std::feof(out_)) {
      if (const int status = Wait(); status != 0)
        return absl::InternalError(
            absl::StrCat(path_, ": the parquet reader (parquet_text.py) exited with status ", status, "; see above"));
      return std::optional<std::string>();
    }
    if (got != sizeof(n)) return Truncated();
    if (n == -1) {  // an error record: its message, then the end
      int64_t m = 0;
      std::string message;
      if (std::fread(&m, 1, sizeof(m), out_) == sizeof(m) && m >= 0 && m < (1 << 20)) {
        message.resize(static_cast<size_t>(m));
        if (std::fread(message.data(), 1, message.size(), out_) != message.size()) message.clear();
      }
      Wait();
      if (message.empty()) return Truncated();
      return absl::InvalidArgumentError(message);
    }
    if (n < 0) return Truncated();
    std::string text(static_cast<size_t>(n), '\0');
    if (std::fread(text.data(), 1, text.size(), out_) != text.size()) return Truncated();
    return std::optional<std::string>(std::move(text));
  }

 private:
  ParquetSource(std::string path, pid_t pid, std::FILE* out) : path_(std::move(path)), pid_(pid), out_(out) {}

  absl::Status Truncated() {
    Wait();
    return absl::DataLossError(absl::StrCat(path_, ": the parquet reader's output ended mid-record"));
  }

  // Reaps the child once; its exit status (128 + signal if killed).
  int Wait() {
    if (pid_ <= 0) return exit_status_;
    int status = 0;
    while (::waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    pid_ = 0;
    exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    return exit_status_;
  }

  std::string path_;
  pid_t pid_ = 0;
  std::FILE* out_ = nullptr;
  int exit_status_ = 0;
};

DocumentReader::DocumentReader(DocumentReader&&) noexcept = default;
DocumentReader& DocumentReader::operator=(DocumentReader&&) noexcept = default;
DocumentReader::~DocumentReader() = default;

absl::StatusOr<DocumentReader> DocumentReader::Open(const std::vector<std::string>& inputs, bool skip_bad_lines,
                                                    WarningFn warn, std::string field) {
  DocumentReader reader;
  reader.skip_bad_lines_ = skip_bad_lines;
  reader.warn_ = std::move(warn);
  reader.field_ = std::move(field);
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
      if (IsListedFile(it->path()) && it->is_regular_file(file_error)) {
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
    if (source_ != nullptr) {
      absl::StatusOr<std::optional<std::string>> doc = source_->Next(*this);
      if (!doc.ok()) return doc.status();
      if (doc->has_value()) {
        bytes_read_ += static_cast<int64_t>((*doc)->size());
        return doc;
      }
      source_.reset();
    }
    if (next_file_ == files_.size()) return std::optional<std::string>();
    const std::string& path = files_[next_file_++];
    absl::StatusOr<Sniffed> sniffed = Sniff(path);
    if (!sniffed.ok()) return sniffed.status();
    if (sniffed->parquet) {
      absl::StatusOr<std::unique_ptr<ParquetSource>> source = ParquetSource::Start(path, field_);
      if (!source.ok()) return source.status();
      source_ = *std::move(source);
      continue;
    }
    absl::StatusOr<std::unique_ptr<ZFile>> file = ZFile::Open(path);
    if (!file.ok()) return file.status();
    if (IsJsonl(path)) {
      source_ = std::make_unique<JsonlSource>(path, *std::move(file), field_);
      continue;
    }
    absl::StatusOr<std::string> text = (*file)->ReadAll();
    if (!text.ok()) return text.status();
    if (absl::Status s = CheckText(path, *text); !s.ok()) return s;
    bytes_read_ += static_cast<int64_t>(text->size());
    return std::optional<std::string>(*std::move(text));
  }
}

}  // namespace gpt2
