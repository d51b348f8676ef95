#include "worker/train/checkpoint.h"

#include <ATen/Context.h>
#include <ATen/core/Generator.h>
#include <torch/cuda.h>

#include <fcntl.h>
#include <unistd.h>
#include <mutex>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <map>
#include <sstream>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/model/safetensors.h"
#include "worker/model/tensor_file.h"

namespace gpt2 {
namespace fs = std::filesystem;
namespace {

constexpr char kOptimizerPath[] = "optimizer.safetensors";

std::string StepName(int64_t step) { return absl::StrFormat("step_%08d", step); }

// Flushes a file or directory to disk so the rename that publishes it is durable. A file system
// may report a full disk only here (delayed allocation), so the error is the OS's.
absl::Status Fsync(const fs::path& p) {
  const int fd = ::open(p.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return FileWriteError("cannot open", p.string(), errno);
  const int rc = ::fsync(fd), err = errno;
  ::close(fd);
  return rc == 0 ? absl::OkStatus() : FileWriteError("cannot sync", p.string(), err);
}

// Removes a step's temporary directory unless the step was published: a failed save (a full disk)
// leaves nothing behind that would keep the disk full.
class TempDirGuard {
 public:
  explicit TempDirGuard(fs::path dir) : dir_(std::move(dir)) {}
  ~TempDirGuard() {
    std::error_code ec;
    if (!dir_.empty()) fs::remove_all(dir_, ec);
  }
  void Published() { dir_.clear(); }

 private:
  fs::path dir_;
};

}  // namespace

absl::Status LoadTrainingCheckpoint(const std::string& dir, GPT& model, AdamW& optimizer, TrainerState* state) {
  absl::StatusOr<TrainerState> s = ReadTrainerState(dir);
  if (!s.ok()) return s.status();
  absl::StatusOr<SafetensorsReader> file = SafetensorsReader::Open((fs::path(dir) / kOptimizerPath).string());
  if (!file.ok()) return file.status();
  std::map<std::string, at::Tensor> opt_state;
  for (const TensorInfo& info : file->tensors()) {
    absl::StatusOr<at::Tensor> t = ReadFloatTensor(*file, info);
    if (!t.ok()) return t.status();
    opt_state[info.name] = *t;
  }
  // Weights first into a scratch model, so a bad file leaves `model` untouched.
  GPT scratch(model->config());
  if (absl::Status st = LoadHfWeights(scratch, dir); !st.ok()) return st;
  if (absl::Status st = optimizer.LoadState(opt_state); !st.ok()) return st;
  {
    at::NoGradGuard no_grad;
    auto src = scratch->named_parameters();
    for (auto& item : model->named_parameters()) item.value().copy_(src[item.key()]);
  }
  std::string bytes;
  if (!s->rng_cpu.empty() && absl::Base64Unescape(s->rng_cpu, &bytes)) {
    at::Tensor t = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
    std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
    at::Generator gen = at::detail::getDefaultCPUGenerator();
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(t);
  }
  for (size_t i = 0; i < s->rng_cuda.size() && i < static_cast<size_t>(torch::cuda::device_count()); ++i) {
    if (!absl::Base64Unescape(s->rng_cuda[i], &bytes)) continue;
    at::Tensor t = at::empty({static_cast<int64_t>(bytes.size())}, at::kByte);
    std::memcpy(t.data_ptr(), bytes.data(), bytes.size());
    at::Generator gen = at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(i)));
    std::lock_guard<std::mutex> lock(gen.mutex());
    gen.set_state(t);
  }
  *state = *std::move(s);
  return absl::OkStatus();
}

std::vector<std::string> ListCheckpoints(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const std::string name = e.path().filename().string();
    if (e.is_directory() && name.starts_with("step_") && fs::exists(e.path() / kTrainerStateFile))
      out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());  // zero-padded step numbers sort by step
  return out;
}

CheckpointStore::CheckpointStore(std::string dir, int64_t keep_last, bool keep_best)
    : dir_(std::move(dir)), keep_last_(keep_last), keep_best_(keep_best) {}

absl::StatusOr<std::string> CheckpointStore::Latest() const {
  std::vector<std::string> all = ListCheckpoints(dir_);
  if (all.empty()) return absl::NotFoundError(absl::StrCat("no checkpoint in ", dir_));
  return all.back();
}

absl::StatusOr<std::string> CheckpointStore::Save(GPT& model, const AdamW& optimizer, const TrainerState& state) {
  std::error_code ec;
  fs::create_directories(dir_, ec);
  if (ec) return absl::PermissionDeniedError(absl::StrCat("cannot create ", dir_, ": ", ec.message()));
  const fs::path final_dir = fs::path(dir_) / StepName(state.step);
  const fs::path tmp = fs::path(dir_) / absl::StrCat(".tmp-", StepName(state.step), "-", ::getpid());
  fs::remove_all(tmp, ec);
  TempDirGuard guard(tmp);

  if (absl::Status s = SaveHfModel(model, tmp.string()); !s.ok()) return s;
  if (absl::Status s = WriteTensors((tmp / kOptimizerPath).string(), optimizer.State()); !s.ok()) return s;
  TrainerState st = state;
  at::Tensor cpu = at::detail::getDefaultCPUGenerator().get_state();
  st.rng_cpu = absl::Base64Escape(absl::string_view(static_cast<const char*>(cpu.data_ptr()), cpu.nbytes()));
  st.rng_cuda.clear();
  for (size_t i = 0; i < static_cast<size_t>(torch::cuda::device_count()); ++i) {
    at::Tensor g =
        at::globalContext().defaultGenerator(c10::Device(c10::kCUDA, static_cast<c10::DeviceIndex>(i))).get_state();
    st.rng_cuda.push_back(absl::Base64Escape(absl::string_view(static_cast<const char*>(g.data_ptr()), g.nbytes())));
  }
  if (absl::Status s = WriteFileBytes((tmp / kTrainerStateFile).string(), TrainerStateToJson(st)); !s.ok()) return s;
  for (const auto& e : fs::directory_iterator(tmp))
    if (absl::Status s = Fsync(e.path()); !s.ok()) return s;
  if (absl::Status s = Fsync(tmp); !s.ok()) return s;
  if (fs::exists(final_dir)) fs::remove_all(final_dir, ec);  // a re-run of the same step replaces it
  fs::rename(tmp, final_dir, ec);
  if (ec) return absl::DataLossError(absl::StrCat("cannot publish ", final_dir.string(), ": ", ec.message()));
  guard.Published();
  (void)Fsync(dir_);  // the rename is done; a failed directory sync only weakens its durability
  ApplyRetention();
  return final_dir.string();
}

void CheckpointStore::ApplyRetention() {
  std::vector<std::string> all = ListCheckpoints(dir_);
  std::vector<bool> keep(all.size(), false);
  for (size_t i = all.size() - std::min<size_t>(all.size(), static_cast<size_t>(keep_last_)); i < all.size(); ++i)
    keep[i] = true;
  if (keep_best_) {
    std::optional<size_t> best;
    double best_loss = 0;
    for (size_t i = 0; i < all.size(); ++i) {
      absl::StatusOr<TrainerState> s = ReadTrainerState(all[i]);
      if (s.ok() && s->val_loss && (!best || *s->val_loss < best_loss)) best = i, best_loss = *s->val_loss;
    }
    if (best) keep[*best] = true;
  }
  std::error_code ec;
  for (size_t i = 0; i < all.size(); ++i) {
    if (!keep[i]) fs::remove_all(all[i], ec);
  }
  // Leftovers of writers that died mid-save.
  for (const auto& e : fs::directory_iterator(dir_, ec)) {
    const std::string name = e.path().filename().string();
    if (name.starts_with(".tmp-step_") && !name.ends_with(absl::StrCat("-", ::getpid()))) fs::remove_all(e.path(), ec);
  }
}

}  // namespace gpt2
