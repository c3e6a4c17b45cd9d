// `reuse`: step reuse of plans. Wraps any method; per layer it keeps the last plan and runs it
// again at later steps, re-planning on a schedule or when the layer's q/k have drifted.
#pragma once

#include <memory>

#include "sparse/attention_method.h"

namespace ditkit {

struct ReuseSchedule {
  // Re-plan once `every` steps have passed since the layer's last plan; 0: never on schedule.
  int64_t every = 5;
  // > 0: also re-plan when the block means of q and k moved by more than this, relative to those
  // of the last plan. Deciding it reads one scalar back from the device (a host sync) per call.
  double drift = 0.0;
};

// The method behind `reuse:inner=(...)`; tests wrap their own inner methods with it.
std::unique_ptr<AttentionMethod> make_reuse_method(std::unique_ptr<AttentionMethod> inner, ReuseSchedule schedule);

}  // namespace ditkit
