#include <gtest/gtest.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>

#include <c10/util/accumulate.h>

#include "dit/atomic_file.h"
#include "dit/safetensors.h"

namespace fs = std::filesystem;

namespace ditkit {
namespace {

std::string le64(uint64_t n) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[i] = char(n >> (8 * i) & 0xff);
  return s;
}

// The bytes of a file whose header is `json` verbatim, followed by `data_bytes` zero bytes.
std::string with_header(const std::string& json, size_t data_bytes = 0) {
  return le64(json.size()) + json + std::string(data_bytes, '\0');
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Passes when `f` throws a std::runtime_error whose message holds every one of `words`.
testing::AssertionResult throws_with(const std::function<void()>& f, const std::vector<std::string>& words) {
  try {
    f();
  } catch (const std::runtime_error& e) {
    const std::string message = e.what();
    for (const std::string& w : words)
      if (message.find(w) == std::string::npos)
        return testing::AssertionFailure() << "message \"" << message << "\" lacks \"" << w << "\"";
    return testing::AssertionSuccess();
  }
  return testing::AssertionFailure() << "no std::runtime_error was thrown";
}

// Random bit patterns (NaNs included), so that a round trip is checked bit for bit.
at::Tensor random_tensor(at::ScalarType type, at::IntArrayRef shape) {
  const int64_t high = type == at::kBool ? 2 : 256;  // a bool's byte must be 0 or 1
  const int64_t bytes = c10::multiply_integers(shape) * int64_t(at::elementSize(type));
  return at::randint(0, high, {bytes}, at::kByte).view(type).reshape(shape);
}

bool same_bytes(const at::Tensor& a, const at::Tensor& b) {
  if (a.scalar_type() != b.scalar_type() || a.sizes() != b.sizes()) return false;
  return a.nbytes() == 0 ||
         std::memcmp(a.contiguous().const_data_ptr(), b.contiguous().const_data_ptr(), a.nbytes()) == 0;
}

// Each test works in a fresh folder of its own, removed afterwards.
class Safetensors : public testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("ditkit-safetensors-" +
                                        std::string(testing::UnitTest::GetInstance()->current_test_info()->name()) +
                                        "-" + std::to_string(::getpid()));
    remove_tree(dir_.string());
    fs::create_directories(dir_);
  }
  void TearDown() override { remove_tree(dir_.string()); }

  std::string path(const std::string& name) const { return (dir_ / name).string(); }

  std::string write(const std::string& name, const std::string& bytes) const {
    std::ofstream(path(name), std::ios::binary) << bytes;
    return path(name);
  }

  // Opening the file written from `bytes` must fail naming the file and the `problem`.
  testing::AssertionResult rejects(const std::string& bytes, const std::string& problem) const {
    const std::string file = write("bad.safetensors", bytes);
    return throws_with([&] { SafetensorsFile f(file); }, {file, problem});
  }

  size_t files_in_dir() const { return size_t(std::distance(fs::directory_iterator(dir_), fs::directory_iterator())); }

  fs::path dir_;
};

TEST_F(Safetensors, RoundTripsEveryDtypeBitExact) {
  const std::pair<at::ScalarType, const char*> dtypes[] = {
      {at::kDouble, "F64"}, {at::kFloat, "F32"}, {at::kHalf, "F16"},  {at::kBFloat16, "BF16"},
      {at::kLong, "I64"},   {at::kInt, "I32"},   {at::kShort, "I16"}, {at::kChar, "I8"},
      {at::kByte, "U8"},    {at::kBool, "BOOL"}, {at::kFloat8_e4m3fn, "F8_E4M3"}, {at::kFloat8_e5m2, "F8_E5M2"}};
  const std::pair<const char*, std::vector<int64_t>> shapes[] = {
      {"scalar", {}}, {"empty", {0}}, {"empty3d", {2, 0, 3}}, {"vector", {5}}, {"cube", {2, 3, 4}}};
  at::manual_seed(0);
  std::map<std::string, at::Tensor> saved;
  std::map<std::string, std::string> expected_dtype;
  for (const auto& [type, name] : dtypes) {
    for (const auto& [label, shape] : shapes) {
      const std::string key = std::string(name) + "." + label;
      saved[key] = random_tensor(type, shape);
      expected_dtype[key] = name;
    }
  }
  save_safetensors(path("all.safetensors"), saved);

  SafetensorsFile file(path("all.safetensors"));
  ASSERT_EQ(file.keys().size(), saved.size());
  for (const SafetensorsEntry& e : file.header().tensors) {
    const at::Tensor loaded = file.get(e.name);
    EXPECT_EQ(e.dtype, expected_dtype.at(e.name));
    EXPECT_EQ(safetensors_itemsize(e.dtype), size_t(loaded.element_size())) << e.name;
    EXPECT_TRUE(same_bytes(loaded, saved.at(e.name))) << e.name;
  }
}

TEST_F(Safetensors, RoundTripsMetadata) {
  const std::map<std::string, std::string> metadata = {{"format", "pt"}, {"note", "\"quoted\" ünïcode\n"}};
  save_safetensors(path("m.safetensors"), {{"w", at::ones({2})}}, metadata);
  EXPECT_EQ(SafetensorsFile(path("m.safetensors")).metadata(), metadata);
  EXPECT_EQ(open_safetensors(path("m.safetensors")).metadata(), metadata);
}

TEST_F(Safetensors, WritesAPaddedHeaderAndDataSortedByName) {
  save_safetensors(path("s.safetensors"), {{"b", at::ones({3})}, {"a", at::zeros({5}, at::kLong)}, {"c", at::ones({1})}});
  const std::string bytes = read_bytes(path("s.safetensors"));
  const SafetensorsHeader h =
      parse_safetensors_header(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size(), "s");
  EXPECT_EQ(h.data_offset % 8, 0u);
  ASSERT_EQ(h.tensors.size(), 3u);
  EXPECT_EQ(h.tensors[0].begin, 0u);
  EXPECT_EQ(h.tensors[1].begin, h.tensors[0].end);
  EXPECT_EQ(h.tensors[2].begin, h.tensors[1].end);
  EXPECT_EQ(bytes.size(), h.data_offset + h.tensors[2].end);
}

TEST_F(Safetensors, SavesNonContiguousTensorsContiguously) {
  const at::Tensor t = at::arange(12, at::kFloat).reshape({3, 4}).t();
  save_safetensors(path("t.safetensors"), {{"t", t}});
  EXPECT_TRUE(at::equal(SafetensorsFile(path("t.safetensors")).get("t"), t));
}

TEST_F(Safetensors, TensorsPointIntoTheMappingWithoutCopies) {
  save_safetensors(path("z.safetensors"), {{"a", at::arange(10, at::kFloat)}, {"b", at::arange(6)}});
  SafetensorsFile file(path("z.safetensors"));
  const at::Tensor a = file.get("a"), b = file.get("b");
  const auto& t = file.header().tensors;
  // Both lie where the header puts them relative to each other: views of one buffer, not copies.
  EXPECT_EQ(static_cast<const char*>(b.const_data_ptr()) - static_cast<const char*>(a.const_data_ptr()),
            int64_t(t[1].begin - t[0].begin));
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.const_data_ptr()) % 8, 0u);
  EXPECT_TRUE(at::equal(b, at::arange(6)));
}

TEST_F(Safetensors, TensorOutlivesTheFileObject) {
  save_safetensors(path("o.safetensors"), {{"w", at::arange(100, at::kFloat)}});
  at::Tensor w;
  {
    SafetensorsCheckpoint checkpoint = open_safetensors(path("o.safetensors"));
    w = checkpoint.get("w");
  }
  EXPECT_TRUE(at::equal(w, at::arange(100, at::kFloat)));
}

TEST_F(Safetensors, WritingALoadedTensorLeavesTheFileAlone) {
  save_safetensors(path("w.safetensors"), {{"w", at::zeros({4})}});
  SafetensorsFile(path("w.safetensors")).get("w").fill_(7);
  EXPECT_TRUE(at::equal(SafetensorsFile(path("w.safetensors")).get("w"), at::zeros({4})));
}

TEST_F(Safetensors, MisalignedTensorIsCopiedAndCorrect) {
  // Another writer may place an F32 tensor at an odd offset; here after a 1-byte U8 tensor.
  const float values[2] = {1.5f, -2.0f};
  std::string bytes = encode_safetensors_header({{"a", "U8", {1}, 0, 1}, {"b", "F32", {2}, 1, 9}}, {}, "m");
  bytes += '\x2a';
  bytes.append(reinterpret_cast<const char*>(values), sizeof(values));
  SafetensorsFile file(write("m.safetensors", bytes));
  const at::Tensor b = file.get("b");
  EXPECT_EQ(reinterpret_cast<uintptr_t>(b.const_data_ptr()) % 4, 0u);
  EXPECT_TRUE(at::equal(b, at::tensor({1.5f, -2.0f})));
  EXPECT_EQ(file.get("a").item<uint8_t>(), 42);
}

TEST_F(Safetensors, ShardedCheckpointRoundTrips) {
  const at::Tensor a = at::arange(4, at::kFloat), b = at::ones({2, 2}, at::kHalf), c = at::arange(3);
  save_safetensors(path("model-00001-of-00002.safetensors"), {{"a", a}, {"b", b}});
  save_safetensors(path("model-00002-of-00002.safetensors"), {{"c", c}});
  write("model.safetensors.index.json", R"({"metadata": {"total_size": 36, "format": "pt"},
      "weight_map": {"a": "model-00001-of-00002.safetensors", "b": "model-00001-of-00002.safetensors",
                     "c": "model-00002-of-00002.safetensors"}})");
  for (const std::string& where : {path("model.safetensors.index.json"), dir_.string()}) {
    SafetensorsCheckpoint checkpoint = open_safetensors(where);
    EXPECT_EQ(checkpoint.path(), path("model.safetensors.index.json"));
    EXPECT_EQ(checkpoint.keys(), (std::vector<std::string>{"a", "b", "c"}));
    EXPECT_TRUE(checkpoint.contains("b"));
    EXPECT_EQ(checkpoint.metadata().at("total_size"), "36");
    EXPECT_EQ(checkpoint.metadata().at("format"), "pt");
    EXPECT_TRUE(at::equal(checkpoint.get("a"), a));
    EXPECT_TRUE(at::equal(checkpoint.get("b"), b));
    EXPECT_TRUE(at::equal(checkpoint.get("c"), c));
  }
}

// Shards fill in name order up to the limit, a tensor over it alone; under the limit one file.
TEST_F(Safetensors, SavesShardsPastTheLimitAndOneFileWithin) {
  const at::Tensor a = at::arange(4, at::kFloat), b = at::ones({2}, at::kFloat), c = at::arange(3);  // 16, 8, 24 bytes
  const std::map<std::string, at::Tensor> tensors = {{"a", a}, {"b", b}, {"c", c}};
  for (const auto& [limit, files] : std::vector<std::pair<uint64_t, std::vector<std::string>>>{
           {24, {"model-00001-of-00002.safetensors", "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}},
           {10, {"model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors", "model-00003-of-00003.safetensors"}}}) {
    const fs::path folder = dir_ / ("limit" + std::to_string(limit));
    fs::create_directories(folder);
    save_safetensors_sharded(folder.string(), "model", tensors, limit);
    EXPECT_FALSE(fs::exists(folder / "model.safetensors"));
    SafetensorsCheckpoint checkpoint = open_safetensors(folder.string());
    EXPECT_EQ(checkpoint.path(), (folder / "model.safetensors.index.json").string());
    EXPECT_EQ(checkpoint.metadata().at("total_size"), "48");
    const std::vector<std::string> names = {"a", "b", "c"};
    for (size_t i = 0; i < names.size(); ++i) {
      EXPECT_TRUE(at::equal(checkpoint.get(names[i]), tensors.at(names[i]))) << names[i];
      EXPECT_EQ(SafetensorsFile((folder / files[i]).string()).keys().size(),
                limit == 24 ? (i < 2 ? 2u : 1u) : 1u) << files[i];
      EXPECT_TRUE(SafetensorsFile((folder / files[i]).string()).contains(names[i])) << files[i];
    }
  }
  fs::create_directories(dir_ / "within");
  save_safetensors_sharded(path("within"), "model", tensors, 48);
  EXPECT_EQ(open_safetensors(path("within")).path(), path("within/model.safetensors"));
  EXPECT_FALSE(fs::exists(dir_ / "within" / "model.safetensors.index.json"));
}

TEST_F(Safetensors, OpensAFolderByItsUsualNames) {
  fs::create_directories(dir_ / "one");
  save_safetensors(path("one/weights.safetensors"), {{"w", at::ones({1})}});
  EXPECT_EQ(open_safetensors(path("one")).path(), path("one/weights.safetensors"));

  save_safetensors(path("one/diffusion_pytorch_model.safetensors"), {{"w", at::ones({1})}});
  EXPECT_EQ(open_safetensors(path("one")).path(), path("one/diffusion_pytorch_model.safetensors"));

  fs::create_directories(dir_ / "two");
  save_safetensors(path("two/x.safetensors"), {{"w", at::ones({1})}});
  save_safetensors(path("two/y.safetensors"), {{"w", at::ones({1})}});
  EXPECT_TRUE(throws_with([&] { open_safetensors(path("two")); }, {path("two"), "2 .safetensors files"}));

  fs::create_directories(dir_ / "none");
  EXPECT_TRUE(throws_with([&] { open_safetensors(path("none")); }, {path("none"), "no .safetensors"}));
}

TEST_F(Safetensors, SaveLeavesNoPartialFile) {
  save_safetensors(path("ok.safetensors"), {{"w", at::ones({8})}});
  EXPECT_EQ(files_in_dir(), 1u);
  EXPECT_TRUE(fs::exists(path("ok.safetensors")));
}

TEST_F(Safetensors, SaveIntoMissingFolderThrowsAndLeavesNothing) {
  const std::string target = path("missing/ok.safetensors");
  EXPECT_TRUE(throws_with([&] { save_safetensors(target, {{"w", at::ones({8})}}); }, {target, "does not exist"}));
  EXPECT_EQ(files_in_dir(), 0u);
}

TEST_F(Safetensors, SaveRejectsReservedNamesAndUnsupportedDtypes) {
  const std::string target = path("x.safetensors");
  EXPECT_TRUE(throws_with([&] { save_safetensors(target, {{"__metadata__", at::ones({1})}}); }, {target, "reserved"}));
  EXPECT_TRUE(throws_with([&] { save_safetensors(target, {{"z", at::ones({1}, at::kComplexFloat)}}); },
                          {target, "'z'", "ComplexFloat"}));
  EXPECT_EQ(files_in_dir(), 0u);
}

// ---- bad input: every error names the file and the problem ----

TEST_F(Safetensors, RejectsAnEmptyFile) { EXPECT_TRUE(rejects("", "truncated")); }

TEST_F(Safetensors, RejectsAFileShorterThanTheLength) { EXPECT_TRUE(rejects("abc", "truncated")); }

TEST_F(Safetensors, RejectsAHeaderLengthPastTheEnd) {
  EXPECT_TRUE(rejects(le64(1000) + "{}", "runs past the end of the file"));
}

TEST_F(Safetensors, RejectsAnImplausibleHeaderLength) {
  EXPECT_TRUE(rejects(le64(uint64_t(1) << 40) + "{}", "implausible"));
}

TEST_F(Safetensors, RejectsInvalidJson) { EXPECT_TRUE(rejects(with_header(R"({"a": )"), "invalid JSON")); }

TEST_F(Safetensors, RejectsAHeaderThatIsNotAnObject) {
  EXPECT_TRUE(rejects(with_header("[1, 2]"), "header is not a JSON object"));
}

TEST_F(Safetensors, RejectsAnEntryMissingAField) {
  EXPECT_TRUE(rejects(with_header(R"({"a": {"shape": [1], "data_offsets": [0, 4]}})", 4), "'a': missing 'dtype'"));
  EXPECT_TRUE(rejects(with_header(R"({"a": {"dtype": "F32", "data_offsets": [0, 4]}})", 4), "'a': missing 'shape'"));
  EXPECT_TRUE(rejects(with_header(R"({"a": {"dtype": "F32", "shape": [1]}})", 4), "'a': missing 'data_offsets'"));
}

TEST_F(Safetensors, RejectsMalformedOffsets) {
  EXPECT_TRUE(rejects(with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4]}})", 4),
                      "'data_offsets' must be two non-negative integers"));
}

TEST_F(Safetensors, RejectsOffsetsPastTheDataBuffer) {
  EXPECT_TRUE(rejects(with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}})", 4),
                      "past the end of the data buffer"));
}

TEST_F(Safetensors, RejectsOffsetsThatEndBeforeTheyBegin) {
  EXPECT_TRUE(rejects(with_header(R"({"a": {"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}})", 8),
                      "end before they begin"));
}

TEST_F(Safetensors, RejectsOverlappingTensors) {
  EXPECT_TRUE(rejects(with_header(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                                      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}})",
                                  12),
                      "tensor 'b' data [4, 12) overlaps tensor 'a' [0, 8)"));
}

TEST_F(Safetensors, RejectsAnUnknownDtype) {
  EXPECT_TRUE(rejects(with_header(R"({"a": {"dtype": "F4", "shape": [1], "data_offsets": [0, 1]}})", 1),
                      "unknown dtype 'F4'"));
}

TEST_F(Safetensors, RejectsAShapeThatDisagreesWithTheByteCount) {
  EXPECT_TRUE(rejects(with_header(R"({"a": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 12]}})", 12),
                      "needs 16 bytes"));
}

TEST_F(Safetensors, RejectsANegativeDimension) {
  EXPECT_TRUE(rejects(with_header(R"({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}})", 4),
                      "negative dimension"));
}

TEST_F(Safetensors, RejectsAnOverflowingShape) {
  EXPECT_TRUE(rejects(
      with_header(R"({"a": {"dtype": "F32", "shape": [4294967296, 4294967296], "data_offsets": [0, 0]}})"),
      "overflows"));
}

TEST_F(Safetensors, RejectsMetadataThatIsNotStrings) {
  EXPECT_TRUE(rejects(with_header(R"({"__metadata__": {"step": 3}})"), "'__metadata__'"));
}

TEST_F(Safetensors, MissingTensorNamesTheTensorAndTheFile) {
  const std::string file = path("ok.safetensors");
  save_safetensors(file, {{"w", at::ones({1})}});
  EXPECT_TRUE(throws_with([&] { SafetensorsFile(file).get("nope"); }, {file, "no tensor named 'nope'"}));
  EXPECT_TRUE(throws_with([&] { open_safetensors(file).get("nope"); }, {file, "no tensor named 'nope'"}));
}

TEST_F(Safetensors, MissingShardNamesTheShardAndTheIndex) {
  save_safetensors(path("a.safetensors"), {{"a", at::ones({1})}});
  const std::string index = write("m.safetensors.index.json",
                                  R"({"weight_map": {"a": "a.safetensors", "b": "absent.safetensors"}})");
  EXPECT_TRUE(throws_with([&] { open_safetensors(index); }, {index, "'b'", "absent.safetensors", "does not exist"}));
}

TEST_F(Safetensors, RejectsAnIndexWithoutAWeightMap) {
  const std::string index = write("m.safetensors.index.json", R"({"metadata": {}})");
  EXPECT_TRUE(throws_with([&] { open_safetensors(index); }, {index, "'weight_map'"}));
}

TEST_F(Safetensors, RejectsPathsThatAreNotFiles) {
  const std::string absent = path("absent.safetensors");
  EXPECT_TRUE(throws_with([&] { SafetensorsFile f(absent); }, {absent, "cannot open"}));
  EXPECT_TRUE(throws_with([&] { SafetensorsFile f(dir_.string()); }, {dir_.string(), "not a regular file"}));
}

}  // namespace
}  // namespace ditkit
