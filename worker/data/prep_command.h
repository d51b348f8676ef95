// `gpt2-worker prep`: turns text into training shards (prep.h). AddPrepCommand declares the flags;
// RunPrepCommand does the work:
//
//   gpt2-worker prep --out DIR [--name NAME] [--shard-tokens N] [--val-tokens N]
//                    [--format bin|npy] [--threads N] [--force] [--skip-bad-lines] [--column NAME] INPUT...
//
// Progress and warnings go to `err`. On success one JSON line goes to `out`:
//   {"documents": D, "tokens": N, "shards": [paths...], "val_tokens": V, "train_tokens": N - V,
//    "skipped_lines": S}
// Exit status: 0 on success; 2 for bad options or input (a missing input, a malformed JSONL
// line, a file that is not text or is compressed in a format prep does not read, a parquet file
// that is corrupt or lacks the column, shards already present without --force, no documents); 1
// for any other failure (I/O, no Python with pyarrow for parquet).

#pragma once

#include <ostream>

#include "worker/command.h"
#include "worker/data/prep.h"

namespace gpt2 {

// Loads the tokenizer named by options.vocab (LoadTokenizer) and runs PrepareShards.
int RunPrepCommand(const PrepOptions& options, std::ostream& out, std::ostream& err);

// Adds `prep` and its flags to `app` (worker/command.h).
WorkerCommand AddPrepCommand(CLI::App& app, const WorkerGlobals& globals);

}  // namespace gpt2
