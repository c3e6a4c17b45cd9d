#include <gtest/gtest.h>
#include <unistd.h>

#include <climits>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>

#include "dit/atomic_file.h"
#include "sparse/recipe.h"

namespace fs = std::filesystem;

namespace ditkit {
namespace {

using Type = ParamSpec::Type;

// A schema shaped like the real methods', so that every kind of parameter is exercised.
const std::vector<MethodSpec>& methods() {
  static const std::vector<MethodSpec> specs = {
      {"dense", {}, "full attention"},
      {"svg",
       {{"density", Type::kFloat, 0, 1, {}, false, "0.1", "fraction of key blocks kept"},
        {"warmup", Type::kInt, 0, 1000, {}, false, "0", "dense steps first"}},
       "sparse video gen"},
      {"topk",
       {{"k", Type::kInt, 1, 1024, {}, true, "", "key blocks per query block"},
        {"diag", Type::kInt, 0, 1, {}, false, "0", "always keep the diagonal"}},
       ""},
      {"window3d",
       {{"t", Type::kInt, 0, 64, {}, false, "1", ""},
        {"h", Type::kInt, 0, 64, {}, false, "1", ""},
        {"w", Type::kInt, 0, 64, {}, false, "1", ""},
        {"order", Type::kString, 0, 0, {"fhw", "hwf"}, false, "fhw", ""},
        {"tag", Type::kString, 0, 0, {}, false, "", "optional, no default"}},
       ""},
  };
  return specs;
}

Recipe parse(const std::string& text) { return parse_recipe(text, methods()); }
Recipe parse_json(const std::string& text) { return parse_recipe_json(text, methods()); }

RecipeError recipe_error(const std::function<void()>& f) {
  try {
    f();
  } catch (const RecipeError& e) {
    return e;
  }
  ADD_FAILURE() << "no RecipeError";
  return RecipeError("");
}

std::vector<std::string> lines(const std::string& s) {
  std::vector<std::string> out;
  std::istringstream in(s);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// Parsing `text` fails at 1-based `column` with a message holding `words`, and the caret sits
// under that column.
void expect_string_error(const std::string& text, size_t column, const std::vector<std::string>& words) {
  SCOPED_TRACE("recipe \"" + text + "\"");
  const RecipeError e = recipe_error([&] { parse(text); });
  EXPECT_EQ(e.column(), column) << e.what();
  EXPECT_EQ(e.json_path(), "");
  const std::vector<std::string> l = lines(e.what());
  ASSERT_EQ(l.size(), 3u) << e.what();
  EXPECT_EQ(l[0].rfind("recipe error at column " + std::to_string(column) + ": ", 0), 0u) << l[0];
  EXPECT_EQ(l[1], "  " + text);
  EXPECT_EQ(l[2], "  " + std::string(column - 1, ' ') + "^");
  for (const std::string& w : words) EXPECT_NE(l[0].find(w), std::string::npos) << "'" << w << "' not in: " << l[0];
}

void expect_json_error(const std::string& text, const std::string& path, const std::vector<std::string>& words) {
  SCOPED_TRACE(text);
  const RecipeError e = recipe_error([&] { parse_json(text); });
  EXPECT_EQ(e.json_path(), path) << e.what();
  EXPECT_EQ(e.column(), 0u);
  const std::string msg = e.what();
  if (!path.empty()) {
    EXPECT_NE(msg.find(" at " + path + ": "), std::string::npos) << msg;
  }
  for (const std::string& w : words) EXPECT_NE(msg.find(w), std::string::npos) << "'" << w << "' not in: " << msg;
}

void expect_check_error(const Recipe& r, int layers, int steps, size_t column, const std::vector<std::string>& words) {
  SCOPED_TRACE(r.source);
  const RecipeError e = recipe_error([&] { check_recipe(r, layers, steps); });
  EXPECT_EQ(e.column(), column) << e.what();
  if (column) {
    EXPECT_EQ(lines(e.what()).at(2), "  " + std::string(column - 1, ' ') + "^");
  }
  for (const std::string& w : words) EXPECT_NE(std::string(e.what()).find(w), std::string::npos) << e.what();
}

TEST(Recipe, DenseEverywhere) {
  const Recipe r = parse("dense");
  ASSERT_EQ(r.rules.size(), 1u);
  EXPECT_EQ(r.rules[0].method, "dense");
  EXPECT_TRUE(r.rules[0].is_default());
  EXPECT_TRUE(r.rules[0].params.empty());
  EXPECT_EQ(r.source, "dense");
  check_recipe(r, 30, 50);
  EXPECT_EQ(r.rule_for(29, 49, 50).method, "dense");
}

TEST(Recipe, DenseFirstStepsThenSvg) {
  const Recipe r = parse("dense@steps<10,svg:density=0.15");
  ASSERT_EQ(r.rules.size(), 2u);
  EXPECT_EQ(r.rules[0].method, "dense");
  EXPECT_FALSE(r.rules[0].layers.constrained());
  EXPECT_FALSE(r.rules[0].steps.begin.has_value());
  ASSERT_TRUE(r.rules[0].steps.end.has_value());
  EXPECT_EQ(r.rules[0].steps.end->value, 10);
  EXPECT_FALSE(r.rules[0].steps.end->percent);
  EXPECT_EQ(r.rules[0].position, 0u);
  EXPECT_EQ(r.rules[1].method, "svg");
  EXPECT_TRUE(r.rules[1].is_default());
  EXPECT_EQ(r.rules[1].position, 15u);
  EXPECT_EQ(r.rules[1].params, (std::map<std::string, std::string>{{"density", "0.15"}, {"warmup", "0"}}));
  check_recipe(r, 30, 50);
  EXPECT_EQ(r.rule_for(0, 9, 50).method, "dense");
  EXPECT_EQ(r.rule_for(29, 10, 50).method, "svg");
  EXPECT_DOUBLE_EQ(r.rule_for(29, 10, 50).float_param("density"), 0.15);
}

TEST(Recipe, PercentAndLayerRulesThatAgreeMayOverlap) {
  const Recipe r = parse("dense@steps<20%,dense@layers=0,topk:k=8:diag=1");
  ASSERT_EQ(r.rules.size(), 3u);
  ASSERT_TRUE(r.rules[0].steps.end.has_value());
  EXPECT_EQ(r.rules[0].steps.end->value, 20);
  EXPECT_TRUE(r.rules[0].steps.end->percent);
  EXPECT_EQ(r.rules[1].layers.resolve(50), std::make_pair(0, 1));
  EXPECT_EQ(r.rules[2].int_param("k"), 8);
  EXPECT_EQ(r.rules[2].int_param("diag"), 1);
  check_recipe(r, 30, 50);
  // 20% of 50 steps is steps 0..9.
  EXPECT_EQ(r.rule_for(5, 9, 50).method, "dense");
  EXPECT_EQ(r.rule_for(5, 10, 50).method, "topk");
  EXPECT_EQ(r.rule_for(0, 49, 50).method, "dense");
  EXPECT_EQ(&r.rule_for(0, 0, 50), &r.rules[0]);  // where rules agree, the first written
  // 20% of 12 steps is 2.4, rounded down: steps 0 and 1.
  EXPECT_EQ(r.rule_for(5, 1, 12).method, "dense");
  EXPECT_EQ(r.rule_for(5, 2, 12).method, "topk");
}

TEST(Recipe, CombinedRanges) {
  const Recipe r = parse("window3d:t=1:h=2:w=2@layers=1..29@steps>=5");
  ASSERT_EQ(r.rules.size(), 1u);
  const RecipeRule& rule = r.rules[0];
  EXPECT_EQ(rule.layers.resolve(50), std::make_pair(1, 29));
  EXPECT_EQ(rule.steps.resolve(50), std::make_pair(5, INT_MAX));
  EXPECT_EQ(rule.layers.position, 21u);
  EXPECT_EQ(rule.steps.position, 34u);
  EXPECT_EQ(rule.params, (std::map<std::string, std::string>{{"t", "1"}, {"h", "2"}, {"w", "2"}, {"order", "fhw"}}));
  EXPECT_EQ(r.rule_for(1, 5, 50).method, "window3d");
  EXPECT_EQ(r.rule_for(28, 49, 50).method, "window3d");
  // Layer 0, layer 29 and steps 0..4 are nobody's, and there is no default.
  expect_check_error(r, 30, 50, 0, {"no rule covers layer 0, step 0", "no default"});
  EXPECT_THROW(r.rule_for(29, 10, 50), RecipeError);
  EXPECT_THROW(r.rule_for(5, 4, 50), RecipeError);
}

TEST(Recipe, EveryOperator) {
  struct Case {
    const char* cond;
    int begin, end;         // resolved against 50 steps
    const char* canonical;  // as to_string() writes it back: indices need no <= nor >
  };
  for (const Case& c : {Case{"steps<10", 0, 10, "steps<10"}, Case{"steps<=10", 0, 11, "steps<11"},
                        Case{"steps>10", 11, INT_MAX, "steps>=11"}, Case{"steps>=10", 10, INT_MAX, "steps>=10"},
                        Case{"steps=10", 10, 11, "steps=10"}, Case{"steps=10..20", 10, 20, "steps=10..20"},
                        Case{"steps<20%", 0, 10, "steps<20%"}, Case{"steps<=20%", 0, 11, "steps<=20%"},
                        Case{"steps>20%", 11, INT_MAX, "steps>20%"}, Case{"steps>=20%", 10, INT_MAX, "steps>=20%"},
                        Case{"steps=50%", 25, 26, "steps=50%"}, Case{"steps=10%..30%", 5, 15, "steps=10%..30%"},
                        Case{"steps=5..30%", 5, 15, "steps=5..30%"}, Case{"steps<=100%", 0, 51, "steps<=100%"}}) {
    const Recipe r = parse(std::string("dense@") + c.cond + ",svg");
    EXPECT_EQ(r.rules[0].steps.resolve(50), std::make_pair(c.begin, c.end)) << c.cond;
    EXPECT_EQ(to_string(r.rules[0]), std::string("dense@") + c.canonical);
  }
}

TEST(Recipe, PercentagesSplitCleanlyForAnyStepCount) {
  const Recipe r = parse("dense@steps<37%,svg@steps>=37%");
  // Below 3 steps, 37% rounds down to step 0 and leaves the first rule nothing.
  expect_check_error(r, 4, 2, 7, {"empty range: steps<37% selects no step of 2 (it resolves to [0, 0))"});
  for (int n = 3; n <= 200; ++n) {
    check_recipe(r, 4, n);
    int dense = 0;
    for (int s = 0; s < n; ++s) dense += r.rule_for(0, s, n).method == "dense";
    EXPECT_EQ(dense, 37 * n / 100) << n;
  }
}

TEST(Recipe, WhitespaceAroundTokens) {
  const Recipe spaced = parse("  dense @ steps < 10 ,\tsvg : density = 0.15 @ steps >= 10 , topk:k=4 ");
  EXPECT_EQ(to_string(spaced), "dense@steps<10,svg:density=0.15:warmup=0@steps>=10,topk:diag=0:k=4");
  EXPECT_EQ(spaced.rules[1].position, 23u);
}

TEST(Recipe, DefaultsAndTypedAccessors) {
  const Recipe r = parse("svg@layers<2,window3d:order=hwf@layers=2..4,topk:k=16");
  const RecipeRule& svg = r.rules[0];
  EXPECT_DOUBLE_EQ(svg.float_param("density"), 0.1);
  EXPECT_EQ(svg.int_param("warmup"), 0);
  EXPECT_DOUBLE_EQ(svg.float_param("warmup"), 0.0);  // an int reads as a float too
  EXPECT_THROW(svg.int_param("density"), std::invalid_argument);
  EXPECT_THROW(svg.float_param("nope"), std::invalid_argument);
  const RecipeRule& window = r.rules[1];
  EXPECT_EQ(window.string_param("order"), "hwf");
  EXPECT_EQ(window.int_param("t"), 1);
  EXPECT_FALSE(window.has_param("tag"));  // optional without default
  EXPECT_THROW(window.string_param("tag"), std::invalid_argument);
  EXPECT_THROW(window.int_param("order"), std::invalid_argument);
  EXPECT_EQ(r.rules[2].int_param("diag"), 0);
  EXPECT_EQ(r.rules[2].int_param("k"), 16);
  EXPECT_EQ(parse("window3d:tag=abc").rules[0].string_param("tag"), "abc");
}

TEST(RecipeErrors, UnknownMethod) {
  expect_string_error("dense@steps<10,svgg", 16, {"unknown method 'svgg'", "known: dense, svg, topk, window3d"});
  expect_string_error("Dense", 1, {"unknown method 'Dense'"});
}

TEST(RecipeErrors, UnknownParameter) {
  expect_string_error("dense@steps<10,svg:densty=0.15", 20,
                      {"unknown parameter 'densty' for method 'svg' (known: density, warmup)"});
  expect_string_error("dense:k=1", 7, {"unknown parameter 'k' for method 'dense' (known: none)"});
}

TEST(RecipeErrors, MissingRequiredParameter) {
  expect_string_error("dense@steps<3,topk:diag=1", 15, {"missing required parameter 'k' for method 'topk'"});
}

TEST(RecipeErrors, BadValue) {
  expect_string_error("svg:density=abc", 13, {"parameter 'density' of method 'svg'", "'abc' is not a number"});
  expect_string_error("svg:density=1.5", 13, {"1.5 is out of range: it must be in [0, 1]"});
  expect_string_error("svg:density=nan", 13, {"not a number"});
  expect_string_error("topk:k=8.5", 8, {"'8.5' is not an integer"});
  expect_string_error("topk:k=0", 8, {"out of range"});
  expect_string_error("window3d:order=xyz", 16, {"'xyz' is not one of fhw, hwf"});
  expect_string_error("svg:density=", 13, {"expected a value for 'density', found the end"});
  expect_string_error("svg:density 0.1", 13, {"expected '=' after 'density'"});
  expect_string_error("svg:=0.1", 5, {"expected a parameter name"});
  expect_string_error("svg:density=0.1:density=0.2", 17, {"parameter 'density' given twice"});
}

TEST(RecipeErrors, BadCondition) {
  expect_string_error("dense@steps!10", 12, {"expected <, <=, >, >= or = after 'steps', found '!'"});
  expect_string_error("dense@stepz<10", 7, {"expected 'steps' or 'layers' after '@', found 'stepz'"});
  expect_string_error("dense@<10", 7, {"expected 'steps' or 'layers'"});
  expect_string_error("dense@steps<", 13, {"expected a whole number, found the end"});
  expect_string_error("dense@steps<x", 13, {"expected a whole number, found 'x'"});
  expect_string_error("dense@steps<2.5", 13, {"no fractions"});
  expect_string_error("dense@layers<10%", 16, {"percentages apply only to steps"});
  expect_string_error("dense@steps<120%", 13, {"percentage above 100%"});
  expect_string_error("dense@steps<99999999999", 13, {"number too large"});
  expect_string_error("dense@layers=1..", 17, {"expected a whole number"});
  expect_string_error("dense@steps<10@steps>2", 16, {"a second 'steps' condition", "steps=A..B"});
}

TEST(RecipeErrors, EmptyRange) {
  expect_string_error("dense@steps<0,svg", 7, {"empty range: steps<0 selects nothing"});
  expect_string_error("svg,dense@layers=3..3", 11, {"empty range: layers=3..3"});
  expect_string_error("dense@layers=5..2,svg", 7, {"empty range"});
  expect_string_error("dense@steps<0%,svg", 7, {"empty range"});
  expect_string_error("dense@steps=50%..20%,svg", 7, {"empty range"});
  // Known only once num_steps is: at 10 steps, 91% and 99% are both step 9.
  const Recipe r = parse("svg,dense@steps=91%..99%");
  check_recipe(r, 30, 100);
  expect_check_error(r, 30, 10, 11, {"empty range: steps=91%..99% selects no step of 10", "[9, 9)"});
  // Beyond the model's layers.
  expect_check_error(parse("svg,dense@layers>=40"), 30, 10, 11, {"selects no layer of 30"});
  expect_check_error(parse("svg,dense@steps>=60"), 30, 50, 11, {"selects no step of 50"});
}

TEST(RecipeErrors, OverlappingRules) {
  expect_string_error("dense@steps<10,svg@steps<20", 16,
                      {"rule 'svg@steps<20' at column 16 overlaps rule 'dense@steps<10' at column 1",
                       "both cover layer 0, step 0"});
  expect_string_error("svg@layers=2..8@steps>=5,topk:k=1@layers>=6@steps=0..7", 26,
                      {"'topk@layers>=6@steps=0..7'", "'svg@layers=2..8@steps>=5'", "layer 6, step 5"});
  // Same method, different parameters: ambiguous, so still an error.
  expect_string_error("svg:density=0.2@steps<10,svg@steps<5", 26, {"overlaps"});
  EXPECT_NO_THROW(parse("svg@layers<2@steps<10,dense@layers>=2,dense@steps>=10"));
  // Percentages overlap only for some step counts: found by check_recipe.
  const Recipe r = parse("dense@steps<50%,svg@steps>=10");
  check_recipe(r, 30, 20);
  expect_check_error(r, 30, 50, 17, {"overlaps", "layer 0, step 10 of 50"});
}

TEST(RecipeErrors, TwoDefaults) {
  expect_string_error("dense,dense@steps<2,svg", 21,
                      {"two default rules", "rule 'svg' at column 21", "rule 'dense' at column 1"});
}

TEST(RecipeErrors, TrailingGarbage) {
  expect_string_error("dense@steps<10 svg", 16, {"unexpected 's' after rule 'dense@steps<10'"});
  expect_string_error("dense;", 6, {"unexpected ';'"});
  expect_string_error("svg:density=0.1)", 16, {"unexpected ')'"});
  expect_string_error("dense,", 7, {"expected a method name, found the end"});
  expect_string_error("dense,,svg", 7, {"expected a method name, found ','"});
}

TEST(RecipeErrors, EmptyRecipe) {
  expect_string_error("", 1, {"empty recipe"});
  expect_string_error("   ", 1, {"empty recipe"});
}

TEST(RecipeErrors, TabsKeepTheCaretInLine) {
  const RecipeError e = recipe_error([] { parse("dense,\tsvgg"); });
  EXPECT_EQ(e.column(), 8u);
  EXPECT_EQ(lines(e.what()).at(1), "  dense, svgg");
  EXPECT_EQ(lines(e.what()).at(2), "         ^");
}

TEST(RecipeErrors, UncoveredAtResolveTime) {
  const Recipe r = parse("dense@steps<10,svg@steps>=20");
  const RecipeError e = recipe_error([&] { check_recipe(r, 30, 50); });
  EXPECT_EQ(e.column(), 0u);
  EXPECT_NE(std::string(e.what()).find("no rule covers layer 0, step 10 of 50"), std::string::npos) << e.what();
  EXPECT_EQ(lines(e.what()).at(1), "  dense@steps<10,svg@steps>=20");
  check_recipe(parse("dense@steps<10,svg@steps>=10"), 30, 50);
  EXPECT_THROW(check_recipe(r, 0, 50), std::invalid_argument);
}

TEST(RecipeJson, ParsesLikeTheString) {
  const std::string text = R"({"rules": [
      {"method": "dense", "steps": "<20%"},
      {"method": "dense", "layers": [0, 1]},
      {"method": "svg", "params": {"density": 0.15, "warmup": 2}, "layers": "=1..28", "steps": ["20%", null]},
      {"method": "topk", "params": {"k": 8, "diag": 1}}]})";
  const Recipe j = parse_json(text);
  const Recipe s = parse("dense@steps<20%,dense@layers=0,svg:density=0.15:warmup=2@layers=1..28@steps>=20%,topk:k=8:diag=1");
  EXPECT_TRUE(j.from_json);
  EXPECT_EQ(j.source, text);
  EXPECT_EQ(to_string(j), to_string(s));
  for (int steps : {5, 7, 12, 50}) {
    check_recipe(j, 30, steps);
    check_recipe(s, 30, steps);
    for (int layer = 0; layer < 30; ++layer)
      for (int step = 0; step < steps; ++step) {
        const RecipeRule& a = j.rule_for(layer, step, steps);
        const RecipeRule& b = s.rule_for(layer, step, steps);
        ASSERT_EQ(a.method, b.method) << layer << " " << step << " " << steps;
        ASSERT_EQ(a.params, b.params);
      }
  }
}

TEST(RecipeJson, CanonicalStringRoundTrips) {
  for (const char* text : {"dense", "dense@steps<10,svg:density=0.15", "dense@steps<20%,dense@layers=0,topk:k=8:diag=1",
                           "window3d:t=1:h=2:w=2@layers=1..29@steps>=5", "svg@steps<=20%,dense@steps>20%"}) {
    const std::string canonical = to_string(parse(text));
    EXPECT_EQ(to_string(parse(canonical)), canonical);
  }
}

TEST(RecipeJsonErrors, PathsAndProblems) {
  expect_json_error(R"({"rules": [{"method": "dense"}, {"method": "svgg"}]})", "rules[1].method",
                    {"unknown method 'svgg' (known: dense, svg, topk, window3d)"});
  expect_json_error(R"({"rules": [{"method": "dense", "steps": "<10"}, {"method": "svg", "params": {"densty": 0.15}}]})",
                    "rules[1].params.densty", {"unknown parameter 'densty' for method 'svg' (known: density, warmup)"});
  expect_json_error(R"({"rules": [{"method": "topk"}]})", "rules[0].params", {"missing required parameter 'k'"});
  expect_json_error(R"({"rules": [{"method": "svg", "params": {"density": 1.5}}]})", "rules[0].params.density",
                    {"out of range"});
  expect_json_error(R"({"rules": [{"method": "svg", "params": {"density": "abc"}}]})", "rules[0].params.density",
                    {"'abc' is not a number"});
  expect_json_error(R"({"rules": [{"method": "svg", "params": {"density": true}}]})", "rules[0].params.density",
                    {"expected a number or a string"});
  expect_json_error(R"({"rules": [{"method": "topk", "params": {"k": 8.0}}]})", "rules[0].params.k",
                    {"not an integer"});
  expect_json_error(R"({"rules": [{"method": "window3d", "params": {"order": "x y"}}]})", "rules[0].params.order",
                    {"not a VALUE"});
  expect_json_error(R"({"rules": [{"method": "window3d", "params": {"order": "xyz"}}]})", "rules[0].params.order",
                    {"not one of fhw, hwf"});
  expect_json_error(R"({"rules": [{"method": "dense", "steps": "<1x"}, {"method": "svg"}]})", "rules[0].steps",
                    {"bad condition \"<1x\" at character 3: unexpected 'x'"});
  expect_json_error(R"({"rules": [{"method": "dense", "steps": "steps<10"}, {"method": "svg"}]})", "rules[0].steps",
                    {"expected <, <=, >, >= or ="});
  expect_json_error(R"({"rules": [{"method": "dense", "layers": ["20%", 3]}, {"method": "svg"}]})",
                    "rules[0].layers[0]", {"expected a whole number or null"});
  expect_json_error(R"({"rules": [{"method": "dense", "steps": [0, -1]}, {"method": "svg"}]})", "rules[0].steps[1]",
                    {"index -1 is out of range"});
  expect_json_error(R"({"rules": [{"method": "dense", "steps": [1, 2, 3]}]})", "rules[0].steps",
                    {"expected a condition"});
  expect_json_error(R"({"rules": [{"method": "dense", "steps": [5, 5]}, {"method": "svg"}]})", "rules[0].steps",
                    {"empty range: steps=5..5"});
  expect_json_error(R"({"rules": [{"method": "dense", "steps": "<10"}, {"method": "svg", "steps": [5, null]}]})",
                    "rules[1]", {"rules[1] ('svg@steps>=5') overlaps rules[0] ('dense@steps<10')"});
  expect_json_error(R"({"rules": [{"method": "dense"}, {"method": "svg"}]})", "rules[1]", {"two default rules"});
  expect_json_error(R"({"rules": [{"method": "dense", "stepz": "<3"}]})", "rules[0].stepz",
                    {"unknown key 'stepz' (known: method, params, layers, steps)"});
  expect_json_error(R"({"rules": [{"params": {}}]})", "rules[0].method", {"missing"});
  expect_json_error(R"({"rules": []})", "rules", {"empty recipe"});
  expect_json_error(R"({"ruels": []})", "ruels", {"unknown key 'ruels'"});
  expect_json_error(R"([{"method": "dense"}])", "", {"expected an object {\"rules\": [...]}"});
  expect_json_error(R"({"rules": [{"method": "dense"},]})", "", {"invalid JSON"});
}

TEST(RecipeJsonErrors, ResolveTime) {
  const Recipe r = parse_recipe_json(R"({"rules": [{"method": "dense", "steps": "<10"}, {"method": "svg", "steps": ">=91%"}]})",
                                     methods(), "r.json");
  const RecipeError uncovered = recipe_error([&] { check_recipe(r, 30, 50); });
  EXPECT_EQ(uncovered.json_path(), "");
  EXPECT_NE(std::string(uncovered.what()).find("recipe error in r.json: no rule covers layer 0, step 10"),
            std::string::npos)
      << uncovered.what();
  const Recipe e = parse_json(R"({"rules": [{"method": "svg"}, {"method": "dense", "steps": [5, "20%"]}]})");
  const RecipeError empty = recipe_error([&] { check_recipe(e, 30, 20); });
  EXPECT_EQ(empty.json_path(), "rules[1].steps") << empty.what();
  check_recipe(e, 30, 50);
}

TEST(RecipeLoad, FileOrString) {
  const fs::path dir = fs::temp_directory_path() / ("ditkit-recipe-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  const fs::path json_file = dir / "fast.json";
  std::ofstream(json_file) << R"({"rules": [{"method": "dense", "steps": "<10"}, {"method": "svg"}]})";
  const Recipe from_file = load_recipe(json_file.string(), methods());
  EXPECT_TRUE(from_file.from_json);
  EXPECT_EQ(from_file.file_name, json_file.string());
  EXPECT_EQ(to_string(from_file), to_string(load_recipe("dense@steps<10,svg", methods())));
  // An existing file is read as JSON whatever its name.
  const fs::path plain = dir / "recipe";
  std::ofstream(plain) << R"({"rules": [{"method": "dense"}]})";
  EXPECT_TRUE(load_recipe(plain.string(), methods()).from_json);
  const RecipeError missing = recipe_error([&] { load_recipe((dir / "missing.json").string(), methods()); });
  EXPECT_NE(std::string(missing.what()).find("cannot read recipe file"), std::string::npos);
  std::ofstream(json_file) << R"({"rules": [{"method": "svgg"}]})";
  const RecipeError bad = recipe_error([&] { load_recipe(json_file.string(), methods()); });
  EXPECT_NE(std::string(bad.what()).find("in " + json_file.string() + " at rules[0].method"), std::string::npos)
      << bad.what();
  remove_tree(dir.string());
}

TEST(Recipe, DescribeMethods) {
  const std::string help = describe_methods(methods());
  EXPECT_NE(help.find("svg  sparse video gen\n"), std::string::npos) << help;
  EXPECT_NE(help.find("  :density=<float in [0, 1]>  default 0.1  fraction of key blocks kept\n"), std::string::npos)
      << help;
  EXPECT_NE(help.find("  :k=<int in [1, 1024]>  required"), std::string::npos) << help;
  EXPECT_NE(help.find("  :order=<fhw|hwf>  default fhw"), std::string::npos) << help;
}

// The table above plus a method wrapping another, as `reuse` does: a kRule parameter.
const std::vector<MethodSpec>& wrapping_methods() {
  static const std::vector<MethodSpec> specs = [] {
    std::vector<MethodSpec> s = methods();
    s.push_back({"reuse",
                 {{"inner", Type::kRule, 0, 0, {}, true, "", "the wrapped method"},
                  {"every", Type::kInt, 1, 100, {}, false, "5", "re-plan period"}},
                 "keeps plans"});
    return s;
  }();
  return specs;
}

TEST(RecipeRules, RuleParameterParsesNestsAndRoundTrips) {
  const Recipe r = parse_recipe("dense@steps<2, reuse : inner = ( topk:k=8 ) :every=3@steps>=2", wrapping_methods());
  const RecipeRule& reuse = r.rules.at(1);
  EXPECT_EQ(reuse.string_param("inner"), "(topk:diag=0:k=8)");  // canonical, defaults filled in
  EXPECT_EQ(reuse.int_param("every"), 3);
  const RecipeRule inner = reuse.rule_param("inner", wrapping_methods());
  EXPECT_EQ(inner.method, "topk");
  EXPECT_EQ(inner.int_param("k"), 8);
  EXPECT_THROW(reuse.rule_param("every", wrapping_methods()), std::invalid_argument);
  EXPECT_EQ(to_string(r), "dense@steps<2,reuse:every=3:inner=(topk:diag=0:k=8)@steps>=2");
  EXPECT_EQ(to_string(parse_recipe(to_string(r), wrapping_methods())), to_string(r));
  // Nesting, and the JSON form giving the same rule.
  const std::string nested = "reuse:inner=(reuse:inner=(svg:density=0.2))";
  EXPECT_EQ(parse_recipe(nested, wrapping_methods()).rules[0].rule_param("inner", wrapping_methods()).string_param("inner"),
            "(svg:density=0.2:warmup=0)");
  const Recipe j = parse_recipe_json(
      R"({"rules": [{"method": "reuse", "params": {"every": 3, "inner": {"method": "topk", "params": {"k": 8}}}}]})",
      wrapping_methods());
  EXPECT_EQ(to_string(j), "reuse:every=3:inner=(topk:diag=0:k=8)");
  // Rules that differ only inside the parentheses disagree.
  EXPECT_THROW(parse_recipe("reuse:inner=(topk:k=8)@steps<5,reuse:inner=(topk:k=9)@steps<9,dense", wrapping_methods()),
               RecipeError);
  EXPECT_NE(describe_methods(wrapping_methods()).find("  :inner=<(rule)>  required  the wrapped method"),
            std::string::npos);
}

TEST(RecipeRules, ErrorsInsideTheParenthesesPointThere) {
  auto expect_error = [](const std::string& text, size_t column, const std::string& words) {
    SCOPED_TRACE(text);
    const RecipeError e = recipe_error([&] { parse_recipe(text, wrapping_methods()); });
    EXPECT_EQ(e.column(), column) << e.what();
    EXPECT_NE(std::string(e.what()).find(words), std::string::npos) << e.what();
  };
  expect_error("reuse:inner=(topk:k=0)", 21, "parameter 'k' of method 'topk': 0 is out of range");
  expect_error("reuse:inner=(topk:kk=1)", 19, "unknown parameter 'kk' for method 'topk'");
  expect_error("reuse:inner=(topx)", 14, "unknown method 'topx'");
  expect_error("reuse:inner=(topk)", 14, "missing required parameter 'k' for method 'topk'");
  expect_error("reuse:inner=topk", 13, "parameter 'inner' of method 'reuse' takes a rule in parentheses");
  expect_error("reuse:inner=(topk:k=2@steps<3)", 22, "a rule in parentheses takes no conditions");
  expect_error("reuse:inner=(topk:k=2", 22, "expected ')' to close 'inner=('");
  expect_error("reuse:every=3", 1, "missing required parameter 'inner' for method 'reuse'");
  expect_error("reuse:every=0:inner=(dense)", 13, "parameter 'every' of method 'reuse'");
}

TEST(RecipeRules, JsonRuleParameterErrorsNameTheirPath) {
  auto expect_path = [](const std::string& text, const std::string& path) {
    SCOPED_TRACE(text);
    const RecipeError e = recipe_error([&] { parse_recipe_json(text, wrapping_methods()); });
    EXPECT_EQ(e.json_path(), path) << e.what();
  };
  expect_path(R"({"rules": [{"method": "reuse", "params": {"inner": {"method": "topk", "params": {"k": "x"}}}}]})",
              "rules[0].params.inner.params.k");
  expect_path(R"({"rules": [{"method": "reuse", "params": {"inner": {"method": "dense", "steps": "<3"}}}]})",
              "rules[0].params.inner.steps");
  expect_path(R"({"rules": [{"method": "reuse", "params": {"inner": "topk"}}]})", "rules[0].params.inner");
}


}  // namespace
}  // namespace ditkit
