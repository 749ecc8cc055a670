// Helper threads for the quantized matmul. MLX runs a CPU stream's ops on one thread, so a
// batched decoding step's matmuls would use one core. The helpers spin briefly between calls (a
// step's matmuls come every few microseconds), then sleep, so they leave the cores to BLAS and to
// Python between steps.

#include "workers.h"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

#include <unistd.h>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace workers {
namespace {

constexpr int MAX_PARTS = 8;
constexpr auto SPIN = std::chrono::microseconds(50);  // then sleep until the next call

inline void relax() {
#if defined(__x86_64__) || defined(_M_X64)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

class Pool {
 public:
  explicit Pool(int helpers) : owner_(getpid()) {
    for (int i = 1; i <= helpers; ++i) std::thread([this, i] { serve(i); }).detach();
    helpers_ = helpers;
  }

  pid_t owner() const { return owner_; }

  void run(int parts, const std::function<void(int)>& job) {
    job_ = &job;
    parts_ = parts;
    pending_.store(helpers_);
    generation_.fetch_add(1);
    if (sleeping_.load() > 0) {
      std::lock_guard<std::mutex> lock(mutex_);
      wake_.notify_all();
    }
    job(0);
    while (pending_.load() != 0) relax();
  }

 private:
  void serve(int index) {
    uint64_t seen = 0;
    for (;;) {
      const auto until = std::chrono::steady_clock::now() + SPIN;
      while (generation_.load() == seen) {
        if (std::chrono::steady_clock::now() < until) {
          relax();
          continue;
        }
        std::unique_lock<std::mutex> lock(mutex_);
        sleeping_.fetch_add(1);
        wake_.wait(lock, [&] { return generation_.load() != seen; });
        sleeping_.fetch_sub(1);
      }
      seen = generation_.load();
      if (index < parts_) (*job_)(index);
      pending_.fetch_sub(1);
    }
  }

  pid_t owner_;
  int helpers_ = 0;
  const std::function<void(int)>* job_ = nullptr;
  int parts_ = 1;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0}, sleeping_{0};
  std::mutex mutex_;
  std::condition_variable wake_;
};

Pool* pool() {
  // Never destroyed (helpers may be asleep at exit); a forked child, which has no helpers, makes its own.
  static Pool* current = nullptr;
  if (current == nullptr || current->owner() != getpid()) current = new Pool(size() - 1);
  return current;
}

}  // namespace

int size() {
  static const int cores = std::clamp(int(std::thread::hardware_concurrency()), 1, MAX_PARTS);
  return cores;
}

void run(int parts, const std::function<void(int)>& job) {
  parts = std::min(parts, size());
  if (parts <= 1) {
    job(0);
    return;
  }
  // Two MLX streams may evaluate at once, each on its own thread: the second runs alone.
  static std::mutex busy;
  std::unique_lock<std::mutex> lock(busy, std::try_to_lock);
  if (!lock.owns_lock()) {
    for (int part = 0; part < parts; ++part) job(part);
    return;
  }
  pool()->run(parts, job);
}

}  // namespace workers
