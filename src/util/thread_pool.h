// A small fixed pool: parallel_for splits [0, n) into one contiguous chunk per thread and blocks
// until all are done. The calling thread runs chunk 0, so a pool of 1 spawns no threads.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace qwen {

class ThreadPool {
 public:
  explicit ThreadPool(int n_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return n_threads_; }
  // fn(begin, end) over disjoint chunks covering [0, n). Not reentrant. An exception thrown by
  // any chunk is rethrown here after all chunks finished.
  void parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn);

 private:
  void worker(int index);

  int n_threads_;
  std::vector<std::thread> workers_;
  std::mutex mu_;
  std::condition_variable start_cv_, done_cv_;
  const std::function<void(int64_t, int64_t)>* job_ = nullptr;
  int64_t job_n_ = 0;
  uint64_t generation_ = 0;  // bumped per job so workers see each job exactly once
  int pending_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;  // first exception of the current job
};

}  // namespace qwen
