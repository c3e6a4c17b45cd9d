// Recipes: which attention method, with which parameters, runs at each layer and sampling step of a
// diffusion transformer. `dit-gen`, `dit-ab` and the library all take recipes through load_recipe(),
// so a recipe means the same thing everywhere. Torch-free (std + nlohmann/json).
//
// String grammar (whitespace is allowed around every token):
//
//   recipe := rule { ',' rule }
//   rule   := METHOD { ':' NAME '=' value | '@' cond }     params and conds in any order
//   value  := VALUE | '(' inner ')'                        '(' inner ')' only for rule-valued parameters
//   inner  := METHOD { ':' NAME '=' value }                a rule without conditions (they belong outside)
//   cond   := AXIS OP
//   AXIS   := 'steps' | 'layers'                           at most one cond per axis in a rule
//   OP     := '<' N | '<=' N | '>' N | '>=' N | '=' N | '=' N '..' M
//   N, M   := INT | INT '%'                                '%' only for steps
//   METHOD, NAME := [a-z][a-z0-9_]*                        as named by the MethodSpec table
//   VALUE  := [A-Za-z0-9_.+-]+                             a number, or a word such as fhw or auto
//
//   INT is a non-negative whole number. `=A..B` is inclusive of A and exclusive of B, so
//   `layers=1..30` is layers 1 to 29. `P%` stands for step index floor(P * num_steps / 100), P <= 100,
//   and then the operator applies as to an index: with 50 steps, `steps<20%` is steps 0..9 and
//   `steps>=20%` the rest, whatever num_steps is the two never overlap nor leave a gap.
//
// Examples:
//   dense                                          dense everywhere
//   dense@steps<10,svg:density=0.15                dense for steps 0..9, svg elsewhere
//   dense@steps<20%,dense@layers=0,topk:k=8:diag=1
//   window3d:t=1:h=2:w=2@layers=1..29@steps>=5
//   reuse:every=5:inner=(topk:k=8)@steps>=10       a method wrapping another (its `inner` rule)
//
// JSON form (load_recipe() reads it from a file):
//
//   {"rules": [{"method": "dense", "steps": "<20%"},
//              {"method": "dense", "layers": [0, 1]},
//              {"method": "topk", "params": {"k": 8, "diag": 1}}]}
//
//   "method" is required; "params" maps NAME to a number or a string, or, for a rule-valued
//   parameter, to an object {"method": ..., "params": {...}} (no "layers"/"steps"); "layers" and "steps" take
//   either the cond syntax without the axis name ("<10", ">=20%", "=1..30") or [begin, end], each
//   end an index, a percentage string ("20%", steps only) or null (open), end exclusive.
//
// Rules with conditions cover a rectangle of layers x steps; none may be empty, and two may intersect
// only when they pick the same method with the same parameters (so `dense@steps<20%,dense@layers=0`
// is fine; where rules agree, rule_for() returns the first). At most one rule has no condition: the
// default, for everything no other rule covers.
// Checking happens twice: parsing checks syntax, methods and parameters against the schema, and
// whatever ranges it can without num_steps (absolute ones); check_recipe() checks the rest once the
// model's layer count and the run's step count are known, including layers/steps left uncovered.
#pragma once

#include <cstddef>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

namespace ditkit {

// Every problem with a recipe. what() is the message for the user: for a recipe string it shows the
// recipe with a caret under the offending character, for JSON it names the JSON path. The location
// is also kept apart so that callers need not parse the message.
class RecipeError : public std::invalid_argument {
 public:
  explicit RecipeError(const std::string& message, size_t column = 0, std::string json_path = "");
  size_t column() const { return column_; }                    // 1-based, in the recipe string; 0: none
  const std::string& json_path() const { return json_path_; }  // "rules[1].params.density"; "": none

 private:
  size_t column_;
  std::string json_path_;
};

// The schema that recipes are checked against; each attention method declares its own, so the
// parser knows no method itself.
struct ParamSpec {
  // kRule: the value is another method's rule, `(topk:k=8)`, checked against the same table and
  // stored in its canonical form with the parentheses; it takes no default.
  enum class Type { kInt, kFloat, kString, kRule };
  std::string name;
  Type type = Type::kFloat;
  double min = -std::numeric_limits<double>::infinity();  // inclusive; numeric types only
  double max = std::numeric_limits<double>::infinity();
  std::vector<std::string> choices;  // kString only; empty: any VALUE
  bool required = false;
  std::string default_value;  // filled in when the recipe omits the parameter; "": none
  std::string help;
};

struct MethodSpec {
  std::string name;
  std::vector<ParamSpec> params;
  std::string help;
};

// One end of a Range before the run's length is known: an index, or a percentage of num_steps.
struct Bound {
  int value = 0;         // index, or percent (0..100)
  bool percent = false;
  bool past = false;     // percent only: one index past the percentage (from `<=P%`, `>P%`, `=P%`)
  int resolve(int num_steps) const;
};

// A half-open interval [begin, end) of layer or step indices; an absent end is open.
struct Range {
  std::optional<Bound> begin, end;
  size_t position = 0;  // offset of the condition in the recipe string (0 for JSON recipes)

  bool constrained() const { return begin.has_value() || end.has_value(); }
  // [begin, end) with open ends as 0 and INT_MAX; num_steps only matters for percentages.
  std::pair<int, int> resolve(int num_steps) const;
  bool contains(int index, int num_steps) const;
};

struct RecipeRule {
  std::string method;
  std::map<std::string, std::string> params;  // every declared parameter that is given or has a default
  Range layers, steps;
  size_t position = 0;  // offset of the rule in the recipe string (0 for JSON recipes)

  bool is_default() const { return !layers.constrained() && !steps.constrained(); }

  // Typed access to checked parameters; std::invalid_argument when the parameter is not set or its
  // value is not of the asked type (a float where an int is asked for).
  bool has_param(const std::string& name) const;
  int64_t int_param(const std::string& name) const;
  double float_param(const std::string& name) const;
  const std::string& string_param(const std::string& name) const;
  // A kRule parameter as the rule it holds (parsed again against `methods`).
  RecipeRule rule_param(const std::string& name, const std::vector<MethodSpec>& methods) const;
};

struct Recipe {
  std::vector<RecipeRule> rules;  // in the order written
  std::string source;             // the recipe string, or the JSON text
  bool from_json = false;
  std::string file_name;  // the JSON file it was read from, for messages; "" otherwise

  // The rule covering (layer, step): the rule with conditions that contains it, else the default.
  // Throws RecipeError when none does; check_recipe() rules that out in advance.
  const RecipeRule& rule_for(int layer, int step, int num_steps) const;
};

Recipe parse_recipe(const std::string& text, const std::vector<MethodSpec>& methods);
// `file_name` only names the file in messages.
Recipe parse_recipe_json(const std::string& json_text, const std::vector<MethodSpec>& methods,
                         const std::string& file_name = "");
// An argument ending in ".json" or naming an existing file is read as a JSON recipe file, anything
// else parsed as a recipe string: the one rule for CLI flags and library callers alike.
Recipe load_recipe(const std::string& arg, const std::vector<MethodSpec>& methods);

// The checks that need the model and the run: every range resolved against num_steps is non-empty
// within [0, num_layers) x [0, num_steps), no two disagreeing rules overlap, and every (layer, step)
// is covered.
void check_recipe(const Recipe& recipe, int num_layers, int num_steps);

// The canonical string form, every parameter written out: for logs, and JSON recipes become strings.
std::string to_string(const RecipeRule& rule);
std::string to_string(const Recipe& recipe);

// One line per method and one per parameter (type, range or choices, default, help), for --help.
std::string describe_methods(const std::vector<MethodSpec>& methods);

}  // namespace ditkit
