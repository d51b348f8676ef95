#include "worker/train/distributed.h"

#include <ATen/ops/cat.h>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#ifdef USE_C10D_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include "absl/strings/str_cat.h"

namespace gpt2 {
namespace {

constexpr int64_t kBucketElements = 25'000'000;

// One rank alone: every collective is the identity.
class LocalGroup final : public ProcessGroup {
 public:
  int rank() const override { return 0; }
  int world_size() const override { return 1; }
  std::string backend_name() const override { return "local"; }
  void AllReduceMean(std::vector<at::Tensor>&) override {}
  void AllReduceSum(at::Tensor&) override {}
  void Broadcast(at::Tensor&, int) override {}
  void Barrier() override {}
};

// The gloo objects inside libtorch_cpu are newer than Debian's gloo headers that let us include
// ProcessGroupGloo.hpp: we hold the group only as a c10d::Backend and never touch gloo types
// (docs/collectives.md, "version skew").
class C10dGroup final : public ProcessGroup {
 public:
  C10dGroup(c10::intrusive_ptr<c10d::Store> store, c10::intrusive_ptr<c10d::Backend> backend)
      : store_(std::move(store)), backend_(std::move(backend)) {}
  ~C10dGroup() override {
    try {
      backend_->shutdown();
    } catch (...) {
      // a failed group may refuse a clean shutdown; the process is leaving anyway
    }
  }

  int rank() const override { return backend_->getRank(); }
  int world_size() const override { return backend_->getSize(); }
  std::string backend_name() const override { return backend_->getBackendName(); }

  void AllReduceMean(std::vector<at::Tensor>& tensors) override {
    // Bucket: flatten consecutive tensors, reduce, scatter back.
    size_t i = 0;
    while (i < tensors.size()) {
      size_t j = i;
      int64_t n = 0;
      std::vector<at::Tensor> flat;
      while (j < tensors.size() && (n == 0 || n + tensors[j].numel() <= kBucketElements)) {
        flat.push_back(tensors[j].reshape({-1}));
        n += tensors[j].numel();
        ++j;
      }
      std::vector<at::Tensor> bucket{at::cat(flat)};
      backend_->allreduce(bucket)->wait();
      bucket[0].div_(world_size());
      int64_t offset = 0;
      for (size_t k = i; k < j; ++k) {
        const int64_t m = tensors[k].numel();
        tensors[k].copy_(bucket[0].slice(0, offset, offset + m).view_as(tensors[k]));
        offset += m;
      }
      i = j;
    }
  }

  void AllReduceSum(at::Tensor& tensor) override {
    std::vector<at::Tensor> t{tensor};
    backend_->allreduce(t)->wait();
  }

  void Broadcast(at::Tensor& tensor, int root) override {
    std::vector<at::Tensor> t{tensor};
    c10d::BroadcastOptions o;
    o.rootRank = root;
    backend_->broadcast(t, o)->wait();
  }

  void Barrier() override { backend_->barrier()->wait(); }

 private:
  c10::intrusive_ptr<c10d::Store> store_;
  c10::intrusive_ptr<c10d::Backend> backend_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<ProcessGroup>> ProcessGroup::Create(const DistOptions& o, c10::Device device) {
  if (o.world_size < 1 || o.rank < 0 || o.rank >= o.world_size) {
    return absl::InvalidArgumentError(absl::StrCat("rank ", o.rank, " is not in a world of ", o.world_size));
  }
  if (o.world_size == 1 && !o.backend_when_alone) return std::unique_ptr<ProcessGroup>(new LocalGroup());
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(o.master_port);
    so.isServer = o.rank == 0;
    so.numWorkers = static_cast<size_t>(o.world_size);
    so.waitWorkers = true;
    so.timeout = o.timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(o.master_addr, so);
    c10::intrusive_ptr<c10d::Backend> backend;
    if (device.is_cuda()) {
#ifdef USE_C10D_NCCL
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = o.timeout;
      backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, o.rank, o.world_size, opts);
#else
      return absl::FailedPreconditionError("this build has no NCCL: CUDA training across ranks is unavailable");
#endif
    } else {
      auto opts = c10d::ProcessGroupGloo::Options::create(o.timeout);
      // Gloo binds to this host's own address: loopback when the whole world is on this machine
      // (the master is on loopback), else GLOO_SOCKET_IFNAME's interface, else the host name's.
      const bool loopback = o.master_addr == "localhost" || o.master_addr.starts_with("127.");
      const char* ifname = std::getenv("GLOO_SOCKET_IFNAME");
      opts->devices.push_back(loopback            ? c10d::ProcessGroupGloo::createDeviceForHostname(o.master_addr)
                              : ifname != nullptr ? c10d::ProcessGroupGloo::createDeviceForInterface(ifname)
                                                  : c10d::ProcessGroupGloo::createDefaultDevice());
      backend = c10::make_intrusive<c10d::ProcessGroupGloo>(store, o.rank, o.world_size, opts);
    }
    return std::unique_ptr<ProcessGroup>(new C10dGroup(store, backend));
  } catch (const c10::Error& e) {
    return absl::UnavailableError(absl::StrCat("rendezvous at ", o.master_addr, ":", o.master_port, " as rank ", o.rank,
                                               " of ", o.world_size, " failed: ", e.what_without_backtrace()));
  } catch (const std::exception& e) {
    return absl::UnavailableError(absl::StrCat("rendezvous at ", o.master_addr, ":", o.master_port, " as rank ", o.rank,
                                               " of ", o.world_size, " failed: ", e.what()));
  }
}

}  // namespace gpt2
