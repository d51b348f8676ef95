#include "worker/data/prep.h"

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <set>
#include <thread>
#include <utility>

#include "absl/status/status.h"
#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "worker/data/documents.h"
#include "worker/data/shard.h"

namespace gpt2 {
namespace {

namespace fs = std::filesystem;

// A batch closes at this much text or this many documents, whichever comes first: big enough to
// keep a thread busy for a while, small enough that a few per thread fit in memory.
constexpr size_t kBatchBytes = 1 << 20;
constexpr size_t kBatchDocuments = 1024;
// Batches submitted but not yet written, per tokenizing thread.
constexpr size_t kBatchesInFlightPerThread = 2;

// ----------------------------------------------------------------------------------------------
// Tokenizing on a pool of threads, results in submission order.

struct Batch {
  std::vector<std::string> documents;
  std::vector<uint16_t> tokens;  // <|endoftext|> + EncodeOrdinary(doc), for each doc
  absl::Status status;
  bool done = false;
};

absl::Status TokenizeBatch(const Tokenizer& tokenizer, Batch& batch) {
  for (const std::string& document : batch.documents) {
    batch.tokens.push_back(static_cast<uint16_t>(tokenizer.eot_token()));
    for (TokenId id : tokenizer.EncodeOrdinary(document)) {
      if (id < 0 || id > 0xffff) {
        return absl::InvalidArgumentError(absl::StrCat("token id ", id, " does not fit the shards' uint16"));
      }
      batch.tokens.push_back(static_cast<uint16_t>(id));
    }
  }
  batch.documents = {};  // the text is no longer needed
  return absl::OkStatus();
}

class OrderedTokenizerPool {
 public:
  OrderedTokenizerPool(const Tokenizer& tokenizer, int threads) : tokenizer_(tokenizer) {
    for (int i = 0; i < threads; ++i) threads_.emplace_back([this] { Work(); });
  }

  ~OrderedTokenizerPool() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    for (std::thread& thread : threads_) thread.join();
  }

  void Submit(std::vector<std::string> documents) {
    auto batch = std::make_shared<Batch>();
    batch->documents = std::move(documents);
    {
      std::lock_guard<std::mutex> lock(mu_);
      in_order_.push_back(batch);
      todo_.push_back(batch);
    }
    cv_.notify_all();
  }

  size_t in_flight() const {
    std::lock_guard<std::mutex> lock(mu_);
    return in_order_.size();
  }

  // Waits for the oldest submitted batch and takes it. Requires in_flight() > 0.
  std::shared_ptr<Batch> TakeOldest() {
    std::unique_lock<std::mutex> lock(mu_);
    cv_.wait(lock, [&] { return in_order_.front()->done; });
    std::shared_ptr<Batch> batch = std::move(in_order_.front());
    in_order_.pop_front();
    return batch;
  }

 private:
  void Work() {
    std::unique_lock<std::mutex> lock(mu_);
    while (true) {
      cv_.wait(lock, [&] { return stop_ || !todo_.empty(); });
      if (stop_) return;
      std::shared_ptr<Batch> batch = std::move(todo_.front());
      todo_.pop_front();
      lock.unlock();
      batch->status = TokenizeBatch(tokenizer_, *batch);
      lock.lock();
      batch->done = true;
      cv_.notify_all();
    }
  }

  const Tokenizer& tokenizer_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::shared_ptr<Batch>> in_order_;  // submitted, not yet taken
  std::deque<std::shared_ptr<Batch>> todo_;      // submitted, not yet started
  bool stop_ = false;
  std::vector<std::thread> threads_;
};

// ----------------------------------------------------------------------------------------------
// Cutting the token stream into shards.

std::string ShardPath(const PrepOptions& options, ShardFormat format, int index) {
  char number[16];
  std::snprintf(number, sizeof(number), "%06d", index);
  return (fs::path(options.out_dir) /
          absl::StrCat(options.name, index == 0 ? "_val_" : "_train_", number, std::string(ShardExtension(format))))
      .string();
}

// Whether `filename` is a shard this prep could write: <name>_{val,train}_NNNNNN.{bin,npy}.
bool IsPrepShardName(std::string_view filename, std::string_view name) {
  if (!filename.starts_with(name)) return false;
  filename.remove_prefix(name.size());
  if (filename.starts_with("_val_")) {
    filename.remove_prefix(5);
  } else if (filename.starts_with("_train_")) {
    filename.remove_prefix(7);
  } else {
    return false;
  }
  if (filename.size() != 6 + 4 || !(filename.ends_with(".bin") || filename.ends_with(".npy"))) {
    return false;
  }
  return std::all_of(filename.begin(), filename.begin() + 6, absl::ascii_isdigit);
}

std::vector<std::string> ExistingShards(const PrepOptions& options) {
  std::vector<std::string> found;
  std::error_code error;
  for (const fs::directory_entry& entry : fs::directory_iterator(options.out_dir, error)) {
    if (IsPrepShardName(entry.path().filename().string(), options.name)) {
      found.push_back(entry.path().string());
    }
  }
  std::sort(found.begin(), found.end());
  return found;
}

class ShardSink {
 public:
  ShardSink(const PrepOptions& options, ShardFormat format, int64_t val_tokens)
      : options_(options), format_(format), val_tokens_(val_tokens) {}

  absl::Status Write(std::span<const uint16_t> tokens) {
    while (!tokens.empty()) {
      if (!writer_) {
        absl::StatusOr<ShardWriter> writer = ShardWriter::Create(ShardPath(options_, format_, index_), format_);
        if (!writer.ok()) return writer.status();
        writer_.emplace(std::move(*writer));
      }
      const int64_t capacity = index_ == 0 ? val_tokens_ : options_.shard_tokens;
      const size_t n = static_cast<size_t>(std::min<int64_t>(capacity - writer_->token_count(), tokens.size()));
      if (absl::Status status = writer_->Append(tokens.first(n)); !status.ok()) return status;
      tokens = tokens.subspan(n);
      if (writer_->token_count() == capacity) {
        if (absl::Status status = Close(); !status.ok()) return status;
      }
    }
    return absl::OkStatus();
  }

  // Completes the last, partly filled shard, if any.
  absl::Status Finish() { return writer_ ? Close() : absl::OkStatus(); }

  const std::vector<std::string>& shards() const { return shards_; }

 private:
  absl::Status Close() {
    absl::Status status = writer_->Finish();
    if (status.ok()) shards_.push_back(writer_->path());
    writer_.reset();
    ++index_;
    return status;
  }

  const PrepOptions& options_;
  const ShardFormat format_;
  const int64_t val_tokens_;
  int index_ = 0;
  std::optional<ShardWriter> writer_;
  std::vector<std::string> shards_;
};

absl::Status CheckOptions(const PrepOptions& options) {
  if (options.inputs.empty()) return absl::InvalidArgumentError("prep: no inputs");
  if (options.out_dir.empty()) return absl::InvalidArgumentError("prep: no output directory");
  if (options.name.empty() || options.name.find('/') != std::string::npos) {
    return absl::InvalidArgumentError(absl::StrCat("prep: bad shard name '", options.name, "' (non-empty, no '/')"));
  }
  if (options.shard_tokens < 1 || options.val_tokens < 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("prep: shard_tokens must be positive and val_tokens positive (or 0 for "
                     "shard_tokens); got ",
                     options.shard_tokens, " and ", options.val_tokens));
  }
  if (options.threads < 0) {
    return absl::InvalidArgumentError(absl::StrCat("prep: bad thread count ", options.threads));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<PrepResult> PrepareShards(const Tokenizer& tokenizer, const PrepOptions& options, std::ostream& log) {
  if (absl::Status status = CheckOptions(options); !status.ok()) return status;
  absl::StatusOr<ShardFormat> format = ParseShardFormat(options.format);
  if (!format.ok()) return format.status();
  const int64_t val_tokens = options.val_tokens == 0 ? options.shard_tokens : options.val_tokens;
  const int threads =
      options.threads > 0 ? options.threads : std::max(1, static_cast<int>(std::thread::hardware_concurrency()));

  PrepResult result;
  absl::StatusOr<DocumentReader> reader =
      DocumentReader::Open(options.inputs, options.skip_bad_lines, [&](const std::string& problem) {
        if (result.skipped_lines < 100) log << "warning: skipped " << problem << "\n";
        if (result.skipped_lines == 99) log << "warning: (further skipped lines not shown)\n";
        ++result.skipped_lines;
      },
      options.column);
  if (!reader.ok()) return reader.status();

  std::error_code error;
  fs::create_directories(options.out_dir, error);
  if (error) {
    return absl::Status(absl::ErrnoToStatusCode(error.value()),
                        absl::StrCat(options.out_dir, ": cannot create: ", error.message()));
  }
  const std::vector<std::string> existing = ExistingShards(options);
  if (!existing.empty() && !options.force) {
    return absl::AlreadyExistsError(
        absl::StrCat(options.out_dir, " already holds shards named ", options.name, "_* (", existing.front(),
                     existing.size() > 1 ? absl::StrCat(" and ", existing.size() - 1, " more") : "",
                     "); use --force to overwrite them"));
  }

  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  Clock::time_point last_report = start;
  auto report_progress = [&](Clock::time_point now) {
    const double seconds = std::chrono::duration<double>(now - start).count();
    char line[160];
    std::snprintf(line, sizeof(line), "prep: %lld documents, %.1fM tokens, %.1f MB/s\n",
                  static_cast<long long>(result.documents), result.tokens / 1e6, reader->bytes_read() / 1e6 / seconds);
    log << line << std::flush;
  };

  ShardSink sink(options, *format, val_tokens);
  {
    OrderedTokenizerPool pool(tokenizer, threads);
    const size_t max_in_flight = kBatchesInFlightPerThread * threads;
    bool end_of_corpus = false;
    while (true) {
      // Keep the pool fed, reading documents only as far ahead as it needs.
      while (!end_of_corpus && pool.in_flight() < max_in_flight) {
        std::vector<std::string> documents;
        size_t bytes = 0;
        while (bytes < kBatchBytes && documents.size() < kBatchDocuments) {
          absl::StatusOr<std::optional<std::string>> document = reader->Next();
          if (!document.ok()) return document.status();
          if (!document->has_value()) {
            end_of_corpus = true;
            break;
          }
          bytes += (*document)->size();
          documents.push_back(std::move(**document));
        }
        result.documents += static_cast<int64_t>(documents.size());
        if (!documents.empty()) pool.Submit(std::move(documents));
      }
      if (pool.in_flight() == 0) break;

      std::shared_ptr<Batch> batch = pool.TakeOldest();
      if (!batch->status.ok()) return batch->status;
      if (absl::Status status = sink.Write(batch->tokens); !status.ok()) return status;
      result.tokens += static_cast<int64_t>(batch->tokens.size());

      const Clock::time_point now = Clock::now();
      if (now - last_report >= std::chrono::seconds(1)) {
        report_progress(now);
        last_report = now;
      }
    }
  }
  if (absl::Status status = sink.Finish(); !status.ok()) return status;
  if (result.documents == 0) {
    return absl::NotFoundError(
        "prep: no documents in the inputs (directories are searched for "
        ".txt, .md, .rst and .text files)");
  }

  result.shards = sink.shards();
  result.val_tokens = std::min(result.tokens, val_tokens);
  result.train_tokens = result.tokens - result.val_tokens;
  if (result.train_tokens == 0) {
    log << "warning: the corpus has " << result.tokens << " tokens, not more than the " << val_tokens
        << " of the validation shard: no training shard was written\n";
  }
  if (options.force) {
    const std::set<std::string> written(result.shards.begin(), result.shards.end());
    for (const std::string& path : existing) {
      if (!written.contains(path)) fs::remove(path, error);
    }
  }
  return result;
}

}  // namespace gpt2
