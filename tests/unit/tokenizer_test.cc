// Unit tests for the GPT-2 tokenizer (common/tokenizer). The expected ids come from tiktoken's
// "gpt2" encoding; tests/reference/test_tokenizer.py compares against tiktoken itself at scale.

#include "common/tokenizer/tokenizer.h"

#include <stdlib.h>

#include <filesystem>
#include <fstream>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "common/tokenizer/pretokenizer.h"
#include "common/tokenizer/stream_decoder.h"
#include "common/tokenizer/vocab_files.h"
#include "common/utf8.h"
#include "gtest/gtest.h"
#include "nlohmann/json.hpp"
#include "worker/tokenize_command.h"

namespace gpt2 {
namespace {

namespace fs = std::filesystem;
using Ids = std::vector<TokenId>;

const Tokenizer& Gpt2() {
  static const Tokenizer* tokenizer = [] {
    absl::StatusOr<Tokenizer> loaded = LoadTokenizer(GPT2D_DEFAULT_VOCAB);
    if (!loaded.ok()) {
      ADD_FAILURE() << loaded.status();
      std::abort();
    }
    return new Tokenizer(*std::move(loaded));
  }();
  return *tokenizer;
}

std::string Message(const absl::Status& status) { return std::string(status.message()); }

// A fresh directory under the test temp dir, removed with the object.
class TempDir {
 public:
  TempDir() {
    std::string pattern = (fs::path(::testing::TempDir()) / "tokenizer_test.XXXXXX").string();
    path_ = mkdtemp(pattern.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  // Writes `contents` to `name` in the directory and returns its path.
  std::string Write(const std::string& name, const std::string& contents) const {
    const std::string file = (path_ / name).string();
    std::ofstream(file, std::ios::binary) << contents;
    return file;
  }
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

// --- encoding
// -------------------------------------------------------------------------------------

TEST(TokenizerEncode, KnownIdsMatchTiktoken) {
  const Tokenizer& t = Gpt2();
  EXPECT_EQ(t.vocab_size(), 50257);
  EXPECT_EQ(t.eot_token(), 50256);
  EXPECT_EQ(t.EncodeOrdinary("Hello world"), (Ids{15496, 995}));
  EXPECT_EQ(t.EncodeOrdinary(""), Ids{});
  EXPECT_EQ(t.EncodeOrdinary(" "), Ids{220});
  EXPECT_EQ(t.EncodeOrdinary("\n\n"), Ids{628});
  EXPECT_EQ(t.EncodeOrdinary("It's"), (Ids{1026, 338}));
  EXPECT_EQ(t.EncodeOrdinary("I'll go"), (Ids{40, 1183, 467}));
  EXPECT_EQ(t.EncodeOrdinary("  hi"), (Ids{220, 23105}));
  EXPECT_EQ(t.EncodeOrdinary("1234567"), (Ids{10163, 2231, 3134}));
  EXPECT_EQ(t.EncodeOrdinary("\xF0\x9F\x99\x82"), (Ids{8582, 25081}));                       // 🙂
  EXPECT_EQ(t.EncodeOrdinary("\xE6\xBC\xA2\xE5\xAD\x97"), (Ids{162, 120, 95, 27764, 245}));  // 漢字
  EXPECT_EQ(t.EncodeOrdinary("a\xC2\x85"
                             "b"),
            (Ids{64, 126, 227, 65}));  // U+0085
}

TEST(TokenizerEncode, EndOfTextIsPlainTextUnlessAllowed) {
  const Tokenizer& t = Gpt2();
  const Ids as_text = {15496, 995, 27, 91, 437, 1659, 5239, 91, 29};
  EXPECT_EQ(t.EncodeOrdinary("Hello world<|endoftext|>"), as_text);
  EXPECT_EQ(t.Encode("Hello world<|endoftext|>", /*allow_special=*/false), as_text);
  EXPECT_EQ(t.Encode("Hello world<|endoftext|>", /*allow_special=*/true), (Ids{15496, 995, 50256}));
  EXPECT_EQ(t.Encode("a<|endoftext|>b", true), (Ids{64, 50256, 65}));
  EXPECT_EQ(t.Encode("<|endoftext|><|endoftext|>", true), (Ids{50256, 50256}));
  EXPECT_EQ(t.Encode("<|endoftext|", true), t.EncodeOrdinary("<|endoftext|"));
}

TEST(TokenizerEncode, InvalidUtf8BecomesReplacementCharacter) {
  const Tokenizer& t = Gpt2();
  EXPECT_EQ(t.EncodeOrdinary("\xEF\xBF\xBD"), Ids{4210});
  EXPECT_EQ(t.EncodeOrdinary("\xFF"), Ids{4210});
  EXPECT_EQ(t.EncodeOrdinary("a\xE2\x82"
                             "b"),
            t.EncodeOrdinary("a\xEF\xBF\xBD"
                             "b"));
  EXPECT_EQ(t.Encode("\xFF<|endoftext|>", true), (Ids{4210, 50256}));
}

TEST(TokenizerEncode, LongRunsAreFastAndRoundTrip) {
  // One piece each, of 100k bytes or more; the token counts are tiktoken's.
  const Tokenizer& t = Gpt2();
  const std::pair<std::string, size_t> cases[] = {
      {std::string(100000, ' '), 100000},  // GPT-2 has no token for a run of spaces
      {std::string(100000, '7'), 50000},
      {std::string(100000, 'a') + std::string(50001, '\n'), 50001},
  };
  for (const auto& [text, count] : cases) {
    const Ids ids = t.EncodeOrdinary(text);
    EXPECT_EQ(ids.size(), count);
    EXPECT_EQ(*t.Decode(ids), text);
  }
}

// tiktoken's byte_pair_merge written the slow, obvious way: the reference for pieces of 128
// bytes and more, which the tokenizer merges with a heap rather than by rescanning.
Ids ReferenceMerge(const std::string& piece) {
  static const auto* rank_of = [] {
    auto* ranks = new std::unordered_map<std::string, TokenId>;
    for (TokenId id = 0; id < Gpt2().eot_token(); ++id) {
      (*ranks)[std::string(*Gpt2().TokenBytes(id))] = id;
    }
    return ranks;
  }();
  std::vector<std::string> parts;
  for (char c : piece) parts.emplace_back(1, c);
  while (true) {
    TokenId best = -1;
    size_t at = 0;
    for (size_t i = 0; i + 1 < parts.size(); ++i) {
      auto it = rank_of->find(parts[i] + parts[i + 1]);
      if (it != rank_of->end() && (best < 0 || it->second < best)) {
        best = it->second;
        at = i;
      }
    }
    if (best < 0) break;
    parts[at] += parts[at + 1];
    parts.erase(parts.begin() + at + 1);
  }
  Ids ids;
  for (const std::string& part : parts) ids.push_back(rank_of->at(part));
  return ids;
}

TEST(TokenizerEncode, PiecesOfAnyLengthMergeLikeTheReference) {
  std::mt19937 rng(7);
  const std::string letters = "etaoinshrdlu";
  for (int round = 0; round < 40; ++round) {
    std::string piece(100 + rng() % 300, ' ');  // one piece: letters only
    for (char& c : piece) c = letters[rng() % letters.size()];
    EXPECT_EQ(Gpt2().EncodeOrdinary(piece), ReferenceMerge(piece)) << piece;
  }
}

TEST(TokenizerEncode, ConcurrentCallsAgree) {
  const Tokenizer& t = Gpt2();
  std::string text;
  for (int i = 0; i < 200; ++i) {
    text += "Thread " + std::to_string(i) + " encodes the same words, again and again: \xCE\xB1\xCE\xB2\n";
  }
  const Ids expected = t.EncodeOrdinary(text);
  std::vector<std::thread> threads;
  std::vector<int> mismatches(8, 0);
  for (int k = 0; k < 8; ++k) {
    threads.emplace_back([&, k] {
      for (int round = 0; round < 20; ++round) mismatches[k] += t.EncodeOrdinary(text) != expected;
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (int m : mismatches) EXPECT_EQ(m, 0);
}

// --- decoding
// -------------------------------------------------------------------------------------

TEST(TokenizerDecode, RoundTripsText) {
  const Tokenizer& t = Gpt2();
  for (const std::string text :
       {"Hello world", "  leading spaces\n\n\ttabs", "\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x9A\x80 emoji",
        "\xE6\xBC\xA2\xE5\xAD\x97 and \xD9\x85\xD8\xB1\xD8\xAD\xD8\xA8\xD8\xA7", "<|endoftext|>"}) {
    EXPECT_EQ(*t.Decode(t.Encode(text, true)), text);
    EXPECT_EQ(*t.Decode(t.EncodeOrdinary(text)), text);
  }
}

TEST(TokenizerDecode, RejectsIdsOutsideTheVocabulary) {
  const Tokenizer& t = Gpt2();
  EXPECT_EQ(t.Decode(Ids{15496, 50257}).status().code(), absl::StatusCode::kOutOfRange);
  EXPECT_NE(Message(t.Decode(Ids{15496, -1}).status()).find("-1"), std::string::npos);
  EXPECT_FALSE(t.TokenBytes(50257).ok());
  EXPECT_EQ(*t.TokenBytes(50256), "<|endoftext|>");
  EXPECT_EQ(*t.TokenBytes(995), " world");
}

TEST(TokenizerDecode, PartialCharactersDecodeToRawBytes) { EXPECT_EQ(*Gpt2().Decode(Ids{8582}), "\xF0\x9F"); }

// --- UTF-8 repair
// ---------------------------------------------------------------------------------

TEST(Utf8, ReplacesMaximalSubpartsLikePython) {
  const std::string r(kReplacementChar);
  EXPECT_EQ(ReplaceInvalidUtf8("plain"), "plain");
  EXPECT_EQ(ReplaceInvalidUtf8("\xE2\x82"), r);  // truncated: one U+FFFD
  EXPECT_EQ(ReplaceInvalidUtf8("\xE2\x82"
                               "A"),
            r + "A");
  EXPECT_EQ(ReplaceInvalidUtf8("\xF0\x80\x80"), r + r + r);          // overlong: each byte
  EXPECT_EQ(ReplaceInvalidUtf8("\xED\xA0\x80"), r + r + r);          // surrogate
  EXPECT_EQ(ReplaceInvalidUtf8("\xF4\x90\x80\x80"), r + r + r + r);  // above U+10FFFF
  EXPECT_EQ(ReplaceInvalidUtf8("\xC0\xAF"), r + r);
  EXPECT_EQ(ReplaceInvalidUtf8("\xF0\x9F\x98"), r);
  EXPECT_EQ(ReplaceInvalidUtf8(std::string("\0\x80", 2)), std::string("\0", 1) + r);
}

TEST(Utf8, FinalPrefixHoldsBackOnlyTruncatedSequences) {
  EXPECT_EQ(FinalUtf8PrefixLength("ab\xF0\x9F\x98"), 2u);
  EXPECT_EQ(FinalUtf8PrefixLength("ab\xF0\x9F\x98\x82"), 6u);
  EXPECT_EQ(FinalUtf8PrefixLength("ab\xE2"), 2u);
  EXPECT_EQ(FinalUtf8PrefixLength("ab\x80"), 3u);      // lone continuation: final (ill-formed)
  EXPECT_EQ(FinalUtf8PrefixLength("ab\xE0\x80"), 4u);  // can never complete: final
  EXPECT_EQ(FinalUtf8PrefixLength(""), 0u);
}

// --- stream decoding
// ------------------------------------------------------------------------------

std::string StreamAll(const Ids& ids, std::vector<std::string>* deltas = nullptr) {
  StreamDecoder stream(Gpt2());
  std::string text;
  for (TokenId id : ids) {
    const std::string delta = *stream.Push(id);
    if (deltas != nullptr) deltas->push_back(delta);
    text += delta;
  }
  return text + stream.Finish();
}

TEST(StreamDecoder, HoldsBackEmojiSplitAcrossTokens) {
  const Ids ids = {8582, 25081};  // 🙂 as two tokens: F0 9F | 99 82
  std::vector<std::string> deltas;
  EXPECT_EQ(StreamAll(ids, &deltas), "\xF0\x9F\x99\x82");
  EXPECT_EQ(deltas, (std::vector<std::string>{"", "\xF0\x9F\x99\x82"}));
}

TEST(StreamDecoder, EveryDeltaIsWholeCharacters) {
  const std::string text =
      "\xE6\xBC\xA2\xE5\xAD\x97 "
      "\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91\xA9\xE2\x80\x8D\xF0\x9F\x91"
      "\xA7 na\xC3\xAFve \xE0\xA4\xA8\xE0\xA4\xAE\xE0\xA4\xB8\xE0\xA5\x8D\xE0\xA4\xA4\xE0\xA5\x87";
  std::vector<std::string> deltas;
  EXPECT_EQ(StreamAll(Gpt2().EncodeOrdinary(text), &deltas), text);
  for (const std::string& delta : deltas) EXPECT_EQ(ValidUtf8PrefixLength(delta), delta.size());
}

// The id of the token that is the single byte `b`.
TokenId ByteToken(char b) {
  for (TokenId id = 0; id < 256; ++id) {
    if (*Gpt2().TokenBytes(id) == std::string_view(&b, 1)) return id;
  }
  ADD_FAILURE() << "no token for byte " << static_cast<int>(b);
  return 0;
}

TEST(StreamDecoder, InvalidBytesBecomeReplacementCharacters) {
  const std::string r(kReplacementChar);
  // A lone continuation byte, then the first half of 🙂 with nothing after it.
  EXPECT_EQ(StreamAll({ByteToken('\x80'), 8582}), r + r);
  // A lead byte followed by ASCII: replaced as soon as the ASCII arrives.
  std::vector<std::string> deltas;
  EXPECT_EQ(StreamAll({ByteToken('\xE2'), ByteToken('\x82'), 64}, &deltas), r + "a");
  EXPECT_EQ(deltas, (std::vector<std::string>{"", "", r + "a"}));
  StreamDecoder stream(Gpt2());
  EXPECT_FALSE(stream.Push(50257).ok());
  EXPECT_EQ(stream.pending_bytes(), 0u);
}

TEST(StreamDecoder, MatchesReplacementDecodingOfAnyTokenSequence) {
  // Ids below 256 are the single bytes, continuation and lead bytes among them: windows of ids
  // there and just above mix them into broken UTF-8 of every kind.
  for (TokenId start = 0; start < 400; start += 7) {
    Ids ids;
    for (TokenId id = start; id < start + 40; ++id) ids.push_back(id);
    EXPECT_EQ(StreamAll(ids), ReplaceInvalidUtf8(*Gpt2().Decode(ids))) << "start " << start;
  }
}

// --- pre-tokenisation
// -----------------------------------------------------------------------------

std::vector<std::string> Pieces(std::string_view text) {
  static const Pretokenizer* split = new Pretokenizer(*Pretokenizer::Create());
  std::vector<std::string> pieces;
  split->Split(text, [&](std::string_view piece) { pieces.emplace_back(piece); });
  return pieces;
}

TEST(Pretokenizer, SplitsLikeTheGpt2Pattern) {
  using P = std::vector<std::string>;
  EXPECT_EQ(Pieces("Hello world's  test!!\n\n"), (P{"Hello", " world", "'s", " ", " test", "!!", "\n\n"}));
  EXPECT_EQ(Pieces("abc 123 4.5"), (P{"abc", " 123", " 4", ".", "5"}));
  EXPECT_EQ(Pieces("a  \n b"), (P{"a", "  \n", " b"}));
}

TEST(Pretokenizer, UsesUnicodeWhiteSpaceAsTiktokenDoes) {
  using P = std::vector<std::string>;
  // NEL is a space; only U+0020 joins the word after it.
  EXPECT_EQ(Pieces("a\xC2\x85\xC2\x85"
                   "b"),
            (P{"a", "\xC2\x85", "\xC2\x85", "b"}));
  // U+180E is not White_Space (PCRE2's \s says it is): it is punctuation-like "other".
  EXPECT_EQ(Pieces(" \xE1\xA0\x8E!"), (P{" \xE1\xA0\x8E!"}));
  EXPECT_EQ(Pieces("x\xE3\x80\x80\xE3\x80\x80y"), (P{"x", "\xE3\x80\x80", "\xE3\x80\x80", "y"}));
  EXPECT_EQ(Pieces("x  y"), (P{"x", " ", " y"}));
}

TEST(Pretokenizer, KnowsUnicode16LettersAndDigits) {
  using P = std::vector<std::string>;
  EXPECT_EQ(Pieces("a\xE1\xB2\x89"
                   "b"),
            (P{"a\xE1\xB2\x89"
               "b"}));  // U+1C89, Unicode 16
  EXPECT_EQ(Pieces("a\xF0\xB1\x8D\x90"
                   "b"),
            (P{"a\xF0\xB1\x8D\x90"
               "b"}));                                               // U+31350, Unicode 15
  EXPECT_EQ(Pieces("1\xF0\x9D\x8B\x80"), (P{"1\xF0\x9D\x8B\x80"}));  // U+1D2C0, a digit
}

// --- vocabulary files
// -----------------------------------------------------------------------------

// The tiktoken file as text, with `line` (1-based) replaced.
std::string TiktokenWithLine(int line, const std::string& replacement) {
  std::ifstream in(GPT2D_DEFAULT_VOCAB, std::ios::binary);
  std::stringstream out;
  std::string current;
  for (int n = 1; std::getline(in, current); ++n) out << (n == line ? replacement : current) << "\n";
  return out.str();
}

TEST(VocabFiles, ReadsTheTiktokenFile) {
  absl::StatusOr<std::vector<std::string>> tokens = ReadTiktokenFile(GPT2D_DEFAULT_VOCAB);
  ASSERT_TRUE(tokens.ok()) << tokens.status();
  EXPECT_EQ(tokens->size(), 50256u);
  EXPECT_EQ((*tokens)[15496], "Hello");
}

TEST(VocabFiles, MalformedTiktokenFilesNameFileAndLine) {
  TempDir dir;
  struct Case {
    std::string name, contents, message;
  };
  const std::vector<Case> cases = {
      {"bad_base64", TiktokenWithLine(3, "!!!! 2"), ":3: '!!!!' is not valid base64"},
      {"missing_rank", TiktokenWithLine(5, "Jg=="), ":5: expected '<base64 bytes> <rank>'"},
      {"bad_rank", TiktokenWithLine(6, "Jw== six"), ":6: rank 'six'"},
      {"duplicate_rank", TiktokenWithLine(7, "KA== 5"), ":7: rank 5 already given on line 6"},
      {"duplicate_bytes", TiktokenWithLine(8, "IQ== 7"), ":8: token 'IQ==' already given on line 1"},
      {"gap", TiktokenWithLine(10, "Kg== 50256"), "rank 9 is missing"},
      {"huge_rank", TiktokenWithLine(10, "KQ== 2000000000"), ":10: rank 2000000000 is beyond"},
      {"empty", "", "no tokens"},
  };
  for (const Case& c : cases) {
    const std::string path = dir.Write(c.name + ".tiktoken", c.contents);
    absl::StatusOr<std::vector<std::string>> tokens = ReadTiktokenFile(path);
    ASSERT_FALSE(tokens.ok()) << c.name;
    EXPECT_EQ(tokens.status().code(), absl::StatusCode::kInvalidArgument) << c.name;
    EXPECT_NE(Message(tokens.status()).find(path), std::string::npos) << tokens.status();
    EXPECT_NE(Message(tokens.status()).find(c.message), std::string::npos) << tokens.status();
  }
  absl::StatusOr<std::vector<std::string>> missing = ReadTiktokenFile(dir.path() + "/nope.tiktoken");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(Message(missing.status()).find("nope.tiktoken"), std::string::npos);
  EXPECT_FALSE(ReadTiktokenFile(dir.path()).ok());  // a directory
}

TEST(VocabFiles, TokenizerNeedsEveryByte) {
  std::vector<std::string> tokens;
  for (int b = 0; b < 255; ++b) tokens.emplace_back(1, static_cast<char>(b));
  EXPECT_FALSE(Tokenizer::FromRanks(tokens).ok());
  tokens.emplace_back(1, '\xFF');
  EXPECT_TRUE(Tokenizer::FromRanks(tokens).ok());
  tokens.emplace_back("a");
  EXPECT_FALSE(Tokenizer::FromRanks(tokens).ok());  // listed twice
}

TEST(VocabFiles, StandInsRoundTrip) {
  EXPECT_EQ(BytesToGpt2Unicode(" "), "\xC4\xA0");   // U+0120
  EXPECT_EQ(BytesToGpt2Unicode("\n"), "\xC4\x8A");  // U+010A
  EXPECT_EQ(BytesToGpt2Unicode("Hi!"), "Hi!");
  std::string all;
  for (int b = 0; b < 256; ++b) all += static_cast<char>(b);
  EXPECT_EQ(*Gpt2UnicodeToBytes(BytesToGpt2Unicode(all)), all);
  EXPECT_FALSE(Gpt2UnicodeToBytes("\xE2\x82\xAC").ok());  // U+20AC stands for no byte
  EXPECT_FALSE(Gpt2UnicodeToBytes(" ").ok());             // a space is not a stand-in
}

// Writes the tiktoken vocabulary as encoder.json + merges under the given names. Each merge is
// a split of the token into two tokens of lower rank, which is what vocab.bpe lists.
void WriteEncoderJsonForm(const TempDir& dir, const std::string& json_name, const std::string& merges_name) {
  const std::vector<std::string> tokens = *ReadTiktokenFile(GPT2D_DEFAULT_VOCAB);
  std::unordered_map<std::string, size_t> rank_of;
  nlohmann::json encoder = nlohmann::json::object();
  std::string merges = "#version: 0.2\n";
  for (size_t r = 0; r < tokens.size(); ++r) {
    const std::string& token = tokens[r];
    encoder[BytesToGpt2Unicode(token)] = r;
    rank_of[token] = r;
    if (token.size() == 1) continue;
    for (size_t cut = 1; cut < token.size(); ++cut) {
      auto left = rank_of.find(token.substr(0, cut)), right = rank_of.find(token.substr(cut));
      if (left != rank_of.end() && right != rank_of.end()) {
        merges += BytesToGpt2Unicode(left->first) + " " + BytesToGpt2Unicode(right->first) + "\n";
        break;
      }
    }
  }
  encoder["<|endoftext|>"] = tokens.size();
  dir.Write(json_name, encoder.dump());
  dir.Write(merges_name, merges);
}

TEST(VocabFiles, EncoderJsonFormEqualsTiktokenForm) {
  TempDir dir;
  WriteEncoderJsonForm(dir, "encoder.json", "vocab.bpe");
  absl::StatusOr<std::vector<std::string>> from_json =
      ReadEncoderJsonFiles(dir.path() + "/encoder.json", dir.path() + "/vocab.bpe");
  ASSERT_TRUE(from_json.ok()) << from_json.status();
  EXPECT_EQ(*from_json, *ReadTiktokenFile(GPT2D_DEFAULT_VOCAB));

  absl::StatusOr<Tokenizer> loaded = LoadTokenizer(dir.path());
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  const std::string text = "Hello world, it's \xE6\xBC\xA2\xE5\xAD\x97 <|endoftext|> 12345";
  EXPECT_EQ(loaded->Encode(text, true), Gpt2().Encode(text, true));
}

TEST(VocabFiles, MalformedMergesNameFileAndLine) {
  TempDir dir;
  WriteEncoderJsonForm(dir, "encoder.json", "vocab.bpe");
  std::ifstream in(dir.path() + "/vocab.bpe");
  std::vector<std::string> lines;
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  const auto merges_with = [&](size_t line, const std::string& replacement) {
    std::string out;
    for (size_t n = 0; n < lines.size(); ++n) out += (n + 1 == line ? replacement : lines[n]) + "\n";
    return out;
  };
  const std::string json = dir.path() + "/encoder.json";
  struct Case {
    std::string contents, message;
  };
  for (const Case& c : std::vector<Case>{
           {merges_with(4, "onlyone"), ":4: expected '<token> <token>'"},
           {merges_with(5, "\xE2\x82\xAC x"), ":5: merges a token that is not in the vocabulary"},
           {merges_with(6, "\xC4\x80 \xC4\x80"), ":6: merges into a token that is not in the vocabulary"},
           {merges_with(3, lines[7]), ":4: merge into id"},  // line 3 now makes a later token
       }) {
    const std::string path = dir.Write("bad.bpe", c.contents);
    absl::StatusOr<std::vector<std::string>> tokens = ReadEncoderJsonFiles(json, path);
    ASSERT_FALSE(tokens.ok()) << c.message;
    EXPECT_NE(Message(tokens.status()).find(path + c.message), std::string::npos) << tokens.status();
  }
  const std::string bad_json = dir.Write("bad.json", "{\"a\": 0, \"b\": ");
  absl::StatusOr<std::vector<std::string>> tokens = ReadEncoderJsonFiles(bad_json, dir.path() + "/vocab.bpe");
  ASSERT_FALSE(tokens.ok());
  EXPECT_NE(Message(tokens.status()).find("bad.json: not valid JSON"), std::string::npos);
}

// --- finding the vocabulary
// -----------------------------------------------------------------------

TEST(LoadTokenizer, FindsEveryForm) {
  TempDir tiktoken_dir, openai_dir, hf_dir;
  fs::copy_file(GPT2D_DEFAULT_VOCAB, tiktoken_dir.path() + "/gpt2.tiktoken");
  WriteEncoderJsonForm(openai_dir, "encoder.json", "vocab.bpe");
  WriteEncoderJsonForm(hf_dir, "vocab.json", "merges.txt");
  for (const std::string& path :
       {std::string(GPT2D_DEFAULT_VOCAB), tiktoken_dir.path(), openai_dir.path(), hf_dir.path()}) {
    absl::StatusOr<Tokenizer> loaded = LoadTokenizer(path);
    ASSERT_TRUE(loaded.ok()) << path << ": " << loaded.status();
    EXPECT_EQ(loaded->EncodeOrdinary("Hello world"), (Ids{15496, 995}));
  }
}

TEST(LoadTokenizer, UsesEnvironmentThenDefault) {
  TempDir empty;
  ASSERT_EQ(setenv("GPT2_VOCAB", empty.path().c_str(), 1), 0);
  absl::StatusOr<Tokenizer> from_env = LoadTokenizer("");
  EXPECT_EQ(from_env.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(Message(from_env.status()).find("$GPT2_VOCAB"), std::string::npos);
  EXPECT_NE(Message(from_env.status()).find("gpt2.tiktoken"), std::string::npos);
  EXPECT_NE(Message(from_env.status()).find("vocab.json + merges.txt"), std::string::npos);
  EXPECT_TRUE(LoadTokenizer(GPT2D_DEFAULT_VOCAB).ok());  // an explicit path wins
  ASSERT_EQ(unsetenv("GPT2_VOCAB"), 0);
  EXPECT_TRUE(LoadTokenizer("").ok());  // the build default
  absl::StatusOr<Tokenizer> missing = LoadTokenizer("/no/such/vocab.tiktoken");
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_NE(Message(missing.status()).find("/no/such/vocab.tiktoken"), std::string::npos);
}

// --- the tokenize command
// -------------------------------------------------------------------------

struct CommandResult {
  int status;
  std::string out, err;
};

CommandResult RunCommand(const TokenizeCommandOptions& options, const std::string& input) {
  std::istringstream in(input);
  std::ostringstream out, err;
  const int status = RunTokenizeCommand(Gpt2(), options, in, out, err);
  return {status, out.str(), err.str()};
}

TEST(TokenizeCommand, WritesIdsAsTextOrJson) {
  EXPECT_EQ(RunCommand({}, "Hello world").out, "15496 995\n");
  EXPECT_EQ(RunCommand({.json = true}, "Hello world").out, "[15496, 995]\n");
  EXPECT_EQ(RunCommand({}, "a<|endoftext|>").out, "64 27 91 437 1659 5239 91 29\n");
  EXPECT_EQ(RunCommand({.allow_special = true}, "a<|endoftext|>").out, "64 50256\n");
  EXPECT_EQ(RunCommand({}, "").out, "\n");
}

TEST(TokenizeCommand, JsonLinesTakeStringsOrTextObjects) {
  const CommandResult r = RunCommand({.jsonl = true}, "\"Hello world\"\n\n{\"text\": \"Hello\", \"id\": 3}\n\"\"\n");
  EXPECT_EQ(r.status, 0) << r.err;
  EXPECT_EQ(r.out, "[15496, 995]\n[15496]\n[]\n");
}

TEST(TokenizeCommand, DecodesIds) {
  EXPECT_EQ(RunCommand({.decode = true}, "15496 995\n50256").out, "Hello world<|endoftext|>");
  EXPECT_EQ(RunCommand({.decode = true}, " [15496, 995] ").out, "Hello world");
  EXPECT_EQ(RunCommand({.decode = true}, "8582").out, "\xF0\x9F");  // raw bytes, no repair
  EXPECT_EQ(RunCommand({.jsonl = true, .decode = true}, "[15496, 995]\n[8582]\n").out,
            "\"Hello world\"\n\"\xEF\xBF\xBD\"\n");
}

TEST(TokenizeCommand, BadInputNamesTheLineAndExitsTwo) {
  CommandResult r = RunCommand({.jsonl = true}, "\"ok\"\n{broken\n");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;
  r = RunCommand({.jsonl = true}, "\"ok\"\n\"ok\"\n42\n");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("line 3"), std::string::npos) << r.err;
  r = RunCommand({.decode = true}, "1 2\n3 x4\n");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("line 2: 'x4' is not a token id"), std::string::npos) << r.err;
  r = RunCommand({.decode = true}, "1\n\n50257\n");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("line 3: id 50257"), std::string::npos) << r.err;
  r = RunCommand({.jsonl = true, .decode = true}, "[1]\n[1, \"a\"]\n");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("line 2, element 1"), std::string::npos) << r.err;
  // Numbers beyond a double's range are an error, not an exception that ends the process.
  r = RunCommand({.jsonl = true}, "\"ok\"\n{\"text\": \"a\", \"n\": 1e309}\n");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("line 2"), std::string::npos) << r.err;
  r = RunCommand({.decode = true}, "[1, 1e309]");
  EXPECT_EQ(r.status, 2);
  EXPECT_NE(r.err.find("invalid JSON"), std::string::npos) << r.err;
}

}  // namespace
}  // namespace gpt2
