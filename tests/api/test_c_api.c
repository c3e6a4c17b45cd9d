/* The C ABI as an app meets it, in plain C: bad arguments give the right status and a message,
 * cancelling midway works, and nothing leaks (ctest runs this program under LeakSanitizer, which
 * fails it at exit if any allocation is left unreachable).
 *
 *   test_c_api [MODEL_DIR]   with a model folder (the tiny Wan folder) the generation cases run too
 */
#define _POSIX_C_SOURCE 200809L /* setenv, mkdtemp */

#include <ditkit/ditkit_c.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int failures = 0;

#define CHECK(cond)                                                             \
  do {                                                                          \
    if (!(cond)) {                                                              \
      fprintf(stderr, "%s:%d: CHECK(%s) failed\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                               \
    }                                                                           \
  } while (0)

/* A call's status, and that the last error holds `words` (NULL: any non-empty message). */
static void check_status(const char* file, int line, const char* call, ditkit_status got, ditkit_status want,
                         const char* words) {
  const char* message = ditkit_last_error();
  if (got != want) {
    fprintf(stderr, "%s:%d: %s returned %s, want %s (%s)\n", file, line, call, ditkit_status_to_string(got),
            ditkit_status_to_string(want), message);
    ++failures;
  } else if (want != DITKIT_OK && (!*message || (words && !strstr(message, words)))) {
    fprintf(stderr, "%s:%d: %s: message \"%s\" lacks \"%s\"\n", file, line, call, message,
            words ? words : "(anything)");
    ++failures;
  }
}
#define CHECK_STATUS(call, want, words) check_status(__FILE__, __LINE__, #call, (call), (want), (words))

static void test_version_and_names(void) {
  ditkit_device device;
  ditkit_scheduler scheduler;
  int major, minor, patch;
  CHECK(ditkit_version() == DITKIT_VERSION);
  CHECK(sscanf(ditkit_version_string(), "%d.%d.%d", &major, &minor, &patch) == 3);
  CHECK(major == DITKIT_VERSION_MAJOR && minor == DITKIT_VERSION_MINOR && patch == DITKIT_VERSION_PATCH);

  CHECK(!strcmp(ditkit_status_to_string(DITKIT_ERROR_BUFFER_TOO_SMALL), "buffer too small"));
  CHECK(!strcmp(ditkit_status_to_string((ditkit_status)99), "unknown status"));

  CHECK(!strcmp(ditkit_device_to_string(DITKIT_DEVICE_CUDA), "cuda"));
  CHECK(ditkit_device_to_string((ditkit_device)7) == NULL);
  CHECK_STATUS(ditkit_device_from_string("cpu", &device), DITKIT_OK, NULL);
  CHECK(device == DITKIT_DEVICE_CPU);
  CHECK(!strcmp(ditkit_last_error(), ""));
  CHECK_STATUS(ditkit_device_from_string("gpu", &device), DITKIT_ERROR_INVALID_ARGUMENT, "'gpu'");
  CHECK(strstr(ditkit_last_error(), "auto, cpu, cuda") != NULL);
  CHECK_STATUS(ditkit_device_from_string(NULL, &device), DITKIT_ERROR_INVALID_ARGUMENT, "NULL");
  CHECK_STATUS(ditkit_device_from_string("cpu", NULL), DITKIT_ERROR_INVALID_ARGUMENT, "NULL");

  CHECK(!strcmp(ditkit_scheduler_to_string(DITKIT_SCHEDULER_EULER), "euler"));
  CHECK_STATUS(ditkit_scheduler_from_string("unipc", &scheduler), DITKIT_OK, NULL);
  CHECK(scheduler == DITKIT_SCHEDULER_UNIPC);
  CHECK_STATUS(ditkit_scheduler_from_string("ddim", &scheduler), DITKIT_ERROR_INVALID_ARGUMENT, "'ddim'");
}

static void* fail_on_another_thread(void* unused) {
  (void)unused;
  ditkit_model_free(NULL);
  return (void*)(size_t)ditkit_frames_size(NULL, 0, NULL);
}

static void test_last_error_is_per_thread(void) {
  ditkit_device device;
  pthread_t thread;
  void* status;
  CHECK_STATUS(ditkit_device_from_string("tpu", &device), DITKIT_ERROR_INVALID_ARGUMENT, "'tpu'");
  CHECK(pthread_create(&thread, NULL, fail_on_another_thread, NULL) == 0);
  CHECK(pthread_join(thread, &status) == 0);
  CHECK((ditkit_status)(size_t)status == DITKIT_ERROR_INVALID_ARGUMENT);
  CHECK(strstr(ditkit_last_error(), "'tpu'") != NULL); /* this thread's message is still its own */
}

static void test_null_handles_and_pointers(void) {
  ditkit_model_options mo;
  ditkit_generate_options go;
  ditkit_model* model = (ditkit_model*)&mo; /* must be reset to NULL on failure */
  unsigned char byte = 0;
  size_t bytes = 1;

  ditkit_model_options_init(NULL);
  ditkit_generate_options_init(NULL);
  ditkit_model_free(NULL);
  ditkit_model_options_init(&mo);
  ditkit_generate_options_init(&go);
  go.prompt = "a prompt";

  CHECK_STATUS(ditkit_model_load(NULL, &model), DITKIT_ERROR_INVALID_ARGUMENT, "options is NULL");
  CHECK(model == NULL);
  CHECK_STATUS(ditkit_model_load(&mo, NULL), DITKIT_ERROR_INVALID_ARGUMENT, "out is NULL");
  CHECK_STATUS(ditkit_generate(NULL, &go, &byte, 1, 0, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT, "model is NULL");
  CHECK_STATUS(ditkit_generate_to_file(NULL, &go, "x.y4m", NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT,
               "model is NULL");
  CHECK_STATUS(ditkit_frames_size(NULL, 0, &bytes), DITKIT_ERROR_INVALID_ARGUMENT, "options is NULL");
  CHECK(bytes == 0);
  CHECK_STATUS(ditkit_frames_size(&go, 0, NULL), DITKIT_ERROR_INVALID_ARGUMENT, "bytes is NULL");
  CHECK_STATUS(ditkit_write_png(NULL, &byte, 1, 1, 0), DITKIT_ERROR_INVALID_ARGUMENT, "path is NULL");
  CHECK_STATUS(ditkit_write_png("x.png", NULL, 1, 1, 0), DITKIT_ERROR_INVALID_ARGUMENT, "NULL");
}

static void test_frames_size(void) {
  ditkit_generate_options go;
  size_t bytes = 0;
  ditkit_generate_options_init(&go); /* no prompt: sizing needs none */
  CHECK_STATUS(ditkit_frames_size(&go, 0, &bytes), DITKIT_OK, NULL);
  CHECK(bytes == (size_t)81 * 480 * 832 * 3);
  CHECK_STATUS(ditkit_frames_size(&go, 4096, &bytes), DITKIT_OK, NULL);
  CHECK(bytes == (size_t)81 * 480 * 4096);
  CHECK_STATUS(ditkit_frames_size(&go, 832 * 3 - 1, &bytes), DITKIT_ERROR_INVALID_ARGUMENT, "row stride 2495");
  CHECK(bytes == 0);
  go.width = 0;
  CHECK_STATUS(ditkit_frames_size(&go, 0, &bytes), DITKIT_ERROR_INVALID_ARGUMENT, "width");
  go.width = 832;
  go.scheduler = (ditkit_scheduler)9;
  CHECK_STATUS(ditkit_frames_size(&go, 0, &bytes), DITKIT_ERROR_INVALID_ARGUMENT, "scheduler");
}

static void test_models_that_do_not_load(void) {
  ditkit_model_options mo;
  ditkit_model* model = NULL;
  char empty_dir[] = "/tmp/ditkit-c-api-XXXXXX";

  ditkit_model_options_init(&mo);
  CHECK(mo.path == NULL && mo.device == DITKIT_DEVICE_AUTO && mo.device_index == 0);
  mo.device = DITKIT_DEVICE_CPU; /* "auto" would start CUDA where there is a GPU: not what this test is about */
  mo.path = "/nonexistent/ditkit-model";
  CHECK_STATUS(ditkit_model_load(&mo, &model), DITKIT_ERROR_MODEL_NOT_FOUND, "/nonexistent/ditkit-model");
  CHECK(model == NULL);

  /* The shipped default, pointed elsewhere: the message names where it looked. */
  setenv("DITKIT_MODEL", "/nonexistent/default-model", 1);
  mo.path = NULL;
  CHECK_STATUS(ditkit_model_load(&mo, &model), DITKIT_ERROR_MODEL_NOT_FOUND, "/nonexistent/default-model");
  unsetenv("DITKIT_MODEL");

  mo.path = "/tmp";
  mo.device = (ditkit_device)5;
  CHECK_STATUS(ditkit_model_load(&mo, &model), DITKIT_ERROR_INVALID_ARGUMENT, "device");
  mo.device = DITKIT_DEVICE_CPU;
  mo.device_index = -1;
  CHECK_STATUS(ditkit_model_load(&mo, &model), DITKIT_ERROR_INVALID_ARGUMENT, "device_index");

  /* A folder that is not a model; a build without the tokenizer says that first. */
  CHECK(mkdtemp(empty_dir) != NULL);
  mo.path = empty_dir;
  mo.device_index = 0;
  {
    ditkit_status s = ditkit_model_load(&mo, &model);
    CHECK(s == DITKIT_ERROR_MODEL_INVALID || s == DITKIT_ERROR_UNSUPPORTED);
    CHECK(s != DITKIT_ERROR_MODEL_INVALID || strstr(ditkit_last_error(), empty_dir) != NULL);
  }
  CHECK(model == NULL);
  rmdir(empty_dir);
}

/* ---- with a model ------------------------------------------------------------------------- */

typedef struct {
  int calls;
  int cancel_at; /* step index at which to return nonzero; -1: never */
} progress_state;

static int count_and_maybe_cancel(int step, int num_steps, void* user_data) {
  progress_state* p = (progress_state*)user_data;
  ++p->calls;
  return step == p->cancel_at && step < num_steps;
}

static ditkit_generate_options tiny_options(void) {
  ditkit_generate_options go;
  ditkit_generate_options_init(&go);
  go.prompt = "a red circle moves left on a blue background";
  go.width = 32;
  go.height = 48;
  go.frames = 5;
  go.steps = 3;
  return go;
}

static int all_bytes(const unsigned char* p, size_t n, unsigned char value) {
  size_t i;
  for (i = 0; i < n; ++i)
    if (p[i] != value) return 0;
  return 1;
}

static void test_generation(ditkit_model* model) {
  ditkit_generate_options go = tiny_options();
  const size_t row = 32 * 3, stride = row + 5;
  size_t need = 0, y;
  unsigned char *buffer, *again;
  progress_state progress = {0, -1};
  char path[] = "/tmp/ditkit-c-api-XXXXXX";
  char file[64];
  struct stat st;

  /* The model's defaults (the tiny folder has WanPipeline's), the prompt left to the app. */
  CHECK_STATUS(ditkit_model_default_options(NULL, &go), DITKIT_ERROR_INVALID_ARGUMENT, "model is NULL");
  CHECK_STATUS(ditkit_model_default_options(model, NULL), DITKIT_ERROR_INVALID_ARGUMENT, "options is NULL");
  CHECK_STATUS(ditkit_model_default_options(model, &go), DITKIT_OK, NULL);
  CHECK(go.width == 832 && go.height == 480 && go.frames == 81 && go.steps == 50);
  CHECK(go.prompt == NULL && go.attention == NULL && go.scheduler == DITKIT_SCHEDULER_UNIPC);
  go = tiny_options();

  CHECK_STATUS(ditkit_frames_size(&go, stride, &need), DITKIT_OK, NULL);
  CHECK(need == (size_t)5 * 48 * stride);
  buffer = malloc(need);
  again = malloc(need);

  /* Bad buffers and options fail before any work, and leave the buffer alone. */
  memset(buffer, 0xAB, need);
  CHECK_STATUS(ditkit_generate(model, &go, NULL, need, stride, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT, "NULL");
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need - 1, stride, NULL, NULL), DITKIT_ERROR_BUFFER_TOO_SMALL,
               "need 24240");
  CHECK_STATUS(ditkit_generate(model, &go, buffer, 0, 0, NULL, NULL), DITKIT_ERROR_BUFFER_TOO_SMALL, "need 23040");
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need, row - 1, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT,
               "row stride 95");
  go.attention = "nosuchmethod";
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need, stride, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT,
               "nosuchmethod");
  go.attention = "topk:k=-3";
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need, stride, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT, "-3");
  go.attention = "dense@steps<2"; /* leaves steps 2.. uncovered */
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need, stride, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT, NULL);
  go.attention = NULL;
  go.prompt = NULL;
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need, stride, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT,
               "prompt is NULL");
  go = tiny_options();
  go.frames = 4; /* the VAE makes 1 + 4k frames */
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need, stride, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT,
               "frames 4");
  go = tiny_options();
  go.width = 24; /* not a multiple of 16 */
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need, 0, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT, "24x48");
  go = tiny_options();
  go.steps = 0;
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need, stride, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT, "steps");
  go = tiny_options();
  CHECK(all_bytes(buffer, need, 0xAB));

  /* Cancelled at the second step: the callback ran twice, the buffer is untouched. */
  progress.cancel_at = 1;
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need, stride, count_and_maybe_cancel, &progress), DITKIT_CANCELLED,
               "cancelled");
  CHECK(progress.calls == 2);
  CHECK(all_bytes(buffer, need, 0xAB));

  /* Generated: every step reported, each row's padding untouched, the same seed the same frames. */
  progress.calls = 0;
  progress.cancel_at = -1;
  CHECK_STATUS(ditkit_generate(model, &go, buffer, need, stride, count_and_maybe_cancel, &progress), DITKIT_OK, NULL);
  CHECK(progress.calls == 3);
  CHECK(!strcmp(ditkit_last_error(), ""));
  for (y = 0; y < 5 * 48; ++y) CHECK(all_bytes(buffer + y * stride + row, stride - row, 0xAB));
  CHECK(!all_bytes(buffer, row, 0xAB));
  memset(again, 0, need);
  CHECK_STATUS(ditkit_generate(model, &go, again, need, stride, NULL, NULL), DITKIT_OK, NULL);
  for (y = 0; y < 5 * 48; ++y) CHECK(!memcmp(buffer + y * stride, again + y * stride, row));

  CHECK(mkdtemp(path) != NULL);
  snprintf(file, sizeof file, "%s/frame.png", path);
  CHECK_STATUS(ditkit_write_png(file, buffer, 32, 48, stride), DITKIT_OK, NULL);
  CHECK(stat(file, &st) == 0 && st.st_size > 0);
  unlink(file);
  CHECK_STATUS(ditkit_write_png(file, buffer, 32, 48, 10), DITKIT_ERROR_INVALID_ARGUMENT, "row stride 10");
  CHECK_STATUS(ditkit_write_png(file, buffer, 0, 48, 0), DITKIT_ERROR_INVALID_ARGUMENT, "0x48");
  CHECK_STATUS(ditkit_write_png("/nonexistent/dir/frame.png", buffer, 32, 48, stride), DITKIT_ERROR_IO,
               "/nonexistent/dir");

  snprintf(file, sizeof file, "%s/clip.y4m", path);
  CHECK_STATUS(ditkit_generate_to_file(model, &go, file, NULL, NULL), DITKIT_OK, NULL);
  CHECK(stat(file, &st) == 0 && st.st_size > 0);
  unlink(file);
  CHECK_STATUS(ditkit_generate_to_file(model, &go, NULL, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT, "path is NULL");
  snprintf(file, sizeof file, "%s/clip.avi", path);
  CHECK_STATUS(ditkit_generate_to_file(model, &go, file, NULL, NULL), DITKIT_ERROR_INVALID_ARGUMENT, ".avi");
  CHECK_STATUS(ditkit_generate_to_file(model, &go, "/nonexistent/dir/clip.y4m", NULL, NULL), DITKIT_ERROR_IO,
               "/nonexistent/dir");
  rmdir(path);

  free(again);
  free(buffer);
}

int main(int argc, char** argv) {
  test_version_and_names();
  test_last_error_is_per_thread();
  test_null_handles_and_pointers();
  test_frames_size();
  test_models_that_do_not_load();
  if (argc > 1) {
    ditkit_model_options mo;
    ditkit_model* model = NULL;
    int round;
    ditkit_model_options_init(&mo);
    mo.path = argv[1];
    mo.device = DITKIT_DEVICE_CPU;
    /* Twice: a model freed and loaded again must not leave anything behind. */
    for (round = 0; round < 2; ++round) {
      CHECK_STATUS(ditkit_model_load(&mo, &model), DITKIT_OK, NULL);
      if (!model) break;
      if (round == 0) test_generation(model);
      ditkit_model_free(model);
      model = NULL;
    }
  }
  if (failures) fprintf(stderr, "test_c_api: %d checks failed\n", failures);
  else printf("test_c_api: all checks passed%s\n", argc > 1 ? "" : " (no model given: generation not tested)");
  return failures ? 1 : 0;
}
