// Data preparation: a corpus of documents (documents.h) -> GPT-2 token shards (shard.h), the way
// build-nanogpt's fineweb.py prepares FineWeb-EDU.
//
//   * Every document is preceded by <|endoftext|> (50256) and encoded with encode_ordinary (a
//     literal "<|endoftext|>" inside a document is ordinary text). Documents keep input order.
//   * Tokens fill shards exactly: a document may continue into the next shard. The first shard
//     is the validation shard and holds val_tokens tokens; then training shards of shard_tokens
//     tokens; the last one holds what is left. Names: <out_dir>/<name>_val_000000<ext>,
//     <name>_train_000001<ext>, <name>_train_000002<ext>, ...
//   * Documents are tokenized by `threads` threads; the output is byte-identical whatever the
//     number of threads. Memory stays bounded: documents are read as they are needed and only
//     a few batches of them are in flight.
//   * Each shard is written under a temporary name and renamed when complete.

#pragma once

#include <cstdint>
#include <ostream>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "common/tokenizer/tokenizer.h"

namespace gpt2 {

struct PrepOptions {
  std::vector<std::string> inputs;     // text, .jsonl(.gz) and parquet files, directories (documents.h)
  std::string out_dir;                 // created if missing
  std::string name = "shard";          // shard file prefix
  int64_t shard_tokens = 100'000'000;  // tokens per training shard
  int64_t val_tokens = 0;              // tokens in the validation shard; 0 = shard_tokens
  std::string format = "bin";          // "bin" (llm.c) or "npy" (NumPy)
  int threads = 0;                     // tokenizing threads; 0 = all cores
  bool force = false;                  // overwrite existing <name>_{val,train}_NNNNNN shards
  bool skip_bad_lines = false;         // skip malformed JSONL lines with a warning instead of failing
  std::string column = "text";         // the JSONL field / parquet column holding each document's text
  std::string vocab;                   // tokenizer file or directory; empty = LoadTokenizer's default
};

struct PrepResult {
  int64_t documents = 0;
  int64_t tokens = 0;  // val_tokens + train_tokens
  int64_t val_tokens = 0;
  int64_t train_tokens = 0;
  int64_t skipped_lines = 0;        // malformed JSONL lines skipped
  std::vector<std::string> shards;  // paths written, in order (the val shard first)
};

// Writes the shards of `options.inputs` with `tokenizer` (options.vocab is not used here).
// Progress and warnings go to `log` (progress at most about once a second).
// Without options.force, fails (AlreadyExists) before writing anything if out_dir already holds
// a shard of this name (<name>_val_* or <name>_train_* .bin/.npy); with force, such shards that
// this run did not rewrite are deleted once it has succeeded, so none is left from a longer run.
// Errors: InvalidArgument for bad options, a malformed JSONL line (file:line) or a token id
// over 65535; NotFound for a missing input or a corpus with no documents; the OS's errors. On
// error the shard being written is removed; shards already completed stay.
absl::StatusOr<PrepResult> PrepareShards(const Tokenizer& tokenizer, const PrepOptions& options, std::ostream& log);

}  // namespace gpt2
