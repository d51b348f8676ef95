// The documents of a corpus, read one at a time from the inputs `gpt2-worker prep` is given:
//   a directory     every file below it (recursively) whose name ends in .txt, .md, .rst, .text or
//                   .parquet, in the byte order of their paths; other files are skipped;
//   a .jsonl file   one document per non-blank line, each line a JSON object with a string field
//                   named `field` ("text" by default; other fields are ignored);
//   a parquet file  one document per row of the column named `field` (FineWeb-EDU's "text"), row
//                   groups in order; read by worker/data/parquet_text.py through PyPI's pyarrow
//                   (Debian 12 packages no Arrow C++), a bounded batch at a time. Null cells are
//                   skipped. The Python is $GPT2_PYTHON, else the one the build used;
//   any other file  one document: its text.
// gzip-compressed files (.jsonl.gz, .txt.gz, ...) are read through zlib as if uncompressed; files
// in other compressed or archive formats (zstd, xz, bzip2, zip, 7z) are refused, naming the
// format, and so is a document that is not text: a NUL byte, or more than kMaxInvalidUtf8 of its
// bytes in ill-formed UTF-8 (a stray Latin-1 byte is tolerated; a binary file or UTF-16 is not).
// Documents come in the order of the inputs, so the same inputs always give the same corpus.
// Only the current file (or JSONL line, or parquet batch) is held in memory.

#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gpt2 {

// The file extensions taken from a directory.
inline constexpr const char* kTextExtensions[] = {".txt", ".md", ".rst", ".text", ".parquet"};

// The share of a text document's bytes that may be ill-formed UTF-8 (1 in 1,000).
inline constexpr double kMaxInvalidUtf8 = 0.001;

class DocumentReader {
 public:
  // Called for each malformed JSONL line skipped (with skip_bad_lines) with "file:line: problem".
  using WarningFn = std::function<void(const std::string&)>;

  // Lists the files of `inputs` (directories are walked now; files are opened as they are read).
  // With skip_bad_lines a malformed JSONL line is reported to `warn` and skipped; without, it
  // is an error. Errors: NotFound for an input that does not exist; the OS's error for a
  // directory that cannot be walked.
  // `field` names the JSONL field and the parquet column that hold the text.
  static absl::StatusOr<DocumentReader> Open(const std::vector<std::string>& inputs, bool skip_bad_lines,
                                             WarningFn warn, std::string field = "text");
  DocumentReader(DocumentReader&&) noexcept;
  DocumentReader& operator=(DocumentReader&&) noexcept;
  ~DocumentReader();

  // The next document, or nullopt at the end of the corpus.
  // Errors (each message starts with the file): a file that cannot be read; a malformed JSONL line
  // without skip_bad_lines (InvalidArgument "file:line: problem"); a compressed format other than
  // gzip, or content that is not text (InvalidArgument); a parquet file that is corrupt or lacks
  // the column, or no Python with pyarrow (InvalidArgument/FailedPrecondition).
  absl::StatusOr<std::optional<std::string>> Next();

  // The files that will be (or were) read, in order.
  const std::vector<std::string>& files() const { return files_; }
  // Bytes of document text returned so far.
  int64_t bytes_read() const { return bytes_read_; }
  // Malformed JSONL lines skipped so far.
  int64_t skipped_lines() const { return skipped_lines_; }

 private:
  DocumentReader() = default;
  // The file being read, when it holds many documents (documents.cc).
  class Source;
  class JsonlSource;
  class ParquetSource;

  std::vector<std::string> files_;
  bool skip_bad_lines_ = false;
  WarningFn warn_;
  std::string field_ = "text";
  size_t next_file_ = 0;
  std::unique_ptr<Source> source_;  // the JSONL or parquet file being read, if any
  int64_t bytes_read_ = 0;
  int64_t skipped_lines_ = 0;
};

}  // namespace gpt2
