// worker/data: shard formats (round trips and every malformed case), the prep pipeline, and the
// data loader's build-nanogpt DataLoaderLite semantics on small synthetic shards.
#include <gtest/gtest.h>

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <sstream>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "common/tokenizer/tokenizer.h"
#include "nlohmann/json.hpp"
#include "worker/data/loader.h"
#include "worker/data/npy.h"
#include "worker/data/prep.h"
#include "worker/data/prep_command.h"
#include "worker/data/shard.h"

namespace gpt2 {
namespace {

namespace fs = std::filesystem;

// Whether `text` contains `part`, saying both when it does not.
::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

// A fresh directory per test, removed afterwards.
class TempDir {
 public:
  TempDir() {
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            absl::StrCat("gpt2_data_test_", info->test_suite_name(), "_", info->name(), "_", ::getpid());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string operator/(const std::string& name) const { return (path_ / name).string(); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void WriteBytes(const std::string& path, const std::string& bytes) { std::ofstream(path, std::ios::binary) << bytes; }

std::string ReadBytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::string TokenBytes(const std::vector<uint16_t>& tokens) {
  return std::string(reinterpret_cast<const char*>(tokens.data()), tokens.size() * 2);
}

// An llm.c header with the given fields.
std::string LlmcHeader(int32_t magic, int32_t version, int32_t count) {
  int32_t header[256] = {magic, version, count};
  return std::string(reinterpret_cast<const char*>(header), sizeof(header));
}

// A .npy file of the given version with the dict `dict` (padded to 64 like numpy) and payload.
std::string Npy(int major, const std::string& dict, const std::string& payload) {
  const size_t prefix = major == 1 ? 10 : 12;
  std::string header = dict;
  while ((prefix + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out = "\x93NUMPY";
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  const uint32_t length = header.size();
  for (size_t i = 0; i < prefix - 8; ++i) out.push_back(static_cast<char>(length >> (8 * i)));
  return out + header + payload;
}

std::string U2Dict(int64_t count) {
  return absl::StrCat("{'descr': '<u2', 'fortran_order': False, 'shape': (", count, ",), }");
}

std::vector<uint16_t> Iota(size_t n, uint16_t first = 0) {
  std::vector<uint16_t> v(n);
  std::iota(v.begin(), v.end(), first);
  return v;
}

std::vector<uint16_t> ToVector(std::span<const uint16_t> s) { return {s.begin(), s.end()}; }

// Expects Shard::Open(path) to fail with a message naming the file and containing `problem`.
void ExpectOpenFails(const std::string& path, const std::string& problem) {
  absl::StatusOr<Shard> shard = Shard::Open(path);
  ASSERT_FALSE(shard.ok()) << path;
  EXPECT_TRUE(Contains(std::string(shard.status().message()), path));
  EXPECT_TRUE(Contains(std::string(shard.status().message()), problem));
}

// ==============================================================================================
// Shards

TEST(ShardTest, LlmcRoundTripMatchesTheLayout) {
  TempDir dir;
  const std::vector<uint16_t> tokens = {50256, 15496, 995, 0, 65535};
  ASSERT_TRUE(WriteShard(dir / "a.bin", ShardFormat::kLlmc, tokens).ok());
  EXPECT_EQ(ReadBytes(dir / "a.bin"), LlmcHeader(20240520, 1, 5) + TokenBytes(tokens));
  absl::StatusOr<Shard> shard = Shard::Open(dir / "a.bin");
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->format(), ShardFormat::kLlmc);
  EXPECT_EQ(ToVector(shard->tokens()), tokens);
  EXPECT_FALSE(fs::exists(dir / "a.bin.tmp"));
}

TEST(ShardTest, NpyRoundTripWritesAnAlignedVersion1Header) {
  TempDir dir;
  const std::vector<uint16_t> tokens = Iota(1000, 50000);
  ASSERT_TRUE(WriteShard(dir / "a.npy", ShardFormat::kNpy, tokens).ok());
  const std::string bytes = ReadBytes(dir / "a.npy");
  ASSERT_EQ(bytes.size(), kNpyFixedHeaderBytes + 2000);
  EXPECT_EQ(bytes.substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_TRUE(Contains(bytes.substr(10, 118), "'shape': (1000,)"));
  EXPECT_EQ(bytes[kNpyFixedHeaderBytes - 1], '\n');
  absl::StatusOr<Shard> shard = Shard::Open(dir / "a.npy");
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(shard->format(), ShardFormat::kNpy);
  EXPECT_EQ(ToVector(shard->tokens()), tokens);
}

TEST(ShardTest, EmptyShardsRoundTrip) {
  TempDir dir;
  for (ShardFormat format : {ShardFormat::kLlmc, ShardFormat::kNpy}) {
    const std::string path = dir / absl::StrCat("empty", std::string(ShardExtension(format)));
    ASSERT_TRUE(WriteShard(path, format, {}).ok());
    absl::StatusOr<Shard> shard = Shard::Open(path);
    ASSERT_TRUE(shard.ok()) << shard.status();
    EXPECT_TRUE(shard->tokens().empty());
  }
}

TEST(ShardTest, WriterAppendsInPiecesAndOnlyRenamesOnFinish) {
  TempDir dir;
  for (ShardFormat format : {ShardFormat::kLlmc, ShardFormat::kNpy}) {
    const std::string path = dir / absl::StrCat("s", std::string(ShardExtension(format)));
    absl::StatusOr<ShardWriter> writer = ShardWriter::Create(path, format);
    ASSERT_TRUE(writer.ok()) << writer.status();
    const std::vector<uint16_t> all = Iota(300);
    ASSERT_TRUE(writer->Append(std::span(all).first(100)).ok());
    ASSERT_TRUE(writer->Append(std::span(all).subspan(100)).ok());
    EXPECT_FALSE(fs::exists(path));
    EXPECT_TRUE(fs::exists(path + ".tmp"));
    ASSERT_TRUE(writer->Finish().ok());
    EXPECT_FALSE(fs::exists(path + ".tmp"));
    absl::StatusOr<Shard> shard = Shard::Open(path);
    ASSERT_TRUE(shard.ok()) << shard.status();
    EXPECT_EQ(ToVector(shard->tokens()), all);
    EXPECT_FALSE(writer->Append(all).ok());  // closed
  }
}

TEST(ShardTest, AbandonedWriterLeavesNoFile) {
  TempDir dir;
  {
    absl::StatusOr<ShardWriter> writer = ShardWriter::Create(dir / "x.bin", ShardFormat::kLlmc);
    ASSERT_TRUE(writer.ok());
    ASSERT_TRUE(writer->Append(Iota(10)).ok());
  }
  EXPECT_TRUE(fs::is_empty(dir.path()));
}

TEST(ShardTest, WriterReportsAnUncreatableFile) {
  TempDir dir;
  absl::StatusOr<ShardWriter> writer = ShardWriter::Create(dir / "no/such/dir/x.bin", ShardFormat::kLlmc);
  ASSERT_FALSE(writer.ok());
  EXPECT_TRUE(Contains(std::string(writer.status().message()), "no/such/dir/x.bin.tmp"));
}

TEST(ShardTest, ReadsNpyVersions2And3) {
  TempDir dir;
  const std::vector<uint16_t> tokens = {7, 8, 9};
  for (int major : {2, 3}) {
    const std::string path = dir / absl::StrCat("v", major, ".npy");
    WriteBytes(path, Npy(major, U2Dict(3), TokenBytes(tokens)));
    absl::StatusOr<Shard> shard = Shard::Open(path);
    ASSERT_TRUE(shard.ok()) << shard.status();
    EXPECT_EQ(ToVector(shard->tokens()), tokens);
  }
}

TEST(ShardTest, ReadsNpyWithAnOddDataOffset) {
  TempDir dir;
  // An unpadded header puts the data at an odd offset; the tokens must still come out right.
  std::string dict = U2Dict(3) + "\n";
  if ((10 + dict.size()) % 2 == 0) dict = " " + dict;
  std::string file = std::string("\x93NUMPY\x01\x00", 8);
  file.push_back(static_cast<char>(dict.size()));
  file.push_back('\0');
  WriteBytes(dir / "odd.npy", file + dict + TokenBytes({1, 2, 65535}));
  absl::StatusOr<Shard> shard = Shard::Open(dir / "odd.npy");
  ASSERT_TRUE(shard.ok()) << shard.status();
  EXPECT_EQ(ToVector(shard->tokens()), (std::vector<uint16_t>{1, 2, 65535}));
}

TEST(ShardTest, MovedShardKeepsItsTokens) {
  TempDir dir;
  ASSERT_TRUE(WriteShard(dir / "a.bin", ShardFormat::kLlmc, Iota(5)).ok());
  absl::StatusOr<Shard> opened = Shard::Open(dir / "a.bin");
  ASSERT_TRUE(opened.ok());
  Shard moved = std::move(*opened);
  EXPECT_EQ(ToVector(moved.tokens()), Iota(5));
}

TEST(ShardTest, RejectsMalformedLlmcShards) {
  TempDir dir;
  const std::string tokens = TokenBytes(Iota(4));
  WriteBytes(dir / "magic.bin", LlmcHeader(12345, 1, 4) + tokens);
  ExpectOpenFails(dir / "magic.bin", "bad magic 12345");
  WriteBytes(dir / "version.bin", LlmcHeader(20240520, 2, 4) + tokens);
  ExpectOpenFails(dir / "version.bin", "version 2");
  WriteBytes(dir / "truncated.bin", LlmcHeader(20240520, 1, 5) + tokens);
  ExpectOpenFails(dir / "truncated.bin", "truncated");
  WriteBytes(dir / "odd.bin", LlmcHeader(20240520, 1, 4) + tokens.substr(0, 7));
  ExpectOpenFails(dir / "odd.bin", "truncated");
  WriteBytes(dir / "trailing.bin", LlmcHeader(20240520, 1, 3) + tokens);
  ExpectOpenFails(dir / "trailing.bin", "2 trailing bytes");
  WriteBytes(dir / "negative.bin", LlmcHeader(20240520, 1, -1) + tokens);
  ExpectOpenFails(dir / "negative.bin", "negative token count");
  WriteBytes(dir / "short.bin", LlmcHeader(20240520, 1, 0).substr(0, 100));
  ExpectOpenFails(dir / "short.bin", "shorter than the 1024-byte");
  WriteBytes(dir / "empty.bin", "");
  ExpectOpenFails(dir / "empty.bin", "truncated");
}

TEST(ShardTest, RejectsMalformedNpyShards) {
  TempDir dir;
  const std::string tokens = TokenBytes(Iota(4));
  struct Case {
    std::string name, file, problem;
  };
  const std::vector<Case> cases = {
      {"f4", Npy(1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2,), }", tokens), "'<f4'"},
      {"be", Npy(1, "{'descr': '>u2', 'fortran_order': False, 'shape': (4,), }", tokens), "'>u2'"},
      {"i2", Npy(1, "{'descr': '<i2', 'fortran_order': False, 'shape': (4,), }", tokens), "'<i2'"},
      {"fortran", Npy(1, "{'descr': '<u2', 'fortran_order': True, 'shape': (4,), }", tokens), "Fortran"},
      {"2d", Npy(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (2, 2), }", tokens), "shape is (2,2,)"},
      {"scalar", Npy(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (), }", tokens), "shape is ()"},
      {"truncated", Npy(1, U2Dict(5), tokens), "truncated"},
      {"trailing", Npy(1, U2Dict(3), tokens), "2 trailing bytes"},
      {"version", Npy(4, U2Dict(4), tokens), "version 4.0"},
      {"garbage", Npy(1, "{'descr': '<u2', 'fortran_order': False, 'shape': [4], }", tokens), "'shape' is not a tuple"},
      {"missing", Npy(1, "{'descr': '<u2', 'shape': (4,), }", tokens), "lacks one of the keys"},
      {"extra", Npy(1, "{'descr': '<u2', 'fortran_order': False, 'shape': (4,), 'x': 1}", tokens),
       "unexpected key 'x'"},
      {"header_past_end", Npy(1, U2Dict(4), "").substr(0, 40), "header is truncated"},
      {"huge_count", Npy(1, U2Dict(9223372036854775807LL), tokens), "truncated"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const std::string path = dir / (c.name + ".npy");
    WriteBytes(path, c.file);
    ExpectOpenFails(path, c.problem);
  }
}

TEST(ShardTest, RejectsUnreadablePaths) {
  TempDir dir;
  ExpectOpenFails(dir / "missing.bin", "cannot open");
  EXPECT_EQ(Shard::Open(dir / "missing.bin").status().code(), absl::StatusCode::kNotFound);
  fs::create_directories(dir / "adir.bin");
  ExpectOpenFails(dir / "adir.bin", "not a regular file");
}

TEST(ShardTest, ParsesFormatNames) {
  EXPECT_EQ(*ParseShardFormat("bin"), ShardFormat::kLlmc);
  EXPECT_EQ(*ParseShardFormat("npy"), ShardFormat::kNpy);
  EXPECT_FALSE(ParseShardFormat("txt").ok());
}

TEST(ListShardsTest, ListsOneSplitSortedAndSkipsOtherFiles) {
  TempDir dir;
  for (const char* name : {"s_train_000002.bin", "s_train_000001.npy", "s_val_000000.bin", "s_train_000003.bin.tmp",
                           "notes_train.txt", "README"}) {
    WriteBytes(dir / name, "");
  }
  fs::create_directories(dir / "sub_train.bin");  // a directory, not a shard
  absl::StatusOr<std::vector<std::string>> train = ListShards(dir.path().string(), "train");
  ASSERT_TRUE(train.ok()) << train.status();
  EXPECT_EQ(*train, (std::vector<std::string>{dir / "s_train_000001.npy", dir / "s_train_000002.bin"}));
  absl::StatusOr<std::vector<std::string>> val = ListShards(dir.path().string(), "val");
  ASSERT_TRUE(val.ok());
  EXPECT_EQ(*val, std::vector<std::string>{dir / "s_val_000000.bin"});
}

TEST(ListShardsTest, FailsWhenNothingMatchesOrTheDirectoryIsMissing) {
  TempDir dir;
  WriteBytes(dir / "s_val_000000.bin", "");
  absl::StatusOr<std::vector<std::string>> none = ListShards(dir.path().string(), "train");
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(std::string(none.status().message()), "no train shards"));
  EXPECT_FALSE(ListShards(dir / "missing", "train").ok());
}

// ==============================================================================================
// Data loader

// Writes shards whose token i of shard s is s*1000 + i, so every token says where it came from.
std::vector<std::string> NumberedShards(const TempDir& dir, const std::vector<int>& lengths) {
  std::vector<std::string> paths;
  for (size_t s = 0; s < lengths.size(); ++s) {
    paths.push_back(dir / absl::StrCat("d_train_", s, ".bin"));
    EXPECT_TRUE(WriteShard(paths.back(), ShardFormat::kLlmc, Iota(lengths[s], static_cast<uint16_t>(s * 1000))).ok());
  }
  return paths;
}

struct Batch {
  std::vector<int64_t> x, y;
};

Batch Next(DataLoader& loader) {
  Batch b{std::vector<int64_t>(loader.B() * loader.T()), std::vector<int64_t>(loader.B() * loader.T())};
  absl::Status status = loader.NextBatch(b.x, b.y);
  EXPECT_TRUE(status.ok()) << status;
  return b;
}

// The B*T tokens of shard s from offset o: s*1000 + o, s*1000 + o + 1, ...
std::vector<int64_t> Tokens(int64_t s, int64_t o, int64_t n) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), s * 1000 + o);
  return v;
}

TEST(DataLoaderTest, SingleRankReadsConsecutiveWindowsWithShiftedTargets) {
  TempDir dir;
  // B=2, T=3: batches of 6; a shard of 20 gives offsets 0, 6, 12 (12 + 7 = 19 <= 20), then 18
  // fails 18 + 7 <= 20, so after the third batch the loader moves on. In the shard of 18,
  // offset 12 fails 12 + 7 <= 18 by one token.
  std::vector<std::string> paths = NumberedShards(dir, {20, 18});
  absl::StatusOr<DataLoader> loader = DataLoader::Create(paths, 2, 3, 0, 1);
  ASSERT_TRUE(loader.ok()) << loader.status();
  EXPECT_EQ(loader->position(), (LoaderPosition{0, 0}));
  const std::vector<LoaderPosition> expected = {{0, 0}, {0, 6}, {0, 12}, {1, 0}, {1, 6}, {0, 0}};
  for (size_t i = 0; i < expected.size(); ++i) {
    SCOPED_TRACE(i);
    EXPECT_EQ(loader->position(), expected[i]);
    Batch b = Next(*loader);
    EXPECT_EQ(b.x, Tokens(expected[i].shard, expected[i].offset, 6));
    EXPECT_EQ(b.y, Tokens(expected[i].shard, expected[i].offset + 1, 6));
  }
}

TEST(DataLoaderTest, RanksInterleaveAndEachWrapsToItsOwnStart) {
  TempDir dir;
  // B=1, T=4, world 2: a step reads 8 tokens. Shard 0 (30 tokens): rank 0 reads 0, 8, 16 (then
  // 24 + 9 > 30), rank 1 reads 4, 12 (then 20 + 9 = 29 <= 30, reads 20; then 28 + 9 > 30).
  std::vector<std::string> paths = NumberedShards(dir, {30, 17});
  absl::StatusOr<DataLoader> rank0 = DataLoader::Create(paths, 1, 4, 0, 2);
  absl::StatusOr<DataLoader> rank1 = DataLoader::Create(paths, 1, 4, 1, 2);
  ASSERT_TRUE(rank0.ok() && rank1.ok());
  const std::vector<LoaderPosition> expected0 = {{0, 0}, {0, 8}, {0, 16}, {1, 0}, {1, 8}, {0, 0}};
  const std::vector<LoaderPosition> expected1 = {{0, 4}, {0, 12}, {0, 20}, {1, 4}, {0, 4}, {0, 12}};
  for (size_t i = 0; i < expected0.size(); ++i) {
    SCOPED_TRACE(i);
    ASSERT_EQ(rank0->position(), expected0[i]);
    ASSERT_EQ(rank1->position(), expected1[i]);
    EXPECT_EQ(Next(*rank0).x, Tokens(expected0[i].shard, expected0[i].offset, 4));
    EXPECT_EQ(Next(*rank1).y, Tokens(expected1[i].shard, expected1[i].offset + 1, 4));
  }
}

TEST(DataLoaderTest, HigherRankCanMoveToTheNextShardFirst) {
  TempDir dir;
  // build-nanogpt's quirk, kept: B*T = 2, world 2, 10 tokens. Rank 1 at 6 sees 6 + 5 > 10 and
  // moves on after one batch; rank 0 at 4 sees 4 + 5 <= 10 and reads a second batch.
  std::vector<std::string> paths = NumberedShards(dir, {10, 10});
  absl::StatusOr<DataLoader> rank0 = DataLoader::Create(paths, 1, 2, 0, 2);
  absl::StatusOr<DataLoader> rank1 = DataLoader::Create(paths, 1, 2, 1, 2);
  ASSERT_TRUE(rank0.ok() && rank1.ok());
  Next(*rank0);
  Next(*rank1);
  EXPECT_EQ(rank0->position(), (LoaderPosition{0, 4}));
  EXPECT_EQ(rank1->position(), (LoaderPosition{1, 2}));
}

TEST(DataLoaderTest, SingleShardWrapsToItself) {
  TempDir dir;
  std::vector<std::string> paths = NumberedShards(dir, {9});
  absl::StatusOr<DataLoader> loader = DataLoader::Create(paths, 2, 2, 0, 1);
  ASSERT_TRUE(loader.ok());
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(Next(*loader).x, Tokens(0, 0, 4));
    EXPECT_EQ(Next(*loader).x, Tokens(0, 4, 4));
  }
}

TEST(DataLoaderTest, ResetReturnsToTheRanksStart) {
  TempDir dir;
  absl::StatusOr<DataLoader> loader = DataLoader::Create(NumberedShards(dir, {50, 50}), 2, 2, 2, 3);
  ASSERT_TRUE(loader.ok());
  for (int i = 0; i < 5; ++i) Next(*loader);
  loader->Reset();
  EXPECT_EQ(loader->position(), (LoaderPosition{0, 8}));
  EXPECT_EQ(Next(*loader).x, Tokens(0, 8, 4));
}

TEST(DataLoaderTest, RestoredPositionContinuesIdentically) {
  TempDir dir;
  std::vector<std::string> paths = NumberedShards(dir, {40, 23, 31});
  for (int rank = 0; rank < 2; ++rank) {
    SCOPED_TRACE(rank);
    absl::StatusOr<DataLoader> original = DataLoader::Create(paths, 1, 3, rank, 2);
    ASSERT_TRUE(original.ok());
    for (int i = 0; i < 7; ++i) Next(*original);
    const LoaderPosition saved = original->position();
    absl::StatusOr<DataLoader> restored = DataLoader::Create(paths, 1, 3, rank, 2);
    ASSERT_TRUE(restored.ok());
    ASSERT_TRUE(restored->SetPosition(saved).ok());
    for (int i = 0; i < 20; ++i) {
      SCOPED_TRACE(i);
      Batch a = Next(*original), b = Next(*restored);
      EXPECT_EQ(a.x, b.x);
      EXPECT_EQ(a.y, b.y);
      EXPECT_EQ(original->position(), restored->position());
    }
  }
}

TEST(DataLoaderTest, SetPositionAcceptsOnlyReachablePositions) {
  TempDir dir;
  // B*T = 4, world 2, rank 1: reachable offsets are 4, 12, 20, ... with offset + 9 <= length.
  absl::StatusOr<DataLoader> loader = DataLoader::Create(NumberedShards(dir, {30, 12}), 2, 2, 1, 2);
  ASSERT_TRUE(loader.ok());
  EXPECT_TRUE(loader->SetPosition({0, 20}).ok());
  EXPECT_TRUE(loader->SetPosition({1, 4}).ok());  // the start is always reachable
  EXPECT_EQ(loader->position(), (LoaderPosition{1, 4}));
  for (LoaderPosition bad : std::vector<LoaderPosition>{{2, 4}, {-1, 4}, {0, 0}, {0, 8}, {0, -4}, {0, 28}, {1, 12}}) {
    SCOPED_TRACE(absl::StrCat(bad.shard, ":", bad.offset));
    absl::Status status = loader->SetPosition(bad);
    EXPECT_EQ(status.code(), absl::StatusCode::kInvalidArgument);
    EXPECT_EQ(loader->position(), (LoaderPosition{1, 4}));
  }
}

TEST(DataLoaderTest, RejectsAShardTooShortForOneStep) {
  TempDir dir;
  // B*T*world + 1 = 2*3*2 + 1 = 13: the second shard, 12 tokens, is one short.
  std::vector<std::string> paths = NumberedShards(dir, {13, 12});
  absl::StatusOr<DataLoader> loader = DataLoader::Create(paths, 2, 3, 0, 2);
  ASSERT_FALSE(loader.ok());
  EXPECT_TRUE(Contains(std::string(loader.status().message()), paths[1]));
  EXPECT_TRUE(Contains(std::string(loader.status().message()), "12 tokens"));
  EXPECT_TRUE(DataLoader::Create({paths[0]}, 2, 3, 1, 2).ok());
}

TEST(DataLoaderTest, RejectsBadArguments) {
  TempDir dir;
  std::vector<std::string> paths = NumberedShards(dir, {100});
  EXPECT_FALSE(DataLoader::Create(paths, 0, 4, 0, 1).ok());
  EXPECT_FALSE(DataLoader::Create(paths, 4, 0, 0, 1).ok());
  EXPECT_FALSE(DataLoader::Create(paths, 4, 4, 1, 1).ok());
  EXPECT_FALSE(DataLoader::Create(paths, 4, 4, -1, 2).ok());
  EXPECT_FALSE(DataLoader::Create({}, 4, 4, 0, 1).ok());
  EXPECT_FALSE(DataLoader::Create({dir / "missing.bin"}, 4, 4, 0, 1).ok());

  absl::StatusOr<DataLoader> loader = DataLoader::Create(paths, 2, 2, 0, 1);
  ASSERT_TRUE(loader.ok());
  std::vector<int64_t> small(3), right(4);
  EXPECT_EQ(loader->NextBatch(small, right).code(), absl::StatusCode::kInvalidArgument);
  EXPECT_EQ(loader->position(), (LoaderPosition{0, 0}));
}

TEST(DataLoaderTest, ReportsAShardThatChangedAndKeepsItsPosition) {
  TempDir dir;
  std::vector<std::string> paths = NumberedShards(dir, {9, 9});
  absl::StatusOr<DataLoader> loader = DataLoader::Create(paths, 2, 2, 0, 1);
  ASSERT_TRUE(loader.ok());
  Next(*loader);
  Next(*loader);  // now at shard 1
  ASSERT_TRUE(WriteShard(paths[1], ShardFormat::kLlmc, Iota(50)).ok());
  std::vector<int64_t> x(4), y(4);
  absl::Status status = loader->NextBatch(x, y);
  EXPECT_EQ(status.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(Contains(std::string(status.message()), paths[1]));
  EXPECT_EQ(loader->position(), (LoaderPosition{1, 0}));
}

TEST(DataLoaderTest, ReadsNpyShards) {
  TempDir dir;
  ASSERT_TRUE(WriteShard(dir / "a.npy", ShardFormat::kNpy, Iota(10, 5)).ok());
  absl::StatusOr<DataLoader> loader = DataLoader::Create({dir / "a.npy"}, 1, 4, 0, 1);
  ASSERT_TRUE(loader.ok());
  Batch b = Next(*loader);
  EXPECT_EQ(b.x, (std::vector<int64_t>{5, 6, 7, 8}));
  EXPECT_EQ(b.y, (std::vector<int64_t>{6, 7, 8, 9}));
}

// ==============================================================================================
// Prep

class PrepTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    absl::StatusOr<Tokenizer> tokenizer = LoadTokenizer("");
    ASSERT_TRUE(tokenizer.ok()) << tokenizer.status();
    tokenizer_ = new Tokenizer(*std::move(tokenizer));
  }
  static void TearDownTestSuite() { delete tokenizer_; }

  PrepOptions Options(std::vector<std::string> inputs) const {
    PrepOptions options;
    options.inputs = std::move(inputs);
    options.out_dir = dir_ / "out";
    options.shard_tokens = 10;
    options.val_tokens = 7;
    options.threads = 1;
    return options;
  }

  absl::StatusOr<PrepResult> Prep(const PrepOptions& options) {
    log_.str("");
    return PrepareShards(*tokenizer_, options, log_);
  }

  // <|endoftext|> + EncodeOrdinary(document), for each document.
  std::vector<uint16_t> Expected(const std::vector<std::string>& documents) const {
    std::vector<uint16_t> tokens;
    for (const std::string& document : documents) {
      tokens.push_back(50256);
      for (TokenId id : tokenizer_->EncodeOrdinary(document)) tokens.push_back(id);
    }
    return tokens;
  }

  // All tokens of the shards, in order.
  static std::vector<uint16_t> Concatenated(const std::vector<std::string>& shards) {
    std::vector<uint16_t> tokens;
    for (const std::string& path : shards) {
      absl::StatusOr<Shard> shard = Shard::Open(path);
      EXPECT_TRUE(shard.ok()) << shard.status();
      if (shard.ok()) tokens.insert(tokens.end(), shard->tokens().begin(), shard->tokens().end());
    }
    return tokens;
  }

  static Tokenizer* tokenizer_;
  TempDir dir_;
  std::ostringstream log_;
};

Tokenizer* PrepTest::tokenizer_ = nullptr;

TEST_F(PrepTest, FillsShardsExactlyWithTheValShardFirst) {
  const std::vector<std::string> docs = {"Hello world, this is the first document.", "A second one.",
                                         "And a third, a little longer than that one was."};
  for (size_t i = 0; i < docs.size(); ++i) WriteBytes(dir_ / absl::StrCat(i, ".txt"), docs[i]);
  absl::StatusOr<PrepResult> result = Prep(Options({dir_ / "0.txt", dir_ / "1.txt", dir_ / "2.txt"}));
  ASSERT_TRUE(result.ok()) << result.status();

  const std::vector<uint16_t> expected = Expected(docs);
  ASSERT_GT(expected.size(), 27u);  // at least val + 2 full train shards + a partial one
  EXPECT_EQ(result->documents, 3);
  EXPECT_EQ(result->tokens, static_cast<int64_t>(expected.size()));
  EXPECT_EQ(result->val_tokens, 7);
  EXPECT_EQ(result->train_tokens, result->tokens - 7);
  const std::string out = dir_ / "out";
  ASSERT_GE(result->shards.size(), 4u);
  EXPECT_EQ(result->shards[0], out + "/shard_val_000000.bin");
  EXPECT_EQ(result->shards[1], out + "/shard_train_000001.bin");
  EXPECT_EQ(result->shards[2], out + "/shard_train_000002.bin");
  // 7 for validation, then 10 a shard, the last one taking the rest.
  const size_t n = result->shards.size();
  EXPECT_EQ(n, 1 + (expected.size() - 7 + 9) / 10);
  for (size_t i = 0; i < n; ++i) {
    const size_t want = i == 0 ? 7 : i + 1 < n ? 10 : expected.size() - 7 - 10 * (n - 2);
    EXPECT_EQ(Shard::Open(result->shards[i])->tokens().size(), want) << i;
  }
  EXPECT_EQ(Concatenated(result->shards), expected);
  EXPECT_EQ(*ListShards(out, "train"), std::vector<std::string>(result->shards.begin() + 1, result->shards.end()));
}

TEST_F(PrepTest, OutputDoesNotDependOnTheThreadCount) {
  fs::create_directories(dir_ / "corpus");
  std::vector<std::string> docs;
  for (int i = 0; i < 3000; ++i) {
    docs.push_back(absl::StrCat("Document number ", i, " says ", std::string(i % 7, 'x'), "!\n"));
  }
  {
    std::ofstream jsonl(dir_ / "corpus.jsonl");
    for (const std::string& doc : docs) jsonl << nlohmann::json{{"text", doc}}.dump() << "\n";
  }
  std::vector<std::string> contents[2];
  for (int threads : {1, 3}) {
    PrepOptions options = Options({dir_ / "corpus.jsonl"});
    options.shard_tokens = 5000;
    options.val_tokens = 1000;
    options.threads = threads;
    options.force = true;
    absl::StatusOr<PrepResult> result = Prep(options);
    ASSERT_TRUE(result.ok()) << result.status();
    EXPECT_EQ(Concatenated(result->shards), Expected(docs));
    for (const std::string& path : result->shards) contents[threads == 3].push_back(ReadBytes(path));
  }
  EXPECT_EQ(contents[0], contents[1]);
}

TEST_F(PrepTest, WalksDirectoriesForTextFilesInPathOrder) {
  fs::create_directories(dir_ / "corpus/b");
  WriteBytes(dir_ / "corpus/b/z.md", "zed");
  WriteBytes(dir_ / "corpus/a.txt", "ay");
  WriteBytes(dir_ / "corpus/b/c.rst", "see");
  WriteBytes(dir_ / "corpus/d.text", "dee");
  WriteBytes(dir_ / "corpus/skip.json", "{}");
  WriteBytes(dir_ / "corpus/skip.jsonl", "{\"text\": \"no\"}");
  WriteBytes(dir_ / "extra.dat", "explicit files are taken whatever their name");
  PrepOptions options = Options({dir_ / "corpus", dir_ / "extra.dat"});
  options.val_tokens = 1000;
  absl::StatusOr<PrepResult> result = Prep(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->documents, 5);
  EXPECT_EQ(Concatenated(result->shards),
            Expected({"ay", "see", "zed", "dee", "explicit files are taken whatever their name"}));
  EXPECT_EQ(result->shards.size(), 1u);
  EXPECT_TRUE(Contains(log_.str(), "no training shard"));
}

TEST_F(PrepTest, MalformedJsonlLineIsAnErrorNamingFileAndLine) {
  WriteBytes(dir_ / "c.jsonl", "{\"text\": \"one\"}\n\n{\"text\": 5}\n{\"text\": \"two\"}\nnot json\n");
  absl::StatusOr<PrepResult> result = Prep(Options({dir_ / "c.jsonl"}));
  ASSERT_FALSE(result.ok());
  EXPECT_EQ(result.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_TRUE(Contains(std::string(result.status().message()), dir_ / "c.jsonl:3: "));
  EXPECT_TRUE(Contains(std::string(result.status().message()), "\"text\" is not a string"));
  EXPECT_FALSE(fs::exists(dir_ / "out/shard_val_000000.bin.tmp"));
}

TEST_F(PrepTest, SkipBadLinesWarnsAndContinues) {
  // Line 6: a number too large for a double (prep_jsonl_fuzz found it ended the process).
  WriteBytes(dir_ / "c.jsonl",
             "{\"text\": \"one\"}\n[1]\n{\"text\": \"two\", \"id\": 2}\nnot json\n{\"other\": 1}\n{\"id\": 1e309}\n");
  PrepOptions options = Options({dir_ / "c.jsonl"});
  options.skip_bad_lines = true;
  absl::StatusOr<PrepResult> result = Prep(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->documents, 2);
  EXPECT_EQ(result->skipped_lines, 4);
  EXPECT_EQ(Concatenated(result->shards), Expected({"one", "two"}));
  EXPECT_TRUE(Contains(log_.str(), dir_ / "c.jsonl:6: invalid JSON"));
  EXPECT_TRUE(Contains(log_.str(), dir_ / "c.jsonl:2: not a JSON object"));
  EXPECT_TRUE(Contains(log_.str(), dir_ / "c.jsonl:4: invalid JSON"));
  EXPECT_TRUE(Contains(log_.str(), dir_ / "c.jsonl:5: no \"text\" field"));
}

TEST_F(PrepTest, RefusesToOverwriteShardsUnlessForced) {
  WriteBytes(dir_ / "long.txt", std::string(200, 'a') + " and some more words here to fill shards");
  WriteBytes(dir_ / "short.txt", "short");
  PrepOptions options = Options({dir_ / "long.txt"});
  options.shard_tokens = 3;
  options.val_tokens = 3;
  absl::StatusOr<PrepResult> first = Prep(options);
  ASSERT_TRUE(first.ok()) << first.status();
  ASSERT_GT(first->shards.size(), 2u);

  options.inputs = {dir_ / "short.txt"};
  absl::StatusOr<PrepResult> refused = Prep(options);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.status().code(), absl::StatusCode::kAlreadyExists);
  EXPECT_TRUE(Contains(std::string(refused.status().message()), "--force"));
  EXPECT_EQ(Concatenated(first->shards).size(), static_cast<size_t>(first->tokens));

  // Forced: the new shards replace the old and no stale shard of the longer run remains.
  options.force = true;
  absl::StatusOr<PrepResult> forced = Prep(options);
  ASSERT_TRUE(forced.ok()) << forced.status();
  EXPECT_EQ(Concatenated(forced->shards), Expected({"short"}));
  std::vector<std::string> left;
  for (const auto& entry : fs::directory_iterator(dir_ / "out")) left.push_back(entry.path().string());
  std::sort(left.begin(), left.end());
  EXPECT_EQ(left, forced->shards);
}

TEST_F(PrepTest, WritesNpyShards) {
  WriteBytes(dir_ / "a.txt", "numpy shards hold the same tokens");
  PrepOptions options = Options({dir_ / "a.txt"});
  options.format = "npy";
  options.name = "edufineweb";
  absl::StatusOr<PrepResult> result = Prep(options);
  ASSERT_TRUE(result.ok()) << result.status();
  EXPECT_EQ(result->shards[0], dir_ / "out/edufineweb_val_000000.npy");
  EXPECT_EQ(Shard::Open(result->shards[0])->format(), ShardFormat::kNpy);
  EXPECT_EQ(Concatenated(result->shards), Expected({"numpy shards hold the same tokens"}));
}

TEST_F(PrepTest, RejectsBadOptionsAndMissingInputs) {
  WriteBytes(dir_ / "a.txt", "x");
  PrepOptions options = Options({dir_ / "a.txt"});
  options.format = "csv";
  EXPECT_EQ(Prep(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = Options({dir_ / "a.txt"});
  options.shard_tokens = 0;
  EXPECT_EQ(Prep(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = Options({dir_ / "a.txt"});
  options.name = "a/b";
  EXPECT_EQ(Prep(options).status().code(), absl::StatusCode::kInvalidArgument);
  options = Options({});
  EXPECT_EQ(Prep(options).status().code(), absl::StatusCode::kInvalidArgument);

  absl::StatusOr<PrepResult> missing = Prep(Options({dir_ / "a.txt", dir_ / "missing.txt"}));
  EXPECT_EQ(missing.status().code(), absl::StatusCode::kNotFound);
  EXPECT_TRUE(Contains(std::string(missing.status().message()), dir_ / "missing.txt"));

  fs::create_directories(dir_ / "empty");
  WriteBytes(dir_ / "empty/data.csv", "not a text file by name");
  absl::StatusOr<PrepResult> none = Prep(Options({dir_ / "empty"}));
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_FALSE(fs::exists(dir_ / "out/shard_val_000000.bin"));
}

TEST_F(PrepTest, EmptyDocumentsStillGetTheirSeparator) {
  WriteBytes(dir_ / "e.jsonl", "{\"text\": \"\"}\n{\"text\": \"<|endoftext|>\"}\n");
  absl::StatusOr<PrepResult> result = Prep(Options({dir_ / "e.jsonl"}));
  ASSERT_TRUE(result.ok()) << result.status();
  const std::vector<uint16_t> tokens = Concatenated(result->shards);
  EXPECT_EQ(tokens, Expected({"", "<|endoftext|>"}));
  EXPECT_EQ(tokens[0], 50256);
  EXPECT_EQ(tokens[1], 50256);
  EXPECT_NE(tokens[2], 50256);  // a literal <|endoftext|> in a document is ordinary text
}

TEST_F(PrepTest, CommandPrintsAJsonSummaryAndExitCodes) {
  WriteBytes(dir_ / "a.txt", "one document");
  PrepOptions options = Options({dir_ / "a.txt"});
  std::ostringstream out, err;
  ASSERT_EQ(RunPrepCommand(options, out, err), 0) << err.str();
  const nlohmann::json summary = nlohmann::json::parse(out.str());
  EXPECT_EQ(summary["documents"], 1);
  EXPECT_EQ(summary["tokens"], Expected({"one document"}).size());
  EXPECT_EQ(summary["val_tokens"], summary["tokens"]);
  EXPECT_EQ(summary["train_tokens"], 0);
  EXPECT_EQ(summary["shards"], nlohmann::json::array({dir_ / "out/shard_val_000000.bin"}));

  std::ostringstream out2, err2;
  EXPECT_EQ(RunPrepCommand(options, out2, err2), 2);  // shards exist, no --force
  EXPECT_TRUE(Contains(err2.str(), "error: "));
  EXPECT_TRUE(out2.str().empty());
}

}  // namespace
}  // namespace gpt2
