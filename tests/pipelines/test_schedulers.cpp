// The flow-matching schedulers against diffusers (golden data from tests/golden/schedulers.py):
// schedules, whole trajectories in float32 and float64, and the errors for misuse.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "dit/safetensors.h"
#include "pipelines/euler_scheduler.h"
#include "pipelines/flow_scheduler.h"
#include "pipelines/unipc_scheduler.h"

namespace ditkit {
namespace {

struct Case {
  int64_t num_steps;
  double shift;
};

// The same lists as tests/golden/schedulers.py (checked against the file's metadata).
const std::vector<Case> kTrajectoryCases = {{10, 3.0}, {7, 5.0}, {1, 3.0}, {2, 1.0}, {3, 0.5}, {13, 1.7}};
const std::vector<Case> kScheduleCases = {{50, 3.0}, {50, 5.0}, {200, 1.7}};
const char* const kSchedulers[] = {"unipc", "euler"};

std::string case_name(const Case& c) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "n%lld_s%g", static_cast<long long>(c.num_steps), c.shift);
  return buf;
}

std::string join_names(const std::vector<Case>& cases) {
  std::string out;
  for (const Case& c : cases) out += (out.empty() ? "" : ",") + case_name(c);
  return out;
}

const SafetensorsFile& golden() {
  static const SafetensorsFile file(std::string(DITKIT_TEST_DATA) + "/schedulers.safetensors");
  return file;
}

std::vector<double> to_vector(const at::Tensor& t) {
  at::Tensor d = t.to(at::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// max |a - b| / max |b|: relative to the tensor's scale, so entries near zero do not dominate.
double rel_error(const at::Tensor& a, const at::Tensor& b) {
  const at::Tensor ad = a.to(at::kCPU, at::kDouble), bd = b.to(at::kDouble);
  return (ad - bd).abs().max().item<double>() / bd.abs().max().item<double>();
}

// Runs a whole trajectory of golden case c on `device` in `dtype`; returns the worst per-step
// relative error against the golden samples of that dtype.
double trajectory_error(const std::string& scheduler, const Case& c, at::ScalarType dtype,
                        at::Device device = at::kCPU) {
  const std::string name = case_name(c);
  const at::Tensor outputs = golden().get("inputs/" + name + "/model_outputs").to(device, dtype);
  const at::Tensor expected =
      golden().get(scheduler + "/" + name + (dtype == at::kDouble ? "/samples_f64" : "/samples_f32"));
  auto sched = make_flow_scheduler(scheduler, c.shift);
  sched->set_timesteps(c.num_steps);
  at::Tensor sample = golden().get("inputs/" + name + "/sample").to(device, dtype);
  double worst = 0;
  for (int64_t i = 0; i < c.num_steps; ++i) {
    sample = sched->step(outputs[i], sample);
    EXPECT_EQ(sample.scalar_type(), dtype);
    EXPECT_EQ(sample.device().type(), device.type());
    worst = std::max(worst, rel_error(sample, expected[i]));
  }
  EXPECT_EQ(sched->step_index(), c.num_steps);
  return worst;
}

template <typename E>
void expect_error(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
    ADD_FAILURE() << "no exception; expected one saying '" << needle << "'";
  } catch (const E& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what();
  }
}

TEST(FlowScheduler, GoldenFileListsTheTestedCases) {
  EXPECT_EQ(golden().metadata().at("trajectory_cases"), join_names(kTrajectoryCases));
  EXPECT_EQ(golden().metadata().at("schedule_cases"), join_names(kScheduleCases));
}

TEST(FlowScheduler, SchedulesMatchDiffusers) {
  std::vector<Case> all = kTrajectoryCases;
  all.insert(all.end(), kScheduleCases.begin(), kScheduleCases.end());
  for (const char* scheduler : kSchedulers) {
    double worst_t = 0, worst_s = 0;
    for (const Case& c : all) {
      SCOPED_TRACE(std::string(scheduler) + " " + case_name(c));
      const std::string prefix = std::string(scheduler) + "/" + case_name(c);
      const std::vector<double> timesteps = to_vector(golden().get(prefix + "/timesteps"));
      const std::vector<double> sigmas = to_vector(golden().get(prefix + "/sigmas"));
      auto sched = make_flow_scheduler(scheduler, c.shift);
      sched->set_timesteps(c.num_steps);
      EXPECT_EQ(sched->num_steps(), c.num_steps);
      ASSERT_EQ(sched->timesteps().size(), timesteps.size());
      ASSERT_EQ(sched->sigmas().size(), sigmas.size());
      EXPECT_EQ(sched->sigmas().back(), 0.0);
      for (size_t i = 0; i < timesteps.size(); ++i) {
        const double err = std::fabs(sched->timesteps()[i] - timesteps[i]) / std::fabs(timesteps[i]);
        EXPECT_LE(err, 1e-6) << "timestep " << i << ": " << sched->timesteps()[i] << " vs " << timesteps[i];
        worst_t = std::max(worst_t, err);
      }
      for (size_t i = 0; i + 1 < sigmas.size(); ++i) {
        const double err = std::fabs(sched->sigmas()[i] - sigmas[i]) / std::fabs(sigmas[i]);
        EXPECT_LE(err, 1e-6) << "sigma " << i << ": " << sched->sigmas()[i] << " vs " << sigmas[i];
        worst_s = std::max(worst_s, err);
      }
    }
    std::printf("[ %s schedules ] max rel error: timesteps %.3g, sigmas %.3g\n", scheduler, worst_t, worst_s);
  }
}

TEST(FlowScheduler, TrajectoriesMatchDiffusersFloat32) {
  for (const char* scheduler : kSchedulers) {
    double worst = 0;
    for (const Case& c : kTrajectoryCases) {
      SCOPED_TRACE(std::string(scheduler) + " " + case_name(c));
      const double err = trajectory_error(scheduler, c, at::kFloat);
      EXPECT_LE(err, 1e-4);
      worst = std::max(worst, err);
    }
    std::printf("[ %s float32 trajectories ] max rel error %.3g\n", scheduler, worst);
  }
}

TEST(FlowScheduler, TrajectoriesMatchDiffusersFloat64) {
  for (const char* scheduler : kSchedulers) {
    double worst = 0;
    for (const Case& c : kTrajectoryCases) {
      SCOPED_TRACE(std::string(scheduler) + " " + case_name(c));
      const double err = trajectory_error(scheduler, c, at::kDouble);
      EXPECT_LE(err, 1e-12);
      worst = std::max(worst, err);
    }
    std::printf("[ %s float64 trajectories ] max rel error %.3g\n", scheduler, worst);
  }
}

TEST(FlowScheduler, TrajectoriesMatchDiffusersOnCuda) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no CUDA device";
  for (const char* scheduler : kSchedulers) {
    double worst = 0;
    for (const Case& c : kTrajectoryCases) {
      SCOPED_TRACE(std::string(scheduler) + " " + case_name(c));
      const double err = trajectory_error(scheduler, c, at::kFloat, at::kCUDA);
      EXPECT_LE(err, 1e-4);
      worst = std::max(worst, err);
    }
    std::printf("[ %s float32 trajectories on CUDA ] max rel error %.3g\n", scheduler, worst);
  }
}

// A bfloat16 model over float32 latents (the usual mix): the result keeps the sample's dtype and
// follows the float32 trajectory to bfloat16 accuracy; a bfloat16 sample stays bfloat16.
TEST(FlowScheduler, MixedDtypes) {
  const Case c = kTrajectoryCases[0];
  const std::string name = case_name(c);
  const at::Tensor outputs = golden().get("inputs/" + name + "/model_outputs");
  for (const char* scheduler : kSchedulers) {
    SCOPED_TRACE(scheduler);
    const at::Tensor expected = golden().get(std::string(scheduler) + "/" + name + "/samples_f32");
    for (at::ScalarType sample_dtype : {at::kFloat, at::kBFloat16}) {
      auto sched = make_flow_scheduler(scheduler, c.shift);
      sched->set_timesteps(c.num_steps);
      at::Tensor sample = golden().get("inputs/" + name + "/sample").to(sample_dtype);
      for (int64_t i = 0; i < c.num_steps; ++i) {
        sample = sched->step(outputs[i].to(at::kBFloat16), sample);
        ASSERT_EQ(sample.scalar_type(), sample_dtype);
      }
      EXPECT_LE(rel_error(sample, expected[c.num_steps - 1]), 2e-2);
    }
  }
}

TEST(FlowScheduler, ResetAndSetTimestepsStartOver) {
  const Case c = kTrajectoryCases[0];
  const std::string name = case_name(c);
  const at::Tensor outputs = golden().get("inputs/" + name + "/model_outputs").to(at::kDouble);
  const at::Tensor start = golden().get("inputs/" + name + "/sample").to(at::kDouble);
  for (const char* scheduler : kSchedulers) {
    SCOPED_TRACE(scheduler);
    const at::Tensor expected = golden().get(std::string(scheduler) + "/" + name + "/samples_f64");
    auto sched = make_flow_scheduler(scheduler, c.shift);
    sched->set_timesteps(4);  // a different run first, abandoned part way
    at::Tensor sample = sched->step(outputs[0], start);
    sched->step(outputs[1], sample);
    for (int restart = 0; restart < 2; ++restart) {
      if (restart == 0) sched->set_timesteps(c.num_steps);
      else sched->reset();
      EXPECT_EQ(sched->step_index(), 0);
      sample = start;
      for (int64_t i = 0; i < c.num_steps; ++i) sample = sched->step(outputs[i], sample);
      EXPECT_LE(rel_error(sample, expected[c.num_steps - 1]), 1e-12) << (restart == 0 ? "set_timesteps" : "reset");
    }
  }
}

TEST(FlowScheduler, FactoryNamesAndParameters) {
  auto unipc = make_flow_scheduler("unipc", 5.0);
  EXPECT_NE(dynamic_cast<UniPCScheduler*>(unipc.get()), nullptr);
  EXPECT_EQ(unipc->name(), "unipc");
  EXPECT_EQ(unipc->shift(), 5.0);
  EXPECT_EQ(unipc->num_train_timesteps(), 1000);
  EXPECT_EQ(unipc->num_steps(), 0);
  auto euler = make_flow_scheduler("euler", 3.0, 500);
  EXPECT_NE(dynamic_cast<EulerScheduler*>(euler.get()), nullptr);
  EXPECT_EQ(euler->num_train_timesteps(), 500);
  euler->set_timesteps(5);
  EXPECT_EQ(euler->timesteps().front(), 500.0);  // the first step is pure noise, on a 0..500 scale
  expect_error<std::invalid_argument>([] { make_flow_scheduler("ddim", 3.0); }, "unknown scheduler 'ddim'");
  expect_error<std::invalid_argument>([] { make_flow_scheduler("UniPC", 3.0); }, "known: unipc, euler");
}

TEST(FlowScheduler, RejectsBadParameters) {
  for (const char* scheduler : kSchedulers) {
    SCOPED_TRACE(scheduler);
    for (double shift : {0.0, -1.0, std::numeric_limits<double>::quiet_NaN(), std::numeric_limits<double>::infinity()})
      expect_error<std::invalid_argument>([&] { make_flow_scheduler(scheduler, shift); },
                                          "shift must be a finite number > 0");
    expect_error<std::invalid_argument>([&] { make_flow_scheduler(scheduler, 3.0, 0); },
                                        "num_train_timesteps must be > 0");
    auto sched = make_flow_scheduler(scheduler, 3.0);
    for (int64_t n : {0, -3})
      expect_error<std::invalid_argument>([&] { sched->set_timesteps(n); },
                                          "set_timesteps needs num_steps >= 1, got " + std::to_string(n));
  }
  // A shift so large that float32 noise levels collide at 1 would make UniPC's log-SNR steps 0.
  auto unipc = make_flow_scheduler("unipc", 1e9);
  expect_error<std::invalid_argument>([&] { unipc->set_timesteps(10); }, "not strictly decreasing inside (0, 1)");
}

TEST(FlowScheduler, RejectsMisuseOfStep) {
  const at::Tensor x = at::randn({1, 4, 2, 3, 3}, at::kFloat);
  for (const char* scheduler : kSchedulers) {
    SCOPED_TRACE(scheduler);
    auto sched = make_flow_scheduler(scheduler, 3.0);
    expect_error<std::logic_error>([&] { sched->step(x, x); }, "called before set_timesteps()");
    sched->set_timesteps(2);
    expect_error<std::invalid_argument>([&] { sched->step(x.narrow(4, 0, 2), x); },
                                        "model_output shape [1, 4, 2, 3, 2] differs from sample shape [1, 4, 2, 3, 3]");
    expect_error<std::invalid_argument>([&] { sched->step(x.to(at::kInt), x); }, "must be floating point");
    expect_error<std::invalid_argument>([&] { sched->step(x, at::Tensor()); }, "undefined tensor");
    EXPECT_EQ(sched->step_index(), 0) << "a rejected step must not advance";
    at::Tensor y = sched->step(x, x);
    y = sched->step(x, y);
    expect_error<std::logic_error>([&] { sched->step(x, y); }, "called more times than the 2 steps set");
  }
  // UniPC carries the last sample over: a different shape mid-run is a new run, not a broadcast.
  auto unipc = make_flow_scheduler("unipc", 3.0);
  unipc->set_timesteps(3);
  unipc->step(x, x);
  const at::Tensor wider = at::randn({2, 4, 2, 3, 3}, at::kFloat);
  expect_error<std::invalid_argument>([&] { unipc->step(wider, wider); }, "differs from the previous step's");
}

}  // namespace
}  // namespace ditkit
