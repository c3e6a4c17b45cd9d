/* Text to video from C: generate frames into a buffer the app owns, write the middle one as a PNG.
 *
 *   generate_png [--model DIR] [--out FILE.png] [--prompt TEXT] [--size WxH] [--frames N] [--steps N]
 *
 * Without --model it uses the shipped default model; other settings default to the model's. Ctrl-C
 * cancels between denoising steps.
 */
#include <ditkit/ditkit_c.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static volatile sig_atomic_t interrupted = 0;

static void on_interrupt(int sig) {
  (void)sig;
  interrupted = 1;
}

/* Prints progress; a nonzero return cancels the generation. */
static int on_step(int step, int num_steps, void* user_data) {
  (void)user_data;
  fprintf(stderr, "\rdenoising %d/%d", step + 1, num_steps);
  if (step + 1 == num_steps) fputc('\n', stderr);
  return interrupted;
}

static int fail(const char* what, ditkit_status status) {
  fprintf(stderr, "generate_png: %s: %s: %s\n", what, ditkit_status_to_string(status), ditkit_last_error());
  return 1;
}

int main(int argc, char** argv) {
  const char* out = "generate_png.png";
  const char* what = "generating";
  const char* prompt = "a red circle moves left on a blue background";
  int width = 0, height = 0, frames = 0, steps = 0; /* 0: the model's default */
  ditkit_model_options model_options;
  ditkit_generate_options options;
  ditkit_model* model = NULL;
  ditkit_status status;
  size_t row_stride, bytes;
  unsigned char* rgb;
  int i;

  if (ditkit_version() / 100 != DITKIT_VERSION / 100) {
    fprintf(stderr, "generate_png: built for ditkit %d.%d, but the library is %s\n", DITKIT_VERSION_MAJOR,
            DITKIT_VERSION_MINOR, ditkit_version_string());
    return 1;
  }
  ditkit_model_options_init(&model_options);
  for (i = 1; i + 1 < argc; i += 2) {
    const char* flag = argv[i];
    const char* value = argv[i + 1];
    if (!strcmp(flag, "--model")) model_options.path = value;
    else if (!strcmp(flag, "--out")) out = value;
    else if (!strcmp(flag, "--prompt")) prompt = value;
    else if (!strcmp(flag, "--size") && sscanf(value, "%dx%d", &width, &height) == 2) continue;
    else if (!strcmp(flag, "--frames")) frames = atoi(value);
    else if (!strcmp(flag, "--steps")) steps = atoi(value);
    else break;
  }
  if (i != argc) {
    fprintf(stderr, "usage: %s [--model DIR] [--out FILE.png] [--prompt TEXT] [--size WxH] [--frames N] [--steps N]\n",
            argv[0]);
    return 2;
  }

  status = ditkit_model_load(&model_options, &model);
  if (status != DITKIT_OK) return fail("loading the model", status);
  ditkit_model_default_options(model, &options); /* the model's size, steps, guidance, ... */
  options.prompt = prompt;
  if (width) {
    options.width = width;
    options.height = height;
  }
  if (frames) options.frames = frames;
  if (steps) options.steps = steps;

  /* Rows aligned to 64 bytes, as a texture upload might want; ditkit fills width * 3 of each. */
  row_stride = ((size_t)options.width * 3 + 63) / 64 * 64;
  status = ditkit_frames_size(&options, row_stride, &bytes);
  if (status != DITKIT_OK) {
    ditkit_model_free(model);
    return fail("sizing the frame buffer", status);
  }
  rgb = malloc(bytes);
  if (!rgb) {
    ditkit_model_free(model);
    fprintf(stderr, "generate_png: cannot allocate %zu bytes\n", bytes);
    return 1;
  }

  signal(SIGINT, on_interrupt);
  status = ditkit_generate(model, &options, rgb, bytes, row_stride, on_step, NULL);
  if (status == DITKIT_OK) {
    const int middle = (options.frames - 1) / 2;
    what = "writing the PNG";
    status = ditkit_write_png(out, rgb + (size_t)middle * options.height * row_stride, options.width,
                              options.height, row_stride);
    if (status == DITKIT_OK)
      fprintf(stderr, "generate_png: wrote frame %d of %d (%dx%d) to %s\n", middle, options.frames, options.width,
              options.height, out);
  }
  free(rgb);
  ditkit_model_free(model);
  if (status == DITKIT_CANCELLED) {
    fprintf(stderr, "\ngenerate_png: cancelled\n");
    return 130;
  }
  return status == DITKIT_OK ? 0 : fail(what, status);
}
