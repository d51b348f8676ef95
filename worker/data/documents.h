// The documents of a corpus, read one at a time from the inputs `gpt2-worker prep` is given:
//   a directory     every file below it (recursively) whose name ends in .txt, .md, .rst or .text,
//                   in the byte order of their paths; other files are skipped;
//   a .jsonl file   one document per non-blank line, each line a JSON object with a string field
//                   "text" (other fields are ignored);
//   any other file  one document: its bytes, as they are.
// Documents come in the order of the inputs, so the same inputs always give the same corpus.
// Only the current file (or JSONL line) is held in memory.

#ifndef GPT2D_WORKER_DATA_DOCUMENTS_H_
#define GPT2D_WORKER_DATA_DOCUMENTS_H_

#include <cstddef>
#include <cstdint>
#include <fstream>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gpt2 {

// The file extensions taken from a directory.
inline constexpr const char* kTextExtensions[] = {".txt", ".md", ".rst", ".text"};

class DocumentReader {
 public:
  // Called for each malformed JSONL line skipped (with skip_bad_lines) with "file:line: problem".
  using WarningFn = std::function<void(const std::string&)>;

  // Lists the files of `inputs` (directories are walked now; files are opened as they are read).
  // With skip_bad_lines a malformed JSONL line is reported to `warn` and skipped; without, it
  // is an error. Errors: NotFound for an input that does not exist; the OS's error for a
  // directory that cannot be walked.
  static absl::StatusOr<DocumentReader> Open(const std::vector<std::string>& inputs, bool skip_bad_lines,
                                             WarningFn warn);

  // The next document, or nullopt at the end of the corpus.
  // Errors: a file that cannot be read; a malformed JSONL line without skip_bad_lines
  // (InvalidArgument "file:line: problem").
  absl::StatusOr<std::optional<std::string>> Next();

  // The files that will be (or were) read, in order.
  const std::vector<std::string>& files() const { return files_; }
  // Bytes of document text returned so far.
  std::int64_t bytes_read() const { return bytes_read_; }
  // Malformed JSONL lines skipped so far.
  std::int64_t skipped_lines() const { return skipped_lines_; }

 private:
  DocumentReader() = default;

  std::vector<std::string> files_;
  bool skip_bad_lines_ = false;
  WarningFn warn_;
  std::size_t next_file_ = 0;
  // The JSONL file being read, if any.
  std::unique_ptr<std::ifstream> jsonl_;
  std::string jsonl_path_;
  std::int64_t jsonl_line_ = 0;
  std::int64_t bytes_read_ = 0;
  std::int64_t skipped_lines_ = 0;
};

}  // namespace gpt2

#endif  // GPT2D_WORKER_DATA_DOCUMENTS_H_
