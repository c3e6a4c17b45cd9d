#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <stdexcept>

#include "dit/atomic_file.h"

namespace fs = std::filesystem;

namespace ditkit {
namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("ditkit-atomic-" + name + "-" + std::to_string(::getpid()));
  remove_tree(d.string());
  fs::create_directories(d);
  return d;
}

TEST(AtomicOutput, NothingUnderFinalNameUntilCommit) {
  fs::path dir = fresh_dir("commit");
  fs::path final_path = dir / "clip.y4m";
  {
    AtomicOutput out(final_path.string());
    std::ofstream(out.partial_path()) << "data";
    EXPECT_FALSE(fs::exists(final_path));
    out.commit();
  }
  EXPECT_TRUE(fs::exists(final_path));
  EXPECT_EQ(std::distance(fs::directory_iterator(dir), fs::directory_iterator()), 1);
}

TEST(AtomicOutput, AbandonedOutputLeavesNothing) {
  fs::path dir = fresh_dir("abandon");
  try {
    AtomicOutput out((dir / "clip.mp4").string());
    std::ofstream(out.partial_path()) << "half a video";
    throw std::runtime_error("encoder failed");
  } catch (const std::runtime_error&) {
  }
  EXPECT_TRUE(fs::is_empty(dir));
}

TEST(AtomicOutput, ReplacesAnExistingFile) {
  fs::path dir = fresh_dir("replace");
  std::ofstream(dir / "a.bin") << "old";
  AtomicOutput out((dir / "a.bin").string());
  std::ofstream(out.partial_path()) << "new";
  out.commit();
  std::ifstream in(dir / "a.bin");
  std::string s;
  in >> s;
  EXPECT_EQ(s, "new");
}

TEST(AtomicOutput, FolderOutputRefusesToClobberAFullFolder) {
  fs::path dir = fresh_dir("folder");
  fs::create_directories(dir / "frames");
  std::ofstream(dir / "frames" / "keep.txt") << "user data";
  AtomicOutput out((dir / "frames/").string(), /*directory=*/true);
  std::ofstream(fs::path(out.partial_path()) / "frame_00000.png") << "x";
  EXPECT_THROW(out.commit(), std::runtime_error);
  EXPECT_TRUE(fs::exists(dir / "frames" / "keep.txt"));
}

TEST(AtomicOutput, MissingFolderIsAClearError) {
  try {
    AtomicOutput out("/nonexistent-ditkit-dir/clip.mp4");
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("does not exist"), std::string::npos) << e.what();
  }
}

TEST(RemoveTree, RemovesNestedFoldersAndToleratesMissingPaths) {
  fs::path dir = fresh_dir("tree");
  fs::create_directories(dir / "a" / "b");
  std::ofstream(dir / "a" / "b" / "f.txt") << "x";
  std::ofstream(dir / "g.txt") << "y";
  remove_tree(dir.string());
  EXPECT_FALSE(fs::exists(dir));
  remove_tree(dir.string());  // already gone: nothing to do
}

}  // namespace
}  // namespace ditkit
