// Byte-pair merging of one pre-tokenised piece, by rank, exactly as tiktoken's byte_pair_merge:
// start from single bytes; while some adjacent pair of parts concatenates to a token, join the
// pair whose token has the lowest rank (the leftmost such pair on a tie). Ranks are token ids.

#pragma once

#include <array>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <string_view>
#include <vector>

#include "absl/container/flat_hash_map.h"
#include "absl/strings/string_view.h"

namespace gpt2 {

// The rank of every mergeable token, looked up by its bytes. Immutable once built; const methods
// are safe to call concurrently.
class BpeRanks {
 public:
  using Rank = int32_t;
  static constexpr Rank kNoRank = std::numeric_limits<Rank>::max();

  // token_bytes[r] is the byte string of rank r. REQUIRES: the strings are distinct and non-empty.
  explicit BpeRanks(const std::vector<std::string>& token_bytes);

  // The rank of `bytes`, or kNoRank if it is not a token.
  Rank Lookup(std::string_view bytes) const {
    if (bytes.size() == 1) return byte_rank_[static_cast<uint8_t>(bytes[0])];
    if (bytes.size() == 2) return pair_rank_[PairIndex(bytes[0], bytes[1])];
    if (bytes.size() <= kInlineKeyBytes) return RankInline(InlineKey::Of(bytes));
    auto it = longer_.find(absl::string_view(bytes.data(), bytes.size()));
    return it == longer_.end() ? kNoRank : it->second;
  }

  // Appends the ranks of the tokens `piece` merges into. REQUIRES: every single byte of `piece`
  // is a token (Tokenizer checks this for all 256 bytes when it is built).
  void Merge(std::string_view piece, std::vector<Rank>* out) const;

 private:
  static size_t PairIndex(char a, char b) {
    return static_cast<size_t>(static_cast<uint8_t>(a)) << 8 | static_cast<uint8_t>(b);
  }

  // Nearly every lookup is for a string of at most 16 bytes. Those keys are stored in the slots of
  // an open-addressing table as two words plus the length, so a probe is two word compares with
  // no pointer to chase. Together with the length the words determine the string: they hold the
  // (overlapping) first and last 8 bytes, or 4 bytes for 4..7, or the bytes themselves for 1..3.
  static constexpr size_t kInlineKeyBytes = 16;
  struct InlineKey {
    uint64_t head = 0, tail = 0, length = 0;
    static InlineKey Of(std::string_view bytes) {
      InlineKey key;
      const char* p = bytes.data();
      const size_t n = bytes.size();
      key.length = n;
      if (n >= 8) {
        std::memcpy(&key.head, p, 8);
        std::memcpy(&key.tail, p + n - 8, 8);
      } else if (n >= 4) {
        uint32_t first, last;
        std::memcpy(&first, p, 4);
        std::memcpy(&last, p + n - 4, 4);
        key.head = first;
        key.tail = last;
      } else {
        for (size_t i = 0; i < n; ++i) {
          key.head |= uint64_t{static_cast<uint8_t>(p[i])} << (8 * i);
        }
      }
      return key;
    }
    uint64_t hash() const {  // murmur3's 64-bit finaliser over the mixed words
      uint64_t h = head ^ (tail * 0x9E3779B97F4A7C15ULL) ^ (length << 59);
      h ^= h >> 33;
      h *= 0xFF51AFD7ED558CCDULL;
      h ^= h >> 33;
      h *= 0xC4CEB9FE1A85EC53ULL;
      return h ^ (h >> 33);
    }
  };
  struct InlineSlot {
    uint64_t head, tail;
    uint32_t length;
    Rank rank;  // kNoRank: empty slot
  };
  Rank RankInline(const InlineKey& key) const {
    for (size_t i = key.hash() & inline_mask_;; i = (i + 1) & inline_mask_) {
      const InlineSlot& slot = inline_slots_[i];
      if (slot.head == key.head && slot.tail == key.tail && slot.length == key.length) {
        return slot.rank;
      }
      if (slot.rank == kNoRank) return kNoRank;
    }
  }
  void MergeShort(std::string_view piece, std::vector<Rank>* out) const;
  void MergeLong(std::string_view piece, std::vector<Rank>* out) const;

  // One- and two-byte tokens are looked up by table: the first round of merging only asks those.
  std::array<Rank, 256> byte_rank_;
  std::vector<Rank> pair_rank_;           // 65536 entries, indexed by PairIndex
  std::vector<InlineSlot> inline_slots_;  // tokens of 3..16 bytes; a power of two, under half full
  size_t inline_mask_ = 0;
  absl::flat_hash_map<std::string, Rank> longer_;  // tokens of more than 16 bytes
};

}  // namespace gpt2
