// Prompt adherence by looking at the frames (built only with OpenCV): finds each object of the
// shape_clips palette in a clip and reports its colour, shape, direction and speed, and the
// background's colour, then compares them with the facts a caption states.
//
// How it sees:
//   - after a 3x3 median filter per frame (against pixel noise), every pixel takes the nearest
//     palette colour (object and background colours alike) when one lies within 100 RGB units,
//     and none otherwise (edge blends, off-palette colours);
//   - the background is the colour most pixels have;
//   - per object colour and frame, the largest connected component (after a 3x3 opening that
//     drops one-pixel edge rings) of 0.3% to 20% of the frame is the object in that frame; an
//     object is seen when it is found in at least half the frames;
//   - shape, per frame, from the component's area over its bounding box (triangle 1/2, circle
//     pi/4, square 1) and its centroid's height in the box (2/3 down for the upward triangle, 1/2
//     otherwise); the clip's shape is the one a majority of frames agree on;
//   - motion from the least-squares slope of the centroid track, as a fraction of the frame over
//     the clip: the larger axis sets the direction when it moved at least 10% and twice the other
//     axis; speed "quickly" from 37% on (shape_clips draws 25% and 55%).
// A stated fact is right only when seen as stated; an object not found, or an object (solid: fill
// at least 0.3) of a colour the caption does not name, makes the clip wrong. Textures are not checked.
// judge and check_clip throw std::invalid_argument for stated facts that break shape_clips' rules
// (validate).
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <string>
#include <vector>

#include "pipelines/shape_clips.h"

namespace ditkit {

struct ObjectReport {
  std::string colour;
  std::optional<Shape> shape;
  std::optional<Direction> direction;
  std::optional<Speed> speed;
  bool stated = false;         // the caption names this colour (set by judge)
  int64_t frames_found = 0;    // frames in which the object was found
  double fill = 0;             // median area / bounding-box area over those frames
  double travel_x = 0, travel_y = 0;  // least-squares motion over the clip, fractions of the frame (+ right, + down)
};

// Per fact, how many a caption states and how many of them are seen as stated: where a clip goes
// wrong, summed over many clips (AdherenceResult) it says which facts a model has not learnt.
// Direction, shape and speed count only objects that were found; speed only those whose
// direction is right (an object that moves the wrong way has no speed to compare).
struct FactCounts {
  int64_t backgrounds = 0, backgrounds_right = 0;
  int64_t objects = 0, found = 0;  // stated objects, and those found by their colour
  int64_t shapes_right = 0, directions_right = 0;
  int64_t speeds_judged = 0, speeds_right = 0;
  FactCounts& operator+=(const FactCounts& o) {  // inline: builds without OpenCV sum reports too
    backgrounds += o.backgrounds, backgrounds_right += o.backgrounds_right;
    objects += o.objects, found += o.found;
    shapes_right += o.shapes_right, directions_right += o.directions_right;
    speeds_judged += o.speeds_judged, speeds_right += o.speeds_right;
    return *this;
  }
};

struct CheckReport {
  bool all_right = false;
  FactCounts facts;
  // The same tally for the stated objects in a held-out pair (in_held_out_pair) only, which tells
  // a model that has not learnt a fact from one that cannot combine facts it never saw together.
  FactCounts held_out_pair_facts;
  std::vector<std::string> wrong;  // the facts it got wrong, human readable
  std::vector<ObjectReport> seen;  // stated objects that were found (caption order), then unstated ones
  std::string background;          // the colour most pixels have
};

// What a clip shows, before any caption is held against it: looking costs ~all the time, judging
// nothing, so one observation can be judged against many captions.
struct ClipObservation {
  int64_t frames = 0;
  std::string background;            // the colour most pixels have
  std::vector<ObjectReport> objects;  // every object colour found in at least half the frames
};

// An ObjectReport's fact as a caption word, or what the checker says when it could not tell:
// "unclear" for a shape, "none" for a direction or speed (the words of CheckReport::wrong).
std::string seen_word(const std::optional<Shape>& shape);
std::string seen_word(const std::optional<Direction>& direction);
std::string seen_word(const std::optional<Speed>& speed);

// frames: uint8 [T, H, W, 3] RGB, on any device (what the pipeline's decoder returns, or
// clip_to_frames of a rendered clip).
ClipObservation observe_clip(const at::Tensor& frames);
CheckReport judge(const ClipObservation& seen, const ClipFacts& stated);
// judge(observe_clip(frames), stated)
CheckReport check_clip(const at::Tensor& frames, const ClipFacts& stated);

}  // namespace ditkit
