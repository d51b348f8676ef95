// Hugging Face GPT-2 checkpoints: a directory with config.json and model.safetensors (or a sharded
// model.safetensors.index.json), as transformers' save_pretrained writes and OpenAI's released
// weights are published. We read them into a GPT and write a GPT back in the same layout, so that
// transformers.GPT2LMHeadModel.from_pretrained loads what we train.
#pragma once

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "worker/model/gpt2.h"

namespace gpt2 {

// Loads config.json and the weights from `dir` onto the CPU in float32 (F16/BF16/F64 files are
// converted). Accepts names with or without the "transformer." prefix; skips the attention-mask
// buffers (.attn.bias, .attn.masked_bias); accepts lm_head.weight only if it equals wte.
// Missing tensors, wrong shapes, unknown tensors or a corrupt file -> an error naming the tensor
// and the file; the model is never partially loaded.
absl::StatusOr<GPT> LoadHfModel(const std::string& dir);

// Copies the weights in `dir` into an existing model of the same config.
absl::Status LoadHfWeights(GPT& model, const std::string& dir);

// Writes config.json and model.safetensors (float32, "transformer."-prefixed names, Conv1D
// weights as (in, out), wte cut back to vocab_size rows, no lm_head: it is tied) into `dir`,
// creating it if needed. Not atomic by itself: checkpoint writers stage into a temporary directory.
absl::Status SaveHfModel(GPT& model, const std::string& dir);

}  // namespace gpt2
