// Transitional: the engine's per-loop context is LoopContext
// (loop_context.h). This header keeps hosts that still spell it WsContext
// compiling until they are updated; it holds nothing else.
#pragma once

#include "loop_context.h"

namespace tunnel {

class WsContext : public LoopContext {
 public:
  using LoopContext::LoopContext;
  // The context needs no shutdown step: destroying it closes its handles.
  void begin_shutdown() {}
};

}  // namespace tunnel
