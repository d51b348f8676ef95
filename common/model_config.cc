#include "common/model_config.h"

#include <fstream>
#include <sstream>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "nlohmann/json.hpp"

namespace gpt2 {

int64_t GPTConfig::NumParameters() const {
  const int64_t C = n_embd, L = n_layer;
  const int64_t per_block = 2 * C                            // ln_1
                            + C * 3 * C + 3 * C              // attn.c_attn
                            + C * C + C                      // attn.c_proj
                            + 2 * C                          // ln_2
                            + C * mlp_width() + mlp_width()  // mlp.c_fc
                            + mlp_width() * C + C;           // mlp.c_proj
  return padded_vocab_size() * C + n_positions * C + L * per_block + 2 * C;
}

double GPTConfig::FlopsPerToken(int64_t seq_len) const {
  const double n = static_cast<double>(NumParameters() - n_positions * n_embd);
  return 6.0 * n + 12.0 * n_layer * n_head * head_dim() * static_cast<double>(seq_len);
}

absl::Status Validate(const GPTConfig& c) {
  auto bad = [](std::string_view field, std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("model config: ", std::string(field), " ", std::string(why)));
  };
  if (c.n_layer <= 0) return bad("n_layer", "must be > 0");
  if (c.n_head <= 0) return bad("n_head", "must be > 0");
  if (c.n_embd <= 0) return bad("n_embd", "must be > 0");
  if (c.n_embd % c.n_head != 0) return bad("n_embd", "must be divisible by n_head");
  if (c.n_positions <= 0) return bad("n_positions", "must be > 0");
  if (c.vocab_size <= 0 || c.vocab_size > 65535) {
    // Token shards store uint16 ids.
    return bad("vocab_size", "must be in [1, 65535]");
  }
  if (c.n_inner < 0) return bad("n_inner", "must be >= 0");
  if (!(c.layer_norm_epsilon > 0)) return bad("layer_norm_epsilon", "must be > 0");
  return absl::OkStatus();
}

absl::StatusOr<GPTConfig> PresetConfig(std::string_view name) {
  GPTConfig c;
  if (name == "gpt2") {
    c.n_layer = 12, c.n_head = 12, c.n_embd = 768;
  } else if (name == "gpt2-medium") {
    c.n_layer = 24, c.n_head = 16, c.n_embd = 1024;
  } else if (name == "gpt2-large") {
    c.n_layer = 36, c.n_head = 20, c.n_embd = 1280;
  } else if (name == "gpt2-xl") {
    c.n_layer = 48, c.n_head = 25, c.n_embd = 1600;
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat("unknown model preset '", std::string(name), "'; known: ", absl::StrJoin(PresetNames(), ", ")));
  }
  return c;
}

std::vector<std::string> PresetNames() { return {"gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl"}; }

absl::StatusOr<GPTConfig> ConfigFromHfJson(std::string_view json_text) {
  nlohmann::json j = nlohmann::json::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    return absl::InvalidArgumentError("config.json: not a JSON object");
  }
  auto bad = [](std::string_view field, std::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat("config.json: ", std::string(field), ": ", std::string(why)));
  };
  if (j.contains("model_type") && j["model_type"] != "gpt2") {
    return bad("model_type", absl::StrCat("expected \"gpt2\", got ", j["model_type"].dump()));
  }
  GPTConfig c;
  auto read_int = [&](const char* field, int64_t& out, bool required) -> absl::Status {
    if (!j.contains(field) || j[field].is_null()) {
      return required ? bad(field, "missing") : absl::OkStatus();
    }
    if (!j[field].is_number_integer()) return bad(field, "must be an integer");
    out = j[field].get<int64_t>();
    return absl::OkStatus();
  };
  for (auto [field, out, required] : {std::tuple{"n_layer", &c.n_layer, true},
                                      {"n_head", &c.n_head, true},
                                      {"n_embd", &c.n_embd, true},
                                      {"n_positions", &c.n_positions, true},
                                      {"vocab_size", &c.vocab_size, true},
                                      {"n_inner", &c.n_inner, false}}) {
    if (absl::Status s = read_int(field, *out, required); !s.ok()) return s;
  }
  if (j.contains("layer_norm_epsilon")) {
    if (!j["layer_norm_epsilon"].is_number()) return bad("layer_norm_epsilon", "must be a number");
    c.layer_norm_epsilon = j["layer_norm_epsilon"].get<double>();
  }
  // What our module implements; anything else would load but compute another function.
  if (j.contains("activation_function")) {
    const auto& a = j["activation_function"];
    if (a != "gelu_new" && a != "gelu_pytorch_tanh") {
      return bad("activation_function", absl::StrCat("only gelu_new (GELU, tanh) is supported, got ", a.dump()));
    }
  }
  auto require_bool = [&](const char* field, bool want) -> absl::Status {
    if (j.contains(field) && j[field].is_boolean() && j[field].get<bool>() != want) {
      return bad(field, absl::StrCat("only ", want ? "true" : "false", " is supported"));
    }
    return absl::OkStatus();
  };
  for (auto [field, want] : {std::pair{"scale_attn_weights", true},
                             {"scale_attn_by_inverse_layer_idx", false},
                             {"reorder_and_upcast_attn", false},
                             {"add_cross_attention", false},
                             {"tie_word_embeddings", true}}) {
    if (absl::Status s = require_bool(field, want); !s.ok()) return s;
  }
  if (absl::Status s = Validate(c); !s.ok()) return s;
  return c;
}

std::string ConfigToHfJson(const GPTConfig& c) {
  nlohmann::ordered_json j;
  j["architectures"] = {"GPT2LMHeadModel"};
  j["model_type"] = "gpt2";
  j["vocab_size"] = c.vocab_size;
  j["n_positions"] = c.n_positions;
  j["n_ctx"] = c.n_positions;
  j["n_embd"] = c.n_embd;
  j["n_layer"] = c.n_layer;
  j["n_head"] = c.n_head;
  j["n_inner"] = c.n_inner > 0 ? nlohmann::ordered_json(c.n_inner) : nlohmann::ordered_json(nullptr);
  j["activation_function"] = "gelu_new";
  j["layer_norm_epsilon"] = c.layer_norm_epsilon;
  j["initializer_range"] = 0.02;
  j["resid_pdrop"] = 0.0;
  j["embd_pdrop"] = 0.0;
  j["attn_pdrop"] = 0.0;
  j["scale_attn_weights"] = true;
  j["scale_attn_by_inverse_layer_idx"] = false;
  j["reorder_and_upcast_attn"] = false;
  j["tie_word_embeddings"] = true;
  j["bos_token_id"] = kEndOfTextToken;
  j["eos_token_id"] = kEndOfTextToken;
  j["torch_dtype"] = "float32";
  j["use_cache"] = true;
  return j.dump(2) + "\n";
}

absl::StatusOr<GPTConfig> ReadHfConfig(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  absl::StatusOr<GPTConfig> c = ConfigFromHfJson(buf.str());
  if (!c.ok()) {
    return absl::Status(c.status().code(), absl::StrCat(path, ": ", c.status().message()));
  }
  return c;
}

}  // namespace gpt2
