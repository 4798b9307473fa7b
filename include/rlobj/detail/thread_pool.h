#pragma once

/// \file
/// `rlobj::detail::ThreadPool`: a fixed set of threads that run the tasks of one call together
/// with the calling thread (batched environments step their copies on it). Internal: names in
/// `rlobj::detail` may change without notice.

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

#include <c10/util/Exception.h>

namespace rlobj {
namespace detail {

/// `threads - 1` worker threads; `run(n, fn)` calls `fn(0) ... fn(n - 1)` on them and on the
/// calling thread, each index exactly once, and returns when every call has returned. Tasks are
/// claimed one index at a time, so which thread runs which index varies: a task must depend
/// only on its index. The first exception a task throws is rethrown by `run` (the other tasks
/// still run). One `run` at a time: the pool is not re-entrant.
class ThreadPool {
 public:
  /// `threads >= 1` in all, the calling thread included (1: no worker, `run` is a plain loop).
  explicit ThreadPool(int64_t threads) {
    TORCH_CHECK_VALUE(threads >= 1, "ThreadPool: threads must be >= 1, got ", threads);
    workers_.reserve(static_cast<size_t>(threads - 1));
    for (int64_t i = 1; i < threads; ++i) workers_.emplace_back([this] { worker_loop(); });
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      ++generation_;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  /// Threads in all, the calling thread included.
  int64_t size() const noexcept { return static_cast<int64_t>(workers_.size()) + 1; }

  /// Runs `fn(i)` for every `i` in `[0, n)` and waits for all of them.
  void run(int64_t n, const std::function<void(int64_t)>& fn) {
    if (workers_.empty() || n <= 1) {
      for (int64_t i = 0; i < n; ++i) fn(i);
      return;
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ = &fn;
      count_ = n;
      next_.store(0);
      pending_ = workers_.size();
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    work();
    std::exception_ptr error;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      done_.wait(lock, [this] { return pending_ == 0; });
      task_ = nullptr;
      error = error_;
      error_ = nullptr;
    }
    if (error) std::rethrow_exception(error);
  }

 private:
  void work() {
    for (;;) {
      const int64_t i = next_.fetch_add(1);
      if (i >= count_) return;
      try {
        (*task_)(i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
      }
    }
  }

  void worker_loop() {
    uint64_t seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return generation_ != seen; });
        seen = generation_;
        if (stop_) return;
      }
      work();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        // Every worker takes part in every run (run waits for all of them), so none can miss
        // a generation and none can see a later run's task with an earlier run's count.
        if (--pending_ == 0) done_.notify_one();
      }
    }
  }

  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::condition_variable done_;
  const std::function<void(int64_t)>* task_ = nullptr;
  int64_t count_ = 0;
  std::atomic<int64_t> next_{0};
  size_t pending_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

}  // namespace detail
}  // namespace rlobj
