#include "worker/data/loader.h"

#include <utility>

#include "absl/strings/str_cat.h"

namespace gpt2 {

absl::StatusOr<DataLoader> DataLoader::Create(std::vector<std::string> shard_paths, int64_t B, int64_t T, int rank,
                                              int world_size) {
  if (B < 1 || T < 1) {
    return absl::InvalidArgumentError(absl::StrCat("B and T must be positive, got B=", B, " T=", T));
  }
  if (world_size < 1 || rank < 0 || rank >= world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", rank, " is not in [0, world_size=", world_size, ")"));
  }
  if (shard_paths.empty()) return absl::InvalidArgumentError("the data loader has no shards");

  // One step of all ranks reads B*T*world_size tokens plus the last target.
  const int64_t step_tokens = B * T * world_size;
  DataLoader loader;
  for (const std::string& path : shard_paths) {
    absl::StatusOr<Shard> shard = Shard::Open(path);
    if (!shard.ok()) return shard.status();
    const auto length = static_cast<int64_t>(shard->tokens().size());
    if (length < step_tokens + 1) {
      return absl::InvalidArgumentError(
          absl::StrCat(path, ": ", length, " tokens, too few for one step of B*T*world_size + 1 = ", step_tokens + 1,
                       " (B=", B, " T=", T, " world_size=", world_size, ")"));
    }
    loader.lengths_.push_back(length);
  }
  loader.paths_ = std::move(shard_paths);
  loader.B_ = B;
  loader.T_ = T;
  loader.rank_ = rank;
  loader.world_size_ = world_size;
  loader.Reset();
  return loader;
}

void DataLoader::Reset() { position_ = {.shard = 0, .offset = B_ * T_ * rank_}; }

absl::Status DataLoader::Load(int64_t index) {
  if (shard_.has_value() && mapped_index_ == index) return absl::OkStatus();
  shard_.reset();  // unmap first: at most one shard mapped
  mapped_index_ = -1;
  absl::StatusOr<Shard> shard = Shard::Open(paths_[index]);
  if (!shard.ok()) return shard.status();
  if (static_cast<int64_t>(shard->tokens().size()) != lengths_[index]) {
    return absl::FailedPreconditionError(absl::StrCat(paths_[index], ": shard changed since the loader was created (",
                                                      lengths_[index], " tokens then, ", shard->tokens().size(),
                                                      " now)"));
  }
  shard_ = std::move(*shard);
  mapped_index_ = index;
  return absl::OkStatus();
}

absl::Status DataLoader::NextBatch(std::span<int64_t> x, std::span<int64_t> y) {
  const int64_t batch_tokens = B_ * T_;
  if (static_cast<int64_t>(x.size()) != batch_tokens || static_cast<int64_t>(y.size()) != batch_tokens) {
    return absl::InvalidArgumentError(
        absl::StrCat("next_batch needs B*T = ", batch_tokens, " values in x and y, got ", x.size(), " and ", y.size()));
  }
  if (absl::Status status = Load(position_.shard); !status.ok()) return status;

  // buf = tokens[pos : pos + B*T + 1]; x = buf[:-1], y = buf[1:]
  const std::span<const uint16_t> buf = shard_->tokens().subspan(position_.offset, batch_tokens + 1);
  for (int64_t i = 0; i < batch_tokens; ++i) {
    x[i] = buf[i];
    y[i] = buf[i + 1];
  }

  const int64_t step_tokens = batch_tokens * world_size_;
  position_.offset += step_tokens;
  if (position_.offset + step_tokens + 1 > lengths_[position_.shard]) {
    position_.shard = (position_.shard + 1) % static_cast<int64_t>(paths_.size());
    position_.offset = batch_tokens * rank_;
  }
  return absl::OkStatus();
}

absl::Status DataLoader::SetPosition(LoaderPosition position) {
  const auto n_shards = static_cast<int64_t>(paths_.size());
  if (position.shard < 0 || position.shard >= n_shards) {
    return absl::InvalidArgumentError(
        absl::StrCat("loader position: shard ", position.shard, " is not in [0, ", n_shards, ")"));
  }
  const int64_t start = B_ * T_ * rank_;
  const int64_t step_tokens = B_ * T_ * world_size_;
  const int64_t length = lengths_[position.shard];
  if (position.offset != start) {
    if (position.offset < start || (position.offset - start) % step_tokens != 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("loader position: offset ", position.offset, " is not B*T*rank + k*B*T*world_size = ", start,
                       " + k*", step_tokens, " (B=", B_, " T=", T_, " rank=", rank_, " world_size=", world_size_, ")"));
    }
    if (position.offset + step_tokens + 1 > length) {
      return absl::InvalidArgumentError(absl::StrCat("loader position: offset ", position.offset,
                                                     " is past the last step of shard ", position.shard, " (",
                                                     paths_[position.shard], ", ", length, " tokens)"));
    }
  }
  position_ = position;
  return absl::OkStatus();
}

}  // namespace gpt2
