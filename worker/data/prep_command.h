// `gpt2-worker prep`: turns text into training shards (prep.h). The worker binary parses the flags
// into PrepOptions and calls RunPrepCommand:
//
//   gpt2-worker prep --out DIR [--name NAME] [--shard-tokens N] [--val-tokens N]
//                    [--format bin|npy] [--threads N] [--force] [--skip-bad-lines] INPUT...
//
// Progress and warnings go to `err`. On success one JSON line goes to `out`:
//   {"documents": D, "tokens": N, "shards": [paths...], "val_tokens": V, "train_tokens": N - V,
//    "skipped_lines": S}
// Exit status: 0 on success; 2 for bad options or input (a missing input, a malformed JSONL
// line, shards already present without --force, no documents); 1 for any other failure (I/O).

#ifndef GPT2D_WORKER_DATA_PREP_COMMAND_H_
#define GPT2D_WORKER_DATA_PREP_COMMAND_H_

#include <ostream>

#include "worker/data/prep.h"

namespace gpt2 {

// Loads the tokenizer named by options.vocab (LoadTokenizer) and runs PrepareShards.
int RunPrepCommand(const PrepOptions& options, std::ostream& out, std::ostream& err);

}  // namespace gpt2

#endif  // GPT2D_WORKER_DATA_PREP_COMMAND_H_
