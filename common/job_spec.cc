#include "common/job_spec.h"

#include <google/protobuf/util/json_util.h>
#include <yaml-cpp/yaml.h>

#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace gpt2 {
namespace {

enum class ScalarKind { kString, kInt, kFloat };

// YAML 1.2's core schema: [-+]?[0-9]+ is an integer, [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?
// a float (scanned, not std::regex: its matcher recurses per character and a long scalar would
// overflow the stack).
ScalarKind KindOf(std::string_view s) {
  size_t i = 0;
  auto digits = [&] {
    const size_t from = i;
    while (i < s.size() && s[i] >= '0' && s[i] <= '9') ++i;
    return i - from;
  };
  if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
  const size_t whole = digits();
  if (i == s.size()) return whole > 0 ? ScalarKind::kInt : ScalarKind::kString;
  size_t fraction = 0;
  if (s[i] == '.') {
    ++i;
    fraction = digits();
  }
  if (whole == 0 && fraction == 0) return ScalarKind::kString;
  if (i < s.size() && (s[i] == 'e' || s[i] == 'E')) {
    ++i;
    if (i < s.size() && (s[i] == '-' || s[i] == '+')) ++i;
    if (digits() == 0) return ScalarKind::kString;
  }
  return i == s.size() ? ScalarKind::kFloat : ScalarKind::kString;
}

// YAML -> JSON with YAML 1.2 core-schema typing of plain scalars; quoted scalars stay strings.
nlohmann::json YamlToJson(const YAML::Node& node) {
  switch (node.Type()) {
    case YAML::NodeType::Map: {
      nlohmann::json j = nlohmann::json::object();
      for (const auto& kv : node) j[kv.first.as<std::string>()] = YamlToJson(kv.second);
      return j;
    }
    case YAML::NodeType::Sequence: {
      nlohmann::json j = nlohmann::json::array();
      for (const auto& v : node) j.push_back(YamlToJson(v));
      return j;
    }
    case YAML::NodeType::Scalar: {
      const std::string s = node.Scalar();
      if (node.Tag() == "!") return s;  // quoted
      if (s == "true" || s == "True" || s == "TRUE") return true;
      if (s == "false" || s == "False" || s == "FALSE") return false;
      if (s == "null" || s == "Null" || s == "NULL" || s == "~") return nullptr;
      // Out of range (1e999, 1e-999, 2^63) stays a string: protobuf's JSON parser then says why.
      const ScalarKind kind = KindOf(s);
      try {
        if (kind == ScalarKind::kInt) return std::stoll(s);
        if (kind == ScalarKind::kFloat) return std::stod(s);
      } catch (const std::out_of_range&) {
      }
      return s;
    }
    default:
      return nullptr;
  }
}

absl::Status Invalid(std::string_view field, std::string_view why) {
  return absl::InvalidArgumentError(absl::StrCat(std::string(field), ": ", std::string(why)));
}

}  // namespace

absl::StatusOr<gpt2d::v1::TrainSpec> ParseTrainSpec(std::string_view text) {
  nlohmann::json json;
  try {
    YAML::Node root = YAML::Load(std::string(text));
    if (!root.IsMap() && !root.IsNull()) return absl::InvalidArgumentError("job spec: the top level must be a mapping");
    json = root.IsNull() ? nlohmann::json::object() : YamlToJson(root);
  } catch (const YAML::Exception& e) {
    return absl::InvalidArgumentError(absl::StrCat("job spec: not valid YAML/JSON: ", e.what()));
  }
  std::string json_text;
  try {  // YAML takes any bytes in a string; JSON (and protobuf) only UTF-8
    json_text = json.dump(-1, ' ', false, nlohmann::json::error_handler_t::strict);
  } catch (const nlohmann::json::exception&) {
    return absl::InvalidArgumentError("job spec: a string is not valid UTF-8");
  }
  gpt2d::v1::TrainSpec spec;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = false;
  auto status = google::protobuf::util::JsonStringToMessage(json_text, &spec, options);
  if (!status.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("job spec: ", std::string(status.message())));
  }
  return spec;
}

absl::StatusOr<gpt2d::v1::TrainSpec> ReadTrainSpec(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open job spec ", path));
  std::stringstream buf;
  buf << in.rdbuf();
  absl::StatusOr<gpt2d::v1::TrainSpec> spec = ParseTrainSpec(buf.str());
  if (!spec.ok()) return absl::Status(spec.status().code(), absl::StrCat(path, ": ", spec.status().message()));
  return spec;
}

absl::StatusOr<TrainConfig> ResolveTrainSpec(const gpt2d::v1::TrainSpec& spec) {
  TrainConfig c;  // its initialisers are the recipe's defaults
  if (!spec.name().empty()) c.name = spec.name();

  const auto& m = spec.model();
  absl::StatusOr<GPTConfig> model = PresetConfig(m.preset().empty() ? "gpt2" : m.preset());
  if (!model.ok()) return Invalid("model.preset", std::string(model.status().message()));
  if (m.has_n_layer()) model->n_layer = m.n_layer();
  if (m.has_n_head()) model->n_head = m.n_head();
  if (m.has_n_embd()) model->n_embd = m.n_embd();
  if (m.has_n_positions()) model->n_positions = m.n_positions();
  if (absl::Status s = Validate(*model); !s.ok()) {
    std::string msg(s.message());  // "model config: n_head must be > 0"
    return Invalid("model", msg.substr(msg.find(": ") + 2));
  }
  c.model = *model;
  c.init_from = m.init_from();

  c.data_dir = spec.data().dir();
  if (c.data_dir.empty()) return Invalid("data.dir", "required: a directory of token shards (gpt2-worker prep)");

  const auto& b = spec.batch();
  if (b.has_total_tokens()) c.total_batch_tokens = b.total_tokens();
  if (b.has_micro_batch()) c.micro_batch = b.micro_batch();
  if (b.has_seq_len()) c.seq_len = b.seq_len();
  if (spec.has_world_size()) c.world_size = spec.world_size();
  if (c.world_size < 1) return Invalid("world_size", "must be >= 1");
  if (c.micro_batch <= 0) return Invalid("batch.micro_batch", "must be > 0");
  if (c.seq_len <= 0) return Invalid("batch.seq_len", "must be > 0");
  if (c.seq_len > c.model.n_positions) {
    return Invalid(
        "batch.seq_len",
        absl::StrCat(c.seq_len, " exceeds the model's context (model.n_positions = ", c.model.n_positions, ")"));
  }
  const int64_t per_micro_step = c.micro_batch * c.seq_len * c.world_size;
  if (c.total_batch_tokens <= 0 || c.total_batch_tokens % per_micro_step != 0) {
    return Invalid("batch.total_tokens",
                   absl::StrCat(c.total_batch_tokens,
                                " must be a positive multiple of micro_batch x seq_len x world_size = ", c.micro_batch,
                                " x ", c.seq_len, " x ", c.world_size, " = ", per_micro_step));
  }

  const auto& o = spec.optimizer();
  if (o.has_max_lr()) c.max_lr = o.max_lr();
  if (o.has_min_lr_ratio()) c.min_lr_ratio = o.min_lr_ratio();
  if (o.has_warmup_steps()) c.warmup_steps = o.warmup_steps();
  if (o.has_max_steps()) c.max_steps = o.max_steps();
  if (o.has_weight_decay()) c.weight_decay = o.weight_decay();
  if (o.has_beta1()) c.beta1 = o.beta1();
  if (o.has_beta2()) c.beta2 = o.beta2();
  if (o.has_eps()) c.eps = o.eps();
  if (o.has_grad_clip()) c.grad_clip = o.grad_clip();
  if (o.has_fused()) c.fused_adamw = o.fused();
  if (!(c.max_lr > 0)) return Invalid("optimizer.max_lr", "must be > 0");
  if (!(c.min_lr_ratio >= 0 && c.min_lr_ratio <= 1)) return Invalid("optimizer.min_lr_ratio", "must be in [0, 1]");
  if (c.warmup_steps < 0) return Invalid("optimizer.warmup_steps", "must be >= 0");
  if (c.max_steps <= 0) return Invalid("optimizer.max_steps", "must be > 0");
  if (c.warmup_steps > c.max_steps) return Invalid("optimizer.warmup_steps", "must be <= optimizer.max_steps");
  if (!(c.weight_decay >= 0)) return Invalid("optimizer.weight_decay", "must be >= 0");
  if (!(c.beta1 >= 0 && c.beta1 < 1)) return Invalid("optimizer.beta1", "must be in [0, 1)");
  if (!(c.beta2 >= 0 && c.beta2 < 1)) return Invalid("optimizer.beta2", "must be in [0, 1)");
  if (!(c.eps > 0)) return Invalid("optimizer.eps", "must be > 0");
  if (!(c.grad_clip >= 0)) return Invalid("optimizer.grad_clip", "must be >= 0 (0 disables clipping)");

  const auto& e = spec.eval();
  if (e.has_val_every()) c.val_every = e.val_every();
  if (e.has_val_batches()) c.val_batches = e.val_batches();
  if (e.has_hellaswag_every()) c.hellaswag_every = e.hellaswag_every();
  c.hellaswag_path = e.hellaswag_path();
  if (e.has_hellaswag_limit()) c.hellaswag_limit = e.hellaswag_limit();
  if (e.has_sample_every()) c.sample_every = e.sample_every();
  if (e.has_sample_count()) c.sample_count = e.sample_count();
  if (e.has_sample_tokens()) c.sample_tokens = e.sample_tokens();
  if (!e.sample_prompt().empty()) c.sample_prompt = e.sample_prompt();
  for (auto [field, value] : {std::pair{"eval.val_every", c.val_every},
                              {"eval.hellaswag_every", c.hellaswag_every},
                              {"eval.hellaswag_limit", c.hellaswag_limit},
                              {"eval.sample_every", c.sample_every},
                              {"eval.sample_count", c.sample_count},
                              {"eval.sample_tokens", c.sample_tokens}}) {
    if (value < 0) return Invalid(field, "must be >= 0");
  }
  if (c.val_every > 0 && c.val_batches <= 0)
    return Invalid("eval.val_batches", "must be > 0 when eval.val_every is set");

  const auto& k = spec.checkpoint();
  c.checkpoint_dir = k.dir();
  if (k.has_every()) c.checkpoint_every = k.every();
  if (k.has_keep_last()) c.keep_last = k.keep_last();
  if (k.has_keep_best()) c.keep_best = k.keep_best();
  if (c.checkpoint_every < 0) return Invalid("checkpoint.every", "must be >= 0");
  if (c.keep_last < 1) return Invalid("checkpoint.keep_last", "must be >= 1");

  if (spec.has_seed()) c.seed = spec.seed();
  if (!spec.device().empty()) c.device = spec.device();
  const std::string_view device = c.device;
  const bool cuda_n = device.starts_with("cuda:") && device.size() > 5 && device.size() <= 9 &&
                      device.find_first_not_of("0123456789", 5) == std::string_view::npos;
  if (device != "auto" && device != "cpu" && device != "cuda" && !cuda_n)
    return Invalid("device", "must be auto, cpu, cuda or cuda:N");
  c.autocast = spec.autocast();
  if (!c.autocast.empty() && c.autocast != "bf16" && c.autocast != "fp32")
    return Invalid("autocast", "must be bf16 or fp32");
  if (spec.has_peak_flops()) c.peak_flops = spec.peak_flops();
  if (!(c.peak_flops >= 0)) return Invalid("peak_flops", "must be >= 0");
  if (spec.has_log_every()) c.log_every = spec.log_every();
  if (c.log_every < 1) return Invalid("log_every", "must be >= 1");

  google::protobuf::util::JsonPrintOptions print;
  print.preserve_proto_field_names = true;
  (void)google::protobuf::util::MessageToJsonString(spec, &c.spec_json, print);
  return c;
}

absl::StatusOr<TrainConfig> ReadTrainConfig(const std::string& path) {
  absl::StatusOr<gpt2d::v1::TrainSpec> spec = ReadTrainSpec(path);
  if (!spec.ok()) return spec.status();
  absl::StatusOr<TrainConfig> config = ResolveTrainSpec(*spec);
  if (!config.ok()) return absl::Status(config.status().code(), absl::StrCat(path, ": ", config.status().message()));
  return config;
}

}  // namespace gpt2
