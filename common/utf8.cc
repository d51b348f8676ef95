#include "common/utf8.h"

#include <cstdint>
#include <cstring>

namespace gpt2 {
namespace {

enum class SequenceKind { kValid, kIllFormed, kTruncated };

struct Sequence {
  SequenceKind kind;
  size_t length;  // bytes it covers: the character, the maximal subpart, or the truncated tail
};

// Classifies the sequence that starts at bytes[pos] (Unicode Table 3-7).
Sequence NextSequence(std::string_view bytes, size_t pos) {
  const auto byte_at = [&](size_t i) { return static_cast<uint8_t>(bytes[i]); };
  const uint8_t lead = byte_at(pos);
  if (lead < 0x80) return {SequenceKind::kValid, 1};

  size_t need;                   // continuation bytes after the lead
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the first continuation byte
  if (lead >= 0xC2 && lead <= 0xDF) {
    need = 1;
  } else if (lead >= 0xE0 && lead <= 0xEF) {
    need = 2;
    if (lead == 0xE0) lo = 0xA0;  // no overlongs
    if (lead == 0xED) hi = 0x9F;  // no surrogates
  } else if (lead >= 0xF0 && lead <= 0xF4) {
    need = 3;
    if (lead == 0xF0) lo = 0x90;  // no overlongs
    if (lead == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return {SequenceKind::kIllFormed, 1};  // 0x80..0xC1, 0xF5..0xFF never start a sequence
  }

  for (size_t k = 1; k <= need; ++k) {
    if (pos + k >= bytes.size()) return {SequenceKind::kTruncated, k};
    const uint8_t b = byte_at(pos + k);
    const bool ok = (k == 1) ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xBF);
    if (!ok) return {SequenceKind::kIllFormed, k};
  }
  return {SequenceKind::kValid, need + 1};
}

// Skips ASCII eight bytes at a time; returns the first position at or after `pos` that is not.
size_t SkipAscii(std::string_view bytes, size_t pos) {
  while (pos + 8 <= bytes.size()) {
    uint64_t word;
    std::memcpy(&word, bytes.data() + pos, 8);
    if (word & 0x8080808080808080ULL) break;
    pos += 8;
  }
  while (pos < bytes.size() && static_cast<uint8_t>(bytes[pos]) < 0x80) ++pos;
  return pos;
}

}  // namespace

size_t ValidUtf8PrefixLength(std::string_view bytes) {
  size_t pos = 0;
  while (true) {
    pos = SkipAscii(bytes, pos);
    if (pos == bytes.size()) return pos;
    const Sequence seq = NextSequence(bytes, pos);
    if (seq.kind != SequenceKind::kValid) return pos;
    pos += seq.length;
  }
}

std::string ReplaceInvalidUtf8(std::string_view bytes) {
  size_t pos = ValidUtf8PrefixLength(bytes);
  std::string out(bytes.substr(0, pos));
  if (pos == bytes.size()) return out;
  out.reserve(bytes.size() + 16);
  while (pos < bytes.size()) {
    const Sequence seq = NextSequence(bytes, pos);
    if (seq.kind == SequenceKind::kValid) {
      out.append(bytes.substr(pos, seq.length));
    } else {
      out.append(kReplacementChar);  // a truncated tail at the very end is ill-formed too
    }
    pos += seq.length;
  }
  return out;
}

size_t FinalUtf8PrefixLength(std::string_view bytes) {
  // A truncated sequence is at most three bytes (a 4-byte lead and two continuations).
  const size_t n = bytes.size();
  const size_t window = n < 3 ? n : 3;
  for (size_t back = 1; back <= window; ++back) {
    const size_t start = n - back;
    if ((static_cast<uint8_t>(bytes[start]) & 0xC0) == 0x80) continue;  // not a lead byte
    // Every non-continuation byte starts a sequence in a forward scan, so `start` is a boundary.
    return NextSequence(bytes, start).kind == SequenceKind::kTruncated ? start : n;
  }
  return n;  // only continuation bytes at the end: a complete character or ill-formed ones
}

}  // namespace gpt2
