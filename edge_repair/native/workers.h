// A call's work split among the CPU's cores (workers.cpp).
#pragma once

#include <functional>

namespace workers {

// How many parts a call may run at once: this machine's cores (at most 8), the caller's included.
int size();

// job(0) … job(parts - 1), part 0 on the calling thread, the others on helper threads; returns
// when all are done. While another caller has the helpers, all parts run on the calling thread.
void run(int parts, const std::function<void(int)>& job);

}  // namespace workers
