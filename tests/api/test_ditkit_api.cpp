// The C++ API (include/ditkit/ditkit.h): what it promises about errors, buffers, callbacks and
// threads, on the tiny Wan folder. The C ABI has its own test in plain C (test_c_api.c).
#include <ATen/Context.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <thread>

#include "dit/atomic_file.h"
#include "ditkit/ditkit.h"
#include "ditkit_config.h"
#include "pipelines/model_location.h"
#include "pipelines/png.h"

namespace {

const std::string kTiny = std::string(DITKIT_TEST_DATA) + "/wan_pipeline_tiny";

ditkit::GenerateOptions tiny_options() {
  ditkit::GenerateOptions o;
  o.prompt = "a red circle moves left on a blue background";
  o.width = 32;
  o.height = 48;
  o.frames = 5;
  o.steps = 2;
  return o;
}

// Passes when f throws a ditkit::Error of `code` whose message holds `words`.
template <typename F>
::testing::AssertionResult fails_with(F&& f, ditkit::ErrorCode code, const std::string& words) {
  try {
    f();
  } catch (const ditkit::Error& e) {
    if (e.code() != code) return ::testing::AssertionFailure() << "code " << static_cast<int>(e.code()) << ": " << e.what();
    if (std::string(e.what()).find(words) == std::string::npos)
      return ::testing::AssertionFailure() << "message \"" << e.what() << "\" lacks \"" << words << "\"";
    return ::testing::AssertionSuccess();
  }
  return ::testing::AssertionFailure() << "no ditkit::Error thrown";
}

// Sets an environment variable for one scope.
struct ScopedEnv {
  ScopedEnv(const char* name, const char* value) : name_(name) {
    if (const char* old = std::getenv(name)) old_ = old, had_ = true;
    value ? setenv(name, value, 1) : unsetenv(name);
  }
  ~ScopedEnv() { had_ ? setenv(name_, old_.c_str(), 1) : unsetenv(name_); }
  const char* name_;
  std::string old_;
  bool had_ = false;
};

TEST(Api, VersionIsTheProjects) { EXPECT_EQ(ditkit::version(), DITKIT_VERSION_STRING); }

TEST(Api, FrameBufferSizes) {
  ditkit::GenerateOptions o = tiny_options();
  EXPECT_EQ(ditkit::frame_buffer_size(o), size_t{5 * 48 * 32 * 3});
  EXPECT_EQ(ditkit::frame_buffer_size(o, 128), size_t{5 * 48 * 128});
  EXPECT_TRUE(fails_with([&] { ditkit::frame_buffer_size(o, 95); }, ditkit::ErrorCode::kInvalidArgument,
                         "row stride 95 is less than width * 3 = 96"));
  o.frames = -1;
  EXPECT_TRUE(fails_with([&] { ditkit::frame_buffer_size(o); }, ditkit::ErrorCode::kInvalidArgument, "frames"));
}

TEST(Api, DefaultModelSearchOrder) {
  {
    ScopedEnv env("DITKIT_MODEL", "/nonexistent/model");
    EXPECT_EQ(ditkit::default_model_candidates(), std::vector<std::string>{"/nonexistent/model"});
    EXPECT_TRUE(fails_with([] { ditkit::Model::load(); }, ditkit::ErrorCode::kModelNotFound, "/nonexistent/model"));
  }
  ScopedEnv env("DITKIT_MODEL", nullptr);
  const std::vector<std::string> c = ditkit::default_model_candidates();
  ASSERT_EQ(c.size(), 2u);
  // Beside this test binary as if it were installed in <prefix>/bin, then the source tree.
  const auto self = std::filesystem::canonical("/proc/self/exe").parent_path();
  EXPECT_EQ(c[0], (self.parent_path() / "share/ditkit/default-model").string());
  EXPECT_EQ(std::filesystem::path(c[1]).filename(), "default-model");
  EXPECT_EQ(std::filesystem::path(c[1]).parent_path().filename(), "assets");
}

TEST(Api, LoadErrorsSayWhatKind) {
  EXPECT_TRUE(fails_with([] { ditkit::Model::load({"/nonexistent/dir", "cpu"}); }, ditkit::ErrorCode::kModelNotFound,
                         "/nonexistent/dir"));
  EXPECT_TRUE(fails_with([] { ditkit::Model::load({kTiny, "tpu"}); }, ditkit::ErrorCode::kInvalidArgument,
                         "device: 'tpu' is not auto, cpu or cuda[:N]"));
  if (at::hasCUDA()) {
    EXPECT_TRUE(fails_with([] { ditkit::Model::load({kTiny, "cuda:99"}); }, ditkit::ErrorCode::kInvalidArgument,
                           "device: 'cuda:99': this machine has"));
  } else {
    EXPECT_TRUE(fails_with([] { ditkit::Model::load({kTiny, "cuda:1"}); }, ditkit::ErrorCode::kUnsupported,
                           "device: 'cuda:1': this machine has no usable CUDA GPU"));
  }
  if (!DITKIT_HAVE_SENTENCEPIECE) GTEST_SKIP() << "built without sentencepiece";
  // A folder, but not a model's.
  EXPECT_TRUE(fails_with([] { ditkit::Model::load({std::string(DITKIT_TEST_DATA), "cpu"}); },
                         ditkit::ErrorCode::kModelInvalid, "cannot load model"));
}

class ApiTiny : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (DITKIT_HAVE_SENTENCEPIECE) model_ = new ditkit::Model(ditkit::Model::load({kTiny, "cpu"}));
  }
  static void TearDownTestSuite() {
    delete model_;
    model_ = nullptr;
  }
  void SetUp() override {
    if (!model_) GTEST_SKIP() << "built without sentencepiece";
  }
  static ditkit::Model* model_;
};
ditkit::Model* ApiTiny::model_ = nullptr;

TEST_F(ApiTiny, FramesMatchTheStridedBuffer) {
  EXPECT_EQ(model_->path(), kTiny);
  EXPECT_EQ(model_->device(), "cpu");
  const ditkit::GenerateOptions defaults = model_->default_options();  // the tiny folder has WanPipeline's
  EXPECT_EQ(defaults.width, 832);
  EXPECT_EQ(defaults.frames, 81);
  EXPECT_EQ(defaults.prompt, "");
  const ditkit::GenerateOptions o = tiny_options();
  int calls = 0;
  const ditkit::Frames frames = model_->generate(o, [&](int step, int steps) {
    EXPECT_EQ(step, calls++);
    EXPECT_EQ(steps, 2);
    return true;
  });
  EXPECT_EQ(calls, 2);
  ASSERT_EQ(frames.count, 5);
  ASSERT_EQ(frames.width, 32);
  ASSERT_EQ(frames.height, 48);
  ASSERT_EQ(frames.rgb.size(), ditkit::frame_buffer_size(o));

  const size_t stride = 100;
  std::vector<uint8_t> buffer(ditkit::frame_buffer_size(o, stride), 7);
  model_->generate_into(o, buffer.data(), buffer.size(), stride);
  for (int t = 0; t < 5; ++t)
    for (int y = 0; y < 48; ++y) {
      const uint8_t* row = buffer.data() + (t * 48 + y) * stride;
      ASSERT_EQ(std::memcmp(row, frames.frame(t) + y * 32 * 3, 96), 0) << "frame " << t << " row " << y;
      EXPECT_EQ(row[96], 7);  // padding untouched
    }
}

TEST_F(ApiTiny, ShortBufferFailsBeforeAnyWork) {
  const ditkit::GenerateOptions o = tiny_options();
  std::vector<uint8_t> buffer(ditkit::frame_buffer_size(o) - 1);
  bool called = false;
  EXPECT_TRUE(fails_with(
      [&] { model_->generate_into(o, buffer.data(), buffer.size(), 0, [&](int, int) { return called = true; }); },
      ditkit::ErrorCode::kBufferTooSmall, "need 23040"));
  EXPECT_FALSE(called);
}

TEST_F(ApiTiny, CancelAndCallbackExceptions) {
  const ditkit::GenerateOptions o = tiny_options();
  EXPECT_TRUE(fails_with([&] { model_->generate(o, [](int, int) { return false; }); }, ditkit::ErrorCode::kCancelled,
                         "cancelled"));
  // The app's own exception comes back as itself, not as a ditkit::Error.
  struct AppError {};
  EXPECT_THROW(model_->generate(o, [](int, int) -> bool { throw AppError{}; }), AppError);
}

TEST_F(ApiTiny, BadRecipesAndSizesAreInvalidArguments) {
  ditkit::GenerateOptions o = tiny_options();
  o.attention = "nosuchmethod";
  EXPECT_TRUE(fails_with([&] { model_->generate(o); }, ditkit::ErrorCode::kInvalidArgument, "nosuchmethod"));
  o = tiny_options();
  o.width = 40;
  EXPECT_TRUE(fails_with([&] { model_->generate(o); }, ditkit::ErrorCode::kInvalidArgument, "multiples of 16"));
  o = tiny_options();
  o.scheduler = "ddim";
  EXPECT_TRUE(fails_with([&] { model_->generate(o); }, ditkit::ErrorCode::kInvalidArgument, "'ddim'"));
}

// One model from several threads: calls take turns and give what one thread alone gives.
TEST_F(ApiTiny, OneModelFromTwoThreads) {
  const ditkit::GenerateOptions o = tiny_options();
  const ditkit::Frames alone = model_->generate(o);
  ditkit::Frames a, b;
  std::thread ta([&] { a = model_->generate(o); });
  std::thread tb([&] { b = model_->generate(o); });
  ta.join();
  tb.join();
  EXPECT_EQ(a.rgb, alone.rgb);
  EXPECT_EQ(b.rgb, alone.rgb);
}

TEST_F(ApiTiny, FilesAndPngs) {
  const std::filesystem::path dir = std::filesystem::temp_directory_path() / ("ditkit-api-" + std::to_string(getpid()));
  ditkit::remove_tree(dir.string());
  std::filesystem::create_directories(dir);
  const ditkit::GenerateOptions o = tiny_options();

  model_->generate_to_file(o, (dir / "clip.y4m").string());
  EXPECT_GT(std::filesystem::file_size(dir / "clip.y4m"), 0u);
  model_->generate_to_file(o, (dir / "frames/").string());
  EXPECT_TRUE(std::filesystem::exists(dir / "frames" / "frame_00004.png"));
  EXPECT_TRUE(fails_with([&] { model_->generate_to_file(o, (dir / "clip.avi").string()); },
                         ditkit::ErrorCode::kInvalidArgument, "unknown extension '.avi'"));
  EXPECT_TRUE(fails_with([&] { model_->generate_to_file(o, (dir / "no/such/clip.y4m").string()); },
                         ditkit::ErrorCode::kIo, "does not exist"));
  if (!DITKIT_HAVE_FFMPEG) {
    EXPECT_TRUE(fails_with([&] { model_->generate_to_file(o, (dir / "clip.mp4").string()); },
                           ditkit::ErrorCode::kUnsupported, "FFmpeg"));
  }

  // A strided frame written as a PNG reads back as the packed frame.
  const ditkit::Frames frames = model_->generate(o);
  std::vector<uint8_t> strided(48 * 128);
  for (int y = 0; y < 48; ++y) std::memcpy(strided.data() + y * 128, frames.frame(2) + y * 96, 96);
  ditkit::write_png((dir / "frame.png").string(), strided.data(), 32, 48, 128);
  const at::Tensor back = ditkit::read_png((dir / "frame.png").string());
  ASSERT_EQ(back.sizes(), (at::IntArrayRef{48, 32, 3}));
  EXPECT_EQ(std::memcmp(back.contiguous().data_ptr<uint8_t>(), frames.frame(2), 48 * 96), 0);
  ditkit::remove_tree(dir.string());
}

}  // namespace
