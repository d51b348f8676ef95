// worker/data/documents: `gpt2-worker prep`'s JSONL input of arbitrary bytes gives its documents
// or an error naming the line; with skip_bad_lines every bad line is skipped and reported instead.
// Bytes that start like a compressed file are refused as a whole (zstd, xz, ...) or read through
// zlib (gzip, whose corrupt data is DataLoss); parquet goes to a Python child and is tested in
// tests/reference/test_prep_formats.py, not here.
#include <string_view>

#include "tests/fuzz/fuzz_util.h"
#include "worker/data/documents.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  const std::string_view text = fuzz::AsText(data, size);
  if (text.starts_with("PAR1")) return 0;
  const bool gzip = text.starts_with("\x1f\x8b");
  const std::string path = fuzz::WriteFile("docs.jsonl", text);
  for (bool skip : {false, true}) {
    int64_t warnings = 0;
    absl::StatusOr<DocumentReader> reader = DocumentReader::Open({path}, skip, [&](const std::string&) { ++warnings; });
    FUZZ_CHECK(reader.ok());
    int64_t bytes = 0;
    for (bool first = true;; first = false) {
      absl::StatusOr<std::optional<std::string>> doc = reader->Next();
      if (!doc.ok()) {
        const absl::StatusCode code = doc.status().code();
        FUZZ_CHECK(code == absl::StatusCode::kInvalidArgument || (gzip && code == absl::StatusCode::kDataLoss));
        FUZZ_CHECK(!skip || first || gzip);  // with skip only a whole-file refusal, before any document
        break;
      }
      if (!doc->has_value()) break;
      bytes += static_cast<int64_t>((*doc)->size());
    }
    FUZZ_CHECK(bytes == reader->bytes_read() && (gzip || bytes <= static_cast<int64_t>(size)));
    if (skip) FUZZ_CHECK(warnings == reader->skipped_lines());
  }
  return 0;
}
