// tokenizer_bench: encode speed of gpt2::Tokenizer on one file, single thread.
//
//   tokenizer_bench FILE [--iterations N] [--vocab PATH]
//
// Reads FILE, encodes all of it with encode_ordinary N times (default 5), and prints one JSON
// line: bytes, tokens, and the median iteration's MB/s and tokens/s.
// bench/tokenizer.py runs it next to tiktoken on the same text.

#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"

namespace {

int Usage() {
  std::cerr << "usage: tokenizer_bench FILE [--iterations N] [--vocab PATH]\n";
  return 64;
}

}  // namespace

int main(int argc, char** argv) {
  std::string file, vocab;
  int iterations = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--iterations" && i + 1 < argc) {
      iterations = std::atoi(argv[++i]);
    } else if (arg == "--vocab" && i + 1 < argc) {
      vocab = argv[++i];
    } else if (file.empty() && !arg.starts_with("--")) {
      file = arg;
    } else {
      return Usage();
    }
  }
  if (file.empty() || iterations < 1) return Usage();

  std::ifstream in(file, std::ios::binary);
  if (!in) {
    std::cerr << "tokenizer_bench: cannot read " << file << "\n";
    return 1;
  }
  std::stringstream contents;
  contents << in.rdbuf();
  const std::string text = std::move(contents).str();

  absl::StatusOr<gpt2::Tokenizer> tokenizer = gpt2::LoadTokenizer(vocab);
  if (!tokenizer.ok()) {
    std::cerr << "tokenizer_bench: " << tokenizer.status() << "\n";
    return 1;
  }

  // Each iteration runs on a new thread, so it starts with an empty piece cache (the cache is per
  // thread): repeating the same text must not make it look faster than one pass over new text.
  size_t tokens = 0;
  std::vector<double> seconds;
  for (int i = 0; i < iterations; ++i) {
    std::thread([&] {
      const auto start = std::chrono::steady_clock::now();
      tokens = tokenizer->EncodeOrdinary(text).size();
      seconds.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count());
    }).join();
  }
  std::sort(seconds.begin(), seconds.end());
  const double median = seconds[seconds.size() / 2];

  nlohmann::json report = {
      {"bench", "tokenizer"},
      {"impl", "gpt2d"},
      {"file", file},
      {"bytes", text.size()},
      {"tokens", tokens},
      {"iterations", iterations},
      {"median_s", median},
      {"mb_per_s", text.size() / median / 1e6},
      {"tokens_per_s", tokens / median},
  };
  std::cout << report.dump() << "\n";
  return 0;
}
