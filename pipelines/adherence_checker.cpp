#include "pipelines/adherence_checker.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include "pipelines/video_writer.h"

namespace ditkit {
namespace {

constexpr double kMaxColourDistance = 100;    // RGB units to the nearest palette colour
constexpr uint8_t kNoColour = 255;
constexpr double kMinArea = 0.003, kMaxArea = 0.20;  // of the frame
constexpr double kMinTravel = 0.10, kFastTravel = 0.37;  // of the frame over the clip
constexpr double kMinUnstatedFill = 0.3;      // thinner components (rings, streaks) are not objects

// One frame's view of one colour: the largest component in the size range.
struct Sighting {
  double x = 0, y = 0;  // centroid
  double fill = 0;      // area / bounding-box area
  double centre_y = 0;  // centroid's height in the box, 0 top .. 1 bottom
};

std::optional<Shape> shape_of(const Sighting& s) {
  if (s.centre_y > 0.58 && s.fill < 0.72) return Shape::kTriangle;
  if (s.centre_y > 0.58) return std::nullopt;
  if (s.fill >= 0.89) return Shape::kSquare;
  if (s.fill >= 0.64) return Shape::kCircle;
  return std::nullopt;
}

// The colours a pixel can take: the object colours (their indices in object_colours()), then the
// background colours that are not object colours.
const std::vector<std::string>& palette() {
  static const std::vector<std::string> names = [] {
    std::vector<std::string> out = object_colours();
    for (const std::string& b : background_colours())
      if (std::find(out.begin(), out.end(), b) == out.end()) out.push_back(b);
    return out;
  }();
  return names;
}

// Nearest palette index (or kNoColour) for every colour quantised to 6 bits a channel: a table of
// 2^18 entries turns classifying a clip into one lookup a pixel (~100x faster than distances per
// pixel); quantising moves a colour by at most 2 levels a channel.
const std::vector<uint8_t>& colour_table() {
  static const std::vector<uint8_t> table = [] {
    std::vector<std::array<uint8_t, 3>> rgb;
    for (const std::string& name : palette()) rgb.push_back(colour_rgb(name));
    std::vector<uint8_t> out(size_t{1} << 18);
    for (size_t i = 0; i < out.size(); ++i) {
      const double c[3] = {((i >> 12) & 63) * 4 + 1.5, ((i >> 6) & 63) * 4 + 1.5, (i & 63) * 4 + 1.5};
      double best = kMaxColourDistance * kMaxColourDistance;
      out[i] = kNoColour;
      for (size_t k = 0; k < rgb.size(); ++k) {
        double d = 0;
        for (int j = 0; j < 3; ++j) d += (c[j] - rgb[k][j]) * (c[j] - rgb[k][j]);
        if (d <= best) {
          best = d;
          out[i] = static_cast<uint8_t>(k);
        }
      }
    }
    return out;
  }();
  return table;
}

// Per pixel the palette index or kNoColour, uint8 [T, H, W], from contiguous uint8 [T, H, W, 3].
// Each frame is median-filtered first (3x3), so that pixel noise a sampler leaves does not break
// objects into specks; edges and corners barely move.
at::Tensor classify(const at::Tensor& frames) {
  const std::vector<uint8_t>& table = colour_table();
  const int rows = static_cast<int>(frames.size(1)), cols = static_cast<int>(frames.size(2));
  at::Tensor smooth = at::empty_like(frames);
  for (int64_t t = 0; t < frames.size(0); ++t) {
    cv::medianBlur(cv::Mat(rows, cols, CV_8UC3, frames[t].data_ptr<uint8_t>()),
                   cv::Mat(rows, cols, CV_8UC3, smooth[t].data_ptr<uint8_t>()), 3);
  }
  at::Tensor out = at::empty({frames.size(0), frames.size(1), frames.size(2)}, at::kByte);
  const uint8_t* rgb = smooth.data_ptr<uint8_t>();
  uint8_t* cls = out.data_ptr<uint8_t>();
  for (int64_t i = 0, n = out.numel(); i < n; ++i, rgb += 3)
    cls[i] = table[static_cast<size_t>(rgb[0] >> 2) << 12 | static_cast<size_t>(rgb[1] >> 2) << 6 | (rgb[2] >> 2)];
  return out;
}

std::optional<Sighting> find_in_frame(const cv::Mat& classes, uint8_t colour, const cv::Mat& kernel) {
  cv::Mat mask = classes == colour, labels, stats, centroids;
  cv::morphologyEx(mask, mask, cv::MORPH_OPEN, kernel);
  const int count = cv::connectedComponentsWithStats(mask, labels, stats, centroids, 8, CV_32S);
  const double frame = static_cast<double>(classes.rows) * classes.cols;
  int best = -1;
  for (int i = 1; i < count; ++i) {
    const int area = stats.at<int>(i, cv::CC_STAT_AREA);
    if (area < kMinArea * frame || area > kMaxArea * frame) continue;
    if (best < 0 || area > stats.at<int>(best, cv::CC_STAT_AREA)) best = i;
  }
  if (best < 0) return std::nullopt;
  const double top = stats.at<int>(best, cv::CC_STAT_TOP), height = stats.at<int>(best, cv::CC_STAT_HEIGHT);
  const double width = stats.at<int>(best, cv::CC_STAT_WIDTH), area = stats.at<int>(best, cv::CC_STAT_AREA);
  Sighting s;
  s.x = centroids.at<double>(best, 0);
  s.y = centroids.at<double>(best, 1);
  s.fill = area / (width * height);
  s.centre_y = (s.y + 0.5 - top) / height;  // centroids are of pixel indices, boxes of pixel edges
  return s;
}

// Least-squares slope of v against t.
double slope(const std::vector<double>& t, const std::vector<double>& v) {
  const double n = static_cast<double>(t.size());
  double st = 0, sv = 0, stt = 0, stv = 0;
  for (size_t i = 0; i < t.size(); ++i) {
    st += t[i];
    sv += v[i];
    stt += t[i] * t[i];
    stv += t[i] * v[i];
  }
  const double denominator = n * stt - st * st;
  return denominator > 0 ? (n * stv - st * sv) / denominator : 0;
}

// Per-frame sightings of one colour turned into one report. `present[t]` says whether frame t has
// enough pixels of the colour to hold an object at all (most colours are absent from most clips).
ObjectReport report_colour(const at::Tensor& classes, const std::vector<bool>& present, uint8_t index,
                           const std::string& name) {
  const int64_t frames = classes.size(0), height = classes.size(1), width = classes.size(2);
  const cv::Mat kernel = cv::getStructuringElement(cv::MORPH_RECT, {3, 3});
  std::vector<double> ts, xs, ys, fills;
  std::vector<int> votes(3, 0);
  for (int64_t t = 0; t < frames; ++t) {
    if (!present[static_cast<size_t>(t)]) continue;
    cv::Mat frame(static_cast<int>(height), static_cast<int>(width), CV_8U, classes[t].data_ptr<uint8_t>());
    const std::optional<Sighting> s = find_in_frame(frame, index, kernel);
    if (!s) continue;
    ts.push_back(static_cast<double>(t));
    xs.push_back(s->x);
    ys.push_back(s->y);
    fills.push_back(s->fill);
    if (const std::optional<Shape> shape = shape_of(*s)) ++votes[static_cast<size_t>(*shape)];
  }
  ObjectReport r;
  r.colour = name;
  r.frames_found = static_cast<int64_t>(ts.size());
  if (r.frames_found == 0) return r;
  std::nth_element(fills.begin(), fills.begin() + static_cast<std::ptrdiff_t>(fills.size() / 2), fills.end());
  r.fill = fills[fills.size() / 2];
  const auto top = std::max_element(votes.begin(), votes.end());
  if (2 * *top > r.frames_found) r.shape = static_cast<Shape>(top - votes.begin());
  if (frames < 2 || r.frames_found < 2) return r;
  const double span = static_cast<double>(frames - 1);
  r.travel_x = slope(ts, xs) * span / static_cast<double>(width);
  r.travel_y = slope(ts, ys) * span / static_cast<double>(height);
  const bool across_x = std::abs(r.travel_x) >= std::abs(r.travel_y);
  const double major = across_x ? r.travel_x : r.travel_y, minor = across_x ? r.travel_y : r.travel_x;
  if (std::abs(major) >= kMinTravel && std::abs(major) >= 2 * std::abs(minor)) {
    r.direction = across_x ? (major < 0 ? Direction::kLeft : Direction::kRight)
                           : (major < 0 ? Direction::kUp : Direction::kDown);
    r.speed = std::abs(major) >= kFastTravel ? Speed::kFast : Speed::kSlow;
  }
  return r;
}

}  // namespace

std::string seen_word(const std::optional<Shape>& s) { return s ? shape_word(*s) : "unclear"; }
std::string seen_word(const std::optional<Direction>& d) { return d ? direction_word(*d) : "none"; }
std::string seen_word(const std::optional<Speed>& s) { return s ? speed_word(*s) : "none"; }

ClipObservation observe_clip(const at::Tensor& frames) {
  const at::Tensor video = contiguous_rgb(frames, 4, "observe_clip");
  const at::Tensor classes = classify(video);
  const int64_t count = video.size(0), pixels = video.size(1) * video.size(2);
  const size_t colours = palette().size();

  // Pixels of each colour per frame, and over the clip.
  std::vector<int64_t> per_frame(static_cast<size_t>(count) * 256, 0), total(256, 0);
  const uint8_t* cls = classes.data_ptr<uint8_t>();
  for (int64_t t = 0; t < count; ++t)
    for (int64_t i = 0; i < pixels; ++i) ++per_frame[static_cast<size_t>(t) * 256 + cls[t * pixels + i]];
  for (size_t i = 0; i < per_frame.size(); ++i) total[i % 256] += per_frame[i];

  ClipObservation out;
  out.frames = count;
  out.background = palette()[static_cast<size_t>(
      std::max_element(total.begin(), total.begin() + static_cast<std::ptrdiff_t>(colours)) - total.begin())];
  const int64_t enough = std::max<int64_t>(1, (count + 1) / 2);
  for (size_t k = 0; k < object_colours().size(); ++k) {
    if (object_colours()[k] == out.background) continue;  // the background is one big "object" of its colour
    std::vector<bool> present(static_cast<size_t>(count));
    for (int64_t t = 0; t < count; ++t)
      present[static_cast<size_t>(t)] = per_frame[static_cast<size_t>(t) * 256 + k] >= kMinArea * pixels;
    if (std::count(present.begin(), present.end(), true) < enough) continue;
    ObjectReport r = report_colour(classes, present, static_cast<uint8_t>(k), object_colours()[k]);
    if (r.frames_found >= enough) out.objects.push_back(r);
  }
  return out;
}

namespace {

// One stated object's tally; `seen` is the object found in its colour, or null.
FactCounts object_fact_counts(const ObjectFacts& stated, const ObjectReport* seen) {
  FactCounts one;
  one.objects = 1;
  if (!seen) return one;
  one.found = 1;
  one.shapes_right = seen->shape == stated.shape;
  one.directions_right = one.speeds_judged = seen->direction == stated.direction;
  one.speeds_right = one.directions_right && seen->speed == stated.speed;
  return one;
}

}  // namespace

CheckReport judge(const ClipObservation& seen, const ClipFacts& stated) {
  validate(stated);
  CheckReport report;
  FactCounts& n = report.facts;
  report.background = seen.background;
  n.backgrounds = 1;
  n.backgrounds_right = seen.background == stated.background;
  if (seen.background != stated.background)
    report.wrong.push_back("the background is " + seen.background + ", not " + stated.background);
  // Stated objects in caption order, then the unstated ones.
  for (const ObjectFacts& o : stated.objects) {
    const auto r = std::find_if(seen.objects.begin(), seen.objects.end(),
                                [&](const ObjectReport& x) { return x.colour == o.colour; });
    const FactCounts one = object_fact_counts(o, r == seen.objects.end() ? nullptr : &*r);
    n += one;
    if (in_held_out_pair(o)) report.held_out_pair_facts += one;
    if (r == seen.objects.end()) {
      report.wrong.push_back("no " + o.colour + " object is seen" +
                             (o.colour == seen.background ? " apart from the background" : ""));
      continue;
    }
    const std::string what = "the " + o.colour + " object ";
    if (r->shape != o.shape) report.wrong.push_back(what + "is " + seen_word(r->shape) + ", not " + shape_word(o.shape));
    if (r->direction != o.direction)
      report.wrong.push_back(what + "moves " + seen_word(r->direction) + ", not " + direction_word(o.direction));
    else if (r->speed != o.speed)
      report.wrong.push_back(what + "moves " + seen_word(r->speed) + ", not " + speed_word(o.speed));
    report.seen.push_back(*r);
    report.seen.back().stated = true;
  }
  for (const ObjectReport& r : seen.objects) {
    const bool named = std::any_of(stated.objects.begin(), stated.objects.end(),
                                   [&](const ObjectFacts& o) { return o.colour == r.colour; });
    if (named || r.fill < kMinUnstatedFill) continue;
    report.wrong.push_back("an unstated " + r.colour + " object is seen");
    report.seen.push_back(r);
  }
  report.all_right = report.wrong.empty();
  return report;
}

CheckReport check_clip(const at::Tensor& frames, const ClipFacts& stated) {
  validate(stated);  // before the work of looking
  return judge(observe_clip(frames), stated);
}

}  // namespace ditkit
