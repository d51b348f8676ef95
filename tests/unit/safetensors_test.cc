#include "worker/model/safetensors.h"

#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>

namespace gpt2 {
namespace {

namespace fs = std::filesystem;

class SafetensorsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("safetensors_test_" + std::to_string(::getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string Path(const std::string& name) { return (dir_ / name).string(); }

  // A file with an 8-byte length, the given header text and `data_bytes` zero bytes.
  std::string RawFile(const std::string& name, const std::string& header, size_t data_bytes, uint64_t claimed_len = 0) {
    std::ofstream out(Path(name), std::ios::binary);
    uint64_t len = claimed_len ? claimed_len : header.size();
    out.write(reinterpret_cast<const char*>(&len), 8);
    out << header << std::string(data_bytes, '\0');
    return Path(name);
  }

  fs::path dir_;
};

TEST_F(SafetensorsTest, WritesAndReadsBack) {
  std::vector<float> a = {1, 2, 3, 4, 5, 6};
  std::vector<int64_t> b = {7, -8};
  TensorToWrite t[] = {
      {"a", DType::kF32, {2, 3}, std::as_bytes(std::span(a))},
      {"b", DType::kI64, {2}, std::as_bytes(std::span(b))},
  };
  ASSERT_TRUE(WriteSafetensors(Path("x.safetensors"), t, {{"format", "pt"}}).ok());
  absl::StatusOr<SafetensorsReader> r = SafetensorsReader::Open(Path("x.safetensors"));
  ASSERT_TRUE(r.ok()) << r.status();
  ASSERT_EQ(r->tensors().size(), 2u);
  EXPECT_EQ(r->metadata().at("format"), "pt");
  const TensorInfo* ia = r->Find("a");
  ASSERT_NE(ia, nullptr);
  EXPECT_EQ(ia->shape, (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(ia->dtype, DType::kF32);
  EXPECT_EQ(std::memcmp(r->Data(*ia).data(), a.data(), 24), 0);
  const TensorInfo* ib = r->Find("b");
  ASSERT_NE(ib, nullptr);
  EXPECT_EQ(std::memcmp(r->Data(*ib).data(), b.data(), 16), 0);
  EXPECT_EQ(r->Find("c"), nullptr);
  // The data region starts 8-byte aligned.
  EXPECT_EQ((fs::file_size(Path("x.safetensors")) - 40) % 8, 0u);
}

TEST_F(SafetensorsTest, WriterRefusesWrongByteCounts) {
  std::vector<float> a = {1, 2, 3};
  TensorToWrite t[] = {{"a", DType::kF32, {2, 2}, std::as_bytes(std::span(a))}};
  EXPECT_FALSE(WriteSafetensors(Path("bad.safetensors"), t, {}).ok());
}

TEST_F(SafetensorsTest, RejectsMalformedFilesWithAClearError) {
  struct Case {
    std::string name, header;
    size_t data;
    uint64_t claimed;
    std::string expect;
  } cases[] = {
      {"empty_header", "", 0, 0, "not a JSON object"},
      {"huge_len", "{}", 0, 1ull << 40, "too large"},
      {"past_end", "{}", 0, 1000, "runs past the end"},
      {"not_json", "{oops", 0, 0, "not a JSON object"},
      {"no_dtype", R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", 4, 0, "missing dtype"},
      {"bad_dtype", R"({"a": {"dtype": "F7", "shape": [1], "data_offsets": [0, 4]}})", 4, 0, "unsupported dtype"},
      {"size_mismatch", R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}})", 4, 0, "dtype x shape"},
      {"gap", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})", 8, 0, "gap"},
      {"truncated", R"({"a": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", 8, 0, "truncated"},
      {"trailing", R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}})", 12, 0, "trailing"},
      {"negative", R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4, 0, "non-negative"},
      {"bad_meta", R"({"__metadata__": {"k": 1}})", 0, 0, "__metadata__"},
  };
  for (const Case& c : cases) {
    std::string path = RawFile(c.name, c.header, c.data, c.claimed);
    absl::StatusOr<SafetensorsReader> r = SafetensorsReader::Open(path);
    ASSERT_FALSE(r.ok()) << c.name;
    EXPECT_NE(std::string(r.status().message()).find(c.expect), std::string::npos)
        << c.name << ": " << r.status().message();
    EXPECT_NE(std::string(r.status().message()).find(path), std::string::npos) << "names the file";
  }
  std::ofstream(Path("tiny"), std::ios::binary) << "abc";
  EXPECT_NE(std::string(SafetensorsReader::Open(Path("tiny")).status().message()).find("shorter than"),
            std::string::npos);
  EXPECT_EQ(SafetensorsReader::Open(Path("missing")).status().code(), absl::StatusCode::kNotFound);
}

}  // namespace
}  // namespace gpt2
