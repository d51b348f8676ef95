#include "worker/model/tensor_file.h"

#include <ATen/ops/empty.h>

#include <cstring>

#include "absl/strings/str_cat.h"

namespace gpt2 {

absl::StatusOr<at::Tensor> ReadFloatTensor(const SafetensorsReader& file, const TensorInfo& info) {
  at::ScalarType dtype;
  switch (info.dtype) {
    case DType::kF32:
      dtype = at::kFloat;
      break;
    case DType::kF16:
      dtype = at::kHalf;
      break;
    case DType::kBF16:
      dtype = at::kBFloat16;
      break;
    case DType::kF64:
      dtype = at::kDouble;
      break;
    default:
      return absl::InvalidArgumentError(absl::StrCat(file.path(), ": tensor '", info.name, "' has dtype ",
                                                     std::string(DTypeName(info.dtype)), ", not a float type"));
  }
  at::Tensor t = at::empty(info.shape, at::TensorOptions().dtype(dtype));
  std::span<const std::byte> bytes = file.Data(info);
  std::memcpy(t.data_ptr(), bytes.data(), bytes.size());  // a copy: the mapping need not be aligned
  return t.to(at::kFloat);
}

absl::Status WriteTensors(const std::string& path, const std::vector<std::pair<std::string, at::Tensor>>& tensors) {
  std::vector<at::Tensor> host;  // keeps the CPU copies alive while writing
  std::vector<TensorToWrite> out;
  for (const auto& [name, t] : tensors) {
    DType dtype;
    switch (t.scalar_type()) {
      case at::kFloat:
        dtype = DType::kF32;
        break;
      case at::kLong:
        dtype = DType::kI64;
        break;
      case at::kByte:
        dtype = DType::kU8;
        break;
      default:
        return absl::InvalidArgumentError(absl::StrCat("tensor '", name, "': unsupported dtype for writing"));
    }
    host.push_back(t.detach().to(at::kCPU).contiguous());
    const at::Tensor& h = host.back();
    out.push_back(
        {name, dtype, h.sizes().vec(), {static_cast<const std::byte*>(h.data_ptr()), static_cast<size_t>(h.nbytes())}});
  }
  return WriteSafetensors(path, out, {{"format", "pt"}});
}

}  // namespace gpt2
