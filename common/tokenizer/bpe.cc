#include "common/tokenizer/bpe.h"

#include <functional>
#include <queue>
#include <utility>

#include "absl/container/inlined_vector.h"

namespace gpt2 {
namespace {

// Pieces up to this many bytes are merged by a linear scan for the lowest-ranked pair (as tiktoken
// does for all pieces); longer ones with a heap, so that a run of 100k digits is not quadratic.
// Both pick the same pair every round, so the result does not depend on the threshold.
constexpr size_t kLongPiece = 128;

}  // namespace

BpeRanks::BpeRanks(const std::vector<std::string>& token_bytes) : pair_rank_(65536, kNoRank) {
  byte_rank_.fill(kNoRank);
  size_t slots = 16;
  while (slots < 2 * token_bytes.size()) slots *= 2;
  inline_slots_.assign(slots, InlineSlot{0, 0, 0, kNoRank});
  inline_mask_ = slots - 1;
  for (size_t r = 0; r < token_bytes.size(); ++r) {
    const std::string& bytes = token_bytes[r];
    const Rank rank = static_cast<Rank>(r);
    if (bytes.size() == 1) {
      byte_rank_[static_cast<uint8_t>(bytes[0])] = rank;
    } else if (bytes.size() == 2) {
      pair_rank_[PairIndex(bytes[0], bytes[1])] = rank;
    } else if (bytes.size() <= kInlineKeyBytes) {
      const InlineKey key = InlineKey::Of(bytes);
      size_t i = key.hash() & inline_mask_;
      while (inline_slots_[i].rank != kNoRank) i = (i + 1) & inline_mask_;
      inline_slots_[i] = InlineSlot{key.head, key.tail, static_cast<uint32_t>(key.length), rank};
    } else {
      longer_.emplace(bytes, rank);
    }
  }
}

void BpeRanks::Merge(std::string_view piece, std::vector<Rank>* out) const {
  if (piece.size() <= 1) {
    if (!piece.empty()) out->push_back(Lookup(piece));
    return;
  }
  if (piece.size() < kLongPiece) {
    MergeShort(piece, out);
  } else {
    MergeLong(piece, out);
  }
}

void BpeRanks::MergeShort(std::string_view piece, std::vector<Rank>* out) const {
  // Parts in order: part k is piece[start[k], start[k+1]) and is token[k]; start has one extra
  // entry, the end. pair[k] is the rank of part k joined with part k+1, kNoRank if that is no
  // token.
  const size_t n = piece.size();
  absl::InlinedVector<uint32_t, kLongPiece + 1> start(n + 1);
  absl::InlinedVector<Rank, kLongPiece + 1> pair(n + 1, kNoRank);
  absl::InlinedVector<Rank, kLongPiece + 1> token(n + 1, kNoRank);
  for (size_t i = 0; i < n; ++i) {
    start[i] = static_cast<uint32_t>(i);
    token[i] = byte_rank_[static_cast<uint8_t>(piece[i])];
    if (i + 1 < n) pair[i] = pair_rank_[PairIndex(piece[i], piece[i + 1])];
  }
  start[n] = static_cast<uint32_t>(n);
  size_t entries = n + 1;

  // Rank of part k joined with the two parts after it, read before the second is removed.
  const auto rank_of_joined = [&](size_t k) {
    return k + 3 < entries ? Lookup(piece.substr(start[k], start[k + 3] - start[k])) : kNoRank;
  };
  while (true) {
    Rank best = kNoRank;
    size_t at = 0;
    for (size_t k = 0; k + 1 < entries; ++k) {
      if (pair[k] < best) {
        best = pair[k];
        at = k;
      }
    }
    if (best == kNoRank) break;
    // Join parts `at` and `at + 1` into token `best`.
    if (at > 0) pair[at - 1] = rank_of_joined(at - 1);
    pair[at] = rank_of_joined(at);
    token[at] = best;
    for (size_t k = at + 1; k + 1 < entries; ++k) {
      start[k] = start[k + 1];
      pair[k] = pair[k + 1];
      token[k] = token[k + 1];
    }
    --entries;
  }
  out->insert(out->end(), token.begin(), token.begin() + (entries - 1));
}

void BpeRanks::MergeLong(std::string_view piece, std::vector<Rank>* out) const {
  // Parts form a linked list keyed by their start offset; a min-heap of (pair rank, start) holds
  // candidate joins, and entries whose pair has changed since they were pushed are skipped. The
  // heap's order (lowest rank, then leftmost) is the order the linear scan would choose.
  const uint32_t n = static_cast<uint32_t>(piece.size());
  std::vector<uint32_t> next(n), prev(n);
  std::vector<Rank> pair(n, kNoRank), token(n);
  using Candidate = std::pair<Rank, uint32_t>;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<Candidate>> heap;
  for (uint32_t i = 0; i < n; ++i) {
    next[i] = i + 1;
    prev[i] = i - 1;  // wraps for i == 0; never read there
    token[i] = byte_rank_[static_cast<uint8_t>(piece[i])];
    if (i + 1 < n) {
      pair[i] = pair_rank_[PairIndex(piece[i], piece[i + 1])];
      if (pair[i] != kNoRank) heap.emplace(pair[i], i);
    }
  }
  // Rank of the part at `i` joined with the one after it.
  const auto rank_of_pair = [&](uint32_t i) {
    if (next[i] >= n) return kNoRank;
    const uint32_t end = next[next[i]];
    return Lookup(piece.substr(i, end - i));
  };
  while (!heap.empty()) {
    const auto [best, i] = heap.top();
    heap.pop();
    if (pair[i] != best) continue;  // stale: part i has changed (or was absorbed) since
    const uint32_t absorbed = next[i];
    token[i] = best;
    pair[absorbed] = kNoRank;
    next[i] = next[absorbed];
    if (next[i] < n) prev[next[i]] = i;
    pair[i] = rank_of_pair(i);
    if (pair[i] != kNoRank) heap.emplace(pair[i], i);
    if (i > 0) {
      const uint32_t before = prev[i];
      pair[before] = rank_of_pair(before);
      if (pair[before] != kNoRank) heap.emplace(pair[before], before);
    }
  }
  for (uint32_t i = 0; i < n; i = next[i]) out->push_back(token[i]);
}

}  // namespace gpt2
