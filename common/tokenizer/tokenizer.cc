#include "common/tokenizer/tokenizer.h"

#include <atomic>
#include <utility>

#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "common/tokenizer/bpe.h"
#include "common/tokenizer/pretokenizer.h"
#include "common/utf8.h"

namespace gpt2 {
namespace {

// Pieces that are not single tokens (about one in five in English prose) repeat a lot, so each
// thread remembers the ids of the ones it merged recently. Per thread, so no locking; keyed by
// vocabulary so that two tokenizers never see each other's entries.
class PieceCache {
 public:
  static constexpr size_t kMaxPieceBytes = 32;  // longer pieces are rare and not cached
  static constexpr size_t kMaxEntries = 1 << 16;

  static PieceCache& ForThread(uint64_t vocab_key) {
    thread_local PieceCache cache;
    if (cache.vocab_key_ != vocab_key) {
      cache.clear();
      cache.vocab_key_ = vocab_key;
    }
    return cache;
  }

  // Appends the cached ids of `piece` to `out`; false if it is not cached.
  bool lookup(std::string_view piece, std::vector<TokenId>* out) const {
    auto it = entries_.find(absl::string_view(piece.data(), piece.size()));
    if (it == entries_.end()) return false;
    out->insert(out->end(), ids_.begin() + it->second.first, ids_.begin() + it->second.first + it->second.second);
    return true;
  }

  void insert(std::string_view piece, const TokenId* ids, size_t count) {
    if (entries_.size() >= kMaxEntries) clear();  // crude, but the common pieces come right back
    entries_.emplace(std::string(piece),
                     std::make_pair(static_cast<uint32_t>(ids_.size()), static_cast<uint32_t>(count)));
    ids_.insert(ids_.end(), ids, ids + count);
  }

 private:
  void clear() {
    entries_.clear();
    ids_.clear();
  }

  uint64_t vocab_key_ = 0;
  absl::flat_hash_map<std::string, std::pair<uint32_t, uint32_t>> entries_;  // -> ids_
  std::vector<TokenId> ids_;
};

uint64_t NextVocabKey() {
  static std::atomic<uint64_t> counter{0};
  return ++counter;
}

}  // namespace

struct Tokenizer::Vocab {
  Vocab(const std::vector<std::string>& token_bytes, Pretokenizer split)
      : ranks(token_bytes), pretokenizer(std::move(split)) {
    eot = static_cast<TokenId>(token_bytes.size());
    offsets.reserve(token_bytes.size() + 2);
    for (const std::string& bytes : token_bytes) {
      offsets.push_back(static_cast<uint32_t>(all_bytes.size()));
      all_bytes += bytes;
    }
    offsets.push_back(static_cast<uint32_t>(all_bytes.size()));
    all_bytes += kEndOfText;
    offsets.push_back(static_cast<uint32_t>(all_bytes.size()));
  }

  std::string_view bytes_of(TokenId id) const {
    return std::string_view(all_bytes).substr(offsets[id], offsets[id + 1] - offsets[id]);
  }

  std::string all_bytes;          // every token's bytes back to back, by id, special included
  std::vector<uint32_t> offsets;  // token id's bytes are all_bytes[offsets[id], offsets[id+1])
  BpeRanks ranks;
  Pretokenizer pretokenizer;
  TokenId eot = 0;
  uint64_t cache_key = NextVocabKey();
};

absl::StatusOr<Tokenizer> Tokenizer::FromRanks(std::vector<std::string> token_bytes) {
  if (token_bytes.size() >= static_cast<size_t>(INT32_MAX) - 1) {
    return absl::InvalidArgumentError("vocabulary has too many tokens for 32-bit ids");
  }
  absl::flat_hash_map<absl::string_view, size_t> seen;
  seen.reserve(token_bytes.size());
  for (size_t r = 0; r < token_bytes.size(); ++r) {
    if (token_bytes[r].empty()) {
      return absl::InvalidArgumentError(absl::StrCat("token ", r, " is empty"));
    }
    auto [it, inserted] = seen.emplace(token_bytes[r], r);
    if (!inserted) {
      return absl::InvalidArgumentError(absl::StrCat("tokens ", it->second, " and ", r, " have the same bytes"));
    }
  }
  for (int b = 0; b < 256; ++b) {
    const char byte = static_cast<char>(b);
    if (!seen.contains(absl::string_view(&byte, 1))) {
      return absl::InvalidArgumentError(
          absl::StrCat("byte 0x", absl::Hex(b, absl::kZeroPad2), " has no token of its own"));
    }
  }
  absl::StatusOr<Pretokenizer> split = Pretokenizer::Create();
  if (!split.ok()) return split.status();
  return Tokenizer(std::make_shared<const Vocab>(token_bytes, *std::move(split)));
}

Tokenizer::Tokenizer(std::shared_ptr<const Vocab> vocab) : vocab_(std::move(vocab)) {}

int Tokenizer::vocab_size() const { return vocab_->eot + 1; }

TokenId Tokenizer::eot_token() const { return vocab_->eot; }

std::vector<TokenId> Tokenizer::EncodeOrdinary(std::string_view text) const {
  std::vector<TokenId> ids;
  if (ValidUtf8PrefixLength(text) == text.size()) {
    AppendOrdinary(text, &ids);
  } else {
    AppendOrdinary(ReplaceInvalidUtf8(text), &ids);
  }
  return ids;
}

std::vector<TokenId> Tokenizer::EncodePrompt(std::string_view text) const {
  std::vector<TokenId> ids = EncodeOrdinary(text);
  if (ids.empty()) ids.push_back(eot_token());
  return ids;
}

std::vector<TokenId> Tokenizer::Encode(std::string_view text, bool allow_special) const {
  if (!allow_special) return EncodeOrdinary(text);
  std::string repaired;
  if (ValidUtf8PrefixLength(text) != text.size()) {
    repaired = ReplaceInvalidUtf8(text);
    text = repaired;
  }
  std::vector<TokenId> ids;
  while (true) {
    const size_t at = text.find(kEndOfText);
    AppendOrdinary(text.substr(0, at), &ids);
    if (at == std::string_view::npos) break;
    ids.push_back(vocab_->eot);
    text.remove_prefix(at + kEndOfText.size());
  }
  return ids;
}

void Tokenizer::AppendOrdinary(std::string_view text, std::vector<TokenId>* out) const {
  out->reserve(out->size() + text.size() / 4 + 1);
  vocab_->pretokenizer.Split(text, [&](std::string_view piece) { AppendPiece(piece, out); });
}

void Tokenizer::AppendPiece(std::string_view piece, std::vector<TokenId>* out) const {
  const BpeRanks& ranks = vocab_->ranks;
  const TokenId direct = ranks.Lookup(piece);
  if (direct != BpeRanks::kNoRank) {
    out->push_back(direct);
    return;
  }
  if (piece.size() > PieceCache::kMaxPieceBytes) {
    ranks.Merge(piece, out);
    return;
  }
  PieceCache& cache = PieceCache::ForThread(vocab_->cache_key);
  if (cache.lookup(piece, out)) return;
  const size_t before = out->size();
  ranks.Merge(piece, out);
  cache.insert(piece, out->data() + before, out->size() - before);
}

absl::StatusOr<std::string_view> Tokenizer::TokenBytes(TokenId id) const {
  if (id < 0 || id > vocab_->eot) {
    return absl::OutOfRangeError(absl::StrCat("token id ", id, " is outside the vocabulary [0, ", vocab_size(), ")"));
  }
  return vocab_->bytes_of(id);
}

absl::StatusOr<std::string> Tokenizer::Decode(std::span<const TokenId> ids) const {
  size_t length = 0;
  for (size_t i = 0; i < ids.size(); ++i) {
    const TokenId id = ids[i];
    if (id < 0 || id > vocab_->eot) {
      return absl::OutOfRangeError(
          absl::StrCat("token id ", id, " at position ", i, " is outside the vocabulary [0, ", vocab_size(), ")"));
    }
    length += vocab_->offsets[id + 1] - vocab_->offsets[id];
  }
  std::string text;
  text.reserve(length);
  for (TokenId id : ids) text += vocab_->bytes_of(id);
  return text;
}

}  // namespace gpt2
