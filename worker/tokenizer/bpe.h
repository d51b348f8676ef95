// Byte-pair merging of one pre-tokenised piece, by rank, exactly as tiktoken's byte_pair_merge:
// start from single bytes; while some adjacent pair of parts concatenates to a token, join the
// pair whose token has the lowest rank (the leftmost such pair on a tie). Ranks are token ids.

#ifndef GPT2D_WORKER_TOKENIZER_BPE_H_
#define GPT2D_WORKER_TOKENIZER_BPE_H_

#include <array>
#include <cstdint>
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
  using Rank = std::int32_t;
  static constexpr Rank kNoRank = std::numeric_limits<Rank>::max();

  // token_bytes[r] is the byte string of rank r. REQUIRES: the strings are distinct and non-empty.
  explicit BpeRanks(const std::vector<std::string>& token_bytes);

  // The rank of `bytes`, or kNoRank if it is not a token.
  Rank rank(std::string_view bytes) const {
    if (bytes.size() == 1) return byte_rank_[static_cast<std::uint8_t>(bytes[0])];
    if (bytes.size() == 2) return pair_rank_[PairIndex(bytes[0], bytes[1])];
    auto it = longer_.find(absl::string_view(bytes.data(), bytes.size()));
    return it == longer_.end() ? kNoRank : it->second;
  }

  // Appends the ranks of the tokens `piece` merges into. REQUIRES: every single byte of `piece`
  // is a token (Tokenizer checks this for all 256 bytes when it is built).
  void merge(std::string_view piece, std::vector<Rank>* out) const;

 private:
  static std::size_t PairIndex(char a, char b) {
    return static_cast<std::size_t>(static_cast<std::uint8_t>(a)) << 8 | static_cast<std::uint8_t>(b);
  }
  void merge_short(std::string_view piece, std::vector<Rank>* out) const;
  void merge_long(std::string_view piece, std::vector<Rank>* out) const;

  // One- and two-byte tokens are looked up by table: the first round of merging only asks those.
  std::array<Rank, 256> byte_rank_;
  std::vector<Rank> pair_rank_;  // 65536 entries, indexed by PairIndex
  absl::flat_hash_map<std::string, Rank> longer_;  // tokens of three bytes or more
};

}  // namespace gpt2

#endif  // GPT2D_WORKER_TOKENIZER_BPE_H_
