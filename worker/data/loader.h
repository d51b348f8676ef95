// The distributed data loader: build-nanogpt's DataLoaderLite, batch for batch.
//
// Each of `world_size` ranks walks the same list of shards with its own loader:
//   Reset():      shard 0, position B*T*rank.
//   NextBatch(): buf = tokens[pos : pos + B*T + 1]; x = buf[:-1], y = buf[1:] (each B*T tokens,
//                 row-major (B,T)); then pos += B*T*world_size, and if
//                 pos + B*T*world_size + 1 > len(tokens), move to shard (shard + 1) % n_shards
//                 and pos = B*T*rank.
// So on each step the ranks read adjacent, non-overlapping B*T windows, and the tokens at the end
// of a shard that do not fill a whole step are skipped. As in build-nanogpt, a rank with a higher
// index may move to the next shard a step earlier than rank 0: every rank must save and restore
// its own position.
//
// At most one shard is mapped at a time (shard.h); it is loaded when first read from.
// A loader is not thread-safe; each rank owns one.

#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/data/shard.h"

namespace gpt2 {

// Where the next batch starts: the shard's index in the loader's list and the token offset in it.
struct LoaderPosition {
  int64_t shard = 0;
  int64_t offset = 0;
  bool operator==(const LoaderPosition&) const = default;
};

class DataLoader {
 public:
  // A loader at Reset() for `rank` of `world_size` over `shard_paths` (in this order; see
  // ListShards), batches of B rows of T tokens.
  // Opens every shard once to check it (and unmaps it again). Errors: InvalidArgument for
  // B < 1, T < 1, rank outside [0, world_size), no shards, or a shard with fewer than
  // B*T*world_size + 1 tokens (naming it); any error of Shard::Open.
  static absl::StatusOr<DataLoader> Create(std::vector<std::string> shard_paths, int64_t B, int64_t T, int rank,
                                           int world_size);

  // Back to shard 0, position B*T*rank.
  void Reset();

  // Fills x and y, each B*T values, with the next batch (see above) and advances.
  // Errors: InvalidArgument if x or y does not hold exactly B*T values (nothing advances);
  // a shard that cannot be opened again, or whose token count changed since Create
  // (FailedPrecondition): the position then stays where it was, so a retry reads the same batch.
  absl::Status NextBatch(std::span<int64_t> x, std::span<int64_t> y);

  // The position of the next batch, for checkpoints.
  LoaderPosition position() const { return position_; }

  // Moves to `position`, which must be one this loader can reach: shard in [0, n_shards), and
  // offset either B*T*rank or B*T*rank + k*B*T*world_size (k >= 1) with
  // offset + B*T*world_size + 1 <= the shard's length. Error (InvalidArgument, saying why)
  // otherwise, and the position is unchanged.
  absl::Status SetPosition(LoaderPosition position);

  int64_t B() const { return B_; }
  int64_t T() const { return T_; }
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  const std::vector<std::string>& shard_paths() const { return paths_; }

 private:
  DataLoader() = default;
  // Maps shard `index` (releasing any other first) unless it is already the mapped one.
  absl::Status Load(int64_t index);

  std::vector<std::string> paths_;
  std::vector<int64_t> lengths_;  // tokens in each shard, checked at Create
  int64_t B_ = 0, T_ = 0;
  int rank_ = 0, world_size_ = 1;
  LoaderPosition position_;
  std::optional<Shard> shard_;  // the mapped shard, if any
  int64_t mapped_index_ = -1;
};

}  // namespace gpt2
