// Data-parallel collectives over c10d: Gloo on CPU, NCCL on CUDA (docs/collectives.md), with a
// TCPStore rendezvous at the master's address. A world of one needs no peers and no network.
//
// Every collective blocks until done or until the timeout: a peer that died makes the others fail
// with an exception (c10::DistBackendError, std::runtime_error, ...) within the timeout, never hang.
// A group that failed is dead: callers abandon the run (gpt2d restarts it from a checkpoint).
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/core/Device.h>

#include <chrono>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace gpt2 {

struct DistOptions {
  int rank = 0;
  int world_size = 1;
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::chrono::milliseconds timeout = std::chrono::minutes(5);
  // A world of one is the identity, with no rendezvous and no backend, unless this is set: then it
  // builds the device's backend (NCCL, Gloo) like any world, so that a check can prove NCCL
  // initialises and reduces on a machine with one GPU (tests/tools/collectives.cc).
  bool backend_when_alone = false;
};

class ProcessGroup {
 public:
  // Rendezvous with the other ranks (all must call it) and build the backend for `device`.
  static absl::StatusOr<std::unique_ptr<ProcessGroup>> Create(const DistOptions& options, c10::Device device);
  virtual ~ProcessGroup() = default;

  virtual int rank() const = 0;
  virtual int world_size() const = 0;
  // "nccl", "gloo", or "local" for a world of one without a backend.
  virtual std::string backend_name() const = 0;
  // In place: each tensor becomes the mean over ranks. Gradients go through here, flattened into
  // buckets of about 25M elements so that a step costs a few collectives, not one per tensor.
  virtual void AllReduceMean(std::vector<at::Tensor>& tensors) = 0;
  // In place: elementwise sum over ranks.
  virtual void AllReduceSum(at::Tensor& tensor) = 0;
  virtual void Broadcast(at::Tensor& tensor, int root) = 0;
  virtual void Barrier() = 0;
};

}  // namespace gpt2
