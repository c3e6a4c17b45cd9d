// Procedural training data for the shipped model: coloured shapes moving over plain or textured
// backgrounds, with captions made from the same facts, so that what a clip shows is known exactly
// and a checker (adherence_checker.h) can tell whether a generated clip shows what its prompt says.
//
// Facts and words
//   object colours      red green blue yellow white magenta
//   background colours  black gray blue white (never the colour of an object in the same clip)
//   textures            plain (no word), striped, checkered, noisy (low contrast, static)
//   shapes              circle square triangle (axis-aligned; the triangle points up)
//   directions          left right up down
//   speeds              slowly quickly (a quarter / 55% of the frame over the clip)
//   objects             one or two, of different colours
// Captions: "a red circle moves slowly left on a blue background",
//           "a red circle moves quickly left and a green square moves slowly up on a striped gray background".
//
// Held-out combinations (the training split never shows them; evaluation prompts use them):
//   colour with shape     red triangle, green square, yellow circle
//   shape with direction  circle up, square left, triangle right
// A clip is held out when any of its objects has one of these pairs.
//
// Rendering is ATen tensor ops on the target device: per object a signed distance field with a
// one-pixel anti-aliased edge, composited over the background. Sizes, speeds and texture scales are
// fractions of the frame, so smaller clips show the same things; the default 32 x 128 x 128 clip has
// objects 22-34 px across moving about 1 (slowly) or 2.3 (quickly) px a frame, fully in frame.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace ditkit {

enum class Shape { kCircle, kSquare, kTriangle };
enum class Direction { kLeft, kRight, kUp, kDown };
enum class Speed { kSlow, kFast };  // caption words "slowly" / "quickly"

struct ObjectFacts {
  std::string colour;
  Shape shape = Shape::kCircle;
  Direction direction = Direction::kLeft;
  Speed speed = Speed::kSlow;
};

struct ClipFacts {
  std::vector<ObjectFacts> objects;
  std::string background;
  std::string texture;  // "" = plain
};

struct ClipSize {
  int64_t frames = 32, height = 128, width = 128;
};

enum class Split { kTrain, kHeldOut };

// Caption words of the enums, and back (the parse functions throw std::invalid_argument).
std::string shape_word(Shape shape);
std::string direction_word(Direction direction);
std::string speed_word(Speed speed);

const std::vector<std::string>& object_colours();
const std::vector<std::string>& background_colours();
const std::vector<std::string>& textures();  // without "" (plain)
// RGB of any object or background colour; std::invalid_argument for an unknown name.
std::array<uint8_t, 3> colour_rgb(const std::string& name);

// Throws std::invalid_argument when the facts break the rules above (unknown word, no object,
// two objects of one colour, a background of an object's colour).
void validate(const ClipFacts& facts);

std::string caption(const ClipFacts& facts);
// caption(facts) with each fact word (an object's colour, shape, speed or direction, the texture,
// the background colour) left out with probability `p`, each drawn apart from `seed`; "a", "moves",
// "and", "on" and "background" stay ("a red moves left on a background" can come out). Training on
// such captions shows each word's effect apart from the words it usually comes with, which an
// unseen pair (a green square, when training never shows one) needs. p = 0 gives caption(facts).
// Throws std::invalid_argument for p outside [0, 1] and as caption() does.
std::string caption_dropping_facts(const ClipFacts& facts, double p, uint64_t seed);
// The facts with every object's shape swapped for the one the shipped model draws instead when it
// errs (a square or a triangle comes out round, a circle square-ish; docs/shipped_model.md): the
// contrast prompt of shape-contrastive guidance (SamplingOptions::contrast_guidance).
ClipFacts with_contrasting_shapes(const ClipFacts& facts);
// The inverse of caption(); case-insensitive, extra spaces and a final '.' are fine. Throws
// std::invalid_argument naming the word it cannot place, or the rule the facts break.
ClipFacts parse_caption(const std::string& text);

// Deterministic from `seed` on every platform (own generator, no std distributions).
// kTrain never yields a held-out combination; kHeldOut always does.
ClipFacts sample_facts(uint64_t seed, Split split);
bool is_held_out(const ClipFacts& facts);
// Whether this object's colour and shape, or its shape and direction, is a held-out pair.
bool in_held_out_pair(const ObjectFacts& object);

// Every word captions use, sorted (for the text encoder's vocabulary file).
std::vector<std::string> caption_vocabulary();

// One clip per (facts, seed); the seed places the objects, picks their sizes and the texture's
// phase. Returns float [B, 3, T, H, W] in [-1, 1] on `device`; CPU and CUDA agree to float rounding.
// Given `coverage`, also sets it to float [B, 1, T, H, W] on `device`: per pixel the largest share
// of it any object covers (0 on the background, 1 inside an object), for weighting a loss.
at::Tensor render_clips(const std::vector<ClipFacts>& facts, const std::vector<uint64_t>& seeds, ClipSize size,
                        at::Device device, at::Tensor* coverage = nullptr);

// uint8 [T, H, W, 3] on the CPU (what the pipeline's decoder returns) from one rendered clip
// [3, T, H, W] (or [1, 3, T, H, W]) in [-1, 1].
at::Tensor clip_to_frames(const at::Tensor& clip);

}  // namespace ditkit
