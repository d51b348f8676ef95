// gpt2_logits MODEL_DIR TOKENS_JSON OUT.safetensors [DEVICE [bf16]]
// Runs our GPT-2 on a batch of token rows (a JSON array of equal-length arrays) and writes the
// logits over the real vocabulary, (B,T,V) float32, as tensor "logits". On DEVICE (default cpu;
// cuda:N), in fp32 or under bf16 autocast as training runs it. For the reference tests and
// scripts/gpu-check.sh.
#include <ATen/autocast_mode.h>
#include <torch/utils.h>

#include <fstream>
#include <iostream>

#include "nlohmann/json.hpp"
#include "worker/model/hf_checkpoint.h"
#include "worker/model/safetensors.h"

int main(int argc, char** argv) {
  if (argc < 4 || argc > 6 || (argc == 6 && std::string(argv[5]) != "bf16")) {
    std::cerr << "usage: gpt2_logits MODEL_DIR TOKENS_JSON OUT.safetensors [DEVICE [bf16]]\n";
    return 2;
  }
  absl::StatusOr<gpt2::GPT> model = gpt2::LoadHfModel(argv[1]);
  if (!model.ok()) {
    std::cerr << "error: " << model.status().message() << "\n";
    return 1;
  }
  std::ifstream in(argv[2]);
  auto rows = nlohmann::json::parse(in).get<std::vector<std::vector<int64_t>>>();
  std::vector<int64_t> flat;
  for (const auto& r : rows) flat.insert(flat.end(), r.begin(), r.end());
  const torch::Device device(argc >= 5 ? argv[4] : "cpu");
  (*model)->to(device);
  torch::Tensor idx = torch::tensor(flat, torch::kLong).view({static_cast<int64_t>(rows.size()), -1}).to(device);
  torch::InferenceMode guard;
  const bool bf16 = argc == 6;
  if (bf16) {
    at::autocast::set_autocast_enabled(device.type(), true);
    at::autocast::set_autocast_dtype(device.type(), at::kBFloat16);
  }
  torch::Tensor logits = (*model)->forward(idx).slice(-1, 0, (*model)->config().vocab_size);
  logits = logits.to(torch::kCPU, torch::kFloat).contiguous();
  gpt2::TensorToWrite t{"logits",
                        gpt2::DType::kF32,
                        logits.sizes().vec(),
                        {static_cast<const std::byte*>(logits.data_ptr()), static_cast<size_t>(logits.nbytes())}};
  absl::Status s = gpt2::WriteSafetensors(argv[3], {&t, 1}, {{"format", "pt"}});
  if (!s.ok()) {
    std::cerr << "error: " << s.message() << "\n";
    return 1;
  }
  return 0;
}
