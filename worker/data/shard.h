// Token shards: the files that hold a tokenized training corpus as uint16 GPT-2 token ids.
//
// Two formats, told apart by the file's first bytes (never by its name):
//   llm.c (.bin)  a header of 256 little-endian int32 (1024 bytes): [0] magic 20240520,
//                 [1] version 1, [2] token count, the rest 0; then `count` little-endian uint16.
//   NumPy (.npy)  what build-nanogpt's fineweb.py writes with np.save: a 1-D C-order array of
//                 little-endian uint16 ('<u2'), shape (N,), .npy format 1.0, 2.0 or 3.0 (npy.h).
// A shard holds whole corpora split anywhere: documents are separated by <|endoftext|> (50256),
// and one document may continue into the next shard.
//
// Every function returns errors as values and never crashes on a malformed file. Error messages
// start with the file's path.

#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gpt2 {

enum class ShardFormat { kLlmc, kNpy };

inline constexpr int32_t kLlmcShardMagic = 20240520;
inline constexpr int32_t kLlmcShardVersion = 1;
inline constexpr size_t kLlmcShardHeaderBytes = 256 * sizeof(int32_t);

// "bin" -> kLlmc, "npy" -> kNpy; anything else is InvalidArgument.
absl::StatusOr<ShardFormat> ParseShardFormat(std::string_view name);
// The file extension of a format, with its dot: ".bin" or ".npy".
std::string_view ShardExtension(ShardFormat format);

// Writes a shard incrementally to `path` + ".tmp" and renames it to `path` in Finish(), so that
// a file at `path` is always complete. Destroying a writer before Finish() succeeded removes the
// temporary file. Not thread-safe; move-only.
class ShardWriter {
 public:
  // Creates (or truncates) the temporary file and writes a provisional header.
  // Errors: the file cannot be created (the OS's reason).
  static absl::StatusOr<ShardWriter> Create(std::string path, ShardFormat format);

  ShardWriter(ShardWriter&& other) noexcept;
  ShardWriter& operator=(ShardWriter&& other) noexcept;
  ~ShardWriter();

  // Appends tokens. Errors: a write failure, more than 2^31 - 1 tokens in an llm.c shard (its
  // header holds the count as int32), or a call after Finish().
  absl::Status Append(std::span<const uint16_t> tokens);

  // Writes the final header, syncs the file to disk and renames it to path(). A shard may be
  // empty. Errors: a write, sync or rename failure; the temporary file is then removed.
  absl::Status Finish();

  const std::string& path() const { return path_; }
  int64_t token_count() const { return count_; }

 private:
  ShardWriter(std::string path, ShardFormat format, std::FILE* file);
  absl::Status WriteHeader();
  void Abandon();  // closes and removes the temporary file

  std::string path_;
  std::string temp_path_;
  ShardFormat format_;
  std::FILE* file_ = nullptr;  // null once finished or abandoned
  int64_t count_ = 0;
};

// Writes a whole shard at once (through a ShardWriter, so equally atomic).
absl::Status WriteShard(const std::string& path, ShardFormat format, std::span<const uint16_t> tokens);

// A read-only, memory-mapped shard. Opening validates the header and that the token count
// agrees exactly with the file's size; the tokens are paged in from disk as they are read.
// Move-only; const methods are safe to call from several threads.
class Shard {
 public:
  // Errors, each naming `path`: NotFound / PermissionDenied / ... if it cannot be opened or is
  // not a regular file; InvalidArgument for a bad magic, an unsupported version, an npy dtype,
  // order or shape other than a 1-D '<u2' vector, a header or data shorter than the header says
  // (truncated) or longer (trailing bytes).
  static absl::StatusOr<Shard> Open(const std::string& path);

  Shard(Shard&& other) noexcept;
  Shard& operator=(Shard&& other) noexcept;
  ~Shard();

  // The tokens; valid while this Shard lives.
  std::span<const uint16_t> tokens() const { return tokens_; }
  const std::string& path() const { return path_; }
  ShardFormat format() const { return format_; }

 private:
  Shard() = default;
  void Unmap();

  std::string path_;
  ShardFormat format_ = ShardFormat::kLlmc;
  void* mapping_ = nullptr;  // the whole file, or null for an empty mapping
  size_t mapping_bytes_ = 0;
  // Only used when an .npy file's data starts at an odd offset, where uint16 reads from the
  // mapping would be misaligned: the tokens are then copied here.
  std::vector<uint16_t> copy_;
  std::span<const uint16_t> tokens_;
};

// The shards of one split in `dir`, as build-nanogpt finds them: the regular files directly in
// `dir` whose name contains `split` (e.g. "train" or "val") and ends in ".bin" or ".npy", sorted
// by path (so shard 000000 comes first). Files are listed, not opened.
// Errors: NotFound if `dir` cannot be read or no file matches.
absl::StatusOr<std::vector<std::string>> ListShards(const std::string& dir, std::string_view split);

}  // namespace gpt2
