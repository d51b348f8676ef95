#include "worker/serve/engine.h"

#include <ATen/ops/arange.h>
#include <ATen/ops/cat.h>
#include <ATen/ops/equal.h>
#include <ATen/ops/log_softmax.h>
#include <ATen/ops/randn.h>
#include <ATen/ops/scaled_dot_product_attention.h>
#include <ATen/ops/zeros.h>
#include <c10/core/InferenceMode.h>
#include <torch/nn/functional/linear.h>

#include <algorithm>
#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <thread>
#include <unordered_map>

#include "absl/strings/str_cat.h"
#include "worker/model/gpt2.h"
#include "worker/model/hf_checkpoint.h"
#include "worker/model/sampling.h"
#include "worker/serve/completion_request.h"
#include "worker/serve/decode_attention.h"
#include "worker/serve/row_linear.h"
#include "worker/serve/scheduler.h"

namespace gpt2 {

namespace {

struct Request {
  int64_t id = 0;
  GenerationParams params;
  Engine::Callback callback;
  at::Generator generator;
  int64_t slot = -1;
  int64_t len = 0;          // positions of this request in its slot's cache
  int64_t generated = 0;    // tokens produced so far
  int32_t next = -1;        // the latest token, not yet in the cache
  bool ended = false;       // its last event was delivered
  bool cache_valid = true;  // false after a failed step: its slot's rows are not reused
};

// The event that only ends a request.
TokenEvent Ending(FinishReason reason, std::string error = "") {
  TokenEvent e;
  e.finish = reason;
  e.error = std::move(error);
  return e;
}

// A request's rows in one iteration: positions [start, start + count) of its prompt (a chunk), or
// its latest token (decode); `sample` = its last row gives the next token.
struct Segment {
  std::shared_ptr<Request> r;
  int64_t start = 0, count = 0;
  bool sample = false, decode = false;
};

}  // namespace

class Engine::Impl {
 public:
  Impl(GPT model, const EngineOptions& o, c10::Device device, WeightFormat weights)
      : model_(std::move(model)),
        device_(device),
        opts_(o),
        T_(ServingContext(model_->config(), o)),
        S_(SlotCount(model_, o, T_)),
        scheduler_({S_, o.max_queue, o.max_prefill_tokens, o.prefix_caching,
                    // rows computed on their own reuse any prefix; elsewhere whole chunks
                    RowPath(model_, device) ? 1 : o.max_prefill_tokens}) {
    const GPTConfig& c = model_->config();
    NH_ = c.n_head;
    HS_ = c.n_embd / c.n_head;
    weights_ = weights;
    const auto dtype = model_->transformer->wte->weight.scalar_type();
    const auto opts = at::TensorOptions().dtype(dtype).device(device_);
    for (int64_t l = 0; l < c.n_layer; ++l) {
      k_.push_back(at::zeros({S_, NH_, T_, HS_}, opts));
      v_.push_back(at::zeros({S_, NH_, T_, HS_}, opts));
    }
    slot_of_.assign(S_, nullptr);
    row_linear_ = RowPath(model_, device_);
    PackWeights();
    CalibrateRowCounts();
    thread_ = std::thread([this] { Loop(); });
  }

  ~Impl() {
    scheduler_.Stop();
    if (thread_.joinable()) thread_.join();
  }

  absl::StatusOr<int64_t> Submit(GenerationParams params, Callback callback) {
    if (absl::Status s = ValidateGeneration(params, model_->config(), T_); !s.ok()) return s;
    auto r = std::make_shared<Request>();
    r->params = std::move(params);
    r->callback = std::move(callback);
    r->generator = MakeGenerator(r->params.seed);
    // Under mu_, so that the engine's thread, which looks the request up after the scheduler
    // admitted it, finds it.
    std::lock_guard lock(mu_);
    absl::StatusOr<int64_t> id = scheduler_.Enqueue(r->params.prompt, /*reuse=*/!r->params.prompt_logprobs);
    if (!id.ok()) return id.status();
    r->id = *id;
    requests_[r->id] = r;
    return r->id;
  }

  void Cancel(int64_t id) { scheduler_.Cancel(id); }

  EngineStats stats() const {
    std::lock_guard lock(mu_);
    return stats_;
  }

  const GPTConfig& config() const { return model_->config(); }
  int64_t max_context() const { return T_; }

 private:
  // Whether the dense layers run through RowLinear and attention through DecodeAttention.
  static bool RowPath(const GPT& model, c10::Device device) {
    return device.is_cpu() && model->transformer->wte->weight.scalar_type() == at::kFloat && RowLinearAvailable();
  }
  static int64_t ServingContext(const GPTConfig& c, const EngineOptions& o) {
    return o.max_context > 0 ? std::min(o.max_context, c.n_positions) : c.n_positions;
  }
  // As many slots of the serving context as the KV budget holds (at least one), up to max_slots.
  static int64_t SlotCount(const GPT& model, const EngineOptions& o, int64_t T) {
    const GPTConfig& c = model->config();
    const auto bytes = static_cast<int64_t>(c10::elementSize(model->transformer->wte->weight.scalar_type()));
    const int64_t per_slot = 2 * c.n_layer * T * c.n_embd * bytes;  // K and V of every layer
    return std::min(std::max<int64_t>(1, o.kv_cache_bytes / per_slot), o.max_slots);
  }

  // Rounds every matrix of the model to the served format. The model's own parameters take the
  // values the format stands for (the embedding, prefill's BLAS, and devices without RowLinear
  // compute with them); RowLinear reads the packed bytes.
  void PackWeights() {
    c10::InferenceMode inference;
    auto pack = [&](at::Tensor& weight) {
      PackedWeight p = PackWeight(weight, weights_);
      if (weights_ != WeightFormat::kFp32) weight.copy_(Unpack(p));
      if (row_linear_) packed_.emplace(weight.unsafeGetTensorImpl(), std::move(p));
    };
    for (auto& b : model_->transformer->blocks) {
      for (torch::nn::Linear* l : {&b->attn->c_attn, &b->attn->c_proj, &b->mlp->c_fc, &b->mlp->c_proj})
        pack((*l)->weight);
    }
    pack(model_->transformer->wte->weight);
  }
  const PackedWeight& Packed(const at::Tensor& weight) const { return packed_.at(weight.unsafeGetTensorImpl()); }

  // Schedule, execute, output: the scheduler plans the iteration, the runner computes its rows
  // (prompt chunks and one token of every decoding request) as one batch, and each sampled token
  // goes to its request (Emit), which may end it.
  void Loop() {
    c10::InferenceMode inference;
    while (true) {
      const IterationPlan plan = scheduler_.Next();
      if (plan.stop) break;
      for (int64_t id : plan.cancelled) Finish(*Lookup(id), Ending(FinishReason::kCancelled));
      std::vector<Segment> segments;
      for (const Chunk& c : plan.prefill) {
        std::shared_ptr<Request> r = Lookup(c.id);
        if (c.first) {  // admitted
          r->slot = c.slot;
          slot_of_[c.slot] = r;
          ++active_;
          if (opts_.on_admit) opts_.on_admit(static_cast<int64_t>(r->params.prompt.size()), c.start);
        }
        segments.push_back({r, c.start, c.count, c.last, false});
      }
      for (int64_t s : plan.decode)
        if (slot_of_[s]) segments.push_back({slot_of_[s], slot_of_[s]->len, 1, true, true});
      if (!segments.empty()) {
        Step(plan.prefill.empty() ? "decode" : "prefill", segments, [&] {
          CopyPrefixes(plan.copies);
          Forward(segments);
        });
      }
      PublishStats();
    }
    // Shutting down: every request still here ends.
    for (int64_t id : scheduler_.Queued()) Lookup(id)->callback(Ending(FinishReason::kCancelled, "the engine stopped"));
    for (auto& r : slot_of_)
      if (r) r->callback(Ending(FinishReason::kCancelled, "the engine stopped"));
  }
  std::shared_ptr<Request> Lookup(int64_t id) {
    std::lock_guard lock(mu_);
    return requests_.at(id);
  }

  // Runs one iteration's step over `segments`. A fault ends their requests still running with
  // kError (the KV-cache rows of their slots are rewritten by whoever takes the slots next) and is
  // reported; the engine, the other requests and the process go on.
  template <typename Fn>
  void Step(std::string_view step, const std::vector<Segment>& segments, const Fn& fn) {
    std::string what;
    try {
      if (opts_.before_step) opts_.before_step(step);
      fn();
      return;
    } catch (const c10::Error& e) {
      what = e.what_without_backtrace();
    } catch (const std::exception& e) {
      what = e.what();
    }
    ++faults_;
    const std::string error = "the engine's " + std::string(step) + " step failed: " + what;
    for (const Segment& g : segments) {
      if (g.r->ended) continue;  // its rows were complete when it ended
      g.r->cache_valid = false;  // its slot may hold rows the step left half written
      Finish(*g.r, Ending(FinishReason::kError, error));
    }
    if (opts_.on_fault) opts_.on_fault(step, what);
  }

  // cache[slots[i], :, positions[i], :] = rows[i] (as NH heads of HS) for the first n rows of
  // rows (m,C). On a CPU, a copy per row and head (ATen's index_put_ costs more than the attention
  // it feeds); elsewhere index_put_ with the same indices.
  void WriteCache(at::Tensor& cache, const std::vector<int64_t>& slots, const std::vector<int64_t>& positions,
                  const at::Tensor& rows, int64_t n, const at::Tensor& slot_idx, const at::Tensor& pos_n) {
    if (cache.is_cpu() && cache.scalar_type() == at::kFloat && cache.is_contiguous() &&
        rows.scalar_type() == at::kFloat && rows.stride(1) == 1) {
      float* dst = cache.data_ptr<float>();
      const float* src = rows.data_ptr<float>();
      const int64_t stride = rows.stride(0), T = cache.size(2);
      for (int64_t r = 0; r < n; ++r)
        for (int64_t h = 0; h < NH_; ++h)
          std::memcpy(dst + ((slots[r] * NH_ + h) * T + positions[r]) * HS_, src + r * stride + h * HS_,
                      static_cast<size_t>(HS_) * sizeof(float));
      return;
    }
    cache.index_put_({slot_idx, at::indexing::Slice(), pos_n}, rows.narrow(0, 0, n).view({n, NH_, HS_}));
  }

  // Reused prompt prefixes: every layer's K and V rows, slot to slot.
  void CopyPrefixes(const std::vector<PrefixCopy>& copies) {
    for (const PrefixCopy& c : copies) {
      for (size_t l = 0; l < k_.size(); ++l) {
        k_[l][c.to].narrow(1, 0, c.count).copy_(k_[l][c.from].narrow(1, 0, c.count));
        v_[l][c.to].narrow(1, 0, c.count).copy_(v_[l][c.from].narrow(1, 0, c.count));
      }
    }
  }

  // One iteration's rows through the model: every segment's tokens (a prompt chunk, or a decoding
  // request's latest token) are rows of one batch, padded to a calibrated row count, through the
  // dense layers; each row writes its K and V into its request's slot and attends over exactly its
  // request's positions up to its own; the rows that sample (a decoding request's, a prompt's
  // last) go through the LM head. A row's arithmetic so depends on its request alone: on a CPU
  // (RowLinear, DecodeAttention) each row attends on its own, whatever chunk it came in; elsewhere
  // each segment attends in one call, and a prompt's chunks are fixed by the prompt (scheduler.h).
  void Forward(const std::vector<Segment>& segments) {
    std::vector<int64_t> ids, positions, slots, lengths, sampling;
    for (const Segment& g : segments) {
      for (int64_t t = 0; t < g.count; ++t) {
        const int64_t pos = g.start + t;
        ids.push_back(g.decode ? g.r->next : g.r->params.prompt[pos]);
        positions.push_back(pos);
        slots.push_back(g.r->slot);
        lengths.push_back(pos + 1);
      }
      if (g.sample) sampling.push_back(static_cast<int64_t>(ids.size()) - 1);
    }
    const auto n = static_cast<int64_t>(ids.size());
    const int64_t m = RowsFor(rows_, n);
    ids.resize(m, 0);
    positions.resize(m, 0);
    at::Tensor pos = at::tensor(positions, at::kLong).to(device_);  // (m)
    at::Tensor pos_n = pos.narrow(0, 0, n);
    at::Tensor slot_idx = at::tensor(slots, at::kLong).to(device_);  // (n)
    const int64_t C = model_->config().n_embd;
    auto attend = [&](size_t l, const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) {
      // cache[slot, :, pos, :] = k[i] for the real rows
      WriteCache(k_[l], slots, positions, k, n, slot_idx, pos_n);
      WriteCache(v_[l], slots, positions, v, n, slot_idx, pos_n);
      if (row_linear_) return DecodeAttention(q, k_[l], v_[l], slots, lengths);
      std::vector<at::Tensor> ys;
      ys.reserve(segments.size() + 1);
      int64_t row = 0;
      for (const Segment& g : segments) {
        const int64_t L = g.start + g.count;
        at::Tensor qi = q.narrow(0, row, g.count).view({1, g.count, NH_, HS_}).transpose(1, 2);  // (1,NH,count,HS)
        at::Tensor ki = k_[l][g.r->slot].narrow(1, 0, L).unsqueeze(0);                           // (1,NH,L,HS)
        at::Tensor vi = v_[l][g.r->slot].narrow(1, 0, L).unsqueeze(0);
        at::Tensor y;
        if (g.count == 1) {  // one query over every position so far
          y = at::scaled_dot_product_attention(qi, ki, vi);
        } else if (g.start == 0) {
          y = at::scaled_dot_product_attention(qi, ki, vi, {}, 0.0, /*is_causal=*/true);
        } else {  // query t of the chunk sees positions [0, start + t]
          at::Tensor mask =
              at::arange(L, pos.options()).unsqueeze(0) <= (at::arange(g.count, pos.options()) + g.start).unsqueeze(1);
          y = at::scaled_dot_product_attention(qi, ki, vi, mask);
        }
        ys.push_back(y.transpose(1, 2).reshape({g.count, C}));
        row += g.count;
      }
      if (m > n) ys.push_back(at::zeros({m - n, C}, q.options()));
      return at::cat(ys, 0);  // (m,C)
    };
    auto& t = model_->transformer;
    at::Tensor x = Blocks(t->wte(at::tensor(ids, at::kLong).to(device_)) + t->wpe(pos), attend);  // (m,C)
    // Rows through the LM head: every sampling row, then the prompt rows whose next token's
    // log-probability was asked for (prompt_logprobs: row p predicts prompt token p + 1).
    std::vector<int64_t> head = sampling;
    int64_t row = 0;
    for (const Segment& g : segments) {
      ForScoredRows(g, [&](int64_t j) { head.push_back(row + j); });
      row += g.count;
    }
    const at::Tensor logits = HeadRows(x, head);  // (head.size(), Vp)
    bool prefill = false, decode = false;
    int64_t sampled = 0, scored = static_cast<int64_t>(sampling.size());
    for (const Segment& g : segments) {
      (g.decode ? decode : prefill) = true;
      g.r->len = g.start + g.count;
      ForScoredRows(g, [&](int64_t j) { ScorePrompt(*g.r, g.start + j + 1, logits[scored++]); });
      if (g.sample) Emit(*g.r, logits[sampled++]);
    }
    prefills_ += prefill;
    decode_steps_ += decode;
  }
  // Calls f(j) for each row j of segment g whose next prompt token's log-probability was asked
  // for (prompt_logprobs: row p predicts prompt token p + 1), in order.
  template <typename F>
  static void ForScoredRows(const Segment& g, const F& f) {
    if (g.decode || !g.r->params.prompt_logprobs) return;
    const auto prompt_len = static_cast<int64_t>(g.r->params.prompt.size());
    for (int64_t j = 0; j < g.count && g.start + j + 1 < prompt_len; ++j) f(j);
  }
  // Block b over rows x (m,C) with `attention` in the middle (the model's own block: gpt2.h), its
  // linear layers through RowLinear (on a CPU) or the device's BLAS.
  template <typename Attention>
  at::Tensor DenseBlock(Block& b, const at::Tensor& x, const Attention& attention) {
    return b->ForwardWith(
        x,
        [&](torch::nn::Linear& layer, const at::Tensor& in) {
          return row_linear_ ? RowLinear(in, Packed(layer->weight), layer->bias) : layer->forward(in);
        },
        attention);
  }

  // Rows x (m,C) through every block; `attend(l, q, k, v)` gives layer l's attention output (m,C)
  // from its q, k, v (m,C each). Everything else is row-wise, so a row's result depends on its
  // own input and on m alone.
  template <typename Attend>
  at::Tensor Blocks(at::Tensor x, const Attend& attend) {
    auto& t = model_->transformer;
    for (size_t l = 0; l < t->blocks.size(); ++l) {
      x = DenseBlock(t->blocks[l], x,
                     [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v) { return attend(l, q, k, v); });
    }
    return x;
  }
  at::Tensor Head(const at::Tensor& x) {  // (m,C) -> logits (m,Vp)
    const at::Tensor h = model_->transformer->ln_f(x), &wte = model_->transformer->wte->weight;
    return row_linear_ ? RowLinear(h, Packed(wte), {}) : torch::nn::functional::linear(h, wte);
  }
  // Rows `rows` of x (m,C) through the LM head, in groups of at most S_ rows each padded to a
  // calibrated row count (so no row's logits depend on the others). Empty when `rows` is.
  at::Tensor HeadRows(const at::Tensor& x, const std::vector<int64_t>& rows) {
    std::vector<at::Tensor> parts;
    for (size_t begin = 0; begin < rows.size(); begin += static_cast<size_t>(S_)) {
      const size_t end = std::min(rows.size(), begin + static_cast<size_t>(S_));
      std::vector<int64_t> group(rows.begin() + static_cast<ptrdiff_t>(begin),
                                 rows.begin() + static_cast<ptrdiff_t>(end));
      const auto n = static_cast<int64_t>(group.size());
      group.resize(RowsFor(head_rows_, n), 0);
      parts.push_back(Head(x.index_select(0, at::tensor(group, at::kLong).to(device_))).narrow(0, 0, n));
    }
    if (parts.empty()) return {};
    return parts.size() == 1 ? parts[0] : at::cat(parts, 0);
  }

  // Which row counts a batch may run at without changing any row's result. Matrix libraries pick
  // kernels by shape (on an AVX2 CPU, MKL's small-m sgemm paths round differently from its
  // large-m one; cuBLAS picks by heuristics), and even row-wise ops may split their work by size,
  // so this is measured, not assumed: a candidate m is kept when the first m rows of a random
  // batch come out bit-identical at m rows and at `max` rows through `f`. `max` always
  // qualifies, so the worst case is a batch of `max` rows.
  template <typename F>
  std::vector<int64_t> CalibrateRows(int64_t max, const F& f) {
    std::set<int64_t> candidates = {1, 2};  // 1, 2, multiples of 4 to 64, of 16 beyond
    for (int64_t m = 4; m < max; m += m < 64 ? 4 : 16) candidates.insert(m);
    const int64_t C = model_->config().n_embd;
    at::Tensor x = at::randn({max, C}, MakeGenerator(0), at::TensorOptions().dtype(k_[0].scalar_type())).to(device_);
    const at::Tensor full = f(x);
    std::vector<int64_t> kept;
    for (int64_t m : candidates) {
      if (m >= max) break;
      if (at::equal(f(x.narrow(0, 0, m)), full.narrow(0, 0, m))) kept.push_back(m);
    }
    kept.push_back(max);
    return kept;
  }

  // An iteration's rows (up to a row per slot plus the prefill budget) through a block (the
  // first; all have the same shapes; attention replaced by v, as it is per request anyway), and
  // its sampling rows (up to one per slot) through the LM head.
  void CalibrateRowCounts() {
    c10::InferenceMode inference;
    rows_ = CalibrateRows(S_ + opts_.max_prefill_tokens, [&](const at::Tensor& x) {
      return DenseBlock(model_->transformer->blocks[0], x,
                        [](const at::Tensor&, const at::Tensor&, const at::Tensor& v) { return v; });
    });
    head_rows_ = CalibrateRows(S_, [&](const at::Tensor& x) { return Head(x); });
  }
  // The smallest calibrated row count that holds n rows.
  static int64_t RowsFor(const std::vector<int64_t>& counts, int64_t n) {
    return *std::lower_bound(counts.begin(), counts.end(), n);
  }

  static void SetTop(TokenEvent& e, const std::vector<std::pair<int64_t, double>>& top) {
    for (const auto& [id, lp] : top) e.top.emplace_back(static_cast<int32_t>(id), static_cast<float>(lp));
  }

  // Reports prompt token `i`'s log-probability, from the logits of the row before it.
  void ScorePrompt(Request& r, int64_t i, const at::Tensor& logits) {
    const int64_t V = model_->config().vocab_size;
    const at::Tensor logprobs = at::log_softmax(logits.slice(0, 0, V).to(at::kCPU, at::kFloat), 0);
    const int32_t token = r.params.prompt[i];
    TokenEvent e;
    e.token = token;
    e.logprob = logprobs[token].item<float>();
    SetTop(e, TopLogprobs(logprobs, r.params.top_logprobs));
    e.prompt = true;
    r.callback(e);
  }

  // Samples the request's next token from `logits` and reports it (or its end).
  void Emit(Request& r, const at::Tensor& logits) {
    const GenerationParams& p = r.params;
    if (p.max_tokens == 0) {  // only the prompt's log-probabilities were asked for
      Finish(r, Ending(FinishReason::kLength));
      return;
    }
    SamplingOptions o{p.temperature, p.top_k, p.top_p, p.top_logprobs, {}};
    if (r.generated < p.min_tokens) {
      if (!p.ignore_eos) o.banned.push_back(kEndOfTextToken);
      o.banned.insert(o.banned.end(), p.stop_token_ids.begin(), p.stop_token_ids.end());
    }
    SampledToken next = SampleToken(logits, model_->config().vocab_size, o, r.generator);
    if (next.id == kEndOfTextToken && !p.ignore_eos) {
      Finish(r, Ending(FinishReason::kEos));
      return;
    }
    if (std::find(p.stop_token_ids.begin(), p.stop_token_ids.end(), next.id) != p.stop_token_ids.end()) {
      Finish(r, Ending(FinishReason::kStop));
      return;
    }
    ++r.generated;
    r.next = static_cast<int32_t>(next.id);
    const bool last = r.generated >= p.max_tokens;
    TokenEvent e;
    e.token = r.next;
    e.logprob = static_cast<float>(next.logprob);
    e.finish = last ? FinishReason::kLength : FinishReason::kNone;
    SetTop(e, next.top);
    r.callback(e);
    if (last) Release(r);
  }

  void Finish(Request& r, const TokenEvent& e) {
    r.callback(e);
    Release(r);
  }

  // The request has had its last event: it leaves its slot (if the scheduler has not already taken
  // it back, as for a cancellation) and the engine.
  void Release(Request& r) {
    r.ended = true;
    if (r.slot >= 0 && slot_of_[r.slot].get() == &r) {
      slot_of_[r.slot] = nullptr;
      --active_;
    }
    r.slot = -1;
    scheduler_.Release(r.id, r.cache_valid);
    std::lock_guard lock(mu_);
    requests_.erase(r.id);
  }

  void PublishStats() {
    int64_t used = 0;
    for (const auto& r : slot_of_)
      if (r) used += r->len + 1;
    std::lock_guard lock(mu_);
    stats_.slots = S_;
    stats_.active = active_;
    stats_.queued = scheduler_.queued();
    stats_.decode_steps = decode_steps_;
    stats_.prefills = prefills_;
    stats_.faults = faults_;
    stats_.prompt_tokens = scheduler_.prompt_tokens();
    stats_.prefix_hit_tokens = scheduler_.prefix_hit_tokens();
    stats_.kv_cache_usage = static_cast<double>(used) / static_cast<double>(S_ * T_);
  }

  GPT model_;
  c10::Device device_;
  EngineOptions opts_;
  const int64_t T_, S_;  // the serving context; KV-cache slots
  Scheduler scheduler_;
  int64_t NH_ = 0, HS_ = 0;
  std::vector<at::Tensor> k_, v_;  // per layer (S,NH,T,HS)
  bool row_linear_ = false;        // decode steps through RowLinear and DecodeAttention (CPU, fp32, AVX2)
  WeightFormat weights_ = WeightFormat::kFp32;
  std::unordered_map<const void*, PackedWeight> packed_;  // with row_linear_: by the model's weight
  std::vector<int64_t> rows_;       // calibrated row counts of an iteration, ascending; last S_ + prefill budget
  std::vector<int64_t> head_rows_;  // the same for its sampling rows (the LM head); last S_

  // Engine thread only.
  std::vector<std::shared_ptr<Request>> slot_of_;
  std::atomic<int64_t> active_{0};
  int64_t decode_steps_ = 0, prefills_ = 0, faults_ = 0;

  mutable std::mutex mu_;                                 // requests_ and stats_
  std::map<int64_t, std::shared_ptr<Request>> requests_;  // every request not yet ended, by id
  EngineStats stats_;
  std::thread thread_;
};

absl::StatusOr<std::unique_ptr<Engine>> Engine::Load(const std::string& model_dir, const EngineOptions& options) {
  c10::Device device(c10::kCPU);
  try {
    device = c10::Device(options.device);
  } catch (const c10::Error&) {
    return absl::InvalidArgumentError(absl::StrCat("device: expected cpu or cuda:N, got ", options.device));
  }
  if (options.kv_cache_bytes <= 0) return absl::InvalidArgumentError("kv_cache_bytes: must be > 0");
  if (options.max_slots <= 0) return absl::InvalidArgumentError("max_slots: must be > 0");
  if (options.max_context < 0) return absl::InvalidArgumentError("max_context: must be >= 0");
  if (options.max_queue < 0) return absl::InvalidArgumentError("max_queue: must be >= 0");
  if (options.max_prefill_tokens <= 0) return absl::InvalidArgumentError("max_prefill_tokens: must be > 0");
  absl::StatusOr<WeightFormat> weights = ParseWeightFormat(options.weights);
  if (!weights.ok()) return weights.status();
  absl::StatusOr<GPT> model = LoadHfModel(model_dir);
  if (!model.ok()) return model.status();
  (*model)->to(device);
  (*model)->eval();
  return std::unique_ptr<Engine>(new Engine(std::make_unique<Impl>(*std::move(model), options, device, *weights)));
}

Engine::Engine(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Engine::~Engine() = default;
absl::StatusOr<int64_t> Engine::Submit(GenerationParams params, Callback callback) {
  return impl_->Submit(std::move(params), std::move(callback));
}
void Engine::Cancel(int64_t id) { impl_->Cancel(id); }
EngineStats Engine::stats() const { return impl_->stats(); }
const GPTConfig& Engine::config() const { return impl_->config(); }
int64_t Engine::max_context() const { return impl_->max_context(); }

}  // namespace gpt2
