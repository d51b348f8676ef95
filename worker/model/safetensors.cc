#include "worker/model/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace gpt2 {
namespace {

// The reference implementation refuses headers over 100 MB; so do we.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeEntry {
  DType dtype;
  std::string_view name;
  size_t size;
};
constexpr DTypeEntry kDTypes[] = {
    {DType::kF64, "F64", 8}, {DType::kF32, "F32", 4},   {DType::kF16, "F16", 2}, {DType::kBF16, "BF16", 2},
    {DType::kI64, "I64", 8}, {DType::kI32, "I32", 4},   {DType::kI16, "I16", 2}, {DType::kI8, "I8", 1},
    {DType::kU8, "U8", 1},   {DType::kBool, "BOOL", 1},
};

bool ParseDType(std::string_view name, DType& out) {
  for (const auto& e : kDTypes) {
    if (e.name == name) {
      out = e.dtype;
      return true;
    }
  }
  return false;
}

}  // namespace

std::string_view DTypeName(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.name;
  }
  return "?";
}

size_t DTypeSize(DType dtype) {
  for (const auto& e : kDTypes) {
    if (e.dtype == dtype) return e.size;
  }
  return 0;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

SafetensorsReader::SafetensorsReader(SafetensorsReader&& o) noexcept { *this = std::move(o); }

SafetensorsReader& SafetensorsReader::operator=(SafetensorsReader&& o) noexcept {
  if (this != &o) {
    if (map_ != nullptr) munmap(map_, map_size_);
    path_ = std::move(o.path_);
    map_ = std::exchange(o.map_, nullptr);
    map_size_ = std::exchange(o.map_size_, 0);
    data_ = std::exchange(o.data_, nullptr);
    tensors_ = std::move(o.tensors_);
    by_name_ = std::move(o.by_name_);
    metadata_ = std::move(o.metadata_);
  }
  return *this;
}

SafetensorsReader::~SafetensorsReader() {
  if (map_ != nullptr) munmap(map_, map_size_);
}

absl::StatusOr<SafetensorsReader> SafetensorsReader::Open(const std::string& path) {
  auto corrupt = [&](const std::string& why) {
    return absl::DataLossError(absl::StrCat(path, ": not a valid safetensors file: ", why));
  };
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return absl::NotFoundError(absl::StrCat("cannot open ", path, ": ", strerror(errno)));
  struct stat st {};
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    close(fd);
    return absl::InvalidArgumentError(absl::StrCat(path, ": not a regular file"));
  }
  const size_t size = static_cast<size_t>(st.st_size);
  if (size < 8) {
    close(fd);
    return corrupt(absl::StrCat("file is ", size, " bytes, shorter than the 8-byte header length"));
  }
  void* map = mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  close(fd);
  if (map == MAP_FAILED) return absl::InternalError(absl::StrCat("mmap ", path, ": ", strerror(errno)));

  SafetensorsReader r;
  r.path_ = path;
  r.map_ = map;
  r.map_size_ = size;
  const auto* base = static_cast<const std::byte*>(map);

  uint64_t header_len = 0;
  std::memcpy(&header_len, base, 8);  // little-endian on every platform we build for
  if (header_len > kMaxHeaderBytes) return corrupt(absl::StrCat("header length ", header_len, " is too large"));
  if (8 + header_len > size) {
    return corrupt(
        absl::StrCat("header length ", header_len, " runs past the end of the ", size, "-byte file (truncated?)"));
  }
  const std::string_view header(reinterpret_cast<const char*>(base + 8), header_len);
  r.data_ = base + 8 + header_len;
  const size_t data_size = size - 8 - header_len;

  nlohmann::json j = nlohmann::json::parse(header, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return corrupt("header is not a JSON object");

  for (auto it = j.begin(); it != j.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      if (!v.is_object()) return corrupt("__metadata__ is not an object");
      for (auto m = v.begin(); m != v.end(); ++m) {
        if (!m.value().is_string()) return corrupt(absl::StrCat("__metadata__.", m.key(), " is not a string"));
        r.metadata_[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) { return corrupt(absl::StrCat("tensor '", name, "': ", why)); };
    if (!v.is_object()) return bad("entry is not an object");
    if (!v.contains("dtype") || !v["dtype"].is_string()) return bad("missing dtype");
    if (!v.contains("shape") || !v["shape"].is_array()) return bad("missing shape");
    if (!v.contains("data_offsets") || !v["data_offsets"].is_array() || v["data_offsets"].size() != 2) {
      return bad("data_offsets must be [begin, end]");
    }
    TensorInfo info;
    info.name = name;
    if (!ParseDType(v["dtype"].get<std::string>(), info.dtype)) {
      return bad(absl::StrCat("unsupported dtype ", v["dtype"].get<std::string>()));
    }
    uint64_t numel = 1;
    for (const auto& d : v["shape"]) {
      if (!d.is_number_unsigned()) return bad("shape entries must be non-negative integers");
      const uint64_t dim = d.get<uint64_t>();
      if (dim != 0 && numel > std::numeric_limits<uint64_t>::max() / dim) return bad("shape overflows");
      numel *= dim;
      info.shape.push_back(static_cast<int64_t>(dim));
    }
    for (const auto& o : v["data_offsets"]) {
      if (!o.is_number_unsigned()) return bad("data_offsets must be non-negative integers");
    }
    info.begin = v["data_offsets"][0].get<uint64_t>();
    info.end = v["data_offsets"][1].get<uint64_t>();
    if (info.begin > info.end) return bad("data_offsets begin > end");
    const size_t elem = DTypeSize(info.dtype);
    if (numel > std::numeric_limits<uint64_t>::max() / elem || numel * elem != info.end - info.begin) {
      return bad(absl::StrCat("holds ", info.end - info.begin, " bytes but dtype x shape needs ", numel * elem));
    }
    r.tensors_.push_back(std::move(info));
  }

  // The tensors must tile [0, data_size) with neither gaps nor overlaps.
  std::sort(r.tensors_.begin(), r.tensors_.end(), [](const TensorInfo& a, const TensorInfo& b) {
    return a.begin < b.begin || (a.begin == b.begin && a.end < b.end);
  });
  size_t expect = 0;
  for (const TensorInfo& t : r.tensors_) {
    if (t.begin != expect) {
      return corrupt(absl::StrCat("tensor '", t.name, "' starts at byte ", t.begin, ", expected ", expect,
                                  " (offsets overlap or leave a gap)"));
    }
    expect = t.end;
  }
  if (expect != data_size) {
    return corrupt(absl::StrCat("tensors cover ", expect, " bytes but the data region holds ", data_size,
                                expect > data_size ? " (truncated?)" : " (trailing bytes)"));
  }
  for (size_t i = 0; i < r.tensors_.size(); ++i) r.by_name_[r.tensors_[i].name] = i;
  return r;
}

const TensorInfo* SafetensorsReader::Find(std::string_view name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : &tensors_[it->second];
}

std::span<const std::byte> SafetensorsReader::Data(const TensorInfo& info) const {
  return {data_ + info.begin, info.end - info.begin};
}

absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const TensorToWrite& t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    const size_t nbytes = static_cast<size_t>(numel) * DTypeSize(t.dtype);
    if (nbytes != t.bytes.size()) {
      return absl::InvalidArgumentError(
          absl::StrCat("tensor '", t.name, "': ", t.bytes.size(), " bytes given, shape needs ", nbytes));
    }
    if (header.contains(t.name)) return absl::InvalidArgumentError(absl::StrCat("duplicate tensor '", t.name, "'"));
    header[t.name] = {{"dtype", DTypeName(t.dtype)}, {"shape", t.shape}, {"data_offsets", {offset, offset + nbytes}}};
    offset += nbytes;
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');  // keep the data region 8-byte aligned
  const uint64_t header_len = text.size();

  std::vector<std::string_view> parts = {std::string_view(reinterpret_cast<const char*>(&header_len), 8), text};
  for (const TensorToWrite& t : tensors)
    parts.emplace_back(reinterpret_cast<const char*>(t.bytes.data()), t.bytes.size());
  return WriteFileParts(path, parts);
}

absl::Status FileWriteError(const std::string& what, const std::string& path, int err) {
  const std::string message = absl::StrCat(what, " ", path, ": ", strerror(err));
  if (err == ENOSPC || err == EDQUOT) return absl::ResourceExhaustedError(message);
  if (err == EACCES || err == EPERM || err == EROFS) return absl::PermissionDeniedError(message);
  return absl::DataLossError(message);
}

absl::Status WriteFileParts(const std::string& path, std::span<const std::string_view> parts) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return FileWriteError("cannot create", path, errno);
  for (std::string_view part : parts) {
    while (!part.empty()) {
      const ssize_t n = ::write(fd, part.data(), part.size());
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const int err = n < 0 ? errno : EIO;
        ::close(fd);
        ::unlink(path.c_str());
        return FileWriteError("cannot write", path, err);
      }
      part.remove_prefix(static_cast<size_t>(n));
    }
  }
  if (::close(fd) != 0) {
    const int err = errno;
    ::unlink(path.c_str());
    return FileWriteError("cannot write", path, err);
  }
  return absl::OkStatus();
}

}  // namespace gpt2
