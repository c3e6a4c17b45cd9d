/* ditkit's C ABI: text to video for apps in any language that can call C.
 *
 *   ditkit_model_options mo;
 *   ditkit_model_options_init(&mo);              // defaults: the shipped model, device auto
 *   ditkit_model* model = NULL;
 *   if (ditkit_model_load(&mo, &model) != DITKIT_OK) fprintf(stderr, "%s\n", ditkit_last_error());
 *   ditkit_generate_options go;
 *   ditkit_model_default_options(model, &go);   // the model's size, steps, ...
 *   go.prompt = "a red circle moves left";
 *   size_t bytes;
 *   ditkit_frames_size(&go, 0, &bytes);          // row stride 0: rows packed, width * 3 bytes
 *   uint8_t* rgb = malloc(bytes);
 *   ditkit_generate(model, &go, rgb, bytes, 0, NULL, NULL);
 *   ditkit_model_free(model);
 *
 * Rules that hold for every function:
 * - No C++ exception crosses this ABI. Functions return a ditkit_status; on anything but DITKIT_OK,
 *   ditkit_last_error() holds a message for people (it names the value or file at fault).
 * - Handles are opaque; functions taking one return DITKIT_ERROR_INVALID_ARGUMENT for NULL.
 * - Strings passed in are borrowed for the call only; strings returned are static or, for
 *   ditkit_last_error(), valid until the next ditkit call on the same thread.
 * - Threads: any function may be called from any thread. Generation calls on one model run one
 *   at a time (a later caller waits); separate models generate in parallel. The last error is kept
 *   per thread. The progress callback runs on the thread that called generate.
 * - The option structs are part of the ABI: fill them with the *_init() function, then set fields.
 *   A library whose ditkit_version() has the same major and minor as DITKIT_VERSION_MAJOR/MINOR
 *   (while the major is 0; later, the same major) has the same structs.
 */
#ifndef DITKIT_DITKIT_C_H
#define DITKIT_DITKIT_C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define DITKIT_VERSION_MAJOR 0
#define DITKIT_VERSION_MINOR 1
#define DITKIT_VERSION_PATCH 0
/* The version this header belongs to, as one number: 10000 * major + 100 * minor + patch. */
#define DITKIT_VERSION (DITKIT_VERSION_MAJOR * 10000 + DITKIT_VERSION_MINOR * 100 + DITKIT_VERSION_PATCH)

/* The version of the library actually loaded, in DITKIT_VERSION's form, and as "0.1.0". */
int ditkit_version(void);
const char* ditkit_version_string(void);

typedef enum ditkit_status {
  DITKIT_OK = 0,
  DITKIT_CANCELLED = 1,                     /* the progress callback returned nonzero */
  DITKIT_ERROR_INVALID_ARGUMENT = 2,        /* NULL handle or pointer, an option out of range, a bad recipe */
  DITKIT_ERROR_BUFFER_TOO_SMALL = 3,        /* the message gives the size needed (ditkit_frames_size) */
  DITKIT_ERROR_MODEL_NOT_FOUND = 4,         /* no such folder; for the default model, the message lists where it looked */
  DITKIT_ERROR_MODEL_INVALID = 5,           /* the folder is there but does not load (missing or wrong files) */
  DITKIT_ERROR_UNSUPPORTED = 6,             /* not in this build or on this machine: no GPU, no .mp4, no tokenizer */
  DITKIT_ERROR_IO = 7,                      /* an output file could not be written */
  DITKIT_ERROR_OUT_OF_MEMORY = 8,
  DITKIT_ERROR_INTERNAL = 9
} ditkit_status;

/* "ok", "cancelled", "invalid argument", ...; "unknown status" for values not listed above. */
const char* ditkit_status_to_string(ditkit_status status);

/* The message of the last status-returning call on this thread; "" after DITKIT_OK. */
const char* ditkit_last_error(void);

typedef enum ditkit_device {
  DITKIT_DEVICE_AUTO = 0, /* the first CUDA GPU if there is one, else the CPU */
  DITKIT_DEVICE_CPU = 1,
  DITKIT_DEVICE_CUDA = 2
} ditkit_device;

typedef enum ditkit_scheduler {
  DITKIT_SCHEDULER_UNIPC = 0, /* UniPC multistep, as Wan2.1 samples */
  DITKIT_SCHEDULER_EULER = 1  /* flow-matching Euler */
} ditkit_scheduler;

/* Names as dit-gen's flags spell them ("auto", "cpu", "cuda"; "unipc", "euler"); NULL for values
 * not listed. from_string returns DITKIT_ERROR_INVALID_ARGUMENT for unknown names. */
const char* ditkit_device_to_string(ditkit_device device);
ditkit_status ditkit_device_from_string(const char* name, ditkit_device* out);
const char* ditkit_scheduler_to_string(ditkit_scheduler scheduler);
ditkit_status ditkit_scheduler_from_string(const char* name, ditkit_scheduler* out);

/* ---- models ------------------------------------------------------------------------------- */

typedef struct ditkit_model ditkit_model;

typedef struct ditkit_model_options {
  /* A model folder (the shipped model's, or a Wan2.1 checkpoint in the diffusers layout). NULL or
   * "": the shipped default model, found through $DITKIT_MODEL, else <prefix>/share/ditkit/
   * default-model beside the installed library, else the source tree's assets/default-model. */
  const char* path;
  ditkit_device device;
  int device_index; /* which CUDA GPU, for DITKIT_DEVICE_CUDA */
} ditkit_model_options;

void ditkit_model_options_init(ditkit_model_options* options);

/* Loads the model onto its device (bf16 on a GPU, fp32 on the CPU). On failure *out is NULL. */
ditkit_status ditkit_model_load(const ditkit_model_options* options, ditkit_model** out);

/* Frees the model and everything it holds; NULL is fine. The model must not be generating. */
void ditkit_model_free(ditkit_model* model);

/* ---- generation --------------------------------------------------------------------------- */

typedef struct ditkit_generate_options {
  const char* prompt;          /* required */
  const char* negative_prompt; /* NULL: none; used when guidance > 1 */
  int width, height;           /* pixels; the model states which sizes it takes (Wan2.1: multiples of 16) */
  int frames;                  /* the model states which counts it takes (Wan2.1: 1 + 4k) */
  int steps;                   /* denoising steps */
  double guidance;             /* classifier-free guidance scale; 1 or less: none (one pass per step) */
  double shift;                /* flow-matching shift: 3.0 at 480p, 5.0 at 720p */
  int64_t seed;                /* the same seed gives the same noise on the CPU and on a GPU */
  ditkit_scheduler scheduler;
  const char* attention;       /* attention recipe, as dit-gen --attention takes it; NULL: "dense" */
  int vae_chunk;               /* latent frames decoded at once: lower uses less memory */
  int fps;                     /* for video files only */
} ditkit_generate_options;

/* Wan2.1's defaults: 832x480, 81 frames, 50 steps, guidance 5, shift 3, seed 0, UniPC, dense
 * attention, vae_chunk 1, 16 fps; prompt NULL (set it). */
void ditkit_generate_options_init(ditkit_generate_options* options);

/* The same, but with the model's own defaults for size, frames, steps, guidance, shift, scheduler
 * and negative prompt (which points into the model: valid while the model lives). */
ditkit_status ditkit_model_default_options(const ditkit_model* model, ditkit_generate_options* options);

/* Called after each denoising step (step counts from 0) on the generating thread; return nonzero
 * to cancel, which makes the generate call return DITKIT_CANCELLED with the buffer untouched. */
typedef int (*ditkit_progress_fn)(int step, int num_steps, void* user_data);

/* Frame buffers are RGB8: frame t, row y starts at byte (t * height + y) * row_stride, and holds
 * width * 3 bytes R, G, B. row_stride 0 means width * 3 (rows packed); otherwise it must be at
 * least width * 3 (a wider stride suits textures with aligned rows).
 * Sets *bytes to frames * height * row_stride, the size ditkit_generate needs. */
ditkit_status ditkit_frames_size(const ditkit_generate_options* options, size_t row_stride, size_t* bytes);

/* Generates into the caller's buffer of buffer_size bytes (see ditkit_frames_size). Everything that
 * can be checked before generating is: a buffer too small is DITKIT_ERROR_BUFFER_TOO_SMALL before
 * any work. progress may be NULL. */
ditkit_status ditkit_generate(ditkit_model* model, const ditkit_generate_options* options, uint8_t* buffer,
                              size_t buffer_size, size_t row_stride, ditkit_progress_fn progress, void* user_data);

/* Generates into a file chosen by its extension: .mp4 (builds with FFmpeg), .y4m, or a folder of
 * PNG frames (a path without extension or ending in '/'). The file appears only when complete. */
ditkit_status ditkit_generate_to_file(ditkit_model* model, const ditkit_generate_options* options, const char* path,
                                      ditkit_progress_fn progress, void* user_data);

/* Writes one RGB8 image (row_stride as above) as a PNG, atomically. */
ditkit_status ditkit_write_png(const char* path, const uint8_t* rgb, int width, int height, size_t row_stride);

#ifdef __cplusplus
}
#endif

#endif /* DITKIT_DITKIT_C_H */
