#include "service_events.h"

#include <atomic>
#include <mutex>

namespace tunneld::platform::win {

struct LoopEvents::State {
  std::mutex mutex;  // orders post() against close(): no uv_async_send on a closing handle
  bool closed = false;
  std::atomic<unsigned> pending{0};
  uv_async_t async{};
  Handler handler;
  std::shared_ptr<State> self;  // keeps the handle's memory until its close callback

  void post(ServiceEvent event) {
    std::lock_guard lock(mutex);
    if (closed) return;
    pending.fetch_or(static_cast<unsigned>(event), std::memory_order_acq_rel);
    uv_async_send(&async);
  }
};

LoopEvents::LoopEvents(uv_loop_t* loop, Handler handler) : state_(std::make_shared<State>()) {
  state_->handler = std::move(handler);
  state_->async.data = state_.get();
  uv_async_init(loop, &state_->async, [](uv_async_t* async) {
    auto* state = static_cast<State*>(async->data);
    const unsigned events = state->pending.exchange(0, std::memory_order_acq_rel);
    for (ServiceEvent e : {ServiceEvent::stop, ServiceEvent::reload}) {
      if ((events & static_cast<unsigned>(e)) == 0) continue;
      {
        std::lock_guard lock(state->mutex);
        if (state->closed) return;
      }
      state->handler(e);
    }
  });
}

LoopEvents::~LoopEvents() { close(); }

void LoopEvents::post(ServiceEvent event) { state_->post(event); }

LoopEvents::Poster LoopEvents::poster() const {
  std::weak_ptr<State> weak = state_;
  return [weak](ServiceEvent event) {
    if (auto state = weak.lock()) state->post(event);
  };
}

void LoopEvents::close() {
  {
    std::lock_guard lock(state_->mutex);
    if (state_->closed) return;
    state_->closed = true;
  }
  state_->self = state_;
  uv_close(reinterpret_cast<uv_handle_t*>(&state_->async), [](uv_handle_t* h) {
    auto* state = static_cast<State*>(h->data);
    state->self.reset();  // may free the state: nothing after this
  });
}

}  // namespace tunneld::platform::win
