#include "rif/interrupt.hpp"

#include <atomic>
#include <chrono>

namespace rif {

namespace {

std::atomic<InterruptHook> hook{nullptr};

using Clock = std::chrono::steady_clock;
constexpr auto kPeriod = std::chrono::milliseconds(50);

}  // namespace

void set_interrupt_hook(InterruptHook h) { hook.store(h); }

void check_interrupt() {
  const InterruptHook h = hook.load(std::memory_order_relaxed);
  if (!h) return;
  thread_local Clock::time_point last{};
  const Clock::time_point now = Clock::now();
  if (now - last < kPeriod) return;
  last = now;
  if (h()) {
    throw interrupted();
  }
}

}  // namespace rif
