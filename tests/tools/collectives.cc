// collectives DEVICE RANK WORLD_SIZE MASTER_PORT
// One rank of a world that runs each collective of worker/train/distributed.h once through the
// device's real backend (NCCL on cuda, Gloo on cpu), a world of one included, and checks every
// result against the value it must have. Prints one JSON line:
//   {"rank":0,"world_size":1,"backend":"nccl","device":"cuda:0","max_error":0.0,"ok":true}
// or {"rank":..,"error":"..."} and exits 1. For scripts/gpu-check.sh (check 4) and its dry run.
#include <ATen/TensorOperators.h>
#include <ATen/ops/arange.h>
#include <ATen/ops/full.h>
#include <c10/core/Device.h>
#include <c10/util/Exception.h>

#include <algorithm>
#include <iostream>
#include <string>
#include <vector>

#include "nlohmann/json.hpp"
#include "worker/train/distributed.h"

namespace {

double MaxError(const at::Tensor& got, const at::Tensor& want) {
  return (got.cpu().to(at::kDouble) - want.cpu().to(at::kDouble)).abs().max().item<double>();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 5) {
    std::cerr << "usage: collectives DEVICE RANK WORLD_SIZE MASTER_PORT\n";
    return 2;
  }
  nlohmann::json out;
  try {
    const c10::Device device(argv[1]);
    gpt2::DistOptions o;
    o.rank = std::stoi(argv[2]);
    o.world_size = std::stoi(argv[3]);
    o.master_port = std::stoi(argv[4]);
    o.timeout = std::chrono::seconds(120);
    o.backend_when_alone = true;
    out = {{"rank", o.rank}, {"world_size", o.world_size}, {"device", device.str()}};
    absl::StatusOr<std::unique_ptr<gpt2::ProcessGroup>> group = gpt2::ProcessGroup::Create(o, device);
    if (!group.ok()) throw std::runtime_error(std::string(group.status().message()));
    gpt2::ProcessGroup& g = **group;
    out["backend"] = g.backend_name();
    const double r = o.rank, w = o.world_size;
    const auto f32 = at::TensorOptions().dtype(at::kFloat).device(device);
    double err = 0;

    // AllReduceMean over tensors of several shapes (one bucket): rank r holds (r+1)*v.
    std::vector<at::Tensor> grads, want;
    for (const std::vector<int64_t>& shape : {std::vector<int64_t>{3, 5}, {7}, {64, 48}}) {
      int64_t n = 1;
      for (int64_t d : shape) n *= d;
      at::Tensor v = at::arange(n, f32).view(shape) * 0.25 + 1;
      grads.push_back(v * (r + 1));
      want.push_back(v * ((w + 1) / 2));
    }
    g.AllReduceMean(grads);
    for (size_t i = 0; i < grads.size(); ++i) err = std::max(err, MaxError(grads[i], want[i]));

    // AllReduceSum: rank r holds r+1 everywhere; the sum is w(w+1)/2.
    at::Tensor sum = at::full({1000}, r + 1, f32);
    g.AllReduceSum(sum);
    err = std::max(err, MaxError(sum, at::full({1000}, w * (w + 1) / 2, f32)));

    // Broadcast from the last rank: everyone ends with its values.
    at::Tensor b = at::arange(100, f32) + r * 1000;
    g.Broadcast(b, o.world_size - 1);
    err = std::max(err, MaxError(b, at::arange(100, f32) + (w - 1) * 1000));

    g.Barrier();
    out["max_error"] = err;
    out["ok"] = err <= 1e-5;
  } catch (const c10::Error& e) {
    out["error"] = e.what_without_backtrace();
    out["ok"] = false;
  } catch (const std::exception& e) {
    out["error"] = e.what();
    out["ok"] = false;
  }
  std::cout << out.dump() << std::endl;
  return out["ok"].get<bool>() ? 0 : 1;
}
