// worker/data/documents: `gpt2-worker prep`'s JSONL input of arbitrary bytes gives its documents
// or an error naming the line; with skip_bad_lines every bad line is skipped and reported instead.
#include "tests/fuzz/fuzz_util.h"
#include "worker/data/documents.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace gpt2;
  const std::string path = fuzz::WriteFile("docs.jsonl", fuzz::AsText(data, size));
  for (bool skip : {false, true}) {
    int64_t warnings = 0;
    absl::StatusOr<DocumentReader> reader =
        DocumentReader::Open({path}, skip, [&](const std::string&) { ++warnings; });
    FUZZ_CHECK(reader.ok());
    int64_t bytes = 0;
    for (;;) {
      absl::StatusOr<std::optional<std::string>> doc = reader->Next();
      if (!doc.ok()) {
        FUZZ_CHECK(!skip && doc.status().code() == absl::StatusCode::kInvalidArgument);
        break;
      }
      if (!doc->has_value()) break;
      bytes += static_cast<int64_t>((*doc)->size());
    }
    FUZZ_CHECK(bytes == reader->bytes_read() && bytes <= static_cast<int64_t>(size));
    if (skip) FUZZ_CHECK(warnings == reader->skipped_lines());
  }
  return 0;
}
