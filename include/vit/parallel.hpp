// vit/parallel.hpp - a small fixed-size thread pool for the forward pass.
//
//   vit::ThreadPool pool(2);                 // the caller's thread + 1 worker
//   pool.run(tasks, [&](vit::Index task, int worker) { ... });
//
// run() hands out task indices one at a time from an atomic counter (dynamic
// scheduling): a thread that is slow or preempted, e.g. because another
// process holds its core, simply takes fewer tasks and nobody waits for work
// it has not started. Idle workers sleep on a condition variable after a
// very short bounded spin (tens of microseconds), so a pool never burns a core
// between calls. run() allocates nothing: the function is passed by reference.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "vit/error.hpp"
#include "vit/tensor.hpp"

namespace vit {

class ThreadPool;

namespace detail {

// The pool whose task the current thread is running, and as which worker.
struct PoolThreadState {
  const ThreadPool* pool;
  int worker;
};
inline thread_local PoolThreadState pool_thread_state{nullptr, 0};

// A hint to the core that this thread is spinning.
inline void cpu_relax() noexcept {
#if defined(__i386__) || defined(__x86_64__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// Spins until done() or for at most `limit`; returns done().
template <class Done>
bool spin_until(Done&& done, std::chrono::microseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    for (int i = 0; i < 64; ++i) {
      if (done()) return true;
      cpu_relax();
    }
    if (std::chrono::steady_clock::now() >= deadline) return done();
  }
}

}  // namespace detail

/// A fixed set of worker threads that run the tasks of run() together with
/// the calling thread. Workers are created by the constructor and joined by
/// the destructor; a pool of 1 thread has no workers and runs everything on
/// the caller.
///
/// Threads are numbered 0 .. threads() - 1: 0 is the thread that calls run(),
/// 1 .. threads() - 1 the workers. The number lets a task pick per-thread
/// memory (vit keeps one GEMM scratch per thread).
///
/// run() may be called from several threads; the calls then take turns. A
/// run() from inside one of this pool's tasks runs its tasks inline, on the
/// calling thread with its thread number.
class ThreadPool {
 public:
  /// A pool of `threads` threads in all: the caller's plus threads - 1 workers.
  explicit ThreadPool(int threads) {
    if (threads < 1)
      throw argument_error("ThreadPool: threads must be at least 1, got " +
                           std::to_string(threads));
    workers_.reserve(std::size_t(threads - 1));
    try {
      for (int w = 1; w < threads; ++w) workers_.emplace_back([this, w] { worker_loop(w); });
    } catch (...) {
      stop();
      throw;
    }
  }
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;
  ~ThreadPool() { stop(); }

  /// Threads that run tasks: the caller's plus the workers.
  int threads() const noexcept { return int(workers_.size()) + 1; }

  /// Calls fn(task, thread) once for every task in [0, task_count), spread
  /// over the pool's threads, and returns when all have finished. `thread`
  /// is the number of the thread running the task (see the class comment).
  /// If tasks throw, the tasks not yet started are skipped and the first
  /// exception is rethrown here once every running task has finished.
  template <class F>
  void run(Index task_count, F&& fn) {
    if (task_count <= 0) return;
    using Fn = std::remove_reference_t<F>;
    Job job;
    job.fn = const_cast<void*>(static_cast<const void*>(std::addressof(fn)));
    job.call = [](void* f, Index task, int thread) { (*static_cast<Fn*>(f))(task, thread); };
    job.count = task_count;
    run_job(job);
  }

 private:
  struct Job {
    void* fn = nullptr;
    void (*call)(void*, Index, int) = nullptr;
    Index count = 0;
  };

  // How long an idle thread spins before it sleeps.
  static constexpr std::chrono::microseconds spin_limit{50};

  void run_job(const Job& job) {
    detail::PoolThreadState& state = detail::pool_thread_state;
    if (state.pool == this) {  // a task of this pool: inline, as the same thread
      for (Index t = 0; t < job.count; ++t) job.call(job.fn, t, state.worker);
      return;
    }
    std::lock_guard<std::mutex> turn(run_mutex_);
    // The caller is thread 0 until run() returns (or throws).
    struct Restore {
      detail::PoolThreadState& state;
      detail::PoolThreadState saved;
      ~Restore() { state = saved; }
    } restore{state, state};
    state = {this, 0};
    if (workers_.empty() || job.count == 1) {
      for (Index t = 0; t < job.count; ++t) job.call(job.fn, t, 0);
      return;
    }
    bool wake = false;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      job_ = job;
      next_.store(0, std::memory_order_relaxed);
      failed_.store(false, std::memory_order_relaxed);
      open_ = true;
      generation_.fetch_add(1, std::memory_order_release);
      wake = sleepers_ > 0;
    }
    // Notified after unlocking: a worker woken while the lock is still held
    // blocks on it and needs a second wake-up when it is released.
    if (wake) wake_.notify_all();
    work(job, 0);
    // Close the job: workers that have not joined it yet never will. Then wait
    // for the ones that did (each is finishing at most one task).
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open_ = false;
    }
    detail::spin_until([this] { return active_.load(std::memory_order_acquire) == 0; }, spin_limit);
    std::exception_ptr error;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      while (active_.load(std::memory_order_relaxed) > 0) {
        caller_waiting_ = true;
        done_.wait(lock);
      }
      caller_waiting_ = false;
      error = std::move(error_);
      error_ = nullptr;
    }
    if (error) std::rethrow_exception(error);
  }

  // Takes tasks of `job` until none are left (or one has thrown).
  void work(const Job& job, int thread) noexcept {
    while (!failed_.load(std::memory_order_relaxed)) {
      const Index task = next_.fetch_add(1, std::memory_order_relaxed);
      if (task >= job.count) break;
      try {
        job.call(job.fn, task, thread);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        failed_.store(true, std::memory_order_relaxed);
      }
    }
  }

  void worker_loop(int thread) {
    detail::pool_thread_state = {this, thread};
    std::uint64_t seen = 0;
    for (;;) {
      detail::spin_until([&] { return generation_.load(std::memory_order_acquire) != seen; },
                         spin_limit);
      std::unique_lock<std::mutex> lock(mutex_);
      while (!stop_ && generation_.load(std::memory_order_relaxed) == seen) {
        ++sleepers_;
        wake_.wait(lock);
        --sleepers_;
      }
      if (stop_) return;
      seen = generation_.load(std::memory_order_relaxed);
      if (!open_) continue;  // woke too late: that job is already done
      const Job job = job_;
      active_.fetch_add(1, std::memory_order_relaxed);
      lock.unlock();
      work(job, thread);
      lock.lock();
      const bool last = active_.fetch_sub(1, std::memory_order_release) == 1;
      const bool notify = last && caller_waiting_;
      lock.unlock();
      if (notify) done_.notify_one();  // after unlocking, as in run_job
    }
  }

  void stop() noexcept {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
      generation_.fetch_add(1, std::memory_order_release);
      wake_.notify_all();
    }
    for (std::thread& t : workers_) t.join();
    workers_.clear();
  }

  std::vector<std::thread> workers_;
  std::mutex run_mutex_;  // one run() at a time

  std::mutex mutex_;              // guards the members below (atomics: written under it)
  std::condition_variable wake_;  // workers: a new job, or stop
  std::condition_variable done_;  // the caller: the last active worker has finished
  Job job_;
  std::atomic<std::uint64_t> generation_{0};  // bumped for every job, and at stop
  bool open_ = false;                         // workers may still join job_
  bool stop_ = false;
  bool caller_waiting_ = false;
  int sleepers_ = 0;            // workers waiting on wake_
  std::atomic<int> active_{0};  // workers inside job_
  std::exception_ptr error_;    // the first exception of job_

  std::atomic<Index> next_{0};  // the next task of job_ to hand out
  std::atomic<bool> failed_{false};
};

}  // namespace vit
