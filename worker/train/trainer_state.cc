#include "worker/train/trainer_state.h"

#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "nlohmann/json.hpp"

namespace gpt2 {

std::string TrainerStateToJson(const TrainerState& s) {
  nlohmann::json j;
  j["step"] = s.step;
  j["tokens_seen"] = s.tokens_seen;
  j["world_size"] = s.world_size;
  j["micro_batch"] = s.micro_batch;
  j["seq_len"] = s.seq_len;
  j["loader_positions"] = nlohmann::json::array();
  for (auto [shard, offset] : s.loader_positions)
    j["loader_positions"].push_back({{"shard", shard}, {"offset", offset}});
  j["val_loss"] = s.val_loss ? nlohmann::json(*s.val_loss) : nlohmann::json(nullptr);
  j["rng"] = {{"cpu", s.rng_cpu}, {"cuda", s.rng_cuda}};
  j["spec"] = nlohmann::json::parse(s.spec_json.empty() ? "{}" : s.spec_json, nullptr, false);
  j["metrics"] = nlohmann::json::parse(s.metrics_json.empty() ? "{}" : s.metrics_json, nullptr, false);
  return j.dump(2) + "\n";
}

absl::StatusOr<TrainerState> ParseTrainerState(std::string_view text, const std::string& where) {
  const nlohmann::json j = nlohmann::json::parse(text, nullptr, /*allow_exceptions=*/false);
  auto bad = [&](const std::string& why) { return absl::DataLossError(absl::StrCat(where, ": ", why)); };
  if (j.is_discarded() || !j.is_object()) return bad("not valid JSON");
  // Integers only (get<int64_t>() would truncate 2.5 and wrap 1e30).
  auto integer = [&](const nlohmann::json& v, const char* name, int64_t min,
                     int64_t max = std::numeric_limits<int64_t>::max()) -> absl::StatusOr<int64_t> {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(max)))
      return bad(absl::StrCat(name, " must be an integer"));
    const int64_t n = v.get<int64_t>();
    if (n < min || n > max) return bad(absl::StrCat(name, " out of range: ", n));
    return n;
  };
  try {
    TrainerState s;
    absl::StatusOr<int64_t> n = integer(j.at("step"), "step", 0);
    if (!n.ok()) return n.status();
    s.step = *n;
    if (n = integer(j.at("tokens_seen"), "tokens_seen", 0); !n.ok()) return n.status();
    s.tokens_seen = *n;
    if (n = integer(j.at("world_size"), "world_size", 1, std::numeric_limits<int>::max()); !n.ok()) return n.status();
    s.world_size = static_cast<int>(*n);
    if (n = integer(j.at("micro_batch"), "micro_batch", 0); !n.ok()) return n.status();
    s.micro_batch = *n;
    if (n = integer(j.at("seq_len"), "seq_len", 0); !n.ok()) return n.status();
    s.seq_len = *n;
    const nlohmann::json& positions = j.at("loader_positions");
    if (!positions.is_array()) return bad("loader_positions must be a list");
    for (const auto& p : positions) {
      if (!p.is_object()) return bad("loader_positions: each must be {shard, offset}");
      absl::StatusOr<int64_t> shard = integer(p.at("shard"), "loader_positions.shard", 0);
      if (!shard.ok()) return shard.status();
      absl::StatusOr<int64_t> offset = integer(p.at("offset"), "loader_positions.offset", 0);
      if (!offset.ok()) return offset.status();
      s.loader_positions.emplace_back(*shard, *offset);
    }
    if (static_cast<int64_t>(s.loader_positions.size()) != s.world_size)
      return bad(absl::StrCat(s.loader_positions.size(), " loader positions for world size ", s.world_size));
    const nlohmann::json& val = j.at("val_loss");
    if (!val.is_null()) {
      if (!val.is_number()) return bad("val_loss must be a number or null");
      s.val_loss = val.get<double>();
    }
    s.rng_cpu = j.at("rng").at("cpu").get<std::string>();
    s.rng_cuda = j.at("rng").at("cuda").get<std::vector<std::string>>();
    s.spec_json = j.at("spec").dump();
    s.metrics_json = j.value("metrics", nlohmann::json::object()).dump();
    return s;
  } catch (const nlohmann::json::exception& e) {
    return bad(e.what());
  }
}

absl::StatusOr<TrainerState> ReadTrainerState(const std::string& dir) {
  const std::filesystem::path path = std::filesystem::path(dir) / kTrainerStateFile;
  std::ifstream in(path, std::ios::binary);
  if (!in)
    return absl::NotFoundError(absl::StrCat(dir, " is not a training checkpoint (no ", kTrainerStateFile, ")"));
  std::ostringstream text;
  text << in.rdbuf();
  return ParseTrainerState(text.str(), path.string());
}

}  // namespace gpt2
