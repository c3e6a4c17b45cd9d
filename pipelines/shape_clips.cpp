#include "pipelines/shape_clips.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <set>
#include <sstream>
#include <stdexcept>
#include <utility>

namespace ditkit {
namespace {

constexpr double kPi = 3.14159265358979323846;

// Object extent (bounding box side) as a fraction of the frame's shorter side.
constexpr double kMinExtent = 0.17, kMaxExtent = 0.27;
// Distance travelled over the clip as a fraction of the frame along the motion.
constexpr double kSlowTravel = 0.25, kFastTravel = 0.55;
// Objects keep this fraction of the shorter side away from the frame's edges.
constexpr double kMargin = 0.02;
// Texture amplitude in 8-bit levels: visible, yet far from any other palette colour.
constexpr double kTextureLevels = 14;

struct NamedColour {
  const char* name;
  std::array<uint8_t, 3> rgb;
};
// Pairwise at least ~180 apart in RGB, so a checker can tell them apart even when a model renders
// them somewhat off. Blue and white serve as object and background colours alike.
const NamedColour kColours[] = {
    {"red", {230, 40, 40}},   {"green", {40, 190, 60}},    {"blue", {40, 80, 230}},  {"yellow", {240, 220, 40}},
    {"white", {245, 245, 245}}, {"magenta", {220, 50, 220}}, {"black", {15, 15, 15}}, {"gray", {120, 120, 120}},
};

const std::pair<const char*, Shape> kHeldOutColourShape[] = {
    {"red", Shape::kTriangle}, {"green", Shape::kSquare}, {"yellow", Shape::kCircle}};
const std::pair<Shape, Direction> kHeldOutShapeDirection[] = {
    {Shape::kCircle, Direction::kUp}, {Shape::kSquare, Direction::kLeft}, {Shape::kTriangle, Direction::kRight}};

const Shape kShapes[] = {Shape::kCircle, Shape::kSquare, Shape::kTriangle};
const Direction kDirections[] = {Direction::kLeft, Direction::kRight, Direction::kUp, Direction::kDown};
const Speed kSpeeds[] = {Speed::kSlow, Speed::kFast};

// splitmix64: tiny, fast, and the same on every platform (std:: distributions are not).
class Rng {
 public:
  explicit Rng(uint64_t seed) : state_(seed) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  uint64_t below(uint64_t n) { return next() % n; }  // bias below 2^-50 for the small n used here
  double uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
  double uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

 private:
  uint64_t state_;
};

bool contains(const std::vector<std::string>& list, const std::string& word) {
  return std::find(list.begin(), list.end(), word) != list.end();
}

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const std::string& w : words) out += (out.empty() ? "" : ", ") + w;
  return out;
}

bool horizontal(Direction d) { return d == Direction::kLeft || d == Direction::kRight; }

// ---- parsing ----------------------------------------------------------------------------------

class CaptionReader {
 public:
  explicit CaptionReader(const std::string& text) : text_(text) {
    std::string lower;
    for (char c : text) lower += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    while (!lower.empty() && (std::isspace(static_cast<unsigned char>(lower.back())) || lower.back() == '.'))
      lower.pop_back();
    std::istringstream in(lower);
    for (std::string w; in >> w;) words_.push_back(w);
  }

  bool done() const { return pos_ == words_.size(); }
  const std::string& peek() const { return words_[pos_]; }

  // The next word, which must be one of `allowed`; `what` names the kind of word expected.
  std::string take(const std::vector<std::string>& allowed, const std::string& what) {
    if (done()) {
      throw std::invalid_argument("parse_caption: \"" + text_ + "\" ends " +
                                  (pos_ ? "after \"" + words_[pos_ - 1] + "\"" : std::string("before it starts")) +
                                  ": expected " + what + " (" + joined(allowed) + ")");
    }
    if (!contains(allowed, words_[pos_])) fail("expected " + what + " (" + joined(allowed) + ")");
    return words_[pos_++];
  }

  [[noreturn]] void fail(const std::string& why) const {
    throw std::invalid_argument("parse_caption: cannot place \"" + words_[pos_] + "\" (word " +
                                std::to_string(pos_ + 1) + " of \"" + text_ + "\"): " + why);
  }

 private:
  std::string text_;
  std::vector<std::string> words_;
  size_t pos_ = 0;
};

template <typename E, size_t N>
E from_word(const std::string& word, const E (&values)[N], std::string (*name)(E), const char* what) {
  for (E v : values)
    if (name(v) == word) return v;
  throw std::invalid_argument(std::string("unknown ") + what + " \"" + word + "\"");
}

template <typename E, size_t N>
std::vector<std::string> words_of(const E (&values)[N], std::string (*name)(E)) {
  std::vector<std::string> out;
  for (E v : values) out.push_back(name(v));
  return out;
}

// ---- rendering --------------------------------------------------------------------------------

struct Placement {
  double x0, y0, vx, vy, half;  // centre at frame 0 (pixels), velocity (pixels a frame), half extent
};

bool apart_throughout(const Placement& a, const Placement& b, int64_t frames) {
  const double gap = a.half + b.half + 2;
  for (int64_t t = 0; t < frames; ++t) {
    const double dx = (a.x0 + a.vx * t) - (b.x0 + b.vx * t), dy = (a.y0 + a.vy * t) - (b.y0 + b.vy * t);
    if (std::abs(dx) < gap && std::abs(dy) < gap) return false;
  }
  return true;
}

// Sizes once, then start positions until no two objects' boxes meet in any frame (a few tries are
// nearly always enough; after 100 the last layout stands).
std::vector<Placement> place_objects(const ClipFacts& facts, ClipSize size, Rng& rng) {
  const double height = static_cast<double>(size.height), width = static_cast<double>(size.width);
  const double shorter = std::min(height, width), margin = kMargin * shorter;
  std::vector<Placement> out(facts.objects.size());
  for (Placement& p : out) p.half = 0.5 * shorter * rng.uniform(kMinExtent, kMaxExtent);

  // A start coordinate in [lo, hi] for a centre that moves by `travel`; the middle if none fits.
  auto start = [&](double extent, double half, double travel) {
    const double lo = half + margin + std::max(0.0, -travel), hi = extent - half - margin - std::max(0.0, travel);
    return lo <= hi ? rng.uniform(lo, hi) : 0.5 * (extent - travel);
  };
  for (int attempt = 0; attempt < 100; ++attempt) {
    for (size_t i = 0; i < out.size(); ++i) {
      const ObjectFacts& o = facts.objects[i];
      const bool across_x = horizontal(o.direction);
      const double sign = (o.direction == Direction::kLeft || o.direction == Direction::kUp) ? -1 : 1;
      const double travel = sign * (o.speed == Speed::kFast ? kFastTravel : kSlowTravel) * (across_x ? width : height);
      const double velocity = travel / static_cast<double>(std::max<int64_t>(1, size.frames - 1));
      Placement& p = out[i];
      p.x0 = start(width, p.half, across_x ? travel : 0);
      p.y0 = start(height, p.half, across_x ? 0 : travel);
      p.vx = across_x ? velocity : 0;
      p.vy = across_x ? 0 : velocity;
    }
    bool apart = true;
    for (size_t i = 0; i < out.size(); ++i)
      for (size_t j = i + 1; j < out.size(); ++j) apart = apart && apart_throughout(out[i], out[j], size.frames);
    if (apart) break;
  }
  return out;
}

// Texture pattern in [-1, 1], float [H, W] on the CPU; scales are fractions of the frame so that
// smaller clips look alike. Static over time, so it never reads as motion.
at::Tensor texture_pattern(const std::string& texture, ClipSize size, Rng& rng) {
  const auto opts = at::TensorOptions().dtype(at::kFloat);
  const int64_t shorter = std::min(size.height, size.width);
  at::Tensor y = at::arange(size.height, opts).add_(0.5).view({-1, 1});
  at::Tensor x = at::arange(size.width, opts).add_(0.5).view({1, -1});
  if (texture == "striped") {  // diagonal stripes, a period of an eighth of the frame
    const double period = shorter / 8.0, phase = rng.uniform(0, 2 * kPi);
    return (3 * at::sin((x + y) * (2 * kPi / (std::sqrt(2.0) * period)) + phase)).clamp_(-1, 1);
  }
  if (texture == "checkered") {  // soft-edged checks of an eighth of the frame
    const double cell = shorter / 8.0, px = rng.uniform(0, 2 * kPi), py = rng.uniform(0, 2 * kPi);
    return (4 * at::sin(x * (kPi / cell) + px) * at::sin(y * (kPi / cell) + py)).clamp_(-1, 1);
  }
  // noisy: independent values on cells of 1/32 of the frame (4 px, one latent cell, at 128)
  const int64_t cell = std::max<int64_t>(1, shorter / 32);
  const int64_t rows = (size.height + cell - 1) / cell, cols = (size.width + cell - 1) / cell;
  at::Tensor cells = at::empty({rows, cols}, opts);
  float* v = cells.data_ptr<float>();
  for (int64_t i = 0; i < rows * cols; ++i) v[i] = static_cast<float>(rng.uniform(-1, 1));
  return cells.repeat_interleave(cell, 0).repeat_interleave(cell, 1).narrow(0, 0, size.height).narrow(1, 0, size.width);
}

float to_unit(uint8_t level) { return static_cast<float>(level / 127.5 - 1.0); }

}  // namespace

std::string shape_word(Shape shape) {
  switch (shape) {
    case Shape::kCircle: return "circle";
    case Shape::kSquare: return "square";
    case Shape::kTriangle: return "triangle";
  }
  throw std::invalid_argument("shape_word: not a Shape");
}

std::string direction_word(Direction direction) {
  switch (direction) {
    case Direction::kLeft: return "left";
    case Direction::kRight: return "right";
    case Direction::kUp: return "up";
    case Direction::kDown: return "down";
  }
  throw std::invalid_argument("direction_word: not a Direction");
}

std::string speed_word(Speed speed) {
  switch (speed) {
    case Speed::kSlow: return "slowly";
    case Speed::kFast: return "quickly";
  }
  throw std::invalid_argument("speed_word: not a Speed");
}

const std::vector<std::string>& object_colours() {
  static const std::vector<std::string> names{"red", "green", "blue", "yellow", "white", "magenta"};
  return names;
}

const std::vector<std::string>& background_colours() {
  static const std::vector<std::string> names{"black", "gray", "blue", "white"};
  return names;
}

const std::vector<std::string>& textures() {
  static const std::vector<std::string> names{"striped", "checkered", "noisy"};
  return names;
}

std::array<uint8_t, 3> colour_rgb(const std::string& name) {
  for (const NamedColour& c : kColours)
    if (name == c.name) return c.rgb;
  throw std::invalid_argument("colour_rgb: unknown colour \"" + name + "\"");
}

void validate(const ClipFacts& facts) {
  if (facts.objects.empty()) throw std::invalid_argument("clip facts: no object");
  for (size_t i = 0; i < facts.objects.size(); ++i) {
    const std::string& c = facts.objects[i].colour;
    if (!contains(object_colours(), c))
      throw std::invalid_argument("clip facts: \"" + c + "\" is not an object colour (" + joined(object_colours()) + ")");
    for (size_t j = 0; j < i; ++j)
      if (facts.objects[j].colour == c) throw std::invalid_argument("clip facts: two objects are \"" + c + "\"");
    if (c == facts.background)
      throw std::invalid_argument("clip facts: the background \"" + c + "\" has an object's colour");
  }
  if (!contains(background_colours(), facts.background))
    throw std::invalid_argument("clip facts: \"" + facts.background + "\" is not a background colour (" +
                                joined(background_colours()) + ")");
  if (!facts.texture.empty() && !contains(textures(), facts.texture))
    throw std::invalid_argument("clip facts: \"" + facts.texture + "\" is not a texture (" + joined(textures()) + ")");
}

std::string caption(const ClipFacts& facts) { return caption_dropping_facts(facts, 0, 0); }

ClipFacts with_contrasting_shapes(const ClipFacts& facts) {
  ClipFacts contrast = facts;
  for (ObjectFacts& o : contrast.objects) o.shape = o.shape == Shape::kCircle ? Shape::kSquare : Shape::kCircle;
  return contrast;
}

std::string caption_dropping_facts(const ClipFacts& facts, double p, uint64_t seed) {
  if (!(p >= 0 && p <= 1))
    throw std::invalid_argument("caption_dropping_facts: the share of fact words to drop must be in [0, 1], got " +
                                std::to_string(p));
  validate(facts);
  Rng rng(seed);
  auto fact = [&](const std::string& word) { return rng.uniform() < p ? std::string() : " " + word; };
  std::string out;
  for (const ObjectFacts& o : facts.objects) {
    out += out.empty() ? "a" : " and a";
    out += fact(o.colour);
    out += fact(shape_word(o.shape)) + " moves";
    out += fact(speed_word(o.speed));
    out += fact(direction_word(o.direction));
  }
  out += " on a";
  if (!facts.texture.empty()) out += fact(facts.texture);
  return out + fact(facts.background) + " background";
}

ClipFacts parse_caption(const std::string& text) {
  static const std::vector<std::string> kShapeWords = words_of(kShapes, shape_word);
  static const std::vector<std::string> kDirectionWords = words_of(kDirections, direction_word);
  static const std::vector<std::string> kSpeedWords = words_of(kSpeeds, speed_word);
  CaptionReader r(text);
  ClipFacts facts;
  for (;;) {
    r.take({"a"}, "the article");
    ObjectFacts o;
    o.colour = r.take(object_colours(), "an object colour");
    o.shape = from_word(r.take(kShapeWords, "a shape"), kShapes, shape_word, "shape");
    r.take({"moves"}, "the verb");
    o.speed = from_word(r.take(kSpeedWords, "a speed"), kSpeeds, speed_word, "speed");
    o.direction = from_word(r.take(kDirectionWords, "a direction"), kDirections, direction_word, "direction");
    for (const ObjectFacts& earlier : facts.objects)
      if (earlier.colour == o.colour) throw std::invalid_argument("parse_caption: two objects are \"" + o.colour + "\"");
    facts.objects.push_back(o);
    if (r.take({"and", "on"}, "\"and\" or \"on\"") == "on") break;
  }
  r.take({"a"}, "the article");
  if (!r.done() && contains(textures(), r.peek())) facts.texture = r.take(textures(), "a texture");
  std::vector<std::string> after_texture = background_colours();
  if (facts.texture.empty()) after_texture.insert(after_texture.end(), textures().begin(), textures().end());
  facts.background = r.take(after_texture, facts.texture.empty() ? "a texture or a background colour"
                                                                   : "a background colour");
  for (const ObjectFacts& o : facts.objects)
    if (o.colour == facts.background)
      throw std::invalid_argument("parse_caption: the background \"" + o.colour + "\" has an object's colour");
  r.take({"background"}, "the word");
  if (!r.done()) r.fail("the caption should end after \"background\"");
  return facts;
}

bool in_held_out_pair(const ObjectFacts& o) {
  for (const auto& [colour, shape] : kHeldOutColourShape)
    if (o.colour == colour && o.shape == shape) return true;
  for (const auto& [shape, direction] : kHeldOutShapeDirection)
    if (o.shape == shape && o.direction == direction) return true;
  return false;
}

bool is_held_out(const ClipFacts& facts) {
  return std::any_of(facts.objects.begin(), facts.objects.end(), in_held_out_pair);
}

ClipFacts sample_facts(uint64_t seed, Split split) {
  Rng rng(seed);
  // Rejection: about 40% (one object) to 60% (two) of draws are held out, so few loops are needed.
  for (;;) {
    ClipFacts f;
    std::vector<std::string> colours = object_colours();
    const size_t count = 1 + rng.below(2);
    for (size_t i = 0; i < count; ++i) {
      ObjectFacts o;
      const size_t pick = rng.below(colours.size());
      o.colour = colours[pick];
      colours.erase(colours.begin() + static_cast<std::ptrdiff_t>(pick));
      o.shape = kShapes[rng.below(3)];
      o.direction = kDirections[rng.below(4)];
      o.speed = kSpeeds[rng.below(2)];
      f.objects.push_back(o);
    }
    std::vector<std::string> backgrounds;
    for (const std::string& b : background_colours())
      if (std::none_of(f.objects.begin(), f.objects.end(), [&](const ObjectFacts& o) { return o.colour == b; }))
        backgrounds.push_back(b);
    f.background = backgrounds[rng.below(backgrounds.size())];
    if (rng.below(2)) f.texture = textures()[rng.below(textures().size())];
    if (is_held_out(f) == (split == Split::kHeldOut)) return f;
  }
}

std::vector<std::string> caption_vocabulary() {
  std::set<std::string> words{"a", "and", "moves", "on", "background"};
  for (const auto* list : {&object_colours(), &background_colours(), &textures()}) words.insert(list->begin(), list->end());
  for (Shape s : kShapes) words.insert(shape_word(s));
  for (Direction d : kDirections) words.insert(direction_word(d));
  for (Speed s : kSpeeds) words.insert(speed_word(s));
  return {words.begin(), words.end()};
}

at::Tensor render_clips(const std::vector<ClipFacts>& facts, const std::vector<uint64_t>& seeds, ClipSize size,
                        at::Device device, at::Tensor* coverage) {
  if (facts.empty() || facts.size() != seeds.size())
    throw std::invalid_argument("render_clips: needs one seed per clip and at least one clip (got " +
                                std::to_string(facts.size()) + " facts, " + std::to_string(seeds.size()) + " seeds)");
  if (size.frames < 1 || size.height < 16 || size.width < 16)
    throw std::invalid_argument("render_clips: clips need at least 1 frame of 16 x 16 pixels");
  const int64_t batch = static_cast<int64_t>(facts.size()), frames = size.frames, height = size.height,
                width = size.width;
  size_t slots = 0;
  for (const ClipFacts& f : facts) {
    validate(f);
    slots = std::max(slots, f.objects.size());
  }

  // Host side: per clip the background and, per object slot, [x0, y0, vx, vy, half, shape, present, r, g, b].
  constexpr int64_t kParams = 10;
  const int64_t num_slots = static_cast<int64_t>(slots);
  at::Tensor params = at::zeros({num_slots, batch, kParams}, at::kFloat);
  at::Tensor background = at::empty({batch, 3, height, width}, at::kFloat);
  auto p = params.accessor<float, 3>();
  for (int64_t b = 0; b < batch; ++b) {
    const ClipFacts& f = facts[static_cast<size_t>(b)];
    Rng rng(seeds[static_cast<size_t>(b)] ^ 0x5AD0C11B5EEDull);  // a stream apart from sample_facts(seed)
    const std::vector<Placement> placed = place_objects(f, size, rng);
    for (size_t k = 0; k < placed.size(); ++k) {
      const std::array<uint8_t, 3> rgb = colour_rgb(f.objects[k].colour);
      const float row[kParams] = {static_cast<float>(placed[k].x0), static_cast<float>(placed[k].y0),
                                  static_cast<float>(placed[k].vx), static_cast<float>(placed[k].vy),
                                  static_cast<float>(placed[k].half), static_cast<float>(f.objects[k].shape),
                                  1.0f, to_unit(rgb[0]), to_unit(rgb[1]), to_unit(rgb[2])};
      std::copy(row, row + kParams, &p[static_cast<int64_t>(k)][b][0]);
    }
    const std::array<uint8_t, 3> rgb = colour_rgb(f.background);
    at::Tensor base = at::tensor({to_unit(rgb[0]), to_unit(rgb[1]), to_unit(rgb[2])}).view({3, 1, 1});
    at::Tensor bg = f.texture.empty()
                        ? base.expand({3, height, width})
                        : base + static_cast<float>(kTextureLevels / 127.5) * texture_pattern(f.texture, size, rng);
    background[b].copy_(bg.clamp(-1, 1));
  }

  const auto opts = at::TensorOptions().dtype(at::kFloat).device(device);
  params = params.to(device);
  at::Tensor xs = at::arange(width, opts).add_(0.5).view({1, 1, 1, width});
  at::Tensor ys = at::arange(height, opts).add_(0.5).view({1, 1, height, 1});
  at::Tensor ts = at::arange(frames, opts).view({1, frames, 1, 1});
  at::Tensor video = background.to(device).unsqueeze(2).expand({batch, 3, frames, height, width}).contiguous();
  at::Tensor covered = coverage ? at::zeros({batch, 1, frames, height, width}, opts) : at::Tensor();
  for (int64_t k = 0; k < num_slots; ++k) {
    auto column = [&](int64_t i) { return params[k].select(1, i).view({batch, 1, 1, 1}); };
    at::Tensor half = column(4), shape = column(5);
    at::Tensor dx = (xs - (column(0) + column(2) * ts)).abs_();  // [B, T, 1, W]
    at::Tensor dy = ys - (column(1) + column(3) * ts);           // [B, T, H, 1]
    // Signed distances (negative inside), computed only for the shapes this slot holds.
    std::vector<std::pair<Shape, at::Tensor>> sdfs;
    std::set<int> kinds;
    for (const ClipFacts& f : facts)
      if (static_cast<size_t>(k) < f.objects.size()) kinds.insert(static_cast<int>(f.objects[k].shape));
    for (int kind : kinds) {
      const Shape s = static_cast<Shape>(kind);
      if (s == Shape::kCircle) sdfs.emplace_back(s, (dx.square() + dy.square()).sqrt_().sub_(half));
      if (s == Shape::kSquare) sdfs.emplace_back(s, at::maximum(dx, dy.abs()).sub_(half));
      // Apex (0, -half), base corners (+-half, half): the bottom edge and the two slanted sides.
      if (s == Shape::kTriangle)
        sdfs.emplace_back(s, at::maximum(dy - half, (2 * dx - dy - half).mul_(1 / std::sqrt(5.0))));
    }
    at::Tensor sdf = sdfs.back().second;
    for (size_t i = sdfs.size() - 1; i-- > 0;)
      sdf = at::where(shape == static_cast<float>(sdfs[i].first), sdfs[i].second, sdf);
    // Coverage of a pixel by a one-pixel-wide edge ramp; zero where the slot is empty.
    at::Tensor alpha = (0.5 - sdf).clamp_(0, 1).mul_(column(6)).unsqueeze(1);  // [B, 1, T, H, W]
    at::Tensor colour = params[k].narrow(1, 7, 3).reshape({batch, 3, 1, 1, 1});
    video.lerp_(colour.expand_as(video), alpha);
    if (coverage) covered = at::maximum(covered, alpha);
  }
  if (coverage) *coverage = covered;
  return video;
}

at::Tensor clip_to_frames(const at::Tensor& clip) {
  at::Tensor c = clip.dim() == 5 && clip.size(0) == 1 ? clip[0] : clip;
  if (c.dim() != 4 || c.size(0) != 3) {
    std::ostringstream msg;
    msg << "clip_to_frames: expected a clip [3, T, H, W] or [1, 3, T, H, W], got " << clip.sizes();
    throw std::invalid_argument(msg.str());
  }
  return c.detach().to(at::kCPU, at::kFloat).add(1).mul_(127.5).round_().clamp_(0, 255).to(at::kByte)
      .permute({1, 2, 3, 0}).contiguous();
}

}  // namespace ditkit
