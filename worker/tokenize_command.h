// `gpt2-worker tokenize`: text to ids and back on stdin/stdout, for scripts and for comparing
// with tiktoken. AddTokenizeCommand declares the flags; RunTokenizeCommand does the work.
//
//   (default)   all of stdin, as raw bytes, is one text; writes its ids space-separated + "\n".
//   --json      the same, written as a JSON array: "[15496, 995]\n".
//   --jsonl     each input line is a JSON string, or an object with a string field "text"; writes
//               one JSON array of ids per line, flushed line by line. Blank lines are skipped.
//   --allow-special   "<|endoftext|>" in the text becomes id 50256 (otherwise it is plain text).
//   --decode    stdin holds ids, whitespace-separated or as one JSON array; writes the decoded
//               bytes raw. With --jsonl, each line is a JSON array of ids and each output line is
//               the JSON string of its text (invalid UTF-8 shown as U+FFFD).
//
// Exit status: 0 on success; 2 for bad input (the message on `err` names the line: a bad JSON
// line, an id that is not a number or not in the vocabulary); 1 if writing the output fails.

#pragma once

#include <istream>
#include <ostream>

#include "common/tokenizer/tokenizer.h"
#include "worker/command.h"

namespace gpt2 {

struct TokenizeCommandOptions {
  bool json = false;           // --json
  bool jsonl = false;          // --jsonl
  bool allow_special = false;  // --allow-special
  bool decode = false;         // --decode
};

// Runs the command; `in` and `out` must be binary-safe (no newline translation).
int RunTokenizeCommand(const Tokenizer& tokenizer, const TokenizeCommandOptions& options, std::istream& in,
                       std::ostream& out, std::ostream& err);

// Adds `tokenize` to `app` (worker/command.h): loads the tokenizer globals.vocab names, then runs
// on stdin/stdout.
WorkerCommand AddTokenizeCommand(CLI::App& app, const WorkerGlobals& globals);

}  // namespace gpt2
