#include "worker/data/shard.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <limits>
#include <utility>

#include "absl/strings/str_cat.h"
#include "worker/data/npy.h"

namespace gpt2 {

// Tokens are read and written in the machine's byte order; both formats are little-endian.
static_assert(std::endian::native == std::endian::little, "shards are little-endian");

namespace {

absl::Status ErrnoError(std::string_view path, std::string_view what) {
  return absl::ErrnoToStatus(errno, absl::StrCat(std::string(path), ": ", std::string(what)));
}

absl::Status Invalid(std::string_view path, std::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(path), ": ", std::string(what)));
}

std::string LlmcHeader(int64_t count) {
  int32_t header[256] = {};
  header[0] = kLlmcShardMagic;
  header[1] = kLlmcShardVersion;
  header[2] = static_cast<int32_t>(count);
  return std::string(reinterpret_cast<const char*>(header), sizeof(header));
}

// Checks that `data_bytes` after the header hold exactly `count` uint16 tokens.
absl::Status CheckDataSize(std::string_view path, int64_t count, size_t data_bytes) {
  // Compared in tokens first: a corrupt count times two could overflow.
  if (static_cast<uint64_t>(count) > data_bytes / sizeof(uint16_t)) {
    return Invalid(
        path, absl::StrCat("truncated: the header says ", count, " tokens but only ", data_bytes, " bytes follow it"));
  }
  const size_t expected = static_cast<size_t>(count) * sizeof(uint16_t);
  if (data_bytes > expected) {
    return Invalid(path, absl::StrCat("the header says ", count, " tokens (", expected, " bytes) but ",
                                      data_bytes - expected, " trailing bytes follow them"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<ShardFormat> ParseShardFormat(std::string_view name) {
  if (name == "bin") return ShardFormat::kLlmc;
  if (name == "npy") return ShardFormat::kNpy;
  return absl::InvalidArgumentError(
      absl::StrCat("unknown shard format '", std::string(name), "' (expected bin or npy)"));
}

std::string_view ShardExtension(ShardFormat format) { return format == ShardFormat::kNpy ? ".npy" : ".bin"; }

// ----------------------------------------------------------------------------------------------
// ShardWriter

ShardWriter::ShardWriter(std::string path, ShardFormat format, std::FILE* file)
    : path_(std::move(path)), temp_path_(path_ + ".tmp"), format_(format), file_(file) {}

ShardWriter::ShardWriter(ShardWriter&& other) noexcept
    : path_(std::move(other.path_)),
      temp_path_(std::move(other.temp_path_)),
      format_(other.format_),
      file_(std::exchange(other.file_, nullptr)),
      count_(other.count_) {}

ShardWriter& ShardWriter::operator=(ShardWriter&& other) noexcept {
  if (this != &other) {
    Abandon();
    path_ = std::move(other.path_);
    temp_path_ = std::move(other.temp_path_);
    format_ = other.format_;
    file_ = std::exchange(other.file_, nullptr);
    count_ = other.count_;
  }
  return *this;
}

ShardWriter::~ShardWriter() { Abandon(); }

void ShardWriter::Abandon() {
  if (file_ == nullptr) return;
  std::fclose(file_);
  file_ = nullptr;
  std::remove(temp_path_.c_str());
}

absl::StatusOr<ShardWriter> ShardWriter::Create(std::string path, ShardFormat format) {
  const std::string temp_path = path + ".tmp";
  std::FILE* file = std::fopen(temp_path.c_str(), "wb");
  if (file == nullptr) return ErrnoError(temp_path, "cannot create");
  ShardWriter writer(std::move(path), format, file);
  if (absl::Status status = writer.WriteHeader(); !status.ok()) return status;
  return writer;
}

absl::Status ShardWriter::WriteHeader() {
  const std::string header = format_ == ShardFormat::kNpy ? FormatNpyHeader(count_) : LlmcHeader(count_);
  if (std::fwrite(header.data(), 1, header.size(), file_) != header.size()) {
    return ErrnoError(temp_path_, "write failed");
  }
  return absl::OkStatus();
}

absl::Status ShardWriter::Append(std::span<const uint16_t> tokens) {
  if (file_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": the writer is closed"));
  }
  if (format_ == ShardFormat::kLlmc &&
      count_ + static_cast<int64_t>(tokens.size()) > std::numeric_limits<int32_t>::max()) {
    return Invalid(path_, "an llm.c shard holds at most 2^31 - 1 tokens");
  }
  if (tokens.empty()) return absl::OkStatus();  // (an empty span's data() may be null)
  if (std::fwrite(tokens.data(), sizeof(uint16_t), tokens.size(), file_) != tokens.size()) {
    return ErrnoError(temp_path_, "write failed");
  }
  count_ += static_cast<int64_t>(tokens.size());
  return absl::OkStatus();
}

absl::Status ShardWriter::Finish() {
  if (file_ == nullptr) {
    return absl::FailedPreconditionError(absl::StrCat(path_, ": the writer is closed"));
  }
  absl::Status status;
  if (std::fseek(file_, 0, SEEK_SET) != 0) status = ErrnoError(temp_path_, "seek failed");
  if (status.ok()) status = WriteHeader();
  if (status.ok() && std::fflush(file_) != 0) status = ErrnoError(temp_path_, "write failed");
  if (status.ok() && ::fsync(::fileno(file_)) != 0) status = ErrnoError(temp_path_, "sync failed");
  if (!status.ok()) {
    Abandon();
    return status;
  }
  const bool closed = std::fclose(std::exchange(file_, nullptr)) == 0;
  if (!closed) status = ErrnoError(temp_path_, "close failed");
  if (status.ok() && std::rename(temp_path_.c_str(), path_.c_str()) != 0) {
    status = ErrnoError(path_, "cannot rename the finished shard into place");
  }
  if (!status.ok()) std::remove(temp_path_.c_str());
  return status;
}

absl::Status WriteShard(const std::string& path, ShardFormat format, std::span<const uint16_t> tokens) {
  absl::StatusOr<ShardWriter> writer = ShardWriter::Create(path, format);
  if (!writer.ok()) return writer.status();
  if (absl::Status status = writer->Append(tokens); !status.ok()) return status;
  return writer->Finish();
}

// ----------------------------------------------------------------------------------------------
// Shard

Shard::Shard(Shard&& other) noexcept
    : path_(std::move(other.path_)),
      format_(other.format_),
      mapping_(std::exchange(other.mapping_, nullptr)),
      mapping_bytes_(std::exchange(other.mapping_bytes_, 0)),
      copy_(std::move(other.copy_)),
      tokens_(std::exchange(other.tokens_, {})) {}

Shard& Shard::operator=(Shard&& other) noexcept {
  if (this != &other) {
    Unmap();
    path_ = std::move(other.path_);
    format_ = other.format_;
    mapping_ = std::exchange(other.mapping_, nullptr);
    mapping_bytes_ = std::exchange(other.mapping_bytes_, 0);
    copy_ = std::move(other.copy_);
    tokens_ = std::exchange(other.tokens_, {});
  }
  return *this;
}

Shard::~Shard() { Unmap(); }

void Shard::Unmap() {
  if (mapping_ != nullptr) ::munmap(mapping_, mapping_bytes_);
  mapping_ = nullptr;
  mapping_bytes_ = 0;
  tokens_ = {};
}

absl::StatusOr<Shard> Shard::Open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return ErrnoError(path, "cannot open shard");
  struct stat info;
  if (::fstat(fd, &info) != 0) {
    absl::Status status = ErrnoError(path, "cannot stat shard");
    ::close(fd);
    return status;
  }
  if (!S_ISREG(info.st_mode)) {
    ::close(fd);
    return Invalid(path, "not a regular file");
  }
  Shard shard;
  shard.path_ = path;
  shard.mapping_bytes_ = static_cast<size_t>(info.st_size);
  if (shard.mapping_bytes_ > 0) {
    void* mapping = ::mmap(nullptr, shard.mapping_bytes_, PROT_READ, MAP_SHARED, fd, 0);
    if (mapping == MAP_FAILED) {
      absl::Status status = ErrnoError(path, "cannot map shard");
      ::close(fd);
      return status;
    }
    shard.mapping_ = mapping;
    ::madvise(mapping, shard.mapping_bytes_, MADV_SEQUENTIAL);  // a hint; failure is harmless
  }
  ::close(fd);  // the mapping stays valid

  const std::string_view file(static_cast<const char*>(shard.mapping_), shard.mapping_bytes_);
  size_t data_offset = 0;
  int64_t count = 0;
  if (file.starts_with(kNpyMagic)) {
    absl::StatusOr<NpyHeader> header = ParseNpyHeader(file);
    if (!header.ok()) return Invalid(path, std::string(header.status().message()));
    shard.format_ = ShardFormat::kNpy;
    data_offset = header->data_offset;
    count = header->count;
  } else {
    if (file.size() < kLlmcShardHeaderBytes) {
      return Invalid(path,
                     absl::StrCat("truncated: ", file.size(), " bytes, shorter than the 1024-byte llm.c shard header"));
    }
    int32_t header[3];
    std::memcpy(header, file.data(), sizeof(header));
    if (header[0] != kLlmcShardMagic) {
      return Invalid(path, absl::StrCat("bad magic ", header[0], " (expected ", kLlmcShardMagic,
                                        " for an llm.c shard, or \\x93NUMPY for .npy)"));
    }
    if (header[1] != kLlmcShardVersion) {
      return Invalid(
          path, absl::StrCat("unsupported llm.c shard version ", header[1], " (expected ", kLlmcShardVersion, ")"));
    }
    if (header[2] < 0) return Invalid(path, absl::StrCat("negative token count ", header[2]));
    shard.format_ = ShardFormat::kLlmc;
    data_offset = kLlmcShardHeaderBytes;
    count = header[2];
  }
  if (absl::Status status = CheckDataSize(path, count, file.size() - data_offset); !status.ok()) {
    return status;
  }

  const char* data = file.data() + data_offset;
  if (reinterpret_cast<std::uintptr_t>(data) % alignof(uint16_t) == 0) {
    shard.tokens_ = {reinterpret_cast<const uint16_t*>(data), static_cast<size_t>(count)};
  } else {
    shard.copy_.resize(static_cast<size_t>(count));
    std::memcpy(shard.copy_.data(), data, shard.copy_.size() * sizeof(uint16_t));
    shard.tokens_ = shard.copy_;
    ::munmap(shard.mapping_, shard.mapping_bytes_);
    shard.mapping_ = nullptr;
    shard.mapping_bytes_ = 0;
  }
  return shard;
}

// ----------------------------------------------------------------------------------------------
// ListShards

absl::StatusOr<std::vector<std::string>> ListShards(const std::string& dir, std::string_view split) {
  namespace fs = std::filesystem;
  std::error_code error;
  fs::directory_iterator it(dir, error);
  if (error) {
    return absl::NotFoundError(absl::StrCat(dir, ": cannot list shards: ", error.message()));
  }
  std::vector<std::string> paths;
  for (const fs::directory_entry& entry : it) {
    const std::string name = entry.path().filename().string();
    const bool token_file = name.ends_with(".bin") || name.ends_with(".npy");
    if (token_file && name.find(split) != std::string::npos && entry.is_regular_file(error)) {
      paths.push_back(entry.path().string());
    }
  }
  if (paths.empty()) {
    return absl::NotFoundError(absl::StrCat(dir, ": no ", std::string(split), " shards (files named *",
                                            std::string(split), "*.bin or *.npy)"));
  }
  std::sort(paths.begin(), paths.end());
  return paths;
}

}  // namespace gpt2
