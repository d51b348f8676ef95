#include "worker/model/hf_checkpoint.h"

#include <torch/utils.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <set>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"
#include "worker/model/safetensors.h"
#include "worker/model/tensor_file.h"

namespace gpt2 {
namespace fs = std::filesystem;
namespace {

constexpr std::string_view kPrefix = "transformer.";

// Hugging Face's GPT-2 uses Conv1D for these four: weight stored (in, out), nn.Linear's transposed.
bool IsConv1DWeight(std::string_view name) {
  return name.ends_with(".attn.c_attn.weight") || name.ends_with(".attn.c_proj.weight") ||
         name.ends_with(".mlp.c_fc.weight") || name.ends_with(".mlp.c_proj.weight");
}

// Non-parameter buffers older checkpoints carry: the causal mask and its fill value.
bool IsMaskBuffer(std::string_view name) { return name.ends_with(".attn.bias") || name.ends_with(".attn.masked_bias"); }

// The weight files of a checkpoint directory: one model.safetensors, or the shards an index names.
absl::StatusOr<std::vector<SafetensorsReader>> OpenWeightFiles(const fs::path& dir) {
  std::vector<SafetensorsReader> files;
  const fs::path single = dir / "model.safetensors";
  const fs::path index = dir / "model.safetensors.index.json";
  if (fs::exists(single)) {
    absl::StatusOr<SafetensorsReader> r = SafetensorsReader::Open(single.string());
    if (!r.ok()) return r.status();
    files.push_back(*std::move(r));
  } else if (fs::exists(index)) {
    std::ifstream in(index);
    nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.contains("weight_map") || !j["weight_map"].is_object()) {
      return absl::DataLossError(absl::StrCat(index.string(), ": no weight_map object"));
    }
    std::set<std::string> shards;
    for (auto& [_, file] : j["weight_map"].items()) {
      if (!file.is_string())
        return absl::DataLossError(absl::StrCat(index.string(), ": weight_map values must be file names"));
      shards.insert(file.get<std::string>());
    }
    for (const std::string& shard : shards) {
      if (shard.find('/') != std::string::npos)
        return absl::DataLossError(absl::StrCat(index.string(), ": shard '", shard, "' is not a plain file name"));
      absl::StatusOr<SafetensorsReader> r = SafetensorsReader::Open((dir / shard).string());
      if (!r.ok()) return r.status();
      files.push_back(*std::move(r));
    }
  } else if (fs::exists(dir / "pytorch_model.bin")) {
    return absl::FailedPreconditionError(
        absl::StrCat(dir.string(),
                     " holds pytorch_model.bin (pickle), which we do not read: convert it with "
                     "transformers (model.save_pretrained(dir, safe_serialization=True))"));
  } else {
    return absl::NotFoundError(absl::StrCat("no model.safetensors in ", dir.string()));
  }
  return files;
}

}  // namespace

absl::Status LoadHfWeights(GPT& model, const std::string& dir) {
  absl::StatusOr<std::vector<SafetensorsReader>> files = OpenWeightFiles(dir);
  if (!files.ok()) return files.status();
  // Where each stored tensor lives, under its name without the prefix.
  std::map<std::string, std::pair<const SafetensorsReader*, const TensorInfo*>> stored;
  for (const SafetensorsReader& f : *files) {
    for (const TensorInfo& info : f.tensors()) {
      std::string name = info.name.starts_with(kPrefix) ? info.name.substr(kPrefix.size()) : info.name;
      if (!stored.emplace(name, std::pair{&f, &info}).second) {
        return absl::DataLossError(absl::StrCat(f.path(), ": tensor '", name, "' appears twice"));
      }
    }
  }

  const GPTConfig& cfg = model->config();
  // Read and check everything first; copy into the model only when all of it is good.
  std::vector<std::pair<torch::Tensor, torch::Tensor>> copies;  // (parameter, value)
  std::set<std::string> used;
  for (auto& item : model->named_parameters()) {
    const std::string name = item.key().substr(kPrefix.size());
    torch::Tensor& param = item.value();
    auto it = stored.find(name);
    if (it == stored.end()) {
      return absl::NotFoundError(
          absl::StrCat("checkpoint ", dir, " has no tensor '", name, "' (nor '", std::string(kPrefix), name, "')"));
    }
    used.insert(name);
    const auto [file, info] = it->second;
    absl::StatusOr<torch::Tensor> value = ReadFloatTensor(*file, *info);
    if (!value.ok()) return value.status();
    if (IsConv1DWeight(name)) *value = value->t();
    std::vector<int64_t> want = param.sizes().vec();
    if (name == "wte.weight") want[0] = cfg.vocab_size;  // files hold the real vocabulary only
    if (value->sizes().vec() != want) {
      std::vector<int64_t> stored_shape = info->shape;
      return absl::InvalidArgumentError(absl::StrCat(
          file->path(), ": tensor '", info->name, "' has shape [", absl::StrJoin(stored_shape, ", "), "], the config (",
          cfg.n_layer, " layers, ", cfg.n_embd, " channels, vocab ", cfg.vocab_size, ") needs [",
          absl::StrJoin(IsConv1DWeight(name) ? std::vector<int64_t>{want[1], want[0]} : want, ", "), "]"));
    }
    copies.emplace_back(param, *value);
  }
  for (const auto& [name, where] : stored) {
    if (used.count(name) || IsMaskBuffer(name)) continue;
    if (name == "lm_head.weight") {
      absl::StatusOr<torch::Tensor> head = ReadFloatTensor(*where.first, *where.second);
      if (!head.ok()) return head.status();
      const auto wte = stored.find("wte.weight");
      absl::StatusOr<torch::Tensor> emb = ReadFloatTensor(*wte->second.first, *wte->second.second);
      if (!emb.ok()) return emb.status();
      if (!head->sizes().equals(emb->sizes()) || !torch::equal(*head, *emb)) {
        return absl::InvalidArgumentError(absl::StrCat(where.first->path(),
                                                       ": lm_head.weight differs from wte.weight; "
                                                       "GPT-2 ties them and untied heads are not supported"));
      }
      continue;
    }
    return absl::InvalidArgumentError(absl::StrCat(where.first->path(), ": unexpected tensor '", where.second->name,
                                                   "' (not part of a GPT-2 with this config)"));
  }

  torch::NoGradGuard no_grad;
  for (auto& [param, value] : copies) {
    if (value.size(0) != param.size(0)) {  // wte: the padded rows are zero, never used
      param.zero_();
      param.slice(0, 0, value.size(0)).copy_(value);
    } else {
      param.copy_(value);
    }
  }
  return absl::OkStatus();
}

absl::StatusOr<GPT> LoadHfModel(const std::string& dir) {
  if (!fs::is_directory(dir)) return absl::NotFoundError(absl::StrCat("model directory ", dir, " does not exist"));
  absl::StatusOr<GPTConfig> config = ReadHfConfig((fs::path(dir) / "config.json").string());
  if (!config.ok()) return config.status();
  GPT model(*config);
  if (absl::Status s = LoadHfWeights(model, dir); !s.ok()) return s;
  model->eval();
  return model;
}

absl::Status SaveHfModel(GPT& model, const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir, ": ", ec.message()));
  const GPTConfig& cfg = model->config();

  std::vector<std::pair<std::string, at::Tensor>> out;
  for (auto& item : model->named_parameters()) {
    const std::string& name = item.key();
    torch::Tensor t = item.value().detach().to(torch::kCPU, torch::kFloat);
    if (name.ends_with("wte.weight")) t = t.slice(0, 0, cfg.vocab_size);
    if (IsConv1DWeight(name)) t = t.t();
    out.emplace_back(name, t);
  }
  if (absl::Status s = WriteTensors((fs::path(dir) / "model.safetensors").string(), out); !s.ok()) return s;
  return WriteFileBytes((fs::path(dir) / "config.json").string(), ConfigToHfJson(cfg));
}

}  // namespace gpt2
