// The safetensors file format (Hugging Face): an 8-byte little-endian header length N, N bytes of
// JSON {name: {dtype, shape, data_offsets: [begin, end)}} with an optional string-only
// "__metadata__", then the tensors' little-endian, row-major bytes. No libtorch here.
//
// The reader maps the file and validates all of it before handing out a single byte: offsets must
// tile the data region exactly (as the reference implementation demands), sizes must agree with
// dtype x shape, and nothing may point outside the file. A corrupt or truncated file gives an
// InvalidArgument/DataLoss status that names the file and what is wrong; it never crashes.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace gpt2 {

enum class DType { kF64, kF32, kF16, kBF16, kI64, kI32, kI16, kI8, kU8, kBool };

// Name as written in the header ("F32", "BF16", ...) and size in bytes of one element.
std::string_view DTypeName(DType dtype);
size_t DTypeSize(DType dtype);

struct TensorInfo {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  size_t begin = 0;  // byte offsets into the data region
  size_t end = 0;
  int64_t numel() const;
};

class SafetensorsReader {
 public:
  // Maps and validates `path`. Thread-safe to read from once open.
  static absl::StatusOr<SafetensorsReader> Open(const std::string& path);

  SafetensorsReader(SafetensorsReader&&) noexcept;
  SafetensorsReader& operator=(SafetensorsReader&&) noexcept;
  ~SafetensorsReader();

  const std::string& path() const { return path_; }
  // In header order of data offsets.
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  // nullptr when absent.
  const TensorInfo* Find(std::string_view name) const;
  std::span<const std::byte> Data(const TensorInfo& info) const;
  const std::map<std::string, std::string>& metadata() const { return metadata_; }

 private:
  SafetensorsReader() = default;
  std::string path_;
  void* map_ = nullptr;
  size_t map_size_ = 0;
  const std::byte* data_ = nullptr;  // start of the data region inside the mapping
  std::vector<TensorInfo> tensors_;
  std::map<std::string, size_t, std::less<>> by_name_;
  std::map<std::string, std::string> metadata_;
};

struct TensorToWrite {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  std::span<const std::byte> bytes;  // numel * DTypeSize(dtype) bytes, row-major little-endian
};

// Writes `parts`, one after another, to `path` (created or truncated) and closes it. Errors carry
// the OS's reason and name the file: RESOURCE_EXHAUSTED for a full disk or quota ("No space left
// on device"), PERMISSION_DENIED, else DATA_LOSS; the partial file is removed.
absl::Status WriteFileParts(const std::string& path, std::span<const std::string_view> parts);
// The status for a failed write (or sync) of `path` with errno `err`: "<what> <path>: <reason>",
// coded as WriteFileParts's errors are.
absl::Status FileWriteError(const std::string& what, const std::string& path, int err);
inline absl::Status WriteFileBytes(const std::string& path, std::string_view bytes) {
  return WriteFileParts(path, std::span<const std::string_view>(&bytes, 1));
}

// Writes the tensors in the order given. The file is written to `path` directly; callers that need
// atomicity write into a temporary directory and rename it (see CheckpointWriter).
absl::Status WriteSafetensors(const std::string& path, std::span<const TensorToWrite> tensors,
                              const std::map<std::string, std::string>& metadata);

}  // namespace gpt2
