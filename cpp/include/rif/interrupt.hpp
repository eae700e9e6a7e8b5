#pragma once
/// Cooperative cancellation. Long kernels call check_interrupt() between row blocks, panels and
/// iterations; the host (the Python bindings) installs a hook that says whether the user asked
/// to stop (Ctrl-C). The kernel then unwinds with `interrupted`, leaving every object it was
/// given as it was: results are written only at the end of a call.

#include <stdexcept>

namespace rif {

/// Thrown by check_interrupt() when the host asks the running call to stop.
class interrupted : public std::runtime_error {
 public:
  interrupted() : std::runtime_error("interrupted") {}
};

/// Returns true when the running call should stop. Called from the kernel's threads, without
/// any lock held; it decides itself which thread may ask the host (e.g. Python's main thread).
using InterruptHook = bool (*)();

/// Installs the hook (nullptr: never interrupted). Set once, at start-up.
void set_interrupt_hook(InterruptHook hook);

/// Throws `interrupted` when the hook says so; asks it at most every few tens of milliseconds
/// per thread, so it is cheap enough to call once per row block.
void check_interrupt();

}  // namespace rif
