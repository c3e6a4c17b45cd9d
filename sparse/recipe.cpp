#include "sparse/recipe.h"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <climits>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

namespace ditkit {
namespace {

using json = nlohmann::json;

// Largest index a recipe may name; leaves room for the +1 of `<=N` without overflow.
constexpr int kMaxIndex = 1'000'000'000;

// A syntax problem at `pos` of the text being scanned; the front end turns it into a RecipeError
// with the location in its own terms (a caret, or a JSON path).
struct SyntaxError {
  size_t pos;
  std::string what;
};

bool is_word_start(char c) { return std::isalpha(static_cast<unsigned char>(c)) || c == '_'; }
bool is_word_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; }
bool is_value_char(char c) { return is_word_char(c) || c == '.' || c == '+' || c == '-'; }

std::string join(const std::vector<std::string>& items) {
  std::string s;
  for (const std::string& item : items) s += (s.empty() ? "" : ", ") + item;
  return s;
}

std::string number_text(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

class Cursor {
 public:
  explicit Cursor(const std::string& text) : text_(text) {}

  // Every method but fail() skips whitespace first, so tokens may be spaced freely.
  size_t pos() {
    skip_ws();
    return pos_;
  }
  bool at_end() { return pos() == text_.size(); }
  bool accept(const char* token) {
    const size_t n = std::strlen(token);
    if (text_.compare(pos(), n, token) != 0) return false;
    pos_ += n;
    return true;
  }
  // [A-Za-z_][A-Za-z0-9_]*, or "" when none starts here. Upper case is let through so that
  // "Dense" is reported as an unknown method rather than as a syntax error.
  std::string word() {
    const size_t begin = pos();
    if (pos_ < text_.size() && is_word_start(text_[pos_]))
      while (pos_ < text_.size() && is_word_char(text_[pos_])) ++pos_;
    return text_.substr(begin, pos_ - begin);
  }
  std::string value() {
    const size_t begin = pos();
    while (pos_ < text_.size() && is_value_char(text_[pos_])) ++pos_;
    return text_.substr(begin, pos_ - begin);
  }
  // N := INT | INT '%'; `steps` says whether a percentage is allowed. No whitespace before '%'.
  Bound bound(bool steps) {
    const size_t begin = pos();
    while (pos_ < text_.size() && std::isdigit(static_cast<unsigned char>(text_[pos_]))) ++pos_;
    if (pos_ == begin) fail(begin, "expected a whole number, found " + here(begin));
    if (pos_ + 1 < text_.size() && text_[pos_] == '.' && std::isdigit(static_cast<unsigned char>(text_[pos_ + 1])))
      fail(begin, "expected a whole number: indices and percentages have no fractions");
    long long v = 0;
    const auto r = std::from_chars(text_.data() + begin, text_.data() + pos_, v);
    if (r.ec != std::errc() || v > kMaxIndex) fail(begin, "number too large");
    Bound b;
    b.value = static_cast<int>(v);
    if (pos_ < text_.size() && text_[pos_] == '%') {
      if (!steps) fail(pos_, "percentages apply only to steps");
      if (v > 100) fail(begin, "percentage above 100%");
      b.percent = true;
      ++pos_;
    }
    return b;
  }
  // What is at `pos`, for messages.
  std::string here(size_t pos) const {
    return pos < text_.size() ? std::string("'") + text_[pos] + "'" : std::string("the end");
  }
  [[noreturn]] void fail(size_t pos, std::string what) const { throw SyntaxError{pos, std::move(what)}; }

 private:
  void skip_ws() {
    while (pos_ < text_.size() && std::isspace(static_cast<unsigned char>(text_[pos_]))) ++pos_;
  }
  const std::string& text_;
  size_t pos_ = 0;
};

// An absolute bound one past `b`; percentages keep the +1 until num_steps is known.
Bound past(Bound b) {
  if (b.percent)
    b.past = true;
  else
    ++b.value;
  return b;
}

// OP after the axis name, into `r`.
void parse_op(Cursor& c, Range& r, const std::string& axis) {
  const bool steps = axis == "steps";
  const size_t op = c.pos();
  if (c.accept("<=")) {
    r.end = past(c.bound(steps));
  } else if (c.accept("<")) {
    r.end = c.bound(steps);
  } else if (c.accept(">=")) {
    r.begin = c.bound(steps);
  } else if (c.accept(">")) {
    r.begin = past(c.bound(steps));
  } else if (c.accept("=")) {
    r.begin = c.bound(steps);
    r.end = c.accept("..") ? c.bound(steps) : past(*r.begin);
  } else {
    c.fail(op, "expected <, <=, >, >= or = after '" + axis + "', found " + c.here(op));
  }
}

const MethodSpec* find_method(const std::vector<MethodSpec>& methods, const std::string& name) {
  for (const MethodSpec& m : methods)
    if (m.name == name) return &m;
  return nullptr;
}

const ParamSpec* find_param(const MethodSpec& method, const std::string& name) {
  for (const ParamSpec& p : method.params)
    if (p.name == name) return &p;
  return nullptr;
}

std::string unknown_method(const std::vector<MethodSpec>& methods, const std::string& name) {
  std::vector<std::string> known;
  for (const MethodSpec& m : methods) known.push_back(m.name);
  return "unknown method '" + name + "' (known: " + join(known) + ")";
}

std::string unknown_param(const MethodSpec& method, const std::string& name) {
  std::vector<std::string> known;
  for (const ParamSpec& p : method.params) known.push_back(p.name);
  return "unknown parameter '" + name + "' for method '" + method.name + "' (known: " +
         (known.empty() ? "none" : join(known)) + ")";
}

std::optional<int64_t> to_int(const std::string& s) {
  int64_t v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size()) return std::nullopt;
  return v;
}

std::optional<double> to_float(const std::string& s) {
  double v = 0;
  const auto r = std::from_chars(s.data(), s.data() + s.size(), v);
  if (r.ec != std::errc() || r.ptr != s.data() + s.size() || !std::isfinite(v)) return std::nullopt;
  return v;
}

// What is wrong with `value` for `p`, or "" when nothing is.
std::string value_problem(const MethodSpec& method, const ParamSpec& p, const std::string& value) {
  const std::string what = "parameter '" + p.name + "' of method '" + method.name + "': ";
  // Rules are checked where they are parsed; only a (disallowed) default reaches here.
  if (p.type == ParamSpec::Type::kRule) return what + "a rule-valued parameter takes no default";
  // JSON strings must stay writable in the string grammar, so both forms take the same values.
  if (value.empty() || !std::all_of(value.begin(), value.end(), is_value_char))
    return what + "'" + value + "' is not a VALUE ([A-Za-z0-9_.+-]+)";
  if (p.type == ParamSpec::Type::kString) {
    if (p.choices.empty() || std::count(p.choices.begin(), p.choices.end(), value)) return "";
    return what + "'" + value + "' is not one of " + join(p.choices);
  }
  std::optional<double> v;
  if (p.type == ParamSpec::Type::kInt) {
    if (std::optional<int64_t> i = to_int(value)) v = static_cast<double>(*i);
    if (!v) return what + "'" + value + "' is not an integer";
  } else {
    v = to_float(value);
    if (!v) return what + "'" + value + "' is not a number";
  }
  if (*v >= p.min && *v <= p.max) return "";
  std::string range = std::isinf(p.min) ? "<= " + number_text(p.max)
                      : std::isinf(p.max) ? ">= " + number_text(p.min)
                                          : "in [" + number_text(p.min) + ", " + number_text(p.max) + "]";
  return what + value + " is out of range: it must be " + range;
}

// Fills in the defaults of parameters that `params` lacks; returns the first missing required
// parameter's problem, or "".
std::string fill_defaults(const MethodSpec& method, std::map<std::string, std::string>& params) {
  for (const ParamSpec& p : method.params) {
    if (params.count(p.name)) continue;
    if (p.required)
      return "missing required parameter '" + p.name + "' for method '" + method.name + "'" +
             (p.help.empty() ? "" : " (" + p.help + ")");
    if (p.default_value.empty()) continue;
    // A bad default is the method's bug, not the recipe's.
    const std::string problem = value_problem(method, p, p.default_value);
    if (!problem.empty()) throw std::logic_error("recipe schema: bad default for " + problem);
    params[p.name] = p.default_value;
  }
  return "";
}

RecipeError string_error(const std::string& text, size_t pos, const std::string& what) {
  std::string shown = text;
  // Tabs and newlines would push the caret out of line.
  std::replace_if(shown.begin(), shown.end(), [](char c) { return std::isspace(static_cast<unsigned char>(c)); }, ' ');
  return RecipeError("recipe error at column " + std::to_string(pos + 1) + ": " + what + "\n  " + shown + "\n  " +
                         std::string(pos, ' ') + "^",
                     pos + 1);
}

[[noreturn]] void json_fail(const std::string& file, const std::string& path, const std::string& what) {
  std::string where = file.empty() ? "" : " in " + file;
  if (!path.empty()) where += " at " + path;
  throw RecipeError("recipe error" + where + ": " + what, 0, path);
}

// A problem with no single place in the recipe (a layer/step left uncovered).
[[noreturn]] void recipe_fail(const Recipe& recipe, const std::string& what) {
  if (recipe.from_json) json_fail(recipe.file_name, "", what);
  throw RecipeError("recipe error: " + what + "\n  " + recipe.source);
}

// A problem with rule `i`, located at its condition on `axis` ("layers"/"steps") or, for nullptr, the rule.
[[noreturn]] void rule_fail(const Recipe& recipe, size_t i, const char* axis, const std::string& what) {
  const RecipeRule& rule = recipe.rules[i];
  if (recipe.from_json)
    json_fail(recipe.file_name, "rules[" + std::to_string(i) + "]" + (axis ? std::string(".") + axis : ""), what);
  const size_t pos = !axis ? rule.position : std::strcmp(axis, "layers") == 0 ? rule.layers.position
                                                                              : rule.steps.position;
  throw string_error(recipe.source, pos, what);
}

std::string bound_text(const Bound& b) { return std::to_string(b.value) + (b.percent ? "%" : ""); }

// The condition as the parser would read it back, e.g. "steps<20%"; "" when unconstrained.
std::string cond_text(const Range& r, const char* axis) {
  std::string s = axis;
  if (r.begin && r.end) {
    const Bound& b = *r.begin;
    const Bound& e = *r.end;
    const bool single = b.percent ? e.percent && e.value == b.value && !b.past && e.past
                                  : !e.percent && e.value == b.value + 1;
    return s + "=" + bound_text(b) + (single ? "" : ".." + bound_text(e));
  }
  if (r.begin) return s + (r.begin->past ? ">" : ">=") + bound_text(*r.begin);
  if (r.end) return s + (r.end->past ? "<=" : "<") + bound_text(*r.end);
  return "";
}

// "dense@steps<10": what a message needs to tell rules apart, without the parameters.
std::string rule_label(const RecipeRule& rule) {
  std::string s = rule.method;
  if (rule.layers.constrained()) s += "@" + cond_text(rule.layers, "layers");
  if (rule.steps.constrained()) s += "@" + cond_text(rule.steps, "steps");
  return s;
}

std::string rule_name(const Recipe& recipe, size_t i) {
  if (recipe.from_json) return "rules[" + std::to_string(i) + "] ('" + rule_label(recipe.rules[i]) + "')";
  return "rule '" + rule_label(recipe.rules[i]) + "' at column " + std::to_string(recipe.rules[i].position + 1);
}

// True when `r` selects nothing whatever num_steps is. Ranges mixing indices and percentages wait
// for check_recipe().
bool always_empty(const Range& r) {
  if (!r.end) return false;
  const Bound b = r.begin.value_or(Bound{0, r.end->percent, false});
  const Bound& e = *r.end;
  if (b.percent != e.percent) return false;
  return b.value >= e.value && b.past >= e.past;
}

bool has_percent(const Range& r) { return (r.begin && r.begin->percent) || (r.end && r.end->percent); }

// One default at most, no range empty whatever num_steps is, no two disagreeing rules overlapping.
// At parse time (num_steps 0) pairs whose steps use percentages are skipped; check_recipe() passes
// the run's num_steps to decide them.
void check_rules(const Recipe& recipe, int num_steps) {
  std::optional<size_t> default_rule;
  for (size_t i = 0; i < recipe.rules.size(); ++i) {
    const RecipeRule& rule = recipe.rules[i];
    if (rule.is_default()) {
      if (default_rule)
        rule_fail(recipe, i, nullptr,
                  "two default rules (rules without conditions): " + rule_name(recipe, i) + " and " +
                      rule_name(recipe, *default_rule));
      default_rule = i;
    }
    for (const char* axis : {"layers", "steps"}) {
      const Range& r = std::strcmp(axis, "layers") == 0 ? rule.layers : rule.steps;
      if (always_empty(r))
        rule_fail(recipe, i, axis, "empty range: " + cond_text(r, axis) + " selects nothing (A..B includes A, not B)");
    }
  }
  for (size_t j = 0; j < recipe.rules.size(); ++j) {
    for (size_t i = 0; i < j; ++i) {
      const RecipeRule& a = recipe.rules[i];
      const RecipeRule& b = recipe.rules[j];
      // Rules that pick the same method with the same parameters may overlap: nothing is ambiguous,
      // and "dense@steps<20%,dense@layers=0" reads better without carving out the corner.
      if (a.is_default() || b.is_default() || (a.method == b.method && a.params == b.params)) continue;
      if (num_steps == 0 && (has_percent(a.steps) || has_percent(b.steps))) continue;
      const auto [al0, al1] = a.layers.resolve(num_steps);
      const auto [bl0, bl1] = b.layers.resolve(num_steps);
      const auto [as0, as1] = a.steps.resolve(num_steps);
      const auto [bs0, bs1] = b.steps.resolve(num_steps);
      const int layer = std::max(al0, bl0), step = std::max(as0, bs0);
      if (layer < std::min(al1, bl1) && step < std::min(as1, bs1))
        rule_fail(recipe, j, nullptr,
                  rule_name(recipe, j) + " overlaps " + rule_name(recipe, i) + ": both cover layer " + std::to_string(layer) +
                      ", step " + std::to_string(step) + (num_steps ? " of " + std::to_string(num_steps) : ""));
    }
  }
}

std::string json_value_text(const json& v) {
  if (v.is_number_unsigned()) return std::to_string(v.get<uint64_t>());
  if (v.is_number_integer()) return std::to_string(v.get<int64_t>());
  if (v.is_number_float()) return v.dump();
  return v.get<std::string>();
}

Bound json_bound(const json& v, bool steps, const std::string& file, const std::string& path) {
  if (v.is_number_integer()) {
    // Unsigned first: a huge unsigned value would wrap when read as int64_t.
    if (v.is_number_unsigned() ? v.get<uint64_t>() > uint64_t{kMaxIndex} : v.get<int64_t>() < 0)
      json_fail(file, path, "index " + v.dump() + " is out of range [0, " + std::to_string(kMaxIndex) + "]");
    return Bound{v.get<int>(), false, false};
  }
  if (steps && v.is_string()) {
    const std::string s = v.get<std::string>();
    Cursor c(s);
    try {
      const Bound b = c.bound(true);
      if (b.percent && c.at_end()) return b;
    } catch (const SyntaxError&) {
    }
  }
  json_fail(file, path,
            "expected a whole number" + std::string(steps ? ", a percentage string such as \"20%\"" : "") +
                " or null, found " + v.dump());
}

Range json_range(const json& v, const std::string& axis, const std::string& file, const std::string& path) {
  Range r;
  const bool steps = axis == "steps";
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    Cursor c(s);
    try {
      parse_op(c, r, axis);
      if (!c.at_end()) c.fail(c.pos(), "unexpected " + c.here(c.pos()));
    } catch (const SyntaxError& e) {
      json_fail(file, path,
                "bad condition \"" + s + "\" at character " + std::to_string(e.pos + 1) + ": " + e.what);
    }
    return r;
  }
  if (v.is_array() && v.size() == 2) {
    if (!v[0].is_null()) r.begin = json_bound(v[0], steps, file, path + "[0]");
    if (!v[1].is_null()) r.end = json_bound(v[1], steps, file, path + "[1]");
    return r;
  }
  json_fail(file, path, "expected a condition such as \"<10\" or \"=1..30\", or a list [begin, end], found " + v.dump());
}

void check_keys(const json& object, const std::vector<std::string>& known, const std::string& file,
                const std::string& path) {
  for (const auto& [key, value] : object.items())
    if (!std::count(known.begin(), known.end(), key))
      json_fail(file, path.empty() ? key : path + "." + key, "unknown key '" + key + "' (known: " + join(known) + ")");
}

// One rule from the cursor; `nested` for a rule inside '(' ')' (a kRule parameter's value), which
// takes no conditions.
RecipeRule parse_rule(Cursor& c, const std::vector<MethodSpec>& methods, bool nested) {
  RecipeRule rule;
  rule.position = c.pos();
  rule.method = c.word();
  if (rule.method.empty()) c.fail(rule.position, "expected a method name, found " + c.here(rule.position));
  const MethodSpec* method = find_method(methods, rule.method);
  if (!method) c.fail(rule.position, unknown_method(methods, rule.method));
  for (;;) {
    if (c.accept(":")) {
      const size_t at = c.pos();
      const std::string name = c.word();
      if (name.empty()) c.fail(at, "expected a parameter name after ':', found " + c.here(at));
      const ParamSpec* param = find_param(*method, name);
      if (!param) c.fail(at, unknown_param(*method, name));
      if (rule.params.count(name)) c.fail(at, "parameter '" + name + "' given twice");
      if (!c.accept("=")) c.fail(c.pos(), "expected '=' after '" + name + "', found " + c.here(c.pos()));
      const size_t value_at = c.pos();
      if (param->type == ParamSpec::Type::kRule) {
        if (!c.accept("("))
          c.fail(value_at, "parameter '" + name + "' of method '" + method->name +
                               "' takes a rule in parentheses, such as (topk:k=8); found " + c.here(value_at));
        const RecipeRule inner = parse_rule(c, methods, true);
        if (!c.accept(")")) c.fail(c.pos(), "expected ')' to close '" + name + "=(', found " + c.here(c.pos()));
        rule.params[name] = "(" + to_string(inner) + ")";
        continue;
      }
      const std::string value = c.value();
      if (value.empty()) c.fail(value_at, "expected a value for '" + name + "', found " + c.here(value_at));
      const std::string problem = value_problem(*method, *param, value);
      if (!problem.empty()) c.fail(value_at, problem);
      rule.params[name] = value;
    } else if (const size_t cond_at = c.pos(); c.accept("@")) {
      if (nested) c.fail(cond_at, "a rule in parentheses takes no conditions: put '@...' on the outer rule");
      const size_t at = c.pos();
      const std::string axis = c.word();
      Range* r = axis == "layers" ? &rule.layers : axis == "steps" ? &rule.steps : nullptr;
      if (!r) c.fail(at, "expected 'steps' or 'layers' after '@', found " + (axis.empty() ? c.here(at) : "'" + axis + "'"));
      if (r->constrained())
        c.fail(at, "a second '" + axis + "' condition in one rule; give both ends as " + axis + "=A..B");
      r->position = at;
      parse_op(c, *r, axis);
    } else {
      break;
    }
  }
  const std::string problem = fill_defaults(*method, rule.params);
  if (!problem.empty()) c.fail(rule.position, problem);
  return rule;
}

// One rule object at `path`; `nested` for a kRule parameter's value, which takes no conditions.
RecipeRule json_rule(const json& r, const std::vector<MethodSpec>& methods, const std::string& file,
                     const std::string& path, bool nested) {
  if (!r.is_object()) json_fail(file, path, "expected an object such as {\"method\": \"dense\"}, found " + r.dump());
  if (nested)
    check_keys(r, {"method", "params"}, file, path);
  else
    check_keys(r, {"method", "params", "layers", "steps"}, file, path);
  RecipeRule rule;
  const auto m = r.find("method");
  if (m == r.end()) json_fail(file, path + ".method", "missing");
  if (!m->is_string()) json_fail(file, path + ".method", "expected a string, found " + m->dump());
  rule.method = m->get<std::string>();
  const MethodSpec* method = find_method(methods, rule.method);
  if (!method) json_fail(file, path + ".method", unknown_method(methods, rule.method));
  if (const auto params = r.find("params"); params != r.end()) {
    if (!params->is_object()) json_fail(file, path + ".params", "expected an object, found " + params->dump());
    for (const auto& [name, value] : params->items()) {
      const std::string at = path + ".params." + name;
      const ParamSpec* param = find_param(*method, name);
      if (!param) json_fail(file, at, unknown_param(*method, name));
      if (param->type == ParamSpec::Type::kRule) {
        rule.params[name] = "(" + to_string(json_rule(value, methods, file, at, true)) + ")";
        continue;
      }
      if (!value.is_number() && !value.is_string())
        json_fail(file, at, "expected a number or a string, found " + value.dump());
      const std::string text = json_value_text(value);
      const std::string problem = value_problem(*method, *param, text);
      if (!problem.empty()) json_fail(file, at, problem);
      rule.params[name] = text;
    }
  }
  const std::string problem = fill_defaults(*method, rule.params);
  if (!problem.empty()) json_fail(file, path + ".params", problem);
  if (const auto layers = r.find("layers"); layers != r.end())
    rule.layers = json_range(*layers, "layers", file, path + ".layers");
  if (const auto steps = r.find("steps"); steps != r.end())
    rule.steps = json_range(*steps, "steps", file, path + ".steps");
  return rule;
}

}  // namespace

RecipeError::RecipeError(const std::string& message, size_t column, std::string json_path)
    : std::invalid_argument(message), column_(column), json_path_(std::move(json_path)) {}

int Bound::resolve(int num_steps) const {
  if (!percent) return value;
  return static_cast<int>(int64_t{value} * num_steps / 100) + (past ? 1 : 0);
}

std::pair<int, int> Range::resolve(int num_steps) const {
  return {begin ? begin->resolve(num_steps) : 0, end ? end->resolve(num_steps) : INT_MAX};
}

bool Range::contains(int index, int num_steps) const {
  const auto [b, e] = resolve(num_steps);
  return b <= index && index < e;
}

bool RecipeRule::has_param(const std::string& name) const { return params.count(name) != 0; }

const std::string& RecipeRule::string_param(const std::string& name) const {
  const auto it = params.find(name);
  if (it == params.end())
    throw std::invalid_argument("recipe rule '" + rule_label(*this) + "': parameter '" + name +
                                "' is not set (not declared by the method, or optional without a default)");
  return it->second;
}

RecipeRule RecipeRule::rule_param(const std::string& name, const std::vector<MethodSpec>& methods) const {
  const std::string& s = string_param(name);
  if (s.size() < 2 || s.front() != '(' || s.back() != ')')
    throw std::invalid_argument("recipe rule '" + rule_label(*this) + "': parameter '" + name + "' is '" + s +
                                "', not a rule in parentheses");
  Recipe inner = parse_recipe(s.substr(1, s.size() - 2), methods);
  if (inner.rules.size() != 1 || !inner.rules[0].is_default())
    throw std::invalid_argument("recipe rule '" + rule_label(*this) + "': parameter '" + name + "' is '" + s +
                                "', not one rule without conditions");
  return inner.rules[0];
}

int64_t RecipeRule::int_param(const std::string& name) const {
  const std::string& s = string_param(name);
  if (std::optional<int64_t> v = to_int(s)) return *v;
  throw std::invalid_argument("recipe rule '" + rule_label(*this) + "': parameter '" + name + "' is '" + s +
                              "', not an integer");
}

double RecipeRule::float_param(const std::string& name) const {
  const std::string& s = string_param(name);
  if (std::optional<double> v = to_float(s)) return *v;
  throw std::invalid_argument("recipe rule '" + rule_label(*this) + "': parameter '" + name + "' is '" + s +
                              "', not a number");
}

const RecipeRule& Recipe::rule_for(int layer, int step, int num_steps) const {
  const RecipeRule* fallback = nullptr;
  for (const RecipeRule& rule : rules) {
    if (rule.is_default())
      fallback = &rule;
    else if (rule.layers.contains(layer, num_steps) && rule.steps.contains(step, num_steps))
      return rule;
  }
  if (fallback) return *fallback;
  recipe_fail(*this, "no rule covers layer " + std::to_string(layer) + ", step " + std::to_string(step) + " of " +
                         std::to_string(num_steps) + ", and there is no default rule (one without conditions)");
}

Recipe parse_recipe(const std::string& text, const std::vector<MethodSpec>& methods) {
  Recipe recipe;
  recipe.source = text;
  Cursor c(text);
  try {
    if (c.at_end()) c.fail(0, "empty recipe");
    do {
      recipe.rules.push_back(parse_rule(c, methods, false));
    } while (c.accept(","));
    if (!c.at_end())
      c.fail(c.pos(), "unexpected " + c.here(c.pos()) + " after rule '" + rule_label(recipe.rules.back()) +
                          "'; expected ':', '@', ',' or the end of the recipe");
  } catch (const SyntaxError& e) {
    throw string_error(text, e.pos, e.what);
  }
  check_rules(recipe, 0);
  return recipe;
}

Recipe parse_recipe_json(const std::string& json_text, const std::vector<MethodSpec>& methods,
                         const std::string& file_name) {
  Recipe recipe;
  recipe.source = json_text;
  recipe.from_json = true;
  recipe.file_name = file_name;
  const std::string& file = file_name;
  json doc;
  try {
    doc = json::parse(json_text);
  } catch (const json::parse_error& e) {
    json_fail(file, "", std::string("invalid JSON: ") + e.what());
  }
  if (!doc.is_object()) json_fail(file, "", "expected an object {\"rules\": [...]}, found " + doc.dump());
  check_keys(doc, {"rules"}, file, "");
  const auto rules = doc.find("rules");
  if (rules == doc.end()) json_fail(file, "rules", "missing");
  if (!rules->is_array()) json_fail(file, "rules", "expected a list of rules, found " + rules->dump());
  if (rules->empty()) json_fail(file, "rules", "empty recipe");
  for (size_t i = 0; i < rules->size(); ++i)
    recipe.rules.push_back(json_rule((*rules)[i], methods, file, "rules[" + std::to_string(i) + "]", false));
  check_rules(recipe, 0);
  return recipe;
}

Recipe load_recipe(const std::string& arg, const std::vector<MethodSpec>& methods) {
  namespace fs = std::filesystem;
  const bool json_name = arg.size() >= 5 && arg.compare(arg.size() - 5, 5, ".json") == 0;
  std::error_code ec;
  if (!json_name && !fs::is_regular_file(arg, ec)) return parse_recipe(arg, methods);
  std::ifstream in(arg, std::ios::binary);
  if (!in) throw RecipeError("recipe error: cannot read recipe file " + arg);
  std::ostringstream text;
  text << in.rdbuf();
  return parse_recipe_json(text.str(), methods, arg);
}

void check_recipe(const Recipe& recipe, int num_layers, int num_steps) {
  if (num_layers <= 0 || num_steps <= 0)
    throw std::invalid_argument("check_recipe: num_layers and num_steps must be positive, got " +
                                std::to_string(num_layers) + " and " + std::to_string(num_steps));
  for (size_t i = 0; i < recipe.rules.size(); ++i) {
    const RecipeRule& rule = recipe.rules[i];
    for (const char* axis : {"layers", "steps"}) {
      const bool layers = std::strcmp(axis, "layers") == 0;
      const Range& r = layers ? rule.layers : rule.steps;
      const int total = layers ? num_layers : num_steps;
      const auto [b, e] = r.resolve(num_steps);
      if (r.constrained() && std::min(e, total) <= b)
        rule_fail(recipe, i, axis,
                  "empty range: " + cond_text(r, axis) + " selects no " + (layers ? "layer" : "step") + " of " +
                      std::to_string(total) +
                      (has_percent(r) ? " (it resolves to [" + std::to_string(b) + ", " +
                                            std::to_string(std::min(e, total)) + "))"
                                      : ""));
    }
  }
  check_rules(recipe, num_steps);
  for (int layer = 0; layer < num_layers; ++layer)
    for (int step = 0; step < num_steps; ++step) recipe.rule_for(layer, step, num_steps);
}

std::string to_string(const RecipeRule& rule) {
  std::string s = rule.method;
  for (const auto& [name, value] : rule.params) s += ":" + name + "=" + value;
  if (rule.layers.constrained()) s += "@" + cond_text(rule.layers, "layers");
  if (rule.steps.constrained()) s += "@" + cond_text(rule.steps, "steps");
  return s;
}

std::string to_string(const Recipe& recipe) {
  std::string s;
  for (const RecipeRule& rule : recipe.rules) s += (s.empty() ? "" : ",") + to_string(rule);
  return s;
}

std::string describe_methods(const std::vector<MethodSpec>& methods) {
  std::string s;
  for (const MethodSpec& m : methods) {
    s += m.name + (m.help.empty() ? "" : "  " + m.help) + "\n";
    for (const ParamSpec& p : m.params) {
      std::string kind = p.type == ParamSpec::Type::kInt     ? "int"
                         : p.type == ParamSpec::Type::kFloat ? "float"
                         : p.type == ParamSpec::Type::kRule  ? "(rule)"
                                                             : "";
      for (const std::string& choice : p.choices) kind += (kind.empty() ? "" : "|") + choice;
      if (kind.empty()) kind = "string";
      const bool numeric = p.type == ParamSpec::Type::kInt || p.type == ParamSpec::Type::kFloat;
      if (numeric && (!std::isinf(p.min) || !std::isinf(p.max)))
        kind += " in [" + (std::isinf(p.min) ? "-inf" : number_text(p.min)) + ", " +
                (std::isinf(p.max) ? "inf" : number_text(p.max)) + "]";
      s += "  :" + p.name + "=<" + kind + ">" +
           (p.required ? "  required" : p.default_value.empty() ? "" : "  default " + p.default_value) +
           (p.help.empty() ? "" : "  " + p.help) + "\n";
    }
  }
  return s;
}

}  // namespace ditkit
