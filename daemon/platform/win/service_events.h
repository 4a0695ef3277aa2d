// Service control events (stop, reload) handed from the thread that receives
// them (the service control manager's dispatcher thread) to the event loop,
// which handles them like SIGTERM and SIGHUP. Portable: libuv only.
#pragma once

#include <uv.h>

#include <functional>
#include <memory>

namespace tunneld::platform::win {

enum class ServiceEvent : unsigned { stop = 1, reload = 2 };

class LoopEvents {
 public:
  using Handler = std::function<void(ServiceEvent)>;
  using Poster = std::function<void(ServiceEvent)>;

  // `handler` runs on the loop's thread. Several posts of the same event
  // before the loop runs are delivered once; stop is delivered before reload.
  LoopEvents(uv_loop_t* loop, Handler handler);
  // Closes the handle if close() was not called.
  ~LoopEvents();
  LoopEvents(const LoopEvents&) = delete;
  LoopEvents& operator=(const LoopEvents&) = delete;

  // Thread-safe; a no-op once close() ran.
  void post(ServiceEvent event);
  // A thread-safe function that posts to this loop and stays safe to call
  // after the LoopEvents is gone (it does nothing then): what a service
  // control handler, which may outlive the daemon, should hold.
  Poster poster() const;
  // Closes the uv handle (on the loop's thread); no event is delivered after.
  void close();

 private:
  struct State;
  std::shared_ptr<State> state_;
};

}  // namespace tunneld::platform::win
