#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <iterator>
#include <map>
#include <set>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "pipelines/shape_clips.h"

namespace ditkit {
namespace {

bool same(const ClipFacts& a, const ClipFacts& b) {
  if (a.background != b.background || a.texture != b.texture || a.objects.size() != b.objects.size()) return false;
  for (size_t i = 0; i < a.objects.size(); ++i) {
    const ObjectFacts &x = a.objects[i], &y = b.objects[i];
    if (x.colour != y.colour || x.shape != y.shape || x.direction != y.direction || x.speed != y.speed) return false;
  }
  return true;
}

std::string parse_error(const std::string& text) {
  try {
    parse_caption(text);
  } catch (const std::invalid_argument& e) {
    return e.what();
  }
  return "(no error)";
}

// Pixels of frame `t` within a small distance of `colour`'s RGB, as a float mask [H, W].
at::Tensor colour_mask(const at::Tensor& frames, int64_t t, const std::string& colour) {
  const std::array<uint8_t, 3> rgb = colour_rgb(colour);
  at::Tensor target = at::tensor({float(rgb[0]), float(rgb[1]), float(rgb[2])});
  return ((frames[t].to(at::kFloat) - target).abs().amax(-1) < 8).to(at::kFloat);
}

// Centroid (x, y) of a mask [H, W].
std::pair<double, double> centroid(const at::Tensor& mask) {
  const double total = mask.sum().item<double>();
  at::Tensor x = at::arange(mask.size(1), at::kFloat), y = at::arange(mask.size(0), at::kFloat);
  return {(mask.sum(0) * x).sum().item<double>() / total, (mask.sum(1) * y).sum().item<double>() / total};
}

TEST(ShapeClips, CaptionReadsAsTheFactsSay) {
  ClipFacts one{{{"red", Shape::kCircle, Direction::kLeft, Speed::kSlow}}, "blue", ""};
  EXPECT_EQ(caption(one), "a red circle moves slowly left on a blue background");
  ClipFacts two{{{"red", Shape::kCircle, Direction::kLeft, Speed::kFast},
                 {"green", Shape::kSquare, Direction::kUp, Speed::kSlow}},
                "gray", "striped"};
  EXPECT_EQ(caption(two),
            "a red circle moves quickly left and a green square moves slowly up on a striped gray background");
  EXPECT_TRUE(same(parse_caption("  A Red circle moves QUICKLY left and a green square moves slowly up "
                                 "on a striped gray background. "),
                   two));
}

TEST(ShapeClips, ContrastingShapesChangeOnlyTheShapes) {
  ClipFacts three{{{"red", Shape::kCircle, Direction::kLeft, Speed::kFast},
                   {"green", Shape::kSquare, Direction::kUp, Speed::kSlow},
                   {"blue", Shape::kTriangle, Direction::kDown, Speed::kSlow}},
                  "gray", "striped"};
  EXPECT_EQ(caption(with_contrasting_shapes(three)),
            "a red square moves quickly left and a green circle moves slowly up and a blue circle moves slowly down "
            "on a striped gray background");
}

TEST(ShapeClips, CaptionParseRoundTripOverManySeeds) {
  std::set<std::string> vocabulary;
  for (const std::string& w : caption_vocabulary()) vocabulary.insert(w);
  std::set<std::string> seen_words;
  for (uint64_t seed = 0; seed < 2000; ++seed) {
    for (Split split : {Split::kTrain, Split::kHeldOut}) {
      const ClipFacts f = sample_facts(seed, split);
      const std::string text = caption(f);
      ASSERT_TRUE(same(parse_caption(text), f)) << text;
      std::istringstream in(text);
      for (std::string w; in >> w;) {
        EXPECT_TRUE(vocabulary.count(w)) << "\"" << w << "\" missing from caption_vocabulary()";
        seen_words.insert(w);
      }
    }
  }
  EXPECT_EQ(seen_words, vocabulary) << "every vocabulary word appears in some caption";
}

TEST(ShapeClips, CaptionDroppingFactsLeavesOutOnlyFactWords) {
  ClipFacts two{{{"red", Shape::kCircle, Direction::kLeft, Speed::kFast},
                 {"green", Shape::kSquare, Direction::kUp, Speed::kSlow}},
                "gray", "striped"};
  EXPECT_EQ(caption_dropping_facts(two, 0, 7), caption(two));
  EXPECT_EQ(caption_dropping_facts(two, 1, 7), "a moves and a moves on a background");
  EXPECT_EQ(caption_dropping_facts(two, 0.5, 7), caption_dropping_facts(two, 0.5, 7)) << "deterministic";

  // At p = 0.3 about 30% of the fact words go, each apart: the words left are the caption's words
  // in order, every structure word among them, and each fact word is sometimes kept, sometimes not.
  const std::set<std::string> structure{"a", "and", "moves", "on", "background"};
  std::istringstream full_in(caption(two));
  const std::vector<std::string> full{std::istream_iterator<std::string>(full_in), {}};
  std::map<size_t, int> dropped_at;
  size_t facts = 0, dropped = 0;
  std::set<std::string> variants;
  for (uint64_t seed = 0; seed < 1000; ++seed) {
    const std::string text = caption_dropping_facts(two, 0.3, seed);
    variants.insert(text);
    std::istringstream in(text);
    size_t at = 0;
    for (std::string w; in >> w; ++at) {
      while (at < full.size() && full[at] != w) {
        ASSERT_FALSE(structure.count(full[at])) << "\"" << full[at] << "\" dropped from: " << text;
        ++dropped_at[at];
        ++dropped;
        ++at;
      }
      ASSERT_LT(at, full.size()) << "not a subsequence of the caption: " << text;
    }
    ASSERT_EQ(at, full.size()) << text;
    facts += size_t(std::count_if(full.begin(), full.end(), [&](const std::string& w) { return !structure.count(w); }));
  }
  EXPECT_NEAR(double(dropped) / double(facts), 0.3, 0.03);
  EXPECT_EQ(dropped_at.size(), 10u) << "each of the ten fact words is dropped in some captions";
  EXPECT_GT(variants.size(), 100u);
  EXPECT_THROW(caption_dropping_facts(two, 1.5, 0), std::invalid_argument);
}

TEST(ShapeClips, ParseErrorsNameTheWord) {
  EXPECT_NE(parse_error("a purple circle moves slowly left on a blue background").find("\"purple\""),
            std::string::npos);
  EXPECT_NE(parse_error("a red hexagon moves slowly left on a blue background").find("\"hexagon\""),
            std::string::npos);
  EXPECT_NE(parse_error("a red circle moves slowly sideways on a blue background").find("\"sideways\""),
            std::string::npos);
  EXPECT_NE(parse_error("a red circle moves left on a blue background").find("\"left\""), std::string::npos);
  EXPECT_NE(parse_error("a red circle moves slowly left on a wavy blue background").find("\"wavy\""),
            std::string::npos);
  EXPECT_NE(parse_error("a red circle moves slowly left").find("\"left\""), std::string::npos);
  EXPECT_NE(parse_error("a red circle moves slowly left on a blue background today").find("\"today\""),
            std::string::npos);
  EXPECT_NE(parse_error("a red circle moves slowly left on a red background").find("\"red\""), std::string::npos);
  EXPECT_NE(parse_error("a red circle moves slowly left and a red square moves slowly up on a blue background")
                .find("\"red\""),
            std::string::npos);
  EXPECT_NE(parse_error("").find("expected"), std::string::npos);
}

TEST(ShapeClips, SplitsKeepHeldOutCombinationsApart) {
  std::map<std::string, int> train_pairs, held_pairs;
  int two_objects = 0, textured = 0;
  for (uint64_t seed = 0; seed < 3000; ++seed) {
    const ClipFacts train = sample_facts(seed, Split::kTrain), held = sample_facts(seed, Split::kHeldOut);
    ASSERT_FALSE(is_held_out(train)) << caption(train);
    ASSERT_TRUE(is_held_out(held)) << caption(held);
    EXPECT_NO_THROW(validate(train));
    EXPECT_TRUE(same(train, sample_facts(seed, Split::kTrain))) << "deterministic";
    two_objects += train.objects.size() == 2;
    textured += !train.texture.empty();
    EXPECT_TRUE(std::any_of(held.objects.begin(), held.objects.end(), in_held_out_pair)) << caption(held);
    for (const ObjectFacts& o : train.objects) {
      EXPECT_FALSE(in_held_out_pair(o)) << caption(train);
      ++train_pairs[o.colour + " " + shape_word(o.shape)];
      ++train_pairs[shape_word(o.shape) + " " + direction_word(o.direction)];
    }
  }
  // 6 colours x 3 shapes less 3 held out, 3 shapes x 4 directions less 3 held out.
  EXPECT_EQ(train_pairs.size(), 15u + 9u);
  for (const char* held : {"red triangle", "green square", "yellow circle", "circle up", "square left",
                           "triangle right"})
    EXPECT_EQ(train_pairs.count(held), 0u) << held;
  EXPECT_TRUE(in_held_out_pair({"green", Shape::kSquare, Direction::kDown, Speed::kSlow}));   // colour, shape
  EXPECT_TRUE(in_held_out_pair({"blue", Shape::kSquare, Direction::kLeft, Speed::kSlow}));    // shape, direction
  EXPECT_FALSE(in_held_out_pair({"blue", Shape::kSquare, Direction::kUp, Speed::kSlow}));
  EXPECT_GT(two_objects, 1000);
  EXPECT_GT(textured, 1200);
}

TEST(ShapeClips, RenderIsDeterministicAndInRange) {
  std::vector<ClipFacts> facts;
  std::vector<uint64_t> seeds;
  for (uint64_t s = 0; s < 4; ++s) {
    facts.push_back(sample_facts(s, s % 2 ? Split::kHeldOut : Split::kTrain));
    seeds.push_back(100 + s);
  }
  const ClipSize size{8, 64, 48};
  at::Tensor a = render_clips(facts, seeds, size, at::kCPU), b = render_clips(facts, seeds, size, at::kCPU);
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{4, 3, 8, 64, 48}));
  EXPECT_EQ(a.scalar_type(), at::kFloat);
  EXPECT_TRUE(at::equal(a, b));
  EXPECT_GE(a.min().item<float>(), -1.0f);
  EXPECT_LE(a.max().item<float>(), 1.0f);
  seeds[0] += 1;
  EXPECT_FALSE(at::equal(render_clips(facts, seeds, size, at::kCPU)[0], a[0])) << "the seed places the objects";
  EXPECT_TRUE(at::equal(render_clips(facts, seeds, size, at::kCPU)[1], a[1])) << "clips are independent";

  at::Tensor frames = clip_to_frames(a[2]);
  EXPECT_EQ(frames.sizes(), (std::vector<int64_t>{8, 64, 48, 3}));
  EXPECT_EQ(frames.scalar_type(), at::kByte);
  EXPECT_TRUE(at::equal(frames, clip_to_frames(a.narrow(0, 2, 1))));
  EXPECT_THROW(clip_to_frames(a), std::invalid_argument);
  EXPECT_THROW(render_clips(facts, {1, 2}, size, at::kCPU), std::invalid_argument);
}

TEST(ShapeClips, ObjectsShowTheirColourShapeAndMotion) {
  const ClipSize size;
  std::vector<ClipFacts> facts;
  for (Direction d : {Direction::kLeft, Direction::kRight, Direction::kUp, Direction::kDown})
    for (Shape s : {Shape::kCircle, Shape::kSquare, Shape::kTriangle})
      facts.push_back({{{"yellow", s, d, Speed::kFast}}, "blue", ""});
  const at::Tensor clips = render_clips(facts, std::vector<uint64_t>(facts.size(), 7), size, at::kCPU);
  for (size_t i = 0; i < facts.size(); ++i) {
    const Shape s = facts[i].objects[0].shape;
    const Direction d = facts[i].objects[0].direction;
    at::Tensor frames = clip_to_frames(clips[static_cast<int64_t>(i)]);
    // Plain background: away from the object, the background colour exactly.
    const std::array<uint8_t, 3> bg = colour_rgb("blue");
    EXPECT_EQ(frames[0][0][0][0].item<int>(), bg[0]);
    at::Tensor first = colour_mask(frames, 0, "yellow"), last = colour_mask(frames, size.frames - 1, "yellow");
    // Area against the bounding box: pi/4 for a circle, 1 for a square, 1/2 for a triangle.
    at::Tensor rows = first.amax(1).nonzero(), cols = first.amax(0).nonzero();
    const double box = double(rows.max().item<int64_t>() - rows.min().item<int64_t>() + 1) *
                       double(cols.max().item<int64_t>() - cols.min().item<int64_t>() + 1);
    const double fill = first.sum().item<double>() / box;
    const double expected = s == Shape::kCircle ? 0.785 : s == Shape::kSquare ? 1.0 : 0.5;
    EXPECT_NEAR(fill, expected, 0.06) << shape_word(s);
    EXPECT_NEAR(first.sum().item<double>(), last.sum().item<double>(), 0.08 * first.sum().item<double>())
        << "the object stays whole in frame";
    auto [x0, y0] = centroid(first);
    auto [x1, y1] = centroid(last);
    const double want = 0.55 * 128;  // quickly: 55% of the frame over the clip
    const double dx = x1 - x0, dy = y1 - y0;
    switch (d) {
      case Direction::kLeft: EXPECT_NEAR(dx, -want, 1.5); EXPECT_NEAR(dy, 0, 0.5); break;
      case Direction::kRight: EXPECT_NEAR(dx, want, 1.5); EXPECT_NEAR(dy, 0, 0.5); break;
      case Direction::kUp: EXPECT_NEAR(dy, -want, 1.5); EXPECT_NEAR(dx, 0, 0.5); break;
      case Direction::kDown: EXPECT_NEAR(dy, want, 1.5); EXPECT_NEAR(dx, 0, 0.5); break;
    }
  }
}

TEST(ShapeClips, CoverageMarksWhereTheObjectsAre) {
  const std::vector<ClipFacts> facts = {
      {{{"red", Shape::kTriangle, Direction::kLeft, Speed::kFast}, {"green", Shape::kSquare, Direction::kUp, Speed::kSlow}},
       "blue", ""},
      {{{"yellow", Shape::kCircle, Direction::kDown, Speed::kSlow}}, "black", ""}};
  const std::vector<uint64_t> seeds = {4, 9};
  const ClipSize size{6, 64, 48};
  at::Tensor coverage;
  const at::Tensor clips = render_clips(facts, seeds, size, at::kCPU, &coverage);
  EXPECT_TRUE(at::equal(clips, render_clips(facts, seeds, size, at::kCPU))) << "asking for it changes no pixel";
  ASSERT_EQ(coverage.sizes(), (std::vector<int64_t>{2, 1, 6, 64, 48}));
  EXPECT_GE(coverage.min().item<float>(), 0.0f);
  EXPECT_LE(coverage.max().item<float>(), 1.0f);
  for (int64_t b = 0; b < 2; ++b) {
    // On a plain background a pixel differs from the background colour exactly where an object covers it.
    const std::array<uint8_t, 3> rgb = colour_rgb(facts[size_t(b)].background);
    const at::Tensor bg = at::tensor({rgb[0] / 127.5 - 1, rgb[1] / 127.5 - 1, rgb[2] / 127.5 - 1}, at::kFloat);
    const at::Tensor differs = (clips[b] - bg.view({3, 1, 1, 1})).abs().amax(0) > 1e-6;
    EXPECT_TRUE(at::equal(differs, coverage[b][0] > 0)) << "clip " << b;
    EXPECT_GT((coverage[b] == 1).sum().item<int64_t>(), 6 * 20) << "inside the objects, full coverage";
  }
}

TEST(ShapeClips, TexturesAreLowContrast) {
  for (const std::string& texture : textures()) {
    ClipFacts f{{{"red", Shape::kSquare, Direction::kDown, Speed::kSlow}}, "gray", texture};
    at::Tensor frames = clip_to_frames(render_clips({f}, {3}, {4, 64, 64}, at::kCPU)[0]).to(at::kInt);
    // Gray pixels have R = G = B; the red object and its edge blends do not.
    at::Tensor r = frames.select(-1, 0), g = frames.select(-1, 1), b = frames.select(-1, 2);
    at::Tensor bg = g.masked_select((r == g).logical_and(g == b));
    EXPECT_GT(bg.numel(), frames.numel() / 3 * 8 / 10) << texture;
    EXPECT_LE(bg.max().item<int>(), 120 + 15) << texture;
    EXPECT_GE(bg.min().item<int>(), 120 - 15) << texture;
    EXPECT_GT(bg.max().item<int>() - bg.min().item<int>(), 15) << texture << " is visible";
  }
}

TEST(ShapeClips, CudaMatchesCpu) {
  if (!at::hasCUDA()) GTEST_SKIP() << "no GPU";
  std::vector<ClipFacts> facts;
  std::vector<uint64_t> seeds;
  for (uint64_t s = 0; s < 8; ++s) {
    facts.push_back(sample_facts(s, Split::kTrain));
    seeds.push_back(s);
  }
  at::Tensor cpu_coverage, gpu_coverage;
  at::Tensor cpu = render_clips(facts, seeds, {}, at::kCPU, &cpu_coverage);
  at::Tensor gpu = render_clips(facts, seeds, {}, at::Device(at::kCUDA), &gpu_coverage).cpu();
  EXPECT_LT((cpu - gpu).abs().max().item<float>(), 1e-4);
  EXPECT_LT((cpu_coverage - gpu_coverage.cpu()).abs().max().item<float>(), 1e-4);
}

}  // namespace
}  // namespace ditkit
